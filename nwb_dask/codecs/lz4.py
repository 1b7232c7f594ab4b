"""lz4: the HDF5 LZ4 filter (filter 32004, from hdf5plugin), its framing around python-lz4's raw blocks."""

from __future__ import annotations

import struct
from typing import Any, Sequence

from nwb_dask.codecs.base import CodecError, CodecFamily, Option, Stage
from nwb_dask.codecs.registry import register_codec

__all__ = ["FILTER_LZ4", "LZ4", "LZ4Stage", "lz4_block"]

FILTER_LZ4 = 32004


def lz4_block():
    """python-lz4's ``lz4.block``, or a CodecError saying how to install it."""
    try:
        import lz4.block
    except ImportError as exc:  # pragma: no cover - lz4 is a dependency
        raise CodecError("codec 'lz4' needs the 'lz4' package (pip install lz4)") from exc
    return lz4.block


class LZ4Stage(Stage):
    """The HDF5 LZ4 filter's framing (H5Zlz4.c), around raw LZ4 blocks from python-lz4.

    Hand-written because no Python library produces this container: a 12-byte
    big-endian header (uncompressed size, block size), then per block a
    big-endian compressed size and the block, stored raw when LZ4 saves nothing.
    """

    filter_id = FILTER_LZ4
    DEFAULT_BLOCK = 1 << 30

    def __init__(self, block_bytes: int = 0):
        self.block_bytes = block_bytes or self.DEFAULT_BLOCK
        self._lz4 = lz4_block()

    def encode(self, buf, itemsize):
        nbytes = len(buf)
        block = min(self.block_bytes, nbytes) or 1
        mv = memoryview(buf).cast("B")
        parts = [struct.pack(">QI", nbytes, block)]
        for pos in range(0, nbytes, block):
            raw = mv[pos : pos + block]
            comp = self._lz4.compress(raw, store_size=False)
            if len(comp) >= len(raw):
                comp = bytes(raw)
            parts.append(struct.pack(">I", len(comp)))
            parts.append(comp)
        return b"".join(parts)

    def decode(self, buf, nbytes, itemsize):
        mv = memoryview(buf).cast("B")
        orig, block = struct.unpack_from(">QI", mv, 0)
        block = min(block, orig)
        pos, done, out = 12, 0, []
        while done < orig:
            size = min(block, orig - done)
            (csize,) = struct.unpack_from(">I", mv, pos)
            pos += 4
            data = mv[pos : pos + csize]
            out.append(bytes(data) if csize == size else self._lz4.decompress(data, uncompressed_size=size))
            pos += csize
            done += size
        return b"".join(out)


@register_codec
class LZ4(CodecFamily):
    """``lz4``: ``block_bytes`` (0: the filter's 1 GiB default), ``shuffle`` (False)."""

    name = "lz4"
    filter_id = FILTER_LZ4
    plugin = True
    # LZ4_MAX_INPUT_SIZE (0x7E000000) bounds the LZ4 block.
    options = {"block_bytes": Option(0, range(0, 0x7E000001)), "shuffle": Option(False, (True, False))}
    shuffle_filter = True

    def stages(self, o):
        return (LZ4Stage(o["block_bytes"]),)

    # options -> file, file -> options
    def dataset_kwargs(self, o):
        import hdf5plugin

        return dict(hdf5plugin.LZ4(nbytes=o["block_bytes"]))

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any]:
        return {"block_bytes": int(cd[0])} if cd else {}

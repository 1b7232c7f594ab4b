"""bitshuffle: the bitshuffle HDF5 filter (filter 32008, from hdf5plugin) with optional LZ4 or zstd."""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from nwb_dask.codecs.base import CodecError, CodecFamily, Option, Stage, signed
from nwb_dask.codecs.lz4 import lz4_block
from nwb_dask.codecs.registry import register_codec

__all__ = ["FILTER_BITSHUFFLE", "Bitshuffle", "BitshuffleStage", "bit_transpose", "default_block_size"]

FILTER_BITSHUFFLE = 32008


def default_block_size(itemsize: int) -> int:
    """bshuf_default_block_size: ~8 KiB per block, a multiple of 8 elements, at least 128."""
    return max(128, (8192 // itemsize) // 8 * 8)


def bit_transpose(buf: bytes | memoryview, itemsize: int, block: int, inverse: bool) -> bytes:
    """Bit-transpose ``buf`` in blocks of ``block`` elements (bitshuffle's exact layout).

    Hand-written in numpy because the bitshuffle package is a compiled h5py
    extension we cannot require; hdf5plugin ships the filter but no Python API.
    Within a block of n elements (n a multiple of 8) the output holds, for each
    byte j and bit k of an element, n/8 bytes with bit k of byte j of every
    element, least significant first.  Elements past the last multiple of 8 are
    copied unchanged.  All full blocks are transposed in one vectorised step;
    ``inverse`` undoes the transpose.
    """
    a = np.frombuffer(buf, np.uint8)
    n = len(a) // itemsize
    full = n - n % 8
    count, rest = divmod(full, block)  # block and full are multiples of 8, so is rest
    out = []
    for nblocks, size, start in ((count, block, 0), (1 if rest else 0, rest, count * block)):
        if not nblocks:
            continue
        seg = a[start * itemsize : (start + nblocks * size) * itemsize]
        x = seg.reshape(nblocks, 8 * itemsize, size // 8) if inverse else seg.reshape(nblocks, size, itemsize)
        bits = np.unpackbits(x, axis=2, bitorder="little")
        out.append(np.packbits(bits.transpose(0, 2, 1), axis=2, bitorder="little").tobytes())
    out.append(a[full * itemsize :].tobytes())
    return b"".join(out)


class BitshuffleStage(Stage):
    """The bitshuffle HDF5 filter (bshuf_h5filter.c) with optional LZ4 or zstd.

    With compression the stream is: 8-byte big-endian uncompressed size, 4-byte
    big-endian block size in bytes, then per block a 4-byte big-endian size and
    the compressed bit-shuffled block; trailing elements (fewer than 8) raw.
    """

    filter_id = FILTER_BITSHUFFLE
    COMP = {"none": 0, "lz4": 2, "zstd": 3}

    def __init__(self, cname: str, level: int, block: int = 0):
        self.cname = cname
        self.level = level
        self.block = block
        if cname == "lz4":
            self._lz4 = lz4_block()
        elif cname == "zstd":
            import numcodecs.zstd as _z

            self._zstd = _z

    def _block(self, itemsize: int) -> int:
        return self.block or default_block_size(itemsize)

    def _compress(self, raw: bytes) -> bytes:
        if self.cname == "lz4":
            return self._lz4.compress(raw, store_size=False)
        return self._zstd.compress(raw, self.level)

    def _decompress(self, data, size: int) -> bytes:
        if self.cname == "lz4":
            return self._lz4.decompress(data, uncompressed_size=size)
        return bytes(self._zstd.decompress(bytes(data)))

    def encode(self, buf, itemsize):
        block = self._block(itemsize)
        shuffled = bit_transpose(buf, itemsize, block, inverse=False)
        if self.cname == "none":
            return shuffled
        nbytes = len(buf)
        n = nbytes // itemsize
        full = n - n % 8
        parts = [struct.pack(">QI", nbytes, block * itemsize)]
        pos = 0
        while pos < full:
            size = min(block, full - pos)
            size -= size % 8
            comp = self._compress(shuffled[pos * itemsize : (pos + size) * itemsize])
            parts.append(struct.pack(">I", len(comp)))
            parts.append(comp)
            pos += size
        parts.append(shuffled[full * itemsize :])
        return b"".join(parts)

    def decode(self, buf, nbytes, itemsize):
        if self.cname == "none":
            return bit_transpose(buf, itemsize, self._block(itemsize), inverse=True)
        mv = memoryview(buf).cast("B")
        total, block_bytes = struct.unpack_from(">QI", mv, 0)
        block = block_bytes // itemsize
        n = total // itemsize
        full = n - n % 8
        pos, src, parts = 0, 12, []
        while pos < full:
            size = min(block, full - pos)
            size -= size % 8
            (csize,) = struct.unpack_from(">I", mv, src)
            src += 4
            parts.append(self._decompress(mv[src : src + csize], size * itemsize))
            src += csize
            pos += size
        parts.append(bytes(mv[src : src + (n - full) * itemsize]))
        return bit_transpose(b"".join(parts), itemsize, block, inverse=True)


@register_codec
class Bitshuffle(CodecFamily):
    """``bitshuffle``: ``cname`` ``"none"|"lz4"|"zstd"`` (``"lz4"``), ``level`` (zstd only), ``block`` elements (0: automatic)."""

    name = "bitshuffle"
    filter_id = FILTER_BITSHUFFLE
    plugin = True
    # hdf5plugin.Bitshuffle takes clevel 0-22 only.
    options = {
        "cname": Option("lz4", ("none", "lz4", "zstd")),
        "level": Option(3, range(0, 23)),
        "block": Option(0, range(0, 2**31)),
    }

    decode_options = ("cname", "block")

    def stages(self, o):
        if o["block"] % 8:
            raise CodecError(f"codec 'bitshuffle': block={o['block']} must be a multiple of 8 elements")
        return (BitshuffleStage(o["cname"], o["level"], o["block"]),)

    # options -> file, file -> options
    def dataset_kwargs(self, o):
        import hdf5plugin

        kw = dict(hdf5plugin.Bitshuffle(nelems=o["block"], cname=o["cname"], clevel=o["level"]))
        if o["cname"] != "zstd":
            kw["compression_opts"] = kw["compression_opts"][:2]
        return kw

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any] | None:
        # stored: [version, version, element size, block, compression, level (zstd)]
        if len(cd) < 3:
            return None
        comp = int(cd[4]) if len(cd) > 4 else 0
        o = {"cname": {v: k for k, v in BitshuffleStage.COMP.items()}[comp], "block": int(cd[3]) if len(cd) > 3 else 0}
        if len(cd) > 5:  # zstd's level
            o["level"] = signed(cd[5])
        return o

"""HDF5-exact chunk codecs: encode chunks to the bytes HDF5 stores, decode them back.

A :class:`Codec` is an HDF5 filter pipeline (for example ``[shuffle, deflate]``)
that nwb_dask can run *outside* HDF5:

* :meth:`Codec.dataset_kwargs` gives the ``create_dataset`` keywords that
  declare the pipeline in the file, so any HDF5 reader decodes the data;
* :meth:`Codec.encode` turns one chunk (a numpy array of the full chunk shape)
  into the bytes the pipeline stores, for ``dset.id.write_direct_chunk``;
* :meth:`Codec.decode` turns ``dset.id.read_direct_chunk`` bytes (honouring the
  filter mask, which HDF5 sets when an optional filter was skipped) back into
  an array.

Encoding and decoding run in C libraries that release the GIL (isal,
libdeflate, zstd, blosc, lz4), so many chunks can be processed in threads or on
dask workers while one process stores the bytes.

Codecs are named by a short spec, as in ``codec("gzip")``,
``codec(("zstd", {"level": 5}))`` or ``codec("blosc", cname="lz4", shuffle="bit")``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np

__all__ = [
    "Codec",
    "CodecError",
    "codec",
    "codec_from_dataset",
    "available_codecs",
    "pad_chunk",
    "runs_outside_hdf5",
    "DEFLATE_ENGINES",
    "ZARR_CODECS",
    "numcodecs_pipeline",
    "other_encodings",
    "zarr_codec",
]

#: A codec spec: a name, ``(name, params)``, or a :class:`Codec`.
CodecSpec = Union[str, "Codec", tuple, None]


class CodecError(ValueError):
    """A codec spec is invalid, or a codec's library or HDF5 plugin is unavailable."""


# HDF5 filter identifiers (H5Zpublic.h and the registered-filter list).
FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_BLOSC = 32001
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
FILTER_ZSTD = 32015


# --------------------------------------------------------------------------- #
# Filter stages: bytes -> bytes transforms, one per HDF5 filter.               #
# --------------------------------------------------------------------------- #
class _Stage:
    """One HDF5 filter: ``encode``/``decode`` map bytes to bytes like the C filter."""

    filter_id: int

    def encode(self, buf: bytes | memoryview, itemsize: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, buf: bytes | memoryview, nbytes: int, itemsize: int) -> bytes:  # pragma: no cover
        raise NotImplementedError


class _Shuffle(_Stage):
    """HDF5's byte shuffle (H5Z_FILTER_SHUFFLE).

    Written with numpy because no library exposes HDF5's exact shuffle on a
    buffer; the rule (skip when itemsize is 1 or there is a single element) is
    H5Z__filter_shuffle's.
    """

    filter_id = FILTER_SHUFFLE

    def encode(self, buf, itemsize):
        return _transpose_bytes(buf, itemsize, inverse=False).tobytes()

    def decode(self, buf, nbytes, itemsize, dest: np.ndarray | None = None):
        return _transpose_bytes(buf, itemsize, inverse=True, dest=dest)


def _transpose_bytes(
    buf: bytes | memoryview | np.ndarray, itemsize: int, inverse: bool, dest: np.ndarray | None = None
) -> np.ndarray:
    """Byte-transpose the whole elements of ``buf`` (trailing bytes stay as they are).

    Returns a 1-D uint8 array: ``dest`` when given (``len(buf)`` bytes,
    C-contiguous), else a new one.  One strided copy per byte plane
    (``out[j] = src[:, j]``) runs at several GB/s, against about 0.5 GB/s for
    numpy's generic ``.T.tobytes()``.
    """
    src = np.frombuffer(buf, np.uint8)
    out = np.empty(len(src), np.uint8) if dest is None else dest
    n = len(src) // itemsize
    if itemsize <= 1 or n <= 1:
        out[:] = src
        return out
    if inverse:  # planes -> elements
        planes, elems = src[: n * itemsize].reshape(itemsize, n), out[: n * itemsize].reshape(n, itemsize)
        for j in range(itemsize):
            elems[:, j] = planes[j]
    else:  # elements -> planes
        elems, planes = src[: n * itemsize].reshape(n, itemsize), out[: n * itemsize].reshape(itemsize, n)
        for j in range(itemsize):
            planes[j] = elems[:, j]
    out[n * itemsize :] = src[n * itemsize :]
    return out


def _deflate_engines() -> dict[str, tuple[Callable, int]]:
    """Available deflate encoders: name -> (zlib-format compress(data, level), max level)."""
    engines: dict[str, tuple[Callable, int]] = {}
    try:
        from isal import isal_zlib

        engines["isal"] = (isal_zlib.compress, 3)
    except ImportError:  # pragma: no cover - isal is a dependency
        pass
    try:
        import deflate as _libdeflate

        engines["libdeflate"] = (_libdeflate.zlib_compress, 12)
    except ImportError:  # pragma: no cover
        pass
    try:
        from zlib_ng import zlib_ng

        engines["zlib-ng"] = (zlib_ng.compress, 9)
    except ImportError:  # pragma: no cover
        pass
    engines["zlib"] = (zlib.compress, 9)
    return engines


#: Deflate engines in order of preference for ``engine="auto"`` at levels 0 and 7-9
#: (levels 1-6 prefer ISA-L for speed); see docs/codecs.md for the measurement.
DEFLATE_ENGINES = ("libdeflate", "isal", "zlib-ng", "zlib")
_ENGINES = _deflate_engines()


def _auto_engine(level: int) -> str:
    """``engine="auto"``: the level is the speed/size dial.

    Levels 1-6 (the default 4 included) get ISA-L: 4x libdeflate's speed, and
    on time x all-channel ephys chunks 0.95x the ratio zlib gets at level 4
    (benchmarks/write.py).  Levels 0 and 7-9 ask for size: the first installed
    of :data:`DEFLATE_ENGINES` (libdeflate: smaller files than zlib at the same
    level, 1.8x faster).  See docs/codecs.md for the measurements.
    """
    if 1 <= level <= 6 and "isal" in _ENGINES:
        return "isal"
    return next(e for e in DEFLATE_ENGINES if e in _ENGINES)


def _isal_level(level: int) -> int:
    """Map an HDF5 gzip level (1-9) onto ISA-L's 0-3 (1-3 -> 1, 4-6 -> 2, 7-9 -> 3)."""
    return 0 if level == 0 else min(3, (level + 2) // 3)


def _zlib_decompress() -> Callable[[bytes, int], bytes]:
    try:
        import deflate as _libdeflate

        return lambda buf, nbytes: _libdeflate.zlib_decompress(buf, nbytes)
    except ImportError:  # pragma: no cover
        return lambda buf, nbytes: zlib.decompress(buf)


_inflate = _zlib_decompress()


class _Deflate(_Stage):
    filter_id = FILTER_DEFLATE

    def __init__(self, level: int, engine: str):
        compress, max_level = _ENGINES[engine]
        if engine == "isal":
            lvl = _isal_level(level)
        else:
            lvl = min(level, max_level)
        self._compress = compress
        self._level = lvl

    def encode(self, buf, itemsize):
        return bytes(self._compress(buf, self._level))  # libdeflate returns a bytearray

    def decode(self, buf, nbytes, itemsize):
        return _inflate(bytes(buf), nbytes)


class _Zstd(_Stage):
    filter_id = FILTER_ZSTD

    def __init__(self, level: int):
        from numcodecs import Zstd

        self._codec = Zstd(level=level)

    def encode(self, buf, itemsize):
        return bytes(self._codec.encode(buf))

    def decode(self, buf, nbytes, itemsize):
        return bytes(self._codec.decode(buf))


class _Blosc(_Stage):
    filter_id = FILTER_BLOSC

    def __init__(self, cname: str, level: int, shuffle: int):
        from numcodecs import Blosc

        self._codec = Blosc(cname=cname, clevel=level, shuffle=shuffle, blocksize=0)

    def encode(self, buf, itemsize):
        # typesize comes from the array's itemsize, as the HDF5 filter's set_local does.
        arr = np.frombuffer(buf, dtype=f"V{itemsize}" if itemsize > 1 else np.uint8)
        return bytes(self._codec.encode(arr))

    def decode(self, buf, nbytes, itemsize):
        return bytes(self._codec.decode(buf))


def _lz4_block():
    try:
        import lz4.block
    except ImportError as exc:  # pragma: no cover - lz4 is a dependency
        raise CodecError("codec 'lz4' needs the 'lz4' package (pip install lz4)") from exc
    return lz4.block


class _LZ4(_Stage):
    """The HDF5 LZ4 filter's framing (H5Zlz4.c), around raw LZ4 blocks from python-lz4.

    Hand-written because no Python library produces this container: a 12-byte
    big-endian header (uncompressed size, block size), then per block a
    big-endian compressed size and the block, stored raw when LZ4 saves nothing.
    """

    filter_id = FILTER_LZ4
    DEFAULT_BLOCK = 1 << 30

    def __init__(self, block_bytes: int = 0):
        self.block_bytes = block_bytes or self.DEFAULT_BLOCK
        self._lz4 = _lz4_block()

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


def _bitshuffle_block_size(itemsize: int) -> int:
    """bshuf_default_block_size: ~8 KiB per block, a multiple of 8 elements, at least 128."""
    return max(128, (8192 // itemsize) // 8 * 8)


def _bit_transpose(buf: bytes | memoryview, itemsize: int, block: int, inverse: bool) -> bytes:
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


def _bitshuffle(buf: bytes | memoryview, itemsize: int, block: int) -> bytes:
    return _bit_transpose(buf, itemsize, block, inverse=False)


def _bitunshuffle(buf: bytes | memoryview, itemsize: int, block: int) -> bytes:
    return _bit_transpose(buf, itemsize, block, inverse=True)


class _Bitshuffle(_Stage):
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
            self._lz4 = _lz4_block()
        elif cname == "zstd":
            import numcodecs.zstd as _z

            self._zstd = _z

    def _block(self, itemsize: int) -> int:
        return self.block or _bitshuffle_block_size(itemsize)

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
        shuffled = _bitshuffle(buf, itemsize, block)
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
            return _bitunshuffle(buf, itemsize, self._block(itemsize))
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
        return _bitunshuffle(b"".join(parts), itemsize, block)


# --------------------------------------------------------------------------- #
# Codecs: named, validated pipelines.                                          #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Codec:
    """A validated HDF5 filter pipeline that nwb_dask can run outside HDF5.

    Build one with :func:`codec`.  Codecs are immutable, hashable and
    picklable, so they travel to dask workers and MPI ranks.

    Attributes
    ----------
    name : str
        Short name: ``"none"``, ``"gzip"``, ``"zstd"``, ``"blosc"``, ``"lz4"``
        or ``"bitshuffle"``.
    params : tuple of (str, value)
        Normalised parameters (level, shuffle, cname, engine, ...).
    """

    name: str
    params: tuple = ()
    _stages: tuple = field(default=(), repr=False, compare=False, hash=False)

    # -- construction ------------------------------------------------------
    def __reduce__(self):
        return (codec, ((self.name, dict(self.params)),))

    @property
    def options(self) -> dict[str, Any]:
        """The codec's parameters as a dict."""
        return dict(self.params)

    @property
    def spec(self) -> tuple[str, dict[str, Any]]:
        """A spec that :func:`codec` turns back into this codec."""
        return (self.name, dict(self.params))

    @property
    def label(self) -> str:
        """A short name with the main options, as reports show it: ``"gzip-4+shuffle"``, ``"zstd-3"``, ``"none"``."""
        if self.name == "none":
            return "none"
        o = self.options
        level = o.get("level")
        return self.name + (f"-{level}" if level is not None else "") + ("+shuffle" if o.get("shuffle") is True else "")

    @property
    def filter_ids(self) -> tuple[int, ...]:
        """HDF5 filter ids of the pipeline, in encoding order."""
        return tuple(s.filter_id for s in self._stages)

    # -- HDF5 declaration --------------------------------------------------
    def dataset_kwargs(self) -> dict[str, Any]:
        """Keywords for ``h5py.Group.create_dataset`` that declare this pipeline.

        Returns
        -------
        dict
            ``compression``, ``compression_opts`` and ``shuffle`` as h5py takes
            them (plugin filters through hdf5plugin's helpers).
        """
        o = self.options
        if self.name == "none":
            return {}
        if self.name == "gzip":
            return {"compression": "gzip", "compression_opts": o["level"], "shuffle": o["shuffle"]}
        import hdf5plugin

        if self.name == "zstd":
            kw = dict(hdf5plugin.Zstd(clevel=o["level"]))
        elif self.name == "blosc":
            kw = dict(hdf5plugin.Blosc(cname=o["cname"], clevel=o["level"], shuffle=_BLOSC_SHUFFLE[o["shuffle"]]))
        elif self.name == "lz4":
            kw = dict(hdf5plugin.LZ4(nbytes=o["block_bytes"]))
        elif self.name == "bitshuffle":
            kw = dict(hdf5plugin.Bitshuffle(nelems=o["block"], cname=o["cname"], clevel=o["level"]))
            if o["cname"] != "zstd":
                kw["compression_opts"] = kw["compression_opts"][:2]
        else:  # pragma: no cover - guarded by codec()
            raise CodecError(f"unknown codec {self.name!r}")
        if o.get("shuffle") is True:
            kw["shuffle"] = True
        return kw

    def h5dataio_kwargs(self) -> dict[str, Any]:
        """Keywords for ``hdmf.backends.hdf5.H5DataIO`` declaring this pipeline.

        Plugin filters need ``allow_plugin_filters=True`` in hdmf.
        """
        kw = self.dataset_kwargs()
        if kw.get("compression") not in (None, "gzip"):
            kw["allow_plugin_filters"] = True
        return kw

    # -- encode / decode ---------------------------------------------------
    def encode(self, chunk: np.ndarray) -> tuple[int, bytes]:
        """Encode one full chunk into the bytes HDF5 stores for it.

        Parameters
        ----------
        chunk : numpy.ndarray
            The chunk, already of the dataset's full chunk shape (see
            :func:`pad_chunk` for edge chunks) and dtype.

        Returns
        -------
        (int, bytes)
            Filter mask (always 0: every filter applied) and stored bytes,
            ready for ``dset.id.write_direct_chunk(offset, data, filter_mask)``.
        """
        arr = np.ascontiguousarray(chunk)
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
            raise CodecError(f"codec {self.name!r} encodes little-endian data only, got dtype {arr.dtype}")
        itemsize = arr.dtype.itemsize
        buf: bytes | memoryview = memoryview(arr).cast("B")
        if not self._stages:
            return 0, bytes(buf)
        for stage in self._stages:
            buf = stage.encode(buf, itemsize)
        return 0, buf

    def decode(
        self,
        data: bytes,
        dtype: np.dtype | str,
        chunk_shape: Sequence[int],
        filter_mask: int = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode bytes from ``dset.id.read_direct_chunk`` into a chunk array.

        Parameters
        ----------
        data : bytes
            Stored bytes of one chunk.
        dtype : numpy dtype
            Dataset dtype.
        chunk_shape : sequence of int
            The dataset's chunk shape (edge chunks are stored full size).
        filter_mask : int
            Mask returned by ``read_direct_chunk``: bit *i* set means filter
            *i* of the pipeline was skipped when the chunk was written.
        out : numpy.ndarray, optional
            C-contiguous array of ``chunk_shape`` and ``dtype`` to decode
            into (e.g. the chunk's place in a larger block), saving a copy.

        Returns
        -------
        numpy.ndarray
            The chunk, of shape ``chunk_shape`` (``out`` when given).
        """
        dt = np.dtype(dtype)
        nbytes = int(np.prod(chunk_shape, dtype=np.int64)) * dt.itemsize
        if out is not None and (out.shape != tuple(chunk_shape) or out.dtype != dt or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous {dt} array of shape {tuple(chunk_shape)}")
        active = [i for i in reversed(range(len(self._stages))) if not (filter_mask >> i) & 1]
        buf: bytes | memoryview | np.ndarray = data
        for i in active:
            stage = self._stages[i]
            try:
                if i == active[-1] and out is not None and isinstance(stage, _Shuffle) and len(buf) == nbytes:
                    stage.decode(buf, nbytes, dt.itemsize, dest=out.reshape(-1).view(np.uint8))
                    return out
                buf = stage.decode(buf, nbytes, dt.itemsize)
            except Exception as exc:
                raise CodecError(
                    f"codec {self.name!r}: cannot decode {len(buf)} bytes into chunk {tuple(chunk_shape)} {dt}: {exc}"
                ) from exc
        if len(buf) != nbytes:
            raise CodecError(
                f"codec {self.name!r}: decoded {len(buf)} bytes, expected {nbytes} for chunk {tuple(chunk_shape)} {dt}"
            )
        chunk = np.frombuffer(buf, dtype=dt).reshape(tuple(chunk_shape))
        if out is None:
            return chunk
        out[...] = chunk
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"Codec({self.name!r}{', ' if args else ''}{args})"


_LITTLE = np.little_endian
_BLOSC_SHUFFLE = {"none": 0, "byte": 1, "bit": 2}
_BLOSC_CNAMES = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
_BLOSC_COMPCODES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 4: "zlib", 5: "zstd"}  # blosc.h BLOSC_*_FORMAT

# name -> (defaults, allowed values or (lo, hi) range per parameter)
_SCHEMAS: dict[str, dict[str, tuple[Any, Any]]] = {
    "none": {},
    "gzip": {"level": (4, range(0, 10)), "shuffle": (True, (True, False)), "engine": ("auto", ("auto",) + DEFLATE_ENGINES)},
    "zstd": {"level": (3, range(-131072, 23)), "shuffle": (False, (True, False))},
    "blosc": {
        "cname": ("lz4", _BLOSC_CNAMES),
        "level": (5, range(0, 10)),
        "shuffle": ("byte", tuple(_BLOSC_SHUFFLE)),
    },
    # LZ4_MAX_INPUT_SIZE (0x7E000000) bounds the LZ4 block; hdf5plugin.Bitshuffle takes clevel 0-22 only.
    "lz4": {"block_bytes": (0, range(0, 0x7E000001)), "shuffle": (False, (True, False))},
    "bitshuffle": {"cname": ("lz4", ("none", "lz4", "zstd")), "level": (3, range(0, 23)), "block": (0, range(0, 2**31))},
}
_ALIASES = {"deflate": "gzip", "zlib": "gzip", None: "none", "raw": "none", "uncompressed": "none"}
_PLUGIN_FILTER = {"zstd": FILTER_ZSTD, "blosc": FILTER_BLOSC, "lz4": FILTER_LZ4, "bitshuffle": FILTER_BITSHUFFLE}


def available_codecs() -> list[str]:
    """Names of the codecs usable here (their libraries and HDF5 plugins load)."""
    names = []
    for name in _SCHEMAS:
        try:
            codec(name)
        except CodecError:
            continue
        names.append(name)
    return names


def _check_plugin(name: str) -> None:
    fid = _PLUGIN_FILTER.get(name)
    if fid is None:
        return
    try:
        import hdf5plugin  # noqa: F401  (registers the filters with HDF5)
        import h5py
    except ImportError as exc:
        raise CodecError(f"codec {name!r} needs hdf5plugin (pip install hdf5plugin): {exc}") from exc
    if not h5py.h5z.filter_avail(fid):
        raise CodecError(f"codec {name!r}: HDF5 filter {fid} is not available from hdf5plugin on this system")


def _validate(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    schema = _SCHEMAS[name]
    unknown = set(params) - set(schema)
    if unknown:
        raise CodecError(
            f"codec {name!r} got unknown option(s) {sorted(unknown)}; valid options: {sorted(schema) or 'none'}"
        )
    out = {}
    for key, (default, allowed) in schema.items():
        value = params.get(key, default)
        if isinstance(allowed, range):
            lo, hi = allowed.start, allowed.stop - 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise CodecError(f"codec {name!r}: {key}={value!r} is invalid; expected an integer in [{lo}, {hi}]")
            value = int(value)
        elif value not in allowed:
            raise CodecError(f"codec {name!r}: {key}={value!r} is invalid; expected one of {list(allowed)}")
        else:
            value = allowed[list(allowed).index(value)]  # canonical value: 1 -> True, np.str_ -> str
        out[key] = value
    return out


def _build_stages(name: str, o: dict[str, Any]) -> tuple[_Stage, ...]:
    stages: list[_Stage] = []
    if o.get("shuffle") is True:
        stages.append(_Shuffle())
    if name == "gzip":
        engine = o["engine"]
        if engine == "auto":
            engine = _auto_engine(o["level"])
        elif engine not in _ENGINES:
            raise CodecError(f"codec 'gzip': deflate engine {engine!r} is not installed (available: {sorted(_ENGINES)})")
        stages.append(_Deflate(o["level"], engine))
    elif name == "zstd":
        stages.append(_Zstd(o["level"]))
    elif name == "blosc":
        stages.append(_Blosc(o["cname"], o["level"], _BLOSC_SHUFFLE[o["shuffle"]]))
    elif name == "lz4":
        stages.append(_LZ4(o["block_bytes"]))
    elif name == "bitshuffle":
        if o["block"] % 8:
            raise CodecError(f"codec 'bitshuffle': block={o['block']} must be a multiple of 8 elements")
        stages.append(_Bitshuffle(o["cname"], o["level"], o["block"]))
    return tuple(stages)


def codec(spec: CodecSpec = "gzip", **options: Any) -> Codec:
    """Build and validate a :class:`Codec` from a short spec.

    Parameters
    ----------
    spec : str, (str, dict), Codec or None
        ``"none"`` (or ``None``), ``"gzip"``, ``"zstd"``, ``"blosc"``,
        ``"lz4"``, ``"bitshuffle"``; or ``(name, {option: value})``; or an
        existing codec (returned with ``options`` applied).
    **options
        Options merged over those in ``spec``:

        * gzip: ``level`` 0-9 (4), ``shuffle`` (True), ``engine``
          ``"auto"|"libdeflate"|"isal"|"zlib-ng"|"zlib"`` (auto: ISA-L for
          levels 1-6, libdeflate for 0 and 7-9);
        * zstd: ``level`` (3), ``shuffle`` (False);
        * blosc: ``cname`` (``"lz4"``), ``level`` 0-9 (5),
          ``shuffle`` ``"none"|"byte"|"bit"`` (``"byte"``);
        * lz4: ``block_bytes`` (0: the filter's 1 GiB default), ``shuffle`` (False);
        * bitshuffle: ``cname`` ``"none"|"lz4"|"zstd"`` (``"lz4"``),
          ``level`` (zstd only), ``block`` elements (0: automatic).

    Returns
    -------
    Codec

    Raises
    ------
    CodecError
        Unknown codec or option, value out of range, or a library/HDF5
        plugin that is not available; the message names the codec.

    Examples
    --------
    >>> codec("gzip").options["level"]
    4
    >>> codec(("zstd", {"level": 5})).filter_ids
    (32015,)
    """
    if isinstance(spec, Codec):
        if not options:
            return spec
        spec = spec.spec
    params: dict[str, Any] = {}
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[1], Mapping):
            raise CodecError(f"codec spec {spec!r} must be a name or (name, {{options}})")
        spec, given = spec
        params.update(given)
    if spec is not None and not isinstance(spec, str):
        raise CodecError(f"codec spec must be a string, (name, options) or Codec, got {type(spec).__name__}")
    name = _ALIASES.get(spec.lower() if isinstance(spec, str) else spec, spec.lower() if isinstance(spec, str) else spec)
    if name not in _SCHEMAS:
        raise CodecError(f"unknown codec {spec!r}; known codecs: {sorted(_SCHEMAS)}")
    params.update(options)
    o = _validate(name, params)
    _check_plugin(name)
    stages = _build_stages(name, o)
    return Codec(name, tuple(sorted(o.items())), stages)


def codec_from_dataset(dset) -> Codec | None:
    """The codec matching an existing h5py dataset's filter pipeline.

    Parameters
    ----------
    dset : h5py.Dataset

    Returns
    -------
    Codec or None
        None when the dataset is contiguous, or uses a filter (or filter
        order) nwb_dask cannot run outside HDF5 (e.g. fletcher32, scaleoffset).
        Such datasets are read through HDF5 instead.
    """
    plist = dset.id.get_create_plist()
    if dset.chunks is None:
        return None
    filters = [plist.get_filter(i)[:3] for i in range(plist.get_nfilters())]
    ids = [f[0] for f in filters]
    shuffle = ids[:1] == [FILTER_SHUFFLE]
    rest = filters[1:] if shuffle else filters
    if not rest:
        return codec("none") if not shuffle else None
    if len(rest) != 1:
        return None
    fid, _flags, cd = rest[0]
    try:
        if fid == FILTER_DEFLATE:
            return codec("gzip", level=int(cd[0]) if cd else 4, shuffle=shuffle)
        if fid == FILTER_ZSTD:
            return codec("zstd", level=_signed(cd[0]) if cd else 3, shuffle=shuffle)
        if fid == FILTER_LZ4:
            return codec("lz4", block_bytes=int(cd[0]) if cd else 0, shuffle=shuffle)
        if shuffle:
            return None
        if fid == FILTER_BLOSC and len(cd) >= 7:
            shuf = {v: k for k, v in _BLOSC_SHUFFLE.items()}[int(cd[5])]
            return codec("blosc", cname=_BLOSC_COMPCODES[int(cd[6])], level=int(cd[4]), shuffle=shuf)
        if fid == FILTER_BITSHUFFLE and len(cd) >= 3:
            block = int(cd[3]) if len(cd) > 3 else 0
            comp = int(cd[4]) if len(cd) > 4 else 0
            cname = {v: k for k, v in _Bitshuffle.COMP.items()}[comp]
            level = _signed(cd[5]) if len(cd) > 5 else 3
            return codec("bitshuffle", cname=cname, level=level, block=block)
    except (CodecError, KeyError, IndexError):
        return None
    return None


def runs_outside_hdf5(dtype: np.dtype) -> bool:
    """Whether nwb_dask's codecs can encode/decode this dtype's chunks themselves.

    Big-endian and non-numeric types (strings, compounds, references) are
    converted and filtered by HDF5 only; writers and readers then go through
    h5py for those datasets.
    """
    dtype = np.dtype(dtype)
    return dtype.byteorder != ">" and dtype.kind in "biufc?"


def _signed(v: int) -> int:
    """cd_values are unsigned ints; zstd levels may be negative."""
    v = int(v)
    return v - (1 << 32) if v >= 1 << 31 else v


def pad_chunk(block: np.ndarray, chunk_shape: Sequence[int], fill_value: Any = 0) -> np.ndarray:
    """Pad an edge chunk to the full chunk shape, as HDF5 stores edge chunks.

    HDF5 always stores whole chunks; the part of an edge chunk outside the
    dataset is never read back.  It is filled with ``fill_value`` (HDF5 uses
    the dataset's fill value).

    Parameters
    ----------
    block : numpy.ndarray
        The valid part of the chunk.
    chunk_shape : sequence of int
        The dataset's chunk shape.
    fill_value : scalar
        Value for the padding.

    Returns
    -------
    numpy.ndarray
        C-contiguous array of ``chunk_shape`` (``block`` itself when it is full).
    """
    shape = tuple(int(c) for c in chunk_shape)
    if block.shape == shape:
        return np.ascontiguousarray(block)
    if len(block.shape) != len(shape) or any(b > c for b, c in zip(block.shape, shape)):
        raise ValueError(f"block of shape {block.shape} does not fit in chunk shape {shape}")
    out = np.full(shape, fill_value, dtype=block.dtype)
    out[tuple(slice(0, b) for b in block.shape)] = block
    return out


def other_encodings(c: Codec, raw: np.ndarray) -> Iterator[bytes]:
    """Encodings of ``raw`` that HDF5's filters decode the same as ``c.encode``'s, but of other sizes.

    Other compression levels first, then the same level with other overheads.
    The live writer uses one whose size differs from a chunk's stored copy, so
    HDF5 writes the new copy elsewhere instead of over the durable one.
    """
    import zlib

    levels = {"gzip": range(1, 10), "zstd": range(1, 20), "blosc": range(1, 10)}.get(c.name, ())
    for level in levels:
        if level != c.options.get("level"):
            yield codec(c, level=level).encode(raw)[1]

    buf: Any = memoryview(raw).cast("B")
    for stage in c._stages[:-1]:  # shuffle
        buf = stage.encode(buf, raw.dtype.itemsize)
    o = c.options
    if c.name == "gzip":  # an empty stored block before the end: +5 bytes
        z = zlib.compressobj(o["level"])
        yield z.compress(buf) + z.flush(zlib.Z_SYNC_FLUSH) + z.flush()
    elif c.name == "zstd":  # a content checksum: +4 bytes
        from numcodecs import Zstd

        yield bytes(Zstd(level=o["level"], checksum=True).encode(buf))
    elif c.name == "blosc":  # other block sizes: other per-block overhead
        from numcodecs import Blosc

        arr = np.frombuffer(buf, dtype=f"V{raw.dtype.itemsize}" if raw.dtype.itemsize > 1 else np.uint8)
        for blocksize in (64, 128, 256, 1024, 4096):
            yield bytes(Blosc(cname=o["cname"], clevel=o["level"], shuffle=_BLOSC_SHUFFLE[o["shuffle"]],
                              blocksize=blocksize).encode(arr))


ZARR_CODECS = ("none", "gzip", "zstd", "blosc")


def numcodecs_pipeline(c: Codec, itemsize: int) -> tuple[list, Any]:
    """The numcodecs ``(filters, compressor)`` that decode what ``c.encode`` produces.

    Raises
    ------
    CodecError
        For codecs whose HDF5 byte format has no numcodecs equivalent
        (``lz4``, ``bitshuffle``).
    """
    import numcodecs

    o = c.options
    if c.name not in ZARR_CODECS:
        raise CodecError(f"codec {c.name!r} has no NWB-Zarr equivalent; use one of {list(ZARR_CODECS)}")
    filters = [numcodecs.Shuffle(elementsize=itemsize)] if o.get("shuffle") is True and itemsize > 1 else []
    if c.name == "none":
        return [], None
    if c.name == "gzip":
        return filters, numcodecs.Zlib(level=o["level"])
    if c.name == "zstd":
        return filters, numcodecs.Zstd(level=o["level"])
    shuffle = {"none": numcodecs.Blosc.NOSHUFFLE, "byte": numcodecs.Blosc.SHUFFLE, "bit": numcodecs.Blosc.BITSHUFFLE}
    return filters, numcodecs.Blosc(cname=o["cname"], clevel=o["level"], shuffle=shuffle[o["shuffle"]])


def zarr_codec(c: Codec, itemsize: int) -> Codec:
    """The codec as stored: HDF5's shuffle of 1-byte items is a no-op numcodecs cannot declare."""
    if itemsize == 1 and c.options.get("shuffle") is True:
        return codec(c, shuffle=False)
    return c

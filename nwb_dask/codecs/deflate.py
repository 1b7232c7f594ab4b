"""gzip: HDF5's deflate filter (H5Z_FILTER_DEFLATE, filter 1), with a choice of deflate engines.

Every engine writes the zlib stream HDF5's filter stores; they differ in
speed and, at the same level, in size.  Decoding always uses libdeflate when
installed (else zlib).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence

from nwb_dask.codecs.base import CodecError, CodecFamily, Option, Stage
from nwb_dask.codecs.registry import register_codec

__all__ = ["FILTER_DEFLATE", "DEFLATE_ENGINES", "ENGINES", "Deflate", "Gzip", "auto_engine", "isal_level"]

FILTER_DEFLATE = 1


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
#: The installed engines: name -> (compress(data, level), max level).
ENGINES = _deflate_engines()


def auto_engine(level: int) -> str:
    """``engine="auto"``: the level is the speed/size dial.

    Levels 1-6 (the default 4 included) get ISA-L: 4x libdeflate's speed, and
    on time x all-channel ephys chunks 0.95x the ratio zlib gets at level 4
    (benchmarks/write.py).  Levels 0 and 7-9 ask for size: the first installed
    of :data:`DEFLATE_ENGINES` (libdeflate: smaller files than zlib at the same
    level, 1.8x faster).  See docs/codecs.md for the measurements.
    """
    if 1 <= level <= 6 and "isal" in ENGINES:
        return "isal"
    return next(e for e in DEFLATE_ENGINES if e in ENGINES)


def isal_level(level: int) -> int:
    """Map an HDF5 gzip level (1-9) onto ISA-L's 0-3 (1-3 -> 1, 4-6 -> 2, 7-9 -> 3)."""
    return 0 if level == 0 else min(3, (level + 2) // 3)


def _zlib_decompress() -> Callable[[bytes, int], bytes]:
    try:
        import deflate as _libdeflate

        return lambda buf, nbytes: _libdeflate.zlib_decompress(buf, nbytes)
    except ImportError:  # pragma: no cover
        return lambda buf, nbytes: zlib.decompress(buf)


_inflate = _zlib_decompress()


class Deflate(Stage):
    filter_id = FILTER_DEFLATE

    def __init__(self, level: int, engine: str):
        compress, max_level = ENGINES[engine]
        if engine == "isal":
            lvl = isal_level(level)
        else:
            lvl = min(level, max_level)
        self._compress = compress
        self._level = lvl

    def encode(self, buf, itemsize):
        return bytes(self._compress(buf, self._level))  # libdeflate returns a bytearray

    def decode(self, buf, nbytes, itemsize):
        return _inflate(bytes(buf), nbytes)


@register_codec
class Gzip(CodecFamily):
    """``gzip``: ``level`` 0-9 (4), ``shuffle`` (True), ``engine`` (``"auto"`` or one of DEFLATE_ENGINES)."""

    name = "gzip"
    aliases = ("deflate", "zlib")
    filter_id = FILTER_DEFLATE
    options = {
        "level": Option(4, range(0, 10)),
        "shuffle": Option(True, (True, False)),
        "engine": Option("auto", ("auto",) + DEFLATE_ENGINES),
    }
    shuffle_filter = True
    levels = range(1, 10)
    zarr = True

    def stages(self, o):
        engine = o["engine"]
        if engine == "auto":
            engine = auto_engine(o["level"])
        elif engine not in ENGINES:
            raise CodecError(f"codec 'gzip': deflate engine {engine!r} is not installed (available: {sorted(ENGINES)})")
        return (Deflate(o["level"], engine),)

    # options -> file, file -> options
    def dataset_kwargs(self, o):
        return {"compression": "gzip", "compression_opts": o["level"], "shuffle": o["shuffle"]}

    def cd_values(self, o):
        return (o["level"],)

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any]:
        return {"level": int(cd[0])} if cd else {}

    def overhead_encodings(self, o: Mapping[str, Any], buf: Any, itemsize: int) -> Iterator[bytes]:
        # an empty stored block before the end: +5 bytes
        z = zlib.compressobj(o["level"])
        yield z.compress(buf) + z.flush(zlib.Z_SYNC_FLUSH) + z.flush()

    def to_numcodecs(self, o):
        import numcodecs

        return numcodecs.Zlib(level=o["level"])

    def from_numcodecs(self, compressor):
        return {"level": compressor.level} if type(compressor).__name__ == "Zlib" else None

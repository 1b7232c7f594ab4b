"""zstd: the HDF5 zstd filter (filter 32015, from hdf5plugin); frames from numcodecs' Zstd."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from nwb_dask.codecs.base import CodecFamily, Option, Stage, signed
from nwb_dask.codecs.registry import register_codec

__all__ = ["FILTER_ZSTD", "Zstd", "ZstdStage"]

FILTER_ZSTD = 32015


class ZstdStage(Stage):
    filter_id = FILTER_ZSTD

    def __init__(self, level: int):
        from numcodecs import Zstd as _Zstd

        self._codec = _Zstd(level=level)

    def encode(self, buf, itemsize):
        return bytes(self._codec.encode(buf))

    def decode(self, buf, nbytes, itemsize):
        return bytes(self._codec.decode(buf))


@register_codec
class Zstd(CodecFamily):
    """``zstd``: ``level`` (3; negative levels are zstd's fast modes), ``shuffle`` (False)."""

    name = "zstd"
    filter_id = FILTER_ZSTD
    plugin = True
    options = {"level": Option(3, range(-131072, 23)), "shuffle": Option(False, (True, False))}
    shuffle_filter = True
    levels = range(1, 20)
    zarr = True

    def stages(self, o):
        return (ZstdStage(o["level"]),)

    # options -> file, file -> options
    def dataset_kwargs(self, o):
        import hdf5plugin

        return dict(hdf5plugin.Zstd(clevel=o["level"]))

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any]:
        return {"level": signed(cd[0])} if cd else {}

    def overhead_encodings(self, o: Mapping[str, Any], buf: Any, itemsize: int) -> Iterator[bytes]:
        from numcodecs import Zstd as _Zstd

        yield bytes(_Zstd(level=o["level"], checksum=True).encode(buf))  # a content checksum: +4 bytes

    def to_numcodecs(self, o):
        import numcodecs

        return numcodecs.Zstd(level=o["level"])

    def from_numcodecs(self, compressor):
        return {"level": compressor.level} if type(compressor).__name__ == "Zstd" else None

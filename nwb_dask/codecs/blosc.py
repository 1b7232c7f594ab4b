"""blosc: the HDF5 blosc filter (filter 32001, from hdf5plugin); blosc frames from numcodecs' Blosc."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from nwb_dask.codecs.base import CodecFamily, Option, Stage
from nwb_dask.codecs.registry import register_codec

__all__ = ["FILTER_BLOSC", "BLOSC_SHUFFLE", "BLOSC_CNAMES", "Blosc", "BloscStage"]

FILTER_BLOSC = 32001
BLOSC_SHUFFLE = {"none": 0, "byte": 1, "bit": 2}
BLOSC_CNAMES = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
_COMPCODES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 4: "zlib", 5: "zstd"}  # blosc.h BLOSC_*_FORMAT


def _typed(buf, itemsize: int) -> np.ndarray:
    # typesize comes from the array's itemsize, as the HDF5 filter's set_local does.
    return np.frombuffer(buf, dtype=f"V{itemsize}" if itemsize > 1 else np.uint8)


class BloscStage(Stage):
    filter_id = FILTER_BLOSC

    def __init__(self, cname: str, level: int, shuffle: int):
        from numcodecs import Blosc as _Blosc

        self._codec = _Blosc(cname=cname, clevel=level, shuffle=shuffle, blocksize=0)

    def encode(self, buf, itemsize):
        return bytes(self._codec.encode(_typed(buf, itemsize)))

    def decode(self, buf, nbytes, itemsize):
        return bytes(self._codec.decode(buf))


@register_codec
class Blosc(CodecFamily):
    """``blosc``: ``cname`` (``"lz4"``), ``level`` 0-9 (5), ``shuffle`` ``"none"|"byte"|"bit"`` (``"byte"``)."""

    name = "blosc"
    filter_id = FILTER_BLOSC
    plugin = True
    options = {
        "cname": Option("lz4", BLOSC_CNAMES),
        "level": Option(5, range(0, 10)),
        "shuffle": Option("byte", tuple(BLOSC_SHUFFLE)),
    }
    levels = range(1, 10)
    zarr = True

    def stages(self, o):
        return (BloscStage(o["cname"], o["level"], BLOSC_SHUFFLE[o["shuffle"]]),)

    # options -> file, file -> options
    def dataset_kwargs(self, o):
        import hdf5plugin

        return dict(hdf5plugin.Blosc(cname=o["cname"], clevel=o["level"], shuffle=BLOSC_SHUFFLE[o["shuffle"]]))

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any] | None:
        # stored: [version, version, typesize, chunk bytes, clevel, shuffle, compcode]
        if len(cd) < 7:
            return None
        shuffle = {v: k for k, v in BLOSC_SHUFFLE.items()}[int(cd[5])]
        return {"cname": _COMPCODES[int(cd[6])], "level": int(cd[4]), "shuffle": shuffle}

    def overhead_encodings(self, o: Mapping[str, Any], buf: Any, itemsize: int) -> Iterator[bytes]:
        from numcodecs import Blosc as _Blosc

        arr = _typed(buf, itemsize)
        for blocksize in (64, 128, 256, 1024, 4096):  # other block sizes: other per-block overhead
            yield bytes(_Blosc(cname=o["cname"], clevel=o["level"], shuffle=BLOSC_SHUFFLE[o["shuffle"]],
                               blocksize=blocksize).encode(arr))

    def to_numcodecs(self, o):
        import numcodecs

        shuffle = {"none": numcodecs.Blosc.NOSHUFFLE, "byte": numcodecs.Blosc.SHUFFLE, "bit": numcodecs.Blosc.BITSHUFFLE}
        return numcodecs.Blosc(cname=o["cname"], clevel=o["level"], shuffle=shuffle[o["shuffle"]])

    def from_numcodecs(self, compressor):
        if type(compressor).__name__ != "Blosc":
            return None
        return {"cname": compressor.cname, "level": compressor.clevel,
                "shuffle": {0: "none", 1: "byte", 2: "bit"}.get(compressor.shuffle, "byte")}

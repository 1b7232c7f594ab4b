"""Growing datasets: declaring them (:func:`growing`), their chunk shapes, and finding them in an NWBFile.

A :class:`GrowingData` is an ``H5DataIO`` wrapping an empty array with an
unlimited time axis, so pynwb writes it as any other dataset; the live writer
then finds each one in the file just written (:func:`builder_paths`) and
appends to it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from hdmf.backends.hdf5 import H5DataIO

from nwb_dask.chunking import MIN_TIME_SAMPLES, ChunkShapeError, check_chunk_shape, guess_chunk_shape
from nwb_dask.codecs import Codec, CodecSpec, codec as make_codec, runs_outside_hdf5

__all__ = ["CHUNK_FLUSH_FRACTION", "GrowingData", "builder_paths", "growing", "growing_fields",
           "live_chunk_shape", "resolve_live_chunks"]

#: A growing column's chunk fills in at most this fraction of a flush interval
#: when its rate is known, so the partial chunk re-stored at each flush (whose
#: old copy HDF5 keeps in SWMR mode) costs a small fraction of the data.
CHUNK_FLUSH_FRACTION = 0.25


class GrowingData(H5DataIO):
    """An empty, growing dataset for a pynwb container field (``data=``, ``timestamps=``).

    Made by :func:`growing`; pynwb writes it as an empty chunked dataset with an
    unlimited time axis, and :class:`~nwb_dask.live.StreamWriter` appends to it.
    """

    def __init__(self, dtype, shape: Sequence[int], chunks: Sequence[int] | None, codec: Codec):
        dtype = np.dtype(dtype)
        self.codec = codec
        self.trailing_shape = tuple(int(s) for s in shape)
        self.user_chunks = tuple(int(c) for c in chunks) if chunks is not None else None
        super().__init__(
            data=np.empty((0, *self.trailing_shape), dtype),
            maxshape=(None, *self.trailing_shape),
            chunks=self.user_chunks or (1, *self.trailing_shape),  # resolved by resolve_live_chunks
            **codec.h5dataio_kwargs(),
        )

    def _set_chunks(self, chunks: tuple[int, ...]) -> None:
        self.io_settings["chunks"] = tuple(chunks)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return tuple(self.io_settings["chunks"])


def growing(
    dtype: np.dtype | str,
    shape: Sequence[int] = (),
    *,
    chunks: Sequence[int] | None = None,
    codec: CodecSpec = "gzip",
) -> GrowingData:
    """A growing dataset to pass as ``data=`` or ``timestamps=`` of a pynwb TimeSeries.

    Parameters
    ----------
    dtype : numpy dtype
        Element type: numbers or booleans (strings and compounds cannot be
        encoded outside HDF5).
    shape : sequence of int
        Shape of one sample (the trailing axes), e.g. ``(384,)`` for 384
        channels; ``()`` for one value per sample.
    chunks : sequence of int, optional
        HDF5 chunk shape, time first.  By default :class:`StreamWriter` picks
        one from the stream's rate and flush interval (see docs/live.md).
    codec : codec spec
        Compression (:func:`nwb_dask.codec`), ``"gzip"`` by default.

    Returns
    -------
    GrowingData

    Examples
    --------
    >>> import nwb_dask.live
    >>> d = nwb_dask.live.growing("int16", (384,))
    >>> d.maxshape
    (None, 384)
    """
    dt = np.dtype(dtype)
    if not runs_outside_hdf5(dt):
        raise TypeError(f"live streams hold little-endian numbers or booleans, got dtype {dt}")
    if dt.kind == "c":  # else hdmf's BuildError ("Complex numbers are not supported") when the file is created
        raise TypeError(f"live streams hold real numbers or booleans: hdmf refuses complex {dt} for NWB fields")
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"sample shape {shape} must have positive extents")
    if chunks is not None:
        chunks = tuple(int(c) for c in chunks)
        if len(chunks) != 1 + len(shape) or any(c < 1 for c in chunks):
            raise ChunkShapeError(f"chunks {chunks} must be positive and have {1 + len(shape)} axes "
                                  f"(time, then {shape})")
        if any(c > s for c, s in zip(chunks[1:], shape)):
            raise ChunkShapeError(f"chunks {chunks} exceed the sample shape {shape}")
    return GrowingData(dt, shape, chunks, make_codec(codec))


def live_chunk_shape(d: GrowingData, rate: float | None, flush_every: float | None) -> tuple[int, ...]:
    """Chunk shape of a growing column: nwb_dask's guess, shortened in time for slow streams.

    A partial last chunk is re-stored at each flush and HDF5 keeps its old copy
    (SWMR), so a chunk should fill within a fraction of a flush interval: with
    the rate known, at most ``rate * flush_every * CHUNK_FLUSH_FRACTION`` samples;
    without it (timestamped events), at most ``MIN_TIME_SAMPLES``.
    """
    if d.user_chunks is not None:
        return d.user_chunks
    dtype = d.dtype
    nominal = (2**31 - 1, *d.trailing_shape)
    chunk = list(guess_chunk_shape(nominal, dtype, maxshape=(None, *d.trailing_shape)))
    if rate and flush_every:
        cap = max(16, int(rate * flush_every * CHUNK_FLUSH_FRACTION))
    else:
        cap = MIN_TIME_SAMPLES
    chunk[0] = max(1, min(chunk[0], cap))
    # Past the current length only along the unlimited time axis (docs/chunking.md).
    return check_chunk_shape(chunk, (0, *d.trailing_shape), (None, *d.trailing_shape))


# --------------------------------------------------------------------------- #
# finding them in an NWBFile                                                   #
# --------------------------------------------------------------------------- #
def growing_fields(nwbfile) -> list[tuple[Any, dict[str, GrowingData]]]:
    """``[(container, {"data": GrowingData, "timestamps": GrowingData})]`` for every container with one."""
    found = []
    for container in nwbfile.objects.values():
        fields = {}
        for key in ("data", "timestamps"):
            value = container.fields.get(key) if hasattr(container, "fields") else None
            if isinstance(value, GrowingData):
                fields[key] = value
        if fields:
            found.append((container, fields))
    found.sort(key=lambda cf: cf[0].name)
    return found


def resolve_live_chunks(found: list[tuple[Any, dict[str, GrowingData]]], flush_every: float | None) -> None:
    """Check each growing series (data growing; a rate or growing timestamps) and fix its chunk shapes."""
    if not found:
        raise ValueError("the NWBFile has no growing datasets: give a TimeSeries data=nwb_dask.live.growing(...)")
    for container, fields in found:
        if "data" not in fields:
            raise ValueError(f"{container.name!r}: timestamps are growing but data are not; "
                             "give data=growing(...) too")
        if "timestamps" not in fields and getattr(container, "rate", None) is None:
            raise ValueError(f"{container.name!r}: a growing series needs rate= or timestamps=growing(...)")
        rate = getattr(container, "rate", None)
        for spec in fields.values():
            spec._set_chunks(live_chunk_shape(spec, rate if "timestamps" not in fields else None, flush_every))


def builder_paths(io, nwbfile, found) -> dict[int, str]:
    """HDF5 path of each GrowingData, from the builders of the file just written."""
    from hdmf.build import DatasetBuilder, GroupBuilder

    wanted = {id(spec) for _, fields in found for spec in fields.values()}
    paths: dict[int, str] = {}

    def walk(builder, path: str) -> None:
        if isinstance(builder, DatasetBuilder):
            if id(builder.data) in wanted:
                paths[id(builder.data)] = path
            return
        if isinstance(builder, GroupBuilder):
            for name, sub in {**builder.groups, **builder.datasets}.items():
                walk(sub, f"{path}/{name}" if path != "/" else f"/{name}")

    walk(io.manager.get_builder(nwbfile), "/")
    missing = wanted - set(paths)
    if missing:  # pragma: no cover - would mean hdmf stopped keeping DataIO objects in builders
        raise RuntimeError("could not locate every growing dataset in the written file")
    return paths

"""Multi-file recordings: join datasets of several files along time, virtually or as a copy.

A recording kept as segment files (``seg0.nwb``, ``seg1.nwb``, ...) becomes one
dataset in a new NWB file, either

* ``mode="virtual"``: an HDF5 virtual dataset whose sources are the segments'
  datasets (nothing copied).  Source files are stored by paths *relative to
  the new file's directory*, so the set can be moved together; HDF5 looks
  for them there.  A plain ``NWBHDF5IO`` cannot write virtual datasets and
  writes a copy instead; :class:`~nwb_dask.io.NWBDaskIO` writes the virtual
  dataset;
* ``mode="copy"``: the segments are read lazily, concatenated with dask and
  written through the parallel writer (recompressed and rechunked as asked).

:func:`join_segments` joins datasets; :func:`join_timeseries` joins NWB time
series, also working out ``starting_time``/``rate`` (or ``timestamps``) so
that times stay consistent across segments with their own session start
times.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from nwb_dask.chunking import ChunksArg
from nwb_dask.codecs import CodecSpec
from nwb_dask.nwb.dataio import DaskDataIO
from nwb_dask.nwb.dataio import VirtualData

__all__ = ["SegmentError", "VirtualData", "join_segments", "join_timeseries"]


class SegmentError(ValueError):
    """Segments that cannot be joined (dtype, trailing shape, timing or units differ)."""


def _normalise(sources: Sequence[Any], name: str | None) -> list[tuple[str, str]]:
    out = []
    for s in sources:
        if isinstance(s, (tuple, list)):
            if len(s) != 2:
                raise ValueError(f"a segment is a path or a (path, dataset) pair, got {s!r}")
            path, dname = s
        else:
            if name is None:
                raise ValueError("give the dataset path (name=...) or (path, dataset) pairs")
            path, dname = s, name
        out.append((os.path.abspath(os.fspath(path)), str(dname)))
    return out


def _describe_segments(pairs: list[tuple[str, str]], axis: int) -> tuple[list[tuple[str, str, tuple]], np.dtype, Any]:
    """Open each segment, check dtype and shape against the first; (sources, dtype, fillvalue)."""
    import h5py

    from nwb_dask.hdf5.read import check_link_target

    described: list[tuple[str, str, tuple]] = []
    dtype = fill = None
    first = None
    for path, dname in pairs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"segment file not found: {path}")
        with h5py.File(path, "r") as f:
            check_link_target(f, dname, path)
            if dname not in f or not isinstance(f[dname], h5py.Dataset):
                raise KeyError(f"segment {path} has no dataset {dname!r}")
            d = f[dname]
            if d.ndim == 0:
                raise SegmentError(f"segment {path}:{dname} is a scalar; only arrays can be joined")
            if not -d.ndim <= axis < d.ndim:
                raise SegmentError(f"axis {axis} is out of range for {path}:{dname} of shape {d.shape}")
            shape = d.shape
            if first is None:
                first, dtype, fill = (path, dname, shape), d.dtype, d.fillvalue
            else:
                fpath, fname, fshape = first
                if d.dtype != dtype:
                    raise SegmentError(
                        f"segment {path}:{dname} has dtype {d.dtype}, the first segment {fpath}:{fname} has {dtype}"
                    )
                other = tuple(n for a, n in enumerate(shape) if a != axis % d.ndim)
                want = tuple(n for a, n in enumerate(fshape) if a != axis % len(fshape))
                if len(shape) != len(fshape) or other != want:
                    raise SegmentError(
                        f"segment {path}:{dname} has shape {shape}, the first segment {fpath}:{fname} has {fshape}: "
                        f"all axes but axis {axis} must agree"
                    )
            # The name as asked, not d.name: behind an external link d.name is the target file's name.
            described.append((path, "/" + dname.strip("/"), shape))
    return described, np.dtype(dtype), fill


def join_segments(
    sources: Sequence[Any],
    name: str | None = None,
    *,
    mode: Literal["virtual", "copy"] = "virtual",
    axis: int = 0,
    codec: CodecSpec = "gzip",
    chunks: ChunksArg = "auto",
) -> DaskDataIO:
    """Join datasets of several files along ``axis`` into ``data=`` for a pynwb container.

    Parameters
    ----------
    sources : sequence of path or (path, dataset) pairs
        The segments, in order.
    name : str, optional
        Dataset path used for sources given as bare paths.
    mode : {"virtual", "copy"}
        ``"virtual"`` (default): an HDF5 virtual dataset (no copy; the
        segment files must stay beside the new file, at the same relative
        paths).  ``"copy"``: the joined data is written into the new file.
    axis : int
        Axis to join along (0: time).
    codec, chunks
        ``mode="copy"`` only: compression and chunk shape of the copy.

    Returns
    -------
    VirtualData or DaskDataIO
        Its ``.array`` is the joined data as a lazy dask array.

    Raises
    ------
    FileNotFoundError, KeyError
        A segment file or dataset is missing.
    SegmentError
        Segments differ in dtype or in any axis but ``axis``.
    """
    import dask.array as da

    from nwb_dask.nwb.read import read_dataset

    if mode not in ("virtual", "copy"):
        raise ValueError(f"mode must be 'virtual' or 'copy', got {mode!r}")
    pairs = _normalise(sources, name)
    if not pairs:
        raise ValueError("no segments to join")
    described, dtype, fill = _describe_segments(pairs, axis)
    array = da.concatenate([read_dataset(p, n) for p, n, _ in described], axis=axis)
    if mode == "virtual":
        return VirtualData(array, described, axis % array.ndim, fillvalue=fill)
    return DaskDataIO(array, codec=codec, chunks=chunks)


def _series_timing(path: str, series: str) -> dict[str, Any]:
    """Timing and scaling of one segment's time series, from the file."""
    import h5py

    with h5py.File(path, "r") as f:
        if series not in f:
            raise KeyError(f"segment {path} has no time series {series!r}")
        g = f[series]
        start = f["session_start_time"][()]
        start = start.decode() if isinstance(start, bytes) else str(start)
        info: dict[str, Any] = {
            "session_start": datetime.datetime.fromisoformat(start),
            "n": int(g["data"].shape[0]),
        }
        for key in ("unit", "conversion", "offset", "resolution"):
            if key in g["data"].attrs:
                v = g["data"].attrs[key]
                info[key] = v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
        if "starting_time" in g:
            info["starting_time"] = float(g["starting_time"][()])
            info["rate"] = float(g["starting_time"].attrs["rate"])
        elif "timestamps" in g:
            info["timestamps"] = (path, g["timestamps"].name)
        else:
            raise SegmentError(f"segment {path}:{series} has neither starting_time nor timestamps")
    return info


def join_timeseries(
    paths: Sequence[str | os.PathLike],
    series: str = "acquisition/ElectricalSeries",
    *,
    mode: Literal["virtual", "copy"] = "virtual",
    session_start_time: datetime.datetime | None = None,
    codec: CodecSpec = "gzip",
    chunks: ChunksArg = "auto",
    tolerance: float = 0.5,
) -> dict[str, Any]:
    """Join one NWB time series across segment files: ``data`` plus consistent timing.

    Each segment's times are taken relative to its own
    ``session_start_time`` and re-expressed relative to
    ``session_start_time`` (default: the first segment's).  When every
    segment has a ``rate``, the rates agree and each segment starts where the
    previous one ends (within ``tolerance`` samples), the result is
    ``starting_time`` + ``rate``; otherwise ``timestamps`` (a lazy dask
    array, written by the parallel writer) with a warning naming the gap.

    Parameters
    ----------
    paths : sequence of path
        Segment NWB files, in order.
    series : str
        Path of the time series group in each file.
    mode : {"virtual", "copy"}
        How ``data`` is joined (see :func:`join_segments`).
    session_start_time : datetime, optional
        Session start of the new file (default: the first segment's).
    codec, chunks
        For ``mode="copy"`` and for timestamps.
    tolerance : float
        Largest misalignment between segments, in samples, still treated as
        contiguous.

    Returns
    -------
    dict
        ``data`` and either ``starting_time`` and ``rate`` or ``timestamps``:
        keyword arguments for the new series' constructor.

    Raises
    ------
    SegmentError
        Segments differ in unit, conversion, offset, dtype or shape, or overlap in time.
    """
    import dask.array as da

    from nwb_dask.nwb.read import read_dataset

    pairs = _normalise(paths, f"{series}/data")
    infos = [_series_timing(p, series) for p, _ in pairs]
    for key in ("unit", "conversion", "offset"):
        values = {repr(i.get(key)) for i in infos}
        if len(values) > 1:
            listing = ", ".join(f"{os.path.basename(p)}: {i.get(key)!r}" for (p, _), i in zip(pairs, infos))
            raise SegmentError(f"segments of {series} differ in {key} ({listing})")
    t0 = session_start_time or infos[0]["session_start"]
    if (t0.tzinfo is None) != (infos[0]["session_start"].tzinfo is None):
        raise SegmentError("session_start_time and the segments' session start times must all be timezone-aware or all naive")
    shift = [(i["session_start"] - t0).total_seconds() for i in infos]
    out: dict[str, Any] = {"data": join_segments(pairs, mode=mode, codec=codec, chunks=chunks)}
    rates = {i.get("rate") for i in infos}
    if None not in rates and len(rates) == 1:
        rate = rates.pop()
        starts = [s + i["starting_time"] for s, i in zip(shift, infos)]
        gaps = [
            (k, starts[k] - (starts[k - 1] + infos[k - 1]["n"] / rate)) for k in range(1, len(infos))
        ]
        for k, gap in gaps:
            if gap * rate < -tolerance:
                raise SegmentError(
                    f"segment {pairs[k][0]} starts {-gap:.6f} s before the previous segment ends: segments overlap"
                )
        bad = [(k, gap) for k, gap in gaps if abs(gap * rate) > tolerance]
        if not bad:
            out.update(starting_time=starts[0], rate=rate)
            return out
        k, gap = bad[0]
        warnings.warn(
            f"segment {pairs[k][0]} starts {gap:.6f} s after the previous one ends; writing timestamps", UserWarning,
            stacklevel=2,
        )
    parts = []
    for s, i, (p, _) in zip(shift, infos, pairs):
        if "timestamps" in i:
            parts.append(read_dataset(*i["timestamps"]).astype("f8") + s)
        else:
            parts.append(da.arange(i["n"], dtype="f8", chunks=1 << 20) / i["rate"] + (s + i["starting_time"]))
    ts = da.concatenate(parts)
    if bool((da.diff(ts) < 0).any().compute()):
        raise SegmentError(f"timestamps of {series} decrease across segments: segments overlap or are out of order")
    out["timestamps"] = DaskDataIO(ts, codec=codec)
    return out

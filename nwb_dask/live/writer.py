"""The live writer: :class:`StreamWriter` opens the file, takes appends, and flushes them in a writer thread.

Orchestration only: the growing datasets are declared and found in
:mod:`nwb_dask.live.datasets`, each dataset's staging, encoding and storing is
:mod:`nwb_dask.live.columns`, the writer's lock is :mod:`nwb_dask.live.recovery`'s.
The file is created through :class:`nwb_dask.atomic.AtomicOutput` (pynwb writes
the structure under a temporary name, which is renamed into place), then
reopened straight into HDF5's SWMR writing.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from nwb_dask.atomic import AtomicOutput, check_output
from nwb_dask.blocks import checked_array
from nwb_dask.live.columns import Column, Stream, encode_rows, index_streams, make_streams
from nwb_dask.live.datasets import builder_paths, growing_fields, resolve_live_chunks
from nwb_dask.live.recovery import lock_writer_byte

__all__ = ["DEFAULT_FLUSH_BYTES", "DEFAULT_FLUSH_SECONDS", "DEFAULT_MAX_PENDING_BYTES", "FlushInfo", "LIBVER",
           "StreamError", "StreamOverrunError", "StreamStats", "StreamWriter"]

#: HDF5 file-format bounds for live files: SWMR needs the 1.10 format; capping it
#: there keeps the files readable by HDF5 1.10 and later.
LIBVER = ("v110", "v110")
#: Default seconds between flushes.
DEFAULT_FLUSH_SECONDS = 1.0
#: Default bytes not yet flushed that trigger an early flush.
DEFAULT_FLUSH_BYTES = 64 * 2**20
#: Default bound on bytes appended but not yet flushed.
DEFAULT_MAX_PENDING_BYTES = 256 * 2**20


class StreamError(RuntimeError):
    """The live writer failed (disk full, HDF5 error, ...); the message names the file and stream."""


class StreamOverrunError(StreamError):
    """Data arrive faster than they can be compressed and stored, and ``on_overrun="raise"``."""


@dataclass
class FlushInfo:
    """What one flush made durable."""

    number: int
    samples: dict[str, int]
    stored_bytes: int
    seconds: float
    wall_time: float


@dataclass
class StreamStats:
    """Counters of a :class:`StreamWriter` (a snapshot)."""

    samples: dict[str, int] = field(default_factory=dict)
    flushed: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    superseded_bytes: int = 0
    max_flush_seconds: float = 0.0
    overrun_waits: int = 0

    @property
    def ratio(self) -> float:
        """Logical bytes flushed per byte stored (superseded partial chunks included)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else float("nan")


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.") and hasattr(x, "compute")


class StreamWriter:
    """Write growing NWB time series from a live acquisition, with SWMR readers and crash-safe flushes.

    Parameters
    ----------
    path : str or Path
        The NWB file to create.  It appears (complete, with empty time series)
        once the structure is written; it is never overwritten unless
        ``overwrite=True``.
    nwbfile : pynwb.NWBFile
        The file's content.  Time series to stream have :func:`growing` as
        ``data`` (and ``timestamps`` when they are not regularly sampled);
        everything else is written as pynwb writes it.
    flush_every : float or None
        Seconds between flushes (default 1.0); ``None`` flushes only on bytes,
        on :meth:`flush` and on :meth:`close`.
    flush_bytes : int
        Flush early when this many appended bytes are waiting (default 64 MiB).
    max_pending_bytes : int
        Most bytes appended but not yet flushed (default 256 MiB, 11 s of
        384-channel ephys).  Peak memory measured 1.2-1.4x this (encoded
        chunks wait for the flush too; benchmarks/stream.py).
    on_overrun : {"block", "raise"}
        When an append would exceed ``max_pending_bytes``: wait for the writer
        (``"block"``, the default; ``overrun_timeout`` bounds the wait) or raise
        :class:`StreamOverrunError`.  Nothing is dropped either way.
    overrun_timeout : float or None
        Longest wait of a blocked append before it raises
        :class:`StreamOverrunError` (``None``: wait as long as it takes).
    workers : int, optional
        Compression threads (default: the CPU count).
    fsync : bool
        ``fsync`` the file after each flush (default True), so flushed data
        also survive a power failure, not only a killed process.
    overwrite : bool
        Replace an existing ``path``.
    on_flush : callable, optional
        Called with a :class:`FlushInfo` after each flush, in the writer thread.

    Examples
    --------
    >>> from nwb_dask.live import StreamWriter, growing          # doctest: +SKIP
    >>> nwbfile.add_acquisition(ElectricalSeries(name="ephys", data=growing("int16", (384,)),
    ...     electrodes=region, rate=30000.0, starting_time=0.0, conversion=0.195e-6))  # doctest: +SKIP
    >>> with StreamWriter("session.nwb", nwbfile) as w:           # doctest: +SKIP
    ...     for block in acquisition():
    ...         w.append("ephys", block)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        nwbfile: Any,
        *,
        flush_every: float | None = DEFAULT_FLUSH_SECONDS,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        on_overrun: str = "block",
        overrun_timeout: float | None = None,
        workers: int | None = None,
        fsync: bool = True,
        overwrite: bool = False,
        on_flush: Callable[[FlushInfo], None] | None = None,
    ):
        if on_overrun not in ("block", "raise"):
            raise ValueError(f"on_overrun must be 'block' or 'raise', got {on_overrun!r}")
        if flush_every is not None and flush_every <= 0:
            raise ValueError(f"flush_every must be positive seconds or None, got {flush_every!r}")
        if max_pending_bytes <= 0 or flush_bytes <= 0:
            raise ValueError("flush_bytes and max_pending_bytes must be positive")
        self.path = Path(path)
        check_output(self.path, overwrite=overwrite, tool="StreamWriter")  # the checks every writer makes
        self.flush_every = flush_every
        self.flush_bytes = min(flush_bytes, max_pending_bytes)
        self.max_pending_bytes = max_pending_bytes
        self.on_overrun = on_overrun
        self.overrun_timeout = overrun_timeout
        self.fsync = fsync
        self.on_flush = on_flush

        self._streams = self._create(nwbfile)
        self._by_name = index_streams(self._streams)

        import h5py
        from h5py import h5f, h5p

        # Straight into SWMR writing (H5F_ACC_SWMR_WRITE at open): the file at ``path`` is
        # never open for writing without SWMR, which would leave a file that SWMR readers
        # refuse ("file is not already open for SWMR writing") if the process died there.
        fapl = h5p.create(h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5f.LIBVER_V110, h5f.LIBVER_V110)
        try:
            self._file = h5py.File(h5f.open(os.fsencode(self.path), h5f.ACC_RDWR | h5f.ACC_SWMR_WRITE, fapl=fapl))
            self._dsets = {c.path: self._file[c.path] for s in self._streams for c in s.columns}
        except BaseException:
            if hasattr(self, "_file"):
                self._file.close()
            self._release_lock()
            raise
        self._fd = self._vfd_handle()

        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                                        thread_name_prefix="nwb_dask-live-encode")
        self._rows: list[tuple[Column, int, Future, bool]] = []  # encoded rows waiting for a flush
        self._pending = 0  # bytes appended and not yet durable
        self._unflushed = 0  # bytes appended since the last flush snapshot
        self._flush_requested = 0  # generation asked for
        self._flush_done = 0  # generation completed
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._stats = StreamStats()
        self._next_flush = time.monotonic() + flush_every if flush_every else math.inf
        self._thread = threading.Thread(target=self._run, name="nwb_dask-live-writer", daemon=True)
        self._thread.start()

    # -- creation ----------------------------------------------------------
    def _create(self, nwbfile) -> list[Stream]:
        """Write the structure with pynwb under a temporary name (1.10 format), then rename it into place."""
        import h5py
        from pynwb import NWBHDF5IO

        found = growing_fields(nwbfile)
        resolve_live_chunks(found, self.flush_every)

        def lock(tmp: Path) -> None:
            self._lock_fd = os.open(tmp, os.O_RDWR)  # follows the file through the rename
            lock_writer_byte(self._lock_fd)

        atomic = AtomicOutput(self.path)  # temporary name, fsync, rename, fsync the directory
        try:
            with h5py.File(atomic.temp, "w", libver=LIBVER) as f, NWBHDF5IO(file=f, mode="w") as io:
                io.write(nwbfile)
                paths = builder_paths(io, nwbfile, found)
            atomic.commit(before_rename=lock)
        except BaseException as exc:
            atomic.discard()
            self._release_lock()
            atomic.raise_for(exc)
            raise
        return make_streams(found, paths)

    def _release_lock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)

    def _vfd_handle(self) -> int | None:
        try:
            return int(self._file.id.get_vfd_handle())
        except Exception:  # pragma: no cover - non-sec2 drivers
            return None

    # -- public API --------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the streams (the time series' names)."""
        return tuple(s.key for s in self._streams)

    def dataset_path(self, name: str, column: str = "data") -> str:
        """HDF5 path of a stream's ``data`` or ``timestamps`` dataset."""
        if column not in ("data", "timestamps"):
            raise ValueError(f"column must be 'data' or 'timestamps', got {column!r}")
        s = self._stream(name)
        col = s.data if column == "data" else s.timestamps
        if col is None:
            raise KeyError(f"stream {name!r} has no growing {column!r}")
        return col.path

    @property
    def flushed(self) -> dict[str, int]:
        """Samples per stream that are durable in the file."""
        with self._cond:
            return {s.key: s.flushed for s in self._streams}

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the writer's counters."""
        with self._cond:
            return replace(self._stats, samples={s.key: s.samples for s in self._streams},
                                       flushed={s.key: s.flushed for s in self._streams})

    def append(self, name: str, data: Any, timestamps: Any = None) -> int:
        """Append samples to a stream; returns the stream's sample count.

        Parameters
        ----------
        name : str
            The stream: the time series' name (or its path in the file).
        data : array-like or dask array
            Samples along axis 0, each of the stream's sample shape; cast to the
            dataset's dtype when that is safe.  A dask array is computed piece
            by piece.
        timestamps : array-like, optional
            One time per sample (seconds), non-decreasing; required exactly
            when the series was declared with growing timestamps.

        Raises
        ------
        ValueError, TypeError
            Wrong sample shape, unsafe dtype, or timestamps missing, extra,
            of the wrong length or going backwards; nothing is appended.
        StreamOverrunError
            ``on_overrun="raise"`` and the data would exceed ``max_pending_bytes``
            (nothing is appended), or a blocked append timed out.
        StreamError
            The writer failed earlier; the file holds everything flushed before.
        """
        stream = self._stream(name)
        if _is_dask(data) or _is_dask(timestamps):
            return self._append_dask(stream, data, timestamps)
        data = stream.checked(stream.data, data, "data")
        n = data.shape[0]
        if stream.timestamps is not None:
            if timestamps is None:
                raise ValueError(f"stream {stream.name!r} has growing timestamps: pass timestamps= with the data")
            timestamps = stream.checked_timestamps(timestamps, n)
        elif timestamps is not None:
            raise ValueError(f"stream {stream.name!r} is regularly sampled (rate=); it takes no timestamps")
        if n == 0:
            return stream.samples
        nbytes = n * (stream.data.row_bytes + (stream.timestamps.row_bytes if stream.timestamps else 0))
        with self._cond:
            self._raise_if_failed()
            self._make_room(stream, nbytes)
            self._stage(stream.data, data)
            if stream.timestamps is not None:
                self._stage(stream.timestamps, timestamps)
                stream.last_time = float(timestamps[-1])
            stream.samples += n
            self._pending += nbytes
            self._unflushed += nbytes
            if self._unflushed >= self.flush_bytes:
                self._cond.notify_all()
            return stream.samples

    def extend(self, name: str, blocks: Iterable[Any]) -> int:
        """Append every block of an iterable (arrays, dask arrays, or ``(data, timestamps)`` pairs)."""
        count = self._stream(name).samples
        for block in blocks:
            count = self.append(name, *block) if isinstance(block, tuple) else self.append(name, block)
        return count

    def flush(self, timeout: float | None = None) -> dict[str, int]:
        """Make everything appended so far durable; returns the flushed sample counts.

        Raises
        ------
        StreamError
            The writer failed, or ``timeout`` seconds passed.
        """
        with self._cond:
            self._raise_if_failed()
            self._flush_requested += 1
            target = self._flush_requested
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._flush_done >= target or self._error is not None, timeout):
                raise StreamError(f"{self.path}: flush did not finish within {timeout} s")
            self._raise_if_failed()
            return {s.key: s.flushed for s in self._streams}

    def close(self) -> None:
        """Flush everything and close the file (after which any HDF5 reader opens it)."""
        if self._closed:
            return
        try:
            if self._error is None:
                self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self._pool.shutdown(wait=True)
            if self._error is not None:  # a failed flush may have grown datasets beyond the stored data
                for s in self._streams:
                    for col in s.columns:
                        try:
                            self._dsets[col.path].resize(s.flushed, axis=0)
                        except Exception:  # pragma: no cover - the file itself is broken
                            pass
            try:
                self._file.close()
            except Exception as exc:  # after a failed write; report the first error
                self._error = self._error or exc
            self._release_lock()
            self._closed = True
        if self._error is not None:
            self._raise_if_failed()

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<nwb_dask.live.StreamWriter {str(self.path)!r} streams={list(self.streams)}>"

    # -- the caller's side -------------------------------------------------
    def _stream(self, name: str) -> Stream:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no stream {name!r} in {self.path}; streams: {list(self.streams)}") from None

    def _make_room(self, stream: Stream, nbytes: int) -> None:
        """Called with the lock held: wait or raise until ``nbytes`` fit under ``max_pending_bytes``."""
        if self._pending + nbytes <= self.max_pending_bytes or self._pending == 0:
            return
        if self.on_overrun == "raise":
            raise StreamOverrunError(
                f"stream {stream.name!r}: appending {nbytes / 1e6:.1f} MB would exceed max_pending_bytes="
                f"{self.max_pending_bytes / 1e6:.1f} MB ({self._pending / 1e6:.1f} MB not yet flushed to {self.path}); "
                "the data arrive faster than they are compressed and stored. Nothing was appended.")
        self._stats.overrun_waits += 1
        self._flush_requested += 1
        self._cond.notify_all()
        ok = self._cond.wait_for(
            lambda: self._error is not None or self._pending + nbytes <= self.max_pending_bytes or self._pending == 0,
            self.overrun_timeout)
        self._raise_if_failed()
        if not ok:
            raise StreamOverrunError(
                f"stream {stream.name!r}: waited {self.overrun_timeout} s for room for {nbytes / 1e6:.1f} MB under "
                f"max_pending_bytes={self.max_pending_bytes / 1e6:.1f} MB in {self.path}. Nothing was appended.")

    def _stage(self, col: Column, values: np.ndarray) -> None:
        """Called with the lock held: copy into the staging row; hand full rows to the encoders."""
        col.stage(values, self._encode_full_row)

    def _encode_full_row(self, col: Column, row: int, block: np.ndarray) -> None:
        fut = self._pool.submit(encode_rows, col, row, block, True)
        self._rows.append((col, row, fut, False))

    def _append_dask(self, stream: Stream, data: Any, timestamps: Any) -> int:
        """Compute a dask array (and timestamps) in time slices of about ``flush_bytes`` and append them."""
        step = max(stream.data.rows, self.flush_bytes // max(1, stream.data.row_bytes) // 4)
        n = int(data.shape[0])
        if timestamps is not None:  # small: computed and checked whole, before any piece is appended
            timestamps = np.asarray(timestamps.compute() if _is_dask(timestamps) else timestamps)
            if stream.timestamps is not None:
                timestamps = stream.checked_timestamps(timestamps, n)
        if _is_dask(data):  # pieces span blocks, which dask concatenates (promoting mixed dtypes): check each first
            data = checked_array(data, prefix=f"stream {stream.name!r}: the dask array's ")
        count = stream.samples
        for start in range(0, n, step):
            stop = min(n, start + step)
            block = np.asarray(data[start:stop].compute() if _is_dask(data) else data[start:stop])
            ts = None if timestamps is None else timestamps[start:stop]
            count = self.append(stream.path, block, ts)
        return count

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StreamError(f"{self.path}: the live writer failed: {type(self._error).__name__}: {self._error}; "
                              "the file holds every sample up to the last flush") from self._error
        if self._closed or self._closing:
            raise StreamError(f"{self.path}: the writer is closed")

    # -- the writer thread -------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # any failure reaches the caller; the file keeps the last flush
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._error is not None:
                        return
                    due = (self._flush_requested > self._flush_done or self._unflushed >= self.flush_bytes
                           or time.monotonic() >= self._next_flush)
                    if due:
                        break
                    if self._closing:
                        return
                    self._cond.wait(max(0.0, min(self._next_flush - time.monotonic(), 0.5)))
                generation = self._flush_requested
                job = self._snapshot()
                if not job["rows"] and not job["tails"] and not job["bytes"]:  # nothing new: nothing to do
                    self._flush_done = max(self._flush_done, generation)
                    self._cond.notify_all()
                    continue
            info = self._flush(job)
            with self._cond:
                for s, n in job["samples"].items():
                    s.flushed = n
                self._pending -= job["bytes"]
                self._flush_done = max(self._flush_done, generation)
                st = self._stats
                st.flushes += 1
                st.logical_bytes += job["bytes"]
                st.stored_bytes += info.stored_bytes
                st.max_flush_seconds = max(st.max_flush_seconds, info.seconds)
                self._cond.notify_all()
            if self.on_flush is not None:
                try:
                    self.on_flush(info)
                except Exception as exc:  # a callback's bug must not stop the writer
                    print(f"nwb_dask.live: on_flush callback raised {type(exc).__name__}: {exc}", file=sys.stderr)

    def _snapshot(self) -> dict:
        """Called with the lock held: take the encoded rows and copies of the partial rows to flush."""
        rows, self._rows = self._rows, []
        tails = []
        for s in self._streams:
            for col in s.columns:
                tail = col.take_tail()  # None when unchanged since the last flush
                if tail is not None:
                    tails.append((col, *tail))
        job = {"rows": rows, "tails": tails, "samples": {s: s.samples for s in self._streams},
               "bytes": self._unflushed}
        self._unflushed = 0
        if self.flush_every:
            self._next_flush = time.monotonic() + self.flush_every
        return job

    def _flush(self, job: dict) -> FlushInfo:
        """Writer thread, without the lock: grow, store, flush HDF5, fsync."""
        t0 = time.perf_counter()
        tails = [(col, row, self._pool.submit(encode_rows, col, row, block), True)
                 for col, row, block in job["tails"]]
        for s, n in job["samples"].items():
            for col in s.columns:
                dset = self._dsets[col.path]
                if dset.shape[0] < n:
                    dset.resize(n, axis=0)
        stored = 0
        for col, row, fut, partial in job["rows"] + tails:
            stored += self._store(col, fut.result(), partial)
        self._file.flush()
        if self.fsync and self._fd is not None:
            os.fsync(self._fd)
        seconds = time.perf_counter() - t0
        with self._cond:
            number = self._stats.flushes + 1
        return FlushInfo(number, {s.key: n for s, n in job["samples"].items()}, stored, seconds, time.time())

    def _store(self, col: Column, chunks: list, partial: bool) -> int:
        return col.store(self._dsets[col.path], chunks, partial, self._count_superseded)

    def _count_superseded(self, nbytes: int) -> None:
        with self._cond:
            self._stats.superseded_bytes += nbytes

"""Streaming writes for live acquisition: growing NWB datasets, SWMR readers, crash-safe flushes.

An acquisition loop calls :meth:`StreamWriter.append` with each block as it
arrives, for several streams at their own rates (say 384-channel ephys at
30 kHz, an analog channel at 1 kHz, and events with timestamps).  The writer

* copies the block into a staging row (the only work done in the caller's
  thread) and, as each row of whole chunks fills, hands it to a thread pool
  that encodes its HDF5 chunks with nwb_dask's codecs (which release the GIL);
* every ``flush_every`` seconds, or when ``flush_bytes`` are waiting, a writer
  thread makes everything appended so far durable: it grows the datasets,
  stores the encoded chunks (and the partial last chunk of each stream) with
  HDF5 direct chunk writes, flushes HDF5's metadata and ``fsync``\\ s;
* bounds the bytes not yet flushed by ``max_pending_bytes``: an ``append``
  beyond it waits (``on_overrun="block"``) or raises
  :class:`StreamOverrunError` (``"raise"``).  Data are never dropped.

The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, so
other processes can open it while it grows (:func:`open_live`,
:func:`follow`) and see every sample up to the last flush.  SWMR also orders
HDF5's metadata writes so that a writer killed at any moment (``SIGKILL``,
power loss after an ``fsync``) leaves a file holding every sample up to its
last completed flush.  A file whose writer died still carries HDF5's "open
for writing" mark: SWMR readers open it as it is, and :func:`recover` (the
``h5clear -s`` of HDF5's tools) clears the mark so that every HDF5 reader does.

HDF5's SWMR rules, which shape this module (see docs/live.md):

* every group, dataset and attribute exists before SWMR writing starts, so the
  whole NWB structure is written by pynwb first (under a temporary name, then
  renamed into place); afterwards only dataset extents and contents change;
* growing datasets are chunked with an unlimited time axis;
* chunk space superseded by a rewrite is never reused (a reader may still be
  reading it), so re-storing a partial last chunk at each flush costs its size
  once; automatic chunk shapes keep this to a few percent (``stats``).
"""

from __future__ import annotations

import ctypes
import hashlib
import glob
import math
import os
import struct
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from nwb_dask.blocks import checked_array, checked_block
from nwb_dask.chunking import MIN_TIME_SAMPLES, ChunkShapeError, check_chunk_shape, guess_chunk_shape
from nwb_dask.codecs import Codec, CodecSpec, codec as make_codec, other_encodings, runs_outside_hdf5
from nwb_dask.engine import encode_block

__all__ = [
    "FlushInfo",
    "GrowingData",
    "StreamError",
    "StreamOverrunError",
    "StreamStats",
    "StreamWriter",
    "follow",
    "growing",
    "open_live",
    "recover",
]

#: HDF5 file-format bounds for live files: SWMR needs the 1.10 format; capping it
#: there keeps the files readable by HDF5 1.10 and later.
LIBVER = ("v110", "v110")
#: Default seconds between flushes.
DEFAULT_FLUSH_SECONDS = 1.0
#: Default bytes not yet flushed that trigger an early flush.
DEFAULT_FLUSH_BYTES = 64 * 2**20
#: Default bound on bytes appended but not yet flushed.
DEFAULT_MAX_PENDING_BYTES = 256 * 2**20
#: A growing column's chunk fills in at most this fraction of a flush interval
#: when its rate is known, so the partial chunk re-stored at each flush (whose
#: old copy HDF5 keeps in SWMR mode) costs a small fraction of the data.
_CHUNK_FLUSH_FRACTION = 0.25


class StreamError(RuntimeError):
    """The live writer failed (disk full, HDF5 error, ...); the message names the file and stream."""


class StreamOverrunError(StreamError):
    """Data arrive faster than they can be compressed and stored, and ``on_overrun="raise"``."""


# --------------------------------------------------------------------------- #
# declaring growing datasets                                                   #
# --------------------------------------------------------------------------- #
def _h5dataio_base():
    from hdmf.backends.hdf5 import H5DataIO

    return H5DataIO


class GrowingData(_h5dataio_base()):
    """An empty, growing dataset for a pynwb container field (``data=``, ``timestamps=``).

    Made by :func:`growing`; pynwb writes it as an empty chunked dataset with an
    unlimited time axis, and :class:`StreamWriter` appends to it.
    """

    def __init__(self, dtype, shape: Sequence[int], chunks: Sequence[int] | None, codec: Codec):
        dtype = np.dtype(dtype)
        self.codec = codec
        self.trailing_shape = tuple(int(s) for s in shape)
        self.user_chunks = tuple(int(c) for c in chunks) if chunks is not None else None
        super().__init__(
            data=np.empty((0, *self.trailing_shape), dtype),
            maxshape=(None, *self.trailing_shape),
            chunks=self.user_chunks or (1, *self.trailing_shape),  # resolved by StreamWriter
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


def _live_chunks(d: GrowingData, rate: float | None, flush_every: float | None) -> tuple[int, ...]:
    """Chunk shape of a growing column: nwb_dask's guess, shortened in time for slow streams.

    A partial last chunk is re-stored at each flush and HDF5 keeps its old copy
    (SWMR), so a chunk should fill within a fraction of a flush interval: with
    the rate known, at most ``rate * flush_every * _CHUNK_FLUSH_FRACTION`` samples;
    without it (timestamped events), at most ``MIN_TIME_SAMPLES``.
    """
    if d.user_chunks is not None:
        return d.user_chunks
    dtype = d.dtype
    nominal = (2**31 - 1, *d.trailing_shape)
    chunk = list(guess_chunk_shape(nominal, dtype, maxshape=(None, *d.trailing_shape)))
    if rate and flush_every:
        cap = max(16, int(rate * flush_every * _CHUNK_FLUSH_FRACTION))
    else:
        cap = MIN_TIME_SAMPLES
    chunk[0] = max(1, min(chunk[0], cap))
    # Past the current length only along the unlimited time axis (docs/chunking.md).
    return check_chunk_shape(chunk, (0, *d.trailing_shape), (None, *d.trailing_shape))


# --------------------------------------------------------------------------- #
# the writer's bookkeeping                                                     #
# --------------------------------------------------------------------------- #
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


class _Column:
    """One growing dataset of a stream: staging row, encoded rows waiting for a flush."""

    def __init__(self, stream: str, path: str, spec: GrowingData):
        self.stream, self.path = stream, path
        self.dtype = spec.dtype
        self.trailing = spec.trailing_shape
        self.codec = spec.codec
        self.chunk_shape = spec.chunk_shape
        self.rows = self.chunk_shape[0]
        self.fill = 0
        self.row_bytes = int(np.prod(self.trailing, dtype=np.int64)) * self.dtype.itemsize
        self.free: deque = deque(maxlen=8)  # encoded rows' buffers, reused (fresh pages are slow to touch)
        self.staged = self._new_buffer()
        self.filled = 0  # samples in ``staged``
        self.row_index = 0  # index of the row being staged
        self.tail_sizes: dict[tuple, tuple[int, bytes]] = {}  # chunk offset -> (size, digest) of a partial copy
        self.last_tail = (0, 0)  # (row, samples) of the partial row last flushed

    def _new_buffer(self) -> np.ndarray:
        try:
            return self.free.pop()
        except IndexError:
            return np.empty((self.rows, *self.trailing), self.dtype)

    def selection(self, row: int, n: int) -> tuple[slice, ...]:
        start = row * self.rows
        return (slice(start, start + n), *(slice(0, s) for s in self.trailing))


@dataclass(eq=False)  # hashed by identity
class _Stream:
    name: str
    path: str
    data: _Column
    timestamps: _Column | None
    key: str = ""  # the name when unique in the file, else the path: keys of streams/flushed/stats
    samples: int = 0
    flushed: int = 0
    last_time: float = -math.inf

    @property
    def columns(self) -> list[_Column]:
        return [self.data] + ([self.timestamps] if self.timestamps is not None else [])


def _encode_rows(column: _Column, row: int, block: np.ndarray, recycle: bool = False):
    chunks = encode_block(block, column.selection(row, block.shape[0]), column.chunk_shape, column.codec, column.fill)
    if recycle:  # Codec.encode returns new bytes, never views of the block
        column.free.append(block)
    return chunks


# --------------------------------------------------------------------------- #
# the writer                                                                   #
# --------------------------------------------------------------------------- #
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
    ...     electrodes=region, rate=30000.0, starting_time=0.0))  # doctest: +SKIP
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
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        self.flush_every = flush_every
        self.flush_bytes = min(flush_bytes, max_pending_bytes)
        self.max_pending_bytes = max_pending_bytes
        self.on_overrun = on_overrun
        self.overrun_timeout = overrun_timeout
        self.fsync = fsync
        self.on_flush = on_flush

        self._streams = self._create(nwbfile)
        self._by_name = self._index(self._streams)

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
        self._rows: list[tuple[_Column, int, Future, bool]] = []  # encoded rows waiting for a flush
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
    def _create(self, nwbfile) -> list[_Stream]:
        """Write the structure with pynwb under a temporary name (1.10 format), then rename it into place."""
        import h5py
        from pynwb import NWBHDF5IO

        found = _growing_fields(nwbfile)
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
                spec._set_chunks(_live_chunks(spec, rate if "timestamps" not in fields else None, self.flush_every))
        from nwb_dask.atomic import AtomicOutput

        def lock(tmp: Path) -> None:
            self._lock_fd = os.open(tmp, os.O_RDWR)  # follows the file through the rename
            _lock_writer_byte(self._lock_fd)

        atomic = AtomicOutput(self.path)  # temporary name, fsync, rename, fsync the directory
        try:
            with h5py.File(atomic.temp, "w", libver=LIBVER) as f, NWBHDF5IO(file=f, mode="w") as io:
                io.write(nwbfile)
                paths = _builder_paths(io, nwbfile, found)
            atomic.commit(before_rename=lock)
        except BaseException as exc:
            atomic.discard()
            self._release_lock()
            atomic.raise_for(exc)
            raise
        streams = []
        for container, fields in found:
            cols = {k: _Column(container.name, paths[id(spec)], spec) for k, spec in fields.items()}
            group = paths[id(fields["data"])].rsplit("/", 1)[0]
            streams.append(_Stream(container.name, group, cols["data"], cols.get("timestamps")))
        return streams

    def _release_lock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)

    @staticmethod
    def _index(streams: list[_Stream]) -> dict[str, _Stream]:
        index: dict[str, _Stream] = {}
        names = [s.name for s in streams]
        for s in streams:
            index[s.path] = index[s.path.lstrip("/")] = s
            s.key = s.name if names.count(s.name) == 1 else s.path.lstrip("/")
            if names.count(s.name) == 1:
                index[s.name] = s
        return index

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
        data = self._check(stream, stream.data, data, "data")
        n = data.shape[0]
        if stream.timestamps is not None:
            if timestamps is None:
                raise ValueError(f"stream {stream.name!r} has growing timestamps: pass timestamps= with the data")
            timestamps = self._check_timestamps(stream, timestamps, n)
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
    def _stream(self, name: str) -> _Stream:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no stream {name!r} in {self.path}; streams: {list(self.streams)}") from None

    def _check(self, stream: _Stream, col: _Column, values: Any, what: str) -> np.ndarray:
        arr = values if isinstance(values, np.ma.MaskedArray) else np.asarray(values)  # masks: refused below
        if arr.ndim == len(col.trailing):  # one sample
            arr = arr[np.newaxis]
        if arr.shape[1:] != col.trailing:
            raise ValueError(f"stream {stream.name!r}: {what} of shape {arr.shape} do not match the sample shape "
                             f"{col.trailing} (expected (n, {', '.join(map(str, col.trailing))}))".replace(", )", ")"))
        # the rule of every write path (nwb_dask.blocks): converted when every value survives, else refused
        selection = (slice(stream.samples, stream.samples + arr.shape[0]), *(slice(0, t) for t in col.trailing))
        return checked_block(arr, col.dtype, label=f"stream {stream.name!r}", what=what, selection=selection)

    def _check_timestamps(self, stream: _Stream, timestamps: Any, n: int) -> np.ndarray:
        """Timestamps for ``n`` samples: the right dtype and count, non-decreasing from the last appended."""
        timestamps = self._check(stream, stream.timestamps, timestamps, "timestamps")
        if timestamps.shape[0] != n:
            raise ValueError(f"stream {stream.name!r}: {n} samples but {timestamps.shape[0]} timestamps")
        if n and (np.any(np.diff(timestamps.astype(np.float64)) < 0) or float(timestamps[0]) < stream.last_time):
            raise ValueError(f"stream {stream.name!r}: timestamps go backwards "
                             f"(last appended {stream.last_time}, got {timestamps[:3]}...)")
        return timestamps

    def _make_room(self, stream: _Stream, nbytes: int) -> None:
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

    def _stage(self, col: _Column, values: np.ndarray) -> None:
        """Called with the lock held: copy into the staging row; hand full rows to the encoders."""
        i, n = 0, values.shape[0]
        while i < n:
            take = min(n - i, col.rows - col.filled)
            col.staged[col.filled:col.filled + take] = values[i:i + take]
            col.filled += take
            i += take
            if col.filled == col.rows:
                row, block = col.row_index, col.staged
                fut = self._pool.submit(_encode_rows, col, row, block, True)
                self._rows.append((col, row, fut, False))
                col.staged, col.filled, col.row_index = col._new_buffer(), 0, row + 1

    def _append_dask(self, stream: _Stream, data: Any, timestamps: Any) -> int:
        """Compute a dask array (and timestamps) in time slices of about ``flush_bytes`` and append them."""
        step = max(stream.data.rows, self.flush_bytes // max(1, stream.data.row_bytes) // 4)
        n = int(data.shape[0])
        if timestamps is not None:  # small: computed and checked whole, before any piece is appended
            timestamps = np.asarray(timestamps.compute() if _is_dask(timestamps) else timestamps)
            if stream.timestamps is not None:
                timestamps = self._check_timestamps(stream, timestamps, n)
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
                if col.filled and (col.row_index, col.filled) != col.last_tail:  # changed since the last flush
                    tails.append((col, col.row_index, col.staged[:col.filled].copy()))
                    col.last_tail = (col.row_index, col.filled)
        job = {"rows": rows, "tails": tails, "samples": {s: s.samples for s in self._streams},
               "bytes": self._unflushed}
        self._unflushed = 0
        if self.flush_every:
            self._next_flush = time.monotonic() + self.flush_every
        return job

    def _flush(self, job: dict) -> FlushInfo:
        """Writer thread, without the lock: grow, store, flush HDF5, fsync."""
        t0 = time.perf_counter()
        tails = [(col, row, self._pool.submit(_encode_rows, col, row, block), True)
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

    def _store(self, col: _Column, chunks: list, partial: bool) -> int:
        dset = self._dsets[col.path]
        stored = 0
        for offset, mask, data in chunks:
            old = col.tail_sizes.pop(offset, None)
            if old is not None:
                if partial and hashlib.blake2b(data).digest() == old[1]:
                    col.tail_sizes[offset] = old  # the stored copy already holds these bytes
                    continue
                with self._cond:
                    self._stats.superseded_bytes += old[0]
                if len(data) == old[0] and col.codec.name != "none":
                    data = _resize_encoding(col, offset, data)
            dset.id.write_direct_chunk(offset, data, mask)
            stored += len(data)
            if partial:
                col.tail_sizes[offset] = (len(data), hashlib.blake2b(data).digest())
        return stored


def _resize_encoding(col: _Column, offset: tuple, data: bytes) -> bytes:
    """Re-encode a chunk whose stored size equals its partial copy's.

    HDF5 rewrites a same-size chunk in place; a crash in the middle would tear
    the copy the last flush made durable.  Another compression level decodes
    the same and almost always changes the size, so the new copy goes elsewhere.
    """
    raw = col.codec.decode(data, col.dtype, col.chunk_shape)
    for other in other_encodings(col.codec, np.ascontiguousarray(raw)):
        if len(other) != len(data):
            return other
    print(f"nwb_dask.live: chunk {offset} of {col.path} is rewritten in place (same stored size); "
          "a crash during this write could damage it", file=sys.stderr)
    return data


# --------------------------------------------------------------------------- #
# helpers: NWB structure                                                       #
# --------------------------------------------------------------------------- #
def _growing_fields(nwbfile) -> list[tuple[Any, dict[str, GrowingData]]]:
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


def _builder_paths(io, nwbfile, found) -> dict[int, str]:
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


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.") and hasattr(x, "compute")


#: A byte no HDF5 file reaches: a StreamWriter holds a record lock on it while it
#: writes, and recover() refuses while it is held.  (HDF5's own lock cannot tell:
#: HDF5 drops it once SWMR writing starts, so that readers can open the file.)
_WRITER_LOCK_OFFSET = 2**62


def _lock_writer_byte(fd: int) -> None:
    """Take the writer's lock on ``fd`` (open for writing) without waiting; OSError if it is held.

    Linux open-file-description locks belong to this descriptor, not to the
    process (closing another descriptor of the file does not drop them) and do
    not interact with HDF5's flock(); elsewhere, POSIX record locks.  The kernel
    drops them when the process dies, SIGKILL included.
    """
    import fcntl

    if hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("l") == 8:  # struct flock of 64-bit Linux
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                                                        _WRITER_LOCK_OFFSET, 1, 0))
    else:  # pragma: no cover - not Linux
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _WRITER_LOCK_OFFSET)


# --------------------------------------------------------------------------- #
# readers                                                                      #
# --------------------------------------------------------------------------- #
def open_live(path: str | os.PathLike):
    """Open a growing (or crashed) live file read-only in SWMR mode; returns an ``h5py.File``.

    Call ``dset.refresh()`` before reading a dataset's new extent.  The file may
    also be handed to pynwb: ``NWBHDF5IO(file=open_live(path), mode="r")``.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise OSError(f"{path}: cannot open for SWMR reading ({exc}); it may not be a live (HDF5 1.10+) file") from exc


def follow(
    path: str | os.PathLike,
    dataset: str,
    *,
    start: int = 0,
    poll: float = 0.05,
    idle_timeout: float | None = 10.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Follow a growing dataset from another process: yield ``(first_index, new_samples)`` as they appear.

    Parameters
    ----------
    path : str or Path
        The live file.
    dataset : str
        HDF5 path, e.g. ``"acquisition/ephys/data"`` (``StreamWriter.dataset_path``).
    start : int
        First sample to yield.
    poll : float
        Seconds between looks at the file.
    idle_timeout : float or None
        Stop after this many seconds without new samples (``None``: never).
    """
    with open_live(path) as f:
        try:
            dset = f[dataset]
        except KeyError:
            raise KeyError(f"{path}: no dataset {dataset!r}") from None
        pos, last = start, time.monotonic()
        while True:
            dset.refresh()
            n = dset.shape[0]
            if n > pos:
                yield pos, dset[pos:n]
                pos, last = n, time.monotonic()
                continue
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
            time.sleep(poll)


# --------------------------------------------------------------------------- #
# recovery after a crash                                                       #
# --------------------------------------------------------------------------- #
def _hdf5_library() -> ctypes.CDLL:
    """The HDF5 library h5py itself uses (found in this process's memory map, or next to h5py)."""
    import h5py

    def is_hdf5(p: str) -> bool:
        name = os.path.basename(p)
        return name.startswith("libhdf5") and not name.startswith("libhdf5_hl") and (".so" in name or ".dylib" in name)

    candidates: list[str] = []
    try:
        with open("/proc/self/maps") as maps:  # Linux: the copy already loaded
            for line in maps:
                p = line.split()[-1]
                if is_hdf5(p) and p not in candidates:
                    candidates.append(p)
    except OSError:  # not Linux
        pass
    base = os.path.dirname(h5py.__file__)
    for pattern in ("../h5py.libs/libhdf5*", ".dylibs/libhdf5*"):  # the copy bundled with the wheel
        candidates += [p for p in sorted(glob.glob(os.path.join(base, pattern))) if is_hdf5(p)]
    for cand in candidates:
        try:
            lib = ctypes.CDLL(cand)
            lib.H5Pset  # noqa: B018 - check the symbol
            return lib
        except (OSError, AttributeError):
            continue
    raise OSError("could not locate the HDF5 library h5py uses; run HDF5's `h5clear -s FILE` instead")


def recover(path: str | os.PathLike) -> None:
    """Clear the "open for writing" mark a killed writer left, so every HDF5 reader opens the file.

    This is ``h5clear -s``: the file's contents are not changed, and the data
    are those of the writer's last completed flush.  It refuses a file that a
    live writer still holds open.

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError
        The file is open by a writer, or is not an HDF5 1.10+ file.
    """
    import h5py
    from h5py import h5f

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    for fid in h5f.get_obj_ids(types=h5f.OBJ_FILE):  # HDF5 would share this process's open file
        try:
            same = os.path.samefile(fid.name, path)
        except OSError:
            continue
        if same and fid.get_intent() & h5f.ACC_RDWR:
            raise OSError(f"{path}: cannot clear the writer's mark; a writer in this process holds it open")
    lock_fd = os.open(path, os.O_RDWR)
    try:
        try:
            _lock_writer_byte(lock_fd)  # held until the marks are cleared
        except OSError as exc:
            raise OSError(f"{path}: a StreamWriter (in this or another process) is still writing it; "
                          "recover is for a file whose writer died") from exc
        _clear_status_flags(path)
    finally:
        os.close(lock_fd)
    with h5py.File(path, "r"):
        pass  # plain readers open it now


def _clear_status_flags(path: Path) -> None:
    """HDF5's ``h5clear -s``."""
    from h5py import h5f, h5p

    lib = _hdf5_library()
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    lib.H5Pset.restype = ctypes.c_int
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_V110, h5f.LIBVER_LATEST)
    flag = ctypes.c_bool(True)
    # HDF5's private "clear_status_flags" access property is what h5clear sets; h5py has no API for it.
    if lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise OSError(f"{path}: this HDF5 cannot clear status flags; run `h5clear -s {path}`")
    try:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDWR, fapl=fapl)
    except OSError as exc:
        raise OSError(f"{path}: cannot clear the writer's mark ({exc})") from exc
    fid.close()

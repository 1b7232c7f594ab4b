"""hdmf's queue of DataChunkIterators, made parallel.

hdmf writes every DataChunkIterator through HDF5's filter pipeline, one after
another, in one thread.  :func:`drain_iterators` drains many iterators
*together*, through the one write engine's window
(:func:`nwb_dask.engine.run_block_tasks` with :class:`~nwb_dask.engine.CallTask`):
each iterator's ``next()`` runs in a worker thread (one call at a time per
iterator: iterators are not thread-safe), the DataChunks it yields are checked
and assembled there into whole HDF5 chunks (any selection shape works, aligned
or not), the chunks are encoded with the codec as further tasks, and this
thread, the sink, stores the finished bytes with ``write_direct_chunk``.
Datasets that grow (``maxshape`` None) are extended as data arrives, as hdmf
does.

hdmf's :class:`~hdmf.data_utils.GenericDataChunkIterator` (neuroconv's and
SpikeInterface's recording iterators are subclasses) can read *any*
selection with ``_get_data(selection)``: for those the queue plans the
selections itself (:func:`planned_selections`: the iterator's own buffers, in
its order, cut along the first axis into whole HDF5 chunks of at most
``read_bytes``) and runs several ``_get_data`` calls at once, bounded by the
engine's window, instead of one ``next()`` at a time.  An iterator (or its
class) with ``nwb_dask_parallel_reads = False`` is read serially (a source
that is not thread-safe).

:class:`ParallelDataChunkIteratorQueue` plugs this into hdmf's ``HDF5IO`` in
place of ``HDF5IODataChunkIteratorQueue``.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from hdmf.backends.hdf5.h5_utils import HDF5IODataChunkIteratorQueue
from hdmf.data_utils import GenericDataChunkIterator

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.codecs import Codec, chunk_codec, codec, pad_chunk
from nwb_dask.codecs.deflate import ENGINES, auto_engine
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES, CallTask, WriteStats, bound_heap_growth, run_block_tasks

__all__ = ["ParallelDataChunkIteratorQueue", "drain_iterators", "planned_selections", "DEFAULT_READ_BYTES"]

#: Target size of one planned ``_get_data`` read of a GenericDataChunkIterator (whole chunk rows).
DEFAULT_READ_BYTES = 64 * 2**20


class ParallelDataChunkIteratorQueue(HDF5IODataChunkIteratorQueue):
    """Collects (dataset, iterator) pairs; :meth:`drain` writes them all in parallel.

    hdmf calls ``exhaust_queue()`` after each dataset and at the end of
    ``write``; here that does nothing, so the iterators wait until
    :meth:`drain` writes them together.
    """

    def exhaust_queue(self) -> None:  # hdmf's hook: deferred
        return None

    def drain(self, **kwargs: Any) -> WriteStats:
        """Write and empty the queue; keywords as for :func:`drain_iterators`."""
        pairs = list(self)
        self.clear()
        return drain_iterators(pairs, **kwargs)


class _Assembler:
    """Collects DataChunks of one dataset into whole HDF5 chunks."""

    def __init__(self, dset, chunk_shape: tuple, fill: Any):
        # The dataset's shape and dtype are read once, here: add() runs in the iterator's worker
        # thread and never touches h5py.  A growing dataset's shape is not used (only full chunks
        # are complete before the iterator ends).
        self.shape = tuple(dset.shape)
        self.dtype = dset.dtype
        self.chunk_shape = chunk_shape
        self.fill = fill
        self.growing = any(m is None for m in (dset.maxshape or ()))
        self.buffers: dict[tuple, list] = {}  # chunk index -> [array, filled count]

    def _valid(self, idx: tuple) -> tuple:
        """Extent of chunk ``idx`` inside the dataset (of a fixed shape)."""
        return tuple(
            max(0, min(c, s - i * c)) for i, c, s in zip(idx, self.chunk_shape, self.shape)
        )

    def add(self, selection: tuple, data: np.ndarray) -> list[tuple[tuple, np.ndarray]]:
        """Place a DataChunk; return the chunks it completes as (offset, full chunk)."""
        out = []
        ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(selection, self.chunk_shape)]
        for idx in np.ndindex(*(len(r) for r in ranges)):
            cidx = tuple(r[i] for r, i in zip(ranges, idx))
            start = tuple(i * c for i, c in zip(cidx, self.chunk_shape))
            lo = tuple(max(s.start, st) for s, st in zip(selection, start))
            hi = tuple(min(s.stop, st + c) for s, st, c in zip(selection, start, self.chunk_shape))
            src = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, selection))
            dst = tuple(slice(a - st, b - st) for a, b, st in zip(lo, hi, start))
            valid = self._valid(cidx)
            covered = tuple(b - a for a, b in zip(lo, hi))
            whole = not self.growing and all(d.start == 0 for d in dst) and covered == valid
            if whole and cidx not in self.buffers:
                out.append((start, pad_chunk(data[src], self.chunk_shape, self.fill)))
                continue
            buf = self.buffers.get(cidx)
            if buf is None:
                buf = self.buffers[cidx] = [np.full(self.chunk_shape, self.fill, dtype=self.dtype), 0]
            buf[0][dst] = data[src]
            buf[1] += math.prod(covered)
            if buf[1] >= math.prod(self.chunk_shape) or (not self.growing and buf[1] >= math.prod(valid)):
                out.append((start, self.buffers.pop(cidx)[0]))
        return out

    def flush(self) -> list[tuple[tuple, np.ndarray]]:
        """The remaining partial (edge) chunks."""
        out = [(tuple(i * c for i, c in zip(idx, self.chunk_shape)), buf[0]) for idx, buf in self.buffers.items()]
        self.buffers.clear()
        return out

    @property
    def held_bytes(self) -> int:
        return sum(b[0].nbytes for b in self.buffers.values())


def _normalise(selection, data: np.ndarray) -> tuple:
    """A DataChunk selection as a full tuple of step-1 slices with stops."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    out = []
    for axis in range(data.ndim):
        s = selection[axis] if axis < len(selection) else slice(None)
        if isinstance(s, (int, np.integer)):
            raise ValueError("integer indices in DataChunk selections are not supported by the parallel queue")
        start = 0 if s.start is None else int(s.start)
        stop = start + data.shape[axis] if s.stop is None else int(s.stop)
        if s.step not in (None, 1):
            raise ValueError(f"DataChunk selection {selection} has a step; only contiguous slices are supported")
        out.append(slice(start, stop))
    return tuple(out)


def _declared_dtype(it, dset) -> np.dtype:
    """The dtype an iterator declares (hdmf's ``dtype``), else its dataset's."""
    dtype = getattr(it, "dtype", None)
    try:
        dtype = np.dtype(dset.dtype if dtype is None else dtype)
    except TypeError:  # e.g. hdmf's dtype names of strings or references
        return dset.dtype
    return dtype if dtype.kind in "biufc" else dset.dtype


@dataclass
class _Piece:
    """What one ``next()`` task brings back: a checked DataChunk, and the chunks it completed (raw)."""

    k: int
    nbytes: int = 0  # logical bytes read (the progress bar's unit)
    selection: tuple | None = None  # None: the iterator is exhausted
    raw: np.ndarray | None = None  # the data, for datasets HDF5 filters itself
    chunks: list = field(default_factory=list)  # [(offset, full chunk)] to encode
    held: int = 0  # bytes the iterator's assembler still holds in partial chunks


@dataclass
class _Encoded:
    """One encoded chunk, back from an encode task."""

    k: int
    offset: tuple
    mask: int
    data: bytes
    raw_bytes: int
    nbytes: int = 0  # counted by its piece


class _Iterator:
    """One (dataset, iterator) pair: what the worker-side ``next()`` task needs, read once from h5py."""

    def __init__(self, k: int, dset, it, read_bytes: int = DEFAULT_READ_BYTES):
        self.k, self.it, self.name = k, it, dset.name
        self.declared = _declared_dtype(it, dset)
        self.stored = dset.dtype
        self.codec: Codec | None = chunk_codec(dset, getattr(it, "codec", None))  # None: HDF5 filters it
        self.assembler = _Assembler(dset, tuple(dset.chunks), dset.fillvalue) if self.codec else None
        self.last = 0  # bytes of the last DataChunk: the next read's estimate for the engine's window
        # GenericDataChunkIterators: selections planned here, read concurrently (None: serial next())
        self.plan: deque | None = None
        if _plannable(it, dset):
            chunks = tuple(dset.chunks) if dset.chunks else tuple(int(c) for c in it.chunk_shape)
            self.plan = deque(planned_selections(it, chunks, read_bytes))
        self.inflight = 0  # tasks of this iterator handed to the engine and not back (the sink's count)
        self.finishing = False
        self.lock = threading.Lock()  # planned reads run concurrently: one assembler update at a time
        # gzip from the file's own filters (hdmf's H5DataIO, neuroconv's backend configuration): the
        # caller expects zlib's file; the engine is chosen on the first chunk (_zlib_sized_engine)
        self.probe = (self.codec is not None and getattr(it, "codec", None) is None
                      and self.codec.name == "gzip" and self.codec.options.get("engine") == "auto")
        self.probe_lock = threading.Lock()

    def encode(self, offset: tuple, chunk: np.ndarray) -> _Encoded:
        """Worker side: encode one chunk (the first of a probed gzip dataset also picks the engine)."""
        if self.probe:
            with self.probe_lock:
                if self.probe:
                    self.codec, first = _zlib_sized_engine(self.codec, chunk)
                    self.probe = False
                    return _Encoded(self.k, offset, first[0], first[1], chunk.nbytes)
        mask, data = self.codec.encode(chunk)
        return _Encoded(self.k, offset, mask, data, chunk.nbytes)

    def task(self) -> CallTask:
        """Sink side: the next task of this iterator (a planned read, the final flush, or a ``next()``)."""
        if self.plan is None:
            return CallTask(self.last, self.read)
        if self.plan:
            selection = self.plan.popleft()
            return CallTask(_selection_bytes(selection, self.declared), self.read_planned, (selection,))
        self.finishing = True  # every planned read is back: the edge chunks
        return CallTask(0, self.finish)

    def ready_again(self, piece: _Piece) -> bool:
        """Sink side, after submitting (``piece`` None) or receiving a piece: may another task start now?"""
        if self.plan is None:
            return piece is not None and piece.selection is not None
        if self.plan:
            return piece is None  # re-queued once per submitted read: several reads in flight
        return piece is not None and self.inflight == 0 and not self.finishing

    def read(self) -> _Piece:
        """Worker side: one ``next()``, checked (the rule of every write path) and assembled into chunks."""
        piece = next(self.it, None)
        if piece is None:  # exhausted: the remaining partial (edge) chunks
            return self.finish()
        data = piece.data if isinstance(piece.data, np.ndarray) else np.asarray(piece.data)
        return self._place(_normalise(piece.selection, data), data)

    def read_planned(self, selection: tuple) -> _Piece:
        """Worker side: ``_get_data`` of one planned selection (several run at once)."""
        data = self.it._get_data(selection=selection)
        data = data if isinstance(data, np.ndarray) else np.asarray(data)
        want = tuple(s.stop - s.start for s in selection)
        if data.shape != want:
            raise ValueError(f"{block_label(self.name, selection)}: {type(self.it).__name__}._get_data returned "
                             f"shape {data.shape} for a selection of shape {want}")
        return self._place(selection, data)

    def finish(self) -> _Piece:
        return _Piece(self.k, chunks=self.assembler.flush() if self.assembler else [])

    def _place(self, selection: tuple, data: np.ndarray) -> _Piece:
        # values of another dtype than declared are converted when they survive exactly, else refused
        data = checked_block(data, self.declared, stored=self.stored, selection=selection,
                             label=block_label(self.name, selection))
        if self.assembler is None:
            return _Piece(self.k, data.nbytes, selection, raw=data)
        with self.lock:
            chunks = self.assembler.add(selection, data)
            held = self.assembler.held_bytes
        return _Piece(self.k, data.nbytes, selection, chunks=chunks, held=held)


#: A probed gzip dataset keeps the fastest engine whose chunk is at most this much larger than zlib's.
ZLIB_SIZE_TOLERANCE = 0.01


def _zlib_sized_engine(gzip: Codec, chunk: np.ndarray) -> tuple[Codec, tuple[int, bytes]]:
    """The fastest deflate setting whose output on ``chunk`` is within 1% of zlib's at the file's level.

    ``engine="auto"`` favours ISA-L at levels 1-6 for speed, but ISA-L has only
    4 levels: at HDF5's gzip 4 it stores ~3% more than zlib on ephys noise
    (benchmarks/neuroconv.py), whatever the chunk shape.  A file whose
    filters say gzip N is expected to be zlib's size, so the chunk is encoded
    by zlib at N (the reference) and by faster settings, fastest first: ISA-L
    (its level for N), libdeflate at level 1 (on int16 noise already 1.001x
    zlib 4's size at ~1.6x libdeflate 4's speed), libdeflate at N, zlib-ng at
    N.  The first within :data:`ZLIB_SIZE_TOLERANCE` encodes the whole dataset.
    The file keeps gzip N in its filter (any deflate stream decodes; the level
    is the encoder's business).  Returns the codec and this chunk's (filter
    mask, bytes), so the probe's work is not lost.
    """
    level = int(gzip.options["level"])
    reference = codec(gzip, engine="zlib").encode(chunk)
    tries = [(auto_engine(level), level), ("isal", level), ("libdeflate", min(1, level)), ("libdeflate", level),
             ("zlib-ng", level)]
    for engine, lvl in dict.fromkeys(t for t in tries if t[0] in ENGINES and t[0] != "zlib"):
        candidate = codec(gzip, engine=engine, level=lvl)
        encoded = candidate.encode(chunk)
        if len(encoded[1]) <= (1 + ZLIB_SIZE_TOLERANCE) * len(reference[1]):
            return candidate, encoded
    return codec(gzip, engine="zlib"), reference


def _selection_bytes(selection: tuple, dtype: np.dtype) -> int:
    return math.prod(s.stop - s.start for s in selection) * np.dtype(dtype).itemsize


def _plannable(it, dset) -> bool:
    """Whether the queue may plan ``it``'s reads itself (else: serial ``next()``, and why).

    Only hdmf GenericDataChunkIterators promise ``_get_data(selection)`` for any
    selection; a subclass that overrides ``__next__`` may yield something else
    than ``_get_data`` of its buffers, and one already started has consumed
    buffers we cannot see: both stay serial, as does an opt-out
    (``nwb_dask_parallel_reads = False``: a source that is not thread-safe).
    """
    if not isinstance(it, GenericDataChunkIterator) or not getattr(it, "nwb_dask_parallel_reads", True):
        return False
    if type(it).__next__ is not GenericDataChunkIterator.__next__:
        return False
    gen = getattr(it, "buffer_selection_generator", None)
    if not inspect.isgenerator(gen) or inspect.getgeneratorstate(gen) != inspect.GEN_CREATED:
        return False  # not hdmf's generator, or already started
    maxshape = tuple(int(m) for m in it.maxshape)
    return maxshape == tuple(dset.shape) and len(maxshape) >= 1


def planned_selections(it: GenericDataChunkIterator, chunks: Sequence[int], read_bytes: int = DEFAULT_READ_BYTES):
    """The selections a GenericDataChunkIterator's buffers cover, cut for concurrent reads.

    Consumes the iterator's own ``buffer_selection_generator`` (its buffers, in
    the order hdmf would write them) and cuts each buffer along the first
    axis at HDF5 chunk bounders (``chunks``) into reads of about
    ``read_bytes`` (at least one chunk row): together they cover exactly the
    same elements, and each is read with ``_get_data``.
    """
    itemsize = np.dtype(it.dtype).itemsize
    for buffer in it.buffer_selection_generator:
        buffer = tuple(slice(int(s.start), int(s.stop)) for s in buffer)
        row = max(1, math.prod(s.stop - s.start for s in buffer[1:]) * itemsize)  # bytes per index of axis 0
        c0 = max(1, int(chunks[0]))
        step = max(1, read_bytes // (row * c0)) * c0
        start, stop = buffer[0].start, buffer[0].stop
        lo = start
        while lo < stop:
            hi = min(stop, (lo // c0) * c0 + step)  # ends on a chunk boundary (or the buffer's end)
            yield (slice(lo, hi),) + buffer[1:]
            lo = hi


def drain_iterators(
    pairs: Sequence[tuple[Any, Any]],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    workers: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    read_bytes: int = DEFAULT_READ_BYTES,
) -> WriteStats:
    """Drain several DataChunkIterators into their datasets at once, through the engine's window.

    Parameters
    ----------
    pairs : sequence of (h5py.Dataset, AbstractDataChunkIterator)
        Datasets created (e.g. by hdmf) with the iterators' shapes and filters.
    max_inflight_bytes : int
        Budget of raw bytes read but not yet stored (the engine's window,
        plus the partial chunks the assemblers hold).
    workers : int, optional
        Threads for ``next()`` calls and encoding (default: all cores).
    progress : bool
        The engine's progress bar, in bytes read.
    cancel : threading.Event, optional
        Set by another thread to stop early (the caller then reports its error).
    read_bytes : int
        Size of one planned read of a GenericDataChunkIterator (see the module's doc).

    Returns
    -------
    WriteStats
    """
    stats = WriteStats(datasets=[d.name for d, _ in pairs])
    if not pairs:
        return stats
    n = workers or os.cpu_count() or 1
    bound_heap_growth()
    states = [_Iterator(k, dset, it, read_bytes) for k, (dset, it) in enumerate(pairs)]
    total = 0
    for dset, _ in pairs:
        if all(m is not None for m in (dset.maxshape or dset.shape)):
            total += dset.size * dset.dtype.itemsize
    t0 = time.perf_counter()
    reads: deque = deque(range(len(pairs)))  # iterators ready for their next() (one call in flight each)
    encodes: deque = deque()  # encode tasks waiting for the window
    held = [0] * len(pairs)  # bytes each assembler holds, as last reported
    book = {"outstanding": 0, "encoding": 0}  # tasks handed to the engine and not back; raw bytes of encodes

    def tasks():
        """Encodes first (they free memory), then reads while under budget; None: wait for a result."""
        while reads or encodes or book["outstanding"]:
            if encodes:
                task = encodes.popleft()
                book["encoding"] += task.nbytes
            elif reads and (book["encoding"] + sum(held) < max_inflight_bytes or not book["encoding"]):
                state = states[reads.popleft()]
                task = state.task()
                state.inflight += 1
                if state.ready_again(None):
                    reads.append(state.k)
            else:
                yield None
                continue
            book["outstanding"] += 1
            yield task

    for done in run_block_tasks(tasks(), max_inflight_bytes=max_inflight_bytes, scheduler="threads", workers=n,
                                progress=progress, total=total or None, desc="nwb_dask iterators", cancel=cancel):
        book["outstanding"] -= 1
        if isinstance(done, _Encoded):
            dset = pairs[done.k][0]
            dset.id.write_direct_chunk(done.offset, done.data, done.mask)
            book["encoding"] -= done.raw_bytes
            stats.stored_bytes += len(done.data)
            stats.chunks += 1
            continue
        state = states[done.k]
        state.inflight -= 1
        _store_piece(done, pairs[done.k][0], state, stats, encodes)
        held[done.k] = done.held
        if state.ready_again(done):
            reads.append(done.k)
    stats.seconds = time.perf_counter() - t0
    return stats


def _store_piece(piece: _Piece, dset, state: _Iterator, stats: WriteStats, encodes: deque) -> None:
    """The sink for one ``next()``: grow the dataset, store raw data, queue its completed chunks for encoding."""
    if piece.selection is not None:
        state.last = piece.nbytes
        bounds = tuple(s.stop for s in piece.selection)
        if any(b > s for b, s in zip(bounds, dset.shape)):
            dset.id.extend(tuple(max(b, s) for b, s in zip(bounds, dset.shape)))
        stats.logical_bytes += piece.nbytes
        if piece.raw is not None:
            dset[piece.selection] = piece.raw  # HDF5 runs filters it alone knows
            stats.stored_bytes += piece.nbytes  # unknown after HDF5's filters; as the writer counts it
    for offset, chunk in piece.chunks:
        encodes.append(CallTask(chunk.nbytes, state.encode, (offset, chunk)))

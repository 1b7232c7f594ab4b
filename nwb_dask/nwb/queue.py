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

:class:`ParallelDataChunkIteratorQueue` plugs this into hdmf's ``HDF5IO`` in
place of ``HDF5IODataChunkIteratorQueue``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from hdmf.backends.hdf5.h5_utils import HDF5IODataChunkIteratorQueue

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.codecs import Codec, chunk_codec, pad_chunk
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES, CallTask, WriteStats, bound_heap_growth, run_block_tasks

__all__ = ["ParallelDataChunkIteratorQueue", "drain_iterators"]


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

    def __init__(self, k: int, dset, it):
        self.k, self.it, self.name = k, it, dset.name
        self.declared = _declared_dtype(it, dset)
        self.stored = dset.dtype
        self.codec: Codec | None = chunk_codec(dset, getattr(it, "codec", None))  # None: HDF5 filters it
        self.assembler = _Assembler(dset, tuple(dset.chunks), dset.fillvalue) if self.codec else None
        self.last = 0  # bytes of the last DataChunk: the next read's estimate for the engine's window

    def read(self) -> _Piece:
        """Worker side: one ``next()``, checked (the rule of every write path) and assembled into chunks."""
        piece = next(self.it, None)
        if piece is None:  # exhausted: the remaining partial (edge) chunks
            return _Piece(self.k, chunks=self.assembler.flush() if self.assembler else [])
        data = piece.data if isinstance(piece.data, np.ndarray) else np.asarray(piece.data)
        selection = _normalise(piece.selection, data)
        # values of another dtype than declared are converted when they survive exactly, else refused
        data = checked_block(data, self.declared, stored=self.stored, selection=selection,
                             label=block_label(self.name, selection))
        if self.assembler is None:
            return _Piece(self.k, data.nbytes, selection, raw=data)
        chunks = self.assembler.add(selection, data)
        return _Piece(self.k, data.nbytes, selection, chunks=chunks, held=self.assembler.held_bytes)


def _encode(codec: Codec, k: int, offset: tuple, chunk: np.ndarray) -> _Encoded:
    mask, data = codec.encode(chunk)
    return _Encoded(k, offset, mask, data, chunk.nbytes)


def drain_iterators(
    pairs: Sequence[tuple[Any, Any]],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    workers: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
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

    Returns
    -------
    WriteStats
    """
    stats = WriteStats(datasets=[d.name for d, _ in pairs])
    if not pairs:
        return stats
    n = workers or os.cpu_count() or 1
    bound_heap_growth()
    states = [_Iterator(k, dset, it) for k, (dset, it) in enumerate(pairs)]
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
                task = CallTask(state.last, state.read)
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
        _store_piece(done, pairs[done.k][0], states[done.k], stats, encodes)
        held[done.k] = done.held
        if done.selection is not None:
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
        encodes.append(CallTask(chunk.nbytes, _encode, (state.codec, piece.k, offset, chunk)))

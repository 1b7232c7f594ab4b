"""hdmf's queue of DataChunkIterators, made parallel.

hdmf writes every DataChunkIterator through HDF5's filter pipeline, one after
another, in one thread.  :func:`drain_iterators` drains many iterators
*together*: each iterator's ``next()`` runs in a worker thread (one call at a
time per iterator: iterators are not thread-safe), the DataChunks it yields
are assembled into whole HDF5 chunks (any selection shape works, aligned or
not), the chunks are encoded with the codec in the thread pool, and this
thread stores the finished bytes with ``write_direct_chunk``.  Datasets that
grow (``maxshape`` None) are extended as data arrives, as hdmf does.

:class:`ParallelDataChunkIteratorQueue` plugs this into hdmf's ``HDF5IO`` in
place of ``HDF5IODataChunkIteratorQueue``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Sequence

import numpy as np
from hdmf.backends.hdf5.h5_utils import HDF5IODataChunkIteratorQueue

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.codecs import Codec, chunk_codec, pad_chunk
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.engine import bound_heap_growth

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
        self.dset = dset
        self.chunk_shape = chunk_shape
        self.fill = fill
        self.growing = any(m is None for m in (dset.maxshape or ()))
        self.buffers: dict[tuple, list] = {}  # chunk index -> [array, filled count]

    def _valid(self, idx: tuple) -> tuple:
        """Extent of chunk ``idx`` inside the dataset (its current shape)."""
        return tuple(
            max(0, min(c, s - i * c)) for i, c, s in zip(idx, self.chunk_shape, self.dset.shape)
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
                buf = self.buffers[cidx] = [np.full(self.chunk_shape, self.fill, dtype=self.dset.dtype), 0]
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


def drain_iterators(
    pairs: Sequence[tuple[Any, Any]],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    workers: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> WriteStats:
    """Drain several DataChunkIterators into their datasets at once.

    Parameters
    ----------
    pairs : sequence of (h5py.Dataset, AbstractDataChunkIterator)
        Datasets created (e.g. by hdmf) with the iterators' shapes and filters.
    max_inflight_bytes : int
        Budget of raw bytes read but not yet stored.
    workers : int, optional
        Threads for ``next()`` calls and encoding (default: all cores).
    progress : bool
        A tqdm bar in bytes.
    cancel : threading.Event, optional
        Set by another thread to stop early (the caller then reports its error).

    Returns
    -------
    WriteStats
    """
    from tqdm.auto import tqdm

    stats = WriteStats(datasets=[d.name for d, _ in pairs])
    if not pairs:
        return stats
    n = workers or os.cpu_count() or 1
    bound_heap_growth()
    codecs: list[Codec | None] = []
    assemblers = []
    declared = [_declared_dtype(it, dset) for dset, it in pairs]
    for dset, it in pairs:
        c = chunk_codec(dset, getattr(it, "codec", None))
        codecs.append(c)
        assemblers.append(_Assembler(dset, tuple(dset.chunks), dset.fillvalue if c else 0) if c else None)
    total = 0
    for dset, _ in pairs:
        if all(m is not None for m in (dset.maxshape or dset.shape)):
            total += dset.size * dset.dtype.itemsize
    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="nwb_dask iterators", disable=not progress)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(n, thread_name_prefix="nwb_dask-queue")
    reading: dict[Future, int] = {}  # next() calls in flight -> iterator index
    encoding: dict[Future, tuple[int, int]] = {}  # encode in flight -> (iterator index, raw bytes)
    parked: list[int] = []  # iterators waiting for the in-flight budget
    inflight = 0

    def request(k: int) -> None:
        reading[pool.submit(next, pairs[k][1], None)] = k

    def encode(k: int, chunks) -> None:
        nonlocal inflight
        for offset, arr in chunks:
            fut = pool.submit(codecs[k].encode, arr)
            encoding[fut] = (k, offset)
            inflight += arr.nbytes

    try:
        for k in range(len(pairs)):
            request(k)
        while reading or encoding:
            if cancel is not None and cancel.is_set():
                return stats
            done, _ = wait(list(reading) + list(encoding), return_when=FIRST_COMPLETED)
            for fut in done:
                if fut in encoding:
                    k, offset = encoding.pop(fut)
                    mask, data = fut.result()
                    pairs[k][0].id.write_direct_chunk(offset, data, mask)
                    raw = math.prod(pairs[k][0].chunks) * pairs[k][0].dtype.itemsize
                    inflight -= raw
                    stats.stored_bytes += len(data)
                    stats.chunks += 1
                    continue
                k = reading.pop(fut)
                dset, _ = pairs[k]
                piece = fut.result()
                if piece is None:  # iterator exhausted
                    if assemblers[k] is not None:
                        encode(k, assemblers[k].flush())
                    continue
                data = piece.data if isinstance(piece.data, np.ndarray) else np.asarray(piece.data)
                selection = _normalise(piece.selection, data)
                # the one rule of every write path: values of another dtype than declared are
                # converted when they survive exactly, else refused (nwb_dask.blocks)
                data = checked_block(data, declared[k], stored=dset.dtype, selection=selection,
                                     label=block_label(dset.name, selection))
                bounds = tuple(s.stop for s in selection)
                if any(b > s for b, s in zip(bounds, dset.shape)):
                    dset.id.extend(tuple(max(b, s) for b, s in zip(bounds, dset.shape)))
                stats.logical_bytes += data.nbytes
                bar.update(data.nbytes)
                if assemblers[k] is None:
                    dset[selection] = data  # HDF5 runs filters it alone knows
                    stats.stored_bytes += data.nbytes  # unknown after HDF5's filters; as the writer counts it
                else:
                    encode(k, assemblers[k].add(selection, data))
                held = inflight + sum(a.held_bytes for a in assemblers if a is not None)
                # Ask for more while under budget; never stall with nothing in flight.
                if held < max_inflight_bytes or not encoding:
                    request(k)
                else:
                    parked.append(k)
            # Resume parked iterators once encodes have drained below the budget.
            if parked and (inflight < max_inflight_bytes or not encoding):
                for k in parked:
                    request(k)
                parked.clear()
    except BaseException:
        for fut in list(reading) + list(encoding):
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    stats.seconds = time.perf_counter() - t0
    return stats

"""Scheduler awareness in one place: run "compute + encode" tasks, yield finished chunks.

Given the active dask scheduler, :func:`run_block_tasks` computes chunk-aligned
blocks of dask arrays and encodes their HDF5 chunks *where they are computed*,
and yields the encoded bytes to the calling process as they complete, with
the raw bytes in flight bounded by a budget:

=============  ==============================================================
scheduler      strategy
=============  ==============================================================
threads        a thread pool of ``num_workers``; blocks are computed with the
               synchronous scheduler inside each thread and encoded there
               (codecs release the GIL); nothing is pickled.
sync           one block at a time in the calling thread (debugging).
processes      a process pool (dask's multiprocessing context); each task is
               cloudpickled, only encoded bytes come back.
distributed    ``client.compute`` per block with a bounded window fed by
               ``distributed.as_completed``; only encoded bytes travel back.
=============  ==============================================================

Every computed block is checked where it is computed, before it is encoded:
its shape, and values of another dtype than the array declares
(:func:`nwb_dask.blocks.checked_block`, the rule of every write path).

The writer, repack, consolidate and Zarr conversion all drive this layer.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.chunking import chunk_offsets
from nwb_dask.codecs import Codec, pad_chunk

__all__ = [
    "BlockTask",
    "EncodedBlock",
    "SchedulerInfo",
    "active_scheduler",
    "use_scheduler",
    "encode_block",
    "run_block_tasks",
    "DEFAULT_INFLIGHT_BYTES",
]

#: Default budget of raw bytes computed or encoded but not yet written (256 MiB).
DEFAULT_INFLIGHT_BYTES = 256 * 2**20
#: Blocks in flight per worker, whatever their size: enough to keep every worker
#: busy while finished blocks wait for the writer, no more.
BLOCKS_PER_WORKER = 2


@contextlib.contextmanager
def use_scheduler(kind: str, workers: int | None = None) -> Iterator[None]:
    """Activate a dask scheduler by name for the duration of a ``with`` block (what the CLI offers).

    Parameters
    ----------
    kind : {"local", "threads", "processes", "sync"}
        ``"local"`` starts a ``distributed.LocalCluster`` of ``workers``
        single-threaded processes and a Client on it.
    workers : int, optional
        Number of workers (default: all cores).
    """
    import dask

    if kind == "local":
        from distributed import Client, LocalCluster

        n = workers or os.cpu_count() or 1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster):
                yield
    elif kind in ("threads", "processes", "sync", "synchronous"):
        with dask.config.set(scheduler=kind, num_workers=workers):
            yield
    else:
        raise ValueError(f"unknown scheduler {kind!r}; use local, threads, processes or sync")


@dataclass(frozen=True)
class SchedulerInfo:
    """The active dask scheduler as nwb_dask sees it.

    Attributes
    ----------
    kind : {"sync", "threads", "processes", "distributed"}
    workers : int
        Parallel workers (threads, processes or cluster threads).
    client : distributed.Client or None
    """

    kind: str
    workers: int
    client: Any = None


def active_scheduler(scheduler: Any = None) -> SchedulerInfo:
    """Detect the dask scheduler in effect (or the one named).

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        ``None`` uses what dask would use for a dask array here: the
        ``scheduler`` config (``dask.config.set(scheduler=...)``), a default
        ``distributed.Client``, or the threaded scheduler.  Names are dask's:
        ``"threads"``, ``"processes"``, ``"sync"``/``"synchronous"``,
        ``"distributed"``; a Client is used as given.

    Returns
    -------
    SchedulerInfo
    """
    import dask
    import dask.array as da
    from dask import local, multiprocessing, threaded
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler, collections=[da.zeros(1)])
    owner = getattr(get, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client":
        info = owner.scheduler_info() if owner.status == "running" else {"workers": {}}
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        return SchedulerInfo("distributed", max(1, threads), owner)
    n = int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    if get is threaded.get:
        return SchedulerInfo("threads", n)
    if get is multiprocessing.get:
        return SchedulerInfo("processes", n)
    if get is local.get_sync:
        return SchedulerInfo("sync", 1)
    raise ValueError(f"nwb_dask cannot drive the dask scheduler {get!r}; use threads, processes, sync or a Client")


@dataclass
class BlockTask:
    """One chunk-aligned block to compute and encode.

    Attributes
    ----------
    key : hashable
        Caller's tag (e.g. which dataset), returned with the result.
    selection : tuple of slice
        The block's place in the dataset; starts on chunk boundaries.
    array : dask.array.Array
        The block (a dask array of exactly the selection's shape).  What it
        computes must be its declared dtype, or values that dtype holds
        exactly (:func:`~nwb_dask.blocks.checked_block`).
    chunk_shape : tuple of int
    codec : Codec or None
        ``None`` returns the raw block instead of encoded chunks (for
        datasets whose filters must run inside HDF5).
    fill_value : scalar
        Padding for edge chunks.
    name : str
        The dataset, for messages.
    index : tuple of int
        The block's index in the array's blocks, for messages.
    dtype : numpy dtype, optional
        The dataset's dtype when it differs from the array's: the checked
        block is cast to it.
    """

    key: Any
    selection: tuple
    array: Any
    chunk_shape: tuple
    codec: Codec | None
    fill_value: Any = 0
    name: str = ""
    index: tuple = ()
    dtype: Any = None

    @property
    def nbytes(self) -> int:
        itemsize = (self.array.dtype if self.dtype is None else np.dtype(self.dtype)).itemsize
        return int(math.prod(s.stop - s.start for s in self.selection) * itemsize)


@dataclass
class EncodedBlock:
    """A finished block: its chunks' stored bytes, or the raw block when ``codec`` is None."""

    key: Any
    selection: tuple
    nbytes: int
    chunks: list = field(default_factory=list)  # [(offset, filter_mask, bytes)]
    raw: np.ndarray | None = None

    @property
    def stored_bytes(self) -> int:
        return sum(len(c[2]) for c in self.chunks) if self.raw is None else self.nbytes


def encode_block(
    block: np.ndarray,
    selection: Sequence[slice],
    chunk_shape: Sequence[int],
    codec: Codec,
    fill_value: Any = 0,
    dtype: Any = None,
    label: str | None = None,
) -> list[tuple[tuple[int, ...], int, bytes]]:
    """Split a computed block into HDF5 chunks and encode each one.

    Parameters
    ----------
    block : array-like
    selection : sequence of slice
        The block's place in the dataset.
    chunk_shape : sequence of int
    codec : Codec
    fill_value : scalar
    dtype : numpy dtype, optional
        The dataset's dtype: a block of another dtype is converted when
        every value survives, else refused (:func:`~nwb_dask.blocks.checked_block`).
        Default: the block's own dtype.
    label : str, optional
        The dataset and block, for messages.

    Returns
    -------
    list of (offset, filter_mask, bytes)
        Ready for ``dset.id.write_direct_chunk(offset, bytes, filter_mask)``.
    """
    expected = tuple(s.stop - s.start for s in selection)
    label = label or block_label(None, selection)
    block = checked_block(block, np.asarray(block).dtype if dtype is None else dtype, shape=expected,
                          label=label, selection=selection)
    return _encode_chunks(block, selection, chunk_shape, codec, fill_value)


def _encode_chunks(block: np.ndarray, selection, chunk_shape, codec: Codec, fill_value) -> list:
    return [(offset, *codec.encode(pad_chunk(block[local], chunk_shape, fill_value)))
            for offset, local in chunk_offsets(selection, chunk_shape)]


def _compute_block(array) -> np.ndarray:
    """Compute a dask array in this thread; a one-chunk array without a concatenating copy."""
    if all(n == 1 for n in array.numblocks):
        return array.to_delayed().ravel()[0].compute(scheduler="sync")
    return array.compute(scheduler="sync")


def _compute_and_encode(task: BlockTask) -> EncodedBlock:
    """Worker side: compute one block synchronously, then check and encode it (or keep it raw)."""
    return _encode(_compute_block(task.array), task.array.dtype, replace(task, array=None))


def _encode(block, declared, task: BlockTask) -> EncodedBlock:
    """Check a computed block against its declared dtype and shape (the one rule), then encode it.

    ``task`` is the block's task without its array (the distributed path
    sends the computed block alongside).
    """
    selection = task.selection
    expected = tuple(s.stop - s.start for s in selection)
    block = checked_block(block, declared, shape=expected, stored=task.dtype, selection=selection,
                          label=block_label(task.name, selection, task.index))
    result = EncodedBlock(task.key, selection, int(block.nbytes))
    if task.codec is None:
        result.raw = block
    else:
        result.chunks = _encode_chunks(block, selection, task.chunk_shape, task.codec, task.fill_value)
    return result


def _process_entry(payload: bytes) -> EncodedBlock:
    import cloudpickle

    return _compute_and_encode(cloudpickle.loads(payload))


class _Peekable:
    """An iterator that takes back the item it could not use yet."""

    def __init__(self, it: Iterable):
        self._it = iter(it)
        self._back: deque = deque()

    def __iter__(self):
        return self

    def __next__(self):
        return self._back.popleft() if self._back else next(self._it)

    def push_back(self, item) -> None:
        self._back.appendleft(item)


def run_block_tasks(
    tasks: Iterable[BlockTask],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    scheduler: Any = None,
    on_submit: Callable[[BlockTask], None] | None = None,
) -> Iterator[EncodedBlock]:
    """Compute and encode blocks on the active scheduler; yield them as they finish.

    Parameters
    ----------
    tasks : iterable of BlockTask
        Consumed lazily, in order; interleave datasets to make them progress
        together.
    max_inflight_bytes : int
        Raw bytes of blocks submitted but not yet yielded and released by the
        caller.  At least one block is always in flight, and at most
        ``BLOCKS_PER_WORKER`` per worker: when storage is slower than the
        workers, finished blocks wait in memory only up to that bound.
    scheduler : str, Client or None
        See :func:`active_scheduler`.
    on_submit : callable, optional
        Called with each task when it is submitted (for progress bars).

    Yields
    ------
    EncodedBlock
        In completion order.  If a task fails, outstanding tasks are
        cancelled and the task's exception is raised unchanged.
    """
    info = active_scheduler(scheduler)
    if info.kind == "sync":
        for task in tasks:
            if on_submit:
                on_submit(task)
            yield _compute_and_encode(task)
        return
    if info.kind == "distributed":
        max_blocks = BLOCKS_PER_WORKER * info.workers
        yield from _run_distributed(info.client, tasks, max_inflight_bytes, max_blocks, on_submit)
        return
    if info.kind == "threads":
        pool = ThreadPoolExecutor(info.workers, thread_name_prefix="nwb_dask-encode")
        submit = lambda t: pool.submit(_compute_and_encode, t)  # noqa: E731
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import cloudpickle
        import dask

        ctx = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
        pool = ProcessPoolExecutor(info.workers, mp_context=ctx)
        submit = lambda t: pool.submit(_process_entry, cloudpickle.dumps(t))  # noqa: E731
    try:
        yield from _run_futures(tasks, submit, max_inflight_bytes, BLOCKS_PER_WORKER * info.workers, on_submit)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _window_full(in_flight: int, inflight_bytes: int, nbytes: int, budget: int, max_blocks: int) -> bool:
    """Whether one more block of ``nbytes`` would exceed the window (one block always fits)."""
    return in_flight > 0 and (inflight_bytes + nbytes > budget or in_flight >= max_blocks)


def _run_futures(tasks, submit, budget, max_blocks, on_submit) -> Iterator[EncodedBlock]:
    """Bounded window over concurrent.futures."""
    it = _Peekable(tasks)
    pending: dict[Future, int] = {}
    inflight = 0
    while True:
        for task in it:
            if _window_full(len(pending), inflight, task.nbytes, budget, max_blocks):
                it.push_back(task)
                break
            if on_submit:
                on_submit(task)
            pending[submit(task)] = task.nbytes
            inflight += task.nbytes
        if not pending:
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            inflight -= pending.pop(fut)
            try:
                result = fut.result()
            except BaseException:
                for other in pending:
                    other.cancel()
                raise
            yield result


def _run_distributed(client, tasks, budget, max_blocks, on_submit) -> Iterator[EncodedBlock]:
    """Bounded window over ``client.compute`` futures with ``distributed.as_completed``."""
    import dask
    from distributed import as_completed

    it = _Peekable(tasks)
    sizes: dict[Any, int] = {}
    inflight = 0
    ac = as_completed(loop=client.loop, with_results=False)  # this client's loop, not the default client's

    def fill():
        nonlocal inflight
        for task in it:
            if _window_full(len(sizes), inflight, task.nbytes, budget, max_blocks):
                it.push_back(task)
                return
            if on_submit:
                on_submit(task)
            # The block is computed and encoded in one task on a worker;
            # only the encoded chunks travel back.
            work = dask.delayed(_encode, pure=False)(task.array, task.array.dtype, replace(task, array=None))
            fut = client.compute(work)
            sizes[fut.key] = task.nbytes
            inflight += task.nbytes
            ac.add(fut)

    fill()
    try:
        for fut in ac:
            try:
                result = fut.result()
            except BaseException:
                client.cancel(list(ac.futures))
                raise
            inflight -= sizes.pop(fut.key)
            fut.release()
            yield result
            fill()
    finally:
        if sizes:
            client.cancel(list(ac.futures))


def bound_heap_growth() -> None:
    """Keep glibc from hoarding freed multi-MB buffers (process-wide, once).

    Blocks and encoded chunks of a few MB are allocated in worker threads and
    freed as fast as they are written.  glibc raises its mmap threshold after
    the first large frees and from then on serves such sizes from per-thread
    heaps that fragment, so the writer's RSS crept up with the amount written
    (benchmarks/write_memory.py, isal, threads: 1 GB 307 MB, 8 GB 541 MB).
    Fixing the threshold at 1 MiB (``mallopt(M_MMAP_THRESHOLD)``, what the
    ``MALLOC_MMAP_THRESHOLD_`` environment variable does) returns every large
    buffer to the OS when freed, and RSS stays flat.  dask.distributed's
    nanny tunes glibc the same way for its workers (``MALLOC_TRIM_THRESHOLD_``);
    no library exposes the call.  A threshold set by the user's environment is
    left alone; elsewhere than glibc this does nothing.
    """
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):  # not glibc
        pass


def progress_bar(total: int, enabled: bool, desc: str = "nwb_dask write"):
    """A tqdm bar in bytes (MB/s), shown for writes over 64 MiB when ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc,
                disable=not enabled or total < 2**26)

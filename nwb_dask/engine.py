"""The one bounded write engine: run "compute + encode" tasks on any scheduler, hand the results to a sink.

Every writer ends here, as every dask writer ends in ``dask.array.store``:
HDF5 (:func:`nwb_dask.hdf5.write.write_arrays`: the caller stores the
encoded chunks with direct chunk writes), Zarr
(:func:`nwb_dask.zarr.sink.store_arrays`: a worker-side sink, each task stores
its own chunks), the DataChunkIterator queue
(:func:`nwb_dask.nwb.queue.drain_iterators`: ``next()`` calls and chunk
encodes as :class:`CallTask` in the engine's threads), and through
``write_arrays`` repack and consolidate.  MPI ranks and live writers reuse the
encode step (:func:`encode_block`, :func:`encode_chunks`).

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
distributed    ``client.compute`` per block; each result's chunks travel out
               of band (:class:`EncodedBlock`), and the client's IO loop
               fetches each one straight from its worker while the caller
               stores earlier ones (:func:`_run_distributed`: the profile
               behind this); a worker on the client's host hands its
               chunks over in a shared-memory file instead.
=============  ==============================================================

Every computed block is checked where it is computed, before it is encoded:
its shape, and values of another dtype than the array declares
(:func:`nwb_dask.blocks.checked_block`, the rule of every write path).

One window bounds every scheduler's work: raw bytes of tasks submitted and not
yet handed to the caller stay under ``max_inflight_bytes`` (one task always
fits) and at most ``BLOCKS_PER_WORKER`` tasks per worker
(``CLUSTER_BLOCKS_PER_WORKER`` on a cluster) are in flight.  One progress bar
counts bytes.  A failing task (or Ctrl-C, or a ``cancel`` event)
cancels what has not started and waits for what has: no task still writes
after the error reaches the caller.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from nwb_dask.codecs import Codec
from nwb_dask.encoding import (  # the encode step lives there; these names stay the engine's too
    EncodedBlock, checked_task_block, encode_block, encode_chunks, encode_task, load_shared, shared_blocks,
    spill_to_shared,
)

__all__ = [
    "BlockTask",
    "EncodedBlock",
    "SchedulerInfo",
    "active_scheduler",
    "use_scheduler",
    "CallTask",
    "WriteStats",
    "encode_block",
    "encode_chunks",
    "encode_task",
    "checked_task_block",
    "interleave",
    "run_block_tasks",
    "progress_bar",
    "bound_heap_growth",
    "abandon",
    "DEFAULT_INFLIGHT_BYTES",
]

#: Default budget of raw bytes computed or encoded but not yet written (256 MiB).
DEFAULT_INFLIGHT_BYTES = 256 * 2**20
#: Blocks in flight per worker, whatever their size: enough to keep every worker
#: busy while finished blocks wait for the writer, no more.
BLOCKS_PER_WORKER = 2
#: The same on a distributed cluster: a result's round trip (fetched by the client,
#: stored, the next task submitted and sent to the worker) is longer than a thread
#: pool's, and with 2 blocks per worker the workers waited for it (1.6 GB gzip write
#: from data persisted on 2 workers, interleaved rounds, best of 4: 393 MB/s with 2,
#: 578 with 3; another run, best of 3: 635 with 3, 639 with 4, 615 with 6).
#: max_inflight_bytes still bounds the bytes.
CLUSTER_BLOCKS_PER_WORKER = 3


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
class WriteStats:
    """What a write did."""

    logical_bytes: int = 0
    stored_bytes: int = 0
    chunks: int = 0
    seconds: float = 0.0
    datasets: list = field(default_factory=list)

    def add(self, other: "WriteStats") -> "WriteStats":
        """Fold in the counts of a write that ran at the same time (seconds: the longer)."""
        self.logical_bytes += other.logical_bytes
        self.stored_bytes += other.stored_bytes
        self.chunks += other.chunks
        self.seconds = max(self.seconds, other.seconds)
        self.datasets += other.datasets
        return self

    @property
    def mb_per_s(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds if self.seconds else float("nan")

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else float("nan")


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
    step : callable, optional
        A worker-side sink: ``step(block, declared_dtype, task) -> EncodedBlock``
        runs where the block was computed, in place of :func:`encode_task`
        (it checks and encodes with the engine's step and stores the chunks
        itself, e.g. :func:`nwb_dask.zarr.sink._store_block`).  Picklable
        for the processes and distributed schedulers.
    target : any
        Where ``step`` stores (travels with the task; ``None`` otherwise).
    worker : str, optional
        Distributed only: the address of the one worker that must run this
        task (``allow_other_workers=False``), for a worker-side sink whose
        target only that worker may write (a sharded write's part file,
        :mod:`nwb_dask.hdf5.shards`).  Ignored by the other schedulers.
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
    step: Callable | None = None
    target: Any = None
    worker: str | None = None

    @property
    def nbytes(self) -> int:
        itemsize = (self.array.dtype if self.dtype is None else np.dtype(self.dtype)).itemsize
        return int(math.prod(s.stop - s.start for s in self.selection) * itemsize)


@dataclass
class CallTask:
    """A plain call for the engine's window: ``fn(*args)`` in a worker thread (threads and sync only).

    The DataChunkIterator queue's ``next()`` calls and chunk encodes.  Its
    result is yielded as ``fn`` returns it; a result with an ``nbytes``
    attribute advances the progress bar by that much.

    Attributes
    ----------
    nbytes : int
        Raw bytes the call brings into memory (an estimate), for the window.
    fn : callable
    args : tuple
    """

    nbytes: int
    fn: Callable
    args: tuple = ()


def _block_source(array):
    """A block's dask array as a task takes it: a one-chunk array as its chunk's Delayed (no concatenating copy)."""
    if all(n == 1 for n in array.numblocks):
        return array.to_delayed().ravel()[0]
    return array


def _compute_block(array) -> np.ndarray:
    """Compute a dask array in this thread; a one-chunk array without a concatenating copy."""
    return _block_source(array).compute(scheduler="sync")


def _remote_step(step: Callable, block, declared, task, shm=None) -> Any:
    """A cluster worker's task: the block's step, in a process whose glibc returns large buffers (:func:`bound_heap_growth`).

    With ``shm`` (the client's same-host directory) the chunks go into a
    shared-memory file when this worker is on the client's host (:func:`spill_to_shared`).
    """
    bound_heap_growth()
    result = step(block, declared, task)
    return spill_to_shared(result, shm) if shm is not None else result


def _compute_and_encode(task):
    """Worker side: compute one block synchronously, then check and encode it (or run a plain call)."""
    if isinstance(task, CallTask):
        return task.fn(*task.args)
    return (task.step or encode_task)(_compute_block(task.array), task.array.dtype, replace(task, array=None))


def _process_entry(payload: bytes) -> EncodedBlock:
    import cloudpickle

    bound_heap_growth()
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


def interleave(iterables: Sequence[Iterable]) -> Iterator:
    """Round-robin over several task streams (e.g. datasets' blocks) so they progress together."""
    iters = [iter(i) for i in iterables]
    while iters:
        alive = []
        for it in iters:
            for item in it:
                yield item
                alive.append(it)
                break
        iters = alive


def run_block_tasks(
    tasks: Iterable[BlockTask | CallTask | None],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    scheduler: Any = None,
    workers: int | None = None,
    on_submit: Callable[[Any], None] | None = None,
    progress: bool = False,
    total: int | None = None,
    desc: str = "nwb_dask write",
    cancel: Any = None,
) -> Iterator[Any]:
    """Compute and encode blocks on the active scheduler; yield them as they finish.

    Parameters
    ----------
    tasks : iterable of BlockTask or CallTask
        Consumed lazily, in order; interleave datasets to make them progress
        together (:func:`interleave`).  A source whose next task depends on
        results not yet yielded yields ``None`` ("nothing to submit until a
        result is back"); it is asked again after the next result.
    max_inflight_bytes : int
        Raw bytes of tasks submitted but not yet yielded and released by the
        caller.  At least one task is always in flight, and at most
        ``BLOCKS_PER_WORKER`` per worker (``CLUSTER_BLOCKS_PER_WORKER`` on a
        distributed cluster): when storage is slower than the workers,
        finished blocks wait in memory only up to that bound.
    scheduler : str, Client or None
        See :func:`active_scheduler`.
    workers : int, optional
        Threads or processes of a local pool (default: dask's ``num_workers``
        or all cores).
    on_submit : callable, optional
        Called with each task when it is submitted.
    progress : bool
        One tqdm bar in bytes (:func:`progress_bar`), advanced by each
        result's ``nbytes``.
    total : int, optional
        The bar's total in bytes (``None``: unknown).
    desc : str
        The bar's label.
    cancel : threading.Event, optional
        Set by another thread to stop early: nothing more is submitted,
        pending tasks are cancelled, running ones are waited for, and the
        generator ends.

    Yields
    ------
    EncodedBlock (or a CallTask's result)
        In completion order.  If a task fails, outstanding tasks are
        cancelled, those already running are waited for (a worker-side sink
        stores nothing after the error reaches the caller), and the task's
        exception is raised unchanged.
    """
    info = active_scheduler(scheduler)
    if workers and info.kind in ("threads", "processes"):
        info = replace(info, workers=int(workers))
    bar = progress_bar(total, progress, desc)
    try:
        for result in _run(info, tasks, max_inflight_bytes, on_submit, cancel):
            bar.update(getattr(result, "nbytes", 0) or 0)
            yield result
    finally:
        bar.close()


def _run(info: SchedulerInfo, tasks, budget, on_submit, cancel) -> Iterator[Any]:
    if info.kind == "sync":
        for task in tasks:
            if cancel is not None and cancel.is_set():
                return
            if task is None:
                raise RuntimeError("nwb_dask engine: the task source waits for a result with no task in flight")
            if on_submit:
                on_submit(task)
            yield _compute_and_encode(task)
        return
    if info.kind == "distributed":
        yield from _run_distributed(info.client, tasks, budget, CLUSTER_BLOCKS_PER_WORKER * info.workers, on_submit,
                                    cancel)
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

        def submit(t):
            if isinstance(t, CallTask):
                raise ValueError("nwb_dask engine: plain calls (DataChunkIterators) run on threads, not processes")
            return pool.submit(_process_entry, cloudpickle.dumps(t))
    try:
        yield from _run_futures(tasks, submit, budget, BLOCKS_PER_WORKER * info.workers, on_submit, cancel)
    finally:
        # waits for running tasks: none still stores after the caller sees the error
        pool.shutdown(wait=True, cancel_futures=True)


def _window_full(in_flight: int, inflight_bytes: int, nbytes: int, budget: int, max_blocks: int) -> bool:
    """Whether one more block of ``nbytes`` would exceed the window (one block always fits)."""
    return in_flight > 0 and (inflight_bytes + nbytes > budget or in_flight >= max_blocks)


def _fill(it: _Peekable, n_pending: int, inflight: int, budget: int, max_blocks: int):
    """The next task that fits the window, else None (the source waits, or the window is full)."""
    for task in it:
        if task is None:
            if not n_pending:
                raise RuntimeError("nwb_dask engine: the task source waits for a result with no task in flight")
            return None
        if _window_full(n_pending, inflight, task.nbytes, budget, max_blocks):
            it.push_back(task)
            return None
        return task
    return None


def _run_futures(tasks, submit, budget, max_blocks, on_submit, cancel) -> Iterator[Any]:
    """Bounded window over concurrent.futures."""
    it = _Peekable(tasks)
    pending: dict[Future, int] = {}
    inflight = 0
    try:
        while True:
            while cancel is None or not cancel.is_set():
                task = _fill(it, len(pending), inflight, budget, max_blocks)
                if task is None:
                    break
                if on_submit:
                    on_submit(task)
                pending[submit(task)] = task.nbytes
                inflight += task.nbytes
            if not pending or (cancel is not None and cancel.is_set()):
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                inflight -= pending.pop(fut)
                result = fut.result()
                yield result
                del result
    finally:
        for other in pending:
            other.cancel()


def _run_distributed(client, tasks, budget, max_blocks, on_submit, cancel) -> Iterator[Any]:
    """The window over a cluster: each block's result is fetched ahead by the client's IO loop, straight from its worker.

    Where the time of a distributed write went (issue 19; 1.6 GB of
    384-channel int16 persisted on a LocalCluster of 2 single-threaded
    workers, gzip-4 + shuffle, 2 cores; py-spy, timers, os.times and the task
    stream; the threaded scheduler wrote the same in 1.8 s, 3.5 CPU-s):
    4.7 s, 344 MB/s, 8.8 of the 9.4 CPU-seconds the two cores had.

    * workers, compute thread (75% busy): encode 2.1 s each (deflate and
      shuffle, as on threads), plus 0.5-1.0 s copying each persisted block
      (dask's ``finalize`` concatenates even a one-chunk array);
    * workers, event loop: pickling each result in band, a list of ``bytes``
      (7 ms per 11.8 MB block, most of it distributed scanning the pickle
      for ``b"__main__"``), and sending it;
    * workers, system time 1.2-1.3 s each: page faults; the nanny's
      ``MALLOC_TRIM_THRESHOLD_`` pins glibc's mmap threshold at 128 KiB, so
      every shuffle buffer and encoded chunk was a fresh mapping;
    * client (with a LocalCluster the scheduler shares its process): results
      came through the scheduler, so the IO loop read every byte twice and
      wrote it once (1.7 s reading, 0.8 s writing under py-spy) while the
      main thread waited for each ``fut.result()`` in turn, then stored
      (0.4-0.6 s of direct chunk writes) and built graphs (0.2 s).

    So: a task takes its block's own key (:func:`_block_source`, no copy); a
    result's chunks travel out of band (:meth:`EncodedBlock.__reduce_ex__`;
    one packed contiguous buffer per block was measured too, and cost a
    copy and a fresh 12 MB mapping per block on the worker); workers bound
    their heap like the client (:func:`bound_heap_growth`: system time
    0.2-0.4 s each); the client gathers each result directly from its
    worker (``direct=True``, no hop through the scheduler) in a coroutine
    on its IO loop, started once the task ends, so results arrive while the
    caller stores earlier ones; and 3 blocks per worker cover the longer
    round trip.  Then, on the same shared machine: 610-640 MB/s against
    805-880 on threads in one interleaved run, and 5.1-5.3 CPU-s against
    3.4-3.5; ``benchmarks/write.py --persist --repeat 3`` (NWB files, best
    of 3), LocalCluster/threads from 0.43 to 0.67 for gzip and from 0.29 to
    0.58 for blosc.  The rest is moving 0.83 GB between processes on the
    same two cores (the client's socket reads 0.9 s, the workers' event
    loops and sends 0.5 s each, the scheduler), so the CPU-seconds ratio,
    0.64-0.68, is the ceiling of this machine when nothing else runs.

    Then the same-host handover: a worker on the client's host writes a
    block's chunks into a file of a per-write ``/dev/shm`` directory and
    returns only their table, and the client stores them from a mapping
    of it (:mod:`nwb_dask.encoding`, where the A/B figures are;
    ``NWB_DASK_SHM=off`` for the network).  The directory goes in the
    ``finally`` however the write ends.

    The window is :func:`_run_futures`', over those fetches: a block's raw
    bytes count from its submission until the caller has stored its
    result, wherever it is meanwhile (worker, shared memory, wire or client).
    """
    import asyncio
    import threading
    import uuid

    import dask

    loop = client.loop.asyncio_loop
    # Client(direct_to_workers=False) (dask-gateway, Coiled, SSH tunnels: workers unreachable) is honoured
    direct = True if getattr(client, "direct_to_workers", None) is None else bool(client.direct_to_workers)
    lock = threading.Lock()
    live: dict[Future, Any] = {}  # fetch -> the cluster future it waits for, until fetched

    async def fetch(fut):
        # Gather only once the task has ended: a gather still waiting when the
        # write is abandoned leaves distributed's inner waits unretrieved.
        ended = asyncio.Event()
        fut.add_done_callback(lambda _: loop.call_soon_threadsafe(ended.set))  # runs in distributed's callback thread
        await ended.wait()
        # a failed task raises its error here; straight from the worker unless the client says it cannot reach them
        result = await client.gather(fut, direct=direct, asynchronous=True)
        fut.release()  # the worker may drop it: the result is here now
        return result

    def fetched_ok(fetched: Future) -> None:
        if not fetched.cancelled() and fetched.exception() is None:
            with lock:
                live.pop(fetched, None)

    shared = shared_blocks()
    shm = shared.__enter__()  # left in the finally below, however the write ends

    def submit(task):
        if isinstance(task, CallTask):
            raise ValueError("nwb_dask engine: plain calls (DataChunkIterators) run on threads, not a cluster")
        # The block is computed and encoded (and, with a worker-side sink,
        # stored) in one task on a worker; only the result travels back.
        step = task.step or encode_task
        work = dask.delayed(_remote_step)(step, _block_source(task.array), task.array.dtype, replace(task, array=None),
                                          None if task.step else shm,  # a worker-side sink returns no chunks
                                          dask_key_name=f"{step.__name__}-{uuid.uuid4().hex}")  # the step's name on dashboards
        # a pinned task (sharded writes: one worker writes each part file) runs on its worker only
        pin = {} if task.worker is None else dict(workers=[task.worker], allow_other_workers=False)
        fut = client.compute(work, **pin)
        fetched = asyncio.run_coroutine_threadsafe(fetch(fut), loop)
        with lock:
            live[fetched] = fut
        fetched.add_done_callback(fetched_ok)
        return fetched

    try:
        for result in _run_futures(tasks, submit, budget, max_blocks, on_submit, cancel):
            yield load_shared(result) if getattr(result, "shared", None) else result
            del result
    finally:
        try:
            with lock:
                unfetched = list(live.values())
            if unfetched:  # stopped early (an error, the cancel event, the caller closing the generator)
                abandon(client, unfetched)
        finally:
            shared.__exit__(None, None, None)  # the directory and any file a worker left in it


def abandon(client, futures: list, timeout: float = 60.0) -> None:
    """Cancel a stopped write's tasks and wait for those already running on a worker to end.

    A task with a worker-side sink writes its chunks into the store itself:
    one still running when the caller deletes the partial output would
    re-create it with its chunks.
    """
    keys = {f.key for f in futures}
    client.cancel(futures)

    def running(dask_worker, keys=keys) -> int:
        return sum(1 for ts in dask_worker.state.executing if ts.key in keys)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(client.run(running).values()):
                return
        except Exception:  # the cluster is gone: nothing runs any more
            return
        time.sleep(0.05)


_HEAP_BOUNDED = False


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

    Cluster workers call it too, in their first block task: the nanny's
    ``MALLOC_TRIM_THRESHOLD_`` also freezes the mmap threshold at glibc's
    128 KiB, so every shuffle buffer and encoded chunk was a fresh mapping
    whose pages the kernel faulted in and zeroed (1.6 GB gzip write, two
    workers: 0.9-1.0 s of system time each, 0.2-0.3 s with the 1 MiB
    threshold, for 1.7-1.8 s of user time).
    """
    import os

    global _HEAP_BOUNDED
    if _HEAP_BOUNDED or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    _HEAP_BOUNDED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):  # not glibc
        pass


def progress_bar(total: int | None, enabled: bool, desc: str = "nwb_dask write"):
    """The one progress bar: tqdm in bytes (MB/s), shown when ``enabled`` for writes over 64 MiB or of unknown size."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc,
                disable=not enabled or (total is not None and total < 2**26))

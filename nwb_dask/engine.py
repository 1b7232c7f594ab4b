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
distributed    a task per block (persisted chunks of one worker: one task
               for several, :func:`nwb_dask.cluster.batched`); each
               result's chunks travel out of band (:class:`EncodedBlock`),
               and the client's IO loop fetches each one straight from its
               worker while the caller stores earlier ones
               (:func:`nwb_dask.cluster.run_distributed`: the profile
               behind this); a worker on the client's host hands its
               chunks over in a recycled shared-memory file instead.
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
from nwb_dask.cluster import abandon, block_source, check_workers, run_distributed
from nwb_dask.encoding import (  # the encode step lives there; these names stay the engine's too
    EncodedBlock, bound_heap_growth, checked_task_block, encode_block, encode_chunks, encode_task,
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
def use_scheduler(kind: str, workers: int | None = None, scheduler_file: str | os.PathLike | None = None) \
        -> Iterator[None]:
    """Activate a dask scheduler by name or address for the duration of a ``with`` block (what the CLI offers).

    Parameters
    ----------
    kind : {"local", "threads", "processes", "sync"} or an address
        ``"local"`` starts a ``distributed.LocalCluster`` of ``workers``
        single-threaded processes and a Client on it.  An address such as
        ``"tcp://10.0.0.5:8786"`` (anything with ``://``) connects a Client to
        a running cluster (``dask scheduler``, dask-jobqueue, dask-mpi,
        dask-gateway's address) and leaves the cluster running afterwards.
    workers : int, optional
        Number of workers of a cluster or pool this starts (default: all
        cores); not with an address or ``scheduler_file`` (that cluster's
        size is its own).
    scheduler_file : path, optional
        Connect to the cluster whose scheduler wrote this JSON file
        (``dask scheduler --scheduler-file``, dask-mpi); ``kind`` is then ignored.
    """
    import dask

    remote = scheduler_file is not None or "://" in kind
    if remote and workers is not None:
        where = f"the scheduler file {os.fspath(scheduler_file)}" if scheduler_file is not None else kind
        raise ValueError(f"--workers {workers} sizes a cluster nwb-dask starts; the running cluster at {where} "
                         "has the workers it has (drop --workers, or scale that cluster)")
    if remote:
        from distributed import Client

        where = os.fspath(scheduler_file) if scheduler_file is not None else kind
        address = _scheduler_address(scheduler_file) if scheduler_file is not None else kind
        try:
            client = Client(address)
        except (OSError, TimeoutError) as exc:  # distributed's "Timed out trying to connect to ..."
            raise ConnectionError(f"cannot reach the dask scheduler at {where}: {exc}") from exc
        except ValueError as exc:  # e.g. "unknown address scheme 'tpc'"
            raise ValueError(f"cannot connect to the dask scheduler {where}: {exc}") from exc
        with client:  # closes this Client only; the cluster is not ours to stop
            yield
    elif kind == "local":
        from distributed import Client, LocalCluster

        n = workers or os.cpu_count() or 1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster):
                yield
    elif kind in ("threads", "processes", "sync", "synchronous"):
        with dask.config.set(scheduler=kind, num_workers=workers):
            yield
    else:
        raise ValueError(f"unknown scheduler {kind!r}; use local, threads, processes, sync or a scheduler's "
                         "address (tcp://HOST:PORT)")


def _scheduler_address(scheduler_file) -> str:
    """The address in a dask scheduler file, waiting (dask's connect timeout) for it to appear and be complete.

    A batch script may start the scheduler and nwb-dask together, so the file
    may be absent, or empty while the scheduler writes it; distributed's own
    ``Client(scheduler_file=)`` waits for ever for an absent file and fails
    with a bare AssertionError on an incomplete one.
    """
    import json

    import dask
    from dask.utils import parse_timedelta

    name = os.fspath(scheduler_file)
    wait = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect", "30s"))
    deadline = time.monotonic() + wait
    problem = "not found"
    while True:
        try:
            with open(name) as f:
                info = json.load(f)
            if isinstance(info, dict) and isinstance(info.get("address"), str) and info["address"]:
                return info["address"]
            problem = "is not a dask scheduler file (no \"address\" in its JSON)"
        except FileNotFoundError:
            problem = "not found"
        except IsADirectoryError:
            raise IsADirectoryError(f"scheduler file {name} is a directory; give the JSON file the scheduler "
                                    "wrote (dask scheduler --scheduler-file FILE)") from None
        except (ValueError, UnicodeDecodeError):  # empty or half-written while the scheduler writes it
            problem = "is not a dask scheduler file (not JSON)"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    error = FileNotFoundError if problem == "not found" else ValueError
    raise error(f"scheduler file {name} {problem} after {wait:g} s (written by `dask scheduler --scheduler-file` "
                "once the scheduler runs)")


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
        # nthreads(): every worker (scheduler_info() listed only 5 by default in some distributed releases)
        threads = sum(owner.nthreads().values()) if owner.status == "running" else 0
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


def _compute_block(array) -> np.ndarray:
    """Compute a dask array in this thread; a one-chunk array without a concatenating copy."""
    return block_source(array).compute(scheduler="sync")


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
    transient: bool = False,
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
    transient : bool
        The caller is done with each result before it asks for the next (it
        stores it at once): the engine may then reuse its memory (on a
        cluster, the same-host handover files are recycled, and a kept
        result's chunks raise ``ValueError`` on use).  Default False: every
        result stays valid for as long as the caller keeps it.

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
        for result in _run(info, tasks, max_inflight_bytes, on_submit, cancel, transient):
            bar.update(getattr(result, "nbytes", 0) or 0)
            yield result
    finally:
        bar.close()


def _run(info: SchedulerInfo, tasks, budget, on_submit, cancel, transient=False) -> Iterator[Any]:
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
        check_workers(info.client)  # may wait for a first worker: then the window is sized by the workers there
        info = active_scheduler(info.client) if info.workers <= 1 else info
        yield from run_distributed(info.client, _no_calls(tasks), budget, CLUSTER_BLOCKS_PER_WORKER * info.workers,
                                   on_submit, cancel, _run_futures, workers=info.workers, recycle=transient)
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


def _no_calls(tasks):
    for task in tasks:
        if isinstance(task, CallTask):
            raise ValueError("nwb_dask engine: plain calls (DataChunkIterators) run on threads, not a cluster")
        yield task


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


def progress_bar(total: int | None, enabled: bool, desc: str = "nwb_dask write"):
    """The one progress bar: tqdm in bytes (MB/s), shown when ``enabled`` for writes over 64 MiB or of unknown size."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc,
                disable=not enabled or (total is not None and total < 2**26))

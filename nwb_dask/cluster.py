"""The engine's window on a ``dask.distributed`` cluster: submission, direct fetch, same-host handover, batches.

:func:`run_distributed` is what :func:`nwb_dask.engine.run_block_tasks`
runs when the scheduler is a ``distributed.Client``: the engine's bounded
window (passed in as ``run_futures``) over cluster tasks whose results the
client's IO loop fetches straight from their workers.  Kept apart from the
engine's thread and process pools because everything here is about one
library's machinery (futures, ``who_has``, task keys, lost workers).
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

from nwb_dask.encoding import bound_heap_growth, encode_task, load_shared, shared_blocks, spill_to_shared

__all__ = ["Batch", "BatchResults", "WorkerEnvironmentError", "abandon", "check_workers", "batch_bytes", "batched", "block_source", "persisted_chunk", "remote_step",
           "remote_steps", "run_distributed", "BATCH_LOOKAHEAD", "CLUSTER_TASK_BYTES"]

#: Persisted chunks held by one worker go to it in one task of up to this many raw bytes (and at most a
#: fraction of the window, :func:`batch_bytes`): distributed spends some 5-10 ms of CPU on every task across
#: the client, the scheduler and the worker, which on 2 shared cores was a tenth of a 1.6 GB write in 70 tasks.
CLUSTER_TASK_BYTES = 64 * 2**20
#: Tasks looked at together to form batches (one ``who_has`` round trip per look).
BATCH_LOOKAHEAD = 32


class WorkerEnvironmentError(RuntimeError):
    """A cluster's workers cannot run nwb_dask's tasks: nwb_dask missing there, or another version (the workers named)."""


def _make_probe():
    """The function each worker runs for :func:`check_workers`, built in a closure so distributed pickles it by value.

    By value, a worker without nwb_dask (or with an older one) can still run
    it and say so, where a function pickled by reference would fail to
    unpickle there (and a task that does kills the worker's connection).  It
    imports the package the worker's tasks would import and reports its
    ``__version__``, the code actually imported, not an install's metadata.
    """
    def probe():
        import importlib

        try:
            from distributed import get_worker

            where = get_worker().address
        except Exception:  # run through client.run: the address is the key of the answer
            where = None
        try:
            found = importlib.import_module("nwb_dask")  # by name: this runs in the worker, not a dependency here
        except Exception as exc:  # no nwb_dask there, or one that fails to import
            return where, None, f"{type(exc).__name__}: {exc}"
        return where, str(getattr(found, "__version__", "an unknown version")), None

    return probe


#: client -> {worker address: (name, scratch directory)} already checked by :func:`check_workers`.
_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _worker_ids(client) -> dict:
    try:
        info = client.scheduler_info(n_workers=-1)  # some distributed releases list 5 workers by default
    except TypeError:  # pragma: no cover - older distributed
        info = client.scheduler_info()
    # name and scratch directory: a worker restarted at the same address (same name) has a new directory
    return {address: (w.get("id"), w.get("local_directory")) for address, w in info.get("workers", {}).items()}


def check_workers(client) -> None:
    """Check that every worker of ``client`` imports nwb_dask, the same version as this process.

    A worker started from another environment (an HPC module without
    nwb-dask, an older install on a node) would otherwise fail every block
    with an unpickling error deep in distributed (and drop its connection,
    so a write on a cluster of such workers waited for ever), or, with
    another version, run tasks whose arguments changed.  One ``client.run``
    per worker process not seen before (by address, name and scratch
    directory: a worker restarted at the same address is checked again).  A worker that leaves
    or does not answer meanwhile is no environment problem: it is skipped,
    and checked by a later write if it comes back.  With no workers yet, a
    warning, then one probe task (an adaptive cluster scales up for tasks),
    and the workers are checked once it has run.  Workers that join during a
    write are checked by the next write.

    Raises
    ------
    WorkerEnvironmentError
        Naming each worker at fault, what it lacks or runs, and what to install.
    """
    from nwb_dask.version import __version__ as mine

    if getattr(client, "status", "running") != "running":
        return  # closed: the write's first submit raises distributed's own ClosedClientError
    probe = _make_probe()
    workers = _worker_ids(client)
    reports: dict = {}
    if not workers:
        import warnings

        warnings.warn(f"the dask cluster at {client.scheduler.address} has no workers yet: the write waits until "
                      "workers join (start `dask worker` processes, or scale the cluster)", RuntimeWarning,
                      stacklevel=2)
        where, version, error = client.submit(probe, pure=False, key=f"nwb_dask-check-{id(probe):x}").result()
        reports[where] = (version, error)
        workers = _worker_ids(client)
    seen = _CHECKED.setdefault(client, {})
    for address in [a for a, wid in seen.items() if workers.get(a) != wid]:
        del seen[address]  # left, or restarted at the same address
    todo = sorted(a for a in workers if a not in seen and a not in reports)
    if todo:
        # on_error="return": a worker that left or hung since the listing returns its comm error instead
        answers = client.run(probe, workers=todo, on_error="return")
        reports.update({a: r[1:] for a, r in answers.items() if not isinstance(r, BaseException)})

    def label(w) -> str:  # the address, and the worker's name when it has one of its own (dask worker --name)
        name = (workers.get(w) or (None,))[0]
        return f"{w} ({name})" if name not in (None, w) and not isinstance(name, int) else str(w)

    missing = {label(w): e for w, (v, e) in reports.items() if e is not None}
    other = {label(w): v for w, (v, e) in reports.items() if e is None and v != mine}
    if missing:
        named = "; ".join(f"{w}: {e}" for w, e in sorted(missing.items(), key=str))
        raise WorkerEnvironmentError(f"the dask workers cannot import nwb_dask ({named}); install nwb-dask=={mine} "
                                     "in the environment the workers run in")
    if other:
        named = ", ".join(f"{w} runs {v}" for w, v in sorted(other.items(), key=str))
        raise WorkerEnvironmentError(f"the dask workers run another nwb_dask than this process ({mine}): {named}; "
                                     "install the same version on both sides")
    seen.update({a: workers[a] for a in reports if a in workers})


def block_source(array):
    """A block's dask array as a task takes it: a one-chunk array as its chunk's Delayed (no concatenating copy)."""
    if all(n == 1 for n in array.numblocks):
        return array.to_delayed().ravel()[0]
    return array


def persisted_chunk(array):
    """The cluster Future holding a one-chunk block's values, when the block is a persisted chunk (or an alias of one).

    ``client.submit`` on that future costs the client a fraction of
    building, optimising and sending the block's graph (``client.compute``):
    1.6 GB persisted in 70 blocks on LocalCluster(2), gzip-4 (see
    :func:`run_distributed`).  None for any other block.
    """
    if any(n != 1 for n in array.numblocks):
        return None
    try:
        from dask.core import flatten
        from dask._task_spec import Alias  # what slicing a persisted array on its chunk boundaries leaves
        from distributed import Future
    except ImportError:  # pragma: no cover - another dask: the graph path
        return None
    graph = array.__dask_graph__()
    value = graph.get(next(iter(flatten(array.__dask_keys__()))))
    for _ in range(8):  # aliases of aliases: an Alias, or a bare key (``.blocks[i]`` leaves one)
        target = value.target if isinstance(value, Alias) else value
        try:
            if target is value and not (isinstance(value, (tuple, str)) and value in graph):
                break
        except TypeError:  # an unhashable value: a task, not a key
            break
        value = graph.get(target)
    return value if isinstance(value, Future) else None


def remote_step(step: Callable, block, declared, task, shm=None) -> Any:
    """A cluster worker's task: the block's step, in a process whose glibc returns large buffers (:func:`bound_heap_growth`).

    With ``shm`` (the client's same-host directory) the chunks go into a
    shared-memory file when this worker is on the client's host (:func:`spill_to_shared`).
    """
    bound_heap_growth()
    result = step(block, declared, task)
    return spill_to_shared(result, shm) if shm is not None else result


class BatchResults(list):
    """A batch task's results, one per block in order (a type of its own: a step may return a list)."""


def remote_steps(steps: list, blocks: list, declared: list, tasks: list, shm=None) -> BatchResults:
    """A batch's task: :func:`remote_step` for each of its blocks, in order, on the worker holding them all."""
    return BatchResults(remote_step(step, block, d, task, shm)
                        for step, block, d, task in zip(steps, blocks, declared, tasks))


@dataclass
class Batch:
    """Blocks that are persisted chunks on one worker, sent there as one task (:func:`batched`)."""

    tasks: list
    chunks: list  # the Futures holding the blocks, in order
    worker: str

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tasks)


def batch_bytes(budget: int, workers: int) -> int:
    """The largest batch: :data:`CLUSTER_TASK_BYTES`, and small enough that 2 batches per worker fit the window."""
    return max(1, min(CLUSTER_TASK_BYTES, budget // max(1, 2 * workers)))


def batched(client, tasks: Iterable, max_bytes: int, lookahead: int = BATCH_LOOKAHEAD) -> Iterator[Any]:
    """The tasks, with blocks that are persisted chunks of one worker grouped into :class:`Batch` es.

    Looks ``lookahead`` tasks ahead, asks the scheduler once where their
    chunks are, and groups each worker's in order until ``max_bytes``.
    Blocks computed from a graph, pinned to a worker (sharded parts), whose
    chunk is on several or no workers, or alone on theirs pass through as
    they are.  A ``None`` from the source (it waits for a result) first
    flushes what was looked at, then passes through.  Batches go where
    their chunks are, so no block travels between workers.
    """
    it = iter(tasks)
    while True:
        window: list = []
        pause = False
        for task in it:
            if task is None:
                pause = True
                break
            window.append(task)
            if len(window) >= lookahead:
                break
        if not window and not pause:
            return
        yield from _grouped(client, window, max_bytes)
        if pause:
            yield None


def _grouped(client, window: list, max_bytes: int) -> Iterator[Any]:
    chunks = [None if getattr(t, "worker", None) is not None or getattr(t, "array", None) is None
              else persisted_chunk(t.array) for t in window]
    found = [c for c in chunks if c is not None]
    try:
        who = client.who_has(found) if len(found) > 1 else {}
    except Exception:  # the scheduler busy or restarting: these blocks go one task each, as without batches
        who = {}
    groups: dict[str, list] = {}  # worker -> its open group: [indices], bytes
    out: list = []  # in the order of each item's first task: a task, or a group being filled
    for i, (task, chunk) in enumerate(zip(window, chunks)):
        holders = who.get(chunk.key, ()) if chunk is not None else ()
        if len(holders) != 1:
            out.append(task)
            continue
        worker = holders[0]
        group = groups.get(worker)
        if group is None or group[1] + task.nbytes > max_bytes:
            group = groups[worker] = [[], 0, worker]
            out.append(group)
        group[0].append(i)
        group[1] += task.nbytes
    for item in out:
        if not isinstance(item, list):
            yield item
        elif len(item[0]) == 1:
            yield window[item[0][0]]
        else:
            yield Batch([window[i] for i in item[0]], [chunks[i] for i in item[0]], item[2])


def run_distributed(client, tasks, budget: int, max_blocks: int, on_submit, cancel, run_futures: Callable,
                    workers: int = 1, batch: bool = True, recycle: bool = False) -> Iterator[Any]:
    """The window over a cluster: each block's result is fetched ahead by the client's IO loop, straight from its worker.

    ``run_futures(items, submit, budget, max_blocks, on_submit, cancel)`` is
    the engine's window; ``on_submit`` is called for each block (also inside
    a batch); ``batch`` groups persisted chunks of one worker
    (:func:`batched`) and ``workers`` (the cluster's threads) sizes those
    batches; ``recycle`` (the caller stores each block before asking for the
    next) gives each same-host handover file back for reuse once the caller
    resumes, else the file is unlinked and the block's views stay valid.

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

    So: a task takes its block's own key (:func:`block_source`, no copy); a
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

    def submit(item):
        # The block is computed and encoded (and, with a worker-side sink,
        # stored) in one task on a worker; only the result travels back.
        if isinstance(item, Batch):  # persisted chunks of one worker: one task there, a list of results back
            for task in item.tasks:
                if on_submit:
                    on_submit(task)
            first = item.tasks[0]
            step = first.step or encode_task
            fut = client.submit(remote_steps, [t.step or encode_task for t in item.tasks], item.chunks,
                                [t.array.dtype for t in item.tasks], [replace(t, array=None) for t in item.tasks],
                                None if first.step else shm, key=f"{step.__name__}-x{len(item.tasks)}-{uuid.uuid4().hex}",
                                pure=False, workers=[item.worker], allow_other_workers=True)
        else:
            task = item
            if on_submit:
                on_submit(task)
            step = task.step or encode_task
            args = (step, task.array.dtype, replace(task, array=None), None if task.step else shm)  # a sink: no chunks
            name = f"{step.__name__}-{uuid.uuid4().hex}"  # the step's name on dashboards
            # a pinned task (sharded writes: one worker writes each part file) runs on its worker only
            pin = {} if task.worker is None else dict(workers=[task.worker], allow_other_workers=False)
            chunk = persisted_chunk(task.array)
            if chunk is not None:  # the block is one persisted chunk: a plain submit on its future, no graph to build
                fut = client.submit(remote_step, args[0], chunk, *args[1:], key=name, pure=False, **pin)
            else:
                work = dask.delayed(remote_step)(args[0], block_source(task.array), *args[1:], dask_key_name=name)
                fut = client.compute(work, **pin)
        fetched = asyncio.run_coroutine_threadsafe(fetch(fut), loop)
        with lock:
            live[fetched] = fut
        fetched.add_done_callback(fetched_ok)
        return fetched

    try:
        items = batched(client, tasks, batch_bytes(budget, workers)) if batch else tasks
        for results in run_futures(items, submit, budget, max_blocks, None, cancel):
            for result in results if isinstance(results, BatchResults) else [results]:
                if cancel is not None and cancel.is_set():
                    break  # the rest of a batch is not handed over (the directory goes in the finally)
                if not getattr(result, "shared", None):
                    yield result
                    del result
                    continue
                if not recycle:
                    yield load_shared(result)  # unlinked: the views live as long as the caller keeps them
                    del result
                    continue
                block, lease = load_shared(result, lease=True)
                del result
                try:
                    yield block  # the caller stores it before asking for the next
                finally:
                    del block
                    lease.release(pool_size=max_blocks + 2)  # its file back to the workers: pages reused, not zeroed
            del results
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



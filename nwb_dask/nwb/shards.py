"""Sharded writes for clusters: each worker writes its share of a dataset into its own part file.

``NWBDaskIO(path, "w", scheduler=client, shards="workers")`` (or an int: the
number of parts per dataset) writes every dask-backed dataset (the ones the
parallel writer takes) as an HDF5 virtual dataset over *part files*, so no
single process receives all the encoded bytes:

* hdmf creates the dataset as usual; :meth:`ShardedWrite.take` then cuts it
  along axis 0 at chunk boundaries into contiguous ranges, creates one empty
  part file per range with the dataset's own creation properties
  (:func:`nwb_dask.hdf5.shards.create_part`), and replaces the dataset by a
  virtual dataset over the parts with the builder's attributes;
* :meth:`ShardedWrite.write` runs the blocks through the one engine with the
  worker-side sink :func:`nwb_dask.hdf5.shards.store_part_block`, every block
  of a part pinned to the part's worker (HDF5 files are never written by two
  processes); blocks are computed, encoded and stored where they are, only
  their sizes come back.  The engine's window bounds the blocks in flight;
* layout: ``rec.nwb`` and ``rec.nwb.parts/<dataset path>.<k>.h5`` (e.g.
  ``rec.nwb.parts/acquisition/ElectricalSeries/data.0.h5``), the virtual
  dataset naming each part by its path *relative to the NWB file's
  directory*, so the pair moves together;
* atomic: the parts directory is built under a hidden temporary name next to
  the NWB file's temporary and renamed just before it, on success only; on
  any error, a lost worker, Ctrl-C or SIGTERM both are removed.

A lost worker leaves its parts incomplete: they are created again and
written from scratch by live workers (:data:`PART_RETRIES` times at most, then
the write fails with nothing left at the target).  :func:`nwb_dask.consolidate`
turns a sharded file into one self-contained file by copying the chunks raw.
"""

from __future__ import annotations

import bisect
import os
import shutil
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from nwb_dask.atomic import AtomicOutput
from nwb_dask.compat import vds_escape, vds_unescape
from nwb_dask.blocks import as_dask_array, checked_array
from nwb_dask.chunking import align_to_chunks, block_selections
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES, BlockTask, WriteStats, active_scheduler, interleave, \
    run_block_tasks
from nwb_dask.hdf5.shards import PART_DATASET, PartTarget, PartWorkerError, close_parts, create_part, \
    reopen_parts, split_rows, store_part_block
from nwb_dask.hdf5.write import plan_write

__all__ = ["PARTS_SUFFIX", "PartRetryWarning", "ShardedWrite", "check_shards", "parts_dir", "parts_of_replaced_file"]

class PartRetryWarning(RuntimeWarning):
    """A worker holding part files was lost: its parts are written again on live workers (the warning names them)."""


#: The parts directory of ``rec.nwb`` is ``rec.nwb.parts``.
PARTS_SUFFIX = ".parts"


def parts_dir(target: str | os.PathLike) -> Path:
    """The parts directory of an NWB file written with ``shards=``: ``<file>.parts`` beside it."""
    target = Path(target)
    return target.with_name(target.name + PARTS_SUFFIX)


def parts_of_replaced_file(target: str | os.PathLike) -> Path | None:
    """The parts directory of the sharded file a new, unsharded ``target`` is about to replace, or None.

    Only a directory the old file's virtual datasets actually read from is
    named (a directory of that name the file does not use is someone
    else's): once the new file is in place nothing reads it any more, and
    the caller removes it.
    """
    target, parts = Path(target), parts_dir(target)
    if not parts.is_dir() or parts.is_symlink() or not target.is_file():
        return None
    inside = os.path.realpath(parts) + os.sep

    def visit(_name, obj) -> bool | None:
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            for vmap in obj.virtual_sources():
                source = os.path.realpath(os.path.join(target.parent, vds_unescape(vmap.file_name)))
                if source.startswith(inside):
                    return True  # visititems stops here and returns it
        return None

    try:
        with h5py.File(target, "r") as f:
            used = f.visititems(visit)
    except (OSError, ValueError):  # not an HDF5 file nwb_dask can read: leave the directory alone
        return None
    return parts if used else None


def check_shards(shards, path, mode: str, *, file=None, comm=None, driver=None, atomic: bool = True) -> None:
    """Refuse ``shards=`` where it does not apply, before anything is created (errors name the option and file)."""
    where = os.fspath(path) if path is not None else "the file"
    if not (shards == "workers" or (isinstance(shards, int) and not isinstance(shards, bool) and shards >= 1)):
        raise ValueError(f"cannot write {where}: shards={shards!r}; give 'workers' or a number of parts >= 1")
    if mode not in ("w", "w-", "x") or path is None or file is not None or comm is not None \
            or driver not in (None, "sec2") or not atomic:
        raise ValueError(f"cannot write {where} with shards={shards!r}: sharded writes create a new local file "
                         "atomically (mode 'w', 'w-' or 'x', a path, no file=/comm=/driver=, atomic=True)")
    parts = parts_dir(path)
    if os.path.lexists(parts):
        if mode != "w":
            raise FileExistsError(f"{parts} exists (mode {mode!r}); use mode 'w' to overwrite {where} and its parts")
        if not parts.is_dir() or parts.is_symlink():
            raise FileExistsError(f"cannot write {where} with shards=: {parts} exists and is not a parts directory")


#: How many times the parts of lost workers are rewritten from scratch on live workers before the write fails.
PART_RETRIES = 2


@dataclass
class _Job:
    name: str
    codec: Any
    chunk_shape: tuple
    fill: Any
    dtype: Any
    parts: list  # [_Part]


@dataclass
class _Part:
    """One part file of a dataset: its rows, its blocks, the worker writing it, the blocks it has stored."""

    key: int  # the job
    k: int
    start: int
    stop: int
    path: str
    blocks: list  # [(block index, selection)]
    worker: Any = None
    done: set = field(default_factory=set)  # block indices stored (their results are back)
    counts: list = field(default_factory=lambda: [0, 0, 0])  # stored bytes, chunks, logical bytes of ``done``
    index: dict | None = None  # block start -> block index
    array: Any = None  # the part's rows of the source, aligned to chunks

    @property
    def label(self) -> str:
        return os.path.basename(self.path)


class ShardedWrite:
    """The parts of one :class:`~nwb_dask.nwb.io.NWBDaskIO` write (made by the IO for ``shards=``).

    Parameters
    ----------
    target : Path
        The NWB file.
    shards : "workers" or int
        Parts per dataset: one per worker of the scheduler, or this many
        (assigned to the workers in turn).
    scheduler : optional
        The IO's scheduler (a ``distributed.Client``, threads or sync; not
        the processes scheduler, whose tasks land in any process).
    """

    def __init__(self, target: Path, shards, scheduler: Any = None):
        self.target = Path(target).absolute()
        self.dir = parts_dir(self.target)
        self.shards = shards
        self.scheduler = scheduler
        self._output: AtomicOutput | None = None
        self._jobs: list[_Job] = []
        self._taken: set[int] = set()
        self._workers: list | None = None
        self._client = None
        self._templates = None  # in memory: each sharded dataset as hdmf created it (empty), to recreate parts

    # ----------------------------------------------------------------- hdmf side
    def owns(self, data) -> bool:
        """Whether this write took ``data`` (a DataChunkIterator of hdmf's queue)."""
        return id(data) in self._taken

    def _resolve_workers(self) -> list:
        if self._workers is None:
            info = active_scheduler(self.scheduler)
            if info.kind == "processes":
                raise ValueError(f"cannot write {self.target} with shards=: the processes scheduler runs each "
                                 "block in any process, and a part file must be written by one; use a "
                                 "distributed Client (or threads)")
            if info.kind == "distributed":
                self._client = info.client
                workers = _alive(info.client)
                if not workers:
                    raise ValueError(f"cannot write {self.target} with shards=: the cluster has no workers")
            else:
                workers = [None]
            self._workers = workers
        return self._workers

    def take(self, io, parent, builder, data) -> bool:
        """After hdmf created a dask-backed dataset: make it a virtual dataset over new part files.

        Returns whether it was taken (other datasets are written as usual).
        """
        from hdmf.backends.hdf5 import H5DataIO

        from nwb_dask.nwb.iterators import DaskDataChunkIterator

        iterator = data.data if isinstance(data, H5DataIO) else data
        if not isinstance(iterator, DaskDataChunkIterator) or builder.name not in parent:
            return False
        dset = parent[builder.name]
        if dset.chunks is None or dset.size == 0 or dset.ndim == 0:
            return False  # nothing to shard: written as today
        workers = self._resolve_workers()
        n = len(workers) if self.shards == "workers" else int(self.shards)
        # the writer's checks and codec (shape, chunked, codec against the filters); the parts align their own rows
        job = plan_write(iterator.source, dset, iterator.codec, block_bytes=iterator.block_bytes, name=dset.name)
        ranges = split_rows(dset.shape[0], dset.chunks[0], n)
        if self._output is None:
            self._output = AtomicOutput(self.dir)
            self._output.temp.mkdir()
        rel = dset.name.lstrip("/")
        folder = self._output.temp / os.path.dirname(rel)
        folder.mkdir(parents=True, exist_ok=True)
        key = len(self._jobs)
        if self._templates is None:
            self._templates = h5py.File(f"nwb_dask-templates-{id(self)}", "w", driver="core", backing_store=False)
        self._templates.copy(dset, str(key), without_attrs=True)
        layout = h5py.VirtualLayout(shape=dset.shape, dtype=dset.dtype, maxshape=dset.shape)
        parts = []
        for k, (a, b) in enumerate(ranges):
            name = f"{rel}.{k}.h5"
            parts.append(_Part(key, k, a, b, str(self._output.temp / name), []))
            self._create(parts[-1], dset.name)
            # the final name, relative; "%" escaped, as HDF5 reads printf-like specifiers in source names
            source = vds_escape(os.path.relpath(self.dir / name, self.target.parent))
            layout[a:b] = h5py.VirtualSource(source, PART_DATASET, shape=(b - a,) + dset.shape[1:], dtype=dset.dtype)
        # Each part's rows aligned to chunks on their own (part edges are chunk multiples): no block spans
        # two parts, and a part's blocks depend only on its rows' inputs (where they are persisted, _place).
        source = as_dask_array(iterator.source, name=dset.name)
        for p in parts:
            p.array = _aligned(source[p.start:p.stop], tuple(dset.chunks), iterator.block_bytes, dset.name)
            p.blocks = [(idx, (slice(sel[0].start + p.start, sel[0].stop + p.start),) + tuple(sel[1:]))
                        for idx, sel in block_selections(p.array.chunks)]
            p.worker = workers[(p.k + key) % len(workers)]
        fill = dset.fillvalue if job.codec is not None else 0
        stored = None if dset.dtype == source.dtype else dset.dtype
        self._jobs.append(_Job(dset.name, job.codec, tuple(dset.chunks), fill, stored, parts))
        fillvalue, name = dset.fillvalue, builder.name
        del parent[name]
        dset = job = None
        vds = parent.create_virtual_dataset(name, layout, fillvalue=fillvalue)
        io.set_attributes(vds, builder.attributes)
        self._taken.add(id(data))
        self._taken.add(id(iterator))
        return True

    def _create(self, part: _Part, name: str) -> None:
        """(Re)create a part's file, empty, from its dataset's template."""
        if os.path.exists(part.path):
            os.unlink(part.path)  # a lost worker's part: a process still writing it writes to the unlinked file
        create_part(part.path, self._templates[str(part.key)], part.stop - part.start,
                    attrs={"nwb_dask_part_of": name, "nwb_dask_rows": [part.start, part.stop]})

    # ----------------------------------------------------------------- the write
    def _streams(self, parts: list) -> list:
        """One task stream per part (interleaved, so every worker gets blocks from the start)."""
        streams = []
        for p in parts:
            job = self._jobs[p.key]
            target = PartTarget(p.path, p.start, p.worker, f"dataset {job.name!r} part {p.k} ({p.label})")
            streams.append(_part_stream(p, job, [b for b in p.blocks if b[0] not in p.done], target))
        return streams

    def write(self, stats: WriteStats | None = None, *, max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
              progress: bool = True) -> WriteStats:
        """Write every taken dataset's parts on the workers; ``stats`` (of the rest of the write) folded in.

        A worker lost mid-write (its process killed, its node gone) leaves
        its parts incomplete: they are created again, empty, and written from
        scratch by live workers (up to :data:`PART_RETRIES` times); the other
        parts keep what they stored and go on.

        Raises
        ------
        PartWorkerError
            Workers holding parts were lost more often than retried, or no
            worker is left (the IO removes the parts and the file).
        Exception
            A failing block's error, unchanged, with a note naming the dataset.
        """
        stats = stats if stats is not None else WriteStats()
        if not self._jobs:
            return stats
        parts = [p for job in self._jobs for p in job.parts]
        if self._client is not None:
            self._place(parts)
        own = WriteStats(datasets=[j.name for j in self._jobs])
        where = {(p.key, p.start): p for p in parts}
        total = sum(int(p.array.size) * p.array.dtype.itemsize for p in parts)
        t0 = time.perf_counter()
        for attempt in range(PART_RETRIES + 1):
            todo = [p for p in parts if len(p.done) < len(p.blocks)]
            pinned: dict = {}  # worker -> its part files, this attempt
            for p in todo:
                pinned.setdefault(p.worker, []).append(p.path)
            watchdog = _Watchdog(self._client, pinned) if self._client is not None else None
            try:
                for done in run_block_tasks(interleave(self._streams(todo)), max_inflight_bytes=max_inflight_bytes,
                                            scheduler=self.scheduler, progress=progress, total=total,
                                            desc="nwb_dask sharded"):
                    part = where[(done.key, _part_start(self._jobs[done.key], done.selection))]
                    part.done.add(_block_index(part, done.selection))
                    part.counts[0] += done.stored_bytes
                    part.counts[1] += done.n_chunks
                    part.counts[2] += done.nbytes
            except BaseException as exc:
                lost = watchdog.stop() if watchdog is not None else set()
                closed = self._close(pinned) or {}
                if not lost or not isinstance(exc, Exception):
                    exc.add_note(f"nwb_dask: while writing sharded dataset(s) {', '.join(own.datasets)} of "
                                 f"{self.target}")
                    raise
                self._retry(todo, lost, closed, exc, attempt)
                continue
            lost = watchdog.stop() if watchdog is not None else set()
            closed = self._close(pinned)
            if closed is not None and self._client is not None and any(p.worker in lost or p.path not in closed
                                                                        for p in todo):
                # every block stored, but a worker holding parts was lost before its handles closed: its parts
                # are not known to be whole (HDF5 flushes metadata at close), so they are written again
                lost |= {p.worker for p in todo if p.path not in closed}
                self._retry(todo, lost, closed, None, attempt)
                continue
            self._check(todo, closed or {}, lost)
            break
        self._templates.close()  # every part is whole: none is created again
        self._templates = None
        own.stored_bytes, own.chunks, own.logical_bytes = (sum(p.counts[i] for p in parts) for i in range(3))
        own.seconds = time.perf_counter() - t0
        seconds = stats.seconds + own.seconds  # one after the other
        stats.add(own)
        stats.seconds = seconds
        return stats

    def _place(self, parts: list) -> None:
        """Data persisted on the cluster: give each part to the worker that holds most of its blocks' inputs.

        Otherwise a part's blocks would travel to its worker (raw bytes, worker
        to worker).  At most ``ceil(parts / workers)`` parts per worker, so the
        work stays spread; without persisted inputs the parts stay where
        :meth:`take` put them (in turn).
        """
        from dask.core import flatten
        from distributed import futures_of

        persisted = {f.key: f for p in parts for f in futures_of(p.array)}
        if not persisted:
            return
        keys = {}
        for p in parts:  # the persisted blocks a part's rows need: its culled graph's keys among them
            graph = p.array.__dask_graph__().cull(set(flatten(p.array.__dask_keys__())))
            keys[id(p)] = [k for k in graph.keys() if k in persisted]
        wanted = sorted({k for ks in keys.values() for k in ks}, key=str)
        # who_has takes futures: given bare keys it finds none and answers {} (every part then went anywhere)
        who = self._client.who_has([persisted[k] for k in wanted])
        workers = _alive(self._client)
        cap = -(-len(parts) // len(workers))
        load = {w: 0 for w in workers}
        counts = {}
        for p in parts:
            c = {w: 0 for w in workers}
            for k in keys[id(p)]:
                for w in who.get(k, ()):
                    if w in c:
                        c[w] += 1
            counts[id(p)] = c
        def regret(q) -> int:  # what a part loses if it cannot have its best worker: the largest choose first
            best = sorted(counts[id(q)].values(), reverse=True) + [0]
            return best[0] - best[1]

        for p in sorted(parts, key=regret, reverse=True):
            free = [w for w in workers if load[w] < cap]
            p.worker = max(free, key=lambda w: (counts[id(p)][w], -load[w]))
            load[p.worker] += 1

    def _retry(self, todo: list, lost: set, closed: dict, exc: BaseException, attempt: int) -> None:
        """After lost workers: their parts (and any part that failed to close) start again on live workers."""
        files = ", ".join(p.label for p in todo if p.worker in lost)
        live = [w for w in _alive(self._client) if w not in lost]
        if attempt >= PART_RETRIES or not live:
            why = "no worker is left" if not live else f"after {PART_RETRIES} retries"
            raise PartWorkerError(f"cannot write {self.target}: worker(s) {', '.join(sorted(lost))} were lost while "
                                  f"writing part files {files} ({why}); the write was stopped and nothing was left at "
                                  "the target") from exc
        redo = [p for p in todo if p.worker in lost or closed.get(p.path, "lost") is not None]
        warnings.warn(f"{self.target}: worker(s) {', '.join(sorted(lost))} lost while writing part files {files}; "
                      f"{len(redo)} part(s) written again from the start on live workers (retry {attempt + 1} of "
                      f"{PART_RETRIES})", PartRetryWarning, stacklevel=2)
        for i, p in enumerate(redo):
            p.done.clear()
            p.counts = [0, 0, 0]  # rewritten from scratch: counted once, when it is stored again
            p.worker = live[i % len(live)]
            self._create(p, self._jobs[p.key].name)
        # the other parts go on where they are; the handles of all were closed for good: allow them open again
        self._client.run(reopen_parts, [p.path for p in todo])

    def _close(self, pinned: dict) -> dict | None:
        """Close the parts' handles where they are open: {path: None, or the error closing it}; None: no cluster."""
        paths = [p for ps in pinned.values() for p in ps]
        if self._client is None:
            return close_parts(paths)
        try:
            closed = self._client.run(close_parts, paths, on_error="return")
        except Exception:  # the cluster is gone: the parts are not known to be whole (PartWorkerError names them)
            return None
        # workers sharing one process (LocalCluster(processes=False)) close each other's parts
        return {p: e for got in closed.values() if isinstance(got, dict) for p, e in got.items()}

    def _check(self, todo: list, closed: dict, lost: set) -> None:
        """Each part of the last attempt closed cleanly by a live worker, else PartWorkerError naming it."""
        problems = []
        for p in todo:
            if p.worker in lost or p.path not in closed:
                problems.append(f"{p.label}: its worker {p.worker} was lost before closing it")
            elif closed[p.path] is not None:
                problems.append(f"{p.label}: {closed[p.path]}")
        if problems:
            raise PartWorkerError(f"cannot write {self.target}: " + "; ".join(problems))

    # ----------------------------------------------------------------- commit
    def commit_with(self, output: AtomicOutput) -> None:
        """Rename the parts directory into place, then the NWB file (``output``); on error neither changes.

        A parts directory being replaced (mode ``"w"`` over a sharded file) is
        kept aside until the new NWB file is in place: if that rename fails
        (or Ctrl-C/SIGTERM comes between the two), the new parts are removed
        and the old ones put back, so the old file still reads its values.
        Once the new file is in place, its parts stay, whatever follows.
        """
        state: dict[str, Any] = {"renamed": False, "aside": None, "placed": False}

        def placed() -> None:
            state["placed"] = True

        def parts_first(_temp) -> None:
            if self._output is not None:
                try:
                    self._output.commit(keep_replaced=True, after_rename=placed)
                finally:  # also when its directory's fsync failed after the rename
                    state["aside"] = self._output.replaced

        def renamed() -> None:
            state["renamed"] = True

        try:
            output.commit(before_rename=parts_first, after_rename=renamed)
        except BaseException:
            self.discard()
            if not state["renamed"]:
                if state["placed"]:  # the file did not follow its parts
                    shutil.rmtree(self.dir, ignore_errors=True)
                if state["aside"] is not None:  # the old file's parts back beside it
                    os.replace(state["aside"], self.dir)
                    state["aside"] = None
            raise
        finally:
            if state["aside"] is not None:
                shutil.rmtree(state["aside"], ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary parts directory (idempotent); the target's is untouched."""
        if self._output is not None:
            if self._client is None:
                close_parts([p.path for j in self._jobs for p in j.parts])
            self._output.discard()
        if self._templates is not None:
            self._templates.close()
            self._templates = None

    @property
    def datasets(self) -> list[str]:
        """The datasets written as parts."""
        return [j.name for j in self._jobs]


def _alive(client) -> list:
    """The addresses of the cluster's workers now."""
    try:
        info = client.scheduler_info(n_workers=-1)  # distributed >= 2025.4 lists 5 workers by default
    except TypeError:  # pragma: no cover - older distributed
        info = client.scheduler_info()
    return sorted(info["workers"])


def _part_start(job: _Job, selection: tuple) -> int:
    starts = [p.start for p in job.parts]
    return starts[bisect.bisect_right(starts, selection[0].start) - 1]


def _block_index(part: _Part, selection: tuple):
    """The index of the part's block at ``selection`` (by its start: slices are not hashable before Python 3.12)."""
    if part.index is None:
        part.index = {tuple(s.start for s in sel): idx for idx, sel in part.blocks}
    return part.index[tuple(s.start for s in selection)]


def _part_stream(part: _Part, job: _Job, blocks: list, target: PartTarget):
    for idx, sel in blocks:
        yield BlockTask(part.key, sel, part.array.blocks[idx], job.chunk_shape, job.codec, job.fill, name=job.name,
                        index=idx, dtype=job.dtype, step=store_part_block, target=target, worker=target.worker)


def _aligned(rows, chunk_shape: tuple, block_bytes: int, name: str):
    """A part's rows as blocks aligned to whole chunks (as plan_write aligns a whole dataset's)."""
    aligned = align_to_chunks(rows, chunk_shape, block_bytes)
    if aligned.chunks != rows.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
        aligned = align_to_chunks(checked_array(rows, name), chunk_shape, block_bytes)
    return aligned


class _Watchdog:
    """Watches the workers that hold parts; when one leaves the cluster, cancels its pinned tasks.

    A task pinned to a worker that is gone waits forever ("no-worker"); its
    cancellation ends the engine's window with an error, and the write fails
    cleanly.
    """

    def __init__(self, client, pinned: dict, interval: float = 0.5):
        self.client, self.pinned, self.interval = client, sorted(pinned), interval
        self.lost: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nwb_dask-shards-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from distributed import Future

        while not self._stop.wait(self.interval):
            try:
                lost, keys = self.client.run_on_scheduler(_lost_tasks, self.pinned)
            except Exception:  # the scheduler is busy or gone: the engine sees that itself
                continue
            if lost:
                self.lost.update(lost)
                if keys:
                    self.client.cancel([Future(k, self.client) for k in keys],
                                       reason=f"nwb_dask: worker(s) {', '.join(lost)} holding part files were lost")
                return

    def stop(self) -> set:
        """Stop watching; the workers found lost."""
        self._stop.set()
        self._thread.join()
        return set(self.lost)


def _lost_tasks(pinned: list, dask_scheduler=None) -> tuple[list, list]:
    """On the scheduler: which pinned workers are gone, and the keys of the tasks restricted to them."""
    alive = set(dask_scheduler.workers)
    lost = [w for w in pinned if w not in alive]
    if not lost:
        return [], []
    gone = set(lost)
    # the tasks a client holds (the engine's blocks; their dependencies carry the same restrictions)
    keys = [ts.key for ts in dask_scheduler.tasks.values()
            if ts.who_wants and ts.worker_restrictions and set(ts.worker_restrictions) <= gone
            and ts.state not in ("memory", "erred", "forgotten")]
    return lost, keys

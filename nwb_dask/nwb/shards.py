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

A lost worker fails the write (its part file is incomplete): nothing is left
at the target; :func:`nwb_dask.consolidate` turns a sharded file into one
self-contained file by copying the chunks raw.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nwb_dask.atomic import AtomicOutput
from nwb_dask.chunking import block_selections
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES, BlockTask, WriteStats, active_scheduler, interleave, \
    run_block_tasks
from nwb_dask.hdf5.shards import PART_DATASET, PartTarget, PartWorkerError, close_parts, create_part, split_rows, \
    store_part_block
from nwb_dask.hdf5.write import plan_write

__all__ = ["PARTS_SUFFIX", "ShardedWrite", "check_shards", "parts_dir"]

#: The parts directory of ``rec.nwb`` is ``rec.nwb.parts``.
PARTS_SUFFIX = ".parts"


def parts_dir(target: str | os.PathLike) -> Path:
    """The parts directory of an NWB file written with ``shards=``: ``<file>.parts`` beside it."""
    target = Path(target)
    return target.with_name(target.name + PARTS_SUFFIX)


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


@dataclass
class _Job:
    name: str
    array: Any
    codec: Any
    chunk_shape: tuple
    fill: Any
    dtype: Any
    parts: list  # [(start, stop, path)]


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
                workers = sorted(info.client.scheduler_info(n_workers=-1)["workers"])
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
        job = plan_write(iterator.source, dset, iterator.codec, block_bytes=iterator.block_bytes, name=dset.name)
        ranges = split_rows(dset.shape[0], dset.chunks[0], n)
        if self._output is None:
            self._output = AtomicOutput(self.dir)
            self._output.temp.mkdir()
        rel = dset.name.lstrip("/")
        folder = self._output.temp / os.path.dirname(rel)
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        import h5py

        layout = h5py.VirtualLayout(shape=dset.shape, dtype=dset.dtype, maxshape=dset.shape)
        for k, (a, b) in enumerate(ranges):
            name = f"{rel}.{k}.h5"
            path = self._output.temp / name
            create_part(path, dset, b - a, attrs={"nwb_dask_part_of": dset.name, "nwb_dask_rows": [a, b]})
            source = os.path.relpath(self.dir / name, self.target.parent)  # the final name, relative
            layout[a:b] = h5py.VirtualSource(source, PART_DATASET, shape=(b - a,) + dset.shape[1:], dtype=dset.dtype)
            parts.append((a, b, str(path)))
        # block edges at every part edge, so no block spans two parts (all edges are chunk multiples)
        edges = sorted({0, *(int(e) for e in _cumsum(job.array.chunks[0])), *(a for a, _, _ in parts)})
        array = job.array.rechunk({0: tuple(b - a for a, b in zip(edges[:-1], edges[1:]))})
        fill = dset.fillvalue if job.codec is not None else 0
        stored = None if dset.dtype == array.dtype else dset.dtype
        self._jobs.append(_Job(dset.name, array, job.codec, tuple(dset.chunks), fill, stored, parts))
        fillvalue, name = dset.fillvalue, builder.name
        del parent[name]
        dset = job = None
        vds = parent.create_virtual_dataset(name, layout, fillvalue=fillvalue)
        io.set_attributes(vds, builder.attributes)
        self._taken.add(id(data))
        self._taken.add(id(iterator))
        return True

    # ----------------------------------------------------------------- the write
    def _tasks(self, key: int, job: _Job, workers: list, turn: int):
        """One task stream per part (interleaved, so every worker gets blocks from the start)."""
        by_part: list[list] = [[] for _ in job.parts]
        starts = [a for a, _, _ in job.parts]
        for idx, sel in block_selections(job.array.chunks):
            k = max(i for i, s in enumerate(starts) if s <= sel[0].start)
            by_part[k].append((idx, sel))
        streams = []
        for k, ((a, _, path), blocks) in enumerate(zip(job.parts, by_part)):
            worker = workers[(k + turn) % len(workers)]
            target = PartTarget(path, a, worker, f"dataset {job.name!r} part {k} ({os.path.basename(path)})")
            streams.append(_part_stream(key, job, blocks, target))
        return streams

    def write(self, stats: WriteStats | None = None, *, max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
              progress: bool = True) -> WriteStats:
        """Write every taken dataset's parts on the workers; ``stats`` (of the rest of the write) folded in.

        Raises
        ------
        PartWorkerError
            A worker holding a part was lost (the write is stopped; the IO
            removes the parts and the file).
        Exception
            A failing block's error, unchanged, with a note naming the dataset.
        """
        stats = stats if stats is not None else WriteStats()
        if not self._jobs:
            return stats
        workers = self._resolve_workers()
        own = WriteStats(datasets=[j.name for j in self._jobs])
        streams = []
        for key, job in enumerate(self._jobs):
            streams += self._tasks(key, job, workers, key)
        pinned: dict = {}  # worker -> its part files
        for key, job in enumerate(self._jobs):
            for k, (_, _, path) in enumerate(job.parts):
                pinned.setdefault(workers[(k + key) % len(workers)], []).append(path)
        total = sum(int(j.array.size) * j.array.dtype.itemsize for j in self._jobs)
        watchdog = _Watchdog(self._client, pinned) if self._client is not None else None
        t0 = time.perf_counter()
        try:
            for done in run_block_tasks(interleave(streams), max_inflight_bytes=max_inflight_bytes,
                                        scheduler=self.scheduler, progress=progress, total=total,
                                        desc="nwb_dask sharded"):
                own.stored_bytes += done.stored_bytes
                own.chunks += done.n_chunks
                own.logical_bytes += done.nbytes
        except BaseException as exc:
            lost = watchdog.stop() if watchdog is not None else None
            self._close_all(pinned, check=False)
            if lost:
                files = ", ".join(os.path.basename(p) for w in sorted(lost) for p in pinned[w])
                raise PartWorkerError(f"cannot write {self.target}: worker(s) {', '.join(sorted(lost))} were lost "
                                      f"while writing part files {files}; the write was stopped and nothing was "
                                      "left at the target") from exc
            exc.add_note(f"nwb_dask: while writing sharded dataset(s) {', '.join(own.datasets)} of {self.target}")
            raise
        lost = watchdog.stop() if watchdog is not None else None
        self._close_all(pinned, check=True, lost=lost)
        own.seconds = time.perf_counter() - t0
        seconds = stats.seconds + own.seconds  # one after the other
        stats.add(own)
        stats.seconds = seconds
        return stats

    def _close_all(self, pinned: dict, *, check: bool, lost=None) -> None:
        """Close the parts' handles where they are open; with ``check``, each part closed cleanly by its worker."""
        paths = [p for ps in pinned.values() for p in ps]
        if self._client is None:
            closed = {None: close_parts(paths)}
        else:
            try:
                closed = self._client.run(close_parts, paths, on_error="return")
            except Exception as exc:  # pragma: no cover - the cluster is gone
                if check:
                    raise PartWorkerError(f"cannot write {self.target}: closing the part files failed: {exc}") from exc
                return
        if not check:
            return
        # {path: error or None} over every worker (workers sharing one process close each other's parts)
        merged = {p: e for got in closed.values() if isinstance(got, dict) for p, e in got.items()}
        problems = []
        for worker, paths in pinned.items():
            for path in paths:
                if lost and worker in lost or path not in merged:
                    problems.append(f"{os.path.basename(path)}: its worker {worker} was lost before closing it")
                elif merged[path] is not None:
                    problems.append(f"{os.path.basename(path)}: {merged[path]}")
        if problems:
            raise PartWorkerError(f"cannot write {self.target}: " + "; ".join(problems))

    # ----------------------------------------------------------------- commit
    def commit_with(self, output: AtomicOutput) -> None:
        """Rename the parts directory into place, then the NWB file (``output``); on error neither stays."""
        placed = []

        def parts_first(_temp) -> None:
            if self._output is not None:
                self._output.commit()
                placed.append(self.dir)

        try:
            output.commit(before_rename=parts_first)
        except BaseException:
            self.discard()
            for path in placed:  # the file did not follow its parts
                shutil.rmtree(path, ignore_errors=True)
            raise

    def discard(self) -> None:
        """Remove the temporary parts directory (idempotent); the target's is untouched."""
        if self._output is not None:
            if self._client is None:
                close_parts([p for j in self._jobs for _, _, p in j.parts])
            self._output.discard()

    @property
    def datasets(self) -> list[str]:
        """The datasets written as parts."""
        return [j.name for j in self._jobs]


def _part_stream(key: int, job: _Job, blocks: list, target: PartTarget):
    for idx, sel in blocks:
        yield BlockTask(key, sel, job.array.blocks[idx], job.chunk_shape, job.codec, job.fill, name=job.name,
                        index=idx, dtype=job.dtype, step=store_part_block, target=target, worker=target.worker)


def _cumsum(sizes) -> list[int]:
    out, total = [], 0
    for s in sizes:
        total += s
        out.append(total)
    return out


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

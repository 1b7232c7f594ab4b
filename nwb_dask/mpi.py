"""MPI fallback: write NWB/HDF5 datasets from MPI ranks, without a Dask cluster.

Run the same script on every rank (``mpiexec -n 4 python script.py``); every
rank builds the same lazy data, and :func:`write` shares the work:

1. rank 0 creates the file's structure (pynwb/hdmf for an ``NWBFile``, h5py
   for a mapping of datasets) with empty chunked, compressed datasets, under
   a temporary name next to the target, and tells every rank the plan: which
   chunk-aligned blocks of which datasets exist;
2. each rank computes blocks from its own copy of the data: in funnel mode
   rank 0 hands them out on request (so the rank that also writes takes a
   smaller share), in collective mode they are dealt round-robin;
3. **funnel mode** (any h5py, e.g. the wheel, with ``pip install mpi4py
   mpich``): each rank compresses its blocks' chunks with nwb_dask's codecs
   and sends the encoded bytes to rank 0, which computes its own share too
   and stores every chunk with ``write_direct_chunk``.  A rank has at most
   two blocks in flight, so memory stays bounded.
   **collective mode** (h5py built with parallel HDF5, see
   ``scripts/install-parallel-h5py.sh``): all ranks open the file with the
   ``mpio`` driver and write their blocks in collective calls, HDF5
   compressing each rank's chunks on that rank; a rank with no block left
   joins each call with an empty selection;
4. rank 0 renames the file into place; on failure nothing appears at the
   target.

A failing rank ends the whole job with a clear error naming the rank, the
dataset and the block, never a hang: in collective mode the ranks agree on
failure before each collective call and all raise :class:`MPIWriteError`; in
funnel mode rank 0 reports the error, removes the temporary file and aborts
the job (``MPI_Abort``).  A rank that makes no progress for ``timeout``
seconds aborts the job as well.

Why not PyNWB's ``NWBHDF5IO(..., comm=...)``?  It opens the file with the
``mpio`` driver and writes with independent I/O, which HDF5 refuses for
compressed datasets ("Can't perform independent write with filters in
pipeline"); see ``benchmarks/mpi.py``.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nwb_dask.blocks import block_label, checked_array, checked_block
from nwb_dask.compat import dataset_xfer_plist, set_io_source
from nwb_dask.chunking import (
    DEFAULT_BLOCK_BYTES,
    ChunksArg,
    block_selections,
    chunked_maxshape,
    resolve_chunk_shape,
)
from nwb_dask.codecs import Codec, CodecSpec, codec as make_codec
from nwb_dask.engine import encode_chunks, progress_bar
from nwb_dask.hdf5.write import WriteStats, store_block

__all__ = ["MPIWriteError", "available_modes", "write"]

Mode = Literal["auto", "funnel", "collective"]
_TAG_BLOCK, _TAG_ERROR, _TAG_REQUEST, _TAG_ASSIGN, _TAG_DATA = 7101, 7102, 7103, 7104, 7105
_MAX_IN_FLIGHT = 4  # blocks a funnel rank may have sent but not yet delivered
_PREFETCH = 2  # block requests a funnel rank keeps ahead of its work (rank 0 answers between its own blocks)


class MPIWriteError(RuntimeError):
    """A rank failed (or stalled) while writing; the message names the rank and the block."""


def available_modes() -> tuple[str, ...]:
    """The modes this installation supports: ``("funnel",)`` or ``("funnel", "collective")``."""
    import h5py

    return ("funnel", "collective") if h5py.get_config().mpi else ("funnel",)


@dataclass
class _Plan:
    """What rank 0 tells every rank once the structure exists."""

    temp: str
    names: list[str] = field(default_factory=list)
    dtypes: list[Any] = field(default_factory=list)
    chunk_shapes: list[tuple] = field(default_factory=list)
    codecs: list[Codec | None] = field(default_factory=list)
    fills: list[Any] = field(default_factory=list)
    blocks: list[tuple[int, tuple]] = field(default_factory=list)  # (dataset index, selection)
    error: str | None = None


def _comm(comm):
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    return comm


# --------------------------------------------------------------------------- #
# the data on every rank                                                       #
# --------------------------------------------------------------------------- #
def _as_dask(source: Any, name: str, block_bytes: int):
    """A dask array for any sliceable source (dask arrays are kept as they are)."""
    import dask.array as da

    if isinstance(source, da.Array):
        return source
    from nwb_dask.nwb.dataio import DaskDataIO

    if isinstance(source, DaskDataIO):
        return source.array
    if not hasattr(source, "shape") or not hasattr(source, "dtype"):
        raise TypeError(f"dataset {name!r}: expected a dask array or a sliceable array with shape and dtype, "
                        f"got {type(source).__name__}")
    from nwb_dask.chunking import block_shape, guess_chunk_shape

    chunks = getattr(source, "chunks", None)
    chunks = chunks if isinstance(chunks, tuple) and chunks else guess_chunk_shape(source.shape, source.dtype)
    return da.from_array(source, chunks=block_shape(chunks, source.shape, source.dtype, block_bytes), lock=False)


def _nwb_arrays(nwbfile) -> dict[str, Any]:
    """``{dataset path: DaskDataIO}`` for the dask-backed datasets of an NWBFile (no I/O)."""
    from hdmf.build import DatasetBuilder, GroupBuilder
    from pynwb import get_manager

    from nwb_dask.nwb.dataio import DaskDataIO

    found: dict[str, Any] = {}

    def walk(builder, path: str) -> None:
        if isinstance(builder, DatasetBuilder):
            if isinstance(builder.data, DaskDataIO):
                found[path] = builder.data
            return
        if isinstance(builder, GroupBuilder):
            for name, sub in {**builder.groups, **builder.datasets}.items():
                walk(sub, f"{path}/{name}" if path != "/" else f"/{name}")

    walk(get_manager().build(nwbfile), "/")
    return found


# --------------------------------------------------------------------------- #
# rank 0: the structure                                                        #
# --------------------------------------------------------------------------- #
def _structure(data: Any, temp: str, codec: CodecSpec, chunks: ChunksArg, block_bytes: int,
               target: str | os.PathLike) -> _Plan:
    """Create the file with empty datasets (rank 0) and plan the blocks."""
    import h5py

    plan = _Plan(temp=temp)
    jobs = []
    if isinstance(data, Mapping):
        from nwb_dask.hdf5.write import plan_write

        c = make_codec(codec)
        with h5py.File(temp, "w") as f:
            for name, source in data.items():
                array = _as_dask(source, name, block_bytes)
                shape = resolve_chunk_shape(chunks, array.shape, array.dtype, name=name)
                dset = f.create_dataset(name, shape=array.shape, dtype=array.dtype, chunks=shape,
                                        maxshape=chunked_maxshape(array.shape), **c.dataset_kwargs())
                jobs.append(plan_write(array, dset, c, block_bytes=block_bytes, name=name))
            _add_jobs(plan, jobs)
    else:
        from nwb_dask.nwb.io import NWBDaskIO

        class _PlanIO(NWBDaskIO):
            """Creates every dataset, drains non-dask iterators, plans the dask ones instead of writing them."""

            def write_jobs(self, jobs_, others):
                _add_jobs(plan, jobs_)
                return super().write_jobs([], others)

        with _PlanIO(temp, "w", atomic=False, progress=False) as io:
            # the containers name the target, as NWBDaskIO's own atomic writes do
            set_io_source(io, os.path.abspath(target))
            io.write(data)
    return plan


def _add_jobs(plan: _Plan, jobs: list) -> None:
    for j, job in enumerate(jobs):
        plan.names.append(job.dset.name)
        plan.dtypes.append(job.dset.dtype)
        plan.chunk_shapes.append(tuple(job.chunk_shape))
        plan.codecs.append(job.codec)
        plan.fills.append(job.dset.fillvalue if job.codec is not None else 0)
        plan.blocks += [(j, sel) for _, sel in block_selections(job.array.chunks)]


# --------------------------------------------------------------------------- #
# every rank: compute (and encode) a block                                     #
# --------------------------------------------------------------------------- #
def _compute(plan: _Plan, arrays: dict[str, Any], j: int, selection: tuple) -> np.ndarray:
    """The block, checked as on every write path (:func:`nwb_dask.blocks.checked_block`) and in the dataset's dtype."""
    array = arrays[plan.names[j]]
    block = checked_block(array[selection].compute(scheduler="sync"), array.dtype,
                          shape=tuple(s.stop - s.start for s in selection), stored=plan.dtypes[j],
                          selection=selection, label=block_label(plan.names[j], selection))
    return np.ascontiguousarray(block)


def _encode(plan: _Plan, arrays: dict[str, Any], j: int, selection: tuple):
    """The block's encoded chunks ``[(offset, mask, bytes)]`` (the engine's encode step), or the raw block for HDF5-side filters."""
    block = _compute(plan, arrays, j, selection)  # checked there
    codec = plan.codecs[j]
    if codec is None:
        return block
    return encode_chunks(block, selection, plan.chunk_shapes[j], codec, plan.fills[j])


def _block_nbytes(plan: _Plan, j: int, selection: tuple) -> int:
    return int(np.prod([s.stop - s.start for s in selection])) * np.dtype(plan.dtypes[j]).itemsize


def _where(plan: _Plan, j: int, selection: tuple) -> str:
    return f"dataset {plan.names[j]!r} block {tuple((s.start, s.stop) for s in selection)}"


class _Watchdog:
    """Abort the job if this rank makes no progress for ``timeout`` seconds."""

    def __init__(self, comm, timeout: float, what: str):
        self._comm, self._timeout, self._what = comm, timeout, what
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nwb_dask-mpi-watchdog", daemon=True)

    def __enter__(self):
        if self._timeout and self._timeout > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        return False

    def tick(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self._timeout / 4)):
            if time.monotonic() - self._last > self._timeout:
                print(f"nwb_dask.mpi: rank {self._comm.rank}: no progress for {self._timeout:g} s while "
                      f"{self._what}; aborting the job", file=sys.stderr, flush=True)
                self._comm.Abort(3)


# --------------------------------------------------------------------------- #
# funnel mode                                                                  #
# --------------------------------------------------------------------------- #
def _funnel(comm, plan: _Plan, arrays: dict[str, Any], timeout: float, progress: bool) -> WriteStats | None:
    """Rank 0 hands out blocks on request and stores every chunk; the others compute and send.

    Blocks are dealt dynamically: a rank keeps two requests for blocks
    ahead of its work, and rank 0 computes a block itself only when no
    request or result is waiting, so the rank that also writes takes a
    smaller share and no rank idles at the end.
    """
    if comm.rank != 0:
        _funnel_worker(comm, plan, arrays, timeout)
        return None
    return _funnel_root(comm, plan, arrays, timeout, progress)


def _funnel_worker(comm, plan: _Plan, arrays: dict[str, Any], timeout: float) -> None:
    rank = comm.rank
    pending = []
    with _Watchdog(comm, 2 * timeout, "computing blocks for rank 0") as dog:  # rank 0 notices a stall first
        for _ in range(_PREFETCH):
            comm.send(None, dest=0, tag=_TAG_REQUEST)
        outstanding = _PREFETCH
        while outstanding:
            k = comm.recv(source=0, tag=_TAG_ASSIGN)
            outstanding -= 1
            if k is None:  # no blocks left (one None per outstanding request)
                continue
            comm.send(None, dest=0, tag=_TAG_REQUEST)  # keep _PREFETCH requests ahead of the work
            outstanding += 1
            j, sel = plan.blocks[k]
            try:
                payload = _encode(plan, arrays, j, sel)
            except BaseException as exc:  # report to rank 0, which aborts the job
                comm.send(f"rank {rank} failed on {_where(plan, j, sel)}: {type(exc).__name__}: {exc}\n"
                          + traceback.format_exc(), dest=0, tag=_TAG_ERROR)
                time.sleep(timeout)  # rank 0 aborts the job; never return a partial write
                raise
            header, buf = _pack(k, payload)
            comm.send(header, dest=0, tag=_TAG_BLOCK)
            pending.append((comm.Isend(buf, dest=0, tag=_TAG_DATA), buf))  # keep buf alive until sent
            while len(pending) >= _MAX_IN_FLIGHT:
                pending.pop(0)[0].Wait()
            dog.tick()
        for req, _ in pending:
            req.Wait()


def _root_share(size: int, timing: list) -> float:
    """Fraction of the blocks rank 0 should compute so that it finishes with the others.

    Rank 0 computes ``x`` of ``n`` blocks and stores all ``n``; each other
    rank computes ``(n - x) / (size - 1)``.  With ``c`` seconds to compute a
    block and ``w`` to store one, equal finishing times give
    ``x / n = (1 - (size - 1) * w / c) / size``; ``c`` and ``w`` are measured
    as the write goes.
    """
    if size == 1 or not timing[2] or not timing[3]:
        return 1.0  # alone, or nothing measured yet: compute
    c, w = timing[0] / timing[2], timing[1] / timing[3]
    return max(0.0, (1.0 - (size - 1) * w / c) / size)


def _pack(k: int, payload) -> tuple[tuple, np.ndarray]:
    """A block as a small header and one contiguous buffer (sent without pickling the bytes)."""
    if isinstance(payload, np.ndarray):
        return (k, "raw", payload.shape, payload.dtype.str), np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
    sizes = [len(data) for _, _, data in payload]
    buf = np.frombuffer(b"".join(data for _, _, data in payload), np.uint8)
    return (k, "chunks", [(offset, mask) for offset, mask, _ in payload], sizes), buf


def _unpack(comm, source: int, header: tuple, inbox: np.ndarray):
    """Receive the buffer announced by ``header`` into ``inbox`` (grown if needed); ``(k, payload, inbox)``."""
    k, kind, a, b = header
    nbytes = int(np.prod(a)) * np.dtype(b).itemsize if kind == "raw" else sum(b)
    if inbox.size < nbytes:
        inbox = np.empty(max(nbytes, 2 * inbox.size), np.uint8)
    view = inbox[:nbytes]
    comm.Recv(view, source=source, tag=_TAG_DATA)
    if kind == "raw":
        return k, view.view(np.dtype(b)).reshape(a), inbox
    chunks, start = [], 0
    mv = memoryview(view)
    for (offset, mask), size in zip(a, b):
        chunks.append((offset, mask, mv[start : start + size]))
        start += size
    return k, chunks, inbox


def _funnel_root(comm, plan: _Plan, arrays: dict[str, Any], timeout: float, progress: bool) -> WriteStats:
    import h5py
    from mpi4py import MPI

    stats = WriteStats(datasets=list(plan.names))
    total = sum(_block_nbytes(plan, j, sel) for j, sel in plan.blocks)
    t0 = time.perf_counter()
    status = MPI.Status()
    with h5py.File(plan.temp, "r+") as f, progress_bar(total, progress, "nwb_dask mpi funnel") as bar:
        dsets = [f[n] for n in plan.names]

        timing = [0.0, 0.0, 0, 0]  # seconds computing, seconds storing, blocks computed, blocks stored

        def store(k: int, payload) -> None:
            t = time.perf_counter()
            _store(k, payload)
            timing[1] += time.perf_counter() - t
            timing[3] += 1

        def _store(k: int, payload) -> None:
            j, sel = plan.blocks[k]
            nbytes = _block_nbytes(plan, j, sel)
            if isinstance(payload, np.ndarray):  # the writer's HDF5 sink
                store_block(dsets[j], sel, raw=payload)
                stats.stored_bytes += nbytes
            else:
                stats.stored_bytes += store_block(dsets[j], sel, payload)
                stats.chunks += len(payload)
            stats.logical_bytes += nbytes
            bar.update(nbytes)

        n_blocks, nxt = len(plan.blocks), 0
        given = received = finished = own = 0
        inbox = np.empty(0, np.uint8)  # reused receive buffer (fresh pages are slow to touch)
        last = time.monotonic()
        while finished < (comm.size - 1) * _PREFETCH or received < given or nxt < n_blocks:
            busy = False
            while comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                source, tag = status.Get_source(), status.Get_tag()
                msg = comm.recv(source=source, tag=tag)
                if tag == _TAG_ERROR:
                    raise MPIWriteError(msg)
                if tag == _TAG_REQUEST:
                    if nxt < n_blocks:
                        comm.send(nxt, dest=source, tag=_TAG_ASSIGN)
                        nxt, given = nxt + 1, given + 1
                    else:
                        comm.send(None, dest=source, tag=_TAG_ASSIGN)
                        finished += 1
                else:  # a block's header; its bytes follow as one buffer
                    k, payload, inbox = _unpack(comm, source, msg, inbox)
                    store(k, payload)
                    received += 1
                busy = True
            if busy:
                last = time.monotonic()
                continue
            if nxt < n_blocks and own < _root_share(comm.size, timing) * (own + given + 1):
                # nothing waiting and rank 0 is below its fair share: compute a block here
                k, nxt = nxt, nxt + 1
                j, sel = plan.blocks[k]
                t = time.perf_counter()
                try:
                    payload = _encode(plan, arrays, j, sel)
                except Exception as exc:
                    raise MPIWriteError(f"rank 0 failed on {_where(plan, j, sel)}: {type(exc).__name__}: {exc}") from exc
                timing[0] += time.perf_counter() - t
                timing[2] += 1
                store(k, payload)
                own += 1
                last = time.monotonic()
                continue
            if timeout and time.monotonic() - last > timeout:
                raise MPIWriteError(f"rank 0 received no block for {timeout:g} s "
                                    f"({received} of {given} from other ranks); a rank is stuck")
            time.sleep(0.0005)
    stats.seconds = time.perf_counter() - t0
    return stats


# --------------------------------------------------------------------------- #
# collective mode                                                              #
# --------------------------------------------------------------------------- #
def _collective(comm, plan: _Plan, arrays: dict[str, Any], timeout: float, progress: bool) -> WriteStats | None:
    import h5py
    from mpi4py import MPI

    if not h5py.get_config().mpi:
        raise MPIWriteError("mode='collective' needs h5py built with parallel HDF5 "
                            "(scripts/install-parallel-h5py.sh); use mode='funnel'")
    rank, size = comm.rank, comm.size
    t0 = time.perf_counter()
    stats = WriteStats(datasets=list(plan.names))
    with h5py.File(plan.temp, "r+", driver="mpio", comm=comm) as f, \
            _Watchdog(comm, timeout, "in collective writes") as dog:
        for j, name in enumerate(plan.names):
            dset = f[name]
            blocks = [sel for jj, sel in plan.blocks if jj == j]
            mine = blocks[rank::size]
            for r in range(math.ceil(len(blocks) / size)):
                sel = mine[r] if r < len(mine) else None
                data, error = None, ""
                if sel is not None:
                    try:
                        data = _compute(plan, arrays, j, sel)
                    except Exception as exc:
                        error = f"rank {rank} failed on {_where(plan, j, sel)}: {type(exc).__name__}: {exc}"
                errors = [e for e in comm.allgather(error) if e]  # agree before the collective call
                if errors:
                    raise MPIWriteError("; ".join(errors))
                _write_collective(dset, sel, data)
                if data is not None:
                    stats.logical_bytes += data.nbytes
                dog.tick()
    stats.logical_bytes = comm.allreduce(stats.logical_bytes, op=MPI.SUM)
    stats.seconds = time.perf_counter() - t0
    return stats if rank == 0 else None


def _write_collective(dset, selection: tuple | None, data: np.ndarray | None) -> None:
    """One collective H5Dwrite: this rank's block, or an empty selection."""
    import h5py

    with dset.collective:
        if selection is not None:
            dset[selection] = data
            return
        # h5py skips zero-size writes, so join the collective call through the low-level API.
        fspace = dset.id.get_space()
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,))
        mspace.select_none()
        dset.id.write(mspace, fspace, np.zeros(1, dset.dtype), dxpl=dataset_xfer_plist(dset))


# --------------------------------------------------------------------------- #
# entry point                                                                  #
# --------------------------------------------------------------------------- #
def write(
    data: Any,
    path: str | os.PathLike,
    *,
    comm: Any = None,
    mode: Mode = "auto",
    codec: CodecSpec = "gzip",
    chunks: ChunksArg = "auto",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    timeout: float = 600.0,
    progress: bool = False,
) -> WriteStats | None:
    """Write an NWBFile or a set of datasets from all MPI ranks (call it on every rank).

    Parameters
    ----------
    data : pynwb.NWBFile or mapping of str to array
        The same on every rank (each rank computes its share of the blocks
        from its own copy).  An ``NWBFile``'s large datasets are given as
        :class:`~nwb_dask.io.DaskDataIO` (codec and chunks taken from it); a
        mapping goes from dataset path (e.g. ``"/acquisition/data"``) to a
        dask array or any sliceable array with ``shape`` and ``dtype``
        (numpy, ``np.memmap``, h5py, zarr), written as a plain HDF5 file.
    path : str or PathLike
        Output file; appears atomically when every rank has finished.
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    mode : {"auto", "funnel", "collective"}
        ``"auto"``: collective where h5py has parallel HDF5, else funnel.
    codec, chunks
        For a mapping: compression and chunk shape of every dataset.
    block_bytes : int
        Largest block a rank computes at once.
    timeout : float
        Seconds without progress after which the job is aborted (0: never).
    progress : bool
        Progress bar on rank 0 (funnel mode).

    Returns
    -------
    WriteStats or None
        On rank 0; None on the other ranks.

    Raises
    ------
    MPIWriteError
        A rank failed; the message names it, the dataset and the block.
    ValueError
        Bad ``mode``, or a mode this installation lacks.
    """
    comm = _comm(comm)
    if mode == "auto":
        mode = "collective" if "collective" in available_modes() else "funnel"
    if mode not in ("funnel", "collective"):
        raise ValueError(f"mode must be 'auto', 'funnel' or 'collective', got {mode!r}")
    if mode == "collective" and "collective" not in available_modes():
        raise ValueError("mode='collective' needs h5py built with parallel HDF5 "
                         "(scripts/install-parallel-h5py.sh); this h5py has no MPI support, use mode='funnel'")
    from nwb_dask.atomic import AtomicOutput, check_output

    target = Path(path).absolute()
    plan: _Plan | None = None
    atomic: AtomicOutput | None = None  # rank 0's temporary file (fsynced, renamed; removed on error or SIGTERM)
    if comm.rank == 0:
        atomic = AtomicOutput(target)
        temp = atomic.temp
        try:
            check_output(target, overwrite=True, tool="nwb_dask.mpi.write")  # nwb_dask.atomic's output checks
            plan = _structure(data, str(temp), codec, chunks, block_bytes, target)
        except BaseException as exc:
            atomic.discard()
            plan = _Plan(temp=str(temp), error=f"rank 0 could not create {target}: {type(exc).__name__}: {exc}")
            comm.bcast(plan, root=0)
            raise
    plan = comm.bcast(plan, root=0)
    if plan.error is not None:
        raise MPIWriteError(plan.error)
    try:
        if isinstance(data, Mapping):
            arrays = {("/" + k.lstrip("/")): _as_dask(v, k, block_bytes) for k, v in data.items()}
        else:
            arrays = {k: v.array for k, v in _nwb_arrays(data).items()}
        # a planned block may span several of the array's blocks, which dask concatenates (promoting mixed dtypes)
        arrays = {k: checked_array(v, k) for k, v in arrays.items()}
        missing = [n for n in plan.names if n not in arrays]
        if missing:
            raise MPIWriteError(f"rank {comm.rank} has no data for {missing}: every rank must build the same datasets")
        fill = _funnel if mode == "funnel" else _collective
        stats = fill(comm, plan, arrays, timeout, progress)
        ok = comm.allreduce(1, op=_min())
    except MPIWriteError as exc:
        if atomic is not None:
            atomic.discard()
        if mode == "funnel":  # the other ranks may be blocked sending: end the job
            print(f"nwb_dask.mpi: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)  # let mpiexec forward the message before MPI_Abort tears the job down
            comm.Abort(1)
        raise
    except BaseException as exc:
        if atomic is not None:
            atomic.discard()
        print(f"nwb_dask.mpi: rank {comm.rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # let mpiexec forward the message before MPI_Abort tears the job down
        comm.Abort(1)
        raise
    if atomic is not None:
        if ok:
            atomic.commit()
        else:  # pragma: no cover - a rank failed without raising here
            atomic.discard()
    comm.Barrier()
    return stats


def _min():
    from mpi4py import MPI

    return MPI.MIN

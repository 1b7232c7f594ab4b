"""The one encode step and what it produces: a checked block split into HDF5 chunks, encoded, and sent back.

:func:`encode_chunks` is the step every writer runs (the engine's workers,
MPI ranks, the live writer through :func:`encode_block`, the Zarr sink);
:func:`encode_task` is the engine's default worker step and returns an
:class:`EncodedBlock`.  :mod:`nwb_dask.engine` re-exports these names, where
the architecture page lists them.

An :class:`EncodedBlock` that crosses a process boundary with pickle
protocol 5 (distributed's serialisation) sends its chunks' bytes out of band
(:meth:`EncodedBlock.__reduce_ex__`): a pickle of a few hundred bytes plus
the chunks as frames, with no copy on the worker and, in the writer, chunks
that are views of the received buffer.  Pickled in band, as a list of
``bytes``, every block was copied into the pickle stream, which distributed
then scanned whole for ``b"__main__"`` (7 ms per 11.8 MB of gzip chunks; the
profile of the distributed path is in :func:`nwb_dask.engine.run_block_tasks`).

On the client's own host a worker hands its chunks over in shared memory
instead (:func:`shared_blocks`, :func:`spill_to_shared`, :func:`load_shared`):
one file per block in a per-write tmpfs directory, only its table on the wire.
Files are recycled within a write (:class:`SharedLease`): their pages stay
allocated, so a worker's write neither allocates nor zeroes them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.chunking import chunk_offsets
from nwb_dask.codecs import Codec, pad_chunk

__all__ = ["EncodedBlock", "SharedBlocks", "checked_task_block", "encode_block", "encode_chunks", "encode_task",
           "bound_heap_growth", "host_identity", "load_shared", "SharedLease", "shared_blocks", "shm_enabled", "spill_to_shared", "SHM_ROOT"]


@dataclass
class EncodedBlock:
    """A finished block: its chunks' stored bytes, or the raw block when ``codec`` is None.

    ``chunks`` is a list of ``(offset, filter_mask, bytes)``; after a trip
    through pickle protocol 5 (a cluster worker's result) each ``bytes`` is a
    ``memoryview`` of the received buffer (:meth:`__reduce_ex__`).  A
    worker-side sink returns it without chunks, with ``stored`` the bytes it
    stored.
    """

    key: Any
    selection: tuple
    nbytes: int
    chunks: list = field(default_factory=list)  # [(offset, filter_mask, bytes or memoryview)]
    raw: np.ndarray | None = None
    stored: int | None = None
    n_chunks: int = 0
    #: (file, table) when the chunks wait in a same-host shared-memory file (:func:`spill_to_shared`):
    #: table rows (*offset, filter_mask, start, size); :func:`load_shared` turns it back into ``chunks``
    shared: tuple | None = None

    @property
    def stored_bytes(self) -> int:
        if self.stored is not None:
            return self.stored
        if self.shared is not None:
            return int(self.shared[1][:, -1].sum())
        return sum(memoryview(c[2]).nbytes for c in self.chunks) if self.raw is None else self.nbytes

    def __reduce_ex__(self, protocol):
        """Pickle protocol 5 (distributed's) sends each chunk's bytes out of band: no copy of them, and a small pickle.

        The chunks come back as ``memoryview`` objects over the received
        buffers, so the writer stores them without copying either.  Other
        protocols pickle the dataclass as it is.
        """
        chunks = self.chunks
        if protocol < 5 or not chunks:
            return object.__reduce_ex__(self, protocol)
        import pickle

        ndim = len(chunks[0][0])
        table = np.array([(*offset, mask) for offset, mask, _ in chunks], np.int64).reshape(len(chunks), ndim + 1)
        buffers = [pickle.PickleBuffer(data) for _, _, data in chunks]
        return (_rebuild, (self.key, self.selection, self.nbytes, table, buffers, self.raw, self.stored, self.n_chunks))

    def __sizeof__(self) -> int:
        # distributed's memory accounting and its offload of large messages use dask.sizeof,
        # which falls back to sys.getsizeof: count the bytes the result holds
        held = (0 if self.raw is None else self.raw.nbytes) + sum(memoryview(c[2]).nbytes for c in self.chunks)
        return object.__sizeof__(self) + held


def _rebuild(key, selection, nbytes, table, buffers, raw, stored, n_chunks) -> EncodedBlock:
    """Unpickle an :class:`EncodedBlock` sent with its chunks out of band: each chunk a view of its received buffer."""
    chunks = [(tuple(row[:-1]), row[-1], memoryview(b)) for row, b in zip(table.tolist(), buffers)]
    return EncodedBlock(key, selection, nbytes, chunks, raw, stored, n_chunks)


def encode_chunks(block: np.ndarray, selection: Sequence[slice], chunk_shape: Sequence[int], codec: Codec | None,
                  fill_value: Any = 0) -> list[tuple[tuple[int, ...], int, bytes]]:
    """The one encode step: split a checked block into chunks, pad edge chunks, encode each.

    Parameters
    ----------
    block : numpy.ndarray
        Already checked (:func:`encode_block` checks, then calls this).
    selection : sequence of slice
        The block's place in the dataset; starts on chunk boundaries.
    chunk_shape : sequence of int
    codec : Codec or None
        ``None``: each padded chunk's raw bytes, filter mask 0 (a Zarr array
        without compression).
    fill_value : scalar
        Padding of edge chunks.

    Returns
    -------
    list of (offset, filter_mask, bytes)
    """
    if codec is None:
        block = np.ascontiguousarray(block)
        return [(offset, 0, pad_chunk(block[local], chunk_shape, fill_value).tobytes())
                for offset, local in chunk_offsets(selection, chunk_shape)]
    return [(offset, *codec.encode(pad_chunk(block[local], chunk_shape, fill_value)))
            for offset, local in chunk_offsets(selection, chunk_shape)]


def encode_block(
    block: np.ndarray,
    selection: Sequence[slice],
    chunk_shape: Sequence[int],
    codec: Codec,
    fill_value: Any = 0,
    dtype: Any = None,
    label: str | None = None,
) -> list[tuple[tuple[int, ...], int, bytes]]:
    """Check a computed block, split it into HDF5 chunks and encode each one (what MPI ranks and live call).

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
    return encode_chunks(block, selection, chunk_shape, codec, fill_value)


def checked_task_block(block, declared, task) -> np.ndarray:
    """A computed block checked against its declared dtype and its task's shape (the one rule of every write path).

    ``task`` is a :class:`nwb_dask.engine.BlockTask`.
    """
    selection = task.selection
    expected = tuple(s.stop - s.start for s in selection)
    return checked_block(block, declared, shape=expected, stored=task.dtype, selection=selection,
                         label=block_label(task.name, selection, task.index))


def encode_task(block, declared, task) -> EncodedBlock:
    """The default worker step: check a computed block (:func:`checked_task_block`), then encode it.

    ``task`` is the block's :class:`nwb_dask.engine.BlockTask` without its
    array (the distributed path sends the computed block alongside).
    ``task.codec`` None keeps the raw block, for filters that must run inside
    HDF5.
    """
    block = checked_task_block(block, declared, task)
    result = EncodedBlock(task.key, task.selection, int(block.nbytes))
    if task.codec is None:
        result.raw = block
    else:
        result.chunks = encode_chunks(block, task.selection, task.chunk_shape, task.codec, task.fill_value)
        result.n_chunks = len(result.chunks)
    return result


# --------------------------------------------------------------------------- #
# same-host handover through shared memory (issue 19)                          #
# --------------------------------------------------------------------------- #
# Hand-written: neither distributed nor dask has a shared-memory transport; on
# one host every result's bytes otherwise go worker -> socket -> client, with
# both event loops in the way.  A worker on the client's host writes a block's
# chunks into one file in a per-write tmpfs directory and returns only the
# table; the client maps the file, stores the chunks from it and unlinks it.
#
# A/B in one run (NWB_DASK_SHM=off: the network), 1.6 GB persisted on a
# LocalCluster of 2 workers, 2 shared cores, LocalCluster/threads best and median:
# * benchmarks/shm_handover.py --rounds 5 (one cluster, modes interleaved),
#   load 1.8-2.0: gzip 0.71 -> 0.80 and 0.72 -> 0.79, client CPU-s 1.71 ->
#   1.38, workers 4.64 -> 4.29 (threads: 4.25 in all); load 5-6: gzip 0.67 ->
#   0.79 / 0.62 -> 0.79, blosc 0.63 -> 0.69 / 0.60 -> 0.69;
# * benchmarks/write.py --persist --repeat 3 (NWB files, a cluster per case),
#   load 1.8-2.2: gzip 0.68 -> 0.70 (medians 418 -> 416 MB/s: a tie), blosc
#   0.49 -> 0.60 (561 -> 693); --repeat 5, load 5.1-5.5: gzip 0.86 -> 0.85,
#   medians 266 -> 306.
# Reading the file into a new buffer instead of mapping it was no better than
# the network and behind mapping (shm_handover.py, load 5: 0.77 / 0.68 against
# 0.67 / 0.69 and mapped 0.96 / 0.91; write.py, load 4.5-5: best 0.73 against
# 0.76 and mapped 0.81).

#: Where the per-write directories live (a tmpfs on Linux).
SHM_ROOT = "/dev/shm"
_PREFIX = "nwb_dask-"


_BOOT_ID: list = []  # read once per process


def host_identity() -> tuple | None:
    """This machine as a worker and the client compare it: hostname and kernel boot id (None: not Linux)."""
    import socket

    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append(None)
    return None if _BOOT_ID[0] is None else (socket.gethostname(), _BOOT_ID[0])


@dataclass(frozen=True)
class SharedBlocks:
    """What a worker task receives to hand its chunks over through ``directory`` (created by the client)."""

    directory: str
    host: tuple


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_tree(path: str) -> None:
    """Remove a per-write directory, also when a late worker adds a file while it goes."""
    import shutil

    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return


_LOCK = ".lock"


def _remove_stale(root: str) -> None:
    """Remove directories left by writers that died without cleaning up (SIGKILL).

    A writer holds an exclusive ``flock`` on ``<dir>/.lock`` for as long as
    its directory lives (:func:`shared_blocks`); the kernel drops it when the
    writer dies, however it dies.  A directory is removed only when its lock
    can be taken: a pid test would call another pid namespace's live writer
    (containers sharing ``/dev/shm``) dead, and keep a dead one whose pid was
    reused.  A directory without a lock file (an older nwb_dask) is removed
    when its pid is not alive here.
    """
    import fcntl

    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not (len(parts) == 3 and parts[0] + "-" == _PREFIX and parts[1].isdigit()):
            continue
        path = os.path.join(root, name)
        try:
            fd = os.open(os.path.join(path, _LOCK), os.O_RDONLY)
        except FileNotFoundError:
            if not _pid_alive(int(parts[1])):
                _remove_tree(path)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its writer is alive
            os.close(fd)
            continue
        try:
            _remove_tree(path)
        finally:
            os.close(fd)


def shm_enabled() -> bool:
    """Whether same-host workers hand chunks over in shared memory: ``NWB_DASK_SHM`` "on" (default) or "off"."""
    mode = os.environ.get("NWB_DASK_SHM", "on")
    if mode not in ("on", "off"):
        raise ValueError(f"NWB_DASK_SHM={mode!r}: use on or off")
    return mode == "on"


@contextlib.contextmanager
def shared_blocks(enabled: bool | None = None, root: str = SHM_ROOT) -> Iterator[SharedBlocks | None]:
    """A per-write directory ``<root>/nwb_dask-<pid>-<token>`` for workers on this host, removed on the way out.

    Yields None (results travel over the network as before) when disabled
    (``enabled`` None: :func:`shm_enabled`), when ``root`` is not there or
    the directory cannot be made.  A directory of a writer that died
    without removing its own (SIGKILL) is removed here, by its pid.  The
    directory and whatever a worker left in it (a killed worker's half-written
    file, a result never fetched) is removed however the write ends.
    """
    host = host_identity() if (shm_enabled() if enabled is None else enabled) else None
    if host is None or not os.path.isdir(root):
        yield None
        return
    import secrets

    import fcntl

    _remove_stale(root)
    token = secrets.token_hex(8)
    # Made under a name the sweep ignores, locked, then renamed into view: no other writer's
    # sweep can see it unlocked.
    fresh = os.path.join(root, f".{_PREFIX}{token}.new")
    path = os.path.join(root, f"{_PREFIX}{os.getpid()}-{token}")
    lock = None
    try:
        os.mkdir(fresh, 0o700)
        lock = os.open(os.path.join(fresh, _LOCK), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(fresh, path)
    except OSError:
        if lock is not None:
            os.close(lock)
        _remove_tree(fresh)
        yield None
        return
    try:
        yield SharedBlocks(path, host)
    finally:
        try:
            _remove_tree(path)
        finally:
            os.close(lock)


def _write_all(fd: int, buffers: list) -> None:
    """``os.writev`` until every buffer is written (it may write less, and takes at most IOV_MAX buffers)."""
    views = [memoryview(b).cast("B") for b in buffers]
    views = [v for v in views if v.nbytes]
    limit = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
    while views:
        n = os.writev(fd, views[:limit])
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]


#: Name prefix of a write's recycled files: stored blocks' files the client gave back (:meth:`SharedLease.release`).
_FREE = "free-"


def _claim_file(directory: str, path: str) -> int:
    """Open ``path`` for a block's chunks: a recycled file of ``directory`` renamed to it, else a new file.

    The rename is atomic, so two workers never claim the same file; a
    claimed file is written from offset 0 and may be longer than the block
    (the table says where each chunk is).  Recycled pages are already
    allocated: writing into a fresh tmpfs file allocated and zeroed every
    page, and the client's unlink freed them again (benchmarks/shm_handover.py).
    """
    try:
        free = [n for n in os.listdir(directory) if n.startswith(_FREE)]
    except OSError:
        free = []
    for name in free:
        try:
            os.rename(os.path.join(directory, name), path)
        except OSError:  # another worker took it first
            continue
        try:
            return os.open(path, os.O_WRONLY)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def spill_to_shared(result: EncodedBlock, shm: SharedBlocks | None) -> EncodedBlock:
    """Worker side: move a result's chunks into one file of the client's directory, if it is this host's.

    Taken only when the host identity is the client's and that exact
    directory exists; any error writing the file (no space on the tmpfs,
    permissions, the directory removed meanwhile) removes the partial file
    and returns ``result`` unchanged: its bytes then travel over the network.
    Each call writes a new file name, so a retried task never reuses a file
    a killed attempt left half-written.
    """
    if shm is None or not result.chunks or host_identity() != shm.host or not os.path.isdir(shm.directory):
        return result
    import uuid


    chunks = result.chunks
    sizes = np.array([memoryview(d).nbytes for _, _, d in chunks], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    table = np.array([(*offset, mask) for offset, mask, _ in chunks], np.int64).reshape(len(chunks), -1)
    table = np.column_stack([table, starts, sizes])
    path = os.path.join(shm.directory, uuid.uuid4().hex)
    try:
        fd = _claim_file(shm.directory, path)
    except OSError:
        return result
    try:
        try:
            _write_all(fd, [d for _, _, d in chunks])
        finally:
            os.close(fd)
    except OSError:  # ENOSPC, EACCES, EIO: the network path instead, nothing left behind
        with contextlib.suppress(OSError):
            os.unlink(path)
        return result
    return EncodedBlock(result.key, result.selection, result.nbytes, [], result.raw, result.stored, result.n_chunks,
                        shared=(path, table))


class SharedLease:
    """The client's mapping of one handed-over file, held until its block is stored.

    :meth:`release` ends it: every chunk view is released first, so a
    reference kept past the store fails loudly (``ValueError``) instead of
    reading another block's bytes, then the mapping is closed and the file
    given back to the write's pool for a worker to reuse, or unlinked.  A view
    something else still exports (``numpy.frombuffer``) keeps the mapping
    alive: that file is unlinked, never reused.
    """

    def __init__(self, path: str, mapping, base: memoryview, views: list):
        self.path, self._mapping, self._base, self._views = path, mapping, base, views

    def release(self, recycle: bool = True, pool_size: int = 8) -> bool:
        """Unmap and give the file back (``recycle`` and fewer than ``pool_size`` free files) or unlink it.

        Returns whether the file went back to the pool.  Idempotent.
        """
        if self._base is None:
            return False
        import uuid

        views, base, mapping = self._views, self._base, self._mapping
        self._views, self._base, self._mapping = [], None, None
        try:
            for v in views:
                v.release()
            base.release()
            if mapping is not None:
                mapping.close()
        except BufferError:  # still exported elsewhere: its pages must never be rewritten
            recycle = False
        directory = os.path.dirname(self.path)
        if recycle:
            try:
                recycle = sum(n.startswith(_FREE) for n in os.listdir(directory)) < pool_size
            except OSError:
                recycle = False
        try:
            if recycle:
                os.rename(self.path, os.path.join(directory, _FREE + uuid.uuid4().hex))
                return True
            os.unlink(self.path)
        except OSError:  # the directory is going (the write ended): nothing to give back
            pass
        return False


def load_shared(result: EncodedBlock, lease: bool = False):
    """Client side: a result's chunks as views of a read-only mapping of its shared-memory file.

    Without ``lease`` the file is unlinked here and its pages stay allocated
    until the result is dropped (the caller has stored it), so the window's
    count of the block's bytes still holds.  With ``lease`` returns
    ``(block, SharedLease)``: the file stays until the lease is released,
    which recycles it.
    Mapping measured cheaper than reading the file into a new buffer
    (``benchmarks/shm_handover.py``: the read's copy and fresh pages cost
    more than the socket it replaced).
    """
    import mmap

    path, table = result.shared
    size = int(table[:, -2:].sum(axis=1).max()) if len(table) else 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise OSError(exc.errno, f"nwb_dask: the encoded chunks of block {result.selection} of dataset key "
                                 f"{result.key!r} are gone from {path}: {os.strerror(exc.errno or errno.EIO)}") from exc
    mapping = None
    try:
        found = os.fstat(fd).st_size
        if found < size:  # a recycled file may be longer than the block; never shorter
            raise OSError(errno.EIO, f"nwb_dask: {path} holds {found} bytes, block {result.selection} of dataset key "
                                     f"{result.key!r} wrote {size}")
        if size:
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                prot=mmap.PROT_READ)
        buf = memoryview(mapping) if size else memoryview(b"")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    if not lease:
        os.unlink(path)
    ndim = table.shape[1] - 3
    chunks = [(tuple(row[:ndim]), row[ndim], buf[row[ndim + 1]:row[ndim + 1] + row[ndim + 2]])
              for row in table.tolist()]
    block = EncodedBlock(result.key, result.selection, result.nbytes, chunks, result.raw, result.stored,
                         result.n_chunks)
    if not lease:
        return block
    return block, SharedLease(path, mapping, buf, [c[2] for c in chunks])


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
    global _HEAP_BOUNDED
    if _HEAP_BOUNDED or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    _HEAP_BOUNDED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):  # not glibc
        pass

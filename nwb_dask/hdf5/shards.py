"""Sharded writes, the HDF5 side: part files written by one worker each, and raw chunk copies between datasets.

A sharded dataset (:mod:`nwb_dask.nwb.shards`) is split along axis 0, at
chunk boundaries, into contiguous row ranges; range ``k`` lives in its own
HDF5 *part file* holding one chunked dataset (:data:`PART_DATASET`) of the
range's shape with the whole dataset's creation properties (chunk shape,
dtype, filters, fill value: copied from the dataset hdmf created, so nothing
is re-derived).  The NWB file joins the parts with a virtual dataset.

This module is what runs where the data is stored:

* :func:`create_part` (the client): an empty part file;
* :func:`store_part_block` (a worker): the engine's worker-side sink step
  (:attr:`nwb_dask.engine.BlockTask.step`): check a computed block, encode its
  chunks and store them with direct chunk writes into the part file, through
  one open handle per part and process (:func:`part_handle`) shared by the
  worker's threads under a lock.  HDF5 files must not be written by two
  processes, so every block of a part is pinned to one worker
  (:attr:`~nwb_dask.engine.BlockTask.worker`), and the step refuses to run
  anywhere else;
* :func:`close_parts` (each worker, at the end): flush, close and ``fsync``
  the parts it holds open;
* :func:`raw_copy_plan` / :func:`copy_chunks_raw` (consolidate): a virtual
  dataset whose sources are chunked like it is copied chunk by chunk,
  without decoding (``read_direct_chunk`` -> ``write_direct_chunk``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from nwb_dask.compat import vds_unescape
from nwb_dask.engine import BlockTask, EncodedBlock, checked_task_block, encode_chunks
from nwb_dask.hdf5.write import store_block

__all__ = ["PART_DATASET", "PartTarget", "PartWorkerError", "close_parts", "copy_chunks_raw", "create_like", "create_part",
           "open_parts", "part_handle", "pipeline", "reopen_parts", "raw_copy_plan", "split_rows", "store_part_block"]

#: The dataset of a part file.
PART_DATASET = "data"


class PartWorkerError(RuntimeError):
    """A part file's block ran on another worker than the one that writes the part (or that worker was lost)."""


@dataclass(frozen=True)
class PartTarget:
    """Where a block of a sharded dataset is stored: its part file (the engine's ``BlockTask.target``).

    Attributes
    ----------
    path : str
        The part file (absolute; under the parts directory's temporary name while written).
    start : int
        The part's first row in the whole dataset (axis 0).
    worker : str or None
        Address of the one worker that writes this part (distributed); ``None``: this process.
    label : str
        The dataset and part, for messages.
    """

    path: str
    start: int
    worker: str | None
    label: str


def split_rows(rows: int, chunk_rows: int, n: int) -> list[tuple[int, int]]:
    """Axis 0 of ``rows`` rows cut into at most ``n`` contiguous ranges on chunk boundaries, near-equal in chunks.

    Fewer ranges than ``n`` when there are fewer chunks; none for 0 rows.
    """
    n_chunks = -(-rows // chunk_rows) if rows else 0
    n = max(1, min(int(n), n_chunks)) if n_chunks else 0
    edges = [min(rows, (k * n_chunks // n) * chunk_rows) for k in range(n)] + [rows]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def create_part(path: str | os.PathLike, template, rows: int, attrs: dict | None = None) -> None:
    """Create an empty part file: one dataset of ``rows`` rows with ``template``'s creation properties.

    Parameters
    ----------
    path : str or PathLike
        The new file (refused if it exists).
    template : h5py.Dataset
        The whole dataset, chunked and still empty (as hdmf creates it):
        copied by HDF5's object copy without its attributes, then shrunk to
        ``rows`` rows.  Its dtype, chunk shape, filters (with the parameters
        their ``set_local`` step filled in: recreating a dataset from the
        creation property list would run it again, e.g. bitshuffle's would
        prepend its parameters twice) and fill value are kept exactly.
    rows : int
        Rows of the part (axis 0).
    attrs : dict, optional
        Attributes of the part file's root group (what it is part of).
    """
    with h5py.File(path, "w-") as f:
        f.copy(template, PART_DATASET, without_attrs=True)
        f[PART_DATASET].resize(int(rows), axis=0)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def pipeline(dset) -> tuple:
    """A chunked dataset's filter pipeline as HDF5 stores it: ((filter id, flags, cd_values), ...)."""
    plist = dset.id.get_create_plist()
    return tuple(plist.get_filter(i)[:3] for i in range(plist.get_nfilters()))


def create_like(group, name: str, template, shape: tuple):
    """``group[name]``: a new, empty dataset of ``shape`` whose stored chunks may be ``template``'s, or None.

    The dataset gets ``template``'s creation properties (dtype, chunk shape,
    filters, fill value) and must end up with exactly its stored filter
    pipeline.  HDF5 runs each filter's ``set_local`` step again on creation:
    most filters (deflate, shuffle, blosc, zstd) store the same parameters
    again, but some prepend theirs to what they are given (bitshuffle's
    ``(0, 2)`` is stored ``(0, 4, 8, 0, 2)``, re-run ``(0, 4, 8, 0, 4, 8, 0, 2)``).
    For those the filter is given back the parameters without the prefix the
    re-run added.  If the pipeline still differs, the chunks of one would not
    be valid chunks of the other: the dataset is removed again (None: copy
    values instead).  h5py has no call to create a dataset without
    ``set_local``, hence this.
    """
    want = pipeline(template)
    plist = template.id.get_create_plist()
    for attempt in range(2):
        space = h5py.h5s.create_simple(tuple(shape), tuple(shape))
        h5py.h5d.create(group.id, name.encode(), template.id.get_type(), space, dcpl=plist).close()
        got = pipeline(group[name])
        if got == want and group[name].chunks == template.chunks:
            return group[name]
        del group[name]
        if attempt or len(got) != len(want):
            return None
        plist = template.id.get_create_plist()
        plist.remove_filter(h5py.h5z.FILTER_ALL)
        for (fid, flags, values), (_, _, again) in zip(want, got):
            extra = len(again) - len(values)
            given = values[extra:] if extra > 0 and again[extra:] == values else values
            plist.set_filter(fid, flags, given)
    return None


# --------------------------------------------------------------------------- #
# worker side: one open handle per part and process                            #
# --------------------------------------------------------------------------- #
_handles: dict[str, tuple[Any, threading.Lock]] = {}
_finished: set[str] = set()  # parts closed for good here: a late block (of a stopped write) may not reopen one
_handles_lock = threading.Lock()


def part_handle(path: str) -> tuple[Any, threading.Lock]:
    """This process's open handle of a part file (opened ``r+`` on first use: a removed part never reappears) and its lock."""
    with _handles_lock:
        if path in _finished:
            raise PartWorkerError(f"part file {path} was already closed here: the write it belongs to has ended")
        entry = _handles.get(path)
        if entry is None:
            entry = _handles[path] = (h5py.File(path, "r+"), threading.Lock())
        return entry


def open_parts() -> list[str]:
    """The part files this process holds open."""
    with _handles_lock:
        return sorted(_handles)


def close_parts(paths: list[str] | None = None) -> dict[str, str | None]:
    """Flush, close and ``fsync`` the parts this process holds open (all, or those of ``paths``), for good.

    Run on every worker at the end of a sharded write (``client.run``), and
    after a failed one (then the files are about to be removed).  ``paths``
    are not reopened here afterwards (a block still running when a stopped
    write closes its parts fails instead of writing).

    Returns
    -------
    dict
        ``{path: None}`` for each part closed here, or the error text when
        closing it failed (a full disk shows here).
    """
    with _handles_lock:
        chosen = [p for p in _handles if paths is None or p in set(paths)]
        entries = [(p, _handles.pop(p)) for p in chosen]
        _finished.update(paths or chosen)
    result: dict[str, str | None] = {}
    for path, (f, lock) in entries:
        with lock:
            try:
                f.close()
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                result[path] = None
            except Exception as exc:  # reported to the client, which fails the write naming the part
                result[path] = f"{type(exc).__name__}: {exc}"
    return result


def reopen_parts(paths: list[str]) -> None:
    """Allow parts closed by :func:`close_parts` to be opened here again (a retried write goes on with them)."""
    with _handles_lock:
        _finished.difference_update(paths)


def store_part_block(block: np.ndarray, declared, task: BlockTask) -> EncodedBlock:
    """The worker-side sink step of a sharded write: check, encode and store one block into its part file.

    The block's chunks are encoded here and written with
    ``write_direct_chunk`` at offsets local to the part; for filters only
    HDF5 runs (``task.codec`` None) the block goes through h5py.  Only the
    sizes travel back.
    """
    target: PartTarget = task.target
    if target.worker is not None:
        from distributed import get_worker

        here = get_worker().address
        if here != target.worker:  # the engine pins the task; never two writers of one HDF5 file
            raise PartWorkerError(f"{target.label}: block {task.index} ran on worker {here}, but the part file "
                                  f"{target.path} is written by worker {target.worker} only")
    block = checked_task_block(block, declared, task)
    first = task.selection[0]
    local = (slice(first.start - target.start, first.stop - target.start),) + tuple(task.selection[1:])
    f, lock = part_handle(target.path)
    if task.codec is None:
        with lock:
            stored = store_block(f[PART_DATASET], local, raw=block)
        return EncodedBlock(task.key, task.selection, int(block.nbytes), stored=stored)
    chunks = encode_chunks(block, local, task.chunk_shape, task.codec, task.fill_value)
    with lock:
        stored = store_block(f[PART_DATASET], local, chunks)
    return EncodedBlock(task.key, task.selection, int(block.nbytes), stored=stored, n_chunks=len(chunks))


# --------------------------------------------------------------------------- #
# raw chunk copies (consolidate)                                               #
# --------------------------------------------------------------------------- #
def raw_copy_plan(vds, here: str | os.PathLike) -> tuple[list[tuple[str, str, tuple]], str | None]:
    """Whether a virtual dataset can be materialised by copying its sources' chunks raw, and from where.

    It can when every mapping takes a whole source dataset that is chunked
    with the chunk shape, dtype, filters and fill value of the first, and
    places it on chunk boundaries of that chunk shape, and every source whose
    block does not end at the dataset's end along an axis holds whole chunks
    there (so no chunk of the result mixes two sources).

    Parameters
    ----------
    vds : h5py.Dataset
        A virtual dataset.
    here : str or PathLike
        The directory relative source file names are resolved against (the
        virtual dataset's file's directory, as HDF5 resolves them).

    Returns
    -------
    (sources, reason)
        ``sources``: ``[(file, dataset, offset)]`` (absolute file, the offset
        of its block in ``vds``), and ``reason`` None; or ``[]`` and why not.
    """
    sources: list[tuple[str, str, tuple]] = []
    first = None
    covered = 0
    boxes: list[tuple[tuple, tuple]] = []  # (lo, hi exclusive) of each mapping in the dataset
    for vmap in vds.virtual_sources():
        vspace, fname, dname, sspace = vmap.vspace, vds_unescape(vmap.file_name), vmap.dset_name, vmap.src_space
        path = vds.file.filename if fname == "." else os.path.join(here, fname)
        if vspace.get_select_type() != h5py.h5s.SEL_HYPERSLABS or not vspace.is_regular_hyperslab():
            return [], f"mapping of {fname}:{dname} is not one block"
        lo, hi = vspace.get_select_bounds()
        block = tuple(int(b) - int(a) + 1 for a, b in zip(lo, hi))
        if vspace.get_select_npoints() != int(np.prod(block)):
            return [], f"mapping of {fname}:{dname} is not one block"
        try:
            with h5py.File(path, "r") as f:
                src = f[dname]
                whole = sspace.get_select_type() == h5py.h5s.SEL_ALL or (
                    sspace.get_select_npoints() == src.size and tuple(sspace.shape) == tuple(src.shape))
                if tuple(src.shape) != block or not whole:
                    return [], f"{fname}:{dname} is not mapped whole"
                if src.chunks is None:
                    return [], f"{fname}:{dname} is not chunked"
                kind = (tuple(src.chunks), src.dtype, pipeline(src), np.asarray(src.fillvalue).tobytes())
        except (OSError, KeyError) as exc:
            return [], f"cannot open {path}:{dname} ({exc})"
        if first is None:
            first = kind
        elif kind != first:
            return [], f"{fname}:{dname} is chunked, typed or filtered unlike the first source"
        chunks = first[0]
        if any(c > n for c, n in zip(chunks, vds.shape)):
            return [], f"the sources' chunks {chunks} are larger than the dataset {vds.shape}"
        if first[1] != vds.dtype:
            return [], f"sources' dtype {first[1]} differs from the virtual dataset's {vds.dtype}"
        for axis, (a, n, c, total) in enumerate(zip(lo, block, chunks, vds.shape)):
            if a % c or (a + n != total and n % c):
                return [], f"{fname}:{dname} is not placed on chunk boundaries (axis {axis})"
        sources.append((os.path.abspath(path), dname, tuple(int(a) for a in lo)))
        covered += int(np.prod(block))
        boxes.append((tuple(int(a) for a in lo), tuple(int(a) + n for a, n in zip(lo, block))))
    if not sources:
        return [], "no sources"
    overlap = _first_overlap(boxes)
    if overlap is not None:  # HDF5 lets the later mapping win where two overlap; a chunk copy would not say which
        (i, j) = overlap
        return [], f"the mappings of {sources[i][0]}:{sources[i][1]} and {sources[j][0]}:{sources[j][1]} overlap"
    if covered != vds.size:  # disjoint boxes inside the dataset: they cover it exactly when their sizes add up
        return [], "the sources leave parts of the dataset to the fill value"
    return sources, None


def _first_overlap(boxes: list[tuple[tuple, tuple]]) -> tuple[int, int] | None:
    """The first pair (i, j), i < j, of half-open boxes that share an element, or None."""
    if len(boxes) < 2:
        return None
    lo = np.array([b[0] for b in boxes], dtype=np.int64)
    hi = np.array([b[1] for b in boxes], dtype=np.int64)
    empty = np.any(hi <= lo, axis=1)
    for i in range(len(boxes) - 1):  # O(n^2 d) in numpy: fine for the thousands of mappings a VDS holds
        if empty[i]:
            continue
        hit = np.all((lo[i + 1:] < hi[i]) & (lo[i] < hi[i + 1:]), axis=1) & ~empty[i + 1:]
        if hit.any():
            return i, i + 1 + int(np.argmax(hit))
    return None


def copy_chunks_raw(src, dst, offset: tuple) -> tuple[int, int]:
    """Copy every stored chunk of ``src`` into ``dst`` at ``offset``, as stored (no decode, no encode).

    Chunks ``src`` never stored stay unstored in ``dst`` (both read as the
    same fill value: :func:`raw_copy_plan` checks it).  Returns (chunks, bytes).
    """
    offsets: list[tuple] = []
    if hasattr(src.id, "chunk_iter"):  # one pass over the chunk index (get_chunk_info(i) walks it for each i)
        src.id.chunk_iter(lambda info: offsets.append(info.chunk_offset))
    else:  # pragma: no cover - HDF5 < 1.12.3
        offsets = [src.id.get_chunk_info(i).chunk_offset for i in range(src.id.get_num_chunks())]
    read, write = src.id.read_direct_chunk, dst.id.write_direct_chunk
    nbytes = 0
    for chunk_offset in offsets:
        mask, data = read(chunk_offset)
        write(tuple(int(o) + int(s) for o, s in zip(chunk_offset, offset)), data, mask)
        nbytes += len(data)
    return len(offsets), nbytes

"""The parallel writer: dask arrays into HDF5 datasets with direct chunk writes.

Chunks are computed *and compressed* on the dask workers (see
:mod:`nwb_dask.engine`, the one write engine); this process is the sink: it only stores finished bytes with
``dset.id.write_direct_chunk``.  Several datasets are written together: their
blocks are interleaved, so all large datasets of a file progress at once.

Datasets whose filters nwb_dask cannot run outside HDF5 (fletcher32,
scaleoffset, big-endian data, ...) still get their blocks computed in
parallel, and are written through h5py's normal path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from nwb_dask.blocks import checked_array
from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, align_to_chunks, block_selections
from nwb_dask.codecs import Codec, CodecSpec, chunk_codec, codec as make_codec, codec_from_dataset, same_pipeline
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES, BlockTask, WriteStats, bound_heap_growth, interleave, run_block_tasks

__all__ = ["WriteJob", "WriteStats", "WriteError", "plan_write", "store_block", "write_arrays", "write_dask_array"]


class WriteError(ValueError):
    """A dask array does not fit the HDF5 dataset it is to be written into."""


@dataclass
class WriteJob:
    """One dask array bound for one existing, chunked HDF5 dataset.

    Build with :func:`plan_write`.
    """

    dset: Any
    array: Any
    codec: Codec | None
    chunk_shape: tuple
    name: str

    def tasks(self, key: int) -> Iterator[BlockTask]:
        fill = self.dset.fillvalue if self.codec is not None else 0
        stored = None if self.dset.dtype == self.array.dtype else self.dset.dtype
        for idx, selection in block_selections(self.array.chunks):
            yield BlockTask(key, selection, self.array.blocks[idx], self.chunk_shape, self.codec, fill,
                            name=self.name, index=idx, dtype=stored)




def plan_write(
    array,
    dset,
    codec: CodecSpec = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    name: str | None = None,
) -> WriteJob:
    """Check a dask array against an existing dataset and plan its blocks.

    Parameters
    ----------
    array : dask.array.Array
        The data; cast to the dataset's dtype if they differ (as numpy's
        ``astype`` casts).  Its blocks must compute the dtype it declares, or
        values that dtype holds exactly: a block that does not is refused
        with :class:`~nwb_dask.blocks.BlockDtypeError` naming the dataset and
        the block (:func:`~nwb_dask.blocks.checked_block`).
    dset : h5py.Dataset
        A chunked dataset of the same shape, created with the codec's filters
        (e.g. by pynwb/hdmf, or ``create_dataset(..., **codec.dataset_kwargs())``).
    codec : codec spec, optional
        Codec to encode with; by default the one matching the dataset's
        filters (:func:`~nwb_dask.codecs.codec_from_dataset`).  It must produce
        bytes the declared filters decode.
    block_bytes : int
        Upper bound on one block (a task's output before encoding).
    name : str, optional
        Dataset name for messages (default: the HDF5 path).

    Returns
    -------
    WriteJob

    Raises
    ------
    WriteError
        Shape mismatch, a contiguous dataset, or a codec that does not match
        the dataset's filters; the message names the dataset.
    """
    from nwb_dask.blocks import as_dask_array

    name = name or dset.name
    array = as_dask_array(array, name=name)
    if tuple(array.shape) != tuple(dset.shape):
        raise WriteError(f"dataset {name!r}: data shape {tuple(array.shape)} does not match the dataset's {dset.shape}")
    if dset.chunks is None:
        raise WriteError(f"dataset {name!r} is contiguous; the parallel writer needs a chunked dataset")
    declared = codec_from_dataset(dset)
    if codec is not None:
        chosen = make_codec(codec)
        if not same_pipeline(declared, chosen):
            raise WriteError(
                f"dataset {name!r}: codec {chosen!r} does not match the dataset's filters "
                f"{_filters(dset)}; create the dataset with **codec.dataset_kwargs()"
            )
    else:
        chosen = declared
    chosen = chunk_codec(dset, chosen)  # None: HDF5 converts and filters these itself
    chunk_shape = tuple(dset.chunks)
    aligned = align_to_chunks(array, chunk_shape, block_bytes)
    if aligned.chunks != array.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
        aligned = align_to_chunks(checked_array(array, name), chunk_shape, block_bytes)
    return WriteJob(dset=dset, array=aligned, codec=chosen, chunk_shape=chunk_shape, name=name)


def _filters(dset) -> list:
    plist = dset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def store_block(dset, selection: tuple, chunks: Sequence = (), raw=None) -> int:
    """The HDF5 sink (the writer's and the MPI funnel's): store one block's encoded chunks, or its raw values.

    Parameters
    ----------
    dset : h5py.Dataset
    selection : tuple of slice
        The block's place (for ``raw``).
    chunks : sequence of (offset, filter_mask, bytes-like)
        Encoded chunks, stored with ``write_direct_chunk`` (from a cluster
        worker, ``memoryview`` objects of the received buffer: stored
        without a copy).
    raw : numpy.ndarray, optional
        The block, for filters only HDF5 runs: written through h5py.

    Returns
    -------
    int
        Bytes stored (the raw block's size for ``raw``, as HDF5's filters' output is not known here).
    """
    if raw is not None:
        dset[selection] = raw
        return int(raw.nbytes)
    write = dset.id.write_direct_chunk
    stored = 0
    for offset, mask, data in chunks:
        write(offset, data, mask)
        stored += len(data)
    return stored


def write_arrays(
    jobs: Sequence[WriteJob],
    *,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    scheduler: Any = None,
    progress: bool = True,
) -> WriteStats:
    """Write several planned jobs at once through the active dask scheduler.

    Parameters
    ----------
    jobs : sequence of WriteJob
    max_inflight_bytes : int
        Budget of raw bytes computed/encoded but not yet stored; the writing
        process's memory stays flat as data grows.
    scheduler : str, Client or None
        See :func:`nwb_dask.engine.active_scheduler`.
    progress : bool
        A tqdm bar in bytes (MB/s) for writes over 64 MiB.

    Returns
    -------
    WriteStats

    Raises
    ------
    Exception
        The first failing task's exception, unchanged, with a note naming
        the dataset and block.  The datasets concerned are left in the file,
        partly written; :class:`~nwb_dask.io.NWBDaskIO` removes the whole
        file in that case.
    """
    stats = WriteStats(datasets=[j.name for j in jobs])
    total = sum(int(j.array.size) * j.dset.dtype.itemsize for j in jobs)
    t0 = time.perf_counter()
    bound_heap_growth()
    try:
        for done in run_block_tasks(
            interleave([job.tasks(i) for i, job in enumerate(jobs)]), max_inflight_bytes=max_inflight_bytes,
            scheduler=scheduler, progress=progress, total=total, transient=True,  # each block is stored at once
        ):
            stats.stored_bytes += store_block(jobs[done.key].dset, done.selection, done.chunks, done.raw)
            stats.chunks += 0 if done.raw is not None else len(done.chunks)
            stats.logical_bytes += done.nbytes
            del done
    except BaseException as exc:
        names = ", ".join(repr(j.name) for j in jobs)
        if hasattr(exc, "add_note"):
            exc.add_note(f"nwb_dask: while writing dataset(s) {names}; the write was stopped")
        raise
    stats.seconds = time.perf_counter() - t0
    return stats


def write_dask_array(
    array,
    dset,
    codec: CodecSpec = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    scheduler: Any = None,
    progress: bool = True,
) -> WriteStats:
    """Store a dask array into an existing chunked HDF5 dataset in parallel.

    Parameters
    ----------
    array : dask.array.Array
    dset : h5py.Dataset
        Chunked, same shape; its filters define the codec unless ``codec``
        is given (then they must match).
    codec : codec spec, optional
    block_bytes, max_inflight_bytes, scheduler, progress
        See :func:`plan_write` and :func:`write_arrays`.

    Returns
    -------
    WriteStats

    Examples
    --------
    ::

        gz = nwb_dask.codec("gzip")
        with h5py.File("x.h5", "w") as f:
            d = f.create_dataset("x", (10**6, 64), "i2", chunks=(16384, 64), **gz.dataset_kwargs())
            nwb_dask.write_dask_array(da.ones((10**6, 64), "i2"), d)
    """
    job = plan_write(array, dset, codec, block_bytes=block_bytes)
    return write_arrays([job], max_inflight_bytes=max_inflight_bytes, scheduler=scheduler, progress=progress)

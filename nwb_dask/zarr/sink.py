"""The Zarr sink: every dask task computes its block, encodes its chunks with nwb_dask's codecs and stores the bytes.

The bytes are exactly what zarr's own numcodecs pipeline stores (nwb_dask's
HDF5 shuffle is numcodecs' ``Shuffle``, its deflate output a ``Zlib`` stream,
its zstd and blosc the same frames), so any zarr reader decodes them; nwb_dask
only encodes faster (ISA-L for gzip, in parallel).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from nwb_dask.blocks import block_label, checked_array, checked_block
from nwb_dask.chunking import align_to_chunks, block_selections, chunk_offsets
from nwb_dask.codecs import Codec
from nwb_dask.hdf5.write import WriteStats

__all__ = ["store_arrays"]


# --------------------------------------------------------------------------- #
# workers: compute, encode, store                                              #
# --------------------------------------------------------------------------- #
def _store_block(block: np.ndarray, declared, dtype, label: str, store, key_prefix: str, selection: tuple,
                 chunk_shape: tuple, codec: Codec | None, separator: str, fill) -> int:
    """Check one computed block (the rule of every write path), encode its chunks and write them into the store.

    Returns the stored bytes.
    """
    from nwb_dask.codecs import pad_chunk

    block = checked_block(block, declared, shape=tuple(s.stop - s.start for s in selection), stored=dtype,
                          label=label, selection=selection)
    block = np.ascontiguousarray(block)
    stored = 0
    for offset, local in chunk_offsets(selection, chunk_shape):
        chunk = pad_chunk(block[local], chunk_shape, fill)
        data = codec.encode(chunk)[1] if codec is not None else chunk.tobytes()
        index = separator.join(str(o // c) for o, c in zip(offset, chunk_shape))
        store[f"{key_prefix}{index}"] = bytes(data)
        stored += len(data)
    return stored


def store_arrays(jobs: Sequence[tuple[Any, Any, Codec]], *, scheduler: Any = None, progress: bool = True) -> WriteStats:
    """Write dask arrays into existing Zarr arrays, each task storing its own chunks.

    Parameters
    ----------
    jobs : sequence of (zarr.Array, dask array, Codec)
        Target array (created with :func:`numcodecs_pipeline` of the codec),
        source, and the codec to encode with.
    scheduler : optional
        Any dask scheduler or a ``distributed.Client`` (default: the active one).
    progress : bool
        A progress bar (dask's for local schedulers, distributed's otherwise).

    Returns
    -------
    WriteStats
    """
    import dask

    t0 = time.perf_counter()
    stats = WriteStats(datasets=[z.path for z, _, _ in jobs])
    tasks = []
    for zarr_array, array, c in jobs:
        if tuple(array.shape) != tuple(zarr_array.shape):
            raise ValueError(f"dataset {zarr_array.path!r}: source shape {array.shape} != store shape {zarr_array.shape}")
        chunk_shape = tuple(zarr_array.chunks)
        aligned = align_to_chunks(array, chunk_shape)  # blocks are checked, then cast to the store's dtype
        if aligned.chunks != array.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
            aligned = align_to_chunks(checked_array(array, f"/{zarr_array.path}"), chunk_shape)
        array = aligned
        prefix = f"{zarr_array.path}/" if zarr_array.path else ""
        sep = getattr(zarr_array, "_dimension_separator", None) or "."
        fill = zarr_array.fill_value if zarr_array.fill_value is not None else 0
        blocks = array.to_delayed().ravel()
        for block, (idx, sel) in zip(blocks, block_selections(array.chunks)):
            label = block_label(f"/{zarr_array.path}", sel, idx)
            tasks.append(dask.delayed(_store_block, pure=False)(
                block, array.dtype, zarr_array.dtype, label, zarr_array.store, prefix, sel, chunk_shape, c, sep, fill))
        stats.logical_bytes += int(array.size) * zarr_array.dtype.itemsize
        stats.chunks += int(np.prod([-(-s // c) for s, c in zip(array.shape, chunk_shape)])) if array.size else 0
    if tasks:
        stats.stored_bytes = int(sum(_compute_with_progress(tasks, scheduler, progress)))
    stats.seconds = time.perf_counter() - t0
    return stats


def _compute_with_progress(tasks: list, scheduler: Any, progress: bool) -> list:
    import dask

    from nwb_dask.engine import active_scheduler

    info = active_scheduler(scheduler)
    if info.kind == "distributed":
        client = info.client
        futures = client.compute(tasks)
        try:
            if progress:
                from distributed import progress as dprogress

                dprogress(futures, scheduler=client.scheduler.address)  # this client's cluster, not the default's
            return client.gather(futures)
        except BaseException:
            _abandon(client, futures)
            raise
    kwargs = {"scheduler": scheduler} if scheduler is not None and not hasattr(scheduler, "submit") else {}
    pool = None
    if info.kind == "threads":
        # A pool of our own, shut down (waiting) before an error reaches the caller: dask's shared
        # pool would keep running the tasks started before the error, whose chunk writes would
        # re-create the partial store the caller deletes.  (The processes scheduler already
        # waits for its pool.)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(info.workers, thread_name_prefix="nwb_dask-zarr")
        kwargs = {"scheduler": "threads", "pool": pool}
    try:
        if progress and len(tasks) > 4:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return list(dask.compute(*tasks, **kwargs))
        return list(dask.compute(*tasks, **kwargs))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _abandon(client, futures: list, timeout: float = 60.0) -> None:
    """Cancel a failed write's tasks and wait for those already running on a worker to end.

    Every task writes its chunks into the store itself: one still running when
    the caller deletes the partial store would re-create it with its chunks.
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

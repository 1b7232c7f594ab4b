"""The Zarr sink: every task computes its block, encodes its chunks with nwb_dask's codecs and stores the bytes.

The tasks run through the one write engine (:func:`nwb_dask.engine.run_block_tasks`)
with a worker-side sink step (:func:`_store_block`): the chunks are stored
where they are encoded, on the worker, and only their sizes come back.  The
bytes are exactly what zarr's own numcodecs pipeline stores (nwb_dask's HDF5
shuffle is numcodecs' ``Shuffle``, its deflate output a ``Zlib`` stream, its
zstd and blosc the same frames), so any zarr reader decodes them; nwb_dask
only encodes faster (ISA-L for gzip, in parallel).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nwb_dask.compat import zarr_dimension_separator
from nwb_dask.blocks import checked_array
from nwb_dask.chunking import align_to_chunks, block_selections
from nwb_dask.codecs import Codec
from nwb_dask.engine import (
    DEFAULT_INFLIGHT_BYTES, BlockTask, EncodedBlock, WriteStats, checked_task_block, encode_chunks, interleave,
    run_block_tasks,
)

__all__ = ["ZarrChunkStore", "store_arrays"]


@dataclass(frozen=True)
class ZarrChunkStore:
    """Where one Zarr array's chunks go: a store (any MutableMapping, picklable), the array's key prefix and separator."""

    store: Any
    prefix: str
    separator: str

    def put(self, chunks, chunk_shape: tuple) -> int:
        """Store encoded chunks ``[(offset, mask, bytes)]``; return the bytes stored."""
        stored = 0
        for offset, _, data in chunks:
            index = self.separator.join(str(o // c) for o, c in zip(offset, chunk_shape))
            self.store[f"{self.prefix}{index}"] = bytes(data)
            stored += len(data)
        return stored


# --------------------------------------------------------------------------- #
# workers: compute (engine), check and encode (engine's step), store           #
# --------------------------------------------------------------------------- #
def _store_block(block: np.ndarray, declared, task: BlockTask) -> EncodedBlock:
    """The worker-side sink step: check one computed block (the rule of every write path), encode and store its chunks.

    Returns the block's result without its chunks (``stored``: the bytes stored).
    """
    block = checked_task_block(block, declared, task)
    chunks = encode_chunks(block, task.selection, task.chunk_shape, task.codec, task.fill_value)
    stored = task.target.put(chunks, task.chunk_shape)
    return EncodedBlock(task.key, task.selection, int(block.nbytes), stored=stored, n_chunks=len(chunks))


def _tasks(key: int, zarr_array, array, codec: Codec | None):
    chunk_shape = tuple(zarr_array.chunks)
    target = ZarrChunkStore(zarr_array.store, f"{zarr_array.path}/" if zarr_array.path else "",
                            zarr_dimension_separator(zarr_array))
    fill = zarr_array.fill_value if zarr_array.fill_value is not None else 0
    stored = None if zarr_array.dtype == array.dtype else zarr_array.dtype
    step = _store_block  # looked up now: a test may have replaced it
    for idx, sel in block_selections(array.chunks):
        yield BlockTask(key, sel, array.blocks[idx], chunk_shape, codec, fill, name=f"/{zarr_array.path}",
                        index=idx, dtype=stored, step=step, target=target)


def store_arrays(jobs: Sequence[tuple[Any, Any, Codec]], *, scheduler: Any = None, progress: bool = True,
                 max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES) -> WriteStats:
    """Write dask arrays into existing Zarr arrays, each task storing its own chunks.

    Parameters
    ----------
    jobs : sequence of (zarr.Array, dask array, Codec)
        Target array (created with :func:`numcodecs_pipeline` of the codec),
        source, and the codec to encode with.
    scheduler : optional
        Any dask scheduler or a ``distributed.Client`` (default: the active one).
    progress : bool
        The engine's progress bar (bytes) for writes over 64 MiB.
    max_inflight_bytes : int
        The engine's budget of raw bytes computed but not yet stored.

    Returns
    -------
    WriteStats
    """
    t0 = time.perf_counter()
    stats = WriteStats(datasets=[z.path for z, _, _ in jobs])
    streams = []
    for k, (zarr_array, array, c) in enumerate(jobs):
        if tuple(array.shape) != tuple(zarr_array.shape):
            raise ValueError(f"dataset {zarr_array.path!r}: source shape {array.shape} != store shape {zarr_array.shape}")
        chunk_shape = tuple(zarr_array.chunks)
        aligned = align_to_chunks(array, chunk_shape)  # blocks are checked, then cast to the store's dtype
        if aligned.chunks != array.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
            aligned = align_to_chunks(checked_array(array, f"/{zarr_array.path}"), chunk_shape)
        streams.append(_tasks(k, zarr_array, aligned, c))
        stats.logical_bytes += int(aligned.size) * zarr_array.dtype.itemsize
        stats.chunks += int(np.prod([-(-s // c) for s, c in zip(aligned.shape, chunk_shape)])) if aligned.size else 0
    for done in run_block_tasks(interleave(streams), max_inflight_bytes=max_inflight_bytes, scheduler=scheduler,
                                progress=progress, total=stats.logical_bytes, desc="nwb_dask zarr"):
        stats.stored_bytes += done.stored_bytes
    stats.seconds = time.perf_counter() - t0
    return stats

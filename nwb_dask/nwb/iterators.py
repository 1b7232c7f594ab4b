"""Dask arrays as hdmf DataChunkIterators, so plain PyNWB can write them.

pynwb and hdmf reject a bare dask array as ``data=``; they accept an
:class:`hdmf.data_utils.AbstractDataChunkIterator`.  :class:`DaskDataChunkIterator`
adapts any dask array: it recommends an HDF5 chunk shape (from
:mod:`nwb_dask.chunking`), rechunks the array into blocks made of whole HDF5
chunks, and hands hdmf one computed block at a time, computing the next block
on the active dask scheduler while hdmf writes the current one.

Memory is bounded whatever the array's size: at most two blocks of
``block_bytes`` are in flight (the one hdmf is writing and the one being
computed), and a block being assembled from smaller dask chunks needs its
pieces too, so peak memory stays below ``4 * block_bytes`` (measured by
``tests/test_iterators.py::test_memory_is_bounded_by_the_buffer``).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

from nwb_dask.blocks import as_dask_array, block_label, checked_array, checked_block
from nwb_dask.chunking import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_CHUNK_BYTES,
    ChunksArg,
    align_to_chunks,
    block_selections,
    check_chunk_shape,
    chunked_maxshape,
    fit_to_blocks,
    resolve_chunk_shape,
)

__all__ = ["DaskDataChunkIterator"]


class DaskDataChunkIterator(AbstractDataChunkIterator):
    """An hdmf DataChunkIterator over a dask array.

    Parameters
    ----------
    array : dask.array.Array
        Data to write; any dtype numpy can store in HDF5 (numeric, bool).
    chunk_shape : "auto" or tuple of int
        HDF5 chunk shape to recommend to hdmf.  ``"auto"`` chooses one with
        :func:`nwb_dask.chunking.guess_chunk_shape` (time x channels rule).
    block_bytes : int
        Upper bound on one block's uncompressed size.  Blocks are whole
        multiples of the chunk shape (never smaller than one chunk).  Peak
        memory of the iterator stays below ``4 * block_bytes`` (two blocks in
        flight, each with its source pieces while it is assembled).
    chunk_bytes : int
        Target chunk size for ``chunk_shape="auto"``.
    prefetch : bool
        Compute the next block in a background thread while hdmf writes the
        current one.
    compute_chunk_sizes : bool
        Compute unknown (NaN) chunk sizes instead of raising.
    display_progress : bool
        Show a tqdm progress bar in bytes.
    name : str, optional
        Name used in error messages and on the progress bar.

    Examples
    --------
    >>> import dask.array as da
    >>> it = DaskDataChunkIterator(da.zeros((100_000, 64), dtype="int16", chunks=(10_000, 64)))
    >>> it.recommended_chunk_shape()
    (5000, 64)
    """

    def __init__(
        self,
        array,
        chunk_shape: ChunksArg = "auto",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        prefetch: bool = True,
        compute_chunk_sizes: bool = True,
        display_progress: bool = False,
        name: str | None = None,
    ):
        array = as_dask_array(array, compute_chunk_sizes=compute_chunk_sizes, name=name)
        if block_bytes <= 0:
            raise ValueError(f"block_bytes must be positive, got {block_bytes}")
        self.name = name
        #: Codec the parallel writer encodes with (None: the dataset's filters decide).
        self.codec = None
        self.chunk_shape = resolve_chunk_shape(chunk_shape, array.shape, array.dtype, target_bytes=chunk_bytes, name=name)
        if chunk_shape is None or isinstance(chunk_shape, str) or chunk_shape is True:
            self.chunk_shape = fit_to_blocks(self.chunk_shape, array.chunks)
        # The invariant (every extent >= 1 and within the data), whoever chose the shape.
        self.chunk_shape = check_chunk_shape(self.chunk_shape, array.shape, name=name)
        self.block_bytes = int(block_bytes)
        self.source = array
        #: The array rechunked so that every block is whole HDF5 chunks.
        self.array = align_to_chunks(array, self.chunk_shape, self.block_bytes)
        if self.array.chunks != array.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
            self.array = align_to_chunks(checked_array(array, name), self.chunk_shape, self.block_bytes)
        self.prefetch = prefetch
        self._blocks = block_selections(self.array.chunks)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._progress = None
        if display_progress:
            from tqdm.auto import tqdm

            self._progress = tqdm(
                total=self.array.nbytes, unit="B", unit_scale=True, desc=name or "writing", leave=False
            )

    # -- hdmf interface ----------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The data shape."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def maxshape(self) -> tuple[int | None, ...]:
        """The data shape, with 0-length axes unlimited (:func:`~nwb_dask.chunking.chunked_maxshape`).

        hdmf creates the dataset with this maximum shape: h5py refuses any
        chunk on a fixed 0-length axis, and a chunk has at least 1 element.
        """
        return chunked_maxshape(self.shape)

    def recommended_chunk_shape(self) -> tuple[int, ...]:
        return self.chunk_shape

    def recommended_data_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def num_blocks(self) -> int:
        """Number of blocks (DataChunks) the iterator yields."""
        return math.prod(self.array.numblocks)

    def __iter__(self):
        return self

    def _submit(self, block_id, selection) -> tuple[tuple[slice, ...], Future | np.ndarray]:
        block = self.array.blocks[block_id]
        if not self.prefetch:
            return selection, block.compute()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="nwb_dask-prefetch")
        return selection, self._executor.submit(block.compute)

    def __next__(self) -> DataChunk:
        if self._pending is None:
            first = next(self._blocks, None)
            if first is None:
                self._finish()
                raise StopIteration
            self._pending = self._submit(*first)
        selection, result = self._pending
        self._pending = None
        nxt = next(self._blocks, None)
        if nxt is not None:
            self._pending = self._submit(*nxt)
        try:
            data = result.result() if isinstance(result, Future) else result
        except BaseException:
            self._finish()
            raise
        try:  # what every write path checks (nwb_dask.blocks): the shape, and values the dtype holds
            data = checked_block(data, self.array.dtype, shape=tuple(s.stop - s.start for s in selection),
                                 selection=selection, label=block_label(self.name, selection))
        except ValueError:
            self._finish()
            raise
        if self._progress is not None:
            self._progress.update(data.nbytes)
        return DataChunk(data=data, selection=selection)

    def _finish(self) -> None:
        if self._pending is not None and isinstance(self._pending[1], Future):
            self._pending[1].cancel()
        self._pending = None
        self._blocks = iter(())
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def __repr__(self) -> str:
        return (
            f"DaskDataChunkIterator(shape={self.shape}, dtype={self.dtype}, chunk_shape={self.chunk_shape}, "
            f"blocks={self.array.chunksize})"
        )

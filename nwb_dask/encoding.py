"""The one encode step and what it produces: a checked block split into HDF5 chunks, encoded, and packed for transfer.

:func:`encode_chunks` is the step every writer runs (the engine's workers,
MPI ranks, the live writer through :func:`encode_block`, the Zarr sink);
:func:`encode_task` is the engine's default worker step and returns an
:class:`EncodedBlock`.  :mod:`nwb_dask.engine` re-exports these names, where
the architecture page lists them.

:class:`PackedChunks` is how a block's chunks travel between processes (the
distributed and processes schedulers): one contiguous ``uint8`` buffer and a
small table, two numpy arrays that pickle protocol 5, which distributed uses,
sends out of band: no copy of the bytes into the pickle on the worker, none
out of it in the writer, whose chunks are views of the received frame.  As a
list of ``bytes`` objects the same result was copied into the pickle stream,
and distributed then scanned the whole stream for ``b"__main__"`` (27 ms per
23 MB gzip block of the benchmark, against 0.1 ms packed; see
:func:`nwb_dask.engine.run_block_tasks` for the whole profile).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.chunking import chunk_offsets
from nwb_dask.codecs import Codec, pad_chunk

__all__ = ["EncodedBlock", "PackedChunks", "checked_task_block", "encode_block", "encode_chunks", "encode_task",
           "pack_result"]


class PackedChunks:
    """A block's encoded chunks in one contiguous buffer, with a table of where each one goes.

    Iterating gives ``(offset, filter_mask, data)`` as a list from
    :func:`encode_chunks` does (``data`` a read-only ``memoryview`` into the
    buffer), so :func:`nwb_dask.hdf5.write.store_block` takes either.

    Attributes
    ----------
    data : numpy.ndarray
        1-D ``uint8``: every chunk's stored bytes, back to back.
    table : numpy.ndarray
        ``int64`` of shape ``(n_chunks, ndim + 3)``: each chunk's offset in
        the dataset (``ndim`` columns), its filter mask, its start in
        ``data`` and its size.
    """

    __slots__ = ("data", "table")

    def __init__(self, data: np.ndarray, table: np.ndarray):
        data, table = np.asarray(data), np.asarray(table)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"PackedChunks: data must be 1-D uint8, got {data.dtype} of shape {data.shape}")
        if table.dtype != np.int64 or table.ndim != 2 or table.shape[1] < 3:
            raise ValueError(f"PackedChunks: table must be int64 of shape (n, ndim + 3), got {table.dtype} {table.shape}")
        if len(table) and ((table[:, -2] < 0).any() or (table[:, -1] < 0).any()
                           or int((table[:, -2] + table[:, -1]).max()) > data.size):
            raise ValueError(f"PackedChunks: the table points outside the buffer of {data.size} bytes")
        self.data, self.table = data, table

    @classmethod
    def pack(cls, chunks: Sequence[tuple[tuple[int, ...], int, Any]], ndim: int) -> "PackedChunks":
        """Copy ``[(offset, filter_mask, bytes-like)]`` (:func:`encode_chunks`' result) into one buffer.

        Parameters
        ----------
        chunks : sequence of (offset, filter_mask, bytes-like)
        ndim : int
            The dataset's rank (the length of each offset).
        """
        table = np.empty((len(chunks), ndim + 3), np.int64)
        sizes = [memoryview(c[2]).nbytes for c in chunks]
        data = np.empty(sum(sizes), np.uint8)
        pos = 0
        for row, ((offset, mask, buf), size) in enumerate(zip(chunks, sizes)):
            if len(offset) != ndim:
                raise ValueError(f"PackedChunks.pack: chunk offset {tuple(offset)} is not of rank {ndim}")
            table[row, :ndim] = offset
            table[row, ndim:] = (mask, pos, size)
            data[pos:pos + size] = np.frombuffer(buf, np.uint8)
            pos += size
        return cls(data, table)

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[tuple[tuple[int, ...], int, memoryview]]:
        view = memoryview(self.data).toreadonly()
        for *offset, mask, start, size in self.table.tolist():
            yield tuple(offset), mask, view[start:start + size]

    @property
    def stored_bytes(self) -> int:
        """Bytes of all chunks (what HDF5 stores for them)."""
        return int(self.table[:, -1].sum()) if len(self.table) else 0

    def __reduce__(self):
        return (PackedChunks, (self.data, self.table))  # numpy arrays: out of band with pickle protocol 5

    def __sizeof__(self) -> int:  # what distributed accounts for a result (dask.sizeof falls back to this)
        return object.__sizeof__(self) + self.data.nbytes + self.table.nbytes

    def __repr__(self) -> str:
        return f"PackedChunks({len(self)} chunks, {self.stored_bytes} bytes)"


@dataclass
class EncodedBlock:
    """A finished block: its chunks' stored bytes, or the raw block when ``codec`` is None.

    ``chunks`` is a list of ``(offset, filter_mask, bytes)``, or the same as
    :class:`PackedChunks` once the result has crossed a process boundary.  A
    worker-side sink returns it without chunks, with ``stored`` the bytes it
    stored.
    """

    key: Any
    selection: tuple
    nbytes: int
    chunks: Any = field(default_factory=list)  # [(offset, filter_mask, bytes)] or PackedChunks
    raw: np.ndarray | None = None
    stored: int | None = None
    n_chunks: int = 0

    @property
    def stored_bytes(self) -> int:
        if self.stored is not None:
            return self.stored
        if self.raw is not None:
            return self.nbytes
        if isinstance(self.chunks, PackedChunks):
            return self.chunks.stored_bytes
        return sum(len(c[2]) for c in self.chunks)

    def __sizeof__(self) -> int:
        # distributed's memory accounting and its offload of large messages use dask.sizeof,
        # which falls back to sys.getsizeof: count the bytes the result holds
        held = 0 if self.raw is None else self.raw.nbytes
        if isinstance(self.chunks, PackedChunks):
            held += sys.getsizeof(self.chunks)
        else:
            held += sum(len(c[2]) for c in self.chunks)
        return object.__sizeof__(self) + held


def pack_result(result: Any) -> Any:
    """An :class:`EncodedBlock` with its chunk list packed into :class:`PackedChunks` (anything else unchanged).

    The engine's step on the schedulers that move results between processes.
    """
    if isinstance(result, EncodedBlock) and isinstance(result.chunks, list) and result.chunks:
        result.chunks = PackedChunks.pack(result.chunks, len(result.selection))
    return result


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

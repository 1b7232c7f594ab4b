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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nwb_dask.blocks import block_label, checked_block
from nwb_dask.chunking import chunk_offsets
from nwb_dask.codecs import Codec, pad_chunk

__all__ = ["EncodedBlock", "checked_task_block", "encode_block", "encode_chunks", "encode_task"]


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

    @property
    def stored_bytes(self) -> int:
        if self.stored is not None:
            return self.stored
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

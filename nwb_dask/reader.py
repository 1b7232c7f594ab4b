"""Lazy readers: HDF5/NWB datasets as dask arrays (local files; first part of the reader issue).

:func:`read_dataset` returns a dask array whose blocks are whole HDF5 chunks
merged to a target size.  Each task carries only a picklable reference
(file path, dataset path, selection, codec); workers open the file
themselves and keep the handle (:func:`_open`, one per process and path).
Where nwb_dask's codecs can decode the dataset's filters, tasks read raw
chunks with ``read_direct_chunk`` and decode them on the worker, outside
HDF5's serial filter pipeline; otherwise they fall back to normal h5py reads.

Still to come (see the issue): NWB-level ``read_nwb``, external links and
virtual datasets, remote files, Zarr.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .chunking import DEFAULT_BLOCK_BYTES, block_shape, chunk_offsets, guess_chunk_shape
from .codecs import Codec, codec_from_dataset

__all__ = ["read_dataset"]


@functools.lru_cache(maxsize=64)
def _open(path: str):
    """This process's read-only handle on ``path`` (opened once, kept for the process's life)."""
    import h5py

    try:
        import hdf5plugin  # noqa: F401  (plugin filters for the fallback path)
    except ImportError:  # pragma: no cover
        pass
    return h5py.File(path, "r")


def _read_block(
    block: Any = None,
    *,
    source: tuple,
    block_info: dict | None = None,
) -> np.ndarray:
    """Read one block: direct chunk reads decoded here, or h5py's own read."""
    path, name, chunk_shape, codec, fill = source
    selection = tuple(slice(a, b) for a, b in block_info[None]["array-location"])
    dtype = np.dtype(block_info[None]["dtype"])
    dset = _open(path)[name]
    if codec is None:
        return dset[selection]
    out = np.empty(tuple(s.stop - s.start for s in selection), dtype)
    for offset, local in chunk_offsets(selection, chunk_shape):
        try:
            mask, data = dset.id.read_direct_chunk(offset)
        except (KeyError, RuntimeError, OSError):  # never written: the fill value
            out[local] = fill
            continue
        chunk = codec.decode(data, dtype, chunk_shape, mask)
        out[local] = chunk[tuple(slice(0, s.stop - s.start) for s in local)]
    return out


def read_dataset(
    path: str | os.PathLike,
    name: str,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    direct: bool = True,
):
    """One HDF5 dataset as a lazy dask array.

    Parameters
    ----------
    path : str or PathLike
        HDF5/NWB file.
    name : str
        Dataset path inside the file, e.g. ``"acquisition/ElectricalSeries/data"``.
    block_bytes : int
        Target size of a dask block; blocks are whole HDF5 chunks.
    direct : bool
        Read raw chunks and decode them on the workers when nwb_dask's codecs
        can (default); ``False`` always reads through h5py.

    Returns
    -------
    dask.array.Array
        Its graph holds no open h5py objects, so it runs on a distributed
        cluster of processes.

    Raises
    ------
    FileNotFoundError, KeyError, TypeError
        Missing file, missing dataset (named), or an object that is not a dataset.
    """
    import dask.array as da
    import h5py
    from dask.base import tokenize

    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with h5py.File(path, "r") as f:
        if name not in f:
            raise KeyError(f"{path} has no dataset {name!r}")
        dset = f[name]
        if not isinstance(dset, h5py.Dataset):
            raise TypeError(f"{path}:{name} is a {type(dset).__name__}, not a dataset")
        shape, dtype, chunks = dset.shape, dset.dtype, dset.chunks
        codec: Codec | None = codec_from_dataset(dset) if direct and chunks else None
        if dtype.byteorder == ">" or dtype.kind not in "biufc?":
            codec = None
        fill = dset.fillvalue
        mtime = os.path.getmtime(path)
    if not shape:
        raise TypeError(f"{path}:{name} is a scalar dataset; read it with h5py")
    # Contiguous datasets are read through h5py in blocks of a guessed chunk grid.
    chunk_shape = chunks or guess_chunk_shape(shape, dtype, max(1, block_bytes // 8))
    blocks = block_shape(chunk_shape, shape, dtype, block_bytes)
    token = tokenize(path, name, mtime, blocks, codec, direct)
    return da.map_blocks(
        _read_block,
        chunks=da.core.normalize_chunks(blocks, shape),
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype),
        name=f"nwb-dask-read-{token}",
        source=(path, name, chunk_shape, codec, fill),
    )

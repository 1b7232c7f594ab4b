"""Zarr arrays as dask arrays of whole Zarr chunks, and what a Zarr store looks like on disk."""

from __future__ import annotations

import os

from nwb_dask.chunking import block_shape
from nwb_dask.compat import require_zarr

__all__ = ["is_zarr_path", "zarr_array", "zarr_dask"]


def zarr_array(path: str, name: str, block_bytes: int):
    """A dataset of a Zarr store as a dask array (zarr arrays pickle and read themselves); needs the [zarr] extra."""
    zarr = require_zarr(f"read_dataset({path!r}) of a Zarr store", modules=())

    try:
        node = zarr.open(path, mode="r", path=name.strip("/"))
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise KeyError(f"{path} has no dataset {name!r} ({exc})") from None
    if not isinstance(node, zarr.Array):
        raise TypeError(f"{path}:{name} is a {type(node).__name__}, not a dataset")
    return zarr_dask(node, block_bytes)


def zarr_dask(node, block_bytes: int):
    """A zarr array as a dask array of whole Zarr chunks (zarr arrays pickle and reopen themselves)."""
    import dask.array as da

    blocks = block_shape(node.chunks, node.shape, node.dtype, block_bytes)
    return da.from_zarr(node, chunks=blocks)


def is_zarr_path(path: str | os.PathLike) -> bool:
    """A Zarr store: a name ending in ``.zarr``, or an existing directory that holds one.

    A directory holds a Zarr store when its root has Zarr's metadata
    (``.zgroup``/``.zarray`` of Zarr v2, ``zarr.json`` of v3).  Any other
    directory is not taken for a store: writing there is refused by the HDF5
    path ("is a directory") instead of being replaced.
    """
    p = os.fspath(path)
    if p.rstrip("/").endswith(".zarr"):
        return True
    return os.path.isdir(p) and any(os.path.exists(os.path.join(p, m)) for m in (".zgroup", ".zarray", "zarr.json"))

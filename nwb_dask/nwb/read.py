"""NWB files with their large datasets as dask arrays: :func:`daskify` and :func:`read_nwb` (HDF5, remote HDF5, NWB-Zarr)."""

from __future__ import annotations

import os


from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, READ_MIN_BYTES, is_large_numeric
from nwb_dask.hdf5.read import dataset_array, is_url, open_remote, options_key, prefetch_remote, remember, remote_dataset_array
from nwb_dask.hdf5.read import read_dataset as read_hdf5_dataset
from nwb_dask.nwb.index import is_index
from nwb_dask.zarr.read import is_zarr_path, zarr_array, zarr_dask

__all__ = ["READ_MIN_BYTES", "daskify", "is_zarr", "read_daskified", "read_dataset", "read_nwb_hdf5"]


def daskify(
    nwbfile,
    *,
    min_bytes: int = READ_MIN_BYTES,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    direct: bool = True,
    url: str | None = None,
    remote_options: dict | None = None,
):
    """Replace the large numeric h5py datasets of a read NWBFile with dask arrays, in place.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile or hdmf container
        As returned by ``NWBHDF5IO.read()`` (its file must stay open); the
        root of a file of hdmf types (e.g. a ``DynamicTable``) is fine too.
    min_bytes : int
        Datasets smaller than this stay h5py datasets (pynwb's behaviour).
    block_bytes, direct, remote_options
        As for :func:`read_dataset`.
    url : str, optional
        The URL the file was opened from (its h5py file has no path then).

    Returns
    -------
    list of str
        ``"container/field"`` names that became dask arrays.
    """
    import h5py

    try:
        from zarr import Array as ZarrArray
    except ImportError:  # zarr is the [zarr] extra: without it nothing read is a zarr array
        ZarrArray = ()

    options = options_key(remote_options)

    changed = []
    objects = nwbfile.objects if hasattr(nwbfile, "objects") else nwbfile.all_objects  # NWBFile or other root
    for obj in objects.values():
        fields = obj.fields  # hdmf's field store; pynwb's properties read from it
        for key, val in list(fields.items()):
            if isinstance(val, h5py.Dataset) and is_large_numeric(val.shape, val.dtype, min_bytes):
                if url is not None:
                    fields[key] = remote_dataset_array(val, url, options, block_bytes, direct)
                else:
                    fields[key] = dataset_array(val, block_bytes=block_bytes, direct=direct)
                changed.append(f"{obj.name}/{key}")
            elif isinstance(val, ZarrArray) and is_large_numeric(val.shape, val.dtype, min_bytes):  # NWB-Zarr
                fields[key] = zarr_dask(val, block_bytes)
                changed.append(f"{obj.name}/{key}")
    return changed


def read_nwb_hdf5(
    path: str | os.PathLike,
    *,
    min_bytes: int = READ_MIN_BYTES,
    block_bytes: int | None = None,
    direct: bool = True,
    remote_options: dict | None = None,
):
    """Open an NWB file with its large datasets as dask arrays.

    Parameters
    ----------
    path : str or PathLike
        Local NWB (HDF5) file or a ``http(s)://`` / ``s3://`` (or other fsspec) URL of
        an NWB HDF5 file; local datasets behind external links and virtual
        datasets are read from their sources.
    min_bytes : int
        Numeric datasets at least this large become dask arrays; smaller
        ones, strings, references and attributes stay as pynwb gives them.
    block_bytes, direct
        As for :func:`read_dataset`.
    remote_options : dict, optional
        As for :func:`read_dataset`, e.g. ``{"storage_options": {"key": ...,
        "secret": ...}}`` for a private S3 bucket; and ``"prefetch"``
        (default True): fetch the file's metadata a hierarchy level per round
        trip before pynwb reads it (:mod:`nwb_dask.hdf5.prefetch`), instead of
        one object at a time.

    Returns
    -------
    pynwb.NWBFile
        Keep it (or its ``read_io``) open while using small datasets; close
        with ``nwbfile.read_io.close()``.  The dask arrays reopen the file on
        their own and stay usable after that.

    Examples
    --------
    ::

        nwbfile = nwb_dask.read_nwb("session.nwb")
        data = nwbfile.acquisition["ElectricalSeries"].data    # dask.array.Array
        data.mean(axis=0).compute()
    """
    from pynwb import NWBHDF5IO

    block_bytes = block_bytes or DEFAULT_BLOCK_BYTES
    url = None
    if is_url(path):
        remote_options = dict(remote_options or {})
        prefetch = remote_options.pop("prefetch", True)
        options = options_key(remote_options)
        if prefetch:  # pynwb reads every object: fetch the metadata a hierarchy level per round trip
            prefetch_remote(path, options)
        io = NWBHDF5IO(file=open_remote(path, options), mode="r")
        url = path
    else:
        from nwb_dask.errors import check_input_file

        path = os.path.abspath(os.fspath(path))
        check_input_file(path)  # missing or not HDF5: an error naming the path
        io = NWBHDF5IO(path, "r")
    nwbfile = read_daskified(io, min_bytes=min_bytes, block_bytes=block_bytes, direct=direct, url=url,
                             remote_options=remote_options)
    if url is not None:
        remember(url, options)  # the metadata just read, for the next open (nwb_dask.sources.cache)
    return nwbfile


def read_daskified(io, **daskify_options):
    """``io.read()`` with :func:`daskify` applied; ``io`` is closed if either fails (HDF5 and NWB-Zarr IOs alike)."""
    try:
        nwbfile = io.read()
        daskify(nwbfile, **daskify_options)
    except BaseException:
        io.close()
        raise
    return nwbfile


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an NWB-Zarr store (else an HDF5 file): the one rule of reading and writing.

    A local path: a name ending in ``.zarr`` or an existing directory holding
    Zarr metadata (:func:`nwb_dask.zarr.read.is_zarr_path`).  A URL:
    a name ending in ``.zarr``.
    """
    if is_url(path) or "://" in os.fspath(path):
        return os.fspath(path).rstrip("/").endswith(".zarr")
    return is_zarr_path(path)


def read_dataset(
    path: str | os.PathLike,
    name: str,
    *,
    block_bytes: int | None = None,
    direct: bool = True,
    remote_options: dict | None = None,
    index: str | os.PathLike | None = None,
):
    if index is not None or is_index(path):
        from nwb_dask.nwb.index import read_index_dataset

        source = None
        if index is not None:
            source = os.fspath(path) if is_url(path) else os.path.abspath(os.fspath(path))
        return read_index_dataset(index if index is not None else path, name, block_bytes=block_bytes,
                                  remote_options=remote_options, source=source)
    if is_zarr(path):
        return zarr_array(os.fspath(path), name, block_bytes or DEFAULT_BLOCK_BYTES)
    return read_hdf5_dataset(path, name, block_bytes=block_bytes, direct=direct, remote_options=remote_options)


read_dataset.__doc__ = (read_hdf5_dataset.__doc__ or "").replace(
    "One HDF5 dataset as a lazy dask array.",
    "One dataset of an HDF5 file or a Zarr store as a lazy dask array.", 1).replace(
    ":func:`nwb_dask.read_dataset` also takes Zarr stores.",
    "Or a Zarr store (a directory or a name ending in ``.zarr``; NWB-Zarr included), or an index "
    "(a name ending in ``.json``: LINDI, kerchunk; or ``index=`` with the file as ``path``), "
    "see :func:`nwb_dask.read_nwb`.", 1)

"""The entry points that choose HDF5 or Zarr by the path, the same way when reading and when writing.

One rule (:func:`nwb_dask.nwb.read.is_zarr`): a name ending in ``.zarr``, or
an existing directory holding Zarr metadata, is an NWB-Zarr store
(hdmf-zarr's layout); anything else, a URL included, is an HDF5 file.
"""

from __future__ import annotations

import os
from typing import Any

from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, READ_MIN_BYTES
from nwb_dask.compat import require_zarr
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.nwb.io import write_nwb as write_nwb_hdf5
from nwb_dask.nwb.index import is_index
from nwb_dask.nwb.read import is_zarr, read_daskified, read_dataset, read_nwb_hdf5
from nwb_dask.zarr.io import write_nwb_zarr

__all__ = ["is_zarr", "read_dataset", "read_nwb", "write_nwb"]


def _absolute(path: str | os.PathLike) -> str:
    """A URL as it is, a local path made absolute (how indexes name their files)."""
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


def write_nwb(nwbfile, path: str | os.PathLike, **kwargs: Any) -> WriteStats:
    """Write an NWBFile to ``path``: an NWB-Zarr store if the path names one, else an NWB (HDF5) file.

    The same rule as :func:`read_nwb` (:func:`is_zarr`): a name ending in
    ``.zarr`` (or an existing directory holding Zarr metadata) is written with :func:`nwb_dask.write_nwb_zarr`
    (``overwrite``, ``scheduler``, ``progress``, ``storage_options``;
    ``cloud=True`` is refused with ``ValueError``: the cloud layout is an
    HDF5 one); anything else with :func:`nwb_dask.nwb.io.write_nwb` (``mode``,
    ``scheduler``, ``progress``, ``max_inflight_bytes``, ``cloud``,
    NWBDaskIO's keywords, e.g. ``shards=`` for sharded writes from a
    cluster: docs/cluster.md).  Returns the write statistics.
    """
    if is_zarr(path):
        if kwargs.get("shards") is not None:  # a Zarr store is already one object per chunk, written by every worker
            raise ValueError(f"cannot write {os.fspath(path)} with shards=: a Zarr store's chunks are already "
                             "written by the workers that encode them; drop shards=")
        kwargs.pop("shards", None)
        return write_nwb_zarr(nwbfile, path, **kwargs)
    return write_nwb_hdf5(nwbfile, path, **kwargs)


def read_nwb(
    path: str | os.PathLike,
    *,
    min_bytes: int = READ_MIN_BYTES,
    block_bytes: int | None = None,
    direct: bool = True,
    remote_options: dict | None = None,
    index: str | os.PathLike | None = None,
):
    """Open an NWB file with its large datasets as dask arrays.

    Parameters
    ----------
    path : str or PathLike
        Local NWB (HDF5) file, an NWB-Zarr store (directory, read with
        hdmf-zarr), or a ``http(s)://`` / ``s3://`` (or other fsspec) URL of
        an NWB HDF5 file; local datasets behind external links and virtual
        datasets are read from their sources.  Or an index of one: a name
        ending in ``.json`` (LINDI's ``.lindi.json``, a kerchunk reference
        file), local or a URL, opened in one request, chunks read from the
        file the index names (needs ``pip install "nwb-dask[index]"``).
    min_bytes : int
        Numeric datasets at least this large become dask arrays; smaller
        ones, strings, references and attributes stay as pynwb gives them.
    block_bytes, direct
        As for :func:`read_dataset`.
    remote_options : dict, optional
        As for :func:`read_dataset`, e.g. ``{"storage_options": {"key": ...,
        "secret": ...}}`` for a private S3 bucket.  Also used for the index
        and the files it references.
    index : str or PathLike, optional
        Open ``path`` (an HDF5 file or URL) through this index (see
        :mod:`nwb_dask.nwb.index`): the structure comes from the index, the
        chunks from ``path``.

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
    if index is not None or is_index(path):  # LINDI / kerchunk: the structure from the index
        from nwb_dask.nwb.index import read_nwb_index

        return read_nwb_index(index if index is not None else path,
                              source=None if index is None else _absolute(path), min_bytes=min_bytes,
                              block_bytes=block_bytes, remote_options=remote_options)
    if is_zarr(path):  # NWB-Zarr (hdmf-zarr layout): the [zarr] extra
        require_zarr(f"read_nwb({os.fspath(path)!r}) of an NWB-Zarr store")
        from hdmf_zarr.nwb import NWBZarrIO

        return read_daskified(NWBZarrIO(os.fspath(path), "r"), min_bytes=min_bytes,
                              block_bytes=block_bytes or DEFAULT_BLOCK_BYTES)
    return read_nwb_hdf5(path, min_bytes=min_bytes, block_bytes=block_bytes, direct=direct,
                         remote_options=remote_options)

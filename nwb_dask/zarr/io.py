"""NWB-Zarr: write dask arrays to NWB-Zarr stores with every worker storing its own chunks; convert HDF5 <-> Zarr.

hdmf-zarr's ``NWBZarrIO`` builds the store's structure (groups, attributes,
tables, references, the hdmf-zarr layout every NWB-Zarr reader expects); for
datasets given as :class:`nwb_dask.DaskDataIO`, nwb_dask creates the Zarr
array (chunk shape from :mod:`nwb_dask.chunking`, the codec as numcodecs
filters and compressor) and then each dask task computes its block, encodes
its chunks with nwb_dask's codecs and writes the bytes straight into the store:
there is no single writer, so the aggregate rate grows with the workers, on
threads, processes or a distributed cluster.

The bytes are exactly what zarr's own numcodecs pipeline stores (nwb_dask's
HDF5 shuffle is numcodecs' ``Shuffle``, its deflate output a ``Zlib`` stream,
its zstd and blosc the same frames), so any zarr reader decodes them; nwb_dask
only encodes faster (ISA-L for gzip, in parallel).

:func:`convert` turns an HDF5 NWB file into an NWB-Zarr store and back, in
parallel, verified, atomically.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np

from nwb_dask.atomic import AtomicOutput, check_output, guard_sigterm, release_sigterm
from nwb_dask.nwb.dataio import DaskDataIO
from nwb_dask.nwb.io import CLOUD_ZARR_REASON, cloud_refusal
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.codecs import numcodecs_pipeline, zarr_codec
from nwb_dask.compat import mark_written, require_zarr, set_zarr_object_codec, zarr_object_codec
from nwb_dask.zarr.sink import store_arrays

__all__ = ["NWBZarrDaskIO", "io_class", "pickle_allowed", "pickled_arrays", "write_nwb_zarr"]  # noqa: F822 - __getattr__


# --------------------------------------------------------------------------- #
# the IO class                                                                 #
# --------------------------------------------------------------------------- #
# hdmf-zarr (and zarr 2) are the [zarr] extra, not dependencies of the HDF5 core: NWBZarrDaskIO,
# a subclass of hdmf-zarr's NWBZarrIO, is built on first use (module __getattr__, io_class), so that
# this module, and with it ``import nwb_dask``, imports without them or beside zarr 3.
def __getattr__(name: str):
    if name == "NWBZarrDaskIO":
        return io_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def io_class() -> type:
    """:class:`NWBZarrDaskIO`, made on first use (``MissingExtraError`` naming ``nwb-dask[zarr]`` without zarr 2 / hdmf-zarr)."""
    require_zarr("NWBZarrDaskIO (NWB-Zarr writes)")
    from hdmf_zarr.nwb import NWBZarrIO

    class NWBZarrDaskIO(DaskZarrWrites, NWBZarrIO):
        """hdmf-zarr's ``NWBZarrIO`` whose ``write``/``export`` store :class:`~nwb_dask.DaskDataIO` datasets in parallel.

        hdmf-zarr writes the structure; each ``DaskDataIO`` becomes a Zarr array
        with its codec (as numcodecs filters/compressor) and chunk shape, filled by
        dask tasks that each write their own chunks (:func:`store_arrays`).
        Needs the ``zarr`` extra (``pip install "nwb-dask[zarr]"``: zarr 2 and
        hdmf-zarr); without it, naming the class raises
        :class:`nwb_dask.compat.MissingExtraError`.

        Parameters
        ----------
        path : str or Path
            The store (a directory).
        mode : str
            As for ``NWBZarrIO``.
        scheduler : optional
            Dask scheduler or Client for the dask-backed datasets (default: the active one).
        progress : bool
            Progress bar.
        cloud : bool
            Refused (``ValueError`` naming the store) when true: ``cloud=True``
            lays out an HDF5 file; a Zarr store is already one object per chunk.
        **kwargs
            Passed to ``NWBZarrIO``.  Object references are stored with
            ``numcodecs.JSON`` unless ``object_codec_class`` says otherwise.
        """

    NWBZarrDaskIO.__qualname__ = "NWBZarrDaskIO"  # pickled and shown as nwb_dask.zarr.io.NWBZarrDaskIO
    return NWBZarrDaskIO


class DaskZarrWrites:
    """What :class:`NWBZarrDaskIO` adds to hdmf-zarr's ``NWBZarrIO`` (a mixin; see that class)."""

    def __init__(self, path, mode: str = "r", *, scheduler: Any = None, progress: bool = True, cloud: bool = False,
                 **kwargs: Any):
        if cloud:  # before hdmf-zarr creates anything
            raise cloud_refusal(path if isinstance(path, (str, os.PathLike)) else "the Zarr store", CLOUD_ZARR_REASON)
        self.scheduler = scheduler
        self.progress = progress
        self._jobs: list = []
        #: Statistics of the last write/export.
        self.stats: WriteStats | None = None
        codec_cls = kwargs.pop("object_codec_class", None)
        super().__init__(os.fspath(path) if isinstance(path, (str, os.PathLike)) else path, mode=mode, **kwargs)
        self._object_codec = codec_cls
        if mode != "r":
            # References as JSON, not hdmf-zarr's default Pickle: numcodecs (>= 0.15) refuses to
            # unpickle unless told to, so pickled references make stores unreadable by default.
            # NWBZarrIO (hdmf-zarr 0.13) does not pass object_codec_class on to ZarrIO (nwb_dask.compat).
            set_zarr_object_codec(self, codec_cls or numcodecs.JSON)

    def write(self, container, **kwargs: Any) -> None:
        """Write an NWBFile; ``DaskDataIO`` datasets are stored by dask tasks in parallel."""
        write = super().write
        self._run(lambda: write(container, **kwargs))

    def export(self, src_io, nwbfile=None, write_args: dict | None = None, **kwargs: Any) -> None:
        """``NWBZarrIO.export`` with ``DaskDataIO`` fields stored in parallel (see :func:`convert`)."""
        export = super().export
        self._run(lambda: export(src_io=src_io, nwbfile=nwbfile, write_args=dict(write_args or {}), **kwargs))

    def _run(self, write) -> None:
        self._jobs = []
        write()
        jobs, self._jobs = self._jobs, []
        self.stats = store_arrays(jobs, scheduler=self.scheduler, progress=self.progress) if jobs else WriteStats()

    def write_dataset(self, **kwargs: Any):
        """hdmf-zarr's dataset writer; a ``DaskDataIO`` only gets its array created here (filled after)."""
        builder, parent = kwargs["builder"], kwargs["parent"]
        data = builder.data if kwargs.get("force_data") is None else kwargs["force_data"]
        if not isinstance(data, DaskDataIO) or self.get_written(builder):
            if self._object_codec is None and _compound_with_refs(builder.dtype):
                # numcodecs' JSON cannot decode records (lists) into an object array: compound
                # datasets holding references need hdmf-zarr's Pickle (see docs/zarr.md); zarr
                # decodes the metadata it has just written (the fill value) with it, so allow
                # unpickling for this write of our own data.
                saved = zarr_object_codec(self)
                set_zarr_object_codec(self, numcodecs.Pickle)
                try:
                    with pickle_allowed():
                        return super().write_dataset(**kwargs)
                finally:
                    set_zarr_object_codec(self, saved)
            return super().write_dataset(**kwargs)
        array = data.array
        dtype = np.dtype(array.dtype)
        if dtype.byteorder == ">":  # stored little-endian (nwb_dask's codecs encode little-endian data)
            dtype = dtype.newbyteorder("<")
        c = zarr_codec(data.codec, dtype.itemsize)
        filters, compressor = numcodecs_pipeline(c, dtype.itemsize)
        fill = data.io_settings.get("fillvalue", 0) or 0
        dset = parent.create_dataset(builder.name, shape=tuple(array.shape), dtype=dtype,
                                     chunks=tuple(data.data.chunk_shape), filters=filters or None,
                                     compressor=compressor, fill_value=fill)
        dset.attrs["zarr_dtype"] = dtype.str
        if builder.dimension_labels is not None:
            builder.attributes["_ARRAY_DIMENSIONS"] = builder.dimension_labels
        self.write_attributes(dset, builder.attributes)
        mark_written(self, builder)
        self._jobs.append((dset, array, c))
        return dset


@contextlib.contextmanager
def pickle_allowed(allowed: bool = True):
    """numcodecs' switch for unpickling (off by default since numcodecs 0.15), set for a ``with`` block."""
    from numcodecs import pickles

    saved = getattr(pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True)
    pickles.ALLOW_UNSAFE_PICKLE_DECODE = allowed or saved
    try:
        yield
    finally:
        pickles.ALLOW_UNSAFE_PICKLE_DECODE = saved


def pickled_arrays(store: Path) -> list[str]:
    """Arrays of a Zarr store whose metadata names numcodecs' Pickle codec."""
    import json

    found = []
    for meta in sorted(store.rglob(".zarray")):
        try:
            z = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        codecs = list(z.get("filters") or []) + ([z["compressor"]] if z.get("compressor") else [])
        if any(c.get("id") == "pickle" for c in codecs):
            found.append("/" + str(meta.parent.relative_to(store)))
    return found


def _compound_with_refs(dtype: Any) -> bool:
    """A builder dtype of compound records with an object-reference field."""
    if not isinstance(dtype, list):
        return False
    for field in dtype:
        d = field.get("dtype") if isinstance(field, dict) else getattr(field, "dtype", None)
        if type(d).__name__ == "RefSpec" or (isinstance(d, str) and d in ("object", "region")):
            return True
    return False


def write_nwb_zarr(nwbfile, path: str | os.PathLike, *, overwrite: bool = False, scheduler: Any = None,
                   progress: bool = True, storage_options: dict | None = None, cloud: bool = False) -> WriteStats:
    """Write an NWBFile to an NWB-Zarr store, its ``DaskDataIO`` datasets by every dask worker in parallel.

    A local store is built under a temporary name next to ``path`` and renamed
    into place when complete; on error nothing is left at ``path``.  An fsspec
    URL (``s3://bucket/x.nwb.zarr``, ``gs://...``, ...) is written in place,
    since object stores cannot rename a prefix; on error the partial store is
    deleted.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        Large datasets as :class:`nwb_dask.DaskDataIO` (codec ``gzip``,
        ``zstd``, ``blosc`` or ``none``; chunk shape from nwb_dask's rules).
    path : str or Path
        The store: a directory (conventionally ``*.nwb.zarr``) or an fsspec URL.
    overwrite : bool
        Replace an existing store.
    scheduler : optional
        Dask scheduler or Client (default: the active one).
    progress : bool
        Progress bar.
    storage_options : dict, optional
        fsspec options for a URL (e.g. ``{"key": ..., "secret": ...,
        "client_kwargs": {"endpoint_url": ...}}`` for s3fs).
    cloud : bool
        Refused when true (``ValueError`` naming the store, before anything
        is written): the cloud layout is an HDF5 one (see
        :func:`nwb_dask.nwb.io.write_nwb`); a Zarr store is already one
        object per chunk.

    Returns
    -------
    WriteStats
    """
    if cloud:
        raise cloud_refusal(path, CLOUD_ZARR_REASON)
    require_zarr(f"write_nwb_zarr({os.fspath(path)!r})")
    if "://" in os.fspath(path):
        return _write_url(nwbfile, os.fspath(path), overwrite, scheduler, progress, storage_options or {})
    out = check_output(path, overwrite=overwrite, tool="write_nwb_zarr")
    with AtomicOutput(out) as atomic:
        with io_class()(atomic.temp, "w", scheduler=scheduler, progress=progress) as io:
            io.write(nwbfile)
            stats = io.stats
    return stats


def _write_url(nwbfile, url: str, overwrite: bool, scheduler: Any, progress: bool, options: dict) -> WriteStats:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **options)
    if fs.exists(root):
        if not overwrite:
            raise FileExistsError(f"{url} exists; pass overwrite=True to replace it")
        fs.rm(root, recursive=True)
    import zarr

    counted = guard_sigterm()  # SIGTERM ends the write through the cleanup below, as an error does
    try:
        with io_class()(url, "w", scheduler=scheduler, progress=progress, storage_options=options) as io:
            # hdmf-zarr (0.13) consolidates metadata with the URL alone, losing the credentials in
            # storage_options: consolidate here, through a store that has them.
            io.write(nwbfile, consolidate_metadata=False)
            stats = io.stats
        zarr.consolidate_metadata(zarr.storage.FSStore(url, **options))
        return stats
    except BaseException:
        try:
            fs.rm(root, recursive=True)
        except Exception:  # pragma: no cover - best effort on a failing store
            pass
        raise
    finally:
        release_sigterm(counted)



"""NWB integration: ``NWBDaskIO``, a drop-in ``pynwb.NWBHDF5IO`` with the parallel writer.

pynwb/hdmf still build the whole file (groups, attributes, tables, references);
nwb_dask only takes over the bulk bytes of large datasets:

* dask arrays, wrapped in :class:`DaskDataIO` (codec and chunk options) or a
  bare :class:`~nwb_dask.iterators.DaskDataChunkIterator` (optionally inside
  an hdmf ``H5DataIO``, whose filter settings are honoured): hdmf creates the
  dataset, then the parallel writer fills it, computing and compressing on the
  dask workers;
* any other hdmf DataChunkIterator (``GenericDataChunkIterator`` subclasses
  from neuroconv/spikeinterface, ``DataChunkIterator``): hdmf creates the
  dataset, then all such iterators are drained *together*, their chunks
  compressed in a thread pool and stored with direct chunk writes.

Files written in mode ``"w"``/``"w-"``/``"x"`` appear atomically: the file is
built under a temporary name next to the target and renamed when the ``with``
block (or :meth:`NWBDaskIO.close`) completes without error; on error, Ctrl-C or
SIGTERM the partial file is removed and nothing is left at the target (see
:mod:`nwb_dask.atomic`).  hdmf sees the target as the IO's source, so the
containers' ``container_source``, hdmf's errors and pynwb's warnings name it,
never the temporary.  Appends (mode ``"a"``/``"r+"``) write in place; one
that fails is undone (:class:`~nwb_dask.atomic.AppendJournal`), so the file
reads as before.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hdmf.backends.errors import UnsupportedOperation
from hdmf.backends.hdf5 import H5DataIO
from pynwb import NWBHDF5IO

from nwb_dask.atomic import (
    AppendJournal,
    AtomicOutput,
    check_output,
    disk_full_error,
    guard_sigterm,
    open_here,
    release_sigterm,
)
from nwb_dask.compat import h5io_file, mark_written, replace_dci_queue, set_io_source
from nwb_dask.errors import reworded
from nwb_dask.nwb.iterators import DaskDataChunkIterator
from nwb_dask.nwb.queue import ParallelDataChunkIteratorQueue, drain_iterators
from nwb_dask.chunking import CLOUD_CHUNK_BYTES, READ_MIN_BYTES
from nwb_dask.engine import DEFAULT_INFLIGHT_BYTES
from nwb_dask.hdf5.write import WriteStats, plan_write, write_arrays
from nwb_dask.nwb.dataio import DaskDataIO
from nwb_dask.nwb.shards import ShardedWrite, check_shards, parts_of_replaced_file

__all__ = ["CLOUD_PAGE_BYTES", "CLOUD_ZARR_REASON", "DaskDataIO", "NWBDaskIO", "cloud_file_options", "cloud_refusal",
           "write_nwb"]


#: h5py drivers that write one local file, which can be built under a temporary name and renamed.
_ONE_FILE_DRIVERS = (None, "sec2", "stdio", "core", "direct")
#: Paths that are URLs (read with ``driver="ros3"`` or fsspec), never local files.
_URL_PREFIXES = ("http://", "https://", "s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "wasbs://",
                 "ftp://", "ftps://")


#: HDF5 file-space page size of cloud-optimized files (``cloud=True``): 8 MiB.  With paged aggregation
#: HDF5 puts all metadata (object headers, B-trees, heaps) in metadata pages of this size and small raw
#: data in raw pages, so a reader fetches a file's structure in one or a few range requests.  The
#: metadata of a typical NWB file (hundreds of objects) is well under 8 MiB, so it sits in one or two
#: pages; one 8 MiB GET costs ~0.1-0.2 s at 50-100 MB/s per connection, a few round trips' worth.
#: The price: a file is at least two pages (16 MiB) and grows by up to a page of padding per page kind.
CLOUD_PAGE_BYTES = 8 * 2**20
#: hdmf's chunk cache for the files it opens itself (hdmf.backends.hdf5.h5tools.RDCC_NBYTES, 32 MiB);
#: kept when nwb_dask creates the cloud-optimized file for hdmf.
_HDMF_RDCC_NBYTES = 32 * 2**20


def cloud_file_options(page_bytes: int = CLOUD_PAGE_BYTES) -> dict:
    """``h5py.File`` keyword arguments that create a cloud-optimized (paged) HDF5 file.

    Paged aggregation (``fs_strategy="page"``) with persistent free-space
    tracking, so later appends reuse the pages' free space; a page buffer of
    four pages while writing.  HDF5 raises the superblock version paging
    needs by itself (no ``libver`` bound is needed), so pynwb/h5py of
    HDF5 >= 1.10.1 read the file.  No ``meta_block_size``: in a paged file the
    pages take the place of metadata blocks.
    """
    return dict(fs_strategy="page", fs_page_size=int(page_bytes), fs_persist=True, fs_threshold=1,
                page_buf_size=4 * int(page_bytes), rdcc_nbytes=_HDMF_RDCC_NBYTES)


#: Why ``cloud=True`` does not apply to an NWB-Zarr store; NWBDaskIO, write_nwb_zarr, NWBZarrDaskIO and
#: nwb_dask.write_nwb on a ``.zarr`` path all refuse it with this reason (:func:`cloud_refusal`).
CLOUD_ZARR_REASON = ("a Zarr store: cloud=True lays out an HDF5 file (paged aggregation, larger chunks); a Zarr "
                     "store is already one object per chunk and streams from an object store as it is: drop "
                     "cloud=True, or write an HDF5 file (a path not ending in .zarr)")


def cloud_refusal(where, why: str) -> ValueError:
    """The one error for ``cloud=True`` where it does not apply, naming the output and the reason."""
    return ValueError(f"cannot write {os.fspath(where)} with cloud=True: {why}")


def _cloud_chunks(container) -> None:
    """``cloud=True``: every DaskDataIO of ``container``'s tree with a default chunk shape aims at CLOUD_CHUNK_BYTES."""
    from hdmf.container import Data

    for obj in (getattr(container, "objects", None) or {container.object_id: container}).values():
        values = list((getattr(obj, "fields", None) or {}).values())
        if isinstance(obj, Data):
            values.append(obj.data)
        for value in values:
            if isinstance(value, DaskDataIO):
                value.retarget_chunks(CLOUD_CHUNK_BYTES)


def _check_cloud(path, mode: str, file, comm, driver) -> None:
    """Refuse ``cloud=True`` where it does not apply, naming the file and the reason."""
    where = os.fspath(path) if path is not None else getattr(file, "filename", "the file")
    why = None
    if mode not in ("w", "w-", "x"):
        why = (f"mode {mode!r}: the page layout is fixed when a file is created; to make an existing file "
               "cloud-optimized, `nwb-dask repack --cloud` (nwb_dask.repack(..., cloud=True)) it")
    elif file is not None:
        why = ("file= is already created (its layout is fixed); give path=, or create the h5py.File with "
               "**nwb_dask.nwb.io.cloud_file_options()")
    elif comm is not None:
        why = "an MPI comm: HDF5's page buffer does not work with parallel HDF5"
    elif driver not in _ONE_FILE_DRIVERS or str(path).startswith(_URL_PREFIXES):
        why = f"driver {driver!r} / a URL: cloud=True writes one local HDF5 file"
    elif path is not None and (str(path).rstrip("/\\").endswith(".zarr") or os.path.isdir(path)):
        why = CLOUD_ZARR_REASON + " (NWBDaskIO writes HDF5; a Zarr store is written by nwb_dask.write_nwb_zarr)"
    if why is not None:
        raise cloud_refusal(where, why)


class _FileExists(FileExistsError, UnsupportedOperation):
    """Mode ``"w-"``/``"x"`` on an existing file: hdmf's ``UnsupportedOperation`` (and a ``FileExistsError``)."""


def _naming_target(exc: OSError, temp: Path, target: Path) -> OSError:
    """``exc``, raised while writing ``temp``, as the same error about ``target`` (the file the user named).

    The temporary name is an implementation detail of the atomic write; an
    error that names it sends the user looking for a file that never existed.
    """
    if temp.name not in str(exc):  # not about the file being written (e.g. a source that failed to read)
        return exc
    text = str(exc).replace(str(temp), str(target)).replace(temp.name, target.name)
    return reworded(exc, f"cannot write {target}: {text}")


class NWBDaskIO(NWBHDF5IO):
    """``pynwb.NWBHDF5IO`` whose ``write`` stores large datasets in parallel.

    Takes every argument ``NWBHDF5IO`` takes, in the same order (``path``,
    ``mode``, ``load_namespaces``, ``manager``, ``file``, ``comm``,
    ``driver``, ``aws_region``, ``herd_path``), and passes them through; what
    differs is listed in ``docs/writer.md`` ("Drop-in for NWBHDF5IO").

    Parameters
    ----------
    path : str or Path, optional
        The NWB file (or give ``file=``).
    mode : str
        As for ``NWBHDF5IO``: ``"r"``, ``"r+"``, ``"a"``, ``"w"``, ``"w-"``/``"x"``.
    load_namespaces, manager, file, comm, driver, aws_region, herd_path
        As for ``NWBHDF5IO``.
    max_inflight_bytes : int
        Budget of raw bytes computed/encoded but not yet stored (256 MiB).
    scheduler : str, distributed.Client or None
        Dask scheduler for dask-backed datasets; default: the active one.
    progress : bool
        Progress bar (bytes, MB/s) on long writes.
    cloud : bool
        Create a cloud-optimized HDF5 file (default False): paged aggregation
        with :data:`CLOUD_PAGE_BYTES` pages (:func:`cloud_file_options`), so
        its metadata is read in one or a few range requests.  Only for new
        local files (modes ``"w"``, ``"w-"``, ``"x"``, given by ``path``);
        anything else is refused with ``ValueError``.  :class:`DaskDataIO`
        data with default chunks (``"auto"``) get chunks near
        :data:`~nwb_dask.chunking.CLOUD_CHUNK_BYTES` (2 MiB) for range reads;
        see docs/writer.md ("Cloud-optimized files").
    shards : "workers", int or None
        Sharded writes for clusters (default None: one writer).  Each dask
        dataset is cut along axis 0 into this many parts (``"workers"``: one
        per worker), each written by one worker into its own HDF5 file in
        ``<path>.parts/`` and joined by a virtual dataset; only for new
        files.  See :mod:`nwb_dask.nwb.shards` and docs/cluster.md.
    atomic : bool
        A new file (modes ``"w"``, ``"w-"``, ``"x"``, or ``"a"`` on a missing
        file, given by ``path``) is built under a temporary name and renamed
        into place only on success (default True); the containers, errors and
        warnings name ``path`` only.  In modes ``"a"``/``"r+"`` on an existing
        file, a :meth:`write` that fails is undone (see
        :class:`~nwb_dask.atomic.AppendJournal`).  A file given as ``file=``,
        an MPI ``comm`` and drivers that are not one local file (``family``,
        ``split``, ``ros3``, ...) are written in place, as ``NWBHDF5IO`` does.
    **kwargs
        Passed to ``NWBHDF5IO`` (arguments of later pynwb versions).

    Examples
    --------
    >>> with NWBDaskIO("session.nwb", "w") as io:        # doctest: +SKIP
    ...     io.write(nwbfile)
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        mode: str = "r",
        load_namespaces: bool = True,
        manager=None,
        file=None,
        comm=None,
        driver: str | None = None,
        aws_region: str | None = None,
        herd_path: str | None = None,
        *,
        max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
        scheduler: Any = None,
        progress: bool = True,
        atomic: bool = True,
        cloud: bool = False,
        shards: int | str | None = None,
        **kwargs: Any,
    ):
        if cloud:
            _check_cloud(path, mode, file, comm, driver)
        if shards is not None:  # sharded writes (nwb_dask.nwb.shards): checked before anything is created
            check_shards(shards, path, mode, file=file, comm=comm, driver=driver, atomic=atomic)
        self._shards = None
        self._output: AtomicOutput | None = None
        self.cloud = bool(cloud)
        self._failed = False
        self._journal = None
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.scheduler = scheduler
        self.progress = progress
        #: Statistics of the last :meth:`write`.
        self.stats: WriteStats | None = None
        local = path is not None and not str(path).startswith(_URL_PREFIXES)
        self._target = Path(path) if local else None
        if path is None and isinstance(getattr(file, "filename", None), str):
            self._target = Path(file.filename)  # an open h5py.File: errors and notes name its file
        kwargs.update(mode=mode, load_namespaces=load_namespaces, manager=manager, file=file, comm=comm,
                      driver=driver, aws_region=aws_region, herd_path=herd_path)
        if mode != "r":
            from nwb_dask.hdf5.read import release_handles

            # dask arrays read from this file keep cached read-only handles; HDF5 refuses to open it for
            # writing while any is open (they reopen on their next compute)
            release_handles()
        creates = mode in ("w", "w-", "x") or mode == "a" and local and not self._target.exists()
        if atomic and creates and local and file is None and comm is None and driver in _ONE_FILE_DRIVERS:
            if mode == "a":  # a missing file has no namespaces to load (NWBHDF5IO would fail trying)
                kwargs["load_namespaces"] = False
            self._init_atomic(path, kwargs)
        elif cloud:
            self._init_cloud(path, path, kwargs)
        else:
            super().__init__(path=path, **kwargs)
        if shards is not None:
            self._shards = ShardedWrite(self._target, shards, scheduler)
        # An append is undone if it fails: what the file holds now, and after each successful write.
        if atomic and mode in ("a", "r+") and self._output is None:
            self._journal = AppendJournal(h5io_file(self))

    def _init_atomic(self, path, kwargs: dict) -> None:
        """Open hdmf on a temporary next to the target, with the target as the IO's ``source``.

        hdmf gives every container it writes ``container_source = io.source``
        and names ``io.source`` in its errors; a container written twice to
        the same path keeps it.  So hdmf sees the target as the source, and
        only the open h5py file is the temporary; links to other files are
        relative to the target's directory, which is the temporary's too.
        """
        target, mode = self._target, kwargs["mode"]
        if mode in ("w-", "x") and target.exists():  # hdmf's check would look at the temporary; its error type
            raise _FileExists(f"{target} exists (mode {mode!r}); use mode 'w' to overwrite")
        check_output(target, overwrite=True, tool="NWBDaskIO")  # its directory exists (nwb_dask.atomic's checks)
        if open_here(target):  # True (False or None: not open here, or cannot tell)
            # HDF5 refuses to truncate it (NWBHDF5IO's error); built aside, its links to the old file would
            # point into the new one after the rename: a wrong file, silently
            raise OSError(f"cannot write {target}: Unable to synchronously create file (unable to truncate a file "
                          "which is already open); close it (and the files read from it) first, or write elsewhere")
        self._output = output = AtomicOutput(target.absolute())  # renamed at close, whatever the directory then
        temp = str(output.temp)
        try:
            with warnings.catch_warnings(record=True) as caught:  # re-issued below, naming the target
                if self.cloud:
                    self._init_cloud(temp, path, kwargs)
                else:
                    super().__init__(path=temp, **kwargs)
            set_io_source(self, os.path.abspath(path))  # hdmf's source has no setter (nwb_dask.compat)
        except BaseException as exc:
            output.discard()
            self._output = None  # nothing to commit when hdmf's __del__ closes this IO
            if isinstance(exc, OSError):
                raise _naming_target(exc, output.temp, target) from exc
            if isinstance(exc, Warning) and temp in str(exc):  # a warning filter set to "error"
                raise type(exc)(str(exc).replace(temp, os.fspath(path))) from None
            raise
        for w in caught:
            text = str(w.message).replace(temp, os.fspath(path))
            warnings.warn_explicit(text, w.category, w.filename, w.lineno, source=w.source)

    def _init_cloud(self, where, path, kwargs: dict) -> None:
        """Open hdmf on ``where`` created as a paged HDF5 file (``cloud=True``); ``path`` is the file named in errors.

        hdmf's ``HDF5IO`` opens its file with fixed options (no file-space
        settings), so the file is created here and handed over as ``file=``;
        hdmf closes it at :meth:`close`.
        """
        import h5py

        mode = kwargs["mode"]
        opts = cloud_file_options()
        if kwargs.get("driver") is not None:
            opts["driver"] = kwargs["driver"]
        try:
            f = h5py.File(where, "w" if where != path else mode, **opts)
        except OSError as exc:
            raise reworded(exc, f"cannot create {os.fspath(path)} (cloud=True): {exc}") from exc
        try:
            super().__init__(path=where, **dict(kwargs, file=f))
        except BaseException:
            f.close()
            raise

    def write(self, container, **kwargs: Any) -> None:
        """Write an NWBFile; large datasets go through the parallel writer.

        hdmf builds the file and creates every dataset (shape, dtype, chunks,
        filters, attributes); DataChunkIterators are collected by
        :class:`~nwb_dask.queue.ParallelDataChunkIteratorQueue` instead of
        being written one after another.  Then dask-backed datasets are
        written by the parallel writer on the dask scheduler while the other
        iterators drain concurrently in a thread pool.

        Parameters
        ----------
        container : pynwb.NWBFile
        **kwargs
            As for ``NWBHDF5IO.write`` (``cache_spec``, ``link_data``, ...).
        """
        if self.cloud:
            _cloud_chunks(container)
        self._parallel(lambda: super(NWBDaskIO, self).write(container, **kwargs))

    def export(self, src_io, nwbfile=None, write_args: dict | None = None, **kwargs: Any) -> None:
        """``NWBHDF5IO.export`` with large datasets through the parallel writer.

        Object IDs, links and references are kept as HDMF's export keeps them;
        fields replaced by :class:`DaskDataIO` (or other DataChunkIterators)
        are written in parallel, as in :meth:`write`.  :func:`nwb_dask.repack`
        is built on this.

        Parameters
        ----------
        src_io : HDMFIO
            The open source file.
        nwbfile : pynwb.NWBFile, optional
            The file read from ``src_io`` (modified containers are rebuilt).
        write_args : dict, optional
            As for ``NWBHDF5IO.export``.
        **kwargs
            As for ``NWBHDF5IO.export`` (``cache_spec``).
        """
        self._parallel(lambda: super(NWBDaskIO, self).export(src_io, nwbfile=nwbfile,
                                                             write_args=dict(write_args or {}), **kwargs))

    @classmethod
    def export_io(cls, path, src_io, comm=None, container=None, write_args: dict | None = None,
                  cache_spec: bool = True, **kwargs: Any) -> None:
        """``NWBHDF5IO.export_io`` written by ``NWBDaskIO`` (atomically, large datasets in parallel).

        hdmf's ``export_io`` always writes with a plain ``HDF5IO`` and an empty
        namespace catalog (so the file caches the source's namespaces); this
        does the same with ``cls``.  ``kwargs`` go to ``NWBDaskIO``
        (``scheduler``, ``progress``, ...).
        """
        from hdmf.build import BuildManager, TypeMap
        from hdmf.spec import NamespaceCatalog

        kwargs.setdefault("manager", BuildManager(TypeMap(NamespaceCatalog())))  # hdmf's HDF5IO default
        with cls(path=path, comm=comm, mode="w", **kwargs) as io:
            io.export(src_io, nwbfile=container, write_args=write_args, cache_spec=cache_spec)

    @classmethod
    def read_nwb(cls, path=None, file=None, *, min_bytes: int | None = None):
        """``NWBHDF5IO.read_nwb`` with ``NWBDaskIO``: the NWBFile of ``path`` or of an open ``file``.

        Large numeric datasets are dask arrays (see :meth:`read`); URLs are
        read by :func:`nwb_dask.read_nwb`.  Close with ``nwbfile.read_io.close()``.
        """
        if path is not None and str(path).startswith(_URL_PREFIXES):
            from nwb_dask.nwb.read import read_nwb_hdf5

            return read_nwb_hdf5(str(path), min_bytes=READ_MIN_BYTES if min_bytes is None else min_bytes)
        io = cls(path=path, file=file, mode="r", load_namespaces=True)
        return io.read(min_bytes=min_bytes)

    def _parallel(self, run) -> None:
        """Run hdmf's write/export with DataChunkIterators queued, then write them all in parallel.

        An append (mode ``"a"``/``"r+"``) that fails is undone: the file's
        links, attributes and dataset shapes, recorded when it was opened (or
        after the last successful write), are restored after the error (or
        Ctrl-C, or SIGTERM), so rows added to tables read from the file are
        removed too.
        """
        queue = ParallelDataChunkIteratorQueue()
        self._started = False  # set by write_builder: from then on a failure leaves the file partly written
        replace_dci_queue(self, queue)  # hdmf's queue of DataChunkIterators (nwb_dask.compat)
        journal = self._journal
        guard = guard_sigterm() if journal is not None else False
        try:
            run()
            jobs, others = [], []
            for dset, data in queue:
                if self._shards is not None and self._shards.owns(data):
                    continue  # a virtual dataset over part files now (nwb_dask.nwb.shards)
                if isinstance(data, DaskDataChunkIterator):
                    # the source, aligned (and its blocks checked) by plan_write under the dataset's name
                    jobs.append(plan_write(data.source, dset, data.codec, block_bytes=data.block_bytes,
                                           name=dset.name))
                else:
                    others.append((dset, data))
            queue.clear()
            self.stats = self.write_jobs(jobs, others)
            if self._shards is not None:
                self.stats = self._shards.write(self.stats, max_inflight_bytes=self.max_inflight_bytes,
                                                progress=self.progress)
            if journal is not None:
                h5io_file(self).flush()  # a full disk shows here, while the append can still be undone
                self._journal = AppendJournal(h5io_file(self))
        except BaseException as exc:
            # A call refused before anything was written (an argument or mode check, a container that cannot be
            # built) leaves the file as it was: it is kept at close, as NWBHDF5IO keeps it.
            if self._started or not isinstance(exc, Exception):
                self._failed = True
            queue.clear()
            if journal is not None:
                jobs = others = dset = data = None  # noqa: F841 - drop the new datasets' handles first
                self._undo(journal, exc)
            output = getattr(self, "_output", None)
            if output is not None and isinstance(exc, OSError):
                raise _naming_target(exc, output.temp, self._target) from exc
            raise
        finally:
            release_sigterm(guard)

    def _undo(self, journal: AppendJournal, exc: BaseException) -> None:
        """Undo a failed append; say so on the exception (a full disk becomes ``OSError(ENOSPC)`` naming the file)."""
        problems = journal.undo()
        if problems:
            what = (f"undoing the append left {self._target} changed: " + "; ".join(problems[:10])
                    + (f" ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
        else:
            what = (f"the append was undone: {self._target} reads as before (HDF5 keeps the space the append "
                    "used: nwb-dask repack writes a compact copy)")
        exc.add_note(f"nwb_dask: {what}")
        err = disk_full_error(exc, self._target, what)
        if err is not None:
            raise err from exc

    def write_builder(self, *args: Any, **kwargs: Any):
        """hdmf's ``write_builder``; notes that the file is being changed (see :meth:`_parallel`)."""
        self._started = True
        return super().write_builder(*args, **kwargs)

    def write_dataset(self, *args: Any, **kwargs: Any):
        """hdmf's dataset writer, plus virtual datasets and checked external links.

        * :class:`~nwb_dask.virtual.VirtualData` becomes an HDF5 virtual
          dataset with the builder's attributes;
        * a dataset of another file written as a link (a
          :class:`~nwb_dask.links.LinkedData` or a bare ``h5py.Dataset``) is
          first checked with :func:`~nwb_dask.links.check_link`, because the
          link will show the target's attributes instead of the ones the
          container declares (HDMF drops those silently).
        """
        import h5py

        from nwb_dask.nwb.dataio import LinkedData, VirtualData
        from nwb_dask.nwb.links import check_link

        named = dict(zip(("parent", "builder"), args), **kwargs)  # hdmf passes (parent, builder, ...)
        builder, parent = named["builder"], named["parent"]
        data = builder.data
        if isinstance(data, VirtualData) and not self.get_written(builder):
            dset = data.create(parent, builder.name)
            self.set_attributes(dset, builder.attributes)
            mark_written(self, builder)  # hdmf's bookkeeping (nwb_dask.compat)
            return None
        target = data.data if isinstance(data, H5DataIO) else data
        link = data.link_data if isinstance(data, H5DataIO) else named.get("link_data", True)
        if (
            isinstance(target, h5py.Dataset)
            and link
            and named.get("export_source") is None
            and os.path.abspath(target.file.filename) != os.path.abspath(parent.file.filename)
            and not self.get_written(builder)
        ):
            if isinstance(data, LinkedData):
                check_link(builder, target, on_mismatch=data.on_mismatch, shape=data.shape_expected,
                           dtype=data.dtype_expected)
            else:
                check_link(builder, target)
        result = super().write_dataset(*args, **kwargs)
        if self._shards is not None and not isinstance(data, VirtualData):
            self._shards.take(self, parent, builder, data)  # a dask dataset becomes a VDS over part files
        return result

    def read(self, *, min_bytes: int | None = None, **kwargs: Any):
        """Read the NWBFile with its large numeric datasets as dask arrays.

        Parameters
        ----------
        min_bytes : int, optional
            Datasets at least this large (default
            :data:`nwb_dask.chunking.READ_MIN_BYTES`, 16 MiB) become
            distributed-safe dask arrays (see :func:`nwb_dask.read_nwb`); the
            rest is what ``NWBHDF5IO.read`` gives.
        **kwargs
            As for ``NWBHDF5IO.read``.
        """
        from nwb_dask.nwb.read import daskify

        nwbfile = super().read(**kwargs)
        daskify(nwbfile, min_bytes=READ_MIN_BYTES if min_bytes is None else min_bytes)
        return nwbfile

    def write_jobs(self, jobs: list, others: list) -> WriteStats:
        """The bulk write, once hdmf has created every dataset.

        Dask jobs run on the scheduler and plain iterators in threads, at the same time.

        A hook for subclasses: ``jobs`` are :class:`~nwb_dask.hdf5.write.WriteJob`
        objects (one per dask dataset), ``others`` the (dataset, DataChunkIterator)
        pairs; the MPI writer's planner takes the jobs for its ranks instead.
        """
        opts = dict(max_inflight_bytes=self.max_inflight_bytes, progress=self.progress)
        if not others:
            return write_arrays(jobs, scheduler=self.scheduler, **opts) if jobs else WriteStats()
        if not jobs:
            return drain_iterators(others, **opts)
        cancel = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="nwb_dask-iterators") as ex:
            side = ex.submit(drain_iterators, others, cancel=cancel, **opts)
            try:
                stats = write_arrays(jobs, scheduler=self.scheduler, **opts)
            except BaseException:
                cancel.set()
                raise
            return stats.add(side.result())

    def close(self, close_links: bool = True) -> None:
        """Close the file; in atomic write mode, move it into place (or discard it after an error).

        An error while closing (HDF5 flushes its metadata here: a full disk
        shows now) discards the file too.  Errors name the target, never the
        temporary.
        """
        output, self._output = getattr(self, "_output", None), None
        from nwb_dask.hdf5.read import release_handles

        release_handles()  # like NWBHDF5IO, a closed IO leaves the file free (lazy arrays reopen it if computed)
        try:
            super().close(close_links=close_links)
        except BaseException as exc:
            self._failed = True
            if output is not None:
                output.discard()
                self._discard_shards()
                output.raise_for(exc)
                if isinstance(exc, OSError):
                    raise _naming_target(exc, output.temp, self._target) from exc
            raise
        if output is not None:
            if self._failed:
                output.discard()
                self._discard_shards()
            elif not output.temp.exists():  # unlinked under the writer: HDF5 wrote to a file no name reaches
                output.discard()
                self._discard_shards()
                state = "was not changed" if self._target.exists() else "was not created"
                raise FileNotFoundError(
                    f"cannot write {self._target}: its temporary {output.temp.name} was deleted while the file was "
                    f"being written (by `nwb-dask clean` or another program); {self._target} {state}")
            else:
                # an unsharded file over a sharded one: the old parts go once the new file is in place
                unsharded = self._shards is None or not self._shards.datasets  # shards= given, nothing taken
                stale = parts_of_replaced_file(self._target) if unsharded else None
                try:
                    output.commit() if self._shards is None else self._shards.commit_with(output)  # parts first
                except OSError as exc:  # e.g. the target is a directory: name it, not the temporary
                    raise _naming_target(exc, output.temp, self._target) from exc
                if stale is not None:
                    shutil.rmtree(stale, ignore_errors=True)

    def _discard_shards(self) -> None:
        if getattr(self, "_shards", None) is not None:
            self._shards.discard()

    def __exit__(self, exc_type, exc, tb):
        output = self._output
        if exc_type is not None:
            self._failed = True
        self.close()
        if exc is not None and output is not None:
            output.raise_for(exc)  # a full disk: OSError(ENOSPC) naming the target

    @property
    def path(self) -> Path:
        """Where the file is (after close) or will be."""
        return self._target


def write_nwb(
    nwbfile,
    path: str | os.PathLike,
    *,
    mode: str = "w",
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    scheduler: Any = None,
    progress: bool = True,
    cloud: bool = False,
    **kwargs: Any,
) -> WriteStats:
    """Write an NWBFile with :class:`NWBDaskIO` and return the write statistics.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        Containers may hold :class:`DaskDataIO`, ``DaskDataChunkIterator`` or
        any hdmf DataChunkIterator as ``data=``.
    path : str or Path
    mode : {"w", "w-", "x"}
        ``"w"`` overwrites; ``"w-"``/``"x"`` refuse an existing file.  To add
        to an existing file, use :class:`NWBDaskIO` in mode ``"a"`` (read the
        file, add containers, write with the same IO).
    max_inflight_bytes, scheduler, progress, cloud
        See :class:`NWBDaskIO` (``cloud=True``: a paged, cloud-optimized file).
    **kwargs
        Passed to ``NWBDaskIO``.

    Returns
    -------
    WriteStats

    Raises
    ------
    ValueError
        Any other ``mode`` (``"a"``, ``"r+"``, ``"r"``).
    """
    if mode not in ("w", "w-", "x"):
        raise ValueError(
            f"write_nwb writes a new file (mode 'w', 'w-' or 'x'), got mode={mode!r}; to add to the existing "
            f"{os.fspath(path)}, read it and write with the same IO: with nwb_dask.NWBDaskIO(path, 'a') as io: "
            "nwbfile = io.read(); nwbfile.add_acquisition(...); io.write(nwbfile)")
    with NWBDaskIO(
        path, mode, max_inflight_bytes=max_inflight_bytes, scheduler=scheduler, progress=progress, cloud=cloud,
        **kwargs
    ) as io:
        io.write(nwbfile)
        stats = io.stats
    return stats

"""Every reach into hdmf / hdmf-zarr / pynwb (and h5py) internals, in one place.

nwb_dask subclasses hdmf's ``HDF5IO`` (through pynwb's ``NWBHDF5IO``) and
hdmf-zarr's ``ZarrIO``; a few of the things it must do have no public API:
the IO's ``source`` has no setter, the DataChunkIterator queue and the
written-builder bookkeeping are name-mangled, hdmf-zarr's ``NWBZarrIO`` does
not pass ``object_codec_class`` on.  Each such access is one small function
here, with the versions it was checked against and what breaks if it changes;
``tests/test_compat.py`` runs each against the installed packages, so an
internal that moved fails there, loudly, naming the function, rather than
somewhere in a write.

It also holds :func:`require_zarr`, the one gate of the optional Zarr stack
(zarr 2, hdmf-zarr, lindi): the HDF5 core does not depend on it, so every
Zarr entry point asks here first and gets a :class:`MissingExtraError` naming
what is missing, the feature and the extra that installs it.

Layer 0: imports nothing of nwb_dask; hdmf, hdmf-zarr and h5py only lazily
(through the objects passed in).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CompatError",
    "MissingExtraError",
    "dataset_filters",
    "dataset_xfer_plist",
    "h5io_file",
    "lindi_store",
    "mark_written",
    "replace_dci_queue",
    "require_zarr",
    "set_io_source",
    "set_zarr_object_codec",
    "zarr_dimension_separator",
    "zarr_object_codec",
    "zarr_problem",
    "vds_escape",
    "vds_unescape",
]


class CompatError(AttributeError):
    """An hdmf / hdmf-zarr / h5py internal nwb_dask relies on is not where it was (the installed version changed it)."""


def _require(obj: Any, attr: str, what: str, checked: str) -> None:
    if not hasattr(obj, attr):
        raise CompatError(f"{type(obj).__module__}.{type(obj).__qualname__} has no {attr!r} ({what}); nwb_dask.compat "
                          f"was checked against {checked}: this installed version changed it")


# --------------------------------------------------------------------------- #
# hdmf (HDMFIO, HDF5IO)                                                        #
# --------------------------------------------------------------------------- #
#: The versions the hdmf accesses below were checked against.
HDMF_CHECKED = "hdmf 6.2.0"


def set_io_source(io: Any, path: str) -> None:
    """Set an hdmf IO's ``source`` (``HDMFIO.__source``; the ``source`` property has no setter).

    NWBDaskIO (atomic writes) and the MPI writer open hdmf on a temporary file
    but want containers' ``container_source``, hdmf's errors and links to name
    the target.  Checked against hdmf 6.2.0 (``self.__source`` set in
    ``HDMFIO.__init__``, read by ``source`` and ``write``/``export``).  If it
    moves, the containers would name the temporary file: refused here instead.
    """
    _require(io, "_HDMFIO__source", "the IO's source", HDMF_CHECKED)
    io._HDMFIO__source = path
    if io.source != path:
        raise CompatError(f"setting hdmf's HDMFIO.__source did not change io.source ({io.source!r}); "
                          f"nwb_dask.compat was checked against {HDMF_CHECKED}")


def replace_dci_queue(io: Any, queue: Any) -> None:
    """Give an ``HDF5IO`` the queue its DataChunkIterators are put in (``HDF5IO.__dci_queue``).

    hdmf appends every DataChunkIterator dataset to this queue while writing
    and exhausts it at the end of ``write``; NWBDaskIO's queue collects them
    and writes them in parallel instead.  Checked against hdmf 6.2.0
    (``self.__dci_queue``, an ``HDF5IODataChunkIteratorQueue``, set in
    ``HDF5IO.__init__``).  If it moves, hdmf would drain the iterators itself,
    serially: refused here instead.
    """
    _require(io, "_HDF5IO__dci_queue", "the DataChunkIterator queue", HDMF_CHECKED)
    io._HDF5IO__dci_queue = queue


def mark_written(io: Any, builder: Any) -> None:
    """Record in an hdmf (HDF5IO) or hdmf-zarr (ZarrIO) IO that ``builder`` was written.

    nwb_dask writes some datasets itself (virtual datasets, Zarr arrays filled
    by dask tasks); hdmf must then not write them again, and
    ``io.get_written(builder)`` must be true.  Both IOs keep a
    ``WriteStatusTracker`` as ``_written_builders`` (checked against hdmf 6.2.0
    and hdmf-zarr 0.13.0; HDF5IO's private ``__set_written`` only forwards to
    it, and is used where ``_written_builders`` is missing).  If it
    moves, hdmf would write the dataset a second time (an error) or links to
    it would be missing: refused here instead.
    """
    tracker = getattr(io, "_written_builders", None)
    if tracker is not None and hasattr(tracker, "set_written"):
        tracker.set_written(builder)
    elif hasattr(io, "_HDF5IO__set_written"):  # older hdmf
        io._HDF5IO__set_written(builder)
    else:
        _require(io, "_written_builders", "the written-builder tracker", f"{HDMF_CHECKED}, {HDMF_ZARR_CHECKED}")
    if not io.get_written(builder):
        raise CompatError(f"marking builder {builder.name!r} written had no effect on io.get_written; nwb_dask.compat "
                          f"was checked against {HDMF_CHECKED}, {HDMF_ZARR_CHECKED}")


def h5io_file(io: Any):
    """The open ``h5py.File`` of an hdmf ``HDF5IO`` (its ``_file`` property; hdmf has no public one).

    NWBDaskIO flushes it and records its objects to undo a failed append.
    Checked against hdmf 6.2.0 (``HDF5IO._file``, a read-only property).
    """
    _require(io, "_file", "the open h5py.File", HDMF_CHECKED)
    return io._file


# --------------------------------------------------------------------------- #
# hdmf-zarr (ZarrIO)                                                           #
# --------------------------------------------------------------------------- #
#: The versions the hdmf-zarr accesses below were checked against.
HDMF_ZARR_CHECKED = "hdmf-zarr 0.13.0"


def zarr_object_codec(io: Any) -> type:
    """The numcodecs class a ``ZarrIO`` stores object datasets (references) with (public ``object_codec_class``)."""
    _require(io, "object_codec_class", "the object codec", HDMF_ZARR_CHECKED)
    return io.object_codec_class


def set_zarr_object_codec(io: Any, codec_cls: type) -> None:
    """Set the numcodecs class a ``ZarrIO`` stores object datasets with (``ZarrIO.__codec_cls``).

    hdmf-zarr's ``NWBZarrIO.__init__`` (0.13) does not pass
    ``object_codec_class`` on to ``ZarrIO`` and the property has no setter;
    nwb_dask writes references as JSON (numcodecs >= 0.15 refuses to unpickle
    hdmf-zarr's default Pickle) and switches to Pickle for compound datasets
    holding references.  Checked against hdmf-zarr 0.13.0.  If the attribute
    moves, stores would silently be written with Pickle: refused here instead.
    """
    _require(io, "_ZarrIO__codec_cls", "the object codec class", HDMF_ZARR_CHECKED)
    io._ZarrIO__codec_cls = codec_cls
    if io.object_codec_class is not codec_cls:
        raise CompatError(f"setting ZarrIO.__codec_cls did not change object_codec_class; nwb_dask.compat was "
                          f"checked against {HDMF_ZARR_CHECKED}")


# --------------------------------------------------------------------------- #
# h5py                                                                         #
# --------------------------------------------------------------------------- #
#: The versions the h5py accesses below were checked against.
H5PY_CHECKED = "h5py 3.16.0"


def dataset_filters(dset: Any) -> dict:
    """``{filter name or id: options}`` of a chunked ``h5py.Dataset`` (h5py's ``Dataset._filters``).

    The same mapping ``h5py.filters.get_filters`` builds from the creation
    property list; checked against h5py 3.16.0.
    """
    _require(dset, "_filters", "the dataset's filter pipeline", H5PY_CHECKED)
    return dict(dset._filters or {})


def dataset_xfer_plist(dset: Any):
    """The dataset transfer property list h5py uses for an ``h5py.Dataset`` (``Dataset._dxpl``).

    The MPI collective writer passes it to a low-level ``DatasetID.write`` so
    that an empty selection still joins the collective call with the mode
    ``dset.collective`` set.  Checked against h5py 3.16.0.
    """
    _require(dset, "_dxpl", "the dataset's transfer property list", H5PY_CHECKED)
    return dset._dxpl


# --------------------------------------------------------------------------- #
# zarr                                                                         #
# --------------------------------------------------------------------------- #
#: The versions the zarr accesses below were checked against.
ZARR_CHECKED = "zarr 2.18"


def zarr_dimension_separator(zarr_array: Any) -> str:
    """The separator of a zarr v2 array's chunk keys (``"."`` or ``"/"``; zarr's ``Array._dimension_separator``).

    zarr 2 keeps it only privately (``None`` means the default ``"."``); the
    Zarr sink writes chunk keys itself, so it must use the same one.
    Checked against zarr 2.18.
    """
    return getattr(zarr_array, "_dimension_separator", None) or "."


# --------------------------------------------------------------------------- #
# the optional Zarr stack: zarr 2, hdmf-zarr, lindi                            #
# --------------------------------------------------------------------------- #
class MissingExtraError(ImportError):
    """An optional part of nwb_dask is not installed, or not usable beside what is (zarr 3 where zarr 2 is needed).

    The message names the feature asked for, what is missing and the
    ``pip install "nwb-dask[EXTRA]"`` that installs it; ``extra`` and
    ``feature`` hold the last two.
    """

    def __init__(self, message: str, *, extra: str = "zarr", feature: str = ""):  # defaults: pickles (workers)
        super().__init__(message)
        self.extra = extra
        self.feature = feature


#: What each extra of the Zarr stack brings (for the messages): name, then the modules beyond zarr it needs.
ZARR_EXTRAS = {
    "zarr": ("NWB-Zarr support (zarr 2 and hdmf-zarr)", ("hdmf_zarr",)),
    "index": ("LINDI / kerchunk index support (lindi and zarr 2)", ("lindi",)),
}
#: The distribution of each module, as pip names it.
_DISTRIBUTIONS = {"hdmf_zarr": "hdmf-zarr", "lindi": "lindi", "zarr": "zarr"}


def zarr_problem(what: str, *, extra: str = "zarr", modules: tuple[str, ...] | None = None) -> str | None:
    """Why ``what`` cannot run with the installed Zarr stack (a message naming the extra), or None when it can.

    ``extra`` is ``"zarr"`` (NWB-Zarr: zarr 2 and hdmf-zarr) or ``"index"``
    (LINDI indexes: lindi and zarr 2); ``modules`` the modules beyond zarr
    that ``what`` imports (default: the extra's, ``()`` for zarr alone).
    zarr 3 is refused: hdmf-zarr 0.13 (the newest), lindi 0.4 and nwb_dask's
    Zarr sink and index store are written against zarr 2's API (stores,
    ``.zarray`` metadata, ``zarr.storage.FSStore``/``BaseStore``).
    """
    label, needed = ZARR_EXTRAS[extra]
    install = f'pip install "nwb-dask[{extra}]"'
    try:
        import zarr
    except ImportError as exc:
        why = "zarr is not installed" if isinstance(exc, ModuleNotFoundError) else f"zarr cannot be imported ({exc})"
        return f"{what} needs {label}; {why}: {install}"
    version = str(getattr(zarr, "__version__", "0"))
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 3:
        return (f"{what} needs {label}, but zarr {version} is installed (hdmf-zarr, lindi and nwb_dask's Zarr code "
                f"need zarr 2 until hdmf-zarr supports zarr 3): use an environment with zarr 2 for it ({install} "
                "installs zarr<3); nwb_dask's HDF5 reading and writing work beside zarr 3")
    for module in needed if modules is None else modules:
        try:
            __import__(module)
        except ImportError as exc:
            dist = _DISTRIBUTIONS.get(module, module)
            why = (f"{dist} is not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == module
                   else f"{dist} cannot be imported ({type(exc).__name__}: {exc})")
            return f"{what} needs {label}; {why}: {install}"
    return None


def require_zarr(what: str, *, extra: str = "zarr", modules: tuple[str, ...] | None = None):
    """The ``zarr`` module (zarr 2) for ``what``, with the extra's other modules importable; else :class:`MissingExtraError`.

    The one gate of every Zarr entry point (NWB-Zarr writes and reads,
    convert, verify, the ``nwb-dask`` commands on a store, LINDI indexes):
    the HDF5 core does not depend on zarr, so a missing zarr, hdmf-zarr or
    lindi, or zarr 3 installed, is reported here, naming ``what``, the missing
    piece and ``pip install "nwb-dask[EXTRA]"`` (see :func:`zarr_problem`).
    """
    problem = zarr_problem(what, extra=extra, modules=modules)
    if problem is not None:
        raise MissingExtraError(problem, extra=extra, feature=what)
    import zarr

    return zarr


# --------------------------------------------------------------------------- #
# lindi                                                                        #
# --------------------------------------------------------------------------- #
#: The lindi version the access below was checked against.
LINDI_CHECKED = "lindi 0.4.6"


def lindi_store(handle: Any, url: str):
    """lindi's reference generator over an open ``h5py.File`` whose chunks live at ``url``.

    ``LindiH5ZarrStore.from_file`` takes only a path or URL (and reads a URL
    through lindi's own serial reader); its constructor's private keywords
    (``_file``, ``_url``, ``_opts``, ``_entities_to_close``) take an open
    file, here nwb_dask's handle over its prefetched byte source.  Every
    dataset's chunks are referenced (``num_dataset_chunks_threshold=None``).
    Checked against lindi 0.4.6.
    """
    import inspect

    from lindi.LindiH5ZarrStore.LindiH5ZarrStore import LindiH5ZarrStore
    from lindi.LindiH5ZarrStore.LindiH5ZarrStoreOpts import LindiH5ZarrStoreOpts

    params = inspect.signature(LindiH5ZarrStore.__init__).parameters
    missing = [k for k in ("_file", "_url", "_opts", "_entities_to_close") if k not in params]
    if missing:
        raise CompatError(f"lindi's LindiH5ZarrStore takes no {', '.join(missing)} any more (nwb_dask was checked "
                          f"against {LINDI_CHECKED}); nwb_dask.compat.lindi_store needs updating")
    opts = LindiH5ZarrStoreOpts(num_dataset_chunks_threshold=None)
    return LindiH5ZarrStore(_file=handle.id, _url=url, _opts=opts, _entities_to_close=[handle])


def vds_escape(name: str) -> str:
    """A file name as a virtual-dataset source name: HDF5 reads ``%b``, ``%%`` ... in it like printf, so ``%`` doubles."""
    return name.replace("%", "%%")


def vds_unescape(name: str) -> str:
    """The file a virtual-dataset source name stored by :func:`vds_escape` means (``%%`` back to ``%``)."""
    return name.replace("%%", "%")

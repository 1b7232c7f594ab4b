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
import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .blocks import block_label, checked_array, checked_block
from .chunking import align_to_chunks, block_selections, chunk_offsets
from .codecs import Codec, CodecError, codec as make_codec
from .atomic import AtomicOutput, guard_sigterm, release_sigterm
from .io import DaskDataIO
from .repack import DEFAULT_MIN_BYTES
from .writer import WriteStats

__all__ = ["ConvertResult", "NWBZarrDaskIO", "convert", "is_zarr_path", "numcodecs_pipeline", "write_nwb_zarr"]  # noqa: F822 - NWBZarrDaskIO: module __getattr__

_ZARR_CODECS = ("none", "gzip", "zstd", "blosc")


def numcodecs_pipeline(c: Codec, itemsize: int) -> tuple[list, Any]:
    """The numcodecs ``(filters, compressor)`` that decode what ``c.encode`` produces.

    Raises
    ------
    CodecError
        For codecs whose HDF5 byte format has no numcodecs equivalent
        (``lz4``, ``bitshuffle``).
    """
    import numcodecs

    o = c.options
    if c.name not in _ZARR_CODECS:
        raise CodecError(f"codec {c.name!r} has no NWB-Zarr equivalent; use one of {list(_ZARR_CODECS)}")
    filters = [numcodecs.Shuffle(elementsize=itemsize)] if o.get("shuffle") is True and itemsize > 1 else []
    if c.name == "none":
        return [], None
    if c.name == "gzip":
        return filters, numcodecs.Zlib(level=o["level"])
    if c.name == "zstd":
        return filters, numcodecs.Zstd(level=o["level"])
    shuffle = {"none": numcodecs.Blosc.NOSHUFFLE, "byte": numcodecs.Blosc.SHUFFLE, "bit": numcodecs.Blosc.BITSHUFFLE}
    return filters, numcodecs.Blosc(cname=o["cname"], clevel=o["level"], shuffle=shuffle[o["shuffle"]])


def _zarr_codec(c: Codec, itemsize: int) -> Codec:
    """The codec as stored: HDF5's shuffle of 1-byte items is a no-op numcodecs cannot declare."""
    if itemsize == 1 and c.options.get("shuffle") is True:
        return make_codec(c, shuffle=False)
    return c


def is_zarr_path(path: str | os.PathLike) -> bool:
    """A Zarr store: an existing directory, or a name ending in ``.zarr``."""
    p = os.fspath(path)
    return os.path.isdir(p) or p.rstrip("/").endswith(".zarr")


# --------------------------------------------------------------------------- #
# workers: compute, encode, store                                              #
# --------------------------------------------------------------------------- #
def _store_block(block: np.ndarray, declared, dtype, label: str, store, key_prefix: str, selection: tuple,
                 chunk_shape: tuple, codec: Codec | None, separator: str, fill) -> int:
    """Check one computed block (the rule of every write path), encode its chunks and write them into the store.

    Returns the stored bytes.
    """
    from .codecs import pad_chunk

    block = checked_block(block, declared, shape=tuple(s.stop - s.start for s in selection), stored=dtype,
                          label=label, selection=selection)
    block = np.ascontiguousarray(block)
    stored = 0
    for offset, local in chunk_offsets(selection, chunk_shape):
        chunk = pad_chunk(block[local], chunk_shape, fill)
        data = codec.encode(chunk)[1] if codec is not None else chunk.tobytes()
        index = separator.join(str(o // c) for o, c in zip(offset, chunk_shape))
        store[f"{key_prefix}{index}"] = bytes(data)
        stored += len(data)
    return stored


def store_arrays(jobs: Sequence[tuple[Any, Any, Codec]], *, scheduler: Any = None, progress: bool = True) -> WriteStats:
    """Write dask arrays into existing Zarr arrays, each task storing its own chunks.

    Parameters
    ----------
    jobs : sequence of (zarr.Array, dask array, Codec)
        Target array (created with :func:`numcodecs_pipeline` of the codec),
        source, and the codec to encode with.
    scheduler : optional
        Any dask scheduler or a ``distributed.Client`` (default: the active one).
    progress : bool
        A progress bar (dask's for local schedulers, distributed's otherwise).

    Returns
    -------
    WriteStats
    """
    import dask

    t0 = time.perf_counter()
    stats = WriteStats(datasets=[z.path for z, _, _ in jobs])
    tasks = []
    for zarr_array, array, c in jobs:
        if tuple(array.shape) != tuple(zarr_array.shape):
            raise ValueError(f"dataset {zarr_array.path!r}: source shape {array.shape} != store shape {zarr_array.shape}")
        chunk_shape = tuple(zarr_array.chunks)
        aligned = align_to_chunks(array, chunk_shape)  # blocks are checked, then cast to the store's dtype
        if aligned.chunks != array.chunks:  # the rechunk would merge blocks (promoting mixed dtypes): check them first
            aligned = align_to_chunks(checked_array(array, f"/{zarr_array.path}"), chunk_shape)
        array = aligned
        prefix = f"{zarr_array.path}/" if zarr_array.path else ""
        sep = getattr(zarr_array, "_dimension_separator", None) or "."
        fill = zarr_array.fill_value if zarr_array.fill_value is not None else 0
        blocks = array.to_delayed().ravel()
        for block, (idx, sel) in zip(blocks, block_selections(array.chunks)):
            label = block_label(f"/{zarr_array.path}", sel, idx)
            tasks.append(dask.delayed(_store_block, pure=False)(
                block, array.dtype, zarr_array.dtype, label, zarr_array.store, prefix, sel, chunk_shape, c, sep, fill))
        stats.logical_bytes += int(array.size) * zarr_array.dtype.itemsize
        stats.chunks += int(np.prod([-(-s // c) for s, c in zip(array.shape, chunk_shape)])) if array.size else 0
    if tasks:
        stats.stored_bytes = int(sum(_compute_with_progress(tasks, scheduler, progress)))
    stats.seconds = time.perf_counter() - t0
    return stats


def _compute_with_progress(tasks: list, scheduler: Any, progress: bool) -> list:
    import dask

    from .scheduler import active_scheduler

    info = active_scheduler(scheduler)
    if info.kind == "distributed":
        client = info.client
        futures = client.compute(tasks)
        try:
            if progress:
                from distributed import progress as dprogress

                dprogress(futures, scheduler=client.scheduler.address)  # this client's cluster, not the default's
            return client.gather(futures)
        except BaseException:
            _abandon(client, futures)
            raise
    kwargs = {"scheduler": scheduler} if scheduler is not None and not hasattr(scheduler, "submit") else {}
    pool = None
    if info.kind == "threads":
        # A pool of our own, shut down (waiting) before an error reaches the caller: dask's shared
        # pool would keep running the tasks started before the error, whose chunk writes would
        # re-create the partial store the caller deletes.  (The processes scheduler already
        # waits for its pool.)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(info.workers, thread_name_prefix="nwb_dask-zarr")
        kwargs = {"scheduler": "threads", "pool": pool}
    try:
        if progress and len(tasks) > 4:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return list(dask.compute(*tasks, **kwargs))
        return list(dask.compute(*tasks, **kwargs))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _abandon(client, futures: list, timeout: float = 60.0) -> None:
    """Cancel a failed write's tasks and wait for those already running on a worker to end.

    Every task writes its chunks into the store itself: one still running when
    the caller deletes the partial store would re-create it with its chunks.
    """
    keys = {f.key for f in futures}
    client.cancel(futures)

    def running(dask_worker, keys=keys) -> int:
        return sum(1 for ts in dask_worker.state.executing if ts.key in keys)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(client.run(running).values()):
                return
        except Exception:  # the cluster is gone: nothing runs any more
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- #
# the IO class                                                                 #
# --------------------------------------------------------------------------- #
def _zarr_io_base():
    from hdmf_zarr.nwb import NWBZarrIO

    return NWBZarrIO


@functools.lru_cache(maxsize=1)
def _io_class() -> type:
    """Define :class:`NWBZarrDaskIO` on first use.

    hdmf-zarr (and zarr) are imported only when NWB-Zarr is used, so that
    ``import nwb_dask`` does not need them, and a script next to a file named
    ``zarr.py`` (benchmarks/zarr.py) cannot break ``import nwb_dask``.
    """
    NWBZarrIO = _zarr_io_base()

    class NWBZarrDaskIO(NWBZarrIO):
        """hdmf-zarr's ``NWBZarrIO`` whose ``write``/``export`` store :class:`~nwb_dask.DaskDataIO` datasets in parallel.

        hdmf-zarr writes the structure; each ``DaskDataIO`` becomes a Zarr array
        with its codec (as numcodecs filters/compressor) and chunk shape, filled by
        dask tasks that each write their own chunks (:func:`store_arrays`).

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
        **kwargs
            Passed to ``NWBZarrIO``.  Object references are stored with
            ``numcodecs.JSON`` unless ``object_codec_class`` says otherwise.
        """

        def __init__(self, path, mode: str = "r", *, scheduler: Any = None, progress: bool = True, **kwargs: Any):
            self.scheduler = scheduler
            self.progress = progress
            self._jobs: list = []
            #: Statistics of the last write/export.
            self.stats: WriteStats | None = None
            codec_cls = kwargs.pop("object_codec_class", None)
            super().__init__(os.fspath(path) if isinstance(path, (str, os.PathLike)) else path, mode=mode, **kwargs)
            self._object_codec = codec_cls
            if mode != "r":
                import numcodecs

                # References as JSON, not hdmf-zarr's default Pickle: numcodecs (>= 0.15) refuses to
                # unpickle unless told to, so pickled references make stores unreadable by default.
                # NWBZarrIO (hdmf-zarr 0.13) does not pass object_codec_class on to ZarrIO, hence the
                # private attribute.
                self._ZarrIO__codec_cls = codec_cls or numcodecs.JSON

        def write(self, container, **kwargs: Any) -> None:
            """Write an NWBFile; ``DaskDataIO`` datasets are stored by dask tasks in parallel."""
            self._run(lambda: super(_io_class(), self).write(container, **kwargs))

        def export(self, src_io, nwbfile=None, write_args: dict | None = None, **kwargs: Any) -> None:
            """``NWBZarrIO.export`` with ``DaskDataIO`` fields stored in parallel (see :func:`convert`)."""
            self._run(lambda: super(_io_class(), self).export(src_io=src_io, nwbfile=nwbfile,
                                                                write_args=dict(write_args or {}), **kwargs))

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
                    import numcodecs

                    saved, self._ZarrIO__codec_cls = self._ZarrIO__codec_cls, numcodecs.Pickle
                    try:
                        with _pickle_allowed():
                            return super().write_dataset(**kwargs)
                    finally:
                        self._ZarrIO__codec_cls = saved
                return super().write_dataset(**kwargs)
            array = data.array
            dtype = np.dtype(array.dtype)
            if dtype.byteorder == ">":  # stored little-endian (nwb_dask's codecs encode little-endian data)
                dtype = dtype.newbyteorder("<")
            c = _zarr_codec(data.codec, dtype.itemsize)
            filters, compressor = numcodecs_pipeline(c, dtype.itemsize)
            fill = data.io_settings.get("fillvalue", 0) or 0
            dset = parent.create_dataset(builder.name, shape=tuple(array.shape), dtype=dtype,
                                         chunks=tuple(data.data.chunk_shape), filters=filters or None,
                                         compressor=compressor, fill_value=fill)
            dset.attrs["zarr_dtype"] = dtype.str
            if builder.dimension_labels is not None:
                builder.attributes["_ARRAY_DIMENSIONS"] = builder.dimension_labels
            self.write_attributes(dset, builder.attributes)
            self._written_builders.set_written(builder)
            self._jobs.append((dset, array, c))
            return dset

    return NWBZarrDaskIO


def __getattr__(name: str):
    if name == "NWBZarrDaskIO":
        return _io_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _pickle_allowed(allowed: bool = True):
    """numcodecs' switch for unpickling (off by default since numcodecs 0.15), set for a ``with`` block."""
    from numcodecs import pickles

    saved = getattr(pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True)
    pickles.ALLOW_UNSAFE_PICKLE_DECODE = allowed or saved
    try:
        yield
    finally:
        pickles.ALLOW_UNSAFE_PICKLE_DECODE = saved


def _pickled_arrays(store: Path) -> list[str]:
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
                   progress: bool = True, storage_options: dict | None = None) -> WriteStats:
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

    Returns
    -------
    WriteStats
    """
    if "://" in os.fspath(path):
        return _write_url(nwbfile, os.fspath(path), overwrite, scheduler, progress, storage_options or {})
    out = Path(path).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    with AtomicOutput(out) as atomic:
        with _io_class()(atomic.temp, "w", scheduler=scheduler, progress=progress) as io:
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
        with _io_class()(url, "w", scheduler=scheduler, progress=progress, storage_options=options) as io:
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


# --------------------------------------------------------------------------- #
# convert                                                                      #
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class ConvertResult:
    """What :func:`convert` did."""

    input: Path
    output: Path
    direction: str  # "hdf5->zarr" or "zarr->hdf5"
    datasets: list[str]
    seconds: float
    verify_seconds: float
    verified: bool
    stats: WriteStats
    #: The schema migrations pynwb's export applied to an older file (nwb_dask.migrations.Migration).
    migrations: list = dataclasses.field(default_factory=list)

    def report(self) -> str:
        from .repack import migration_lines

        return "\n".join([f"{self.input} -> {self.output} ({self.direction}): {len(self.datasets)} large dataset(s), "
                          f"{self.stats.logical_bytes / 1e6:.0f} MB written in parallel, {self.seconds:.1f} s"
                          + (f" ({self.verify_seconds:.1f} s verifying)" if self.verified else " (not verified)")]
                         + migration_lines(self.migrations))


def _zarr_array_path(value: Any) -> str | None:
    """``stored`` for :func:`nwb_dask.repack.large_fields`: arrays of a Zarr store."""
    import zarr

    return "/" + value.path if isinstance(value, zarr.Array) else None


def _source_codec(codec: Any, source_codec: Codec | None) -> Codec:
    if codec == "source":
        c = source_codec or make_codec("gzip")
        return c if c.name in _ZARR_CODECS else make_codec("gzip")
    return make_codec(codec)


def _zarr_source_codec(arr) -> Codec | None:
    """nwb_dask's codec equivalent of a zarr array's numcodecs pipeline, if there is one."""
    comp, filters = arr.compressor, list(arr.filters or [])
    shuffle = any(type(f).__name__ == "Shuffle" for f in filters)
    if comp is None:
        return make_codec("none") if not filters else None
    name = type(comp).__name__
    if name == "Zlib":
        return make_codec("gzip", level=comp.level, shuffle=shuffle)
    if name == "Zstd":
        return make_codec("zstd", level=comp.level, shuffle=shuffle)
    if name == "Blosc":
        return make_codec("blosc", cname=comp.cname, level=comp.clevel,
                          shuffle={0: "none", 1: "byte", 2: "bit"}.get(comp.shuffle, "byte"))
    return None


def convert(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    codec: Any = "source",
    chunks: Any = "source",
    min_bytes: int = DEFAULT_MIN_BYTES,
    verify: bool = True,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    allow_pickle: bool = False,
) -> ConvertResult:
    """Convert an HDF5 NWB file to an NWB-Zarr store, or back, in parallel and verified.

    The direction follows the paths: a Zarr store (a directory, or a name
    ending in ``.zarr``) on one side, an HDF5 file on the other.  pynwb (or
    hdmf-zarr) reads the input, never for writing; every numeric dataset of
    at least ``min_bytes`` is read lazily by nwb_dask and written in parallel
    (to Zarr: each dask task stores its own chunks; to HDF5: nwb_dask's
    parallel writer); HDMF's export writes everything else, keeping object
    IDs, references and links.  The output is built under a temporary name,
    its large datasets compared with the input element by element (and its
    object IDs with the input's), and only then renamed into place.

    Parameters
    ----------
    source, output : str or PathLike
    codec : codec spec or "source"
        Compression of the large datasets; ``"source"`` (default) keeps each
        one's codec where the other format has it, else gzip.
    chunks : "source", "auto", tuple or mapping
        As for :func:`nwb_dask.repack` (default: keep the input's chunks).
    min_bytes : int
        Smaller datasets are exported as they are.
    verify : bool
        Compare before renaming (default True).
    overwrite : bool
        Replace an existing ``output``.
    scheduler : optional
        Dask scheduler or Client.
    progress : bool
        Progress bar.
    allow_pickle : bool
        Read a Zarr input whose object datasets use numcodecs' Pickle codec
        (hdmf-zarr's default for references; unpickling can run code, so
        numcodecs refuses it unless told).  nwb_dask writes references as
        JSON, and Pickle only for compound datasets holding references.

    Returns
    -------
    ConvertResult
    """
    from pynwb import NWBHDF5IO

    from .io import NWBDaskIO
    from .reader import read_dataset, release_handles
    from .errors import check_input_file, looks_like_zarr
    from .migrations import keep_user_metadata
    from .repack import RepackVerificationError, _chunks_for, _in_file, large_fields, own_codec, swap_field

    t0 = time.perf_counter()
    src, out = Path(source).absolute(), Path(output).absolute()
    if not src.exists():
        raise FileNotFoundError(f"no such file or store: {src}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    if out.resolve() == src.resolve():
        raise ValueError(f"output {out} is the input; convert writes a new file")
    to_zarr = is_zarr_path(out)
    from_zarr = src.is_dir()
    if from_zarr and not looks_like_zarr(src):
        raise IsADirectoryError(f"{src} is a directory without Zarr metadata (.zgroup or zarr.json); convert reads "
                                "an NWB (HDF5) file or an NWB-Zarr store")
    if to_zarr == from_zarr:
        kind = "Zarr stores" if to_zarr else "HDF5 files"
        raise ValueError(f"both {src} and {out} are {kind}; convert goes from HDF5 to Zarr or back "
                         "(nwb-dask repack rewrites an HDF5 file)")
    if not from_zarr:
        check_input_file(src, nwb=True, tool="convert")  # not HDF5, or plain HDF5: say so, naming the file
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    names: list[str] = []
    migrations: list = []
    verify_seconds = 0.0
    with AtomicOutput(out) as atomic:  # a file is fsynced, a store's files are not (see docs/zarr.md)
        temp = atomic.temp
        if from_zarr:
            pickled = _pickled_arrays(src)
            if pickled and not allow_pickle:
                raise ValueError(
                    f"{src} stores {len(pickled)} dataset(s) with numcodecs' Pickle codec ({', '.join(pickled[:3])}"
                    f"{', ...' if len(pickled) > 3 else ''}), which can run code when read; if you trust the store, "
                    "pass allow_pickle=True (nwb-dask convert --allow-pickle)")
            with _pickle_allowed(bool(pickled)), _zarr_io_base()(str(src), "r") as src_io:
                nwbfile = src_io.read()
                for container, key, arr in large_fields(nwbfile, min_bytes, _zarr_array_path):
                    name = "/" + arr.path
                    c = _source_codec(codec, _zarr_source_codec(arr))
                    shape = _chunks_for(chunks, arr, name)
                    swap_field(container, key, DaskDataIO(read_dataset(src, name), codec=c, chunks=shape))
                    names.append(name)
                keep_user_metadata(nwbfile, src_io)
                with NWBDaskIO(temp, "w", atomic=False, scheduler=scheduler, progress=progress) as io:
                    io.export(src_io, nwbfile, write_args={"link_data": False})  # HDMF's rule across backends
                    stats = io.stats or WriteStats()
                ids_in = _object_ids(nwbfile)
        else:
            with NWBHDF5IO(str(src), "r", load_namespaces=True) as src_io:
                nwbfile = src_io.read()
                for container, key, dset in large_fields(nwbfile, min_bytes, _in_file(src)):
                    c = _source_codec(codec, own_codec(dset))
                    shape = _chunks_for(chunks, dset, dset.name)
                    swap_field(container, key, DaskDataIO(read_dataset(src, dset.name), codec=c, chunks=shape))
                    names.append(dset.name)
                keep_user_metadata(nwbfile, src_io)
                with _io_class()(temp, "w", scheduler=scheduler, progress=progress) as io:
                    io.export(src_io, nwbfile, write_args={"link_data": False})  # HDMF's rule across backends
                    stats = io.stats or WriteStats()
                ids_in = _object_ids(nwbfile)
            nwbfile = container = dset = None  # noqa: F841 - release the input's HDF5 objects
        if verify:
            tv = time.perf_counter()
            try:
                diffs = _verify(src, temp, names, ids_in, to_zarr, scheduler, migrations)
            finally:
                release_handles()  # the output (and input) free to open for writing once returned
            verify_seconds = time.perf_counter() - tv
            if diffs:
                raise RepackVerificationError(f"verification failed: the converted copy of {src} differs:\n  "
                                              + "\n  ".join(diffs))
    return ConvertResult(src, out, "hdf5->zarr" if to_zarr else "zarr->hdf5", names,
                         time.perf_counter() - t0, verify_seconds, verify, stats, migrations)


def _object_ids(nwbfile) -> dict[str, str]:
    return {c.object_id: type(c).__name__ for c in nwbfile.objects.values()}


#: Attributes of hdmf-zarr's layout (dtype, dimension names, links, schema location), not of the NWB file.
_LAYOUT_ATTRS = {"zarr_dtype", "_ARRAY_DIMENSIONS", "zarr_link", ".specloc", "nwb_version"}


def _nodes(path: Path, zarr_store: bool) -> dict[str, tuple]:
    """``{object path: (kind, attributes, size, numeric)}`` of an HDF5 file or Zarr store, as the formats have in common.

    Groups and datasets (HDF5 soft/external links, hdmf-zarr's ``zarr_link``
    and the ``/specifications`` cache are left out); attribute values as
    plain Python (:func:`nwb_dask.migrations.plain`), object references as
    ``("ref", target path)`` whichever way the format stores them; ``numeric``:
    a dataset of numbers or booleans (compared by value).
    """
    from .migrations import plain

    nodes: dict[str, tuple] = {}

    def attrs_of(attrs, ref) -> dict:
        out = {}
        for key in attrs:
            if key in _LAYOUT_ATTRS:
                continue
            value = attrs[key]
            out[key] = ref(value) if ref(value) is not None else plain(value)
        return out

    if zarr_store:
        import zarr

        def zref(value):
            if isinstance(value, dict) and value.get("zarr_dtype") == "object" and isinstance(value.get("value"), dict):
                return ["ref", value["value"].get("path")]
            return None

        with _pickle_allowed():
            root = zarr.open_group(str(path), mode="r")
            nodes["/"] = ("group", attrs_of(root.attrs, zref), None, False)

            def zvisit(name, obj):
                if name == "specifications" or name.startswith("specifications/"):
                    return
                kind = "group" if isinstance(obj, zarr.hierarchy.Group) else "dataset"
                size = None if kind == "group" else int(obj.size)
                nodes["/" + name] = (kind, attrs_of(obj.attrs, zref), size, kind == "dataset" and obj.dtype.kind in "biuf")

            root.visititems(zvisit)
        return nodes
    import h5py

    with h5py.File(path, "r") as f:
        def href(value):
            if isinstance(value, h5py.Reference):
                return ["ref", f[value].name if value else None]
            return None

        def hvisit(group, prefix):
            for name in group:
                link = group.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    continue
                full = f"{prefix}/{name}" if prefix != "/" else f"/{name}"
                if full == "/specifications":
                    continue
                obj = group[name]
                kind = "group" if isinstance(obj, h5py.Group) else "dataset"
                size = None if kind == "group" else int(obj.size)
                nodes[full] = (kind, attrs_of(obj.attrs, href), size, kind == "dataset" and obj.dtype.kind in "biuf")
                if kind == "group":
                    hvisit(obj, full)

        nodes["/"] = ("group", attrs_of(f.attrs, href), None, False)
        hvisit(f, "/")
    return nodes


def _small_values_differ(src: Path, out: Path, to_zarr: bool, paths: list[str]) -> list[str]:
    """The numeric datasets ``paths`` of ``src`` and ``out`` (one HDF5, one Zarr) read whole and compared."""
    import h5py
    import zarr

    from .repack import _equal

    if not paths:
        return []
    h5_path, zarr_path = (src, out) if to_zarr else (out, src)
    diffs = []
    with h5py.File(h5_path, "r") as f, _pickle_allowed():
        z = zarr.open_group(str(zarr_path), mode="r")
        for path in paths:
            zb = z[path.lstrip("/")]
            a, b = np.asarray(f[path][()]), np.asarray(zb[()])
            if zb.attrs.get("zarr_dtype") == "scalar" and b.size == 1:  # hdmf-zarr's scalars are 1-element arrays
                b = b.reshape(())
            if a.shape != b.shape or (a.dtype.kind == "b") != (b.dtype.kind == "b") or not _equal(a, b):
                diffs.append(f"{path}: values differ")
    return diffs


def _verify(src: Path, out: Path, names: list[str], ids_in: dict, to_zarr: bool, scheduler: Any,
            migrations: list) -> list[str]:
    """Object IDs and types as in the input, every object and attribute (bar pynwb's schema migrations,
    appended to ``migrations``), and every numeric dataset equal element by element (the large ones in
    parallel)."""
    from pynwb import NWBHDF5IO

    from .consolidate import _same_values
    from .migrations import compare_nodes
    from .reader import read_dataset

    nodes_in, nodes_out = _nodes(src, not to_zarr), _nodes(out, to_zarr)
    diffs = compare_nodes(nodes_in, nodes_out, str(src), str(out), migrations)
    # The other numeric datasets (smaller than min_bytes, exported by HDMF) compared by value too, read whole.
    small = [p for p, n in nodes_in.items() if n[3] and p not in names and p in nodes_out and nodes_out[p][3]]
    diffs += _small_values_differ(src, out, to_zarr, small)
    reader = _zarr_io_base() if to_zarr else NWBHDF5IO
    with _pickle_allowed(to_zarr), reader(str(out), "r") as io:  # our own output: safe to unpickle
        ids_out = _object_ids(io.read())
    if ids_out != ids_in:
        missing = sorted(set(ids_in) - set(ids_out))[:5]
        extra = sorted(set(ids_out) - set(ids_in))[:5]
        diffs.append(f"objects differ: missing {missing}, unexpected {extra}")
    pairs = {}
    for name in names:
        a, b = read_dataset(src, name), read_dataset(out, name)
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs.append(f"{name}: {a.shape} {a.dtype} became {b.shape} {b.dtype}")
        else:
            pairs[name] = (a, b)
    same = _same_values(list(pairs.values()), scheduler) if pairs else []
    diffs += [f"{name}: values differ" for name, ok in zip(pairs, same) if not ok]
    return diffs

"""Lazy readers: HDF5/NWB datasets as dask arrays (local files; first part of the reader issue).

:func:`read_dataset` returns a dask array whose blocks are whole HDF5 chunks
merged to a target size.  Each task carries only a picklable reference
(file path, dataset path, selection, codec); workers open the file
themselves and keep the handle (:func:`_open`, one per process and path).
Where nwb_dask's codecs can decode the dataset's filters, tasks read raw
chunks with ``read_direct_chunk`` and decode them on the worker, outside
HDF5's serial filter pipeline; otherwise they fall back to normal h5py reads.

Remote files (``http(s)://``, ``s3://``) are opened through
:mod:`nwb_dask.sources`: metadata and the chunk index are read once through a
cached range-reading file object; each task then fetches its chunks' bytes
with coalesced, parallel range requests and decodes them on the worker.
"""

from __future__ import annotations

import atexit
import functools
import os
from typing import Any

import numpy as np

from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, block_shape, chunk_overlaps, guess_chunk_shape
from nwb_dask.codecs import Codec, CodecError, chunk_codec
from nwb_dask.compat import vds_unescape

__all__ = ["dataset_array", "is_url", "link_candidates", "missing_virtual_sources", "open_remote", "options_key", "prefetch_remote", "read_dataset",
           "release_handles", "release_remote_handles", "remember", "remote_dataset_array"]


@functools.lru_cache(maxsize=64)
def _open(path: str, mtime: float):
    """This process's read-only handle on ``path`` as of ``mtime`` (opened once, then reused).

    Keyed by modification time too, so a file rewritten in place is reopened
    rather than read through a stale handle.
    """
    import h5py

    try:
        import hdf5plugin  # noqa: F401  (plugin filters for the fallback path)
    except ImportError:  # pragma: no cover
        pass
    return h5py.File(path, "r")


def is_url(path: Any) -> bool:
    return isinstance(path, str) and "://" in path


def options_key(remote_options: dict | None) -> tuple:
    """``remote_options`` as a hashable key (nested dicts such as ``storage_options`` frozen).

    :func:`nwb_dask.sources.byte_source` turns the frozen values back into dicts.
    """
    from nwb_dask.sources import freeze_options

    return freeze_options(remote_options)


@functools.lru_cache(maxsize=64)
def _source(url: str, options: tuple = ()):
    """This process's byte source for ``url`` (connection pool reused across tasks)."""
    from nwb_dask.sources import byte_source

    return byte_source(url, **dict(options))


@functools.lru_cache(maxsize=16)
def _remote_view(url: str, options: tuple = ()):
    """This process's block-cached file object over a remote file (what h5py reads its metadata through)."""
    return _source(url, options).open()


@functools.lru_cache(maxsize=16)
def open_remote(url: str, options: tuple = ()):
    """This process's h5py handle on a remote file (metadata through the cached byte source).

    The source's ``open`` preloads what the on-disk metadata cache holds for
    this version of the file (:mod:`nwb_dask.sources.cache`).
    """
    from nwb_dask.errors import open_hdf5

    return open_hdf5(_remote_view(url, options), name=url)


def prefetch_remote(url: str, options: tuple = (), paths=None):
    """Fetch a remote file's metadata ahead of h5py, a hierarchy level per round trip.

    Without ``paths``, the whole file's, for readers about to walk it all
    (pynwb's ``read()`` does); with paths of objects in the file (e.g. a
    dataset about to be read), only theirs (attributes, chunk index).  See
    :mod:`nwb_dask.hdf5.prefetch`.  Returns its
    :class:`~nwb_dask.hdf5.prefetch.PrefetchStats`, or None for a source
    whose file object keeps no extents (local files).
    """
    from nwb_dask.hdf5.prefetch import prefetch_metadata

    addrs = None
    if paths is not None:
        f = open_remote(url, options)
        addrs = [a for a in (_hard_link_address(f, p) for p in paths) if a is not None]
    return prefetch_metadata(_remote_view(url, options), objects=addrs)


def _hard_link_address(f, path: str) -> int | None:
    """The object header address behind the hard link ``path`` (None for soft or external links).

    From the parent group's link (cheap); ``h5py.h5o.get_info`` would also
    walk a dataset's whole chunk index to report its size.
    """
    import posixpath

    import h5py

    parent, name = posixpath.split(path.rstrip("/"))
    try:
        group = f[parent or "/"]  # held: a temporary group's id closes before get_info runs
        info = group.id.links.get_info(name.encode())
    except (KeyError, ValueError):
        return None
    return info.u if info.type == h5py.h5l.TYPE_HARD else None


def remember(url: str, options: tuple = ()) -> bool:
    """Store the metadata the :func:`open_remote` handle of ``url`` has read so far in the on-disk cache.

    The readers call it once a remote open is done (``read_nwb`` after
    ``io.read()`` and daskify, ``read_dataset`` after the dataset's chunk
    layout is known), so the next open of the unchanged file, in any process,
    costs one request.  Returns whether an entry was written (False when the
    cache is off, the file has no ETag/Last-Modified, or nothing new was read).
    """
    from nwb_dask.sources.cache import remember as store

    return store(_source(url, options), _remote_view(url, options))


def release_handles() -> None:
    """Drop this process's cached read-only handles on local files (they reopen on the next read).

    Writers that read back what they wrote (repack, convert and consolidate
    verify their output) call this before handing the file over, so the
    caller can open it for writing at once: HDF5 refuses ``"r+"`` on a file
    this process still holds read-only.
    """
    _open.cache_clear()


def release_remote_handles() -> None:
    """Drop this process's remote handles, file views and byte sources: the next open of a URL starts afresh.

    (A file replaced at the same URL is otherwise read through the handle of
    its first open; tests and benchmarks use it for a cold open.)
    """
    open_remote.cache_clear()
    _remote_view.cache_clear()
    _source.cache_clear()


def _close_handles() -> None:
    """Close this process's cached handles while the interpreter is still whole (atexit).

    An h5py file opened over a Python file object (the remote views above)
    that is still open when the interpreter finalises calls back into
    half-destroyed Python objects (with s3fs's event-loop thread alive this
    crashed the interpreter on exit), and HDF5 objects left for the C
    library's own exit handler crashed it too (a virtual dataset's creation
    property list, kept alive by a traceback, closed after h5py was gone).
    """
    import gc

    release_remote_handles()
    _open.cache_clear()
    gc.collect()


atexit.register(_close_handles)


def _covering(index: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple | None]:
    """Split a basic numpy index into the box of elements it touches and an index into that box.

    ``x[index] == x[region][rest]`` (``rest`` is None when it would select
    everything), with ``region`` a tuple of step-1 slices, one per axis.
    Integers, slices of any step, ``Ellipsis``, ``None`` and integer or
    boolean arrays (applied after, within the span they touch) are handled.
    """
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        k = next(j for j, i in enumerate(index) if i is Ellipsis)
        named = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (slice(None),) * (len(shape) - named) + index[k + 1 :]
    named = sum(1 for i in index if i is not None)
    if named > len(shape):
        raise IndexError(f"too many indices ({named}) for an array of shape {shape}")
    index = index + (slice(None),) * (len(shape) - named)
    region: list[slice] = []
    rest: list[Any] = []
    axis = 0
    for i in index:
        if i is None:
            rest.append(None)
            continue
        n = shape[axis]
        axis += 1
        if isinstance(i, slice):
            r = range(*i.indices(n))
            if not r:
                region.append(slice(0, 0))
                rest.append(slice(None))
                continue
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            region.append(slice(lo, hi))
            end = r[-1] - lo + (1 if r.step > 0 else -1)
            rest.append(slice(r[0] - lo, None if end < 0 else end, r.step))
        elif isinstance(i, (int, np.integer)):
            j = int(i) + n if int(i) < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"index {int(i)} is out of bounds for axis {axis - 1} with size {n}")
            region.append(slice(j, j + 1))
            rest.append(0)
        else:  # fancy: read the span of the indices, let numpy select within it
            arr = np.asarray(i)
            if arr.dtype == bool or arr.size == 0:
                region.append(slice(0, n))
                rest.append(arr)
                continue
            arr = np.where(arr < 0, arr + n, arr)
            if arr.min() < 0 or arr.max() >= n:
                raise IndexError(f"index out of bounds for axis {axis - 1} with size {n}")
            lo = int(arr.min())
            region.append(slice(lo, int(arr.max()) + 1))
            rest.append(arr - lo)
    plain = all(isinstance(r, slice) and r == slice(0, s.stop - s.start, 1) for r, s in zip(rest, region))
    return tuple(region), None if plain and len(rest) == len(region) else tuple(rest)


class _Chunks:
    """A chunked dataset as a picklable array-like for ``dask.array.from_array``.

    Holds plain values only (no open h5py objects); ``__getitem__`` reads the
    chunks a selection touches and decodes them in the calling process.
    Reading through dask's ``getter`` lets dask fuse a later slice into the
    read (``x[5:7]`` of a 64 MiB block reads only the chunks of rows 5-6), so
    blocks can be large for throughput without making small windows costly.
    """

    def __init__(self, where: tuple, name: str, shape: tuple, dtype, chunk_shape: tuple, codec, fill):
        self.where, self.name = where, name
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.chunk_shape, self.codec, self.fill = tuple(chunk_shape), codec, fill

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where[0]!r}, {self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, index: Any) -> np.ndarray:
        region, rest = _covering(index, self.shape)
        out = self._read(region)
        return out if rest is None else out[rest]

    def _read(self, region: tuple[slice, ...]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_into(self, dest: np.ndarray, within: tuple[slice, ...], data: bytes, mask: int) -> None:
        """Decode one chunk's bytes; ``dest[...] = chunk[within]``, in place when ``dest`` is the whole chunk."""
        if dest.shape == self.chunk_shape and dest.flags.c_contiguous:
            self.codec.decode(data, self.dtype, self.chunk_shape, mask, out=dest)
        else:
            dest[...] = self.codec.decode(data, self.dtype, self.chunk_shape, mask)[within]

    def _chunk_error(self, exc: Exception, offset: tuple, byte_offset: int | None, nbytes: int) -> CodecError:
        """``exc`` (a chunk that does not decode) as a CodecError naming the file, dataset and chunk.

        The codec knows only bytes and shapes; here the file, the dataset and
        the chunk's offset (its first element, and where its bytes are stored)
        are known, so a corrupt chunk can be found and checked with h5py.
        """
        where = f"byte offset {byte_offset}, " if byte_offset is not None else ""
        return CodecError(f"{self.where[0]}: dataset {self.name}: chunk at offset {tuple(int(o) for o in offset)} "
                          f"({where}{nbytes} stored bytes) does not decode: {exc}")

    def _read_through_h5py(self, dset, region):
        """``dset[region]`` through HDF5's own filters; a failure names the file, dataset and region."""
        try:
            return dset[region]
        except OSError as exc:
            box = ", ".join(f"{s.start}:{s.stop}" for s in region)
            raise OSError(f"{self.where[0]}: dataset {self.name}: cannot read [{box}]: {exc}") from exc


class _LocalChunks(_Chunks):
    """A dataset of a local file; ``where = (path, mtime)``."""

    def _read(self, region):
        dset = _open(*self.where)[self.name]
        if self.codec is None:
            return self._read_through_h5py(dset, region)
        out = np.empty(tuple(s.stop - s.start for s in region), self.dtype)
        for offset, local, within in chunk_overlaps(region, self.chunk_shape):
            try:
                mask, data = dset.id.read_direct_chunk(offset)
            except (KeyError, RuntimeError, OSError):  # never written: the fill value
                out[local] = self.fill
                continue
            try:
                self._decode_into(out[local], within, data, mask)
            except CodecError as exc:
                raise self._chunk_error(exc, offset, dset.id.get_chunk_info_by_coord(offset).byte_offset,
                                        len(data)) from exc
        return out


class _RemoteChunks(_Chunks):
    """A dataset of a remote file; ``where = (url, options)``.

    Chunk locations come from this process's cached h5py handle
    (``get_chunk_info_by_coord``): only the index nodes covering the region
    are read, through the cached file view, instead of the whole chunk index
    up front.  The chunks' bytes are then fetched with coalesced range
    requests spread over the source's threads, and each chunk is decoded in
    the thread that fetched it, as soon as it lands, while the others are
    still in flight.
    """

    def _read(self, region):
        dset = open_remote(*self.where)[self.name]
        if self.codec is None:
            return self._read_through_h5py(dset, region)
        out = np.empty(tuple(s.stop - s.start for s in region), self.dtype)
        pieces, wanted = [], []
        for offset, local, within in chunk_overlaps(region, self.chunk_shape):
            info = dset.id.get_chunk_info_by_coord(offset)
            if info.byte_offset is None:  # never written: the fill value
                out[local] = self.fill
                continue
            pieces.append((local, within, info.filter_mask, offset))
            wanted.append((info.byte_offset, info.size))

        def place(i: int, data: bytes) -> None:  # in the thread that fetched the chunk
            local, within, mask, offset = pieces[i]
            try:
                self._decode_into(out[local], within, data, mask)
            except CodecError as exc:
                raise self._chunk_error(exc, offset, wanted[i][0], len(data)) from exc

        _source(*self.where).map_ranges(wanted, place, spread=True)
        return out


def _chunked_array(chunks: _Chunks, blocks: tuple, token: str):
    """``chunks`` as a dask array of ``blocks``, read through dask's slice-fusing getter."""
    import dask.array as da

    return da.from_array(
        chunks,
        chunks=blocks,
        name=f"nwb-dask-read-{token}",
        asarray=False,
        lock=False,
        meta=np.empty((0,) * chunks.ndim, chunks.dtype),
    )


def _remote_array(url: str, name: str, block_bytes: int, direct: bool, options: tuple):
    """A dataset of a remote file as a dask array (see the module docstring)."""
    import h5py

    f = open_remote(url, options)
    if name not in f:
        raise KeyError(f"{url} has no dataset {name!r}")
    dset = f[name]
    if not isinstance(dset, h5py.Dataset):
        raise TypeError(f"{url}:{name} is a {type(dset).__name__}, not a dataset")
    if dset.chunks:  # the chunk index in a round trip per B-tree level, not a request per node
        prefetch_remote(url, options, [name])
    array = remote_dataset_array(dset, url, options, block_bytes, direct)
    remember(url, options)
    return array


def remote_dataset_array(dset, url: str, options: tuple, block_bytes: int, direct: bool):
    """An open dataset of a remote file as a dask array whose tasks fetch their own chunks."""
    from dask.base import tokenize

    name = dset.name
    shape, dtype, chunks, codec, fill = _describe(dset)
    if not shape:
        raise TypeError(f"{url}:{name} is a scalar dataset; read it with h5py")
    if not direct or not chunks:
        codec = None
    chunk_shape = chunks or guess_chunk_shape(shape, dtype, max(1, block_bytes // 8))
    blocks = block_shape(chunk_shape, shape, dtype, block_bytes)
    reader = _RemoteChunks((url, options), name, shape, dtype, chunk_shape, codec, fill)
    return _chunked_array(reader, blocks, tokenize(url, options, name, blocks, codec, direct))


def _describe(dset) -> tuple:
    """Everything a task needs about an open h5py dataset, as plain values."""
    import h5py  # noqa: F401

    shape, dtype, chunks = dset.shape, dset.dtype, dset.chunks
    codec: Codec | None = chunk_codec(dset)  # None: HDF5 converts types and resolves virtual sources itself
    return shape, dtype, chunks, codec, dset.fillvalue


def dataset_array(dset, *, block_bytes: int = DEFAULT_BLOCK_BYTES, direct: bool = True):
    """An open h5py dataset as a lazy dask array that reopens its file on the workers.

    The dataset's own file (``dset.file.filename``) and path (``dset.name``)
    are used, so a dataset reached through an external link is read from the
    link's target file directly.  A virtual dataset whose sources are whole
    datasets tiling it along one axis (what :func:`nwb_dask.join_segments`
    writes) is read from its sources directly, each decoded in parallel;
    other virtual datasets are read through HDF5, which resolves them.

    Parameters
    ----------
    dset : h5py.Dataset
    block_bytes, direct
        As for :func:`read_dataset`.

    Returns
    -------
    dask.array.Array
    """
    from dask.base import tokenize

    if dset.is_virtual:
        missing = missing_virtual_sources(dset)
        if missing:  # HDF5 would read fill values there (zeros) without a word
            raise FileNotFoundError(
                f"{os.path.abspath(dset.file.filename)}:{dset.name} is a virtual dataset over files that are not "
                f"there: {', '.join(missing)} (looked for beside the file, in HDF5_VDS_PREFIX and the working "
                "directory); HDF5 would read fill values for them. Put them back (`nwb-dask links` lists every "
                "source), or read the dataset with h5py to get HDF5's fill values")
        tiled = _virtual_tiles(dset, block_bytes, direct)
        if tiled is not None:
            return tiled
    path = os.path.abspath(dset.file.filename)
    name = dset.name
    shape, dtype, chunks, codec, fill = _describe(dset)
    if not direct:
        codec = None
    if not shape:
        raise TypeError(f"{path}:{name} is a scalar dataset; read it with h5py")
    # Contiguous datasets are read through h5py in blocks of a guessed chunk grid.
    chunk_shape = chunks or guess_chunk_shape(shape, dtype, max(1, block_bytes // 8))
    blocks = block_shape(chunk_shape, shape, dtype, block_bytes)
    mtime = os.path.getmtime(path)
    reader = _LocalChunks((path, mtime), name, shape, dtype, chunk_shape, codec, fill)
    return _chunked_array(reader, blocks, tokenize(path, name, mtime, blocks, codec, direct))


def missing_virtual_sources(dset) -> list[str]:
    """The source files of virtual dataset ``dset`` that HDF5 would not find (their stored names), in order.

    Found as HDF5 looks for them (:func:`link_candidates`); a printf-style
    name (``%b``, an unlimited mapping's series of files) is not checked.
    """
    here, out = os.path.dirname(os.path.abspath(dset.file.filename)), []
    for m in dset.virtual_sources():
        name = m.file_name
        if name == "." or "%b" in name.replace("%%", "") or name in out:
            continue
        if not any(os.path.isfile(c) for c in link_candidates(vds_unescape(name), here, "HDF5_VDS_PREFIX")):
            out.append(name)
    return out


def _virtual_tiles(dset, block_bytes: int, direct: bool):
    """``dset`` read from its sources, if whole source datasets tile it along one axis.

    Each source becomes a dask array of its own (decoded in parallel like any
    dataset) and they are concatenated.  Returns None for any other layout
    (strided or partial selections, gaps, missing sources, a different
    dtype), which HDF5 then reads itself.
    """
    import dask.array as da
    import h5py

    shape, here = dset.shape, os.path.dirname(os.path.abspath(dset.file.filename))
    tiles = []  # (start, stop, dask array)
    for m in dset.virtual_sources():
        vs = m.vspace
        if m.src_space.get_select_type() != h5py.h5s.SEL_ALL or vs.get_select_type() != h5py.h5s.SEL_HYPERSLABS:
            return None
        if not vs.is_regular_hyperslab():
            return None
        start, stride, count, block = vs.get_regular_hyperslab()
        if any(c != 1 and s != b for c, s, b in zip(count, stride, block)):
            return None
        stop = tuple(a + c * b for a, c, b in zip(start, count, block))
        if m.file_name == ".":
            path = os.path.abspath(dset.file.filename)
        else:
            path = next((c for c in link_candidates(vds_unescape(m.file_name), here, "HDF5_VDS_PREFIX")
                         if os.path.isfile(c)), None)
            if path is None:
                return None
        try:
            with h5py.File(os.path.normpath(path), "r") as f:
                src = f.get(m.dset_name)
                if not isinstance(src, h5py.Dataset) or src.dtype != dset.dtype:
                    return None
                if src.shape != tuple(b - a for a, b in zip(start, stop)):
                    return None
                tiles.append((tuple(start), stop, dataset_array(src, block_bytes=block_bytes, direct=direct)))
        except OSError:
            return None
    if not tiles:
        return None
    for axis in range(len(shape)):
        if all(t[0][a] == 0 and t[1][a] == shape[a] for t in tiles for a in range(len(shape)) if a != axis):
            tiles.sort(key=lambda t: t[0][axis])
            edge = 0
            for t in tiles:
                if t[0][axis] != edge:
                    return None
                edge = t[1][axis]
            return da.concatenate([t[2] for t in tiles], axis=axis) if edge == shape[axis] else None
    return None


def check_link_target(f, name: str, path: str) -> None:
    """A clear error for a broken external link, before any task runs."""
    import h5py

    parts = name.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        link = f.get(sub, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            try:
                f[sub]
            except (KeyError, OSError) as exc:
                target = os.path.join(os.path.dirname(path), link.filename)
                raise FileNotFoundError(
                    f"{path}:/{sub} is an external link to {link.filename}:{link.path}, which cannot be "
                    f"opened (looked for {os.path.abspath(target)}): {exc}"
                ) from None


def read_dataset(
    path: str | os.PathLike,
    name: str,
    *,
    block_bytes: int | None = None,
    direct: bool = True,
    remote_options: dict | None = None,
):
    """One HDF5 dataset as a lazy dask array.

    Parameters
    ----------
    path : str or PathLike
        HDF5/NWB file, or a ``http(s)://`` / ``s3://`` (or other fsspec, e.g.
        ``gs://``) URL of an HDF5 file (see :mod:`nwb_dask.sources`).
        :func:`nwb_dask.read_dataset` also takes Zarr stores.
    name : str
        Dataset path inside the file, e.g. ``"acquisition/ElectricalSeries/data"``.
        External links are followed (relative targets resolved as HDF5 does);
        a broken link is a ``FileNotFoundError`` naming the link and target.
    block_bytes : int, optional
        Target size of a dask block; blocks are whole HDF5 chunks.  Default
        64 MiB (:data:`nwb_dask.chunking.DEFAULT_BLOCK_BYTES`).  A slice of the
        array reads only the chunks it touches, so large blocks cost small
        windows nothing.
    direct : bool
        Read raw chunks and decode them on the workers when nwb_dask's codecs
        can (default); ``False`` always reads through h5py.
    remote_options : dict, optional
        Settings of the remote byte source for URLs (see
        :func:`nwb_dask.sources.byte_source`): ``retries``, ``backoff``,
        ``max_gap``, ... of :class:`nwb_dask.sources.HTTPByteSource`; or
        ``storage_options`` (a dict) to read through fsspec
        (:class:`nwb_dask.sources.FsspecByteSource`), e.g. signed S3 requests
        with ``{"storage_options": {"key": ..., "secret": ..., "client_kwargs":
        {"endpoint_url": ...}}}`` (needs s3fs), or ``{"anon": False}`` for
        s3fs's default credentials.  Without either, ``s3://`` URLs are read
        anonymously (public buckets).  The options, credentials included, are
        sent to the workers with the tasks.

    Returns
    -------
    dask.array.Array
        Its graph holds no open h5py objects, so it runs on a distributed
        cluster of processes.

    Raises
    ------
    FileNotFoundError, KeyError, TypeError
        Missing file or link target, missing dataset (named), or an object
        that is not a dataset.  A virtual dataset whose source files are not
        all there is a ``FileNotFoundError`` naming them (HDF5 itself would
        read fill values for them without a word).
    """
    import h5py

    from nwb_dask.errors import open_hdf5

    block_bytes = block_bytes or DEFAULT_BLOCK_BYTES
    if is_url(path):
        return _remote_array(path, name, block_bytes, direct, options_key(remote_options))
    path = os.path.abspath(os.fspath(path))
    with open_hdf5(path) as f:  # a missing, non-HDF5 path or a directory: an error naming it
        check_link_target(f, name, path)
        if name not in f:
            raise KeyError(f"{path} has no dataset {name!r}")
        dset = f[name]
        if not isinstance(dset, h5py.Dataset):
            raise TypeError(f"{path}:{name} is a {type(dset).__name__}, not a dataset")
        return dataset_array(dset, block_bytes=block_bytes, direct=direct)


def link_candidates(stored: str, parent_dir: str, env: str) -> list[str]:
    """Where HDF5 looks for a link's target file, in order (H5Lcreate_external, H5Pset_virtual)."""
    out = []
    if os.path.isabs(stored):
        out.append(stored)
        stored = os.path.basename(stored)  # then the bare name, through the prefixes below
    for prefix in filter(None, os.environ.get(env, "").split(os.pathsep)):
        out.append(os.path.join(prefix, stored))
    out += [os.path.join(parent_dir, stored), os.path.abspath(stored)]
    return out

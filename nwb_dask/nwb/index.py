"""NWB files opened through an index: LINDI JSON (``.lindi.json``) and kerchunk reference files.

An index is a JSON file holding an HDF5 file's whole structure (groups,
attributes, small datasets inline) and, for every chunk of the large
datasets, where its bytes are in the original file: ``[url, offset,
length]``.  Opening an NWB file through one costs one request (the index)
and none to the HDF5 file.  The format is fsspec's reference file system,
version 1 (``{"version": 1, "refs": {...}, "templates": {...}}``); LINDI adds
attributes for HDF5 references, soft links and scalars that pynwb needs.

* :class:`IndexStore`: the index as a read-only Zarr v2 store.  Zarr (and
  through it ``lindi.LindiH5pyFile``, which pynwb reads like an h5py file)
  decodes the chunks with the numcodecs pipeline each ``.zarray`` names; the
  store only fetches their bytes, with nwb_dask's byte sources
  (:func:`nwb_dask.sources.byte_source`: coalesced, parallel, retried
  ranges), never lindi's serial reader.
* :func:`read_nwb_index` / :func:`read_index_dataset`: ``read_nwb`` and
  ``read_dataset`` through an index; large datasets become dask arrays of
  whole chunks whose tasks fetch their own chunks.
* Staleness: :func:`nwb_dask.tools.index.write_index` records each source's
  size and validator (ETag, else Last-Modified; local files: size and
  modification time) in
  the index's ``generationMetadata``; before the first chunk of a source is
  read (once per process), :func:`check_source` compares them with the
  source and raises :class:`StaleIndexError` naming the index and the source.
  Indexes written by other tools carry no such record; for them only the
  source's size is checked against the chunk references.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.parse
import uuid
from typing import Any, Iterable, Mapping

import numpy as np

from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, READ_MIN_BYTES, is_large_numeric
from nwb_dask.compat import require_zarr

__all__ = [
    "INDEX_BLOCK_SIZE",
    "IndexStore",
    "StaleIndexError",
    "check_source",
    "is_index",
    "load_index",
    "read_index_dataset",
    "read_nwb_index",
    "require_lindi",
    "source_state",
]

#: Block size of the read of a remote index: an index smaller than this is one request.
INDEX_BLOCK_SIZE = 64 << 20
#: The key of nwb_dask's record in an index's ``generationMetadata``.
RECORD_KEY = "nwb_dask"


class StaleIndexError(OSError):
    """An index no longer describes its source file (size, ETag, Last-Modified or mtime changed)."""


def require_lindi(what: str = "opening or writing a LINDI / kerchunk index"):
    """The ``lindi`` package, or :class:`nwb_dask.compat.MissingExtraError` (an ImportError) naming ``nwb-dask[index]``.

    lindi 0.4 needs zarr 2, as the :class:`IndexStore` does: zarr missing or
    zarr 3 installed is reported the same way (:func:`nwb_dask.compat.require_zarr`).
    """
    require_zarr(what, extra="index")
    import lindi

    return lindi


def _url_path(path: str) -> str:
    return urllib.parse.urlsplit(path).path if "://" in path else path


def is_index(path: Any) -> bool:
    """Whether ``path`` names an index: a file or URL whose name ends in ``.json`` (``.lindi.json``, kerchunk's)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    return _url_path(os.fspath(path)).lower().endswith(".json")


# --------------------------------------------------------------------------- #
# Loading an index                                                             #
# --------------------------------------------------------------------------- #
def load_index(path: str | os.PathLike, remote_options: dict | None = None) -> dict:
    """The reference file system of an index (local path or URL), checked, with templates expanded.

    A URL is read through nwb_dask's byte source (one request for an index
    smaller than :data:`INDEX_BLOCK_SIZE`, with its retries).  Returns a dict
    with ``refs`` (key -> inline ``str``/``dict`` or ``(url, offset, length)``),
    ``name`` (the index, for messages) and ``metadata`` (``generationMetadata``).

    Raises
    ------
    FileNotFoundError
        A missing local index.
    ValueError
        Not JSON, or not a version-1 reference file system; each names the index.
    """
    name = os.fspath(path)
    if "://" in name:
        from nwb_dask.sources import byte_source

        src = byte_source(name, **(remote_options or {}))
        with src.open(block_size=INDEX_BLOCK_SIZE, cache_blocks=4) as f:
            text = f.read()
    else:
        name = os.path.abspath(name)
        if os.path.isdir(name):
            raise IsADirectoryError(f"{name} is a directory, not an index (a .lindi.json or kerchunk JSON file)")
        with open(name, "rb") as f:  # FileNotFoundError names the path
            text = f.read()
    try:
        rfs = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{name} is not an index: not JSON ({exc}); expected a LINDI (.lindi.json) or "
                         "kerchunk reference file") from None
    return _checked(rfs, name)


def _checked(rfs: Any, name: str) -> dict:
    """The refs of an rfs dict as plain values (templates expanded), or a ValueError naming the index."""
    if not isinstance(rfs, dict) or not isinstance(rfs.get("refs"), dict):
        raise ValueError(f"{name} is not an index: no 'refs' object (expected a LINDI or kerchunk reference file, "
                         "version 1)")
    if rfs.get("version", 1) != 1:
        raise ValueError(f"{name}: reference file version {rfs.get('version')!r} is not supported (only version 1)")
    if rfs.get("gen"):
        raise ValueError(f"{name}: kerchunk 'gen' (generated) references are not supported; expand them first")
    templates = rfs.get("templates") or {}
    refs: dict[str, Any] = {}
    for key, val in rfs["refs"].items():
        if isinstance(val, list):
            if len(val) != 3 or not isinstance(val[0], str) or not all(isinstance(v, int) and v >= 0 for v in val[1:]):
                raise ValueError(f"{name}: reference {key!r} is {val!r}; expected [url, offset, length] "
                                 "(whole-file [url] references are not supported)")
            url = val[0]
            if "{{" in url:
                for t, v in templates.items():
                    url = url.replace("{{" + t + "}}", v)
                if "{{" in url:
                    raise ValueError(f"{name}: reference {key!r} uses an undefined template: {val[0]!r}")
            if url.startswith("./"):
                raise ValueError(f"{name}: reference {key!r} is relative ({url!r}: a file inside a .lindi.tar or "
                                 ".lindi.d index), which is not supported; give an index whose references are "
                                 "absolute paths or URLs")
            refs[key] = (url, val[1], val[2])
        elif isinstance(val, (str, dict)):
            refs[key] = val
        else:
            raise ValueError(f"{name}: reference {key!r} is a {type(val).__name__}; expected a string, an object "
                             "or [url, offset, length]")
    meta = rfs.get("generationMetadata")
    return {"refs": refs, "name": name, "metadata": meta if isinstance(meta, dict) else {}}


def _inline(val: Any) -> bytes:
    """The bytes of an inline reference (fsspec's rules: ``base64:`` prefix, else UTF-8; objects as JSON)."""
    if isinstance(val, dict):
        return json.dumps(val).encode()
    if val.startswith("base64:"):
        import base64

        return base64.b64decode(val[len("base64:"):])
    return val.encode()


# --------------------------------------------------------------------------- #
# Staleness                                                                    #
# --------------------------------------------------------------------------- #
def source_state(url: str, remote_options: dict | None = None) -> dict:
    """What identifies the current version of a source: ``size`` and ``validator`` (``mtime`` for a local file).

    The validator is what the byte source reports with the size
    (:attr:`nwb_dask.sources.HTTPByteSource.validator`: the reply's strong
    ``ETag``, else its ``Last-Modified``; fsspec: ``fs.info``'s), the one
    rule the metadata cache uses too; a new source is asked (one ``HEAD``
    for HTTP, with its retries), so nothing remembered is reported.
    """
    from nwb_dask.sources import byte_source

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme or scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if scheme else url
        st = os.stat(path)
        return {"size": st.st_size, "mtime": st.st_mtime_ns}
    from nwb_dask.sources import RemoteReadError

    src = byte_source(url, **(remote_options or {}))
    try:
        state: dict[str, Any] = {"size": int(src.size)}
    except RemoteReadError as exc:
        if "HTTP 404" in exc.last_error or "HTTP 410" in exc.last_error:
            raise FileNotFoundError(f"{url}: no such file ({exc.last_error})") from exc
        raise
    if getattr(src, "validator", None):
        state["validator"] = src.validator
    return state


def state_differences(recorded: Mapping, now: Mapping) -> list[str]:
    """How ``now`` differs from ``recorded`` (only keys both have), as ``"size 10 -> 12"`` strings."""
    keys = ("size", "validator", "mtime")
    return [f"{k} {recorded[k]!r} -> {now[k]!r}" for k in keys if k in recorded and k in now and recorded[k] != now[k]]


@functools.lru_cache(maxsize=256)
def check_source(index: str, url: str, recorded: tuple, min_size: int, options: tuple = (), opened: str = "") -> None:
    """Raise :class:`StaleIndexError` if ``url`` changed since ``index`` recorded it.

    ``recorded`` is the frozen record of the source (may be empty: indexes
    of other tools); ``min_size`` the end of the last byte the index
    references in it, which the source must reach whatever was recorded.
    Cached: one check per opening of the index (``opened``, a token each
    :class:`IndexStore` draws and its pickles keep), source and process,
    so every ``read_nwb`` checks again and each worker checks once.
    """
    from nwb_dask.sources import thaw

    try:
        now = source_state(url, {k: thaw(v) for k, v in options})
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"index {index} references {url}, which does not exist: {exc}") from None
    diffs = state_differences(dict(recorded), now)
    if diffs:
        raise StaleIndexError(f"index {index} is stale: {url} changed since it was indexed ({'; '.join(diffs)}); "
                              "write a new index (nwb-dask index)")
    if now["size"] < min_size:
        raise StaleIndexError(f"index {index} does not match {url}: it references bytes up to {min_size}, the file "
                              f"has {now['size']}; write a new index (nwb-dask index)")


@functools.lru_cache(maxsize=64)
def _source(url: str, options: tuple = ()):
    """This process's byte source for ``url`` (its connection pool reused across tasks)."""
    from nwb_dask.sources import byte_source, thaw

    return byte_source(url, **{k: thaw(v) for k, v in options})


# --------------------------------------------------------------------------- #
# The store                                                                    #
# --------------------------------------------------------------------------- #
def _zarr_base():
    """zarr 2's ``BaseStore`` (zarr then calls ``getitems`` for a read's chunks), when zarr 2 is installed.

    zarr is the [index] / [zarr] extra: without zarr 2 (none, or zarr 3) the
    class is a plain mapping so that this module (and ``import nwb_dask``)
    still imports; its entry points refuse first (:func:`require_lindi`,
    :func:`read_index_dataset`), so such a store is never handed to zarr.
    """
    try:
        from zarr.storage import BaseStore  # zarr 2 only
    except ImportError:
        from collections.abc import MutableMapping

        return MutableMapping
    return BaseStore


class IndexStore(_zarr_base()):
    """An index as a read-only Zarr v2 store whose chunk bytes come from nwb_dask's byte sources.

    Parameters
    ----------
    index : dict
        As :func:`load_index` returns it.
    remote_options : dict, optional
        Settings of the byte sources (as for :func:`nwb_dask.read_nwb`).
    source : str, optional
        Read the references to the index's one source from this file or URL
        instead (e.g. an index written from a local copy, read from the
        archive's URL); only the recorded size is checked then (validators
        and modification times belong to the file that was indexed).

    ``getitems`` (what zarr calls for the chunks of one read) fetches the
    bytes of all the keys asked for with one ``map_ranges`` call per source
    file: coalesced, parallel, retried; keys the index lacks are left out,
    so zarr fills them with the fill value.
    """

    def __init__(self, index: dict, remote_options: dict | None = None, *, source: str | None = None):
        from nwb_dask.sources import freeze_options

        self.name = index["name"]
        self.options = freeze_options(remote_options)
        self.opened = uuid.uuid4().hex  # staleness is checked once per opening (check_source)
        refs = index["refs"]
        record = (index.get("metadata", {}).get(RECORD_KEY) or {}).get("sources") or {}
        if source is not None:
            urls = sorted({v[0] for v in refs.values() if isinstance(v, tuple)})
            if len(urls) > 1:
                raise ValueError(f"index {self.name} references {len(urls)} files ({', '.join(urls)}); it cannot be "
                                 f"read from the one file {source}")
            if urls and urls[0] != source:
                record = {source: {k: v for k, v in (record.get(urls[0]) or {}).items() if k == "size"}}
                refs = {k: (source, *v[1:]) if isinstance(v, tuple) else v for k, v in refs.items()}
        self.refs = refs
        self.record = {u: _freeze(r) for u, r in record.items()}
        ends: dict[str, int] = {}
        for v in refs.values():
            if isinstance(v, tuple):
                ends[v[0]] = max(ends.get(v[0], 0), v[1] + v[2])
        self.ends = ends
        self._children: dict[str, list[str]] | None = None
        self._parents: dict[str, list[str]] | None = None  # keys by their parent path (subset's lookup)
        self.dataset = ""  # the dataset of a store made by subset()
        self.decoders: tuple = ()  # the decode pipeline run on fetched chunks (subset(decode=True))
        self.hdf5_codec = None  # nwb_dask's codec doing the same (HDF5 deflate [+ shuffle]), if one does
        self.chunk_spec: tuple = ()

    def __repr__(self) -> str:
        return f"IndexStore({self.name!r}, {len(self.refs)} keys)"

    # -- Mapping ------------------------------------------------------------ #
    def __getitem__(self, key: str) -> bytes:
        out = self.getitems([key], contexts={})
        if key not in out:
            raise KeyError(key)
        return out[key]

    def __contains__(self, key: object) -> bool:
        return key in self.refs

    def __iter__(self):
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __setitem__(self, key, value):
        raise PermissionError(f"index {self.name} is read-only")

    def __delitem__(self, key):
        raise PermissionError(f"index {self.name} is read-only")

    def is_writeable(self) -> bool:
        return False

    def listdir(self, path: str = "") -> list[str]:
        """The names directly under ``path`` (built once from the keys; zarr asks this for every group)."""
        if self._children is None:
            children: dict[str, set[str]] = {}
            for key in self.refs:
                parts = key.split("/")
                for i in range(len(parts)):
                    children.setdefault("/".join(parts[:i]), set()).add(parts[i])
            self._children = {k: sorted(v) for k, v in children.items()}
        return list(self._children.get(path.strip("/"), []))

    def subset(self, key: str, *, decode: bool = False) -> "IndexStore":
        """The keys of the dataset ``key`` as a store of their own, relative to it (what its dask tasks carry).

        With ``decode`` (numeric arrays), the store decodes each chunk with
        the numcodecs pipeline its ``.zarray`` names in the thread that
        fetched it, while the other requests are still in flight, and shows
        zarr the array as uncompressed.
        """
        sub = IndexStore.__new__(IndexStore)
        sub.__dict__.update(self.__dict__)
        key = key.strip("/")
        head = key + "/"
        meta = _meta(self, head + ".zarray")
        if meta is not None and meta.get("dimension_separator", ".") == ".":  # flat chunk keys: one pass, kept
            if self._parents is None:
                parents: dict[str, list[str]] = {}
                for k in self.refs:
                    parents.setdefault(k.rpartition("/")[0], []).append(k)
                self._parents = parents
            sub.refs = {k[len(head):]: self.refs[k] for k in self._parents.get(key, [])}
        else:
            sub.refs = {k[len(head):]: v for k, v in self.refs.items() if k.startswith(head)}
        sub.dataset, sub._children, sub._parents, sub.decoders = key, None, None, ()
        meta = _meta(sub, ".zarray")
        if decode and meta is not None and (meta.get("compressor") or meta.get("filters")) \
                and not isinstance(meta["dtype"], list) and np.dtype(meta["dtype"]).kind in "biufc":
            import numcodecs

            chain = [meta["compressor"]] if meta.get("compressor") else []
            chain += list(reversed(meta.get("filters") or []))
            sub.decoders = tuple(numcodecs.get_codec(dict(c)) for c in chain)
            sub.hdf5_codec = _same_as_hdf5_deflate(sub.decoders, np.dtype(meta["dtype"]))
            sub.chunk_spec = (np.dtype(meta["dtype"]), tuple(meta["chunks"]))
            sub.refs[".zarray"] = {**meta, "compressor": None, "filters": None}
        return sub

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_children"] = state["_parents"] = None
        return state

    # -- reading -------------------------------------------------------------- #
    def getitems(self, keys: Iterable[str], *, contexts: Mapping | None = None) -> dict[str, Any]:
        """The bytes of ``keys`` (missing keys left out): inline ones decoded, the others fetched per source file."""
        out: dict[str, Any] = {}
        wanted: dict[str, list[tuple[str, int, int]]] = {}
        for key in keys:
            val = self.refs.get(key)
            if val is None:
                continue
            if isinstance(val, tuple):
                wanted.setdefault(val[0], []).append((key, val[1], val[2]))
            else:
                out[key] = self._chunk(key, _inline(val), None)
        for url, items in wanted.items():
            check_source(self.name, url, self.record.get(url, ()), self.ends.get(url, 0), self.options, self.opened)

            def land(i: int, data: bytes, url=url, items=items):  # in the thread that fetched it
                return self._chunk(items[i][0], data, (url, items[i][1]))

            datas = _source(url, self.options).map_ranges([(o, n) for _, o, n in items], land, spread=True)
            for (key, _, _), data in zip(items, datas):
                out[key] = data
        return out

    def _chunk(self, key: str, data: bytes, where: tuple | None):
        """A fetched value as zarr is to see it: padded (LINDI's rule) or, with ``decoders``, decoded."""
        if not self.decoders or key.rpartition("/")[2].startswith("."):
            return self._padded(key, data)
        try:
            if self.hdf5_codec is not None:
                return self.hdf5_codec.decode(data, *self.chunk_spec)
            for codec in self.decoders:
                data = codec.decode(data)
        except Exception as exc:  # numcodecs raises RuntimeError, zlib.error, ValueError, ...
            from nwb_dask.codecs import CodecError

            at = f" (bytes at offset {where[1]} of {where[0]}, {len(data)} bytes)" if where else " (inline)"
            raise CodecError(f"index {self.name}: dataset {self.dataset}: chunk {key}{at} does not decode with "
                             f"{[c.codec_id for c in self.decoders]}: {type(exc).__name__}: {exc}") from exc
        return data

    def _padded(self, key: str, data: bytes) -> bytes:
        """An uncompressed chunk shorter than a whole chunk, zero-padded (LINDI's rule for split contiguous datasets)."""
        head, _, leaf = key.rpartition("/")
        if not leaf.replace(".", "").isdigit():
            return data
        meta = self.refs.get(f"{head}/.zarray" if head else ".zarray")
        if meta is None:
            return data
        meta = meta if isinstance(meta, dict) else json.loads(_inline(meta))
        if meta.get("compressor") or meta.get("filters"):
            return data
        dtype = np.dtype(meta["dtype"]) if not isinstance(meta["dtype"], list) else None
        if dtype is None or dtype.kind not in "iuf":
            return data
        full = int(np.prod(meta["chunks"])) * dtype.itemsize
        return data + b"\0" * (full - len(data)) if len(data) < full else data


def _same_as_hdf5_deflate(decoders: tuple, dtype: np.dtype):
    """nwb_dask's gzip codec when ``decoders`` (decode order) are exactly HDF5's deflate [+ shuffle], else None.

    The chunks of an index of an HDF5 file are HDF5's own bytes, and
    nwb_dask's deflate engines (libdeflate, ISA-L) inflate them 2-4x faster
    than numcodecs' zlib; any other pipeline is decoded by numcodecs.
    """
    from nwb_dask.codecs import codec_from_numcodecs, numcodecs_pipeline

    if not decoders or type(decoders[0]).__name__ != "Zlib":
        return None
    rest = decoders[1:]
    if any(type(f).__name__ != "Shuffle" or f.elementsize != dtype.itemsize for f in rest) or len(rest) > 1:
        return None
    c = codec_from_numcodecs(decoders[0], list(rest))
    if c is None or c.family.name != "gzip":
        return None
    filters, compressor = numcodecs_pipeline(c, dtype.itemsize)
    same = [f.get_config() for f in filters] == [f.get_config() for f in rest] and compressor is not None \
        and compressor.get_config() == decoders[0].get_config()
    return c if same else None


def _freeze(record: Any) -> tuple:
    return tuple(sorted((k, v) for k, v in record.items() if k in ("size", "validator", "mtime")))


# --------------------------------------------------------------------------- #
# Datasets and files                                                           #
# --------------------------------------------------------------------------- #
def _meta(store: IndexStore, key: str) -> dict | None:
    val = store.refs.get(key)
    if val is None:
        return None
    return val if isinstance(val, dict) else json.loads(_inline(val))


def _dataset(store: IndexStore, name: str, block_bytes: int, remote_options: dict | None):
    """The dataset ``name`` of an index as a dask array (``None`` if it is not an array of the index)."""
    import zarr

    from nwb_dask.zarr.read import zarr_dask

    key = name.strip("/")
    zarray = _meta(store, f"{key}/.zarray" if key else ".zarray")
    attrs = _meta(store, f"{key}/.zattrs" if key else ".zattrs") or {}
    link = attrs.get("_EXTERNAL_ARRAY_LINK")
    if isinstance(link, dict) and link.get("link_type") == "hdf5_dataset":  # LINDI: read from the HDF5 file itself
        from nwb_dask.hdf5.read import read_dataset

        return read_dataset(link["url"], link["name"], block_bytes=block_bytes, remote_options=remote_options)
    if zarray is None:
        return None
    if attrs.get("_SCALAR"):
        raise TypeError(f"{store.name}:{name} is a scalar dataset; read it with lindi (lindi.LindiH5pyFile)")
    return zarr_dask(zarr.open_array(store.subset(key, decode=True), mode="r"), block_bytes)


def read_index_dataset(index: str | os.PathLike, name: str, *, block_bytes: int | None = None,
                       remote_options: dict | None = None, source: str | None = None):
    """One dataset of a file, through its index, as a lazy dask array of whole chunks.

    Parameters
    ----------
    index : str or PathLike
        Path or URL of a LINDI (``.lindi.json``) or kerchunk reference file.
    name : str
        Dataset path, e.g. ``"acquisition/ElectricalSeries/data"``.
    block_bytes, remote_options
        As for :func:`nwb_dask.read_dataset`.
    source : str, optional
        Read the chunks from this file or URL instead of the one the index names.

    Raises
    ------
    KeyError
        The index has no such dataset (named with the index).
    """
    require_zarr(f"read_dataset({os.fspath(index)!r}) of an index", extra="index", modules=())
    store = IndexStore(load_index(index, remote_options), remote_options, source=source)
    arr = _dataset(store, name, block_bytes or DEFAULT_BLOCK_BYTES, remote_options)
    if arr is None:
        raise KeyError(f"{store.name} has no dataset {name!r}")
    return arr


def daskify_index(nwbfile, store: IndexStore, *, min_bytes: int = READ_MIN_BYTES,
                  block_bytes: int = DEFAULT_BLOCK_BYTES, remote_options: dict | None = None) -> list[str]:
    """Replace the large numeric datasets of an NWBFile read through an index with dask arrays, in place."""
    import h5py

    changed = []
    objects = nwbfile.objects if hasattr(nwbfile, "objects") else nwbfile.all_objects
    for obj in objects.values():
        fields = obj.fields
        for key, val in list(fields.items()):
            if isinstance(val, h5py.Dataset) and is_large_numeric(val.shape, val.dtype, min_bytes):
                arr = _dataset(store, val.name, block_bytes, remote_options)
                if arr is not None:
                    fields[key] = arr
                    changed.append(f"{obj.name}/{key}")
    return changed


def read_nwb_index(index: str | os.PathLike, *, source: str | None = None, min_bytes: int = READ_MIN_BYTES,
                   block_bytes: int | None = None, remote_options: dict | None = None):
    """Open an NWB file through its index (see :func:`nwb_dask.read_nwb`); one request for a remote index.

    pynwb reads the structure through ``lindi.LindiH5pyFile`` over an
    :class:`IndexStore`; large numeric datasets become dask arrays.

    Raises
    ------
    ImportError
        lindi is not installed (names the ``index`` extra).
    ValueError
        pynwb cannot read the file through the index, e.g. a kerchunk file
        without LINDI's references and links (names the index).
    """
    lindi = require_lindi(f"read_nwb({os.fspath(index)!r}) of a LINDI / kerchunk index")
    from pynwb import NWBHDF5IO

    loaded = load_index(index, remote_options)
    store = IndexStore(loaded, remote_options, source=source)
    try:
        f = lindi.LindiH5pyFile.from_zarr_store(store, mode="r")
    except Exception as exc:  # lindi raises bare Exceptions
        raise ValueError(f"{store.name}: lindi cannot open this index: {exc}") from exc
    io = NWBHDF5IO(file=f, mode="r")
    try:
        nwbfile = io.read()
        daskify_index(nwbfile, store, min_bytes=min_bytes, block_bytes=block_bytes or DEFAULT_BLOCK_BYTES,
                      remote_options=remote_options)
    except (OSError, ImportError):
        io.close()
        raise
    except Exception as exc:
        io.close()
        lindi_made = any(isinstance(v, dict) and "_REFERENCE" in json.dumps(v) for v in loaded["refs"].values()) or \
            RECORD_KEY in loaded["metadata"] or "generatedBy" in loaded["metadata"]
        hint = "" if lindi_made else (" (it looks like a kerchunk reference file: pynwb needs LINDI's extras, "
                                      "HDF5 object references and links, which kerchunk does not record; write a "
                                      "LINDI index with nwb-dask index, or read single datasets with read_dataset)")
        raise ValueError(f"{store.name}: pynwb cannot read the NWB file through this index: "
                         f"{type(exc).__name__}: {exc}{hint}") from exc
    return nwbfile

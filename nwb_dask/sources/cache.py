"""The on-disk metadata cache: a second open of an unchanged remote file in one request.

Opening an HDF5 file over a URL reads its metadata (superblock, object headers,
B-tree and heap nodes) piece by piece.  The block-cached file behind
:meth:`ByteSource.open <nwb_dask.sources.base.ByteSource.open>` records every
byte h5py read in its journal; after an open, :func:`remember` stores that
journal here, and the next :meth:`open` of the same URL (in any process)
preloads it (:func:`preload`), so h5py finds the metadata without a request.

An entry is valid for one version of one object: it holds the URL's hash, the
file size and a *validator* (the strong ``ETag``, else ``Last-Modified``, of the
reply that gave the size; :func:`validator_from`).  The open's first request
(size + first block, which it makes anyway) brings the current validator, so
checking an entry costs no request; an entry of another size or validator is
removed and never served.  A file without a validator is not cached: its
changes could not be seen.

Entries are one binary file each (:class:`MetadataCache`): a small JSON header,
a table of ``(offset, length)`` runs, the runs' bytes, and a SHA-256 over all of
it; written through :class:`nwb_dask.atomic.AtomicOutput` (temporary name,
rename), so concurrent processes never see half an entry; one whose checksum,
header or lengths do not match is removed and ignored.  The directory is bounded
(:data:`DEFAULT_MAX_BYTES`), least recently used entries evicted first (the use
time is the entry's modification time, set on every hit).

Written by hand: fsspec's ``simplecache``/``blockcache`` cache whole files or
fixed blocks of them, keyed without validators, and cache chunk data too; here
only the scattered metadata bytes of a file are kept, checked against the
object's version on every open.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nwb_dask.sources.base import JOURNAL_BYTES
from nwb_dask.sources.extents import Extents

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DIRECTORY_ENV",
    "SWITCH_ENV",
    "MetadataCache",
    "default_directory",
    "metadata_cache",
    "preload",
    "remember",
    "validator_from",
]

#: Default bound of the cache directory, in bytes.
DEFAULT_MAX_BYTES = 1 << 30
#: Environment variable naming the cache directory.
DIRECTORY_ENV = "NWB_DASK_CACHE_DIR"
#: Environment variable that turns the cache off (``0``, ``false``, ``no``, ``off``).
SWITCH_ENV = "NWB_DASK_METADATA_CACHE"

_MAGIC = b"NWBDMC\x00\x01"
_SUFFIX = ".nwbmeta"
_DIGEST = 32  # SHA-256
_RUN = struct.Struct("<QQ")
_OFF = frozenset({"0", "false", "no", "off"})
_OPTIONS = frozenset({"directory", "max_bytes"})
#: Temporaries older than this (seconds) were left by a killed writer and are removed.
_STALE_TEMP = 3600.0


def default_directory() -> Path:
    """``$NWB_DASK_CACHE_DIR``, else ``$XDG_CACHE_HOME/nwb_dask/metadata``, else ``~/.cache/nwb_dask/metadata``."""
    explicit = os.environ.get(DIRECTORY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nwb_dask" / "metadata"


def validator_from(headers: Mapping[str, str] | None) -> str | None:
    """The version of an object an HTTP reply's headers name: ``etag:<ETag>``, else ``last-modified:<date>``.

    A weak ETag (``W/"..."``) promises equivalent content, not identical bytes,
    so it is passed over for ``Last-Modified``.  None when the reply has neither.
    """
    if not headers:
        return None
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return f"etag:{etag}"
    modified = (headers.get("Last-Modified") or "").strip()
    return f"last-modified:{modified}" if modified else None


def metadata_cache(option: Any = None) -> MetadataCache | None:
    """The cache a ``remote_options["metadata_cache"]`` value selects (None: no caching).

    ``None`` (not given): the default cache (:func:`default_directory`,
    :data:`DEFAULT_MAX_BYTES`) unless ``$NWB_DASK_METADATA_CACHE`` is ``0``;
    ``True``: the default cache; ``False``: none; a dict with ``directory`` and/or
    ``max_bytes``: that cache; a :class:`MetadataCache`: itself.
    """
    if isinstance(option, MetadataCache):
        return option
    if option is None:
        if os.environ.get(SWITCH_ENV, "").strip().lower() in _OFF:
            return None
        return MetadataCache()
    if option is True:
        return MetadataCache()
    if option is False:
        return None
    if isinstance(option, Mapping):
        unknown = set(option) - _OPTIONS
        if unknown:
            raise ValueError(f"remote_options metadata_cache takes {', '.join(sorted(_OPTIONS))}, not "
                             f"{', '.join(sorted(map(str, unknown)))}")
        return MetadataCache(**dict(option))
    raise TypeError(f"remote_options metadata_cache must be True, False or a dict with directory/max_bytes, "
                    f"got {type(option).__name__}")


class MetadataCache:
    """Metadata runs of remote files, one entry per URL, checked against the file's size and validator.

    Parameters
    ----------
    directory : str or PathLike, optional
        Where the entries live (created on first store); default
        :func:`default_directory`.
    max_bytes : int
        Bound of the directory's entries in bytes; after each store the least
        recently used entries are removed until the rest fit.  An entry larger
        than this is not stored.

    The object holds only the directory and the bound (it pickles cheaply).
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"metadata_cache max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.directory = Path(directory).expanduser() if directory is not None else default_directory()
        self.max_bytes = int(max_bytes)
        self._known: dict[tuple, list[tuple[int, int]]] = {}  # (url, size, validator) -> ranges stored or loaded

    def __repr__(self) -> str:
        return f"MetadataCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "max_bytes": self.max_bytes, "_known": {}}

    # -- entries ------------------------------------------------------------ #
    def path_for(self, url: str) -> Path:
        """The entry file of ``url`` (named by the SHA-256 of the URL)."""
        return self.directory / (hashlib.sha256(url.encode("utf-8")).hexdigest() + _SUFFIX)

    def entries(self) -> list[Path]:
        """The entry files in the directory (not temporaries), oldest use first."""
        try:
            names = [p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith(".")]
        except FileNotFoundError:
            return []
        stamped = []
        for path in names:
            try:
                st = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            stamped.append((st.st_mtime, path.name, path))
        return [p for _, _, p in sorted(stamped)]

    def load(self, url: str, size: int, validator: str | None) -> list[tuple[int, bytes]] | None:
        """The runs stored for this version of ``url``, or None.

        An entry for another size or validator, or one that does not check
        (checksum, header, lengths), is removed.  A hit marks the entry used.
        """
        if not validator:
            return None
        path = self.path_for(url)
        try:
            blob = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            warnings.warn(f"nwb_dask metadata cache: cannot read {path}: {exc}; opening {url} without it", stacklevel=2)
            return None
        entry = _parse(blob, url)
        if entry is None or entry[0] != size or entry[1] != validator:
            _unlink(path)  # damaged, or the object changed on the server: never served
            for key in [k for k in self._known if k[0] == url]:
                del self._known[key]
            return None
        try:
            os.utime(path)  # the use time eviction goes by
        except OSError:
            pass
        runs = entry[2]
        self._known[(url, size, validator)] = _ranges(runs)
        return runs

    def store(self, url: str, size: int, validator: str | None, runs: Sequence[tuple[int, bytes]]) -> bool:
        """Store ``runs`` (merged with what the entry holds for the same version); False if nothing was written.

        Nothing is written without a validator, when the entry already holds
        every byte of ``runs``, or when the entry would exceed ``max_bytes``.
        """
        if not validator or not runs:
            return False
        key, wanted = (url, size, validator), _ranges(runs)
        known = self._known.get(key)
        if known is not None and _covers(known, wanted) and self.path_for(url).exists():  # (not evicted since)
            return False
        old = self.load(url, size, validator) or []  # another process may have stored more meanwhile
        if old and _covers(_ranges(old), wanted):
            return False
        merged = Extents()
        merged.update(old)
        merged.update(runs)
        items = merged.items()
        blob = _serialise(url, size, validator, items)
        if len(blob) > self.max_bytes:
            return False
        from nwb_dask.atomic import AtomicOutput

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path_for(url)
        with AtomicOutput(target, fsync=False) as out:  # a crash leaves a bad checksum at worst, never served
            out.temp.write_bytes(blob)
        self._known[key] = _ranges(items)
        self.evict(keep=target)
        return True

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the directory fits ``max_bytes``; returns how many."""
        from nwb_dask.atomic import remove_partials

        try:
            remove_partials(self.directory, older_than=_STALE_TEMP)
        except OSError:
            pass
        sized = []
        for path in self.entries():
            try:
                sized.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        total = sum(n for _, n in sized)
        removed = 0
        for path, nbytes in sized:
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            if _unlink(path):
                removed += 1
            total -= nbytes
        return removed

    def clear(self) -> int:
        """Remove every entry (and leftover temporaries); returns the number of entries removed."""
        from nwb_dask.atomic import remove_partials

        removed = sum(1 for path in self.entries() if _unlink(path))
        try:
            remove_partials(self.directory)
        except OSError:
            pass
        self._known.clear()
        return removed

    def info(self) -> dict:
        """The directory, its bound, and each entry's URL (without query), size, validator, runs and bytes."""
        rows = []
        for path in self.entries():
            try:
                blob = path.read_bytes()
                stat = path.stat()
            except OSError:
                continue
            header = _parse(blob, None, header_only=True)
            if header is None:
                continue
            rows.append({"url": header.get("url"), "size": header.get("size"), "validator": header.get("validator"),
                         "runs": header.get("runs"), "metadata_bytes": header.get("payload"),
                         "entry_bytes": stat.st_size, "used": stat.st_mtime})
        return {"directory": str(self.directory), "max_bytes": self.max_bytes,
                "entries": len(rows), "bytes": sum(r["entry_bytes"] for r in rows), "files": rows}


# --------------------------------------------------------------------------- #
# The entry format                                                             #
# --------------------------------------------------------------------------- #
def _display_url(url: str) -> str:
    """The URL without query and fragment (presigned URLs carry credentials there): what an entry shows."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def _serialise(url: str, size: int, validator: str, items: Sequence[tuple[int, bytes]]) -> bytes:
    """MAGIC, header length (u32), JSON header, runs table (u64 offset, u64 length), payload, SHA-256 of all before."""
    payload = sum(len(d) for _, d in items)
    header = json.dumps({
        "version": 1, "key": hashlib.sha256(url.encode("utf-8")).hexdigest(), "url": _display_url(url),
        "size": int(size), "validator": validator, "runs": len(items), "payload": payload,
    }).encode("utf-8")
    parts = [_MAGIC, struct.pack("<I", len(header)), header]
    parts.extend(_RUN.pack(o, len(d)) for o, d in items)
    parts.extend(d for _, d in items)
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def _parse(blob: bytes, url: str | None, header_only: bool = False) -> Any:
    """``(size, validator, runs)`` of an entry for ``url`` (the header dict with ``header_only``); None if it does not check."""
    if len(blob) < len(_MAGIC) + 4 + _DIGEST or not blob.startswith(_MAGIC):
        return None
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        return None
    pos = len(_MAGIC)
    (hlen,) = struct.unpack_from("<I", body, pos)
    pos += 4
    try:
        header = json.loads(body[pos : pos + hlen].decode("utf-8"))
        size, validator, nruns, payload = int(header["size"]), str(header["validator"]), int(header["runs"]), int(header["payload"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if header.get("version") != 1:
        return None
    if header_only:
        return header
    if url is None or header.get("key") != hashlib.sha256(url.encode("utf-8")).hexdigest():
        return None
    pos += hlen
    table_end = pos + nruns * _RUN.size
    if nruns < 0 or table_end + payload != len(body):
        return None
    runs, at = [], table_end
    for k in range(nruns):
        off, length = _RUN.unpack_from(body, pos + k * _RUN.size)
        if off + length > size:
            return None
        runs.append((off, body[at : at + length]))
        at += length
    if at != len(body):
        return None
    return size, validator, runs


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False


# --------------------------------------------------------------------------- #
# Hooks for the sources and the reader                                         #
# --------------------------------------------------------------------------- #
def preload(source: Any, fileobj: Any) -> int:
    """Preload the cached metadata of ``source``'s current version into its open file; returns the bytes loaded.

    ``source`` has ``url``, ``metadata_cache`` (a :class:`MetadataCache` or None)
    and ``validator`` (see :func:`validator_from`); ``fileobj`` is the
    :class:`~nwb_dask.sources.base.BlockCacheFile` (or a buffered reader over one).
    """
    raw = getattr(fileobj, "raw", fileobj)
    cache, validator = getattr(source, "metadata_cache", None), getattr(source, "validator", None)
    if cache is None or not validator:
        return 0
    runs = cache.load(source.url, raw.size, validator)
    if not runs:
        return 0
    raw.preload(runs)
    return sum(len(d) for _, d in runs)


def remember(source: Any, fileobj: Any) -> bool:
    """Store what has been read through ``fileobj`` (its journal) as ``source``'s cached metadata.

    Only when the cache is on, the version is known (a validator) and the
    journal is complete (not ``full``); only bytes the entry lacks cause a
    write.  The bytes fetched ahead into the file's ``extents`` (the metadata
    prefetcher's) are stored with the journal when both fit in
    :data:`~nwb_dask.sources.base.JOURNAL_BYTES`, so a warm open's prefetch
    finds them too.  A cache that cannot be written warns (naming the
    directory) and the read goes on.  Returns whether an entry was written.
    """
    raw = getattr(fileobj, "raw", fileobj)
    cache, validator = getattr(source, "metadata_cache", None), getattr(source, "validator", None)
    journal = getattr(raw, "journal", None)
    if cache is None or not validator or journal is None or journal.full:
        return False
    runs = journal.items()
    ahead = getattr(raw, "extents", None)
    if ahead is not None and journal.nbytes + ahead.nbytes <= JOURNAL_BYTES:
        runs += ahead.items()  # overlaps are merged by the store
    try:
        return cache.store(source.url, raw.size, validator, runs)
    except OSError as exc:
        warnings.warn(f"nwb_dask metadata cache: cannot store the metadata of {source.url} in {cache.directory}: "
                      f"{exc} (remote_options={{'metadata_cache': False}} or {SWITCH_ENV}=0 turns the cache off)",
                      stacklevel=2)
        return False


def _ranges(items: Iterable[tuple[int, bytes]]) -> list[tuple[int, int]]:
    return [(o, len(d)) for o, d in items]


def _covers(held: Sequence[tuple[int, int]], wanted: Iterable[tuple[int, int]]) -> bool:
    """Whether every ``(offset, length)`` of ``wanted`` lies inside one of ``held`` (sorted, disjoint, merged runs)."""
    starts = [o for o, _ in held]
    for off, length in wanted:
        if length <= 0:
            continue
        i = bisect.bisect_right(starts, off) - 1
        if i < 0 or off + length > held[i][0] + held[i][1]:
            return False
    return True

"""fsspec byte source: signed S3 through s3fs, S3-compatible stores, GCS, Azure, ...

:class:`FsspecByteSource` has the interface of
:class:`~nwb_dask.sources.http.HTTPByteSource` over an fsspec filesystem: the
same coalescing (:mod:`nwb_dask.sources.ranges`), with the ranges of each
thread fetched by one ``fs.cat_ranges`` call (concurrent in async filesystems
such as s3fs); retries are the filesystem's own.  It holds only the URL, the
storage options and the settings (picklable) and creates one filesystem per
process.
"""

from __future__ import annotations

import errno
import io
import os
import threading
from typing import Any, Callable, Sequence, TypeVar

from nwb_dask.sources.base import DEFAULT_BLOCK_SIZE, DEFAULT_CACHE_BLOCKS, BlockCacheFile, ByteSource, RemoteReadError, url_scheme
from nwb_dask.sources.cache import preload
from nwb_dask.sources.ranges import Span, balance, map_spans, plan

__all__ = ["FSSPEC_SETTINGS", "FsspecByteSource"]

#: The settings :class:`FsspecByteSource` takes besides ``storage_options``.
FSSPEC_SETTINGS = frozenset({"max_gap", "max_request", "max_workers"})

_SESSION_LOCK = threading.Lock()
_T = TypeVar("_T")


class FsspecByteSource(ByteSource):
    """Byte ranges of one file on an fsspec filesystem, with the interface of :class:`~nwb_dask.sources.http.HTTPByteSource`.

    For signed (credentialed) S3 reads through s3fs, S3-compatible stores
    (MinIO, Ceph, ...) through ``client_kwargs={"endpoint_url": ...}``, and
    any other fsspec protocol (``gs://``, ``az://``, ``abfs://``, ...).

    Parameters
    ----------
    url : str
        A URL fsspec understands, e.g. ``s3://bucket/key``.
    storage_options : dict, optional
        Options of the filesystem, passed to ``fsspec.core.url_to_fs``; for
        s3fs e.g. ``{"key": ..., "secret": ..., "token": ..., "anon": False,
        "client_kwargs": {"endpoint_url": ..., "region_name": ...},
        "config_kwargs": {"retries": {"max_attempts": 10}}}``.
    max_gap : int
        Ranges separated by at most this many bytes are fetched by one request
        (the gap bytes are downloaded and dropped).
    max_request : int
        Largest request, in bytes; larger ranges are split.
    max_workers : int
        Threads fetching (and, in :meth:`map_ranges`, processing) ranges in
        parallel; each passes its requests to the filesystem in one
        ``cat_ranges`` call, which async filesystems (s3fs, gcsfs, adlfs,
        fsspec's HTTP) run concurrently.

    Raises
    ------
    ValueError
        For a URL without a protocol, or a protocol fsspec does not know.
    ImportError
        When the protocol's filesystem package (s3fs, gcsfs, ...) is missing.

    Notes
    -----
    The object holds only the URL, the storage options and the settings and
    pickles cheaply (credentials in ``storage_options`` travel with it, and
    are left out of its ``repr``); each process creates its filesystem on
    first use.  Retries are the filesystem's (s3fs retries throttling and
    transient network errors itself); a failure that remains raises
    :class:`RemoteReadError` naming the URL and byte range (``attempts`` is 1:
    one call to the filesystem), a missing object ``FileNotFoundError``.
    """

    #: The on-disk metadata cache :meth:`open` preloads from (set by :func:`~nwb_dask.sources.byte_source`)
    #: and the object's version from ``fs.info()`` (ETag, else modification time; None: not cached).
    metadata_cache = None
    validator: str | None = None

    def __init__(
        self,
        url: str,
        storage_options: dict | None = None,
        *,
        max_gap: int = 1 << 20,
        max_request: int = 16 << 20,
        max_workers: int = 8,
    ):
        url = os.fspath(url)
        scheme = url_scheme(url)
        if not scheme:
            raise ValueError(f"FsspecByteSource needs a URL with a protocol (e.g. s3://bucket/key), got {url!r}")
        if max_gap < 0 or max_request < 1 or max_workers < 1:
            raise ValueError("max_gap must be >= 0, max_request and max_workers >= 1")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(f"storage_options must be a dict, got {type(storage_options).__name__}")
        import fsspec

        protocol = scheme.split("::", 1)[0]  # the outermost of chained URLs (simplecache::s3://...)
        try:
            fsspec.get_filesystem_class(protocol)  # ImportError names the package to install
        except ValueError:
            raise ValueError(
                f"unsupported URL scheme {protocol!r} in {url!r}: fsspec has no filesystem for it "
                f"(known: {', '.join(sorted(fsspec.available_protocols()))})"
            ) from None
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.max_gap = int(max_gap)
        self.max_request = int(max_request)
        self.max_workers = int(max_workers)
        self._size: int | None = None
        self._fs_obj = None
        self._fs_path: str | None = None
        self._fs_pid: int | None = None

    # -- pickling and the filesystem ----------------------------------------- #
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fs_obj"] = None
        state["_fs_path"] = None
        state["_fs_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"FsspecByteSource({self.url!r})"  # no storage options: they may hold secrets

    def _filesystem(self) -> tuple[Any, str]:
        """This process's ``(filesystem, path)`` (created on first use)."""
        pid = os.getpid()
        if self._fs_obj is None or self._fs_pid != pid:
            with _SESSION_LOCK:
                if self._fs_obj is None or self._fs_pid != pid:
                    from fsspec.core import url_to_fs

                    fs, path = url_to_fs(self.url, **self.storage_options)
                    self._fs_obj, self._fs_path, self._fs_pid = fs, path, pid
        return self._fs_obj, self._fs_path  # type: ignore[return-value]

    def close(self) -> None:
        """Drop this process's filesystem (a new one is created on next use)."""
        self._fs_obj = None

    def _error(self, exc: BaseException, byte_range: tuple[int, int] | None) -> OSError:
        """``FileNotFoundError`` naming the URL for a missing object, else :class:`RemoteReadError`."""
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(errno.ENOENT, f"no such object ({exc})", self.url)
        if isinstance(exc, RemoteReadError):
            return exc
        return RemoteReadError(self.url, byte_range, 1, f"{type(exc).__name__}: {exc}")

    # -- size ---------------------------------------------------------------- #
    @property
    def size(self) -> int:
        """File size in bytes (``fs.info``, which also gives :attr:`validator`; ``fs.size`` asks the same)."""
        if self._size is None:
            fs, path = self._filesystem()
            try:
                info = fs.info(path)
            except Exception as exc:
                raise self._error(exc, None) from exc
            size = info.get("size")
            if size is None:
                raise RemoteReadError(self.url, None, 1, "the filesystem reports no size")
            self.validator = _info_validator(info)
            self._size = int(size)
        return self._size

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """As :meth:`ByteSource.open`, with the metadata cached for this version of the object preloaded."""
        raw = BlockCacheFile(self, block_size, cache_blocks)
        preload(self, raw)
        return io.BufferedReader(raw)

    # -- reading ------------------------------------------------------------- #
    def map_ranges(self, ranges: Sequence[tuple[int, int]], fn: Callable[[int, bytes], _T], *, spread: bool = False) -> list[_T]:
        """Fetch ranges and call ``fn(index, bytes)`` on each in the thread that fetched it.

        As :meth:`~nwb_dask.sources.http.HTTPByteSource.map_ranges`: ranges are coalesced into
        requests (with ``spread``, into up to ``max_workers`` requests of at
        least :data:`~nwb_dask.sources.ranges.MIN_SPREAD_REQUEST` bytes), the requests are dealt to up
        to ``max_workers`` threads, and each thread fetches its requests with
        one ``cat_ranges`` call, then calls ``fn`` on their ranges while the
        other threads' requests are still in flight.

        Parameters
        ----------
        ranges : sequence of (int, int)
            Byte ranges, as for :meth:`read_ranges`.
        fn : callable
            Called once per range, from a pool thread, with the range's index
            and bytes; must be thread-safe.
        spread : bool
            Spread the bytes over parallel requests (see above).

        Returns
        -------
        list
            ``fn``'s results in input order.  On an error the threads not yet
            started are cancelled and the error is raised once every running
            call has returned.
        """
        ranges, spans = plan(ranges, self.max_gap, self.max_request, self.max_workers, spread)
        if self._size is not None:  # known size: refuse ranges past the end without a request
            for off, length in ranges:
                if length and off + length > self._size:
                    raise self._past_end(off, length)
        jobs = balance(spans, self.max_workers)
        return map_spans(ranges, jobs, self._fetch_spans, fn, self.max_workers, "nwb_dask-fsspec")

    def _past_end(self, offset: int, length: int, got: int | None = None) -> RemoteReadError:
        got_text = f"got {got} of {length} bytes; " if got is not None else ""
        size = f" (file size {self._size})" if self._size is not None else ""
        return RemoteReadError(self.url, (offset, length), 1, f"{got_text}range is past the end of the file{size}")

    def _fetch_spans(self, spans: list[Span]) -> list[bytes]:
        """The bytes of each span, in one ``cat_ranges`` call (spans over ``max_request`` in pieces)."""
        step = self.max_request
        pieces = [(k, p, min(step, end - p)) for k, (start, end, _) in enumerate(spans) for p in range(start, end, step)]
        fs, path = self._filesystem()
        try:  # fsspec returns per-range failures in place of the bytes (on_error="return", its default)
            results = fs.cat_ranges([path] * len(pieces), [p for _, p, _ in pieces], [p + n for _, p, n in pieces])
        except Exception as exc:
            start, end = spans[0][0], max(sp[1] for sp in spans)
            raise self._error(exc, (start, end - start)) from exc
        parts: list[list[bytes]] = [[] for _ in spans]
        for (k, off, length), data in zip(pieces, results):
            if isinstance(data, BaseException):
                raise self._error(data, (off, length)) from data
            if len(data) != length:
                raise self._past_end(off, length, len(data))
            parts[k].append(data)
        return [p[0] if len(p) == 1 else b"".join(p) for p in parts]


def _info_validator(info: dict) -> str | None:
    """The object's version in an ``fs.info()`` reply: its ETag (s3fs, gcsfs, adlfs, HTTP), else its modification time."""
    for key in ("ETag", "etag", "e_tag"):
        value = info.get(key)
        if value and not str(value).startswith("W/"):
            return f"etag:{value}"
    for key in ("LastModified", "last_modified", "mtime", "updated", "modified"):
        value = info.get(key)
        if value:
            return f"modified:{value}"
    return None

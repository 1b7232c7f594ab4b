"""Remote byte sources: byte ranges of files served over HTTP(S), S3 or any fsspec filesystem.

The lazy reader asks a byte source for the byte ranges of HDF5 chunks; the
source decides how to fetch them.  :class:`HTTPByteSource`

* coalesces neighbouring ranges (gap <= ``max_gap``) into GET requests of at
  most ``max_request`` bytes and fetches them in parallel threads;
* retries with exponential backoff on 5xx and 429 responses, connection
  errors and resets, truncated bodies and mismatched ``Content-Range``
  headers, then raises :class:`RemoteReadError`;
* copes with servers that ignore ``Range`` (a ``200`` full-body reply) by
  reading the body only up to the requested range;
* offers a seekable, block-cached file-like view (:meth:`HTTPByteSource.open`)
  so h5py can read the file's metadata: ``h5py.File(src.open(), "r")``.

:class:`FsspecByteSource` has the same interface over an fsspec filesystem
(s3fs for signed S3 requests, gcsfs, adlfs, ...): the same coalescing, with
the ranges of each thread fetched by one ``fs.cat_ranges`` call (concurrent
in async filesystems such as s3fs); retries are the filesystem's own.

Sources are picklable (they hold only the URL and settings) and open one
``requests.Session`` or fsspec filesystem per process, so dask tasks can
carry them to workers.

Which source :func:`byte_source` picks:

* ``http://``, ``https://``: :class:`HTTPByteSource`.
* ``s3://bucket/key`` without ``storage_options``: objects in *public*
  buckets, read anonymously over HTTPS (see :func:`s3_to_https`).
* ``s3://bucket/key`` with ``storage_options`` (or ``anon=False``, which uses
  s3fs's default credential chain: environment variables, ``~/.aws``,
  instance roles): signed requests through s3fs, e.g.::

      nwb_dask.read_nwb("s3://bucket/session.nwb", remote_options={"storage_options": {
          "key": "...", "secret": "...", "client_kwargs": {"endpoint_url": "https://minio:9000"}}})

* other fsspec protocols: with ``storage_options`` (may be ``{}``) any
  protocol fsspec knows (``http(s)://`` too, through fsspec's HTTP
  filesystem); without, the object stores in :data:`FSSPEC_SCHEMES` and
  protocols registered with ``fsspec.register_implementation(name, cls)``.
  Through :class:`FsspecByteSource`; the filesystem's package (s3fs, gcsfs,
  adlfs, ...) must be installed (``pip install nwb-dask[s3]`` for s3fs).
* ``file://`` URLs and local paths: :class:`LocalByteSource`.
"""

from __future__ import annotations

import collections
import errno
import http.client
import io
import os
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Sequence, TypeVar

__all__ = [
    "FsspecByteSource",
    "HTTPByteSource",
    "LocalByteSource",
    "RemoteReadError",
    "byte_source",
    "s3_to_https",
]

#: URL schemes :func:`byte_source` accepts (besides plain paths and ``file://``).
REMOTE_SCHEMES = ("http", "https", "s3")
#: Object-store protocols :func:`byte_source` reads through fsspec even without ``storage_options``.
FSSPEC_SCHEMES = ("gs", "gcs", "az", "abfs", "adl")
#: :class:`FsspecByteSource` settings :func:`byte_source` accepts besides ``storage_options``.
_FSSPEC_SETTINGS = frozenset({"max_gap", "max_request", "max_workers"})
#: Default block size and block count of the cache behind :meth:`HTTPByteSource.open`.
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_CACHE_BLOCKS = 64
#: Default ``(connect, read)`` timeouts of :class:`HTTPByteSource` requests, in seconds.
DEFAULT_TIMEOUT = (5.0, 10.0)
#: Smallest request :meth:`HTTPByteSource.map_ranges` makes when spreading bytes over requests.
MIN_SPREAD_REQUEST = 1 << 20

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_SESSION_LOCK = threading.Lock()
_T = TypeVar("_T")


class RemoteReadError(OSError):
    """A remote byte range could not be read (after retries, or a permanent failure).

    Attributes
    ----------
    url : str
        The URL that was read.
    byte_range : tuple of int or None
        ``(offset, length)`` of the failed request (None for the size request).
    attempts : int
        Number of attempts made.
    last_error : str
        Description of the last failure.
    """

    def __init__(self, url: str, byte_range: tuple[int, int] | None, attempts: int, last_error: str):
        self.url = url
        self.byte_range = byte_range
        self.attempts = attempts
        self.last_error = last_error
        if byte_range is None:
            what = "size"
        else:
            off, length = byte_range
            what = f"bytes {off}-{off + length - 1} (offset {off}, length {length})"
        super().__init__(f"cannot read {what} of {url} after {attempts} attempt(s): {last_error}")


def _timed_out(exc: BaseException) -> bool:
    """Whether a request failed because the server did not connect or answer in time."""
    import requests
    import urllib3

    if isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return True
    return "timed out" in str(exc).lower()  # requests' ConnectionError around urllib3's ReadTimeoutError


class _Retry(Exception):
    """A transient failure: try again (after ``after`` seconds if the server said so)."""

    def __init__(self, message: str, after: float | None = None):
        super().__init__(message)
        self.after = after


# --------------------------------------------------------------------------- #
# URLs                                                                         #
# --------------------------------------------------------------------------- #
def s3_to_https(url: str) -> str:
    """Translate ``s3://bucket/key`` to the bucket's public HTTPS URL.

    Virtual-hosted style ``https://bucket.s3.amazonaws.com/key`` is used, except
    for bucket names containing dots, which would not match the TLS
    certificate and use path style ``https://s3.amazonaws.com/bucket/key``.
    The key is percent-encoded (give it unencoded, as S3 lists it).  The
    global endpoint redirects to the bucket's region, which ``requests``
    follows.

    Parameters
    ----------
    url : str
        An ``s3://bucket/key`` URL.

    Returns
    -------
    str
        The HTTPS URL of the object.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, key = parts.netloc, url.split("://", 1)[1][len(parts.netloc) :].lstrip("/")
    if not bucket or not key:
        raise ValueError(f"s3 URL must be s3://bucket/key, got {url!r}")
    key = urllib.parse.quote(key, safe="/~")
    if "." in bucket:
        return f"https://s3.amazonaws.com/{bucket}/{key}"
    return f"https://{bucket}.s3.amazonaws.com/{key}"


def _scheme(url_or_path: str) -> str:
    """The URL scheme of ``url_or_path`` (``""`` for plain paths, including ``C:\\...``)."""
    if "://" not in url_or_path:
        return ""
    scheme = url_or_path.split("://", 1)[0].lower()
    return "" if len(scheme) == 1 else scheme


class _FrozenDict(tuple):
    """A dict as a hashable tuple of ``(key, value)`` pairs (see :func:`_freeze`)."""

    __slots__ = ()


class _FrozenList(tuple):
    """A list as a hashable tuple (see :func:`_freeze`)."""

    __slots__ = ()


def _freeze(value: Any) -> Any:
    """``value`` with dicts and lists (at any depth) made hashable; :func:`_thaw` undoes it.

    Dict items are sorted by key, so equal dicts freeze equal.
    """
    if isinstance(value, dict):
        return _FrozenDict(sorted(((k, _freeze(v)) for k, v in value.items()), key=lambda kv: repr(kv[0])))
    if isinstance(value, list):
        return _FrozenList(_freeze(v) for v in value)
    if type(value) is tuple:
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Undo :func:`_freeze`."""
    if isinstance(value, _FrozenDict):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, _FrozenList):
        return [_thaw(v) for v in value]
    if type(value) is tuple:
        return tuple(_thaw(v) for v in value)
    return value


def freeze_options(options: dict | None) -> tuple:
    """Byte-source options as a hashable, sorted tuple of items (nested dicts frozen).

    The reader caches sources on this key; :func:`byte_source` thaws it.
    """
    return tuple(sorted(((k, _freeze(v)) for k, v in (options or {}).items()), key=lambda kv: kv[0]))


def _fsspec_registered(scheme: str) -> bool:
    """Whether a filesystem class was registered for ``scheme`` at run time (not one fsspec ships)."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        return False
    return scheme in fsspec.registry and scheme not in known_implementations


def _unsupported(scheme: str, text: str) -> ValueError:
    return ValueError(
        f"unsupported URL scheme {scheme!r} in {text!r}; supported: "
        + ", ".join(f"{s}://" for s in (*REMOTE_SCHEMES, "file"))
        + " and local paths; the object stores "
        + ", ".join(f"{s}://" for s in FSSPEC_SCHEMES)
        + " through fsspec; and any other protocol fsspec knows when remote_options has "
        "'storage_options' (use {} for none)"
    )


def byte_source(
    url_or_path: str | os.PathLike, **options: Any
) -> HTTPByteSource | FsspecByteSource | LocalByteSource:
    """A byte source for a URL or a local path.

    Parameters
    ----------
    url_or_path : str or path-like
        ``http://``, ``https://`` or ``s3://bucket/key`` URL, another fsspec
        URL (``gs://``, ``az://``, ``abfs://``, ...), a ``file://`` URL or a
        local path.
    **options
        ``storage_options`` (dict): read the URL through fsspec
        (:class:`FsspecByteSource`) with these filesystem options, e.g. for
        signed S3 requests ``{"key": ..., "secret": ..., "client_kwargs":
        {"endpoint_url": ...}}``.  ``anon`` (bool): ``anon=False`` reads
        ``s3://`` (and other fsspec URLs) through fsspec with the default
        credentials; it is merged into ``storage_options``.  Without either,
        ``s3://`` URLs are read anonymously over HTTPS.

        The rest are the source's settings: for :class:`HTTPByteSource`
        ``retries``, ``backoff``, ``timeout``, ``max_gap``, ``max_request``,
        ``max_workers``, ...; for :class:`FsspecByteSource` ``max_gap``,
        ``max_request`` and ``max_workers`` (retries are the filesystem's,
        configured in ``storage_options``).  Local files take none.

    Returns
    -------
    HTTPByteSource, FsspecByteSource or LocalByteSource
        See the module docstring for which URL gets which.

    Raises
    ------
    ValueError
        For a URL scheme that is not supported (named in the message, with
        what is), or ``anon=False`` for an ``http(s)://`` URL.
    TypeError
        For settings the chosen source does not take.
    """
    text = os.fspath(url_or_path)
    scheme = _scheme(text)
    options = {k: _thaw(v) for k, v in options.items()}
    storage_options = options.pop("storage_options", None)
    anon = options.pop("anon", None)
    if scheme == "file":
        return LocalByteSource(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    if not scheme:
        return LocalByteSource(text)
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, got {type(storage_options).__name__}")
    if storage_options is None and anon is not False and scheme in REMOTE_SCHEMES:
        return HTTPByteSource(text, **options)  # plain HTTP(S) and public S3 over HTTPS
    if storage_options is None and anon is False and scheme in ("http", "https"):
        raise ValueError(
            f"anon=False does not apply to {text!r}: http(s) URLs are read as they are; give "
            "storage_options to read them through fsspec's HTTP filesystem"
        )
    if storage_options is None and anon is None and scheme not in FSSPEC_SCHEMES and not _fsspec_registered(scheme):
        raise _unsupported(scheme, text)
    unknown = set(options) - _FSSPEC_SETTINGS
    if unknown:
        raise TypeError(
            f"FsspecByteSource (for {text!r}) takes no {', '.join(sorted(unknown))}; its settings are "
            f"{', '.join(sorted(_FSSPEC_SETTINGS))}, and retries and timeouts are the filesystem's "
            "(set them in storage_options)"
        )
    storage_options = dict(storage_options or {})
    if anon is not None:
        storage_options.setdefault("anon", anon)
    return FsspecByteSource(text, storage_options, **options)


def _check_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validate ``(offset, length)`` pairs: non-negative integers."""
    out = []
    for r in ranges:
        try:
            off, length = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"byte ranges must be (offset, length) pairs of ints, got {r!r}") from None
        if off < 0 or length < 0:
            raise ValueError(f"byte range {r!r} has a negative offset or length")
        out.append((off, length))
    return out


def _coalesce(
    ranges: Sequence[tuple[int, int]], max_gap: int, max_request: int
) -> list[tuple[int, int, list[int]]]:
    """Group non-empty ranges into spans ``(start, end, member indices)``.

    Ranges are taken in offset order; a range joins the current span when the
    gap to it is at most ``max_gap`` (overlapping ranges have a negative gap)
    and the span stays within ``max_request`` bytes.  A single range larger
    than ``max_request`` gets a span of its own (split into requests later).
    """
    order = sorted((i for i, (_, n) in enumerate(ranges) if n > 0), key=lambda i: ranges[i])
    spans: list[tuple[int, int, list[int]]] = []
    for i in order:
        off, length = ranges[i]
        if spans:
            start, end, members = spans[-1]
            new_end = max(end, off + length)
            if off - end <= max_gap and new_end - start <= max_request:
                spans[-1] = (start, new_end, members + [i])
                continue
        spans.append((off, off + length, [i]))
    return spans


def _plan(
    ranges: Sequence[tuple[int, int]], max_gap: int, max_request: int, max_workers: int, spread: bool
) -> tuple[list[tuple[int, int]], list[tuple[int, int, list[int]]]]:
    """Checked ranges and their coalesced spans, as :meth:`HTTPByteSource.map_ranges` describes.

    With ``spread``, spans are capped at the larger of :data:`MIN_SPREAD_REQUEST`
    and an even share of the bytes over ``max_workers``.
    """
    ranges = _check_ranges(ranges)
    cap = max_request
    if spread:
        total = sum(n for _, n in ranges)
        cap = min(cap, max(MIN_SPREAD_REQUEST, -(-total // max_workers)))
    return ranges, _coalesce(ranges, max_gap, cap)


_Span = tuple[int, int, list[int]]


def _map_spans(
    ranges: list[tuple[int, int]],
    jobs: list[list[_Span]],
    fetch: Callable[[list[_Span]], list[bytes]],
    fn: Callable[[int, bytes], _T],
    max_workers: int,
    thread_name_prefix: str,
) -> list[_T]:
    """Run ``jobs`` (groups of spans) in a pool; each fetches its spans and calls ``fn`` on their ranges.

    ``fetch(spans)`` returns the bytes ``start:end`` of each span.  ``fn(i,
    bytes)`` runs in the thread that fetched range ``i`` (empty ranges: in
    this thread, first).  Results come back in input order.  On an error the
    jobs not yet started are cancelled and the error is raised once every
    running job has returned.
    """
    out: list[Any] = [None] * len(ranges)
    for i, (_, n) in enumerate(ranges):
        if n == 0:
            out[i] = fn(i, b"")

    def run(job: list[_Span]) -> None:
        for (start, end, members), buf in zip(job, fetch(job)):
            if len(members) == 1 and ranges[members[0]] == (start, end - start):
                out[members[0]] = fn(members[0], buf)
                continue
            view = memoryview(buf)
            for i in members:
                off, length = ranges[i]
                out[i] = fn(i, bytes(view[off - start : off - start + length]))

    if len(jobs) <= 1 or max_workers == 1:
        for job in jobs:
            run(job)
        return out
    pool = ThreadPoolExecutor(min(max_workers, len(jobs)), thread_name_prefix=thread_name_prefix)
    try:
        for future in as_completed([pool.submit(run, job) for job in jobs]):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _balance(spans: list[_Span], groups: int) -> list[list[_Span]]:
    """Spans dealt into at most ``groups`` groups of similar byte totals (each group in offset order)."""
    groups = max(1, min(groups, len(spans)))
    bins: list[list[_Span]] = [[] for _ in range(groups)]
    loads = [0] * groups
    for span in sorted(spans, key=lambda sp: sp[0] - sp[1]):  # largest first
        k = loads.index(min(loads))
        bins[k].append(span)
        loads[k] += span[1] - span[0]
    return [sorted(b, key=lambda sp: sp[0]) for b in bins if b]


# --------------------------------------------------------------------------- #
# HTTP                                                                         #
# --------------------------------------------------------------------------- #
def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
    """``Content-Range: bytes a-b/total`` as ``(a, b, total)`` (None parts for ``*``)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    a, b, total = m.groups()
    return (
        int(a) if a is not None else None,
        int(b) if b is not None else None,
        int(total) if total != "*" else None,
    )


def _retry_after(resp) -> float | None:
    """The ``Retry-After`` delay in seconds, if given as a number."""
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "")))
    except ValueError:
        return None


class _RangeReader:
    """``read`` and ``read_ranges`` for sources that implement ``map_ranges``."""

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``."""
        return self.read_ranges([(offset, length)])[0]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read many ``(offset, length)`` ranges, coalesced and fetched in parallel.

        Parameters
        ----------
        ranges : sequence of (int, int)
            Byte ranges; may overlap, touch, repeat or be empty.

        Returns
        -------
        list of bytes
            The bytes of each range, in input order.

        Raises
        ------
        RemoteReadError
            When a request still fails after the retries, or a range lies past
            the end of the file (``FileNotFoundError`` for a missing object).
        """
        return self.map_ranges(ranges, lambda i, data: data)

    def map_ranges(self, ranges, fn, *, spread=False):  # pragma: no cover - abstract
        raise NotImplementedError


class HTTPByteSource(_RangeReader):
    """Byte ranges of one file served over HTTP(S) (or a public S3 object).

    Parameters
    ----------
    url : str
        ``http://``, ``https://`` or ``s3://bucket/key`` URL (public buckets
        only: translated by :func:`s3_to_https`).
    retries : int
        Retries after the first attempt of each request (so ``retries + 1``
        attempts in all).
    backoff : float
        Delay before retry *k* (1-based) is ``backoff * 2 ** (k - 1)`` seconds,
        at most ``max_backoff``; a ``Retry-After`` header on 429/503 replies
        takes precedence (also capped).
    timeout : float or (float, float)
        Timeouts of each request in seconds, ``(connect, read)`` as requests
        takes them (one number: both).  Default ``(5, 10)``: the read timeout
        bounds the wait for each byte of the reply, not the whole transfer.
    timeout_retries : int
        Of the ``retries``, how many may follow a timed-out attempt (default
        1): a server that does not answer at all is rarely back a moment
        later, so one that never answers fails after
        ``(min(retries, timeout_retries) + 1) * read timeout`` seconds plus
        backoff, about 20 s with the defaults (:attr:`silent_server_seconds`),
        instead of minutes.  Other failures (5xx, 429, resets, truncated
        replies) use every retry.
    max_gap : int
        Ranges separated by at most this many bytes are fetched by one request
        (the gap bytes are downloaded and dropped).
    max_request : int
        Largest request, in bytes; larger ranges are split.
    max_workers : int
        Threads fetching requests in parallel in :meth:`read_ranges`.
    max_backoff : float
        Cap on any single retry delay, in seconds.

    Notes
    -----
    The object holds only the URL and settings and pickles cheaply; each
    process opens its own ``requests.Session`` on first use.  Only ranges
    within the file can be read; a range past the end raises
    :class:`RemoteReadError` at once (no retries).
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 5,
        backoff: float = 0.05,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        timeout_retries: int = 1,
        max_gap: int = 1 << 20,
        max_request: int = 16 << 20,
        max_workers: int = 8,
        max_backoff: float = 10.0,
    ):
        scheme = _scheme(url)
        if scheme not in REMOTE_SCHEMES:
            raise ValueError(
                f"unsupported URL scheme {scheme or '(none)'!r} in {url!r}; "
                "HTTPByteSource reads http://, https:// and s3:// URLs"
            )
        timeouts = tuple(float(t) for t in timeout) if isinstance(timeout, (tuple, list)) else (float(timeout),) * 2
        if len(timeouts) != 2 or min(timeouts) <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or (connect, read) seconds, got {timeout!r}")
        if retries < 0 or timeout_retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, timeout_retries, backoff and max_backoff must be >= 0")
        if max_gap < 0 or max_request < 1 or max_workers < 1:
            raise ValueError("max_gap must be >= 0, max_request and max_workers >= 1")
        self.url = s3_to_https(url) if scheme == "s3" else url
        self.original_url = url
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.timeout = timeouts
        self.timeout_retries = int(timeout_retries)
        self.max_gap = int(max_gap)
        self.max_request = int(max_request)
        self.max_workers = int(max_workers)
        self._size: int | None = None
        self._session_obj = None
        self._session_pid: int | None = None

    # -- pickling and sessions --------------------------------------------- #
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session_obj"] = None
        state["_session_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"HTTPByteSource({self.original_url!r})"

    def _session(self):
        """This process's ``requests.Session`` (created on first use)."""
        pid = os.getpid()
        if self._session_obj is None or self._session_pid != pid:
            with _SESSION_LOCK:
                if self._session_obj is None or self._session_pid != pid:
                    import requests
                    from requests.adapters import HTTPAdapter
                    from urllib3.util import Retry

                    session = requests.Session()
                    # Retries are counted here, not in urllib3, so attempts are exact.
                    adapter = HTTPAdapter(
                        pool_connections=1,
                        pool_maxsize=self.max_workers + 2,
                        max_retries=Retry(total=0, read=False, redirect=5, raise_on_redirect=False),
                    )
                    session.mount("http://", adapter)
                    session.mount("https://", adapter)
                    session.headers["Accept-Encoding"] = "identity"
                    self._session_obj, self._session_pid = session, pid
        return self._session_obj

    def close(self) -> None:
        """Close this process's session (a new one opens on next use)."""
        if self._session_obj is not None:
            self._session_obj.close()
        self._session_obj = None

    # -- retries ----------------------------------------------------------- #
    def _delay(self, retry: int, after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        delay = after if after is not None else self.backoff * 2 ** (retry - 1)
        return min(delay, self.max_backoff)

    @property
    def silent_server_seconds(self) -> float:
        """Longest wait for one request to a server that accepts connections and never answers."""
        tries = min(self.retries, self.timeout_retries) + 1
        return tries * self.timeout[1] + sum(self._delay(k, None) for k in range(1, tries))

    def _with_retries(self, byte_range: tuple[int, int] | None, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until it succeeds, retrying transient failures (timeouts ``timeout_retries`` times)."""
        import requests
        import urllib3

        last, after, timeouts = "no attempt made", None, 0
        attempts = 0
        for i in range(self.retries + 1):
            if i:
                time.sleep(self._delay(i, after))
            after = None
            attempts += 1
            try:
                return attempt()
            except RemoteReadError:
                raise
            except _Retry as exc:
                last, after = str(exc), exc.after
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
                raise
            except (requests.RequestException, http.client.HTTPException, OSError, urllib3.exceptions.HTTPError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if _timed_out(exc):
                    timeouts += 1
                    if timeouts > self.timeout_retries:
                        last += (f" (no reply within the {self.timeout[1]:g} s read timeout or {self.timeout[0]:g} s "
                                 "connect timeout; for a slow server raise the timeout: remote_options timeout=, nwb-dask info --timeout)")
                        break
        raise RemoteReadError(self.url, byte_range, attempts, last)

    # -- size -------------------------------------------------------------- #
    @property
    def size(self) -> int:
        """File size in bytes (HEAD ``Content-Length``, else a 1-byte ranged GET)."""
        if self._size is None:
            self._size = self._with_retries(None, self._fetch_size)
        return self._size

    def _fetch_size(self) -> int:
        session = self._session()
        resp = session.head(self.url, timeout=self.timeout, allow_redirects=True)
        if resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
            self._check_status(resp, None)
        # Other HEAD failures (405, 403 on presigned GET URLs, ...): try the GET below.
        length = resp.headers.get("Content-Length")
        if resp.status_code == 200 and length is not None and "Content-Encoding" not in resp.headers:
            return int(length)
        with session.get(self.url, headers={"Range": "bytes=0-0"}, timeout=self.timeout, stream=True) as resp:
            self._check_status(resp, None)
            if resp.status_code == 206:
                cr = _parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[2] is None:
                    raise _Retry(f"206 reply without a total size in Content-Range {resp.headers.get('Content-Range')!r}")
                return cr[2]
            if resp.status_code == 416:  # empty file
                cr = _parse_content_range(resp.headers.get("Content-Range"))
                if cr is not None and cr[2] is not None:
                    return cr[2]
            length = resp.headers.get("Content-Length")
            if resp.status_code == 200 and length is not None:
                return int(length)
        raise RemoteReadError(self.url, None, 1, "server reports no Content-Length or Content-Range")

    def _check_status(self, resp, byte_range: tuple[int, int] | None) -> None:
        """Raise :class:`_Retry` for transient statuses, :class:`RemoteReadError` for other errors."""
        code = resp.status_code
        if code in _RETRY_STATUS or code >= 500:
            raise _Retry(f"HTTP {code} {resp.reason}", _retry_after(resp))
        if code >= 400 and code != 416:
            raise RemoteReadError(self.url, byte_range, 1, f"HTTP {code} {resp.reason}")

    # -- reading ----------------------------------------------------------- #
    def _fetch(self, offset: int, length: int) -> bytes:
        """One ranged GET of ``length`` (> 0) bytes at ``offset``, with retries."""
        return self._with_retries((offset, length), lambda: self._fetch_once(offset, length))

    def _fetch_once(self, offset: int, length: int) -> bytes:
        end = offset + length - 1
        headers = {"Range": f"bytes={offset}-{end}", "Accept-Encoding": "identity"}
        with self._session().get(self.url, headers=headers, timeout=self.timeout, stream=True) as resp:
            self._check_status(resp, (offset, length))
            if resp.status_code == 416:
                cr = _parse_content_range(resp.headers.get("Content-Range"))
                size = f" (file size {cr[2]})" if cr and cr[2] is not None else ""
                raise RemoteReadError(self.url, (offset, length), 1, f"range is past the end of the file{size}")
            if resp.status_code == 206:
                return self._body_206(resp, offset, length)
            if resp.status_code == 200:
                return self._body_200(resp, offset, length)
            raise _Retry(f"unexpected HTTP {resp.status_code} {resp.reason} to a Range request")

    def _body_206(self, resp, offset: int, length: int) -> bytes:
        """The requested bytes of a 206 reply, checked against ``Content-Range``."""
        cr = _parse_content_range(resp.headers.get("Content-Range"))
        if cr is None or cr[0] is None:
            raise _Retry(f"206 reply with invalid Content-Range {resp.headers.get('Content-Range')!r}")
        start, stop, total = cr
        if start != offset:
            raise _Retry(f"Content-Range {resp.headers['Content-Range']!r} does not start at {offset}")
        # One large read: requests' .content iterates in 10 KiB pieces in
        # Python, which capped a 2-core reader at ~130 MB/s with no latency.
        data = resp.raw.read(stop - start + 1, decode_content=False)
        if len(data) != stop - start + 1:
            raise _Retry(f"truncated body: {len(data)} of {stop - start + 1} bytes")
        if len(data) < length:
            if total is not None and stop == total - 1:
                raise RemoteReadError(self.url, (offset, length), 1, f"range is past the end of the file (file size {total})")
            raise _Retry(f"server sent {len(data)} of {length} bytes requested")
        return data[:length] if len(data) > length else data

    def _body_200(self, resp, offset: int, length: int) -> bytes:
        """The requested bytes of a full-body 200 reply (the server ignored ``Range``).

        The body is read only up to the end of the range.
        """
        total = resp.headers.get("Content-Length")
        if total is not None and int(total) < offset + length:
            raise RemoteReadError(self.url, (offset, length), 1, f"range is past the end of the file (file size {total})")
        need = offset + length
        parts, got = [], 0
        for part in resp.iter_content(chunk_size=1 << 20):
            parts.append(part)
            got += len(part)
            if got >= need:
                break
        body = b"".join(parts)
        if len(body) < need:
            raise _Retry(f"truncated body: full-body reply of {len(body)} bytes, need {need}")
        return body[offset:need]

    def map_ranges(self, ranges: Sequence[tuple[int, int]], fn: Callable[[int, bytes], _T], *, spread: bool = False) -> list[_T]:
        """Fetch ranges and call ``fn(index, bytes)`` on each in the thread that fetched it.

        Processing (e.g. decoding) each range where it lands overlaps with the
        requests still in flight and runs on as many threads as there are
        requests, which matters when the processing releases the GIL.

        Parameters
        ----------
        ranges : sequence of (int, int)
            Byte ranges, as for :meth:`read_ranges`.
        fn : callable
            Called once per range, from a pool thread, with the range's index
            and bytes; must be thread-safe.
        spread : bool
            Coalesce into up to ``max_workers`` requests of at least
            :data:`MIN_SPREAD_REQUEST` bytes (instead of as few requests as
            ``max_request`` allows), so the bytes arrive, and are processed,
            in parallel.

        Returns
        -------
        list
            ``fn``'s results in input order.  On an error the requests not yet
            started are cancelled and the error is raised once every running
            call has returned (so none still runs after this returns).
        """
        ranges, spans = _plan(ranges, self.max_gap, self.max_request, self.max_workers, spread)
        return _map_spans(ranges, [[span] for span in spans], self._fetch_spans, fn, self.max_workers, "nwb_dask-http")

    def _fetch_spans(self, spans: list[_Span]) -> list[bytes]:
        """The bytes of each span, a span larger than ``max_request`` fetched in pieces."""
        step = self.max_request
        return [b"".join(self._fetch(p, min(step, end - p)) for p in range(start, end, step)) for start, end, _ in spans]

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """A read-only, seekable file object over the remote file.

        Reads go through an LRU cache of ``cache_blocks`` blocks of
        ``block_size`` bytes (blocks missing for one read are fetched together
        by :meth:`read_ranges`).  Enough for h5py: ``h5py.File(src.open(), "r")``.
        """
        first = None
        if self._size is None:  # one GET gives the size and the first block (no HEAD round trip)
            self._size, first = self._with_retries((0, block_size), lambda: self._fetch_head(block_size))
        return io.BufferedReader(_BlockCacheFile(self, block_size, cache_blocks, first))

    def _fetch_head(self, length: int) -> tuple[int, bytes | None]:
        """The file size and its first ``length`` bytes (fewer for a smaller file) in one request."""
        headers = {"Range": f"bytes=0-{length - 1}", "Accept-Encoding": "identity"}
        with self._session().get(self.url, headers=headers, timeout=self.timeout, stream=True) as resp:
            self._check_status(resp, (0, length))
            cr = _parse_content_range(resp.headers.get("Content-Range"))
            if resp.status_code == 206 and cr is not None and cr[0] == 0 and cr[2] is not None:
                data = resp.raw.read(cr[1] + 1, decode_content=False)
                if len(data) != cr[1] + 1:
                    raise _Retry(f"truncated body: {len(data)} of {cr[1] + 1} bytes")
                return cr[2], data
            if resp.status_code == 416 and cr is not None and cr[2] == 0:
                return 0, b""
            total = resp.headers.get("Content-Length")
            if resp.status_code == 200 and total is not None and "Content-Encoding" not in resp.headers:
                total = int(total)
                return total, self._body_200(resp, 0, min(length, total))
        return self._fetch_size(), None  # an unusual reply: ask for the size the long way


class _BlockCacheFile(io.RawIOBase):
    """Raw read-only file over a byte source, with an LRU block cache."""

    def __init__(self, source, block_size: int, cache_blocks: int, first: bytes | None = None):
        if block_size < 1 or cache_blocks < 1:
            raise ValueError("block_size and cache_blocks must be >= 1")
        super().__init__()
        self.source = source
        self.name = getattr(source, "url", None) or getattr(source, "path", "")
        self._size = source.size
        self._bs = int(block_size)
        self._max_blocks = int(cache_blocks)
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._pos = 0
        if first is not None and len(first) == min(self._bs, self._size):
            self._cache[0] = first

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence!r}")
        pos = base + int(offset)
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        self._checkClosed()
        out = memoryview(b).cast("B")
        n = max(0, min(len(out), self._size - self._pos))
        if n == 0:
            return 0
        bs, pos = self._bs, self._pos
        blocks = self._blocks(range(pos // bs, (pos + n - 1) // bs + 1))
        done = 0
        for index, block in blocks:
            lo = max(pos + done - index * bs, 0)
            take = min(len(block) - lo, n - done)
            out[done : done + take] = block[lo : lo + take]
            done += take
        self._pos += done
        return done

    def _blocks(self, indices: range) -> list[tuple[int, bytes]]:
        """The blocks ``indices``, from the cache or fetched together."""
        missing = [i for i in indices if i not in self._cache]
        fetched = {}
        if missing:
            data = self.source.read_ranges([(i * self._bs, min(self._bs, self._size - i * self._bs)) for i in missing])
            fetched = dict(zip(missing, data))
        result = []
        for i in indices:
            block = fetched[i] if i in fetched else self._cache[i]
            self._cache[i] = block
            self._cache.move_to_end(i)
            result.append((i, block))
        while len(self._cache) > self._max_blocks:
            self._cache.popitem(last=False)
        return result


# --------------------------------------------------------------------------- #
# fsspec (signed S3 through s3fs, GCS, Azure, ...)                             #
# --------------------------------------------------------------------------- #
class FsspecByteSource(_RangeReader):
    """Byte ranges of one file on an fsspec filesystem, with the interface of :class:`HTTPByteSource`.

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
        scheme = _scheme(url)
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
        """File size in bytes (``fs.size``)."""
        if self._size is None:
            fs, path = self._filesystem()
            try:
                size = fs.size(path)
            except Exception as exc:
                raise self._error(exc, None) from exc
            if size is None:
                raise RemoteReadError(self.url, None, 1, "the filesystem reports no size")
            self._size = int(size)
        return self._size

    # -- reading ------------------------------------------------------------- #
    def map_ranges(self, ranges: Sequence[tuple[int, int]], fn: Callable[[int, bytes], _T], *, spread: bool = False) -> list[_T]:
        """Fetch ranges and call ``fn(index, bytes)`` on each in the thread that fetched it.

        As :meth:`HTTPByteSource.map_ranges`: ranges are coalesced into
        requests (with ``spread``, into up to ``max_workers`` requests of at
        least :data:`MIN_SPREAD_REQUEST` bytes), the requests are dealt to up
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
        ranges, spans = _plan(ranges, self.max_gap, self.max_request, self.max_workers, spread)
        if self._size is not None:  # known size: refuse ranges past the end without a request
            for off, length in ranges:
                if length and off + length > self._size:
                    raise self._past_end(off, length)
        jobs = _balance(spans, self.max_workers)
        return _map_spans(ranges, jobs, self._fetch_spans, fn, self.max_workers, "nwb_dask-fsspec")

    def _past_end(self, offset: int, length: int, got: int | None = None) -> RemoteReadError:
        got_text = f"got {got} of {length} bytes; " if got is not None else ""
        size = f" (file size {self._size})" if self._size is not None else ""
        return RemoteReadError(self.url, (offset, length), 1, f"{got_text}range is past the end of the file{size}")

    def _fetch_spans(self, spans: list[_Span]) -> list[bytes]:
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

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """A read-only, seekable file object over the file.

        Reads go through an LRU cache of ``cache_blocks`` blocks of
        ``block_size`` bytes, fetched by :meth:`read_ranges` (so failures
        raise the same errors as chunk reads).  Enough for h5py:
        ``h5py.File(src.open(), "r")``.
        """
        return io.BufferedReader(_BlockCacheFile(self, block_size, cache_blocks))


# --------------------------------------------------------------------------- #
# Local files (same interface)                                                 #
# --------------------------------------------------------------------------- #
class LocalByteSource:
    """Byte ranges of a local file, with the interface of :class:`HTTPByteSource`.

    Parameters
    ----------
    path : str or path-like
        The file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"LocalByteSource({self.path!r})"

    @property
    def size(self) -> int:
        """File size in bytes."""
        return os.path.getsize(self.path)

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``."""
        return self.read_ranges([(offset, length)])[0]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read ``(offset, length)`` ranges, in input order (``OSError`` past end of file)."""
        ranges = _check_ranges(ranges)
        out = []
        with open(self.path, "rb") as f:
            for off, length in ranges:
                f.seek(off)
                data = f.read(length)
                if len(data) != length:
                    raise OSError(f"cannot read {length} bytes at offset {off} of {self.path}: past the end of the file")
                out.append(data)
        return out

    def map_ranges(self, ranges: Sequence[tuple[int, int]], fn: Callable[[int, bytes], _T], *, spread: bool = False) -> list[_T]:
        """``fn(index, bytes)`` for each range, in input order, in this thread (``spread`` is ignored)."""
        return [fn(i, data) for i, data in enumerate(self.read_ranges(ranges))]

    def open(self) -> io.BufferedReader:
        """The file, opened for binary reading."""
        return open(self.path, "rb")

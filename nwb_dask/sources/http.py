"""HTTP(S) byte source (and public S3 objects over HTTPS): ranged GETs with retries.

:class:`HTTPByteSource`

* coalesces neighbouring ranges (gap <= ``max_gap``) into GET requests of at
  most ``max_request`` bytes and fetches them in parallel threads
  (:mod:`nwb_dask.sources.ranges`);
* retries with exponential backoff on 5xx and 429 responses, connection
  errors and resets, truncated bodies and mismatched ``Content-Range``
  headers, then raises :class:`~nwb_dask.sources.base.RemoteReadError`;
* copes with servers that ignore ``Range`` (a ``200`` full-body reply) by
  reading the body only up to the requested range;
* offers a seekable, block-cached file-like view (:meth:`HTTPByteSource.open`)
  so h5py can read the file's metadata: ``h5py.File(src.open(), "r")``.

It holds only the URL and settings (picklable) and opens one
``requests.Session`` per process.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from nwb_dask.sources.base import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CACHE_BLOCKS,
    BlockCacheFile,
    ByteSource,
    RemoteReadError,
    url_scheme,
)
from nwb_dask.sources.cache import preload, validator_from
from nwb_dask.sources.ranges import Span, check_ranges, coalesce, map_spans, plan

__all__ = ["DEFAULT_TIMEOUT", "MULTIRANGE_PARTS", "REMOTE_SCHEMES", "HTTPByteSource", "parse_content_range", "s3_to_https"]

#: URL schemes :class:`HTTPByteSource` reads.
REMOTE_SCHEMES = ("http", "https", "s3")
#: Default ``(connect, read)`` timeouts of :class:`HTTPByteSource` requests, in seconds.
DEFAULT_TIMEOUT = (5.0, 10.0)

#: Most ranges in one multi-range request (keeps the Range header within servers' 4-8 KiB header limits).
MULTIRANGE_PARTS = 160

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_SESSION_LOCK = threading.Lock()
_T = TypeVar("_T")


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


# --------------------------------------------------------------------------- #
# Replies                                                                      #
# --------------------------------------------------------------------------- #
def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
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


def _batches(spans: list[Span], parts: int, max_bytes: int) -> list[list[Span]]:
    """Spans in offset order, cut into groups of at most ``parts`` spans and ``max_bytes`` bytes."""
    out: list[list[Span]] = []
    size = 0
    for span in spans:
        n = span[1] - span[0]
        if not out or len(out[-1]) >= parts or size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(span)
        size += n
    return out


def _multipart(body: bytes, boundary: bytes) -> list[tuple[int, bytes]]:
    """The ``(start, bytes)`` parts of a ``multipart/byteranges`` body (RFC 9110 14.6)."""
    delim = b"--" + boundary
    parts = []
    pos = body.find(delim)
    while pos >= 0:
        pos += len(delim)
        if body[pos : pos + 2] == b"--":
            break
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise _Retry("truncated multipart reply (part headers)")
        cr = None
        for line in body[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-range":
                cr = parse_content_range(value.decode("latin-1"))
        if cr is None or cr[0] is None:
            raise _Retry("multipart reply part without a valid Content-Range")
        start = head_end + 4
        n = cr[1] - cr[0] + 1
        data = body[start : start + n]
        if len(data) != n:
            raise _Retry(f"truncated multipart reply: {len(data)} of {n} bytes of a part")
        parts.append((cr[0], data))
        pos = body.find(delim, start + n)
    if not parts:
        raise _Retry("multipart reply without parts")
    return parts


def _retry_after(resp) -> float | None:
    """The ``Retry-After`` delay in seconds, if given as a number."""
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "")))
    except ValueError:
        return None


class HTTPByteSource(ByteSource):
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
    scatter_workers : int
        Parallel requests in :meth:`read_scattered` (metadata prefetching:
        many small ranges far apart) when the server does not answer
        multi-range requests; object stores serve many connections at once,
        so this is larger than ``max_workers``.
    multirange : bool or None
        Whether :meth:`read_scattered` sends multi-range requests
        (``Range: bytes=a-b,c-d,...``, answered ``multipart/byteranges`` by
        nginx, Apache, most CDNs): None (default) tries once and remembers
        what the server did; False never; True always tries.  Servers that
        answer with the whole body (S3 and most object stores) are detected
        on the first try, whose reply is dropped unread.

    Notes
    -----
    The object holds only the URL and settings and pickles cheaply; each
    process opens its own ``requests.Session`` on first use.  Only ranges
    within the file can be read; a range past the end raises
    :class:`RemoteReadError` at once (no retries).
    """

    #: The on-disk metadata cache :meth:`open` preloads from (:mod:`nwb_dask.sources.cache`; set by
    #: :func:`~nwb_dask.sources.byte_source`), and the file's version (ETag / Last-Modified) as the
    #: reply that gave the size named it (None: unknown, nothing cached).
    metadata_cache = None
    validator: str | None = None

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
        scatter_workers: int = 32,
        multirange: bool | None = None,
    ):
        scheme = url_scheme(url)
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
        if max_gap < 0 or max_request < 1 or max_workers < 1 or scatter_workers < 1:
            raise ValueError("max_gap must be >= 0, max_request, max_workers and scatter_workers >= 1")
        if multirange not in (None, True, False):
            raise ValueError(f"multirange must be None, True or False, got {multirange!r}")
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
        self.scatter_workers = int(scatter_workers)
        self.multirange = multirange
        self._multirange_ok: bool | None = None if multirange is None else bool(multirange)
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
                        pool_maxsize=max(self.max_workers, self.scatter_workers) + 2,
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
            self.validator = validator_from(resp.headers)
            return int(length)
        with session.get(self.url, headers={"Range": "bytes=0-0"}, timeout=self.timeout, stream=True) as resp:
            self._check_status(resp, None)
            self.validator = validator_from(resp.headers)
            if resp.status_code == 206:
                cr = parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[2] is None:
                    raise _Retry(f"206 reply without a total size in Content-Range {resp.headers.get('Content-Range')!r}")
                return cr[2]
            if resp.status_code == 416:  # empty file
                cr = parse_content_range(resp.headers.get("Content-Range"))
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
                cr = parse_content_range(resp.headers.get("Content-Range"))
                size = f" (file size {cr[2]})" if cr and cr[2] is not None else ""
                raise RemoteReadError(self.url, (offset, length), 1, f"range is past the end of the file{size}")
            if resp.status_code == 206:
                return self._body_206(resp, offset, length)
            if resp.status_code == 200:
                return self._body_200(resp, offset, length)
            raise _Retry(f"unexpected HTTP {resp.status_code} {resp.reason} to a Range request")

    def _body_206(self, resp, offset: int, length: int) -> bytes:
        """The requested bytes of a 206 reply, checked against ``Content-Range``."""
        cr = parse_content_range(resp.headers.get("Content-Range"))
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
            :data:`~nwb_dask.sources.ranges.MIN_SPREAD_REQUEST` bytes (instead of as few requests as
            ``max_request`` allows), so the bytes arrive, and are processed,
            in parallel.

        Returns
        -------
        list
            ``fn``'s results in input order.  On an error the requests not yet
            started are cancelled and the error is raised once every running
            call has returned (so none still runs after this returns).
        """
        ranges, spans = plan(ranges, self.max_gap, self.max_request, self.max_workers, spread)
        return map_spans(ranges, [[span] for span in spans], self._fetch_spans, fn, self.max_workers, "nwb_dask-http")

    def read_scattered(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read many small ranges far apart: multi-range requests where the server answers them.

        Ranges are grouped, up to :data:`MULTIRANGE_PARTS` ranges and
        ``max_request`` bytes per request, into multi-range requests fetched
        in parallel; a server that does not answer them (see ``multirange``)
        gets one request per range instead, ``scatter_workers`` at a time.
        Retries and errors are those of :meth:`read_ranges`.
        """
        ranges = check_ranges(ranges)
        spans = coalesce(ranges, 0, self.max_request)
        out: list[bytes] = [b""] * len(ranges)
        if not spans:
            return out
        got: dict[tuple[int, int], bytes] = {}
        if self._multirange_ok is not False and len(spans) > 1:
            batches = _batches(spans, MULTIRANGE_PARTS, self.max_request)
            first, rest = batches[0], batches[1:]
            answered = self._multi(first)  # the first batch alone: it tells whether the server answers
            if answered is not None:
                got.update(answered)
                if rest:
                    with ThreadPoolExecutor(min(self.max_workers, len(rest)), thread_name_prefix="nwb_dask-http-multi") as pool:
                        for part in pool.map(self._multi, rest):
                            got.update(part or {})
        todo = [sp for sp in spans if (sp[0], sp[1]) not in got]
        if todo:
            ranges_todo = [(a, b - a) for a, b, _ in todo]
            data = map_spans(ranges_todo, [[(a, b, [i])] for i, (a, b, _) in enumerate(todo)], self._fetch_spans,
                             lambda i, d: d, self.scatter_workers, "nwb_dask-http-scatter")
            got.update({(a, b): d for (a, b, _), d in zip(todo, data)})
        for start, end, members in spans:
            buf = got[(start, end)]
            for i in members:
                off, length = ranges[i]
                out[i] = buf[off - start : off - start + length]
        return out

    def _multi(self, spans: list[Span]) -> dict[tuple[int, int], bytes] | None:
        """One multi-range request for ``spans`` (with retries); None when the server does not answer it."""
        if len(spans) == 1:
            start, end, _ = spans[0]
            return {(start, end): self._fetch(start, end - start)}
        if self._multirange_ok is False:
            return None
        rng = (spans[0][0], spans[-1][1] - spans[0][0])
        try:
            parts = self._with_retries(rng, lambda: self._multi_once(spans))
        except RemoteReadError:
            if self._multirange_ok is None:
                self._multirange_ok = False
                return None
            raise
        if parts is None:
            self._multirange_ok = False
            return None
        self._multirange_ok = True
        return parts

    def _multi_once(self, spans: list[Span]) -> dict[tuple[int, int], bytes] | None:
        header = "bytes=" + ",".join(f"{a}-{b - 1}" for a, b, _ in spans)
        headers = {"Range": header, "Accept-Encoding": "identity"}
        with self._session().get(self.url, headers=headers, timeout=self.timeout, stream=True) as resp:
            code = resp.status_code
            if code in _RETRY_STATUS or code >= 500:
                self._check_status(resp, (spans[0][0], spans[-1][1] - spans[0][0]))
            if code != 206:
                return None  # 200 (whole body: dropped unread), 416, 4xx: answer each range on its own
            ctype = resp.headers.get("Content-Type", "")
            length = resp.headers.get("Content-Length")
            if length is None:
                body = resp.raw.read(decode_content=False)
            else:
                body = resp.raw.read(int(length), decode_content=False)
                if len(body) != int(length):
                    raise _Retry(f"truncated body: {len(body)} of {length} bytes")
            if ctype.lower().startswith("multipart/byteranges"):
                m = re.search(r'boundary="?([^";]+)"?', ctype)
                if m is None:
                    return None
                parts = _multipart(body, m.group(1).encode("latin-1"))
            else:  # one range for all: the server merged them
                cr = parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] is None or len(body) != cr[1] - cr[0] + 1:
                    raise _Retry(f"206 reply with invalid Content-Range {resp.headers.get('Content-Range')!r}")
                parts = [(cr[0], body)]
        out = {}
        for start, end, _ in spans:
            for p_start, data in parts:
                if p_start <= start and end <= p_start + len(data):
                    out[(start, end)] = data[start - p_start : end - p_start]
                    break
        if len(out) != len(spans):
            if len(parts) == 1:  # only part of the ranges answered (some servers answer the first only)
                return None
            raise _Retry(f"multipart reply misses {len(spans) - len(out)} of {len(spans)} ranges")
        return out

    def _fetch_spans(self, spans: list[Span]) -> list[bytes]:
        """The bytes of each span, a span larger than ``max_request`` fetched in pieces."""
        step = self.max_request
        return [b"".join(self._fetch(p, min(step, end - p)) for p in range(start, end, step)) for start, end, _ in spans]

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """A read-only, seekable file object over the remote file.

        Reads go through an LRU cache of ``cache_blocks`` blocks of
        ``block_size`` bytes (blocks missing for one read are fetched together
        by :meth:`read_ranges`).  Enough for h5py: ``h5py.File(src.open(), "r")``.
        The metadata cached for this version of the file (:attr:`metadata_cache`,
        checked against :attr:`validator`) is preloaded, so h5py reads it
        without requests.
        """
        first = None
        if self._size is None:  # one GET gives the size and the first block (no HEAD round trip)
            self._size, first = self._with_retries((0, block_size), lambda: self._fetch_head(block_size))
        raw = BlockCacheFile(self, block_size, cache_blocks, first)
        preload(self, raw)
        return io.BufferedReader(raw)

    def _fetch_head(self, length: int) -> tuple[int, bytes | None]:
        """The file size and its first ``length`` bytes (fewer for a smaller file) in one request."""
        headers = {"Range": f"bytes=0-{length - 1}", "Accept-Encoding": "identity"}
        with self._session().get(self.url, headers=headers, timeout=self.timeout, stream=True) as resp:
            self._check_status(resp, (0, length))
            self.validator = validator_from(resp.headers)
            cr = parse_content_range(resp.headers.get("Content-Range"))
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


"""The byte-source protocol: what the reader asks of a file, wherever its bytes live.

Modelled on zarr-python 3's ``zarr.abc.store.Store`` (a small ABC, one
implementation per module): a :class:`ByteSource` has a :attr:`~ByteSource.size`,
reads ``(offset, length)`` ranges (:meth:`~ByteSource.read_ranges`, or
:meth:`~ByteSource.map_ranges` to process each range in the thread that
fetched it), offers a seekable file-like for h5py's metadata reads
(:meth:`~ByteSource.open`) and can drop its connections (:meth:`~ByteSource.close`).

Also here, because every source and the reader's caches need them:
:class:`RemoteReadError` and the option freezing (:func:`freeze_options`,
:func:`freeze`, :func:`thaw`) that makes settings hashable cache keys.
"""

from __future__ import annotations

import abc
import collections
import io
from typing import Any, Callable, Sequence, TypeVar

from nwb_dask.sources.extents import Extents

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CACHE_BLOCKS",
    "EXTENT_BYTES",
    "JOURNAL_BYTES",
    "PREFETCH_GAP",
    "BlockCacheFile",
    "ByteSource",
    "RemoteReadError",
    "freeze",
    "freeze_options",
    "thaw",
    "url_scheme",
]

#: Default block size and block count of the cache behind :meth:`ByteSource.open`.
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_CACHE_BLOCKS = 64

T = TypeVar("T")


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


def url_scheme(url_or_path: str) -> str:
    """The URL scheme of ``url_or_path`` (``""`` for plain paths, including ``C:\\...``)."""
    if "://" not in url_or_path:
        return ""
    scheme = url_or_path.split("://", 1)[0].lower()
    return "" if len(scheme) == 1 else scheme


# --------------------------------------------------------------------------- #
# Option freezing (hashable cache keys)                                        #
# --------------------------------------------------------------------------- #
class _FrozenDict(tuple):
    """A dict as a hashable tuple of ``(key, value)`` pairs (see :func:`freeze`)."""

    __slots__ = ()


class _FrozenList(tuple):
    """A list as a hashable tuple (see :func:`freeze`)."""

    __slots__ = ()


def freeze(value: Any) -> Any:
    """``value`` with dicts and lists (at any depth) made hashable; :func:`thaw` undoes it.

    Dict items are sorted by key, so equal dicts freeze equal.
    """
    if isinstance(value, dict):
        return _FrozenDict(sorted(((k, freeze(v)) for k, v in value.items()), key=lambda kv: repr(kv[0])))
    if isinstance(value, list):
        return _FrozenList(freeze(v) for v in value)
    if type(value) is tuple:
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Undo :func:`freeze`."""
    if isinstance(value, _FrozenDict):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, _FrozenList):
        return [thaw(v) for v in value]
    if type(value) is tuple:
        return tuple(thaw(v) for v in value)
    return value


def freeze_options(options: dict | None) -> tuple:
    """Byte-source options as a hashable, sorted tuple of items (nested dicts frozen).

    The reader caches sources on this key; :func:`nwb_dask.sources.byte_source` thaws it.
    """
    return tuple(sorted(((k, freeze(v)) for k, v in (options or {}).items()), key=lambda kv: kv[0]))


# --------------------------------------------------------------------------- #
# The protocol                                                                 #
# --------------------------------------------------------------------------- #
class ByteSource(abc.ABC):
    """Byte ranges of one file.

    A subclass implements :attr:`size` and :meth:`map_ranges`; :meth:`read`,
    :meth:`read_ranges` and :meth:`open` (a block-cached file over
    :meth:`read_ranges`) follow from them, :meth:`close` does nothing unless
    overridden.  Sources travel to dask workers inside tasks, so they must
    pickle cheaply: hold the location and settings, and open connections
    lazily, once per process.
    """

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """File size in bytes."""

    @abc.abstractmethod
    def map_ranges(self, ranges: Sequence[tuple[int, int]], fn: Callable[[int, bytes], T], *, spread: bool = False) -> list[T]:
        """Fetch ``(offset, length)`` ranges and return ``[fn(i, bytes_i) ...]`` in input order.

        ``fn`` may be called from pool threads (it must be thread-safe), each
        range in the thread that fetched it; ``spread`` asks to spread the
        bytes over parallel requests (a hint; sources without parallelism
        ignore it).  Ranges may overlap, touch, repeat or be empty.
        """

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

    def read_scattered(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read many small ranges spread over the file, in as few round trips as the source can.

        For metadata prefetching: the ranges are small and far apart, so
        joining them across the gaps (as :meth:`read_ranges` does) would
        download the data between them.  The default is :meth:`read_ranges`;
        :class:`~nwb_dask.sources.http.HTTPByteSource` sends multi-range
        requests where the server answers them, else many parallel requests.
        """
        return self.read_ranges(ranges)

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """A read-only, seekable file object over the file.

        Reads go through an LRU cache of ``cache_blocks`` blocks of
        ``block_size`` bytes, fetched by :meth:`read_ranges` (so failures
        raise the same errors as chunk reads).  Enough for h5py:
        ``h5py.File(src.open(), "r")``.
        """
        return io.BufferedReader(BlockCacheFile(self, block_size, cache_blocks))

    def close(self) -> None:
        """Drop this process's connections (new ones open on next use)."""


#: Most bytes a :class:`BlockCacheFile` holds in :attr:`~BlockCacheFile.extents` (prefetched or preloaded).
EXTENT_BYTES = 256 << 20
#: Most bytes a :class:`BlockCacheFile` records in its :attr:`~BlockCacheFile.journal`.
JOURNAL_BYTES = 64 << 20
#: Gaps up to this size between prefetched ranges (and stored extents) are fetched too: HDF5's
#: metadata accumulator reads across such gaps, which would otherwise each cost a request.
PREFETCH_GAP = 4096


def _close_gaps(ranges: Sequence[tuple[int, int]], extents: Extents, gap: int) -> list[tuple[int, int]]:
    """``ranges`` merged where at most ``gap`` bytes apart, and stretched over such gaps to stored extents."""
    spans = sorted((o, o + n) for o, n in ranges if n > 0)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out = []
    for start, end in merged:
        prev_end = extents.end_before(start)
        if prev_end is not None and start - prev_end <= gap:
            start = prev_end
        next_start = extents.start_after(end)
        if next_start is not None and next_start - end <= gap:
            end = next_start
        out.append((start, end - start))
    return out


class BlockCacheFile(io.RawIOBase):
    """Raw read-only file over a byte source, with an LRU block cache.

    ``first``, when given, is the file's first block, already fetched (an
    HTTP source gets it together with the size in one request).

    Two :class:`~nwb_dask.sources.extents.Extents` stores sit beside the
    blocks.  :attr:`extents` holds bytes fetched ahead (:meth:`prefetch`) or
    loaded from elsewhere (:meth:`preload`, e.g. the metadata cache); reads
    are served from it first, without a request.  :attr:`journal` records
    every byte read through this file (up to :data:`JOURNAL_BYTES`; past
    that its ``full`` is set), i.e. exactly the metadata h5py needed.

    A read that starts inside a stored extent returns only the bytes up to
    the extent's end (a short read, as raw files may); use it through
    :class:`io.BufferedReader` (as :meth:`ByteSource.open` does), which
    reads on until it has what was asked.
    """

    def __init__(self, source: ByteSource, block_size: int, cache_blocks: int, first: bytes | None = None):
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
        self.extents = Extents(EXTENT_BYTES)
        self.journal = Extents(JOURNAL_BYTES)

    @property
    def size(self) -> int:
        """File size in bytes."""
        return self._size

    def peek_bytes(self, offset: int, length: int) -> bytes | None:
        """Bytes ``offset:offset + length`` if held here (extents or cached blocks), else None; no request."""
        if offset < 0 or length < 0 or offset + length > self._size:
            return None
        got = self.extents.get(offset, length)
        if got is not None:
            return got
        bs = self._bs
        parts = []
        for i in range(offset // bs, (offset + max(length, 1) - 1) // bs + 1):
            block = self._cache.get(i)
            if block is None:
                return None
            parts.append(block)
        if not parts:
            return b""
        lo = offset - (offset // bs) * bs
        return b"".join(parts)[lo : lo + length]

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Fetch the parts of ``ranges`` not held here into :attr:`extents` (:meth:`ByteSource.read_scattered`).

        Ranges are clipped to the file.  Returns the number of bytes fetched.
        """
        clipped = [(o, min(n, self._size - o)) for o, n in ranges if 0 <= o < self._size and n > 0]
        missing = [(o, n) for o, n in self.extents.missing(_close_gaps(clipped, self.extents, PREFETCH_GAP))
                   if self.peek_bytes(o, n) is None]
        if not missing:
            return 0
        for (offset, _), data in zip(missing, self.source.read_scattered(missing)):
            self.extents.add(offset, data)
        return sum(n for _, n in missing)

    def preload(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Store ``(offset, bytes)`` runs of this file (known to be current) in :attr:`extents`."""
        self.extents.update(items)

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
        run = self.extents.run_at(pos)
        if run is not None:  # a short read up to the extent's end (BufferedReader reads on)
            start, data = run
            done = min(n, start + len(data) - pos)
            out[:done] = data[pos - start : pos - start + done]
        else:
            blocks = self._blocks(range(pos // bs, (pos + n - 1) // bs + 1))
            done = 0
            for index, block in blocks:
                lo = max(pos + done - index * bs, 0)
                take = min(len(block) - lo, n - done)
                out[done : done + take] = block[lo : lo + take]
                done += take
        if not self.journal.full:
            self.journal.add(pos, out[:done])
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

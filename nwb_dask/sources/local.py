"""Local byte source: byte ranges of a file on this machine, behind the same protocol."""

from __future__ import annotations

import io
import os
from typing import Callable, Sequence, TypeVar

from nwb_dask.sources.base import DEFAULT_BLOCK_SIZE, DEFAULT_CACHE_BLOCKS, ByteSource
from nwb_dask.sources.ranges import check_ranges

__all__ = ["LocalByteSource"]

_T = TypeVar("_T")


class LocalByteSource(ByteSource):
    """Byte ranges of a local file, with the interface of :class:`~nwb_dask.sources.http.HTTPByteSource`.

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

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read ``(offset, length)`` ranges, in input order (``OSError`` past end of file)."""
        ranges = check_ranges(ranges)
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

    def open(self, block_size: int = DEFAULT_BLOCK_SIZE, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> io.BufferedReader:
        """The file, opened for binary reading (the OS caches it: ``block_size`` and ``cache_blocks`` are ignored)."""
        return open(self.path, "rb")

"""Known bytes of a file at given offsets: the store behind metadata prefetching and caching.

:class:`Extents` holds disjoint, sorted byte runs ``(offset, bytes)``; adding
a run merges it with the runs it overlaps or touches.  The block-cached file
behind :meth:`ByteSource.open <nwb_dask.sources.base.ByteSource.open>` serves
reads from it before it fetches blocks, so bytes fetched ahead of h5py (by
:mod:`nwb_dask.hdf5.prefetch`) or loaded from the on-disk metadata cache cost
no request when h5py asks for them; and it records in another one the bytes
h5py did read (the journal), which is what the metadata cache stores.

Written by hand: neither fsspec's caches (block, "parts", background) nor
h5py keep arbitrary-offset runs that can be filled ahead, merged, queried for
gaps and serialised, which is what prefetching and the cache need.
"""

from __future__ import annotations

import bisect
import threading
from typing import Iterable, Sequence

__all__ = ["Extents"]


class Extents:
    """Disjoint byte runs of one file, thread-safe.

    Parameters
    ----------
    max_bytes : int or None
        Bytes the store may hold; :meth:`add` beyond it stores nothing more and
        sets :attr:`full` (None: no limit).
    """

    def __init__(self, max_bytes: int | None = None):
        self._starts: list[int] = []
        self._runs: list[bytearray] = []  # grown in place by appends; bytes below a run's end never change
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.nbytes = 0
        #: Whether an :meth:`add` was refused for lack of room (the store is then incomplete).
        self.full = False

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"Extents({len(self)} runs, {self.nbytes} bytes)"

    def add(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        """Store ``data`` at ``offset``, merged with the runs it overlaps or touches.

        Where the new bytes overlap stored ones the stored bytes are kept (they
        are the same bytes of the same file).  Returns False, storing nothing,
        when the store would grow past ``max_bytes``.
        """
        data = memoryview(data).cast("B")
        if not data:
            return True
        offset = int(offset)
        end = offset + len(data)
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            if i >= 0:
                start, run = self._starts[i], self._runs[i]
                stop = start + len(run)
                if end <= stop:
                    return True  # held already (a re-read)
                if offset <= stop and (i + 1 == len(self._starts) or self._starts[i + 1] > end):
                    # Extends run i at its end and touches no other: append the new tail in place
                    # (sequential reads would otherwise copy the growing run on every add).
                    if self.max_bytes is not None and self.nbytes + end - stop > self.max_bytes:
                        self.full = True
                        return False
                    run += data[stop - offset :]
                    self.nbytes += end - stop
                    return True
            lo = i
            if lo >= 0 and self._starts[lo] + len(self._runs[lo]) < offset:
                lo += 1  # the run before ends before this one starts (not touching)
            lo = max(lo, 0)
            hi = bisect.bisect_right(self._starts, end)  # runs starting at or before ``end`` may merge
            merged_start, merged_end = offset, end
            for i in range(lo, hi):
                merged_start = min(merged_start, self._starts[i])
                merged_end = max(merged_end, self._starts[i] + len(self._runs[i]))
            old = sum(len(r) for r in self._runs[lo:hi])
            grow = (merged_end - merged_start) - old
            if self.max_bytes is not None and self.nbytes + grow > self.max_bytes:
                self.full = True
                return False
            buf = bytearray(merged_end - merged_start)
            buf[offset - merged_start : end - merged_start] = data
            for i in range(lo, hi):
                s = self._starts[i] - merged_start
                buf[s : s + len(self._runs[i])] = self._runs[i]
            self._starts[lo:hi] = [merged_start]
            self._runs[lo:hi] = [buf]
            self.nbytes += grow
            return True

    def run_at(self, offset: int) -> tuple[int, bytearray] | None:
        """The stored run holding byte ``offset`` as ``(start, bytes)``, or None.

        The run is the store's own buffer: later appends may lengthen it, never change what it holds.
        """
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            if i >= 0 and offset < self._starts[i] + len(self._runs[i]):
                return self._starts[i], self._runs[i]
        return None

    def end_before(self, offset: int) -> int | None:
        """The end of the last run ending at or before ``offset`` (None: no such run)."""
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            while i >= 0 and self._starts[i] + len(self._runs[i]) > offset:
                i -= 1
            return self._starts[i] + len(self._runs[i]) if i >= 0 else None

    def start_after(self, offset: int) -> int | None:
        """The start of the first run starting at or after ``offset`` (None: no such run)."""
        with self._lock:
            i = bisect.bisect_left(self._starts, offset)
            return self._starts[i] if i < len(self._starts) else None

    def get(self, offset: int, length: int) -> bytes | None:
        """Bytes ``offset:offset + length`` if stored in full, else None."""
        if length <= 0:
            return b""
        run = self.run_at(offset)
        if run is None or offset + length > run[0] + len(run[1]):
            return None
        return bytes(run[1][offset - run[0] : offset - run[0] + length])

    def missing(self, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of ``(offset, length)`` ranges not stored, in offset order, merged."""
        gaps: list[tuple[int, int]] = []
        with self._lock:
            for offset, length in sorted((int(o), int(n)) for o, n in ranges if n > 0):
                pos, end = offset, offset + length
                i = max(bisect.bisect_right(self._starts, pos) - 1, 0)
                while pos < end:
                    if i < len(self._starts) and self._starts[i] <= pos < self._starts[i] + len(self._runs[i]):
                        pos = self._starts[i] + len(self._runs[i])
                        i += 1
                        continue
                    while i < len(self._starts) and self._starts[i] + len(self._runs[i]) <= pos:
                        i += 1
                    stop = min(end, self._starts[i]) if i < len(self._starts) else end
                    if stop > pos:
                        if gaps and gaps[-1][0] + gaps[-1][1] >= pos:
                            last_off, last_len = gaps[-1]
                            gaps[-1] = (last_off, max(last_len, stop - last_off))
                        else:
                            gaps.append((pos, stop - pos))
                    pos = stop
        return gaps

    def items(self) -> list[tuple[int, bytes]]:
        """The stored runs as ``(offset, bytes)``, in offset order."""
        with self._lock:
            return [(start, bytes(run)) for start, run in zip(self._starts, self._runs)]

    def update(self, items: Sequence[tuple[int, bytes]]) -> None:
        """:meth:`add` each ``(offset, bytes)``."""
        for offset, data in items:
            self.add(offset, data)

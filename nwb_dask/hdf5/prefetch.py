"""Fetch an HDF5 file's metadata ahead of h5py, a level of the hierarchy per round trip.

h5py (HDF5) reads a file's metadata one structure at a time: an object
header, then the group's B-tree, its symbol table nodes, each child's header,
each attribute's global heap, ...  Over HTTP each of those is a round trip, so
opening a file with hundreds of objects costs hundreds of sequential requests.

:func:`prefetch_metadata` reads the same structures itself, a whole level at
a time: every structure found in one round is fetched together in the next
(through :meth:`BlockCacheFile.prefetch
<nwb_dask.sources.base.BlockCacheFile.prefetch>`, which asks the source for
all of them at once: multi-range or parallel requests), so an open costs
round trips proportional to the hierarchy's depth, not to its object count.
The bytes land in the file object's extents, where h5py then finds them.

The walk is only a hint: h5py still parses every byte itself, so a structure
the walker does not know or a bound it reaches costs a request later, never a
wrong value.  It follows superblocks v0-v3 (and user blocks), object headers
v1 and v2 with continuation blocks, old-style groups (symbol table, v1
B-tree, symbol table nodes, local heap), new-style compact groups (link
messages), dense groups (the fractal heap's direct blocks; links found there
are followed), attributes (inline; their variable-length data's global heap
collections; object references), dense attribute storage (its heap and index
headers only), small contiguous and compact datasets (with their global heap
collections for variable-length strings), virtual dataset mappings, shared
messages stored in other object headers, and HDF5 paged files (whole pages
are fetched, so a cloud-optimised file's metadata arrives in a few requests).
It does not follow external links or read chunk indexes: those are read when
a dataset's chunks are.

Written by hand: no maintained library reads HDF5's on-disk format without
HDF5 (h5py and pyfive-like readers parse it one structure per read, which is
the sequential pattern this exists to avoid).  The structure layouts follow
the HDF5 File Format Specification version 3.0.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from nwb_dask.hdf5.structures import WINDOW, NeedBytes, Walker, find_superblock

__all__ = ["PrefetchStats", "prefetch_metadata"]


@dataclass
class PrefetchStats:
    """What :func:`prefetch_metadata` did."""

    rounds: int = 0
    structures: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0
    page_size: int | None = None
    stopped: str = ""  # why the walk ended early ("" when it ran out of structures)
    skipped: dict = field(default_factory=dict)  # structures not followed, by kind


def prefetch_metadata(fileobj, *, objects=None, max_rounds: int = 64, max_bytes: int = 128 << 20,
                      max_seconds: float = 120.0) -> PrefetchStats | None:
    """Fetch the metadata of the HDF5 file behind ``fileobj`` into its extents, a hierarchy level per round.

    Parameters
    ----------
    fileobj : file object
        The file object h5py reads: what ``ByteSource.open()`` returns, or its
        ``raw`` :class:`~nwb_dask.sources.base.BlockCacheFile` (anything with
        ``size``, ``peek_bytes(offset, length)`` and ``prefetch(ranges)``).
        One without (a local file) is left alone: None is returned.
    objects : sequence of int, optional
        Walk only from these object headers (addresses as HDF5 gives them,
        ``h5py.h5o.get_info(obj.id).addr``), e.g. one dataset about to be
        read: its attributes and chunk index.  Default: the whole file from
        the root group.
    max_rounds, max_bytes, max_seconds : int, int, float
        Bounds on the walk (rounds of requests, bytes fetched, time); past one
        the walk stops and h5py reads the rest on demand.

    Returns
    -------
    PrefetchStats or None
        Rounds, structures parsed, bytes fetched, the page size of a paged
        file, and what was not followed; None for a file object that keeps
        no extents.

    Notes
    -----
    Never raises for a file it cannot parse: a structure it does not know is
    skipped (counted in ``skipped``) and h5py reads it on demand.
    """
    raw = getattr(fileobj, "raw", fileobj)
    if not hasattr(raw, "prefetch"):
        return None
    t0 = time.perf_counter()
    stats = PrefetchStats()
    size = raw.size
    peek = raw.peek_bytes
    if size < 8:
        return stats
    if peek(0, 8) is None:
        raw.prefetch([(0, min(size, WINDOW))])
    at = find_superblock(peek, size)
    if at is None:
        raw.prefetch([(0, min(size, 1 << 20))])  # a large user block: look further
        at = find_superblock(peek, size)
        if at is None:
            stats.stopped = "no HDF5 superblock found"
            return stats
    walker = Walker(peek, size)
    pending: list[tuple] = [("super", at)]
    seen: set = set()
    waiting: dict[tuple, tuple[int, int]] = {}
    while pending:
        if stats.rounds >= max_rounds:
            stats.stopped = f"max_rounds={max_rounds}"
            break
        if stats.bytes_fetched >= max_bytes:
            stats.stopped = f"max_bytes={max_bytes}"
            break
        if time.perf_counter() - t0 > max_seconds:
            stats.stopped = f"max_seconds={max_seconds}"
            break
        next_items: list[tuple] = []
        wants: dict[tuple, tuple[int, int]] = {}
        for item in pending:
            try:
                found = walker.parse(item)
                if item[0] == "super" and objects is not None:
                    found = [("oh", walker.base + int(a)) for a in objects]
            except NeedBytes as need:
                wants[item] = need.range
                continue
            except (ValueError, IndexError, struct.error):
                walker.skip(f"{item[0]} (unparsed)")
                continue
            stats.structures += 1
            for new in found:
                key = new[:2]
                if new[1] is None or key in seen or not 0 <= new[1] < size:
                    continue
                seen.add(key)
                next_items.append(new)
        # Everything found this round is fetched in one batch with what parsing still needs.
        ranges = list(wants.values()) + [walker.window(item) for item in next_items]
        if walker.page:
            stats.page_size = walker.page
            ranges = _pages(ranges, walker.page, size)
        if ranges:
            got = raw.prefetch(ranges)
            if got:
                stats.rounds += 1
                stats.bytes_fetched += got
        retry = []
        for item, rng in wants.items():
            if waiting.get(item) == rng:  # fetched and still missing: past the store's bound
                walker.skip(f"{item[0]} (not fetched)")
                continue
            waiting[item] = rng
            retry.append(item)
        pending = retry + next_items
    stats.skipped = dict(walker.skipped)
    stats.seconds = time.perf_counter() - t0
    return stats


def _pages(ranges: list[tuple[int, int]], page: int, size: int) -> list[tuple[int, int]]:
    """``ranges`` widened to the whole pages of a paged file."""
    out = set()
    for offset, length in ranges:
        for p in range(offset // page, (offset + max(length, 1) - 1) // page + 1):
            out.add((p * page, min(page, size - p * page)))
    return sorted(out)

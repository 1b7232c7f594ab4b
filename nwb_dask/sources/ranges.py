"""Planning byte-range reads: validation, coalescing, spreading and balancing (pure functions).

A read of many ``(offset, length)`` ranges becomes a few *spans*
``(start, end, member indices)``: neighbouring ranges (gap <= ``max_gap``)
share one request of at most ``max_request`` bytes (:func:`coalesce`,
:func:`plan`); spans are dealt to threads with similar byte loads
(:func:`balance`); :func:`map_spans` runs them and hands each range its own
bytes.  Nothing here does I/O: the fetching is a function the source passes in.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Sequence, TypeVar

__all__ = ["MIN_SPREAD_REQUEST", "Span", "balance", "check_ranges", "coalesce", "map_spans", "plan"]

#: Smallest request :func:`plan` makes when spreading bytes over requests (``spread=True``).
MIN_SPREAD_REQUEST = 1 << 20

#: ``(start, end, member indices)``: bytes ``start:end`` of the file cover the member ranges.
Span = tuple[int, int, list[int]]

T = TypeVar("T")


def check_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
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


def coalesce(ranges: Sequence[tuple[int, int]], max_gap: int, max_request: int) -> list[Span]:
    """Group non-empty ranges into spans ``(start, end, member indices)``.

    Ranges are taken in offset order; a range joins the current span when the
    gap to it is at most ``max_gap`` (overlapping ranges have a negative gap)
    and the span stays within ``max_request`` bytes.  A single range larger
    than ``max_request`` gets a span of its own (split into requests later).
    """
    order = sorted((i for i, (_, n) in enumerate(ranges) if n > 0), key=lambda i: ranges[i])
    spans: list[Span] = []
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


def plan(
    ranges: Sequence[tuple[int, int]], max_gap: int, max_request: int, max_workers: int, spread: bool
) -> tuple[list[tuple[int, int]], list[Span]]:
    """Checked ranges and their coalesced spans.

    With ``spread``, spans are capped at the larger of :data:`MIN_SPREAD_REQUEST`
    and an even share of the bytes over ``max_workers``, so the bytes arrive
    (and are processed) in parallel.
    """
    ranges = check_ranges(ranges)
    cap = max_request
    if spread:
        total = sum(n for _, n in ranges)
        cap = min(cap, max(MIN_SPREAD_REQUEST, -(-total // max_workers)))
    return ranges, coalesce(ranges, max_gap, cap)


def map_spans(
    ranges: list[tuple[int, int]],
    jobs: list[list[Span]],
    fetch: Callable[[list[Span]], list[bytes]],
    fn: Callable[[int, bytes], T],
    max_workers: int,
    thread_name_prefix: str,
) -> list[T]:
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

    def run(job: list[Span]) -> None:
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


def balance(spans: list[Span], groups: int) -> list[list[Span]]:
    """Spans dealt into at most ``groups`` groups of similar byte totals (each group in offset order)."""
    groups = max(1, min(groups, len(spans)))
    bins: list[list[Span]] = [[] for _ in range(groups)]
    loads = [0] * groups
    for span in sorted(spans, key=lambda sp: sp[0] - sp[1]):  # largest first
        k = loads.index(min(loads))
        bins[k].append(span)
        loads[k] += span[1] - span[0]
    return [sorted(b, key=lambda sp: sp[0]) for b in bins if b]

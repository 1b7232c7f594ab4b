"""Property tests for nwb_dask.sources.ranges: coalescing, planning, balancing and handing bytes back.

The functions are pure, so hypothesis drives them over arbitrary range lists
(overlapping, touching, repeated, empty) and checks the planning contract:
every non-empty range lies in exactly one span, a span is exactly the hull of
its members, neighbours closer than ``max_gap`` share a span while it fits in
``max_request``, and each range gets back exactly ``data[offset:offset + length]``.
"""

from __future__ import annotations

import threading

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nwb_dask.sources import byte_source  # noqa: E402
from nwb_dask.sources.ranges import MIN_SPREAD_REQUEST, balance, check_ranges, coalesce, map_spans, plan  # noqa: E402

FILE = 4096  # bytes of the synthetic file the byte-level tests read from
DATA = bytes((i * 7 + i // 251) % 256 for i in range(FILE))

ranges_in_file = st.lists(
    st.integers(0, FILE).flatmap(lambda off: st.tuples(st.just(off), st.integers(0, min(FILE - off, 700)))),
    max_size=40,
)
# Large ranges (no data behind them): for the planning arithmetic around MIN_SPREAD_REQUEST.
big_ranges = st.lists(st.tuples(st.integers(0, 64 << 20), st.integers(0, 4 << 20)), max_size=30)
gaps = st.integers(0, 300)
requests = st.integers(1, 2000)


def check_spans(ranges, spans, max_gap, max_request):
    """The coalescing contract, asserted span by span."""
    members = [i for _, _, m in spans for i in m]
    assert sorted(members) == [i for i, (_, n) in enumerate(ranges) if n > 0]  # each non-empty range once
    for start, end, m in spans:
        assert m, "a span without ranges"
        assert start == min(ranges[i][0] for i in m)  # a span is exactly the hull of its members:
        assert end == max(ranges[i][0] + ranges[i][1] for i in m)  # no byte fetched past them
        if len(m) > 1:
            assert end - start <= max_request
        running = start
        for i in sorted(m, key=lambda i: ranges[i]):  # no gap inside a span wider than max_gap
            off, n = ranges[i]
            assert off - running <= max_gap
            running = max(running, off + n)
    for (s0, e0, _), (s1, e1, m1) in zip(spans, spans[1:]):
        assert s0 <= s1  # spans in offset order
        first = min(m1, key=lambda i: ranges[i])
        off, n = ranges[first]
        # greedy: the next span starts only where the gap or the request size forbade joining
        assert off - e0 > max_gap or max(e0, off + n) - s0 > max_request


@given(ranges_in_file, gaps, requests)
def test_coalesce_covers_exactly_and_respects_limits(ranges, max_gap, max_request):
    check_spans(ranges, coalesce(ranges, max_gap, max_request), max_gap, max_request)


def test_coalesce_examples():
    ranges = [(0, 10), (15, 5), (100, 1), (0, 0), (12, 2), (5, 3)]
    assert coalesce(ranges, 5, 100) == [(0, 20, [0, 5, 4, 1]), (100, 101, [2])]
    assert coalesce(ranges, 1, 100) == [(0, 10, [0, 5]), (12, 20, [4, 1]), (100, 101, [2])]
    assert coalesce(ranges, 5, 14) == [(0, 14, [0, 5, 4]), (15, 20, [1]), (100, 101, [2])]
    assert coalesce([(0, 50)], 0, 10) == [(0, 50, [0])]  # larger than max_request: a span of its own


@given(big_ranges, gaps, st.integers(1, 32 << 20), st.integers(1, 16), st.booleans())
def test_plan_caps_spread_requests(ranges, max_gap, max_request, max_workers, spread):
    checked, spans = plan(ranges, max_gap, max_request, max_workers, spread)
    assert checked == [(int(o), int(n)) for o, n in ranges]
    cap = max_request
    if spread:
        cap = min(max_request, max(MIN_SPREAD_REQUEST, -(-sum(n for _, n in ranges) // max_workers)))
    check_spans(checked, spans, max_gap, cap)


def test_plan_spread_shares_bytes_evenly_over_workers():
    m = MIN_SPREAD_REQUEST
    ranges = [(0, m), (m, 1), (m + 1, m)]  # 2m + 1 bytes over 2 workers: requests of up to m + 1 bytes
    assert plan(ranges, 0, 1 << 30, 2, True)[1] == [(0, m + 1, [0, 1]), (m + 1, 2 * m + 1, [2])]
    assert plan(ranges, 0, 1 << 30, 2, False)[1] == [(0, 2 * m + 1, [0, 1, 2])]
    assert plan(ranges, 0, 1 << 30, 8, True)[1] == [(0, m, [0]), (m, m + 1, [1]), (m + 1, 2 * m + 1, [2])]


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 5000)).map(lambda t: (t[0], t[0] + t[1], [])),
                max_size=40), st.integers(1, 12))
def test_balance_partitions_spans_into_even_groups(spans, groups):
    jobs = balance(spans, groups)
    assert len(jobs) == min(groups, len(spans))  # as many groups as asked for (or spans), none empty
    assert all(jobs)
    assert sorted(sp for job in jobs for sp in job) == sorted(spans)  # every span exactly once
    assert all(job == sorted(job, key=lambda sp: sp[0]) for job in jobs)  # each group in offset order
    if spans:
        loads = [sum(e - s for s, e, _ in job) for job in jobs]
        total, largest = sum(loads), max(e - s for s, e, _ in spans)
        assert max(loads) <= total / len(jobs) + largest  # greedy largest-first is within one span of even


def test_balance_example():
    spans = [(0, 10, [0]), (10, 13, [1]), (20, 24, [2]), (30, 32, [3]), (40, 41, [4])]
    assert balance(spans, 2) == [[(0, 10, [0])], [(10, 13, [1]), (20, 24, [2]), (30, 32, [3]), (40, 41, [4])]]
    assert balance(spans, 3) == [[(0, 10, [0])], [(20, 24, [2]), (40, 41, [4])], [(10, 13, [1]), (30, 32, [3])]]
    assert balance([], 4) == []


@given(ranges_in_file, gaps, requests, st.integers(1, 6), st.booleans())
def test_map_spans_hands_each_range_its_own_bytes(ranges, max_gap, max_request, max_workers, spread):
    checked, spans = plan(ranges, max_gap, max_request, max_workers, spread)
    fetched = []

    def fetch(job):
        fetched.extend(job)
        return [DATA[start:end] for start, end, _ in job]

    calls, lock = [], threading.Lock()

    def fn(i, data):
        with lock:
            calls.append(i)
        return i, data

    out = map_spans(checked, balance(spans, max_workers), fetch, fn, max_workers, "test-ranges")
    assert sorted(calls) == list(range(len(ranges)))  # fn once per range, empty ones included
    assert [i for i, _ in out] == list(range(len(ranges)))  # results in input order
    for (off, n), (_, data) in zip(ranges, out):
        assert type(data) is bytes and data == DATA[off : off + n]
    assert sorted(fetched) == sorted(spans)  # each span fetched once


@settings(max_examples=40, deadline=None)
@given(ranges_in_file, gaps, requests, st.integers(1, 4), st.booleans())
def test_fsspec_source_reads_equal_direct_slices(ranges, max_gap, max_request, max_workers, spread):
    """The same contract through a real source (fsspec's in-memory filesystem, one cat_ranges per thread)."""
    pytest.importorskip("fsspec")
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/nwb-dask-ranges/file.bin", DATA)
    src = byte_source("memory://nwb-dask-ranges/file.bin", storage_options={},
                      max_gap=max_gap, max_request=max_request, max_workers=max_workers)
    assert src.read_ranges(ranges) == [DATA[o : o + n] for o, n in ranges]
    got = src.map_ranges(ranges, lambda i, data: (i, data), spread=spread)
    assert got == [(i, DATA[o : o + n]) for i, (o, n) in enumerate(ranges)]


@pytest.mark.parametrize("bad, why", [((-1, 4), "negative"), ((0, -4), "negative"), ((1,), "pairs of ints"),
                                      (("a", 2), "pairs of ints"), (None, "pairs of ints")])
def test_check_ranges_names_the_bad_range(bad, why):
    with pytest.raises(ValueError, match=why) as info:
        check_ranges([(0, 1), bad])
    assert repr(bad) in str(info.value)

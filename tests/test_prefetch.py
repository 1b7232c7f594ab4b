"""Metadata prefetching: the extent store, the block-cached file's use of it, and the HDF5 walker."""

from __future__ import annotations

import io

from hypothesis import given, settings, strategies as st

from nwb_dask.sources.base import BlockCacheFile, ByteSource
from nwb_dask.sources.extents import Extents

SIZE = 300
SRC = bytes(i % 251 for i in range(SIZE))
RANGE = st.tuples(st.integers(0, SIZE - 50), st.integers(0, 40))


@settings(max_examples=400, deadline=None)
@given(st.lists(RANGE, max_size=12), st.lists(RANGE, max_size=6), st.integers(0, 1))
def test_extents_match_a_byte_model(adds, queries, capped):
    """Runs stay disjoint, sorted and equal to the file's bytes; get/missing agree with a per-byte model."""
    cap = 60 if capped else None
    e = Extents(cap)
    have = [False] * SIZE
    for o, n in adds:
        before = sum(have)
        trial = have[:]
        for k in range(o, o + n):
            trial[k] = True
        stored = e.add(o, SRC[o : o + n])
        if cap is not None and sum(trial) > cap:
            assert not stored and e.full and sum(have) == before
        else:
            assert stored
            have = trial
    items = e.items()
    for (a, da), (b, _) in zip(items, items[1:]):
        assert a + len(da) < b  # disjoint and not touching (touching runs merge)
    for a, d in items:
        assert d == SRC[a : a + len(d)]
    assert sum(len(d) for _, d in items) == sum(have) == e.nbytes
    for o, n in queries:
        got = e.get(o, n)
        assert (got is not None) == (n == 0 or all(have[o : o + n]))
        if got is not None:
            assert got == SRC[o : o + n]
    missing = e.missing(queries)
    assert {k for o, n in missing for k in range(o, o + n)} == {
        k for o, n in queries for k in range(o, o + n) if not have[k]
    }


class _Counting(ByteSource):
    def __init__(self, data: bytes):
        self.data, self.calls = data, []

    @property
    def size(self) -> int:
        return len(self.data)

    def map_ranges(self, ranges, fn, *, spread=False):
        self.calls.append(list(ranges))
        return [fn(i, self.data[o : o + n]) for i, (o, n) in enumerate(ranges)]


@settings(max_examples=150, deadline=None)
@given(st.lists(RANGE, max_size=6), st.lists(RANGE, min_size=1, max_size=8), st.sampled_from([7, 64, 1000]))
def test_block_file_serves_prefetched_bytes_without_requests(pre, reads, block):
    """Reads inside prefetched extents make no request; every read returns the file's bytes; the journal holds them."""
    src = _Counting(SRC)
    raw = BlockCacheFile(src, block, 4)
    raw.prefetch(pre)
    src.calls.clear()
    f = io.BufferedReader(raw, buffer_size=16)
    for o, n in reads:
        inside = raw.extents.get(o, n) is not None
        before = len(src.calls)
        f.seek(o)
        assert f.read(n) == SRC[o : o + n]
        if inside:
            # the buffer's read-ahead past the extent's end is a short read, not a request
            assert len(src.calls) == before
    for a, d in raw.journal.items():
        assert d == SRC[a : a + len(d)]
    for o, n in reads:
        assert raw.journal.get(o, n) is not None


def test_prefetch_fetches_only_missing_parts_and_small_gaps():
    from nwb_dask.sources.base import PREFETCH_GAP

    data = bytes(i % 253 for i in range(100_000))
    src = _Counting(data)
    raw = BlockCacheFile(src, 1000, 4)
    far = 110 + 4 * PREFETCH_GAP
    assert raw.prefetch([(10, 20), (far, 10)]) == 30
    assert src.calls[-1] == [(10, 20), (far, 10)]  # far apart: two ranges
    assert raw.prefetch([(15, 10), (20, 20)]) == 10  # only 30:40 was missing
    assert src.calls[-1] == [(30, 10)]
    assert raw.prefetch([(50, 10), (100, 10)]) == 70  # close together: one range, the gap included
    assert src.calls[-1] == [(40, 70)]  # and stretched back to the extent ending at 40
    n = len(src.calls)
    f = io.BufferedReader(raw)
    f.seek(12)
    assert f.read(90) == data[12:102]
    assert len(src.calls) == n  # served from the extent
    assert raw.prefetch([(12, 5), (len(data) + 5, 10)]) == 0  # held, and past the end ignored

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


def test_extents_append_in_place_and_skip_re_reads():
    """Sequential reads grow one run in place (no copy of it per read); re-reads store nothing."""
    e = Extents(100)
    e.add(0, SRC[0:10])
    run = e.run_at(0)[1]
    for pos in range(10, 90, 8):  # touching and overlapping appends
        assert e.add(pos - 2, SRC[pos - 2 : pos + 8])
    assert e.run_at(50)[1] is run and bytes(run) == SRC[0:90] and e.nbytes == 90
    assert e.add(3, SRC[3:40]) and e.nbytes == 90 and e.run_at(0)[1] is run  # held already
    assert not e.add(85, SRC[85:101]) and e.full and e.nbytes == 90  # past the bound: nothing stored
    assert e.items() == [(0, SRC[0:90])]


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


# --------------------------------------------------------------------------- #
# The HDF5 walker: after it, h5py finds every structure it reads              #
# --------------------------------------------------------------------------- #
import h5py  # noqa: E402
import numpy as np  # noqa: E402

from nwb_dask.hdf5.prefetch import prefetch_metadata  # noqa: E402


class _FileSource(_Counting):
    """A file's bytes as a source that counts the requests h5py's misses make."""

    def __init__(self, path):
        super().__init__(open(path, "rb").read())


def _walk(f) -> list:
    """Everything pynwb-like readers touch on open: every object's attributes and small unchunked values.

    (Chunked datasets' values are raw data, read when asked for, not metadata.)
    """
    out = [sorted((k, repr(v)) for k, v in f.attrs.items())]

    def visit(name, obj):
        out.append((name, sorted((k, repr(v)) for k, v in obj.attrs.items())))
        if isinstance(obj, h5py.Dataset):
            out.append((obj.shape, obj.dtype.str, obj.chunks, obj.compression))
            if obj.chunks is None and not obj.is_virtual and obj.size * obj.dtype.itemsize <= 65536:
                out.append(repr(obj[()]))

    f.visititems(visit)
    return out


def _make(path, *, libver, track_order, groups, attrs, userblock, paged, big_attr, compact, refs, vds):
    kwargs = {"libver": libver, "track_order": track_order}
    if userblock:
        kwargs["userblock_size"] = userblock
    if paged:
        kwargs.update(fs_strategy="page", fs_page_size=1 << 16, fs_persist=True)
    rng = np.random.default_rng(groups)
    with h5py.File(path, "w", **kwargs) as f:
        for i in range(groups):
            g = f.create_group(f"g{i}", track_order=track_order)
            for k in range(attrs):
                g.attrs[f"a{k}"] = f"value {i} {k}" * (1 + k % 3)
            g.attrs["n"] = np.arange(k if attrs else 1)
            if big_attr:
                g.attrs["big"] = "x" * 70_000  # past the 64 KiB object header message limit: dense storage
            g.create_dataset("data", data=rng.integers(0, 100, 20_000 + 7 * i, dtype="i4"))
            g.create_dataset("chunked", data=np.arange(100.0 + i), chunks=(7,), compression="gzip", shuffle=True)
            g.create_dataset("text", data=f"session {i}")
            g.create_dataset("scalar", data=i * 1.5)
            g.create_dataset("strings", data=[f"s{j}" for j in range(i % 5 + 1)], dtype=h5py.string_dtype())
            if compact:
                space = h5py.h5s.create_simple((4,))
                plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                plist.set_layout(h5py.h5d.COMPACT)
                h5py.h5d.create(g.id, b"compact", h5py.h5t.NATIVE_INT32, space, plist).write(
                    h5py.h5s.ALL, h5py.h5s.ALL, np.arange(4, dtype="i4") + i)
        if groups:
            f["soft"] = h5py.SoftLink("/g0")
            f["external"] = h5py.ExternalLink("elsewhere.h5", "/x")
            f["dtype"] = np.dtype([("a", "i4"), ("b", "f8")])  # a committed datatype
            f.create_dataset("typed", data=np.zeros(3, f["dtype"].dtype), dtype=f["dtype"])
        if refs and groups:
            f.attrs["ref"] = f["g0"].ref
            f.create_dataset("refs", data=[f[f"g{i}"].ref for i in range(groups)], dtype=h5py.ref_dtype)
        if vds and groups:
            layout = h5py.VirtualLayout(shape=(2, 100), dtype="f8")
            layout[0] = h5py.VirtualSource(f["g0/chunked"])[:100]
            layout[1] = h5py.VirtualSource(".", "/g0/chunked", shape=(100,))[:100]
            f.create_virtual_dataset("virtual", layout, fillvalue=-1)


@settings(max_examples=60, deadline=None)
@given(
    libver=st.sampled_from(["earliest", "latest", ("v108", "latest")]),
    track_order=st.booleans(),
    groups=st.sampled_from([0, 1, 3, 9, 40]),
    attrs=st.sampled_from([0, 1, 9, 30]),
    userblock=st.sampled_from([0, 512, 4096]),
    paged=st.booleans(),
    big_attr=st.booleans(),
    compact=st.booleans(),
    refs=st.booleans(),
    vds=st.booleans(),
)
def test_after_prefetch_h5py_reads_the_whole_file_without_a_request(tmp_path_factory, **layout):
    """Every layout h5py writes: after the walk, visiting every object, attribute and small value costs no request."""
    if layout["paged"]:
        layout["userblock"] = 0  # HDF5: a user block must be larger than the page alignment
    path = tmp_path_factory.mktemp("pf") / "f.h5"
    _make(path, **layout)
    src = _FileSource(path)
    raw = BlockCacheFile(src, 1 << 20, 64)
    stats = prefetch_metadata(raw)
    assert not stats.stopped
    calls = len(src.calls)
    with h5py.File(io.BufferedReader(raw), "r") as f:
        got = _walk(f)
    with h5py.File(path, "r") as f:
        want = _walk(f)
    assert got == want
    assert len(src.calls) == calls, f"h5py missed after the walk ({stats})"
    if layout["paged"]:
        assert stats.page_size == 1 << 16


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_walker_never_raises_on_damaged_files(tmp_path_factory, data):
    """A damaged or unknown structure is skipped, never an exception: the walk is only a hint."""
    path = tmp_path_factory.mktemp("pf") / "f.h5"
    _make(path, libver=data.draw(st.sampled_from(["earliest", "latest"])), track_order=True, groups=3, attrs=9,
          userblock=0, paged=False, big_attr=False, compact=True, refs=True, vds=False)
    buf = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 40))):
        at = data.draw(st.integers(0, min(len(buf), 40_000) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    src = _Counting(bytes(buf))
    stats = prefetch_metadata(BlockCacheFile(src, 1 << 16, 8), max_rounds=40)
    assert stats.rounds <= 40


def test_walking_from_one_object_fetches_only_its_chunk_index(tmp_path):
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        for i in range(20):
            f.create_dataset(f"other{i}", data=np.arange(1000.0), chunks=(10,))
        d = f.create_dataset("g/data", data=np.arange(200_000, dtype="i2").reshape(-1, 4), chunks=(100, 4))
    src = _FileSource(path)
    raw = BlockCacheFile(src, 1 << 20, 4)
    with h5py.File(io.BufferedReader(raw), "r") as f:
        d = f["g/data"]
        from nwb_dask.hdf5.read import _hard_link_address

        stats = prefetch_metadata(raw, objects=[_hard_link_address(f, "g/data")])
        calls = len(src.calls)
        infos = [d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks())]
        assert len(src.calls) == calls  # every B-tree node was fetched by the walk
    with h5py.File(path, "r") as f:
        assert [(i.chunk_offset, i.byte_offset) for i in infos] == [
            (i.chunk_offset, i.byte_offset) for i in (f["g/data"].id.get_chunk_info(k) for k in range(500))]
    assert stats.structures < 40  # the other datasets were not walked

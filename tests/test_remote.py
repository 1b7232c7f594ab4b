"""Tests for nwb_dask.sources: HTTP byte ranges, coalescing, retries, h5py over HTTP."""

from __future__ import annotations

import importlib.util
import pickle
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb_dask
import nwb_dask.hdf5.read
import nwb_dask.codecs
from nwb_dask.sources import HTTPByteSource, LocalByteSource, RemoteReadError, byte_source, s3_to_https

# The loopback server lives in tests/http_server.py (shared with tests/test_index.py).
# The fixture `server` is in tests/conftest.py; tests/test_cli_errors.py imports _Server from here.
from http_server import FAULT_KINDS
from http_server import Handler as _Handler  # noqa: F401
from http_server import Server as _Server  # noqa: F401

@pytest.fixture
def blob(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    (tmp_path / "blob.bin").write_bytes(data)
    return data


def _random_ranges(rng: np.random.Generator, size: int, n: int) -> list[tuple[int, int]]:
    offs = rng.integers(0, size, n)
    lens = rng.integers(0, 5000, n)
    return [(int(o), int(min(n_, size - o))) for o, n_ in zip(offs, lens)]


# --------------------------------------------------------------------------- #
def test_read_ranges_match_local(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), max_gap=64 << 10, max_request=1 << 20)
    assert src.size == len(blob)
    rng = np.random.default_rng(1)
    ranges = _random_ranges(rng, len(blob), 300)
    ranges += [(1000, 500), (1200, 500), (1700, 10), (1710, 0), (0, 0), (len(blob), 0), (5, 1)]  # overlap/adjacent/empty
    ranges += [(0, len(blob)), (len(blob) - 7, 7), (1000, 500)]  # whole file (split), tail, repeat
    got = src.read_ranges(ranges)
    assert len(got) == len(ranges)
    for (off, n), data in zip(ranges, got):
        assert data == blob[off : off + n]
    assert src.read(123, 4567) == blob[123 : 123 + 4567]
    assert src.read_ranges([]) == []


def test_coalescing_reduces_requests(server, blob):
    ranges = [(i * 10_000, 100) for i in range(200)]  # within 2 MB
    src = HTTPByteSource(server.url("blob.bin"))
    server.reset_counts()
    assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges]
    assert len(server.requests) <= 2

    src = HTTPByteSource(server.url("blob.bin"), max_gap=0)
    server.reset_counts()
    assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges]
    assert len(server.requests) == 200

    adjacent = [(i * 100, 100) for i in range(200)]
    server.reset_counts()
    assert src.read_ranges(adjacent) == [blob[o : o + n] for o, n in adjacent]
    assert len(server.requests) == 1

    src = HTTPByteSource(server.url("blob.bin"), max_request=256 << 10)
    server.reset_counts()
    assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges]
    assert 8 <= len(server.requests) <= 12  # ~2 MB in <= 256 KiB requests


def test_server_ignoring_range(server, blob):
    server.ignore_range = True
    src = HTTPByteSource(server.url("blob.bin"), max_gap=0)
    assert src.size == len(blob)
    ranges = [(10, 20), (2_000_000, 1000), (len(blob) - 5, 5)]
    assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges]


def test_faults_are_retried(server, blob):
    server.set_faults(0.3)
    src = HTTPByteSource(server.url("blob.bin"), retries=40, backoff=0.0005, max_backoff=0.005, max_gap=32 << 10, max_request=256 << 10)
    assert src.size == len(blob)
    ranges = _random_ranges(np.random.default_rng(2), len(blob), 200) + [(0, len(blob))]
    server.reset_counts()
    got = src.read_ranges(ranges)
    assert all(data == blob[o : o + n] for (o, n), data in zip(ranges, got))
    with src.open() as f:
        f.seek(1_500_000)
        assert f.read(3_000_000) == blob[1_500_000:]
    assert all(server.faulted.get(k, 0) >= 5 for k in FAULT_KINDS), server.faulted  # every kind was injected


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_retries_exhausted(server, blob, kind):
    server.set_faults(1.0, kinds=(kind,))
    src = HTTPByteSource(server.url("blob.bin"), retries=3, backoff=0.01)
    server.reset_counts()
    t0 = time.perf_counter()
    with pytest.raises(RemoteReadError) as info:
        src.read(1000, 200)
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert server.url("blob.bin") in msg and "1000-1199" in msg and "4 attempt" in msg
    assert info.value.attempts == 4 and info.value.byte_range == (1000, 200)
    assert isinstance(info.value, OSError)
    assert len(server.requests) == 4


def test_permanent_errors_not_retried(server, blob):
    src = HTTPByteSource(server.url("missing.bin"), retries=3)
    server.reset_counts()
    with pytest.raises(RemoteReadError, match="404"):
        src.read(0, 10)
    assert len(server.requests) == 1
    src = HTTPByteSource(server.url("blob.bin"), retries=3)
    with pytest.raises(RemoteReadError, match="past the end"):
        src.read(len(blob) + 10, 5)
    with pytest.raises(RemoteReadError, match="past the end"):
        src.read(len(blob) - 10, 50)
    with pytest.raises(ValueError):
        src.read_ranges([(-1, 5)])


def test_file_view(server, blob):
    src = HTTPByteSource(server.url("blob.bin"))
    with src.open(block_size=4096, cache_blocks=4) as f:
        assert f.seekable() and f.readable()
        assert f.read(10) == blob[:10] and f.tell() == 10
        f.seek(-100, 2)
        assert f.read() == blob[-100:] and f.read(5) == b""
        f.seek(5000)
        buf = bytearray(20_000)
        assert f.readinto(buf) == 20_000 and bytes(buf) == blob[5000:25_000]
        f.seek(10, 1)
        assert f.read(3) == blob[25_010:25_013]
    server.reset_counts()
    with src.open(block_size=1 << 16) as f:
        for _ in range(50):  # cached: one request
            f.seek(100)
            f.read(1000)
    assert len(server.requests) == 1


def test_h5py_over_http(server, tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "data.h5"
    local = np.random.default_rng(3).integers(-1000, 1000, (1000, 37), dtype=np.int16)
    with h5py.File(path, "w") as f:
        f.create_dataset("grp/data", data=local, chunks=(128, 16), compression="gzip", shuffle=True)
        f["grp"].attrs["rate"] = 30000.0
    src = HTTPByteSource(server.url("data.h5"))
    with h5py.File(src.open(), "r") as f:
        dset = f["grp/data"]
        assert f["grp"].attrs["rate"] == 30000.0
        np.testing.assert_array_equal(dset[...], local)
        codec = nwb_dask.codecs.codec_from_dataset(dset)
        assert codec is not None
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
        blobs = src.read_ranges([(info.byte_offset, info.size) for info in infos])
        for info, data in zip(infos, blobs):
            chunk = codec.decode(data, dset.dtype, dset.chunks, info.filter_mask)
            sel = tuple(slice(o, min(o + c, s)) for o, c, s in zip(info.chunk_offset, dset.chunks, dset.shape))
            valid = tuple(slice(0, s.stop - s.start) for s in sel)
            np.testing.assert_array_equal(chunk[valid], local[sel])


def test_pickle(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), retries=2)
    assert src.read(0, 10) == blob[:10]  # session created
    clone = pickle.loads(pickle.dumps(src))
    assert clone._session_obj is None and clone.retries == 2
    assert clone.read(0, 10) == blob[:10]


def test_byte_source_schemes(tmp_path):
    with pytest.raises(ValueError, match="ftp"):
        byte_source("ftp://example.org/file.nwb")
    with pytest.raises(ValueError, match="gs"):
        HTTPByteSource("gs://bucket/key")
    src = byte_source("s3://dandiarchive/blobs/abc/def")
    assert isinstance(src, HTTPByteSource)
    assert src.url == "https://dandiarchive.s3.amazonaws.com/blobs/abc/def"
    assert s3_to_https("s3://my.bucket/a b.nwb") == "https://s3.amazonaws.com/my.bucket/a%20b.nwb"
    with pytest.raises(ValueError):
        s3_to_https("s3://bucket-only")
    assert isinstance(byte_source("https://example.org/x.nwb"), HTTPByteSource)
    (tmp_path / "x.bin").write_bytes(b"0123456789")
    local = byte_source(tmp_path / "x.bin")
    assert isinstance(local, LocalByteSource)
    assert local.size == 10 and local.read_ranges([(2, 3), (0, 0)]) == [b"234", b""]
    assert byte_source((tmp_path / "x.bin").as_uri()).read(5, 5) == b"56789"


def test_every_source_implements_the_byte_source_protocol(server, blob, tmp_path):
    """HTTP, fsspec and local sources are ByteSources: the same calls give the same bytes."""
    from nwb_dask.sources import ByteSource, FsspecByteSource

    (tmp_path / "blob.bin").write_bytes(blob)
    sources = [HTTPByteSource(server.url("blob.bin")), byte_source(tmp_path / "blob.bin")]
    if importlib.util.find_spec("fsspec") is not None:
        sources.append(FsspecByteSource((tmp_path / "blob.bin").as_uri()))
    ranges = [(5, 100), (0, 0), (len(blob) - 7, 7), (50, 20)]
    for src in sources:
        assert isinstance(src, ByteSource), src
        assert src.size == len(blob)
        assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges], src
        assert src.map_ranges(ranges, lambda i, d: (i, len(d)), spread=True) == [(i, n) for i, (_, n) in enumerate(ranges)]
        with src.open(block_size=4096, cache_blocks=2) as f:
            f.seek(len(blob) - 10)
            assert f.read() == blob[-10:], src
        src.close()
        assert src.read(1, 3) == blob[1:4], src  # usable again after close

    class Incomplete(ByteSource):
        size = 3

    with pytest.raises(TypeError, match="map_ranges"):
        Incomplete()


# --------------------------------------------------------------------------- #
# The lazy reader over HTTP                                                    #
# --------------------------------------------------------------------------- #
def _remote_h5(folder: Path) -> np.ndarray:


    x = (np.random.default_rng(3).normal(size=(20_011, 24)) * 40).astype("int16")
    with h5py.File(folder / "rec.h5", "w") as f:
        f.create_dataset("data", data=x, chunks=(1000, 24), **nwb_dask.codec("gzip").dataset_kwargs())
        f.create_dataset("check", data=x[:500], chunks=(100, 24), fletcher32=True)
    return x


def test_reader_over_http_equals_local(server, tmp_path):


    x = _remote_h5(tmp_path)
    arr = nwb_dask.read_dataset(server.url("rec.h5"), "data", block_bytes=200_000)
    assert arr.numblocks[0] > 1
    server.reset_counts()
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), x)
    # chunks are fetched with coalesced range requests, not one request per chunk
    assert len(server.requests) < 21, len(server.requests)
    np.testing.assert_array_equal(arr[5_000:5_100].compute(), x[5_000:5_100])
    # a filter nwb_dask cannot decode (fletcher32) falls back to h5py over the same source
    np.testing.assert_array_equal(nwb_dask.read_dataset(server.url("rec.h5"), "check").compute(), x[:500])


def test_reader_over_http_with_faults(server, tmp_path):


    x = _remote_h5(tmp_path)
    options = {"retries": 40, "backoff": 0.0005, "max_backoff": 0.005}
    arr = nwb_dask.read_dataset(server.url("rec.h5"), "data", block_bytes=200_000, remote_options=options)
    server.set_faults(0.2)
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), x)
    assert sum(server.faulted.values()) > 0


def test_reader_over_http_on_a_process_cluster(server, tmp_path):
    from distributed import Client, LocalCluster



    x = _remote_h5(tmp_path)
    arr = nwb_dask.read_dataset(server.url("rec.h5"), "data", block_bytes=200_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            np.testing.assert_array_equal(client.compute(arr, sync=True), x)


def test_read_nwb_over_http(server, tmp_path):
    import dask.array as da

    from nwb_dask.testing import ephys_nwbfile

    x = da.from_array((np.arange(240_000) % 777).astype("int16").reshape(10_000, 24), chunks=(2_500, 24))
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(x, codec="gzip")), tmp_path / "s.nwb", progress=False)
    nwbfile = nwb_dask.read_nwb(server.url("s.nwb"), min_bytes=100_000)
    series = nwbfile.acquisition["ElectricalSeries"]
    assert isinstance(series.data, da.Array) and series.rate == 30_000.0
    server.reset_counts()
    np.testing.assert_array_equal(series.data[1_000:3_000].compute(), x[1_000:3_000].compute())
    assert server.requests, "the data did not come over HTTP"
    nwbfile.read_io.close()


# --------------------------------------------------------------------------- #
# map_ranges, open in one request, windows fetch only their chunks            #
# --------------------------------------------------------------------------- #
def test_map_ranges_processes_in_the_fetching_threads(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), max_gap=0, max_workers=4)
    ranges = [(i * 300_000, 200_000) for i in range(8)] + [(5, 0)]
    threads = set()

    def fn(i, data):
        threads.add(threading.current_thread().name)
        return i, len(data), data[:4]

    out = src.map_ranges(ranges, fn, spread=True)
    assert out == [(i, n, blob[o : o + min(n, 4)]) for i, (o, n) in enumerate(ranges)]
    assert any(name.startswith("nwb_dask-http") for name in threads)


def test_map_ranges_spread_splits_one_span(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), max_workers=4)
    chunks = [(i * 100_000, 100_000) for i in range(30)]  # 3 MB, contiguous
    server.reset_counts()
    assert src.map_ranges(chunks, lambda i, d: d) == [blob[o : o + n] for o, n in chunks]
    assert len(server.requests) == 1
    server.reset_counts()
    assert src.map_ranges(chunks, lambda i, d: d, spread=True) == [blob[o : o + n] for o, n in chunks]
    assert len(server.requests) == 3  # up to max_workers requests of >= 1 MiB


def test_map_ranges_error_stops_and_raises(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), max_gap=0, max_workers=2)
    ranges = [(i * 100_000, 1000) for i in range(20)]

    def fn(i, data):
        if i == 3:
            raise ValueError("bad chunk 3")
        return i

    with pytest.raises(ValueError, match="bad chunk 3"):
        src.map_ranges(ranges, fn)
    with pytest.raises(RemoteReadError, match="past the end"):
        src.map_ranges([(0, 10), (len(blob) + 10, 5)], lambda i, d: d)


def test_open_is_one_request(server, blob):
    src = HTTPByteSource(server.url("blob.bin"))
    server.reset_counts()
    f = src.open()
    assert [m for m, _ in server.requests] == ["GET"]  # size and first block together, no HEAD
    assert f.read(100) == blob[:100]
    f.seek(len(blob) - 10)
    assert f.read() == blob[-10:]
    assert len(server.requests) == 2
    server.ignore_range = True  # a server that ignores Range: size from Content-Length
    g = HTTPByteSource(server.url("blob.bin")).open()
    assert g.read(10) == blob[:10] and g.seek(0, 2) == len(blob)


def test_remote_window_fetches_only_its_chunks(server, tmp_path):
    x = _remote_h5(tmp_path)
    arr = nwb_dask.read_dataset(server.url("rec.h5"), "data")
    assert arr.numblocks == (1, 1)
    arr[:10].compute()  # open and read the chunk index once
    src = nwb_dask.hdf5.read._source(server.url("rec.h5"), ())
    fetched = []
    original = src.map_ranges
    src.map_ranges = lambda ranges, fn, **kw: fetched.extend(ranges) or original(ranges, fn, **kw)
    try:
        np.testing.assert_array_equal(arr[5_050:5_060].compute(), x[5_050:5_060])
        np.testing.assert_array_equal(arr[3_999:4_001, 3].compute(), x[3_999:4_001, 3])
    finally:
        del src.map_ranges
    assert len(fetched) == 3  # chunk 5000-6000, then chunks 3000-4000 and 4000-5000


# --------------------------------------------------------------------------- #
# Scattered reads (metadata prefetching): multi-range requests and fallbacks    #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", ["multipart", "ignore", "first"])
@pytest.mark.parametrize("faults", [0.0, 0.05])
def test_read_scattered_matches_local_in_few_requests(server, blob, mode, faults):
    """Every range's bytes equal the file's, whatever the server does with multi-range requests."""
    server.multirange = mode
    server.set_faults(faults, seed=7)
    rng = np.random.default_rng(3)
    ranges = sorted({(int(o), int(n)) for o, n in zip(rng.integers(0, len(blob) - 5000, 400), rng.integers(0, 4000, 400))})
    src = HTTPByteSource(server.url("blob.bin"), backoff=0.0, retries=8)
    server.reset_counts()
    got = src.read_scattered(ranges)
    assert got == [blob[o : o + n] for o, n in ranges]
    gets = [r for m, r in server.requests if m == "GET"]
    spans = len(nwb_dask.sources.ranges.coalesce(ranges, 0, 1 << 30))
    if mode == "multipart" and not faults:
        # 160 ranges per request: ceil(spans / 160) requests, each a multi-range one
        assert len(gets) == -(-spans // nwb_dask.sources.http.MULTIRANGE_PARTS)
        assert all("," in r for r in gets) and src._multirange_ok is True
    elif not faults:
        # one probing HEAD (no body whatever the answer), then one request per span
        heads = [r for m, r in server.requests if m == "HEAD"]
        assert len(heads) == 1 and "," in heads[0]
        assert len(gets) == spans
        assert src._multirange_ok is False
        server.reset_counts()
        assert src.read_scattered(ranges[:50]) == [blob[o : o + n] for o, n in ranges[:50]]
        assert all("," not in (r or "") for m, r in server.requests)  # remembered: no second probe


def test_read_scattered_errors_name_the_range(server, blob):
    src = HTTPByteSource(server.url("blob.bin"), backoff=0.0, retries=1)
    server.set_faults(1.0, kinds=("error",))
    with pytest.raises(RemoteReadError, match=r"blob\.bin after 2 attempt"):
        src.read_scattered([(0, 10), (100_000, 10)])


def test_multirange_off_and_on(server, blob):
    ranges = [(i * 200_000, 100) for i in range(10)]
    for setting, multipart in ((False, 0), (True, 1)):
        server.multipart_replies = 0
        src = HTTPByteSource(server.url("blob.bin"), multirange=setting)
        assert src.read_scattered(ranges) == [blob[o : o + n] for o, n in ranges]
        assert server.multipart_replies == multipart
    with pytest.raises(ValueError, match="multirange must be"):
        HTTPByteSource(server.url("blob.bin"), multirange="yes")


# --------------------------------------------------------------------------- #
# Metadata prefetch over HTTP: an open costs round trips per level, not per object
# --------------------------------------------------------------------------- #
def _many_series_file(path: Path, n: int) -> dict:
    import pynwb

    from nwb_dask.testing import ephys_nwbfile

    nwbfile = ephys_nwbfile(np.zeros((10, 4), "int16"))
    want = {}
    for i in range(n):
        data = np.arange(150_000, dtype="f8") * (i + 1)  # 1.2 MB apart: one metadata block per object
        nwbfile.add_acquisition(pynwb.TimeSeries(name=f"ts{i:03d}", data=data, unit="V", rate=10.0,
                                                 description=f"series {i}", comments=f"c{i}"))
        want[f"ts{i:03d}"] = data
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return want


def _fresh_handles() -> None:
    nwb_dask.hdf5.read.release_remote_handles()


@pytest.mark.parametrize("mode", ["multipart", "ignore"])
def test_read_nwb_prefetch_costs_round_trips_per_level_not_per_object(server, tmp_path, mode):
    """A pynwb file of 40 series: every value equals pynwb's local read; prefetching cuts the requests."""
    import pynwb

    want = _many_series_file(tmp_path / "many.nwb", 40)
    server.multirange = mode
    counts = {}
    for prefetch in (False, True):
        _fresh_handles()
        server.reset_counts()
        nwbfile = nwb_dask.read_nwb(server.url("many.nwb"), remote_options={"prefetch": prefetch})
        counts[prefetch] = len(server.requests)
        with pynwb.NWBHDF5IO(str(tmp_path / "many.nwb"), "r") as io:
            local = io.read()
            for name, data in want.items():
                got = nwbfile.acquisition[name]
                np.testing.assert_array_equal(np.asarray(got.data[:]), data)
                assert (got.description, got.comments, got.rate, got.unit) == (
                    local.acquisition[name].description, local.acquisition[name].comments,
                    local.acquisition[name].rate, local.acquisition[name].unit)
        nwbfile.read_io.close()
    assert counts[False] > 40  # a request per object, or more
    if mode == "multipart":
        assert counts[True] <= 20, counts  # a multi-range request per hierarchy level
    else:
        # no multi-range: one request per structure, but in parallel, a hierarchy level per round trip
        _fresh_handles()
        stats = nwb_dask.hdf5.read.prefetch_remote(server.url("many.nwb"))
        assert stats.rounds <= 12 and not stats.stopped, stats


def test_read_dataset_prefetches_the_chunk_index(server, tmp_path):
    """After read_dataset over HTTP, computing fetches chunk bytes only: no request for a B-tree node."""
    path = tmp_path / "chunks.h5"
    x = (np.arange(400_000) % 1013).astype("int16").reshape(-1, 8)
    with h5py.File(path, "w") as f:
        for i in range(5):
            f.create_dataset(f"pad{i}", data=np.zeros(50_000))
        f.create_dataset("g/data", data=x, chunks=(500, 8), compression="gzip")  # 100 chunks: B-tree of several nodes
    with h5py.File(path, "r") as f:
        d = f["g/data"]
        chunks = [(c.byte_offset, c.size) for c in (d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks()))]
    _fresh_handles()
    arr = nwb_dask.read_dataset(server.url("chunks.h5"), "g/data")
    server.reset_counts()
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), x)
    ranges = [tuple(int(v) for v in r.split("=")[1].split("-")) for m, r in server.requests if r]
    inside = [any(a <= o and o + n - 1 <= b for a, b in ranges) for o, n in chunks]
    assert all(inside)
    for a, b in ranges:  # every request starts at a chunk (none at a B-tree node or a metadata block)
        assert any(o == a for o, _ in chunks), (a, b)


def test_cloud_optimised_file_opens_in_three_requests(server, tmp_path):
    """A file repacked with cloud=True (paged metadata) opens with read_nwb in at most 3 requests."""
    want = _many_series_file(tmp_path / "plain.nwb", 40)
    nwb_dask.repack(tmp_path / "plain.nwb", tmp_path / "cloud.nwb", cloud=True, progress=False)
    counts = {}
    for name in ("plain.nwb", "cloud.nwb"):
        _fresh_handles()
        server.reset_counts()
        nwbfile = nwb_dask.read_nwb(server.url(name))
        counts[name] = len(server.requests)
        for key in ("ts000", "ts017", "ts039"):
            np.testing.assert_array_equal(np.asarray(nwbfile.acquisition[key].data[:]), want[key])
        nwbfile.read_io.close()
    assert counts["cloud.nwb"] <= 3, counts


@pytest.mark.parametrize("mode", ["multipart", "ignore", "first"])
def test_read_nwb_with_prefetch_survives_faults(server, tmp_path, mode):
    """5xx replies, resets, truncated bodies and wrong Content-Range during the prefetch: same values."""
    want = _many_series_file(tmp_path / "many.nwb", 12)
    server.multirange = mode
    server.set_faults(0.04, seed=11)
    _fresh_handles()
    nwbfile = nwb_dask.read_nwb(server.url("many.nwb"), remote_options={"retries": 10, "backoff": 0.0})
    try:
        for name, data in want.items():
            np.testing.assert_array_equal(np.asarray(nwbfile.acquisition[name].data[:]), data)
    finally:
        nwbfile.read_io.close()
    assert sum(server.faulted.values()) > 0  # faults were injected


# --------------------------------------------------------------------------- #
# Property: any shape, chunking, dtype and codec reads back over HTTP          #
# --------------------------------------------------------------------------- #
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_any_shape import CODECS, arrays, assert_same, make_codec  # noqa: E402

from nwb_dask.chunking import chunked_maxshape, resolve_chunk_shape  # noqa: E402


@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_read_dataset_over_http_any_shape_chunks_dtype_codec(server, tmp_path, data):
    """Written by nwb_dask with every codec, served, read by read_dataset (prefetched chunk index) = plain h5py."""
    x, a = data.draw(arrays(max_ndim=3))
    spec = data.draw(st.sampled_from(CODECS))
    user = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
    chunks = resolve_chunk_shape(data.draw(st.sampled_from(["auto", user])), x.shape, x.dtype, name="x")
    name = f"p{len(list(tmp_path.iterdir()))}.h5"
    with h5py.File(tmp_path / name, "w") as f:
        for i in range(data.draw(st.integers(0, 3))):  # other objects before it in the file
            f.create_dataset(f"pad{i}", data=np.arange(1000.0 * (i + 1)))
        d = f.require_group("g").create_dataset("x", shape=x.shape, dtype=x.dtype, chunks=chunks,
                                                maxshape=chunked_maxshape(x.shape), **make_codec(spec).dataset_kwargs())
        nwb_dask.write_dask_array(a, d, progress=False)
    with h5py.File(tmp_path / name, "r") as f:
        want = f["g/x"][()]
    assert_same(want, x)
    _fresh_handles()
    got = nwb_dask.read_dataset(server.url(name), "g/x", block_bytes=data.draw(st.sampled_from([1, 4096, 2**20])))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.compute(scheduler="threads"), want)
    if x.size:
        sel = tuple(slice(data.draw(st.integers(0, n - 1)), None) for n in x.shape)
        np.testing.assert_array_equal(got[sel].compute(scheduler="threads"), want[sel])

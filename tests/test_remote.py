"""Tests for nwb_dask.sources: HTTP byte ranges, coalescing, retries, h5py over HTTP."""

from __future__ import annotations

import importlib.util
import pickle
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb_dask
import nwb_dask.hdf5.read
import nwb_dask.codecs
from nwb_dask.sources import HTTPByteSource, LocalByteSource, RemoteReadError, byte_source, s3_to_https

FAULT_KINDS = ("error", "reset", "truncate", "badrange")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end by themselves

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _send(self, status: int, headers: dict, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        srv: _Server = self.server  # type: ignore[assignment]
        fault = srv.record(self.command, self.headers.get("Range"))
        if fault == "error":
            self._send(srv.pick_error(), {"Content-Length": 5}, b"" if head else b"fault")
            return
        if fault == "reset":  # no response: RST the connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        path = srv.root / urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if not path.is_file():
            self._send(404, {"Content-Length": 0})
            return
        data = srv.file_bytes(path)
        size = len(data)
        rng_header = self.headers.get("Range") or ""
        many = re.fullmatch(r"bytes=\d+-\d+(,\d+-\d+)+", rng_header)
        if many and not srv.ignore_range and srv.multirange != "ignore":
            pairs = [tuple(int(v) for v in p.split("-")) for p in rng_header[6:].split(",")]
            if srv.multirange == "first":
                rng_header = f"bytes={pairs[0][0]}-{pairs[0][1]}"
            else:
                self._multipart(srv, data, pairs, fault, head)
                return
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng_header)
        if m is None or srv.ignore_range:
            status, start, body, headers = 200, 0, data, {}
        else:
            start = int(m.group(1))
            stop = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": 0})
                return
            body = data[start : stop + 1]
            shown = start + 1 if fault == "badrange" else start
            status, headers = 206, {"Content-Range": f"bytes {shown}-{shown + len(body) - 1}/{size}"}
        headers["Content-Length"] = len(body)
        headers["Accept-Ranges"] = "bytes"
        headers.update(srv.validator_headers(path, data))
        if head:
            self._send(status, headers)
        elif fault == "truncate" and len(body) > 0:
            self._send(status, headers, body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(status, headers, body)


    def _multipart(self, srv, data: bytes, pairs: list, fault: str | None, head: bool) -> None:
        """A ``multipart/byteranges`` reply, as nginx sends for a multi-range request."""
        size = len(data)
        if any(a >= size for a, _ in pairs):
            self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": 0})
            return
        srv.multipart_replies += 1
        boundary = "00000000001"
        chunks = []
        for k, (a, b) in enumerate(pairs):
            b = min(b, size - 1)
            shown = a + 1 if fault == "badrange" and k == 0 else a
            chunks.append(f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Range: bytes {shown}-{shown + b - a}/{size}\r\n\r\n".encode() + data[a : b + 1])
        chunks.append(f"\r\n--{boundary}--\r\n".encode())
        body = b"".join(chunks)
        headers = {"Content-Type": f"multipart/byteranges; boundary={boundary}", "Content-Length": len(body)}
        if head:
            self._send(206, headers)
        elif fault == "truncate":
            self._send(206, headers, body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(206, headers, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.rng = random.Random(1234)
        self.faults: dict[str, float] = {}
        self.ignore_range = False
        self.multirange = "multipart"  # or "ignore" (200, whole body: S3) or "first" (206, first range only)
        self.multipart_replies = 0
        self.requests: list[tuple[str, str | None]] = []
        self.faulted: dict[str, int] = {}
        self._cache: dict[Path, tuple[tuple, bytes]] = {}
        #: Validators sent with every reply: "etag" and/or "last-modified" (none by default).
        self.validators: tuple[str, ...] = ()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def set_faults(self, p: float = 0.0, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 1234) -> None:
        with self.lock:
            self.faults = {k: p for k in kinds}
            self.rng = random.Random(seed)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()

    def record(self, method: str, rng: str | None) -> str | None:
        """Count the request and draw its fault (independent draws per kind)."""
        with self.lock:
            self.requests.append((method, rng))
            for kind, p in self.faults.items():
                if self.rng.random() < p:
                    self.faulted[kind] = self.faulted.get(kind, 0) + 1
                    return kind
        return None

    def pick_error(self) -> int:
        with self.lock:
            return self.rng.choice((500, 503))

    def file_bytes(self, path: Path) -> bytes:
        """The file's bytes, read again when the file was rewritten (new mtime or size)."""
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            if path not in self._cache or self._cache[path][0] != stamp:
                self._cache[path] = (stamp, path.read_bytes())
            return self._cache[path][1]

    def validator_headers(self, path: Path, data: bytes) -> dict:
        """``ETag`` (a hash of the bytes) and ``Last-Modified`` (the file's mtime), as ``validators`` asks."""
        import email.utils
        import hashlib

        out = {}
        if "etag" in self.validators:
            out["ETag"] = '"' + hashlib.sha1(data).hexdigest()[:20] + '"'
        if "last-modified" in self.validators:
            out["Last-Modified"] = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        return out


@pytest.fixture
def server(tmp_path):
    srv = _Server(tmp_path)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


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
        assert src._multirange_ok is True
    elif not faults:
        # one probing multi-range request, then one request per span
        assert len(gets) == 1 + spans
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

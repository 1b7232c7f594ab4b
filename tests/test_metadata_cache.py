"""The on-disk metadata cache (nwb_dask.sources.cache): warm opens in one request, never stale, bounded, off."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nwb_dask
import nwb_dask.hdf5.read
import nwb_dask.sources.cache
from nwb_dask.cli import main
from nwb_dask.sources import MetadataCache, byte_source
from nwb_dask.sources.cache import DEFAULT_MAX_BYTES, default_directory, metadata_cache, validator_from
from nwb_dask.testing import write_rich_nwbfile
from test_remote import _Server  # the loopback server of the HTTP tests (counts requests)

TESTS = Path(__file__).resolve().parent
N_SERIES = 50

# Opens ``url`` with nwb_dask in a fresh interpreter, says so, waits for the parent to count the
# requests, then compares every object's fields (dask arrays computed) with pynwb's read of ``local``.
_WARM = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import dask.array
    import nwb_dask
    from conftest import nwb_fields, nwb_value, same
    from pynwb import NWBHDF5IO

    url, local, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    remote = nwb_dask.read_nwb(url, min_bytes=1 << 12, remote_options=options)
    print("OPENED", flush=True)
    sys.stdin.readline()

    def snapshot(nwbfile):
        out = {{}}
        for oid, obj in nwbfile.objects.items():
            for key, val in nwb_fields(obj).items():
                if isinstance(val, dask.array.Array):
                    val = val.compute(scheduler="sync")
                out[(oid, key)] = nwb_value(val)
        return out

    with NWBHDF5IO(local, "r") as io:
        want = snapshot(io.read())
    got = snapshot(remote)
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    bad = [k for k in want if not same(got[k], want[k])]
    assert not bad, bad[:5]
    print("SAME", len(want), flush=True)
    """
).format(tests=str(TESTS))


# --------------------------------------------------------------------------- #
# fixtures                                                                     #
# --------------------------------------------------------------------------- #
@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """The default cache directory of this test (through $NWB_DASK_CACHE_DIR), cache switched on."""
    path = tmp_path / "cache"
    monkeypatch.setenv("NWB_DASK_CACHE_DIR", str(path))
    monkeypatch.delenv("NWB_DASK_METADATA_CACHE", raising=False)
    return path


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    srv = _Server(root)
    srv.validators = ("etag",)
    try:
        with srv.running():
            yield srv
    finally:
        _fresh()


def _fresh() -> None:
    """Forget this process's remote handles and sources, as a new process would start."""
    nwb_dask.hdf5.read.release_remote_handles()


def _many_series(path: Path, n: int = N_SERIES, seed: int = 0, description: str = "series") -> Path:
    """A pynwb-written file with ``n`` TimeSeries (object headers between their data, as pynwb writes)."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    rng = np.random.default_rng(seed)
    nwb = NWBFile("many series", "cache-test", datetime(2026, 1, 1, tzinfo=timezone.utc))
    for i in range(n):
        rows = 8000  # 128 KB each: the metadata is spread over a 6 MB file
        nwb.add_acquisition(TimeSeries(name=f"ts{i:03d}", data=rng.standard_normal((rows, 2)), unit="V",
                                       rate=100.0, description=f"{description} {i:03d}"))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.nwbmeta") if not p.name.startswith(".")) if directory.exists() else []


def _warm(url: str, local: Path, server: _Server, options: dict | None = None) -> int:
    """Open ``url`` in a fresh process; the requests its open cost (values then checked against ``local``)."""
    import json

    server.reset_counts()
    proc = subprocess.Popen([sys.executable, "-c", _WARM, url, str(local), json.dumps(options or {})],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        opened = len(server.requests)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert line.strip() == "OPENED", err[-3000:]
    assert proc.returncode == 0 and out.startswith("SAME"), err[-3000:]
    return opened


def _cold(url: str, server: _Server, options: dict | None = None) -> int:
    """Open ``url`` in this process (first open: nothing of it in memory); the requests it cost."""
    _fresh()
    server.reset_counts()
    nwb_dask.read_nwb(url, min_bytes=1 << 12, remote_options=options)
    return len(server.requests)


# --------------------------------------------------------------------------- #
# warm opens                                                                   #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("validators", [("etag",), ("last-modified",), ("etag", "last-modified")])
def test_second_open_in_a_fresh_process_costs_one_request(server, cache_dir, tmp_path, validators):
    server.validators = validators
    local = _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    cold = _cold(url, server)
    assert cold > 1  # h5py walked the metadata over the network
    [entry] = _entries(cache_dir)
    inode = entry.stat().st_ino
    assert _warm(url, local, server) == 1  # the GET of size + first block, which validates the entry
    assert server.requests[0] == ("GET", "bytes=0-1048575")
    # nothing new was read: the entry was not rewritten (same inode), and is still the only one
    assert _entries(cache_dir) == [entry] and entry.stat().st_ino == inode


def test_rich_file_warm_open(server, cache_dir):
    local = Path(write_rich_nwbfile(server.root / "rich.nwb"))
    url = server.url("rich.nwb")
    assert _cold(url, server) > 1
    assert _warm(url, local, server) == 1


def test_read_dataset_warm_open_and_values(server, cache_dir):
    local = _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    name = "acquisition/ts007/data"
    _fresh()
    nwb_dask.read_dataset(url, name)
    assert len(_entries(cache_dir)) == 1
    _fresh()
    server.reset_counts()
    got = nwb_dask.read_dataset(url, name)
    assert len(server.requests) == 1
    with h5py.File(local, "r") as f:
        np.testing.assert_array_equal(got.compute(scheduler="sync"), f[name][()])


def test_entry_grows_only_with_new_metadata(server, cache_dir):
    _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    _fresh()
    nwb_dask.read_dataset(url, "acquisition/ts001/data")
    [entry] = _entries(cache_dir)
    first = entry.stat()
    cache = MetadataCache(cache_dir)
    [row] = cache.info()["files"]
    _fresh()
    nwb_dask.read_dataset(url, "acquisition/ts001/data")  # the same metadata: nothing written
    assert entry.stat().st_ino == first.st_ino
    _fresh()
    nwb_dask.read_nwb(url)  # every object: more metadata, the entry grows (a superset)
    [grown] = cache.info()["files"]
    assert entry.stat().st_ino != first.st_ino
    assert grown["metadata_bytes"] > row["metadata_bytes"]
    _fresh()
    server.reset_counts()
    nwb_dask.read_dataset(url, "acquisition/ts001/data")  # the old metadata is still held
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- #
# validation                                                                   #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("validators", [("etag",), ("last-modified",)])
def test_file_replaced_on_server_is_never_served_stale(server, cache_dir, validators):
    server.validators = validators
    path = _many_series(server.root / "many.nwb", description="before")
    url = server.url("many.nwb")
    _cold(url, server)
    [old] = MetadataCache(cache_dir).info()["files"]
    # same size, other bytes: other values, other (same-length) descriptions and object IDs
    size = path.stat().st_size
    os.replace(_many_series(server.root / "other.nwb", seed=1, description="after "), path)
    stamp = path.stat().st_mtime + 5  # Last-Modified has a resolution of seconds
    os.utime(path, (stamp, stamp))
    assert path.stat().st_size == size
    assert _warm(url, path, server) > 1  # the entry did not match: a cold open, values of the new file
    [new] = MetadataCache(cache_dir).info()["files"]  # and it replaced the old entry
    assert new["validator"] != old["validator"] and new["size"] == old["size"] == size
    assert new["validator"].startswith("etag:" if validators == ("etag",) else "last-modified:")
    _fresh()
    file = nwb_dask.read_nwb(url)
    assert file.acquisition["ts003"].description == "after  003"


def test_no_validator_no_cache(server, cache_dir):
    server.validators = ()
    local = _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    cold = _cold(url, server)
    assert not cache_dir.exists() or _entries(cache_dir) == []
    assert _warm(url, local, server) == cold  # as cold as the first open, and correct


def test_weak_etag_falls_back_to_last_modified():
    assert validator_from({"ETag": '"abc"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}) == 'etag:"abc"'
    assert validator_from({"ETag": 'W/"abc"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}) == \
        "last-modified:Tue, 01 Dec 2026 10:00:00 GMT"
    assert validator_from({"ETag": 'W/"abc"'}) is None
    assert validator_from({}) is None


def test_entry_checked_against_size_validator_and_url(tmp_path):
    cache = MetadataCache(tmp_path)
    runs = [(0, b"superblock"), (4096, b"object header")]
    assert cache.store("http://h/a.nwb", 10_000, 'etag:"1"', runs)
    assert cache.load("http://h/a.nwb", 10_000, 'etag:"1"') == runs
    assert cache.load("http://h/b.nwb", 10_000, 'etag:"1"') is None
    assert cache.load("http://h/a.nwb", 10_000, None) is None
    assert cache.load("http://h/a.nwb", 10_000, 'etag:"2"') is None  # the object changed: entry removed
    assert _entries(tmp_path) == []
    assert cache.store("http://h/a.nwb", 10_000, 'etag:"1"', runs)
    assert cache.load("http://h/a.nwb", 10_001, 'etag:"1"') is None
    assert _entries(tmp_path) == []
    assert not cache.store("http://h/a.nwb", 10_000, None, runs)  # no validator: nothing written
    assert _entries(tmp_path) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_or_truncated_entry_is_removed_never_served(tmp_path, data):
    cache = MetadataCache(tmp_path / data.draw(st.uuids()).hex)
    url = "http://h/x.nwb"
    runs = [(0, bytes(range(200))), (5000, b"\x07" * 300), (9000, b"tail")]
    cache.store(url, 10_000, 'etag:"v"', runs)
    [path] = _entries(cache.directory)
    blob = path.read_bytes()
    if data.draw(st.booleans()):
        bad = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        pos = data.draw(st.integers(0, len(blob) - 1))
        bad = blob[:pos] + bytes([blob[pos] ^ data.draw(st.integers(1, 255))]) + blob[pos + 1 :]
    path.write_bytes(bad)
    assert cache.load(url, 10_000, 'etag:"v"') is None
    assert not path.exists()


def test_corrupt_entry_ignored_by_a_real_open(server, cache_dir):
    local = _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    cold = _cold(url, server)
    [entry] = _entries(cache_dir)
    blob = bytearray(entry.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped bit of metadata: never served
    entry.write_bytes(bytes(blob))
    assert _warm(url, local, server) == cold  # as cold as the first open, and correct
    cache = MetadataCache(cache_dir)
    [row] = cache.info()["files"]  # stored again, whole
    assert cache.load(url, local.stat().st_size, row["validator"])


# --------------------------------------------------------------------------- #
# the bound                                                                    #
# --------------------------------------------------------------------------- #
def test_bound_evicts_least_recently_used(tmp_path):
    cache = MetadataCache(tmp_path, max_bytes=20_000)
    payload = [(0, b"m" * 3000)]
    stamp = 1_000_000_000
    for i in range(40):
        assert cache.store(f"http://h/{i}.nwb", 1 << 20, f'etag:"{i}"', payload)
        path = cache.path_for(f"http://h/{i}.nwb")
        os.utime(path, (stamp + i, stamp + i))  # distinct use times (the clock may be coarse)
        if i == 5:
            keep = path
        if i > 5:  # entry 5 is used after every store: the most recently used of the old ones
            assert cache.load("http://h/5.nwb", 1 << 20, 'etag:"5"') == payload
            os.utime(keep, (stamp + i + 0.5, stamp + i + 0.5))
        total = sum(p.stat().st_size for p in _entries(tmp_path))
        assert total <= 20_000
    names = {p.name for p in _entries(tmp_path)}
    assert keep.name in names
    assert cache.path_for("http://h/39.nwb").name in names
    assert cache.path_for("http://h/0.nwb").name not in names
    assert len(names) == 20_000 // keep.stat().st_size  # all entries are the same size: as many as fit


def test_entry_larger_than_the_bound_is_not_stored(tmp_path):
    cache = MetadataCache(tmp_path, max_bytes=1000)
    assert not cache.store("http://h/big.nwb", 1 << 20, 'etag:"1"', [(0, b"x" * 2000)])
    assert _entries(tmp_path) == []


# --------------------------------------------------------------------------- #
# switches                                                                     #
# --------------------------------------------------------------------------- #
def test_switched_off_writes_nothing(server, cache_dir, monkeypatch, capsys):
    _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    _cold(url, server, {"metadata_cache": False})
    nwb_dask.read_dataset(url, "acquisition/ts002/data", remote_options={"metadata_cache": False})
    assert main(["info", url, "--no-cache", "--json"]) == 0
    assert not cache_dir.exists()
    monkeypatch.setenv("NWB_DASK_METADATA_CACHE", "0")
    _cold(url, server)
    assert not cache_dir.exists()
    own = cache_dir.parent / "own"
    _cold(url, server, {"metadata_cache": {"directory": str(own), "max_bytes": 10 << 20}})  # explicit: on
    assert len(_entries(own)) == 1 and not cache_dir.exists()


def test_option_values():
    assert metadata_cache(False) is None
    assert metadata_cache({"directory": "/x", "max_bytes": 5}).max_bytes == 5
    assert metadata_cache(True).max_bytes == DEFAULT_MAX_BYTES
    with pytest.raises(ValueError, match="metadata_cache takes directory, max_bytes, not size"):
        metadata_cache({"size": 3})
    with pytest.raises(TypeError, match="metadata_cache must be True, False or a dict"):
        metadata_cache("yes")
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 0, got -1"):
        MetadataCache("/x", max_bytes=-1)
    src = byte_source("http://127.0.0.1:9/a.nwb", metadata_cache={"directory": "/tmp/c", "max_bytes": 7})
    assert src.metadata_cache.directory == Path("/tmp/c") and src.metadata_cache.max_bytes == 7
    assert byte_source("http://127.0.0.1:9/a.nwb", metadata_cache=False).metadata_cache is None
    byte_source("/tmp/local.nwb", metadata_cache=False)  # local files: no cache, option accepted


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("NWB_DASK_CACHE_DIR", str(tmp_path / "a"))
    assert default_directory() == tmp_path / "a"
    monkeypatch.delenv("NWB_DASK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "nwb_dask" / "metadata"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".cache" / "nwb_dask" / "metadata"


def test_cli_cache_info_and_clear(server, cache_dir, capsys):
    import json

    _many_series(server.root / "many.nwb")
    url = server.url("many.nwb")
    _cold(url, server)
    capsys.readouterr()
    assert main(["cache", "info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["directory"] == str(cache_dir) and report["entries"] == 1
    assert report["files"][0]["url"] == url and report["files"][0]["validator"].startswith('etag:"')
    assert main(["cache", "clear", "--dir", str(cache_dir)]) == 0
    assert "removed 1 metadata cache entry" in capsys.readouterr().out
    assert _entries(cache_dir) == []


# --------------------------------------------------------------------------- #
# concurrency                                                                  #
# --------------------------------------------------------------------------- #
def _file_bytes(offset: int, length: int) -> bytes:
    """The bytes of the imaginary 1 MiB file of the concurrency test at ``offset``."""
    return bytes((i * 7 + 3) % 251 for i in range(offset, offset + length))


def _hammer(directory: str, seed: int, rounds: int, bad: Any) -> None:
    rng = np.random.default_rng(seed)
    cache = MetadataCache(directory)
    for _ in range(rounds):
        cache._known.clear()  # as a new open would (each round stores afresh)
        runs = []
        for _ in range(int(rng.integers(1, 6))):
            off, n = int(rng.integers(0, (1 << 20) - 1)), int(rng.integers(1, 20_000))
            n = min(n, (1 << 20) - off)
            runs.append((off, _file_bytes(off, n)))
        cache.store("http://h/shared.nwb", 1 << 20, 'etag:"s"', runs)
        got = cache.load("http://h/shared.nwb", 1 << 20, 'etag:"s"')
        if got is None or any(data != _file_bytes(off, len(data)) for off, data in got):
            with bad.get_lock():
                bad.value += 1


def test_concurrent_processes_never_see_half_an_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    bad = ctx.Value("i", 0)
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), seed, 25, bad)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert bad.value == 0
    [entry] = _entries(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    got = MetadataCache(tmp_path).load("http://h/shared.nwb", 1 << 20, 'etag:"s"')
    assert got and all(data == _file_bytes(off, len(data)) for off, data in got)
    assert entry.exists()


# --------------------------------------------------------------------------- #
# fsspec sources                                                               #
# --------------------------------------------------------------------------- #
def test_fsspec_source_uses_info_etag(tmp_path, cache_dir):
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class ETagMemory(MemoryFileSystem):
        protocol = "etagmem"
        store: dict = {}
        pseudo_dirs = [""]
        calls: list = []

        @classmethod
        def _strip_protocol(cls, path):
            return super()._strip_protocol(str(path).removeprefix("etagmem://"))

        def info(self, path, **kwargs):
            out = dict(super().info(path, **kwargs))
            out["ETag"] = f'"{hash(bytes(self.store[self._strip_protocol(path)].getbuffer()))}"'
            return out

        def cat_ranges(self, paths, starts, ends, **kwargs):
            type(self).calls.append(len(paths))
            return super().cat_ranges(paths, starts, ends, **kwargs)

    fsspec.register_implementation("etagmem", ETagMemory, clobber=True)
    local = _many_series(tmp_path / "many.nwb", n=10)
    with fsspec.filesystem("etagmem").open("/many.nwb", "wb") as f:
        f.write(local.read_bytes())
    url = "etagmem://many.nwb"
    _fresh()
    ETagMemory.calls.clear()
    nwb_dask.read_nwb(url)
    assert ETagMemory.calls  # the cold open read its metadata from the filesystem
    assert len(_entries(cache_dir)) == 1
    _fresh()
    ETagMemory.calls.clear()
    file = nwb_dask.read_nwb(url)
    assert ETagMemory.calls == []  # every metadata byte came from the cache
    with h5py.File(local, "r") as f:
        np.testing.assert_array_equal(file.acquisition["ts004"].data[()], f["acquisition/ts004/data"][()])
    _fresh()


def test_bytes_fetched_ahead_are_stored_and_cost_a_warm_open_nothing(server, cache_dir):
    data = np.random.default_rng(3).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    (server.root / "blob.bin").write_bytes(data)
    url = server.url("blob.bin")
    src = byte_source(url)
    view = src.open()
    view.seek(100)
    assert view.read(50) == data[100:150]
    ahead = [(2_100_000, 5000), (2_900_000, 777)]  # as the metadata prefetcher fetches (never read by h5py)
    assert view.raw.prefetch(ahead) == 5777
    assert nwb_dask.sources.cache.remember(src, view)
    server.reset_counts()
    warm = byte_source(url).open()
    assert warm.raw.prefetch(ahead) == 0  # held: the preloaded entry
    warm.seek(2_100_000)
    assert warm.read(5000) == data[2_100_000:2_105_000]
    warm.seek(100)
    assert warm.read(50) == data[100:150]
    assert len(server.requests) == 1

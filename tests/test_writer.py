"""The parallel writer: schedulers, direct chunk writes, NWB integration, the iterator queue.

Everything written is read back element by element, through h5py's own
filter pipeline or through plain pynwb in a fresh interpreter (with
validation), so the tests check the bytes HDF5 readers see, not nwb_dask's
own view of them.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from hdmf.backends.hdf5 import H5DataIO
from hdmf.data_utils import DataChunkIterator, GenericDataChunkIterator
from pynwb import TimeSeries

import nwb_dask.engine
import nwb_dask.hdf5.write
from conftest import read_with_plain_pynwb
from nwb_dask import (
    DaskDataChunkIterator,
    DaskDataIO,
    NWBDaskIO,
    WriteError,
    WriteStats,
    codec,
    write_dask_array,
    write_nwb,
)
from nwb_dask.engine import active_scheduler
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys
from nwb_dask.hdf5.write import plan_write, write_arrays

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
)

SCHEDULERS = ["sync", "threads", "processes", "distributed"]
CODECS = ["gzip", "zstd", "blosc", "lz4", "bitshuffle", "none"]
DTYPES = ["int16", "float32", "uint8", "bool"]
ES = "/acquisition/ElectricalSeries/data"

# (shape, HDF5 chunks, dask chunks): edge chunks on every axis, dask blocks
# that straddle HDF5 chunk boundaries.
LAYOUTS = [
    ((1001,), (64,), (300,)),
    ((203, 37), (32, 16), (70, 20)),
    ((41, 13, 5), (8, 6, 4), (15, 7, 3)),
]


# --------------------------------------------------------------------------- #
# Helpers                                                                      #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def client():
    """A two-process LocalCluster, shared by the module (not the default client)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@contextlib.contextmanager
def use_scheduler(kind: str, request):
    """Make ``kind`` the active dask scheduler (a Client for "distributed")."""
    if kind == "distributed":
        with dask.config.set(scheduler=request.getfixturevalue("client")):
            yield
    else:
        with dask.config.set(scheduler=kind):
            yield


def sample(shape, dtype, seed=0) -> np.ndarray:
    """Deterministic, somewhat compressible data of a dtype."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.2
    if dtype == "float32":
        return (np.cumsum(rng.standard_normal(shape), axis=0) / 4).astype(np.float32)
    if dtype == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    return (rng.integers(-300, 300, shape) // 7).astype(np.dtype(dtype))


def n_chunks(shape, chunks) -> int:
    return math.prod(-(-s // c) for s, c in zip(shape, chunks))


def stored_chunk_bytes(dset) -> int:
    """Sum of the stored sizes of a dataset's chunks, from HDF5's chunk index."""
    return sum(dset.id.get_chunk_info(i).size for i in range(dset.id.get_num_chunks()))


def _boom(x, block_id=None):
    if block_id[0] == 3:
        raise RuntimeError("boom at block 3")
    return x


def _slow(x):
    time.sleep(0.05)
    return x


def failing_array(n_blocks=6, rows=1000, n_channels=8) -> da.Array:
    """int16 (n_blocks * rows, n_channels); computing block 3 raises RuntimeError."""
    x = da.from_array(sample((n_blocks * rows, n_channels), "int16", 3), chunks=(rows, n_channels))
    return x.map_blocks(_boom, dtype=x.dtype)


_PLAIN_MULTI = textwrap.dedent(
    """
    import sys
    import hdf5plugin
    import numpy as np
    from pynwb import NWBHDF5IO, validate

    path, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        arrays = {n: nwbfile.acquisition[n].data[()] for n in names}
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    errors = validate(path=path)
    if errors:
        raise SystemExit("validation errors: %r" % (errors,))
    np.savez(out, **arrays)
    """
)


def read_many_with_plain_pynwb(path, names, tmp_path) -> dict:
    """Like conftest.read_with_plain_pynwb, for several acquisitions in one interpreter."""
    out = tmp_path / "plain_many.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_MULTI, str(path), str(out), *names], capture_output=True, text=True, cwd=tmp_path
    )
    if proc.returncode:
        pytest.fail(f"plain pynwb could not read {path}: {proc.stderr[-3000:]}")
    with np.load(out) as z:
        return {n: z[n] for n in names}


# --------------------------------------------------------------------------- #
# 1. write_dask_array on every scheduler                                        #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind", SCHEDULERS)
def test_every_scheduler_writes_exact_data(kind, request, tmp_path):
    matrix = [(c, d) for c in CODECS for d in DTYPES]
    with use_scheduler(kind, request):
        info = active_scheduler()
        assert info.kind == kind
        if kind == "distributed":
            assert info.client is request.getfixturevalue("client")
            assert info.workers == 2
        elif kind == "sync":
            assert info.workers == 1

        with h5py.File(tmp_path / "w.h5", "w") as f:
            # write_dask_array: 3-D, edge chunks on every axis, misaligned dask blocks.
            x = sample((103, 37, 5), "int16", 1)
            d = f.create_dataset("single", x.shape, x.dtype, chunks=(16, 10, 4), **codec("gzip").dataset_kwargs())
            stats = write_dask_array(da.from_array(x, chunks=(20, 9, 3)), d, block_bytes=8192, progress=False)
            assert stats.chunks == n_chunks(x.shape, d.chunks) == d.id.get_num_chunks()
            np.testing.assert_array_equal(d[...], x)

            # Every codec x dtype, 1-D/2-D/3-D, written together (one pool for all).
            jobs, expected = [], {}
            for i, (cname, dtype) in enumerate(matrix):
                shape, chunks, dchunks = LAYOUTS[i % len(LAYOUTS)]
                x = sample(shape, dtype, seed=10 + i)
                c = codec(cname)
                name = f"{cname}_{dtype}_{len(shape)}d"
                dset = f.create_dataset(name, shape, x.dtype, chunks=chunks, **c.dataset_kwargs())
                jobs.append(plan_write(da.from_array(x, chunks=dchunks), dset, c, block_bytes=8192))
                expected[name] = x
            stats = write_arrays(jobs, progress=False)
            assert stats.logical_bytes == sum(x.nbytes for x in expected.values())
            assert stats.chunks == sum(n_chunks(f[n].shape, f[n].chunks) for n in expected)

    with h5py.File(tmp_path / "w.h5", "r") as f:  # reopened: what any HDF5 reader sees
        for name, x in expected.items():
            got = f[name][...]
            assert got.dtype == x.dtype, name
            np.testing.assert_array_equal(got, x, err_msg=name)


@pytest.mark.parametrize("cname", CODECS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_write_dask_array_codecs_and_dtypes(cname, dtype, tmp_path):
    shape, chunks, dchunks = LAYOUTS[(CODECS.index(cname) + DTYPES.index(dtype)) % len(LAYOUTS)]
    x = sample(shape, dtype, seed=7)
    c = codec(cname)
    with dask.config.set(scheduler="threads"), h5py.File(tmp_path / "c.h5", "w") as f:
        d = f.create_dataset("x", shape, x.dtype, chunks=chunks, **c.dataset_kwargs())
        stats = write_dask_array(da.from_array(x, chunks=dchunks), d, block_bytes=1024, progress=False)
        assert stats.chunks == n_chunks(shape, chunks)
        assert stats.logical_bytes == x.nbytes
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][...], x)
        if cname != "none":
            assert f["x"]._filters, "the dataset declares its filters"


def test_active_scheduler_names_and_client(request):
    with dask.config.set(scheduler="synchronous"):
        assert active_scheduler().kind == "sync"
    with dask.config.set(scheduler="threads", num_workers=3):
        assert active_scheduler() == nwb_dask.engine.SchedulerInfo("threads", 3)
    assert active_scheduler("processes").kind == "processes"
    c = request.getfixturevalue("client")
    info = active_scheduler(c)
    assert (info.kind, info.workers, info.client) == ("distributed", 2, c)
    with c.as_current(), dask.config.set(scheduler="distributed"):
        assert active_scheduler().client is c
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="cannot drive the dask scheduler"):
        active_scheduler(pool)


# --------------------------------------------------------------------------- #
# 2. Datasets that do not fit                                                   #
# --------------------------------------------------------------------------- #
def test_mismatched_codec_shape_and_layout_raise_write_error(tmp_path):
    x = da.from_array(sample((300, 8), "int16"), chunks=(100, 8))
    with h5py.File(tmp_path / "e.h5", "w") as f:
        g = f.create_group("grp")
        gz = g.create_dataset("gz", (300, 8), "i2", chunks=(64, 8), **codec("gzip").dataset_kwargs())
        with pytest.raises(WriteError, match=r"dataset '/grp/gz': codec Codec\('zstd'.*does not match"):
            write_dask_array(x, gz, "zstd", progress=False)
        # Same compressor, different pipeline (no shuffle): bytes would not decode.
        with pytest.raises(WriteError, match=r"'/grp/gz'.*does not match the dataset's filters \[2, 1\]"):
            write_dask_array(x, gz, ("gzip", {"shuffle": False}), progress=False)
        other = g.create_dataset("zs", (300, 8), "i2", chunks=(64, 8), **codec("zstd").dataset_kwargs())
        with pytest.raises(WriteError, match=r"'/grp/zs'.*does not match"):
            write_dask_array(x, other, "blosc", progress=False)

        short = g.create_dataset("short", (299, 8), "i2", chunks=(64, 8))
        with pytest.raises(WriteError, match=r"'/grp/short': data shape \(300, 8\) does not match the dataset's \(299, 8\)"):
            write_dask_array(x, short, progress=False)

        flat = g.create_dataset("flat", (300, 8), "i2")
        assert flat.chunks is None
        with pytest.raises(WriteError, match=r"'/grp/flat' is contiguous"):
            write_dask_array(x, flat, progress=False)

        # Nothing was stored by the refused writes.
        assert gz.id.get_num_chunks() == other.id.get_num_chunks() == short.id.get_num_chunks() == 0
    assert issubclass(WriteError, ValueError)


def test_filters_hdf5_alone_runs_use_the_raw_fallback(tmp_path):
    x = sample((333, 20), "int16", 4)
    arr = da.from_array(x, chunks=(50, 7))
    with dask.config.set(scheduler="threads"), h5py.File(tmp_path / "f.h5", "w") as f:
        fl = f.create_dataset("fletcher", x.shape, x.dtype, chunks=(64, 8), fletcher32=True, compression="gzip", shuffle=True)
        stats = write_dask_array(arr, fl, block_bytes=4096, progress=False)
        assert stats.chunks == 0  # no direct chunk writes: HDF5 ran the pipeline
        assert stats.logical_bytes == x.nbytes
        assert fl.id.get_num_chunks() == n_chunks(x.shape, fl.chunks)
        # An explicit codec cannot reproduce fletcher32's checksums: refused.
        with pytest.raises(WriteError, match=r"'/fletcher'.*does not match"):
            write_dask_array(arr, fl, "gzip", progress=False)

        big = f.create_dataset("bigendian", x.shape, ">i2", chunks=(64, 8), compression="gzip")
        write_dask_array(arr, big, block_bytes=4096, progress=False)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["fletcher"].fletcher32 and f["fletcher"].compression == "gzip"
        np.testing.assert_array_equal(f["fletcher"][...], x)
        assert f["bigendian"].dtype == np.dtype(">i2")
        np.testing.assert_array_equal(f["bigendian"][...], x)


# --------------------------------------------------------------------------- #
# 3. Back-pressure                                                              #
# --------------------------------------------------------------------------- #
class _InflightSpy:
    """Wraps run_block_tasks: raw bytes submitted and not yet written, and concurrent computes."""

    def __init__(self, monkeypatch):
        self.lock = threading.Lock()
        self.inflight = self.peak_inflight = 0
        self.running = self.peak_running = 0
        self.submitted = self.written = 0
        real_run = nwb_dask.hdf5.write.run_block_tasks
        real_compute = nwb_dask.engine._compute_and_encode

        def run(tasks, *, on_submit=None, **kwargs):
            def submit(task):
                with self.lock:
                    self.inflight += task.nbytes
                    self.peak_inflight = max(self.peak_inflight, self.inflight)
                    self.submitted += 1
                if on_submit is not None:
                    on_submit(task)

            for done in real_run(tasks, on_submit=submit, **kwargs):
                yield done  # the writer stores it before asking for the next one
                with self.lock:
                    self.inflight -= done.nbytes
                    self.written += 1

        def compute(task):
            with self.lock:
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
            try:
                return real_compute(task)
            finally:
                with self.lock:
                    self.running -= 1

        monkeypatch.setattr(nwb_dask.hdf5.write, "run_block_tasks", run)
        monkeypatch.setattr(nwb_dask.engine, "_compute_and_encode", compute)


@pytest.mark.parametrize("budget_blocks", [2, None])
def test_inflight_bytes_stay_within_the_budget(budget_blocks, monkeypatch, tmp_path):
    rows, n_blocks = 512, 16
    x = sample((rows * n_blocks, 8), "int16", 5)
    block = rows * 8 * 2
    arr = da.from_array(x, chunks=(rows, 8)).map_blocks(_slow, dtype=x.dtype)
    spy = _InflightSpy(monkeypatch)
    kwargs = {} if budget_blocks is None else {"max_inflight_bytes": budget_blocks * block}
    with dask.config.set(scheduler="threads", num_workers=4), h5py.File(tmp_path / "b.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(rows, 8), **codec("zstd").dataset_kwargs())
        stats = write_dask_array(arr, d, block_bytes=block, progress=False, **kwargs)
        np.testing.assert_array_equal(d[...], x)
    assert spy.submitted == spy.written == n_blocks
    assert stats.logical_bytes == x.nbytes and stats.chunks == n_blocks
    if budget_blocks is None:
        # Control: without a tight budget all four workers compute at once.
        assert spy.peak_running == 4
    else:
        assert spy.peak_inflight <= budget_blocks * block + block
        assert spy.peak_running <= budget_blocks
        assert spy.peak_running == 2  # still parallel


def test_inflight_budget_on_distributed(monkeypatch, request, tmp_path):
    rows, n_blocks = 512, 10
    x = sample((rows * n_blocks, 8), "int16", 6)
    block = rows * 8 * 2
    spy = _InflightSpy(monkeypatch)
    with use_scheduler("distributed", request), h5py.File(tmp_path / "b.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(rows, 8), **codec("gzip").dataset_kwargs())
        write_dask_array(da.from_array(x, chunks=(rows, 8)), d, max_inflight_bytes=block, progress=False)
        np.testing.assert_array_equal(d[...], x)
    assert spy.submitted == spy.written == n_blocks
    assert spy.peak_inflight <= 2 * block


# --------------------------------------------------------------------------- #
# 4. Failures and atomic files                                                  #
# --------------------------------------------------------------------------- #
def _assert_boom(excinfo, dataset):
    assert excinfo.type is RuntimeError
    assert str(excinfo.value) == "boom at block 3"
    if sys.version_info >= (3, 11):
        notes = getattr(excinfo.value, "__notes__", [])
        assert any(repr(dataset) in n for n in notes), notes


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_failing_block_raises_the_original_error(kind, request, tmp_path):
    arr = failing_array()
    with use_scheduler(kind, request), h5py.File(tmp_path / "x.h5", "w") as f:
        d = f.create_dataset("failing", arr.shape, arr.dtype, chunks=(1000, 8), **codec("gzip").dataset_kwargs())
        with pytest.raises(RuntimeError) as excinfo:
            write_dask_array(arr, d, progress=False)
    _assert_boom(excinfo, "/failing")


@pytest.mark.parametrize("kind", ["threads", "distributed"])
def test_write_nwb_failure_leaves_no_file(kind, request, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    nwbfile = ephys_nwbfile(DaskDataIO(failing_array(), codec="gzip", chunks=(1000, 8)))
    with use_scheduler(kind, request), pytest.raises(RuntimeError) as excinfo:
        write_nwb(nwbfile, out / "session.nwb", progress=False)
    _assert_boom(excinfo, ES)
    assert list(out.iterdir()) == []  # neither the target nor the .partial file


class FailingArrayIterator(GenericDataChunkIterator):
    def __init__(self, array, **kwargs):
        self._array = array
        super().__init__(**kwargs)

    def _get_data(self, selection):
        if selection[0].start >= 2000:
            raise OSError("acquisition board vanished")
        return self._array[selection]

    def _get_maxshape(self):
        return self._array.shape

    def _get_dtype(self):
        return self._array.dtype


def test_failing_iterator_in_the_queue_leaves_no_file(tmp_path):
    arr = da.from_array(sample((4000, 8), "int16", 16), chunks=(1000, 8))
    nwbfile = ephys_nwbfile(DaskDataIO(arr, chunks=(1000, 8)))
    it = FailingArrayIterator(sample((5000, 4), "float32"), chunk_shape=(500, 4), buffer_shape=(1000, 4), display_progress=False)
    nwbfile.add_acquisition(TimeSeries(name="aux", data=it, unit="V", rate=100.0))
    with dask.config.set(scheduler="threads"), pytest.raises(OSError, match="acquisition board vanished"):
        write_nwb(nwbfile, tmp_path / "s.nwb", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    target = tmp_path / "session.nwb"
    target.write_bytes(b"the previous session")
    with dask.config.set(scheduler="threads"), pytest.raises(RuntimeError, match="boom at block 3"):
        write_nwb(ephys_nwbfile(DaskDataIO(failing_array(), chunks=(1000, 8))), target, progress=False)
    assert target.read_bytes() == b"the previous session"
    assert [p.name for p in tmp_path.iterdir()] == ["session.nwb"]
    # A successful write replaces it.
    arr = da.from_array(sample((2000, 8), "int16"), chunks=(1000, 8))
    with dask.config.set(scheduler="threads"):
        write_nwb(ephys_nwbfile(DaskDataIO(arr, chunks=(1000, 8))), target, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["session.nwb"]
    with h5py.File(target, "r") as f:
        np.testing.assert_array_equal(f[ES][...], arr.compute())


def test_nwbdaskio_with_block_is_atomic(tmp_path):
    arr = da.from_array(sample((3000, 8), "int16", 8), chunks=(1000, 8))
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    with dask.config.set(scheduler="threads"):
        with pytest.raises(KeyError, match="after the write"):
            with NWBDaskIO(bad / "s.nwb", "w", progress=False) as io:
                io.write(ephys_nwbfile(DaskDataIO(arr)))
                raise KeyError("after the write")
        assert list(bad.iterdir()) == []

        with NWBDaskIO(good / "s.nwb", "w", progress=False) as io:
            io.write(ephys_nwbfile(DaskDataIO(arr)))
            # Built under a temporary name; the target appears only when the block completes.
            (partial,) = good.iterdir()
            assert re.fullmatch(r"\.s\.[0-9a-f]{8}\.partial\.nwb", partial.name), partial.name
        assert io.path == good / "s.nwb"
    assert [p.name for p in good.iterdir()] == ["s.nwb"]
    with h5py.File(good / "s.nwb", "r") as f:
        np.testing.assert_array_equal(f[ES][...], arr.compute())


@pytest.mark.parametrize("mode", ["w-", "x"])
def test_exclusive_modes_refuse_an_existing_file(mode, tmp_path):
    target = tmp_path / "s.nwb"
    target.write_bytes(b"keep me")
    before = target.stat().st_mtime_ns
    arr = da.from_array(sample((1000, 4), "int16"), chunks=(500, 4))
    with pytest.raises(FileExistsError, match=rf"s.nwb exists \(mode '{mode}'\)"):
        NWBDaskIO(target, mode)
    with pytest.raises(FileExistsError):
        write_nwb(ephys_nwbfile(DaskDataIO(arr)), target, mode=mode, progress=False)
    assert target.read_bytes() == b"keep me" and target.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.nwb"]
    # A new path is fine in the same mode.
    with dask.config.set(scheduler="threads"):
        write_nwb(ephys_nwbfile(DaskDataIO(arr)), tmp_path / "new.nwb", mode=mode, progress=False)
    with h5py.File(tmp_path / "new.nwb", "r") as f:
        np.testing.assert_array_equal(f[ES][...], arr.compute())


# --------------------------------------------------------------------------- #
# 5. NWB integration                                                            #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "spec, check",
    [
        ("gzip", "gzip"),
        (("gzip", {"engine": "isal"}), "gzip"),
        ("zstd", "32015"),
    ],
    ids=["gzip", "gzip-isal", "zstd"],
)
def test_write_nwb_round_trips_through_plain_pynwb(spec, check, tmp_path):
    arr = synthetic_ephys(seconds=0.4, n_channels=48, seed=2, block_samples=5000)
    data_io = DaskDataIO(arr, codec=spec, chunks=(2048, 32))
    with dask.config.set(scheduler="threads"):
        stats = write_nwb(ephys_nwbfile(data_io), tmp_path / "s.nwb", progress=False)
    got = read_with_plain_pynwb(tmp_path / "s.nwb", "ElectricalSeries", tmp_path)
    expected = arr.compute()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    with h5py.File(tmp_path / "s.nwb", "r") as f:
        dset = f[ES]
        assert dset.chunks == DaskDataIO(arr, codec=spec, chunks=(2048, 32)).data.chunk_shape == (2048, 32)
        if check == "gzip":
            assert (dset.compression, dset.compression_opts, dset.shuffle) == ("gzip", 4, True)
        else:
            assert check in dset._filters
        assert stats.chunks == n_chunks(dset.shape, dset.chunks)  # direct chunk writes, not HDF5's pipeline


def test_bare_iterator_and_h5dataio_settings_are_honoured(tmp_path):
    arr = synthetic_ephys(seconds=0.3, n_channels=16, seed=3, block_samples=3000)
    expected = arr.compute()
    with dask.config.set(scheduler="threads"):
        it = DaskDataChunkIterator(arr, chunk_shape=(1024, 16))
        with NWBDaskIO(tmp_path / "bare.nwb", "w", progress=False) as io:
            io.write(ephys_nwbfile(it))
            bare_stats = io.stats
        wrapped = H5DataIO(DaskDataChunkIterator(arr, chunk_shape=(1000, 8)), compression="gzip", compression_opts=4, shuffle=True)
        with NWBDaskIO(tmp_path / "gz.nwb", "w", progress=False) as io:
            io.write(ephys_nwbfile(wrapped))
            gz_stats = io.stats
    with h5py.File(tmp_path / "bare.nwb", "r") as f:
        d = f[ES]
        assert d.chunks == (1024, 16) and d.compression is None and not d._filters
        np.testing.assert_array_equal(d[...], expected)
        assert bare_stats.chunks == n_chunks(d.shape, d.chunks)
    with h5py.File(tmp_path / "gz.nwb", "r") as f:
        d = f[ES]
        assert d.chunks == (1000, 8)
        assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True)
        np.testing.assert_array_equal(d[...], expected)
        assert gz_stats.chunks == n_chunks(d.shape, d.chunks)
        assert gz_stats.stored_bytes == d.id.get_storage_size() < expected.nbytes


# --------------------------------------------------------------------------- #
# 6. The concurrent iterator queue                                              #
# --------------------------------------------------------------------------- #
class ArrayChunkIterator(GenericDataChunkIterator):
    """A GenericDataChunkIterator over a numpy array (as neuroconv's are over recordings)."""

    def __init__(self, array: np.ndarray, **kwargs):
        self._array = array
        super().__init__(**kwargs)

    def _get_data(self, selection):
        return self._array[selection]

    def _get_maxshape(self):
        return self._array.shape

    def _get_dtype(self):
        return self._array.dtype


class RecordingDataChunkIterator(DataChunkIterator):
    """A DataChunkIterator that logs its next() calls."""

    def __init__(self, tag, log, **kwargs):
        self.tag, self.log = tag, log
        super().__init__(**kwargs)

    def __next__(self):
        self.log.append(self.tag)
        time.sleep(0.003)  # a slow source, so the two can overlap
        return super().__next__()


def test_iterators_drain_together_and_read_back_identical(tmp_path):
    ephys = synthetic_ephys(seconds=0.3, n_channels=32, seed=9, block_samples=3000)
    generic = sample((4321, 8), "float32", 11)
    rows = sample((3000, 6), "int16", 12).astype(np.int32)
    values = sample((2500,), "float32", 13).astype(np.float64)
    grow2d = sample((1234, 6), "uint8", 14)
    known = sample((2000, 5), "int16", 15)
    log: list[str] = []

    lfp = da.from_array(sample((7777,), "float32", 10), chunks=1000)
    nwbfile = ephys_nwbfile(DaskDataIO(ephys, codec="zstd", chunks=(1500, 32)))
    nwbfile.add_acquisition(TimeSeries(name="lfp", data=DaskDataIO(lfp, codec="gzip", chunks=(512,)), unit="V", rate=1000.0))
    it_generic = ArrayChunkIterator(generic, chunk_shape=(500, 8), buffer_shape=(1000, 8), display_progress=False)
    nwbfile.add_acquisition(TimeSeries(name="generic", data=it_generic, unit="a.u.", rate=1000.0))
    plain = RecordingDataChunkIterator("plain", log, data=iter(list(rows)), buffer_size=333)
    nwbfile.add_acquisition(TimeSeries(name="plain", data=plain, unit="a.u.", rate=1000.0))
    gz = RecordingDataChunkIterator("gz", log, data=iter(values.tolist()), buffer_size=333)
    nwbfile.add_acquisition(
        TimeSeries(
            name="gz",
            data=H5DataIO(gz, compression="gzip", compression_opts=4, shuffle=True, chunks=(256,)),
            unit="a.u.",
            rate=1000.0,
        )
    )
    # Selections straddling chunks on both axes: growing (unknown length) and known length.
    it_grow2d = DataChunkIterator(data=iter(list(grow2d)), buffer_size=333)
    nwbfile.add_acquisition(TimeSeries(name="grow2d", data=H5DataIO(it_grow2d, chunks=(100, 4)), unit="a.u.", rate=1000.0))
    it_known = DataChunkIterator(data=known, buffer_size=333)
    nwbfile.add_acquisition(
        TimeSeries(name="known", data=H5DataIO(it_known, chunks=(100, 4), compression="gzip"), unit="a.u.", rate=1000.0)
    )
    names = ["ElectricalSeries", "lfp", "generic", "plain", "gz", "grow2d", "known"]
    path = tmp_path / "queue.nwb"
    with dask.config.set(scheduler="threads"):
        stats = write_nwb(nwbfile, path, progress=False)

    got = read_many_with_plain_pynwb(path, names, tmp_path)
    np.testing.assert_array_equal(got["ElectricalSeries"], ephys.compute())
    np.testing.assert_array_equal(got["lfp"], lfp.compute())
    for name, expected in [("generic", generic), ("plain", rows), ("gz", values), ("grow2d", grow2d), ("known", known)]:
        assert got[name].shape == expected.shape, name  # growing datasets end exactly at the data
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)

    with h5py.File(path, "r") as f:
        assert f["acquisition/generic/data"].chunks == (500, 8)
        assert f["acquisition/plain/data"].maxshape == (None, 6)
        g = f["acquisition/gz/data"]
        assert (g.maxshape, g.chunks, g.compression, g.shuffle) == ((None,), (256,), "gzip", True)
        assert (f["acquisition/grow2d/data"].maxshape, f["acquisition/grow2d/data"].chunks) == ((None, 6), (100, 4))
        assert (f["acquisition/known/data"].maxshape, f["acquisition/known/data"].chunks) == ((2000, 5), (100, 4))
        dsets = [f[f"acquisition/{n}/data"] for n in names]
        stored = sum(stored_chunk_bytes(d) for d in dsets)
        # Every chunk stored exactly once, each by a direct chunk write.
        assert stats.chunks == sum(d.id.get_num_chunks() for d in dsets) == sum(n_chunks(d.shape, d.chunks) for d in dsets)
    logical = ephys.nbytes + lfp.nbytes + generic.nbytes + rows.nbytes + values.nbytes + grow2d.nbytes + known.nbytes
    assert stats.logical_bytes == logical
    assert stats.stored_bytes == stored
    assert sorted(stats.datasets) == sorted(f"/acquisition/{n}/data" for n in names)

    # The two plain iterators progressed together, not one after the other.
    calls = {t: [i for i, x in enumerate(log) if x == t] for t in ("plain", "gz")}
    assert len(calls["plain"]) >= 10 and len(calls["gz"]) >= 8  # 333-row buffers, plus the final empty call
    assert calls["gz"][0] < calls["plain"][-1] and calls["plain"][0] < calls["gz"][-1], log
    switches = sum(a != b for a, b in zip(log, log[1:]))
    assert switches >= 4, log


def test_drain_iterators_with_a_tiny_budget(tmp_path):
    from nwb_dask.nwb.queue import drain_iterators

    known = sample((2000, 5), "int16", 21)
    grow = sample((1234, 6), "uint8", 22)
    with h5py.File(tmp_path / "q.h5", "w") as f:
        a = f.create_dataset("known", known.shape, known.dtype, chunks=(100, 4), **codec("zstd").dataset_kwargs())
        b = f.create_dataset("grow", (0, 6), grow.dtype, maxshape=(None, 6), chunks=(100, 4), **codec("gzip").dataset_kwargs())
        pairs = [(a, DataChunkIterator(data=known, buffer_size=333)), (b, DataChunkIterator(data=iter(list(grow)), buffer_size=77))]
        stats = drain_iterators(pairs, max_inflight_bytes=1, workers=2, progress=False)
        assert stats.logical_bytes == known.nbytes + grow.nbytes
        assert stats.chunks == a.id.get_num_chunks() + b.id.get_num_chunks() == n_chunks(a.shape, a.chunks) + n_chunks(grow.shape, (100, 4))
        assert stats.stored_bytes == stored_chunk_bytes(a) + stored_chunk_bytes(b)
    with h5py.File(tmp_path / "q.h5", "r") as f:
        np.testing.assert_array_equal(f["known"][...], known)
        assert f["grow"].shape == grow.shape
        np.testing.assert_array_equal(f["grow"][...], grow)


# --------------------------------------------------------------------------- #
# 7. WriteStats                                                                 #
# --------------------------------------------------------------------------- #
def test_write_stats_match_the_file(tmp_path):
    arr = synthetic_ephys(seconds=0.5, n_channels=64, seed=4, block_samples=4000)
    with dask.config.set(scheduler="threads"), h5py.File(tmp_path / "s.h5", "w") as f:
        d = f.create_dataset("x", arr.shape, arr.dtype, chunks=(2000, 64), **codec("gzip").dataset_kwargs())
        stats = write_dask_array(arr, d, progress=False)
        f.flush()
        assert isinstance(stats, WriteStats) and stats.datasets == ["/x"]
        assert stats.logical_bytes == arr.nbytes
        assert stats.stored_bytes == d.id.get_storage_size() == stored_chunk_bytes(d)
        assert stats.chunks == d.id.get_num_chunks() == n_chunks(arr.shape, d.chunks)
        assert stats.ratio == arr.nbytes / stats.stored_bytes > 1.5
        assert stats.seconds > 0 and stats.mb_per_s > 0

    with dask.config.set(scheduler="threads"):
        nwb_stats = write_nwb(ephys_nwbfile(DaskDataIO(arr, codec="zstd", chunks=(2000, 64))), tmp_path / "s.nwb", progress=False)
    with h5py.File(tmp_path / "s.nwb", "r") as f:
        assert nwb_stats.datasets == [ES]
        assert nwb_stats.logical_bytes == arr.nbytes
        assert nwb_stats.stored_bytes == f[ES].id.get_storage_size() == stored_chunk_bytes(f[ES])
        assert nwb_stats.ratio > 1.5

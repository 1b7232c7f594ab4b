"""Sharded writes (issue 19 item 2): NWBDaskIO(shards=) writes each dask dataset as a virtual dataset over part
files, each written by one worker; consolidate copies the parts' chunks raw.

Values are compared element by element, read back with plain h5py and pynwb in fresh processes (from another
working directory, and after moving the file and its parts directory); faults (a failing block, a worker killed
with SIGKILL, SIGTERM) leave nothing at the target.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_any_shape import CODECS, FAST, arrays, assert_same, ts_file

import nwb_dask
import nwb_dask.nwb.shards
from nwb_dask import DaskDataIO, NWBDaskIO, consolidate, write_nwb
from nwb_dask.atomic import find_partials
from nwb_dask.hdf5.shards import PART_DATASET, PartTarget, PartWorkerError, pipeline, raw_copy_plan, split_rows, \
    store_part_block
from nwb_dask.nwb.shards import parts_dir

DATA = "acquisition/ts/data"


@pytest.fixture(scope="module")
def client(local_cluster):
    """conftest's module cluster, under the name these tests use."""
    return local_cluster


def part_files(path: Path) -> list[Path]:
    return sorted(parts_dir(path).rglob("*.h5"))


def nothing_left(folder: Path) -> list[str]:
    """Everything in ``folder`` (the target, its parts, temporaries): empty after a failed write."""
    return sorted(p.name for p in folder.iterdir())


def values(shape, dtype="i2", seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, shape).astype(dtype)


_READ_BACK = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    from pynwb import NWBHDF5IO
    path, expected, name = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
    with h5py.File(path, "r") as f:
        d = f[name]
        assert d.is_virtual
        got = d[()]
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape)
    np.testing.assert_array_equal(got, expected)
    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        ts = next(iter(nwb.acquisition.values()))
        np.testing.assert_array_equal(ts.data[:], expected)
    print("ok")
    """
)


def read_back_elsewhere(path: Path, expected: np.ndarray, tmp_path: Path, name: str = DATA) -> None:
    """Plain h5py and pynwb in a fresh process whose working directory is not the file's."""
    np.save(tmp_path / "expected.npy", expected)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", _READ_BACK, str(path), str(tmp_path / "expected.npy"), name],
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --------------------------------------------------------------------------- #
# a cluster: round trips, layout, relative sources                             #
# --------------------------------------------------------------------------- #
def test_cluster_round_trip_parts_layout_and_moved_pair(client, tmp_path):
    x = values((50_000, 6))
    path = tmp_path / "rec.nwb"
    stats = write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=(7_000, 6)), chunks=(2_000, 6))), path,
                      scheduler=client, shards="workers", progress=False)
    assert stats.logical_bytes == x.nbytes and stats.chunks == 25
    parts = part_files(path)
    assert [p.relative_to(parts_dir(path)).as_posix() for p in parts] == [
        "acquisition/ts/data.0.h5", "acquisition/ts/data.1.h5"]
    rows = []
    for p in parts:  # each part: a chunked dataset with the whole dataset's chunks and filters
        with h5py.File(p, "r") as f:
            d = f[PART_DATASET]
            a, b = f.attrs["nwb_dask_rows"]
            assert f.attrs["nwb_dask_part_of"] == "/" + DATA
            assert d.chunks == (2_000, 6) and d.compression == "gzip" and d.shuffle
            np.testing.assert_array_equal(d[()], x[a:b])
            rows.append((int(a), int(b)))
    assert rows == [(0, 24_000), (24_000, 50_000)]  # 25 chunks: 12 + 13, cut on a chunk boundary
    with h5py.File(path, "r") as f:
        d = f[DATA]
        assert d.is_virtual and d.attrs["unit"] == "au"
        assert [m.file_name for m in d.virtual_sources()] == [
            "rec.nwb.parts/acquisition/ts/data.0.h5", "rec.nwb.parts/acquisition/ts/data.1.h5"]  # relative
    assert not find_partials(tmp_path)
    read_back_elsewhere(path, x, tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(path, moved / "rec.nwb")
    shutil.move(parts_dir(path), parts_dir(moved / "rec.nwb"))
    read_back_elsewhere(moved / "rec.nwb", x, tmp_path)


def test_cluster_more_parts_than_workers_and_two_datasets(client, tmp_path):
    from pynwb import TimeSeries

    x, y = values((9_000, 3), "f4", 1), values((4_001,), "i8", 2)
    nwb = ts_file(DaskDataIO(da.from_array(x, chunks=1_000), chunks=(500, 3), codec="zstd"))
    nwb.add_acquisition(TimeSeries(name="y", data=DaskDataIO(da.from_array(y, chunks=999), chunks=(400,)),
                                   unit="au", rate=1.0))
    path = tmp_path / "two.nwb"
    write_nwb(nwb, path, scheduler=client, shards=5, progress=False)
    assert len(part_files(path)) == 10
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DATA][()], x)
        np.testing.assert_array_equal(f["acquisition/y/data"][()], y)
        assert len(f["acquisition/y/data"].virtual_sources()) == 5


def test_persisted_data_parts_written_where_their_blocks_are(client, tmp_path, monkeypatch):
    """Each part goes to the worker holding most of its persisted blocks (no raw bytes between workers)."""
    distributed = pytest.importorskip("distributed")
    placed = []
    real = nwb_dask.nwb.shards.ShardedWrite._place

    def place(self, parts):
        real(self, parts)
        placed.extend((p.start, p.stop, p.worker) for p in parts)

    monkeypatch.setattr(nwb_dask.nwb.shards.ShardedWrite, "_place", place)
    x = values((16_000, 4), seed=3)
    a = client.persist(da.from_array(x, chunks=(1_000, 4)) + 0)
    distributed.wait(distributed.futures_of(a))
    where = client.who_has(distributed.futures_of(a))
    home = {i * 1_000: where[k][0] for i, k in enumerate(sorted(where, key=lambda k: k[1]))}  # block -> worker
    path = tmp_path / "p.nwb"
    write_nwb(ts_file(DaskDataIO(a, chunks=(500, 4))), path, scheduler=client, shards="workers", progress=False)
    assert len(placed) == 2 and len({w for _, _, w in placed}) == 2  # one part per worker

    def local(assignment):  # blocks whose part is written where they are
        return sum(home[r] == w for (start, stop), w in assignment for r in range(start, stop, 1_000))

    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    best = max(local(zip([(a, b) for a, b, _ in placed], order)) for order in itertools.permutations(workers))
    assert local([((a, b), w) for a, b, w in placed]) == best, (placed, home)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DATA][()], x)


def test_a_part_refuses_a_block_on_another_worker(client, tmp_path):
    """Never two writers of one HDF5 file: the sink step checks where it runs."""
    from nwb_dask.engine import BlockTask

    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(PART_DATASET, (10,), "i2", chunks=(5,))
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    task = BlockTask(0, (slice(0, 5),), None, (5,), nwb_dask.codec("none"), 0, name="/x",
                     target=PartTarget(str(path), 0, workers[1], "dataset '/x' part 0"))
    fut = client.submit(store_part_block, np.zeros(5, "i2"), np.dtype("i2"), task, workers=[workers[0]],
                        allow_other_workers=False, pure=False)
    with pytest.raises(PartWorkerError, match=r"'/x' part 0.*is written by worker " + workers[1]):
        fut.result()


# --------------------------------------------------------------------------- #
# any shape, chunking, dtype, codec and number of parts                        #
# --------------------------------------------------------------------------- #
@settings(FAST, max_examples=60)
@given(arrays(max_ndim=3), st.sampled_from(CODECS), st.integers(1, 5), st.data())
def test_any_shape_round_trip_and_raw_consolidate(arr, spec, n, data):
    import tempfile

    x, a = arr
    chunks = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nwb"
        write_nwb(ts_file(DaskDataIO(a, codec=spec, chunks=chunks)), path, shards=n, scheduler="sync",
                  progress=False)
        with h5py.File(path, "r") as f:
            d = f[DATA]
            assert_same(d[()], x, byte_order_free=True)
            sharded = x.size > 0
            assert d.is_virtual == sharded
            if sharded:
                expect = split_rows(x.shape[0], chunks[0], n)
                assert len(d.virtual_sources()) == len(expect) == len(part_files(path))
                assert raw_copy_plan(d, tmp)[1] is None
        if not sharded:
            assert not parts_dir(path).exists()
            return
        one = Path(tmp) / "one.nwb"
        result = consolidate(path, one, scheduler="sync", progress=False)
        stored = 0
        for p in part_files(path):
            with h5py.File(p, "r") as f:
                stored += f[PART_DATASET].id.get_num_chunks()
        assert result.raw_datasets == ["/" + DATA] and result.raw_chunks == stored and result.verified
        assert result.stats.datasets == ["/" + DATA] and result.stats.chunks == stored and result.stats.seconds > 0
        with h5py.File(one, "r") as f, h5py.File(part_files(path)[0], "r") as p:
            d = f[DATA]
            assert not d.is_virtual and d.chunks == chunks == p[PART_DATASET].chunks
            assert pipeline(d) == pipeline(p[PART_DATASET]) and d.fillvalue == p[PART_DATASET].fillvalue
            assert_same(d[()], x, byte_order_free=True)


@settings(FAST, max_examples=15)
@given(arrays(max_ndim=3, max_blocks=40), st.sampled_from(CODECS), st.sampled_from([1, 2, 3, "workers"]), st.data())
def test_any_shape_on_the_cluster(client, arr, spec, shards, data):
    """The same round trip through pinned worker tasks (processes): every part written by its worker."""
    import tempfile

    x, a = arr
    chunks = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nwb"
        write_nwb(ts_file(DaskDataIO(a, codec=spec, chunks=chunks)), path, shards=shards, scheduler=client,
                  progress=False)
        with h5py.File(path, "r") as f:
            assert_same(f[DATA][()], x, byte_order_free=True)
            n = 2 if shards == "workers" else shards
            assert len(part_files(path)) == (len(split_rows(x.shape[0], chunks[0], n)) if x.size else 0)
    assert not any(client.run(nwb_dask.hdf5.shards.open_parts).values())


def test_consolidate_falls_back_for_a_vds_off_chunk_boundaries(tmp_path):
    """Segments of 7 rows, chunks of 4: no raw copy; the values are read and written anew, then verified."""
    segs = []
    for k in range(3):
        with h5py.File(tmp_path / f"s{k}.h5", "w") as f:
            f.create_dataset("x", data=values((7, 2), "i4", k), chunks=(4, 2), compression="gzip")
        segs.append(values((7, 2), "i4", k))
    layout = h5py.VirtualLayout((21, 2), "i4")
    for k in range(3):
        layout[7 * k:7 * k + 7] = h5py.VirtualSource(f"s{k}.h5", "x", shape=(7, 2))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_virtual_dataset("x", layout)
        assert "not placed on chunk boundaries" in raw_copy_plan(f["x"], tmp_path)[1]
    result = consolidate(tmp_path / "v.h5", tmp_path / "out.h5", scheduler="sync", progress=False)
    assert result.raw_chunks == 0 and result.raw_datasets == [] and result.verified
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], np.concatenate(segs))


def test_consolidate_falls_back_for_overlapping_mappings_that_add_up_to_the_size(tmp_path):
    """Two mappings overlap by a chunk and leave one unmapped: sizes add up, yet no raw copy (HDF5's later wins)."""
    for k in range(2):
        with h5py.File(tmp_path / f"s{k}.h5", "w") as f:
            f.create_dataset("x", data=values((8, 2), "i4", k), chunks=(4, 2), compression="gzip")
    layout = h5py.VirtualLayout((16, 2), "i4")
    layout[0:8] = h5py.VirtualSource("s0.h5", "x", shape=(8, 2))
    layout[4:12] = h5py.VirtualSource("s1.h5", "x", shape=(8, 2))  # 8 + 8 = 16 rows: the sizes alone say "covered"
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_virtual_dataset("x", layout, fillvalue=-1)
        expected = f["x"][()]
        sources, reason = raw_copy_plan(f["x"], tmp_path)
    assert sources == [] and "s0.h5:x and" in reason and "s1.h5:x overlap" in reason
    result = consolidate(tmp_path / "w.h5", tmp_path / "out.h5", scheduler="sync", progress=False)
    assert result.raw_chunks == 0 and result.raw_datasets == [] and result.verified
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], expected)
    a, b = values((8, 2), "i4", 0)[4:], values((8, 2), "i4", 1)[:4]
    assert (expected[4:8] == a).all() or (expected[4:8] == b).all()  # one source's rows, whichever HDF5 chose


def test_consolidate_with_a_codec_reencodes(tmp_path):
    x = values((3_000, 2))
    path = tmp_path / "r.nwb"
    write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=700), chunks=(500, 2))), path, shards=3, scheduler="sync",
              progress=False)
    result = consolidate(path, tmp_path / "o.nwb", codec="zstd", scheduler="sync", progress=False)
    assert result.raw_chunks == 0
    with h5py.File(tmp_path / "o.nwb", "r") as f:
        np.testing.assert_array_equal(f[DATA][()], x)


def test_sharded_file_validates(tmp_path):
    from pynwb import NWBHDF5IO, validate

    path = tmp_path / "v.nwb"
    write_nwb(ts_file(DaskDataIO(da.from_array(values((4_000, 3)), chunks=1_000), chunks=(500, 3))), path,
              shards=2, scheduler="sync", progress=False)
    with NWBHDF5IO(str(path), "r") as io:
        assert validate(io=io) == []


def test_sharded_file_passes_nwbinspector(tmp_path):
    pytest.importorskip("nwbinspector")
    from test_inspector import assert_passes

    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

    path = tmp_path / "i.nwb"
    write_nwb(ephys_nwbfile(DaskDataIO(synthetic_ephys(seconds=0.2, n_channels=16, seed=2))), path, shards=3,
              scheduler="sync", progress=False)
    with h5py.File(path, "r") as f:
        assert f["acquisition/ElectricalSeries/data"].is_virtual
    assert_passes(path)


# --------------------------------------------------------------------------- #
# refusals and existing outputs                                                #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shards, match", [(0, "give 'workers' or a number"), ("all", "give 'workers'"),
                                           (True, "give 'workers'")])
def test_bad_shards_refused(tmp_path, shards, match):
    with pytest.raises(ValueError, match=match):
        NWBDaskIO(tmp_path / "x.nwb", "w", shards=shards)
    assert nothing_left(tmp_path) == []


def test_shards_refused_for_appends_processes_and_zarr(tmp_path):
    nwb = ts_file(DaskDataIO(da.zeros((100, 2), "i2", chunks=50), chunks=(10, 2)))
    write_nwb(nwb, tmp_path / "a.nwb", progress=False, scheduler="sync")
    with pytest.raises(ValueError, match="sharded writes create a new local file"):
        NWBDaskIO(tmp_path / "a.nwb", "a", shards=2)
    with pytest.raises(ValueError, match="processes scheduler"):
        write_nwb(ts_file(DaskDataIO(da.zeros((100, 2), "i2", chunks=50), chunks=(10, 2))), tmp_path / "p.nwb",
                  shards=2, scheduler="processes", progress=False)
    with pytest.raises(ValueError, match="Zarr store"):
        write_nwb(nwb, tmp_path / "z.nwb.zarr", shards=2, progress=False)
    assert nothing_left(tmp_path) == ["a.nwb"]


def test_a_file_where_the_parts_dir_goes_is_refused(tmp_path):
    (tmp_path / "r.nwb.parts").write_text("mine")
    with pytest.raises(FileExistsError, match=r"r\.nwb\.parts exists and is not a parts directory"):
        write_nwb(ts_file(DaskDataIO(da.zeros((100, 2), "i2", chunks=50), chunks=(10, 2))), tmp_path / "r.nwb",
                  shards=2, scheduler="sync", progress=False)
    assert nothing_left(tmp_path) == ["r.nwb.parts"] and (tmp_path / "r.nwb.parts").read_text() == "mine"


def test_existing_parts_dir_refused_without_overwrite_and_replaced_with(tmp_path):
    path = tmp_path / "r.nwb"
    old, new = values((1_000, 2), seed=1), values((1_000, 2), seed=2)
    write_nwb(ts_file(DaskDataIO(da.from_array(old, chunks=250), chunks=(100, 2))), path, shards=4,
              scheduler="sync", progress=False)
    (parts_dir(path) / "mine.txt").write_text("kept?")
    path.unlink()
    with pytest.raises(FileExistsError, match=r"r\.nwb\.parts exists"):
        write_nwb(ts_file(DaskDataIO(da.from_array(new, chunks=250), chunks=(100, 2))), path, mode="w-", shards=2,
                  scheduler="sync", progress=False)
    assert nothing_left(tmp_path) == ["r.nwb.parts"]
    write_nwb(ts_file(DaskDataIO(da.from_array(new, chunks=250), chunks=(100, 2))), path, mode="w", shards=2,
              scheduler="sync", progress=False)
    assert nothing_left(tmp_path) == ["r.nwb", "r.nwb.parts"]
    assert len(part_files(path)) == 2 and not (parts_dir(path) / "mine.txt").exists()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DATA][()], new)


def test_an_unsharded_write_over_a_sharded_file_removes_its_parts_only_after(tmp_path, monkeypatch):
    """The old parts stay while the new file is written (a failed write keeps the old file readable), then go."""
    path = tmp_path / "r.nwb"
    old, new = values((1_000, 2), seed=1), values((1_000, 2), seed=2)
    write_nwb(ts_file(DaskDataIO(da.from_array(old, chunks=250), chunks=(100, 2))), path, shards=4,
              scheduler="sync", progress=False)
    with pytest.raises(RuntimeError, match="sensor unplugged"):  # a failing unsharded overwrite: the old pair intact
        write_nwb(ts_file(DaskDataIO(da.from_array(new, chunks=250).map_blocks(_fail_at_block_3, dtype=new.dtype),
                                     chunks=(100, 2))),
                  path, mode="w", scheduler="sync", progress=False)
    assert nothing_left(tmp_path) == ["r.nwb", "r.nwb.parts"]
    read_back_elsewhere(path, old, tmp_path)
    write_nwb(ts_file(DaskDataIO(da.from_array(new, chunks=250), chunks=(100, 2))), path, mode="w",
              scheduler="sync", progress=False)
    assert path.is_file() and not parts_dir(path).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries either
    with h5py.File(path, "r") as f:
        assert not f[DATA].is_virtual
        np.testing.assert_array_equal(f[DATA][()], new)


@pytest.mark.parametrize("data", ["numpy", "empty dask"])
def test_shards_given_but_nothing_sharded_over_a_sharded_file_removes_its_parts(tmp_path, data):
    path = tmp_path / "r.nwb"
    write_nwb(ts_file(DaskDataIO(da.from_array(values((1_000, 2), seed=1), chunks=250), chunks=(100, 2))), path,
              shards=4, scheduler="sync", progress=False)
    new = values((1_000, 2), seed=2) if data == "numpy" else values((0, 2), seed=2)
    write_nwb(ts_file(new if data == "numpy" else DaskDataIO(da.from_array(new, chunks=250))), path,
              mode="w", shards=4, scheduler="sync", progress=False)
    assert path.is_file() and not parts_dir(path).exists()
    with h5py.File(path, "r") as f:
        assert not f[DATA].is_virtual
        np.testing.assert_array_equal(f[DATA][()], new)


def test_a_parts_named_directory_the_old_file_did_not_use_is_left_alone(tmp_path):
    path = tmp_path / "r.nwb"
    write_nwb(ts_file(DaskDataIO(da.from_array(values((400, 2), seed=1), chunks=100), chunks=(100, 2))), path,
              scheduler="sync", progress=False)
    parts_dir(path).mkdir()
    (parts_dir(path) / "mine.txt").write_text("not nwb_dask's")
    write_nwb(ts_file(DaskDataIO(da.from_array(values((400, 2), seed=2), chunks=100), chunks=(100, 2))), path,
              mode="w", scheduler="sync", progress=False)
    assert (parts_dir(path) / "mine.txt").read_text() == "not nwb_dask's"


# --------------------------------------------------------------------------- #
# faults: nothing at the target                                                #
# --------------------------------------------------------------------------- #
def _fail_at_block_3(block, block_info=None):
    if block_info[None]["chunk-location"][0] == 3:
        raise RuntimeError("sensor unplugged")
    return block


def test_failing_block_on_cluster_leaves_nothing(client, tmp_path):
    a = da.ones((8_000, 4), "i2", chunks=(1_000, 4)).map_blocks(_fail_at_block_3, dtype="i2")
    with pytest.raises(RuntimeError, match="sensor unplugged"):
        write_nwb(ts_file(DaskDataIO(a, chunks=(500, 4))), tmp_path / "f.nwb", scheduler=client, shards="workers",
                  progress=False)
    assert nothing_left(tmp_path) == []
    assert not any(client.run(nwb_dask.hdf5.shards.open_parts).values())  # no handle left open on a worker


def _slow_marked(block, marks: str):
    """A block that takes 0.15 s, leaving a mark per block computed (the kill below waits for the write to be under way)."""
    time.sleep(0.15)
    if block.size:  # not dask's meta call
        Path(marks, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    return block


def _kill_one_worker_after_blocks(client, marks: Path, n: int = 4) -> threading.Thread:
    """SIGKILL one worker once ``n`` blocks are computed: the write is under way and both workers hold parts.

    (A fixed delay raced the write's setup on a loaded machine: the worker died
    before it held a part and was restarted, and nothing was tested.)
    """
    victim = sorted(client.run(os.getpid).values())[0]

    def kill():
        deadline = time.monotonic() + 120
        while len(os.listdir(marks)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


def test_killed_worker_its_parts_rewritten_on_a_live_worker(tmp_path, tmp_path_factory, monkeypatch):
    """kill -9 of a worker holding parts mid-write: its parts are written again from scratch, the values are right."""
    distributed = pytest.importorskip("distributed")
    retried = []
    real = nwb_dask.nwb.shards.ShardedWrite._retry

    def retry(self, todo, lost, *args):
        retried.append(sorted(p.label for p in todo if p.worker in lost))
        return real(self, todo, lost, *args)

    monkeypatch.setattr(nwb_dask.nwb.shards.ShardedWrite, "_retry", retry)
    x = values((120_000, 4), seed=5)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as cl:
        marks = tmp_path_factory.mktemp("marks")  # not in tmp_path: nothing_left lists that
        a = da.from_array(x, chunks=(5_000, 4)).map_blocks(_slow_marked, str(marks), dtype="i2")
        timer = _kill_one_worker_after_blocks(cl, marks)
        path = tmp_path / "k.nwb"
        with pytest.warns(nwb_dask.nwb.shards.PartRetryWarning,
                          match=r"k\.nwb: worker\(s\) tcp://[\d.:]+ lost while writing part files data\.\d\.h5.*"
                                r"written again from the start on live workers \(retry 1 of 2\)"):
            stats = write_nwb(ts_file(DaskDataIO(a, chunks=(2_500, 4))), path, scheduler=cl, shards=4, progress=False)
        timer.join()
        assert stats.logical_bytes == x.nbytes  # rewritten parts counted once
    assert len(retried) == 1 and retried[0], "no worker holding parts was lost: the test did not test anything"
    assert nothing_left(tmp_path) == ["k.nwb", "k.nwb.parts"]
    assert len(part_files(path)) == 4
    read_back_elsewhere(path, x, tmp_path)


def test_worker_lost_after_its_last_block_before_closing_its_parts_is_retried(tmp_path, monkeypatch):
    """Every block stored, then kill -9 of a part's worker before it closes the part: written again, right values."""
    distributed = pytest.importorskip("distributed")
    killed, retried = [], []
    real_close, real_retry = nwb_dask.nwb.shards.ShardedWrite._close, nwb_dask.nwb.shards.ShardedWrite._retry

    def close(self, pinned):
        if not killed:  # the first attempt's close: its blocks are all stored
            victim = sorted(w for w, paths in pinned.items() if paths)[0]
            pid = self._client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed.append(victim)
            deadline = time.monotonic() + 20
            while victim in self._client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.05)
        return real_close(self, pinned)

    def retry(self, todo, lost, closed, exc, attempt):
        retried.append((sorted(lost), exc))
        return real_retry(self, todo, lost, closed, exc, attempt)

    monkeypatch.setattr(nwb_dask.nwb.shards.ShardedWrite, "_close", close)
    monkeypatch.setattr(nwb_dask.nwb.shards.ShardedWrite, "_retry", retry)
    x = values((40_000, 4), seed=9)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as cl:
        path = tmp_path / "k.nwb"
        stats = write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=(5_000, 4)), chunks=(2_500, 4))), path,
                          scheduler=cl, shards=2, progress=False)
    assert killed and retried == [([killed[0]], None)], "the lost worker's parts were not written again"
    assert stats.logical_bytes == x.nbytes  # the rewritten part counted once
    assert nothing_left(tmp_path) == ["k.nwb", "k.nwb.parts"]
    assert len(part_files(path)) == 2
    read_back_elsewhere(path, x, tmp_path)


def test_killed_worker_without_retries_fails_cleanly_and_leaves_nothing(tmp_path, tmp_path_factory, monkeypatch):
    """No retries left: PartWorkerError naming the worker and its parts, nothing at the target."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(nwb_dask.nwb.shards, "PART_RETRIES", 0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as cl:
        marks = tmp_path_factory.mktemp("marks")
        a = da.ones((300_000, 4), "i2", chunks=(10_000, 4)).map_blocks(_slow_marked, str(marks), dtype="i2")
        timer = _kill_one_worker_after_blocks(cl, marks)
        t0 = time.monotonic()
        with pytest.raises(PartWorkerError, match=r"were lost while writing part files data\.\d\.h5 \(after 0 "
                                                  r"retries\).*nothing was left"):
            write_nwb(ts_file(DaskDataIO(a, chunks=(5_000, 4))), tmp_path / "k.nwb", scheduler=cl, shards="workers",
                      progress=False)
        timer.join()
        assert time.monotonic() - t0 < 30  # 15 blocks of 0.15 s per worker: it stopped, it did not finish
    assert nothing_left(tmp_path) == []


_SIGTERMED = textwrap.dedent(
    """
    import sys, time, dask.array as da
    import nwb_dask
    from test_any_shape import ts_file

    def slow(b):
        time.sleep(0.05)
        return b

    a = da.ones((400_000, 2), "i2", chunks=(2_000, 2)).map_blocks(slow, dtype="i2")
    print("start", flush=True)
    nwb_dask.write_nwb(ts_file(nwb_dask.DaskDataIO(a, chunks=(1_000, 2))), sys.argv[1], shards=3,
                       scheduler="threads", progress=False)
    """
)


def test_sigterm_mid_write_leaves_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERMED, str(tmp_path / "t.nwb")], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".parts") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # parts being written
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert nothing_left(tmp_path) == []


_CONSOLIDATE_SLOWLY = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import nwb_dask, nwb_dask.hdf5.shards as shards

    real = shards.copy_chunks_raw

    def slow(*args):
        Path(sys.argv[3]).touch()
        time.sleep(0.5)
        return real(*args)

    shards.copy_chunks_raw = slow
    nwb_dask.consolidate(sys.argv[1], sys.argv[2], scheduler="sync", progress=False)
    print("finished")
    """
)


def test_sigterm_mid_raw_consolidate_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x = values((6_000, 2))
    write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=1_000), chunks=(500, 2))), src / "r.nwb", shards=6,
              scheduler="sync", progress=False)
    out, marker = tmp_path / "one.nwb", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _CONSOLIDATE_SLOWLY, str(src / "r.nwb"), str(out), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert "finished" not in stdout, "consolidate ended before the signal: the test tested nothing"
    assert proc.returncode == 143, stderr[-2000:]
    assert nothing_left(tmp_path) == ["src", "started"]


def _sharded(path, x, shards=2):
    write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=500), chunks=(250, 2))), path, shards=shards,
              scheduler="sync", progress=False)


@pytest.mark.parametrize("fail_at", ["rename", "parts-fsync", "file-fsync"])
def test_overwrite_that_fails_keeps_the_old_file_readable(tmp_path, monkeypatch, fail_at):
    """Mode "w" over a sharded file: if the new file's rename fails (or Ctrl-C between the two renames), the old
    file keeps its own parts and reads its values; if the new file is already in place (a later fsync fails),
    it keeps its new parts."""
    import nwb_dask.atomic

    path = tmp_path / "x.nwb"
    old, new = values((3000, 2), seed=1), values((3000, 2), seed=2)
    _sharded(path, old)
    real_replace, real_fsync = os.replace, nwb_dask.atomic.fsync_dir
    if fail_at == "rename":
        def replace(a, b):
            if os.fspath(b) == os.fspath(path):
                raise KeyboardInterrupt
            return real_replace(a, b)
        monkeypatch.setattr(os, "replace", replace)
    else:
        calls = []

        def fsync_dir(where):  # the parts directory is renamed (and synced) first, then the file
            calls.append(where)
            if len(calls) == (1 if fail_at == "parts-fsync" else 2):
                raise OSError(5, "fsync failed")
            return real_fsync(where)
        monkeypatch.setattr(nwb_dask.atomic, "fsync_dir", fsync_dir)
    with pytest.raises((KeyboardInterrupt, OSError)):
        _sharded(path, new)
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(nwb_dask.atomic, "fsync_dir", real_fsync)
    expected = new if fail_at == "file-fsync" else old
    out = subprocess.run([sys.executable, "-c", f"import h5py; f = h5py.File({str(path)!r}); "
                          f"import numpy; numpy.save({str(tmp_path / 'got.npy')!r}, f[{DATA!r}][()])"],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), expected)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".npy")) == ["x.nwb", "x.nwb.parts"]


def test_percent_in_the_file_name(tmp_path):
    """HDF5 reads "%" in virtual-dataset source names like printf: the parts of "run_5%b.nwb" are found, and
    consolidate still copies their chunks raw."""
    path = tmp_path / "run_5%b.nwb"
    x = values((3000, 2))
    _sharded(path, x, shards=3)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DATA][()], x)
    assert nwb_dask.read_dataset(path, DATA).compute().tolist() == x.tolist()
    result = consolidate(path, tmp_path / "one%.nwb", scheduler="sync", progress=False)
    assert result.raw_chunks == 12 and result.verified
    with h5py.File(tmp_path / "one%.nwb", "r") as f:
        assert not f[DATA].is_virtual
        np.testing.assert_array_equal(f[DATA][()], x)


def test_a_sharded_file_without_its_parts_is_an_error_not_zeros(tmp_path, monkeypatch):
    """Moved alone, a sharded file's VDS would read as fill values (zeros) through HDF5: nwb_dask names the parts."""
    x = values((4_000, 4), seed=11)
    path = tmp_path / "a" / "k.nwb"
    path.parent.mkdir()
    write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=(1_000, 4)), chunks=(500, 4))), path, scheduler="threads",
              shards=2, progress=False)
    name = "acquisition/ts/data"
    assert_same(nwb_dask.read_dataset(path, name).compute(), x)
    alone = tmp_path / "b" / "k.nwb"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    monkeypatch.chdir(tmp_path)  # not the directory the parts are relative to
    with h5py.File(alone, "r") as f:
        assert not f[name][()].any()  # what HDF5 itself returns: fill values
    parts = "k.nwb.parts/acquisition/ts/data.0.h5, k.nwb.parts/acquisition/ts/data.1.h5"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{alone}:/{name} is a virtual dataset over files that "
                                                          f"are not there: {parts}")):
        nwb_dask.read_dataset(alone, name)
    with pytest.raises(FileNotFoundError, match="are not there"):
        nwb_dask.read_nwb(alone, min_bytes=0)  # every dataset a dask array (small ones stay h5py by default)
    shutil.copytree(parts_dir(path), parts_dir(alone))  # the parts back beside it: read as before
    assert_same(nwb_dask.read_dataset(alone, name).compute(), x)


def test_repack_and_convert_of_a_sharded_file_make_self_contained_outputs(tmp_path):
    """repack/convert rewrite a virtual dataset as a real one, with the codec asked for (it was kept virtual,
    naming its parts relative to the output, and read fill values anywhere else than beside them)."""
    x = values((6_000, 4), seed=12)
    src = tmp_path / "in" / "k.nwb"
    src.parent.mkdir()
    write_nwb(ts_file(DaskDataIO(da.from_array(x, chunks=(1_000, 4)), chunks=(500, 4))), src, scheduler="threads",
              shards=3, progress=False)
    out = tmp_path / "out" / "r.nwb"
    out.parent.mkdir()
    result = nwb_dask.repack(src, out, codec="zstd", min_bytes=0, scheduler="threads", progress=False)
    name = "/acquisition/ts/data"
    repacked = next(d for d in result.datasets if d.path == name)
    assert repacked.codec_in == "virtual" and repacked.codec_out.startswith("zstd")
    zarr_out = tmp_path / "out" / "r.nwb.zarr"
    conv = nwb_dask.convert(src, zarr_out, min_bytes=0, scheduler="threads", progress=False)
    assert name in conv.datasets
    shutil.rmtree(parts_dir(src))  # the outputs no longer need the input's parts
    with h5py.File(out, "r") as f:
        assert not f[name].is_virtual and "32015" in f[name]._filters
        assert_same(f[name][()], x)
    assert_same(nwb_dask.read_dataset(zarr_out, name).compute(), x)
    # the input without its parts: an error naming them, and nothing at the target
    with pytest.raises(FileNotFoundError, match="are not there: k.nwb.parts/acquisition/ts/data.0.h5"):
        nwb_dask.repack(src, tmp_path / "out" / "again.nwb", min_bytes=0, scheduler="threads", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.nwb", "r.nwb.zarr"]

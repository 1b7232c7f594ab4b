"""Writes from a Dask cluster (issue 19 item 1): the packed block representation, round trips, faults, memory, progress.

- an :class:`~nwb_dask.engine.EncodedBlock` travels from a worker with its
  chunks out of band (pickle 5, distributed's serialisation): the pickle
  stream holds none of their bytes, the received chunks are views of the
  received buffers, for no, one and many chunks and every built-in codec;
- element-by-element round trips through a ``LocalCluster`` of processes with
  hypothesis-chosen shapes, dask chunkings (irregular, zero-length blocks),
  dtypes and codecs, also from data persisted on the workers;
- a worker killed with SIGKILL mid-write: the write is retried and the file
  holds the values, or (no retries allowed) it fails with an error naming the
  dataset and nothing at the target path; a task that raises: the same;
- the client's window: raw bytes submitted and not yet stored never exceed
  ``max_inflight_bytes`` unless one block is alone, and the progress bar
  advances by bytes;
- the same-host handover (workers on the client's host put a block's chunks
  in a shared-memory file): taken on a LocalCluster, values equal, the
  per-write directory gone after success, a raising task, a killed worker
  and a cancel; a missing or foreign directory and a full tmpfs fall back
  to the network; directories of dead writers are removed.
"""

from __future__ import annotations

import mmap
import os
import pickle
import subprocess
import signal
import sys
import textwrap
import threading
import time

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_any_shape import CODECS, arrays, assert_same, make_codec

import nwb_dask
import nwb_dask.cluster
import nwb_dask.encoding as encoding
import nwb_dask.engine as engine
import nwb_dask.testing
import nwb_dask.hdf5.write as hdf5_write
from nwb_dask.engine import CLUSTER_BLOCKS_PER_WORKER, EncodedBlock, encode_task
from nwb_dask.hdf5.write import store_block, write_dask_array

distributed = pytest.importorskip("distributed")

CLUSTER = settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow,
                   HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def _shm_dirs() -> list:
    """This process's per-write shared-memory directories (none once a write has ended)."""
    return sorted(p for p in os.listdir(encoding.SHM_ROOT) if p.startswith(f"nwb_dask-{os.getpid()}-"))


@pytest.fixture(scope="module")
def client():
    """The module's one LocalCluster of 2 single-threaded worker processes (as the benchmark runs)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


# --------------------------------------------------------------------------- #
# the block on the wire                                                        #
# --------------------------------------------------------------------------- #
@st.composite
def encoded_blocks(draw):
    ndim = draw(st.integers(1, 4))
    n = draw(st.sampled_from([0, 1, draw(st.integers(2, 30))]))
    offsets = st.tuples(*[st.integers(0, 2**40)] * ndim)
    chunks = [(draw(offsets), draw(st.integers(0, 2**32 - 1)), draw(st.binary(min_size=0, max_size=300)))
              for _ in range(n)]
    selection = tuple(slice(0, draw(st.integers(0, 9))) for _ in range(ndim))
    return EncodedBlock(draw(st.integers(0, 5)), selection, draw(st.integers(0, 2**40)), chunks, n_chunks=n)


def _same_block(got: EncodedBlock, want: EncodedBlock):
    assert (got.key, got.selection, got.nbytes, got.n_chunks, got.stored) == (
        want.key, want.selection, want.nbytes, want.n_chunks, want.stored)
    assert [(o, m, bytes(d)) for o, m, d in got.chunks] == [(tuple(o), m, bytes(d)) for o, m, d in want.chunks]
    assert got.stored_bytes == want.stored_bytes == sum(len(d) for _, _, d in want.chunks)


@settings(max_examples=150, deadline=None)
@given(encoded_blocks())
def test_encoded_block_travels_out_of_band(block):
    """Pickle 5 with a buffer callback (what distributed does): each chunk a buffer, none of its bytes in the stream."""
    buffers = []
    stream = pickle.dumps(block, protocol=5, buffer_callback=buffers.append)
    chunks = [d for _, _, d in block.chunks]
    assert len(buffers) == len(chunks) + (1 if chunks else 0)  # every chunk, and the offset/mask table
    assert all(len(d) < 8 or d not in stream for d in chunks)  # no chunk's bytes were copied into the stream
    assert len(stream) < 400 + 40 * len(chunks)
    received = [bytearray(b.raw()) for b in buffers]  # what a socket read hands over
    back = pickle.loads(stream, buffers=received)
    _same_block(back, block)
    for (_, _, view), buf in zip(back.chunks, received[1:]):  # received[0]: the table
        assert isinstance(view, memoryview) and view.obj is buf  # a view of what was received: no copy
    _same_block(pickle.loads(pickle.dumps(block, protocol=4)), block)  # in band (ProcessPoolExecutor on 3.11)
    _same_block(pickle.loads(pickle.dumps(block, protocol=5)), block)  # protocol 5, no callback: in band too

    from distributed.protocol import deserialize, serialize

    header, frames = serialize(block)
    _same_block(deserialize(header, frames), block)
    assert sys.getsizeof(block) >= sum(len(d) for d in chunks)  # distributed accounts for the bytes it holds


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=arrays(dtypes=["u1", "i2", "f4", "i8", "?"], max_ndim=3, max_blocks=30), spec=st.sampled_from(CODECS),
       chunk_seed=st.integers(0, 2**16))
def test_every_codec_out_of_band_into_hdf5(tmp_path, data, spec, chunk_seed):
    """encode_task -> pickle 5 out of band -> store_block: what a cluster write does, for each dask block."""
    x, arr = data
    if x.size == 0:
        return  # no chunked HDF5 dataset (h5py's rule); empty blocks are covered by the cluster round trips
    c = make_codec(spec)
    rng = np.random.default_rng(chunk_seed)
    chunk_shape = tuple(int(rng.integers(1, n + 1)) for n in x.shape)
    job_path = tmp_path / f"p{chunk_seed}.h5"
    with h5py.File(job_path, "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=chunk_shape, **c.dataset_kwargs())
        job = hdf5_write.plan_write(arr, d, c)
        for task in job.tasks(0):
            result = encode_task(task.array.compute(), task.array.dtype, task)
            buffers = []
            result = pickle.loads(pickle.dumps(result, protocol=5, buffer_callback=buffers.append), buffers=buffers)
            assert result.raw is not None or all(isinstance(data, memoryview) for _, _, data in result.chunks)
            store_block(d, result.selection, result.chunks, result.raw)
    with h5py.File(job_path, "r") as f:
        assert_same(f["x"][...], x)


# --------------------------------------------------------------------------- #
# round trips through the cluster                                              #
# --------------------------------------------------------------------------- #
@CLUSTER
@given(data=arrays(dtypes=["u1", "i2", "u4", "f8", "?", "c8", ">i2"], max_ndim=3, max_blocks=24),
       spec=st.sampled_from(CODECS), persist=st.booleans())
def test_cluster_round_trip_any_shape(client, tmp_path, data, spec, persist):
    x, arr = data
    if persist:
        arr = client.persist(arr)
    path = tmp_path / "rt.nwb"
    as_nwb = x.ndim == 2 and x.size and x.dtype.kind in "iuf" and x.dtype.isnative  # an ElectricalSeries
    nwbfile = nwb_dask.testing.ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec=spec)) if as_nwb else None
    if nwbfile is None:  # any shape: a bare dataset through write_dask_array
        if x.size == 0:
            return
        c = make_codec(spec)
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", x.shape, x.dtype, chunks=tuple(max(1, n // 2) for n in x.shape),
                                 **c.dataset_kwargs())
            stats = write_dask_array(arr, d, scheduler=client, progress=False, block_bytes=max(64, x.nbytes // 3))
        with h5py.File(path, "r") as f:
            assert_same(f["x"][...], x, byte_order_free=True)
        assert stats.logical_bytes == x.nbytes
    else:
        nwb_dask.write_nwb(nwbfile, path, scheduler=client, progress=False)
        with h5py.File(path, "r") as f:
            assert_same(f["acquisition/ElectricalSeries/data"][...], x, byte_order_free=True)
    path.unlink()


def test_cluster_results_arrive_as_views(client, tmp_path, monkeypatch):
    """The writer receives each chunk as a view of the received buffer (sent out of band), and stores it."""
    seen = []
    real = hdf5_write.store_block

    def spy(dset, selection, chunks=(), raw=None):
        seen.append({type(data) for _, _, data in chunks})
        return real(dset, selection, chunks, raw)

    monkeypatch.setattr(hdf5_write, "store_block", spy)
    x = np.random.default_rng(7).integers(-999, 999, (4000, 6)).astype("i2")
    with h5py.File(tmp_path / "k.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(250, 6), **nwb_dask.codec("gzip").dataset_kwargs())
        write_dask_array(da.from_array(x, chunks=(1000, 6)), d, scheduler=client, progress=False)
    assert seen == [{memoryview}] * 4
    with h5py.File(tmp_path / "k.h5", "r") as f:
        assert_same(f["x"][...], x)


# --------------------------------------------------------------------------- #
# the window and the progress bar on the cluster                               #
# --------------------------------------------------------------------------- #
def _slow(block, delay=0.05):
    time.sleep(delay)
    return block


@pytest.mark.parametrize("budget_blocks", [1, 3, 10])
def test_cluster_window_stays_within_the_budget(client, tmp_path, budget_blocks):
    rows, n_blocks = 400, 14
    x = np.random.default_rng(budget_blocks).integers(0, 1000, (rows * n_blocks, 5)).astype("i4")
    block = rows * 5 * 4
    budget = budget_blocks * block
    lock = threading.Lock()
    state = {"bytes": 0, "tasks": 0, "peak_bytes": 0, "peak_tasks": 0}

    def submitted(task):
        with lock:
            state["bytes"] += task.nbytes
            state["tasks"] += 1
            state["peak_bytes"] = max(state["peak_bytes"], state["bytes"])
            state["peak_tasks"] = max(state["peak_tasks"], state["tasks"])

    arr = da.from_array(x, chunks=(rows, 5)).map_blocks(_slow, dtype=x.dtype)
    c = nwb_dask.codec("zstd")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(100, 5), **c.dataset_kwargs())
        tasks = hdf5_write.plan_write(arr, d, c, block_bytes=block).tasks(0)
        n = 0
        for done in engine.run_block_tasks(tasks, max_inflight_bytes=budget, scheduler=client, on_submit=submitted):
            assert isinstance(done, EncodedBlock)
            store_block(d, done.selection, done.chunks)
            n += 1
            with lock:
                state["bytes"] -= done.nbytes
                state["tasks"] -= 1
    assert n == n_blocks
    assert state["peak_bytes"] <= max(budget, block)  # one block always fits, never more than the budget
    assert state["peak_tasks"] <= min(budget_blocks, CLUSTER_BLOCKS_PER_WORKER * 2)  # 2 workers
    if budget_blocks > 1:
        assert state["peak_tasks"] > 1  # control: the window did fill up to the budget
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert_same(f["x"][...], x)


def test_cluster_progress_bar_counts_the_bytes(client, tmp_path, monkeypatch):
    updates, totals = [], []

    class Bar:
        def __init__(self, total, enabled, desc=""):
            totals.append(total)

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(engine, "progress_bar", Bar)
    x = np.arange(3000 * 4, dtype="f4").reshape(3000, 4)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(128, 4), **nwb_dask.codec("gzip").dataset_kwargs())
        stats = write_dask_array(da.from_array(x, chunks=(512, 4)), d, scheduler=client, progress=True)
    assert totals == [x.nbytes] and sum(updates) == x.nbytes == stats.logical_bytes
    assert sorted(updates) == sorted([512 * 16] * 5 + [440 * 16])  # one update per block, by its bytes


# --------------------------------------------------------------------------- #
# faults                                                                       #
# --------------------------------------------------------------------------- #
class _KillAfter:
    """Wraps the HDF5 sink: after ``n`` stored blocks, SIGKILL one worker process (once)."""

    def __init__(self, monkeypatch, client, n=2):
        self.pids = list(client.run(os.getpid).values())
        self.killed = None
        self.stored = 0
        real = hdf5_write.store_block

        def store(*args, **kwargs):
            out = real(*args, **kwargs)
            self.stored += 1
            if self.stored == n and self.killed is None:
                self.killed = self.pids[0]
                os.kill(self.killed, signal.SIGKILL)
            return out

        monkeypatch.setattr(hdf5_write, "store_block", store)


def _ephys(n_blocks=16, rows=2000, delay=0.15):
    x = np.random.default_rng(11).integers(-3000, 3000, (n_blocks * rows, 8)).astype("i2")
    return x, da.from_array(x, chunks=(rows, 8)).map_blocks(_slow, delay, dtype=x.dtype)


def _ephys_file(arr, spec):
    """An NWBFile whose series is written one dask block per task (HDF5 chunks of half a block)."""
    rows = arr.chunks[0][0]
    return nwb_dask.testing.ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec=spec, chunks=(rows // 2, arr.shape[1]),
                                                              block_bytes=rows * arr.shape[1] * arr.dtype.itemsize))


@pytest.mark.parametrize("persist", [False, True])
def test_worker_killed_mid_write_is_retried(client, tmp_path, monkeypatch, persist):
    x, arr = _ephys()
    if persist:  # the killed worker's share of the data is recomputed from its graph
        arr = client.persist(arr)
        client.gather(distributed.futures_of(arr))  # persisted (distributed.wait needs a default client)
    kill = _KillAfter(monkeypatch, client)
    nwbfile = _ephys_file(arr, "gzip")
    nwb_dask.write_nwb(nwbfile, tmp_path / "retry.nwb", scheduler=client, progress=False)
    assert kill.killed is not None, "no worker was killed: the test did not test anything"
    with h5py.File(tmp_path / "retry.nwb", "r") as f:
        assert_same(f["acquisition/ElectricalSeries/data"][...], x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retry.nwb"]  # no temporary file left
    assert _shm_dirs() == []  # the per-write shared-memory directory is gone
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def test_worker_killed_without_retries_fails_cleanly(tmp_path, monkeypatch):
    from distributed.scheduler import KilledWorker

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster, set_as_default=False) as c:
        x, arr = _ephys(delay=0.4)
        kill = _KillAfter(monkeypatch, c, n=1)
        nwbfile = _ephys_file(arr, "gzip")
        try:
            nwb_dask.write_nwb(nwbfile, tmp_path / "lost.nwb", scheduler=c, progress=False)
        except KilledWorker as exc:  # a block was running on the killed worker: no retry allowed
            assert "acquisition/ElectricalSeries/data" in " ".join(getattr(exc, "__notes__", []))
            assert list(tmp_path.iterdir()) == []  # nothing at the target, no temporary file
            assert _shm_dirs() == []  # the per-write shared-memory directory is gone
        else:  # the killed worker held no running block: its queued ones ran elsewhere
            with h5py.File(tmp_path / "lost.nwb", "r") as f:
                assert_same(f["acquisition/ElectricalSeries/data"][...], x)
        assert kill.killed is not None
    assert _shm_dirs() == []


def _raise_on_third(block, block_info=None):
    if block_info[0]["chunk-location"][0] == 3:
        raise ZeroDivisionError("block 3 of the source is broken")
    return block


def test_task_raising_on_a_worker_fails_cleanly(client, tmp_path):
    x, arr = _ephys(n_blocks=8, delay=0.05)
    arr = arr.map_blocks(_raise_on_third, dtype=x.dtype)
    nwbfile = _ephys_file(arr, "zstd")
    with pytest.raises(ZeroDivisionError, match="block 3 of the source is broken") as err:
        nwb_dask.write_nwb(nwbfile, tmp_path / "bad.nwb", scheduler=client, progress=False)
    assert "acquisition/ElectricalSeries/data" in " ".join(getattr(err.value, "__notes__", []))
    assert list(tmp_path.iterdir()) == []
    assert _shm_dirs() == []  # the per-write shared-memory directory is gone
    # the stopped write left nothing running or held on the cluster
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        time.sleep(0.05)
    assert not any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values())
    assert not [k for k in client.futures if str(k).startswith("encode_task")]


def test_cancel_event_stops_a_cluster_write(client, tmp_path):
    """The cancel event ends the engine's generator: what was submitted is cancelled or waited for, nothing runs on."""
    x, arr = _ephys(n_blocks=20, delay=0.2)
    cancel = threading.Event()
    c = nwb_dask.codec("zstd")
    got = []
    with h5py.File(tmp_path / "c.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(1000, 8), **c.dataset_kwargs())
        tasks = hdf5_write.plan_write(arr, d, c, block_bytes=2000 * 8 * 2).tasks(0)
        for done in engine.run_block_tasks(tasks, scheduler=client, cancel=cancel):
            got.append(done)
            cancel.set()
    assert 1 <= len(got) <= CLUSTER_BLOCKS_PER_WORKER * 2 < 20

    def steps_running(dask_worker):  # the steps (which may store); a block's inputs may still finish, unused
        return [str(ts.key) for ts in dask_worker.state.executing if str(ts.key).startswith("encode_task")]

    assert not any(client.run(steps_running).values())
    assert not [k for k in client.futures if str(k).startswith("encode_task")]  # nothing held for us any more
    assert _shm_dirs() == []  # the per-write shared-memory directory is gone


# --------------------------------------------------------------------------- #
# the same-host handover through shared memory                                 #
# --------------------------------------------------------------------------- #
def _spy_store(monkeypatch):
    """Record, per stored block, the kinds of buffers its chunks view and the shared-memory directories present."""
    seen = []
    real = hdf5_write.store_block

    def spy(dset, selection, chunks=(), raw=None):
        dirs = {d: [n for n in os.listdir(os.path.join(encoding.SHM_ROOT, d)) if n != ".lock"] for d in _shm_dirs()}
        seen.append(({type(memoryview(data).obj) for _, _, data in chunks}, dirs))
        return real(dset, selection, chunks, raw)

    monkeypatch.setattr(hdf5_write, "store_block", spy)
    return seen


def _gzip_write(client, path, x, rows=1000):
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(rows // 4, x.shape[1]),
                             **nwb_dask.codec("gzip").dataset_kwargs())
        write_dask_array(da.from_array(x, chunks=(rows, x.shape[1])), d, scheduler=client, progress=False)
    with h5py.File(path, "r") as f:
        assert_same(f["x"][...], x)


@pytest.mark.parametrize("mode, kind", [("on", mmap.mmap), ("off", np.ndarray)])
def test_local_cluster_hands_chunks_over_in_shared_memory(client, tmp_path, monkeypatch, mode, kind):
    """On the client's host, chunks are views of a mapped file of the per-write directory (off: distributed's frames)."""
    monkeypatch.setenv("NWB_DASK_SHM", mode)
    seen = _spy_store(monkeypatch)
    x = np.random.default_rng(3).integers(-999, 999, (4000, 6)).astype("i2")
    _gzip_write(client, tmp_path / "s.h5", x)
    assert [kinds for kinds, _ in seen] == [{kind}] * 4  # on: the shm file; off: distributed's received frames (numpy)
    if mode != "off":
        assert all(len(dirs) == 1 for _, dirs in seen)  # one directory for the write, there while it ran
    assert _shm_dirs() == []


def test_shm_mode_is_checked(client, monkeypatch):
    monkeypatch.setenv("NWB_DASK_SHM", "tmpfs")
    with pytest.raises(ValueError, match="NWB_DASK_SHM='tmpfs': use on or off"):
        list(engine.run_block_tasks([], scheduler=client))


@CLUSTER
@given(data=arrays(dtypes=["u1", "i2", "f8", "?"], max_ndim=3, max_blocks=12), spec=st.sampled_from(CODECS))
def test_shared_memory_round_trip_any_shape(client, tmp_path, data, spec):
    x, arr = data
    if x.size == 0:
        return
    c = make_codec(spec)
    path = tmp_path / "shm.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NWB_DASK_SHM", "on")
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", x.shape, x.dtype, chunks=tuple(max(1, n // 2) for n in x.shape),
                                 **c.dataset_kwargs())
            write_dask_array(arr, d, scheduler=client, progress=False, block_bytes=max(64, x.nbytes // 3))
    with h5py.File(path, "r") as f:
        assert_same(f["x"][...], x)
    assert _shm_dirs() == []
    path.unlink()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=encoded_blocks())
def test_spill_and_load_round_trip(tmp_path, block):
    """spill_to_shared -> load_shared gives the same chunks; the file is unlinked once loaded."""
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        spilled = encoding.spill_to_shared(block, shm)
        if not block.chunks:
            assert spilled is block  # nothing to hand over
            return
        assert spilled.chunks == [] and spilled.shared is not None and os.path.dirname(spilled.shared[0]) == shm.directory
        assert spilled.stored_bytes == block.stored_bytes
        spilled = pickle.loads(pickle.dumps(spilled, protocol=5))  # what travels: the table, no chunk bytes
        back = encoding.load_shared(spilled)
        assert all(isinstance(memoryview(d).obj, mmap.mmap) for _, _, d in back.chunks if len(d))
        _same_block(back, block)
        assert os.listdir(shm.directory) == [".lock"]  # the loaded file is unlinked; the writer's lock stays
    assert os.listdir(tmp_path) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(encoded_blocks(), min_size=2, max_size=5))
def test_recycled_files_hand_over_every_block_exactly(tmp_path, blocks):
    """A stored block's file goes back to the pool and the next block is written into it (longer or shorter): same chunks."""
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        recycled = 0
        for block in blocks:
            free = [n for n in os.listdir(shm.directory) if n.startswith("free-")]
            spilled = encoding.spill_to_shared(block, shm)
            if not block.chunks:
                continue
            recycled += bool(free) and not [n for n in os.listdir(shm.directory) if n.startswith("free-")]
            back, lease = encoding.load_shared(pickle.loads(pickle.dumps(spilled, protocol=5)), lease=True)
            _same_block(back, block)
            kept = back.chunks[0][2]
            assert lease.release() is True and lease.release() is False  # given back once
            with pytest.raises(ValueError):  # a view kept past the store fails loudly, never reads reused pages
                bytes(kept)
            assert sorted(n.startswith("free-") for n in os.listdir(shm.directory)) == [False, True]  # .lock + 1
        assert recycled == max(0, sum(1 for b in blocks if b.chunks) - 1)
    assert os.listdir(tmp_path) == []


def test_a_lease_whose_view_is_still_exported_unlinks_its_file(tmp_path):
    """numpy holds a chunk's buffer: the file is unlinked, not reused, and numpy's array keeps its bytes."""
    block = EncodedBlock(0, (slice(0, 4),), 8, [((0,), 0, b"abcd"), ((2,), 1, b"ef")], n_chunks=2)
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        back, lease = encoding.load_shared(encoding.spill_to_shared(block, shm), lease=True)
        held = np.frombuffer(back.chunks[0][2], np.uint8)
        assert lease.release() is False
        assert os.listdir(shm.directory) == [".lock"]
        block2 = EncodedBlock(1, (slice(0, 4),), 8, [((0,), 0, b"wxyz")], n_chunks=1)
        encoding.load_shared(encoding.spill_to_shared(block2, shm))
        assert held.tobytes() == b"abcd"


def test_cluster_write_reuses_its_shared_files(client, tmp_path, monkeypatch):
    """On a LocalCluster most blocks go into recycled files; values equal; the directory is gone after."""
    def claims(dask_worker=None):
        import nwb_dask.encoding as enc
        return getattr(enc, "_test_claims", [0, 0])

    def patch():
        import os as os_
        import nwb_dask.encoding as enc
        if getattr(enc, "_test_real_claim", None) is None:
            enc._test_real_claim = enc._claim_file
        enc._test_claims = [0, 0]

        def claim(d, p):
            fd = enc._test_real_claim(d, p)
            enc._test_claims[os_.fstat(fd).st_size > 0] += 1  # a recycled file holds an earlier block's bytes
            return fd
        enc._claim_file = claim

    def unpatch():
        import nwb_dask.encoding as enc
        enc._claim_file = enc._test_real_claim

    client.run(patch)
    try:
        x, arr = _ephys(n_blocks=12)
        arr = client.persist(arr)
        path = tmp_path / "r.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", x.shape, x.dtype, chunks=(arr.chunks[0][0] // 2, x.shape[1]),
                                 **nwb_dask.codec("gzip").dataset_kwargs())
            write_dask_array(arr, d, scheduler=client, progress=False)
        got = [sum(c) for c in zip(*client.run(claims).values())]
    finally:
        client.run(unpatch)
    with h5py.File(path, "r") as f:
        assert_same(f["x"][...], x)
    assert sum(got) == 12 and got[1] >= 4, got  # [new files, recycled]: at most 6 in flight need a new file
    assert _shm_dirs() == []


def test_missing_or_foreign_directory_stays_on_the_network(tmp_path):
    block = EncodedBlock(0, (slice(0, 4),), 8, [((0,), 0, b"abcd"), ((2,), 1, b"ef")], n_chunks=2)
    host = encoding.host_identity()
    assert encoding.spill_to_shared(block, encoding.SharedBlocks(str(tmp_path / "gone"), host)) is block
    assert encoding.spill_to_shared(block, encoding.SharedBlocks(str(tmp_path), ("elsewhere", host[1]))) is block
    assert encoding.spill_to_shared(block, encoding.SharedBlocks(str(tmp_path), (host[0], "another-boot"))) is block
    assert os.listdir(tmp_path) == []


def test_foreign_host_on_the_cluster_falls_back_to_the_network(client, tmp_path, monkeypatch):
    """The client's identity differs from the workers' (another host): results come over TCP, values equal."""
    monkeypatch.setattr(encoding, "host_identity", lambda: ("another-host", "another-boot"))
    seen = _spy_store(monkeypatch)
    _gzip_write(client, tmp_path / "f.h5", np.arange(4000 * 6, dtype="i2").reshape(4000, 6))
    assert [kinds for kinds, _ in seen] == [{np.ndarray}] * 4
    assert _shm_dirs() == []


def test_missing_directory_on_the_cluster_falls_back_to_the_network(client, tmp_path, monkeypatch):
    """The directory named in the task does not exist where the worker runs: results come over TCP."""
    import contextlib

    @contextlib.contextmanager
    def elsewhere(enabled=True, root=encoding.SHM_ROOT):
        yield encoding.SharedBlocks(os.path.join(root, "nwb_dask-0-not-made"), encoding.host_identity())

    monkeypatch.setattr(nwb_dask.cluster, "shared_blocks", elsewhere)
    seen = _spy_store(monkeypatch)
    _gzip_write(client, tmp_path / "m.h5", np.arange(4000 * 6, dtype="i2").reshape(4000, 6))
    assert [kinds for kinds, _ in seen] == [{np.ndarray}] * 4
    assert not os.path.exists(os.path.join(encoding.SHM_ROOT, "nwb_dask-0-not-made"))


def _full_tmpfs():
    """In a worker: writing a shared-memory file writes a few bytes, then fails as a full tmpfs does."""
    import errno

    def write_all(fd, buffers):
        os.write(fd, b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    encoding._write_all, encoding._real_write_all = write_all, encoding._write_all


def _tmpfs_back():
    encoding._write_all = encoding._real_write_all


def test_full_tmpfs_falls_back_to_the_network(client, tmp_path, monkeypatch):
    """ENOSPC writing the shm file: the partial file is removed and the block's bytes travel over TCP."""
    seen = _spy_store(monkeypatch)
    client.run(_full_tmpfs)
    try:
        _gzip_write(client, tmp_path / "e.h5", np.arange(4000 * 6, dtype="i2").reshape(4000, 6))
    finally:
        client.run(_tmpfs_back)
    assert [kinds for kinds, _ in seen] == [{np.ndarray}] * 4
    assert all(len(dirs) == 1 for _, dirs in seen)  # the directory was there, the files could not be written
    # Each partial file was removed before its block was returned.  Only the last store sees every block's
    # write attempt over: at an earlier one, another worker may be between its half write and its unlink.
    assert all(files == [] for files in seen[-1][1].values())
    assert _shm_dirs() == []


def test_directories_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"nwb_dask-{dead.pid}-0123456789abcdef"
    stale.mkdir()
    (stale / "half-written").write_bytes(b"x" * 100)
    alive = tmp_path / f"nwb_dask-{os.getpid()}-fedcba9876543210"  # a live writer's (this process)
    alive.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        assert shm is not None and os.path.isdir(shm.directory)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name,
                                                                       os.path.basename(shm.directory)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_no_tmpfs_or_disabled_yields_none(tmp_path):
    with encoding.shared_blocks(root=str(tmp_path / "absent")) as shm:
        assert shm is None
    with encoding.shared_blocks(enabled=False, root=str(tmp_path)) as shm:
        assert shm is None
    assert os.listdir(tmp_path) == []


def test_a_vanished_shm_file_is_an_error_naming_it(tmp_path):
    block = EncodedBlock(3, (slice(0, 4),), 8, [((0,), 0, b"abcd")], n_chunks=1)
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        spilled = encoding.spill_to_shared(block, shm)
        os.unlink(spilled.shared[0])
        with pytest.raises(OSError, match=f"block .* of dataset key 3 are gone from {spilled.shared[0]}"):
            encoding.load_shared(spilled)


def test_ctrl_c_while_storing_removes_the_directory(client, tmp_path, monkeypatch):
    """KeyboardInterrupt in the caller's loop (Ctrl-C): the write stops and its shm directory is removed."""
    real = hdf5_write.store_block
    during = []

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        during.append(_shm_dirs())
        raise KeyboardInterrupt

    monkeypatch.setattr(hdf5_write, "store_block", interrupted)
    x, arr = _ephys(n_blocks=8, delay=0.05)
    with h5py.File(tmp_path / "i.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(1000, 8), **nwb_dask.codec("zstd").dataset_kwargs())
        with pytest.raises(KeyboardInterrupt):
            write_dask_array(arr, d, scheduler=client, progress=False)
    assert len(during) == 1 and len(during[0]) == 1  # the write had its directory
    assert _shm_dirs() == []


def test_a_live_writer_of_another_pid_namespace_is_never_swept(tmp_path):
    """A directory whose pid is not alive *here* but whose writer holds its lock (another container sharing
    /dev/shm) stays; the same directory unlocked is removed (its writer died, whatever its pid says)."""

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign = tmp_path / f"nwb_dask-{dead.pid}-00112233445566aa"
    foreign.mkdir()
    (foreign / "block").write_bytes(b"x" * 100)
    lock = os.open(foreign / ".lock", os.O_CREAT | os.O_RDWR)
    # the other writer: a separate process holding the lock, as across a pid namespace
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(foreign / '.lock')!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with encoding.shared_blocks(root=str(tmp_path)) as shm:
            assert shm is not None
            assert (foreign / "block").exists(), "a live writer's directory was removed"
            mine = shm.directory
            assert os.path.exists(os.path.join(mine, ".lock"))
        assert not os.path.exists(mine)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    os.close(lock)
    # the holder is gone (as a SIGKILLed writer): its lock went with it, and the next write sweeps the directory
    with encoding.shared_blocks(root=str(tmp_path)) as shm:
        assert shm is not None
    assert not foreign.exists()
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# batches: persisted chunks of one worker in one task (nwb_dask.cluster)      #
# --------------------------------------------------------------------------- #
class _FakeChunk:
    def __init__(self, key):
        self.key = key


class _FakeTask:
    def __init__(self, i, nbytes, holders, pinned):
        self.i, self.nbytes, self.holders, self.worker = i, nbytes, holders, pinned
        self.array = None if holders is None else ("persisted", i)


class _WhoHas:
    def __init__(self):
        self.calls = []

    def who_has(self, futures):
        self.calls.append(len(futures))
        return {f.key: list(f.key[1]) for f in futures}


@st.composite
def _task_streams(draw):
    n = draw(st.integers(0, 40))
    items, i = [], 0
    for _ in range(n):
        if draw(st.integers(0, 9)) == 0:
            items.append(None)  # the source waits for a result
            continue
        kind = draw(st.sampled_from(["w0", "w1", "w2", "both", "none", "graph", "pinned"]))
        holders = {"w0": ("w0",), "w1": ("w1",), "w2": ("w2",), "both": ("w0", "w1"), "none": ()}.get(kind)
        if kind == "graph":
            holders = None
        items.append(_FakeTask(i, draw(st.integers(1, 50)), holders, "w0" if kind == "pinned" else None))
        i += 1
    return items


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=_task_streams(), max_bytes=st.integers(1, 120), lookahead=st.integers(1, 12))
def test_batches_group_only_one_workers_chunks_and_lose_nothing(monkeypatch, stream, max_bytes, lookahead):
    """Every task comes out once, before the same pause; a batch is >= 2 tasks of one holder, <= max_bytes."""
    import nwb_dask.cluster as cluster

    def chunk(array):
        return None if array is None else _FakeChunk(("k", stream_by_i[array[1]].holders, array[1]))

    stream_by_i = {t.i: t for t in stream if t is not None}
    monkeypatch.setattr(cluster, "persisted_chunk", chunk)  # the same for every example
    fake = _WhoHas()
    out = list(cluster.batched(fake, iter(stream), max_bytes, lookahead=lookahead))

    def segments(items, unpack):
        segs = [[]]
        for item in items:
            if item is None:
                segs.append([])
            else:
                segs[-1].extend(unpack(item))
        return [sorted(t.i for t in s) for s in segs]

    unpack = lambda item: item.tasks if isinstance(item, cluster.Batch) else [item]  # noqa: E731
    got, want = segments(out, unpack), segments(stream, lambda t: [t])
    assert [g for g in got if g] == [w for w in want if w]  # every task once, none moved across a pause
    assert out.count(None) <= stream.count(None)
    for item in out:
        if isinstance(item, cluster.Batch):
            assert len(item.tasks) >= 2 and item.nbytes <= max_bytes
            assert all(t.holders == (item.worker,) and t.worker is None for t in item.tasks)
            assert [c.key[2] for c in item.chunks] == [t.i for t in item.tasks]
            assert [t.i for t in item.tasks] == sorted(t.i for t in item.tasks)  # a worker's in order
    assert all(n <= lookahead for n in fake.calls)  # one who_has per look, at most lookahead chunks


def _spy_batches(monkeypatch) -> list:
    """What nwb_dask.cluster.batched hands the window, recorded as it goes."""
    import nwb_dask.cluster as cluster

    seen: list = []
    real = cluster.batched

    def spy(*args, **kwargs):
        for item in real(*args, **kwargs):
            seen.append(item)
            yield item

    monkeypatch.setattr(cluster, "batched", spy)
    return seen


def test_persisted_write_goes_in_batches_where_the_chunks_are(client, tmp_path, monkeypatch):
    """Persisted chunks: fewer tasks than blocks, each on the worker holding its chunks, no transfers; values equal."""
    import nwb_dask.cluster as cluster

    seen = _spy_batches(monkeypatch)
    x = np.random.default_rng(3).integers(-2000, 2000, (24 * 1000, 6)).astype("i2")
    arr = client.persist(da.from_array(x, chunks=(1000, 6)))
    client.gather(distributed.futures_of(arr))  # persisted (wait needs a default client)
    before = sum(client.run(lambda dask_worker: dask_worker.state.transfer_incoming_count_total).values())
    path = tmp_path / "b.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(500, 6), **nwb_dask.codec("gzip").dataset_kwargs())
        stats = write_dask_array(arr, d, scheduler=client, progress=False, max_inflight_bytes=8 * 12_000)
    after = sum(client.run(lambda dask_worker: dask_worker.state.transfer_incoming_count_total).values())
    batches = [b for b in seen if isinstance(b, cluster.Batch)]
    assert batches and len(seen) < 24 and sum(len(b.tasks) for b in batches) + len(seen) - len(batches) == 24
    assert all(b.nbytes <= cluster.batch_bytes(8 * 12_000, 2) for b in batches)  # 2 per worker fit the window
    assert after == before  # no block travelled between workers
    assert stats.logical_bytes == x.nbytes
    with h5py.File(path, "r") as f:
        assert_same(f["x"][...], x)
    assert _shm_dirs() == []


def test_a_failing_block_inside_a_batch_names_that_block(client, tmp_path, monkeypatch):
    """One persisted chunk computes values its dtype cannot hold: the error names the block; nothing else is kept."""
    import nwb_dask.cluster as cluster

    seen = _spy_batches(monkeypatch)
    x = np.zeros((8 * 500, 3), "i4")
    x[2600, 1] = 2**20  # block 5 of a dataset declared int16

    arr = client.persist(da.from_array(x, chunks=(500, 3)).map_blocks(lambda b: b, dtype="i2"))
    client.gather(distributed.futures_of(arr))  # persisted (wait needs a default client)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("x", x.shape, "i2", chunks=(250, 3), **nwb_dask.codec("gzip").dataset_kwargs())
        with pytest.raises(nwb_dask.blocks.BlockDtypeError,
                           match=r"dataset '/x' block \(5, 0\) at \[2500:3000, 0:3\].*1048576 at \[2600, 1\]"):
            write_dask_array(arr, d, scheduler=client, progress=False)
    assert any(isinstance(b, cluster.Batch) for b in seen), "no batch was formed: the test tested nothing"
    assert _shm_dirs() == []


def test_a_caller_that_keeps_every_block_gets_valid_chunks_on_a_cluster(client, tmp_path):
    """run_block_tasks without transient=True (list() of the results): no file is recycled under a kept block."""
    x = np.random.default_rng(8).integers(-999, 999, (12 * 800, 5)).astype("i2")
    arr = client.persist(da.from_array(x, chunks=(800, 5)))
    client.gather(distributed.futures_of(arr))
    c = nwb_dask.codec("gzip")
    with h5py.File(tmp_path / "k.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(400, 5), **c.dataset_kwargs())
        kept = list(engine.run_block_tasks(hdf5_write.plan_write(arr, d, c).tasks(0), scheduler=client))
        assert any(isinstance(memoryview(ch[2]).obj, mmap.mmap) for b in kept for ch in b.chunks)  # the handover ran
        for done in kept:  # stored only now, after every block arrived
            store_block(d, done.selection, done.chunks)
    with h5py.File(tmp_path / "k.h5", "r") as f:
        assert_same(f["x"][...], x)
    assert _shm_dirs() == []

"""The one write engine (nwb_dask.engine): its window, its progress bar, cancellation, and every writer through it.

- the window: raw bytes in flight never exceed ``max_inflight_bytes`` (or one
  task is alone in flight), never more than BLOCKS_PER_WORKER per worker
  (hypothesis over block sizes, counts and budgets), and what comes back is
  the data, element by element, read back with plain h5py;
- one progress bar whose total is the bytes written and whose updates add
  up to it (HDF5, Zarr, the DataChunkIterator queue);
- a failing task cancels the rest: when the error reaches the caller no task
  is running and none starts afterwards (engine, queue, Zarr);
- a ``cancel`` event stops the engine cleanly; misuse is a clear error.
"""

from __future__ import annotations

import threading
import time

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from hdmf.data_utils import DataChunk, DataChunkIterator
from hypothesis import HealthCheck, given, settings, strategies as st

import nwb_dask.engine as engine
import nwb_dask.zarr.sink as sink_module
from nwb_dask.codecs import codec, numcodecs_pipeline
from nwb_dask.engine import BLOCKS_PER_WORKER, BlockTask, CallTask, EncodedBlock, interleave, run_block_tasks
from nwb_dask.hdf5.write import store_block, write_dask_array
from nwb_dask.nwb.queue import drain_iterators
from nwb_dask.zarr.sink import store_arrays


class _Counter:
    """Tasks running now, started in all, and the most at once (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = self.started = self.peak = 0

    def enter(self):
        with self.lock:
            self.running += 1
            self.started += 1
            self.peak = max(self.peak, self.running)

    def leave(self):
        with self.lock:
            self.running -= 1


def _tasks(x: np.ndarray, rows: list[int], chunk_rows: int, c, key=0, delay=0.0, counter=None, fail_at=None):
    """BlockTasks over ``x`` in blocks of the given row counts (multiples of ``chunk_rows``, the last may be short)."""
    start = 0
    for i, n in enumerate(rows):
        sel = (slice(start, start + n), slice(0, x.shape[1]))

        def compute(block, i=i):
            if counter is not None:
                counter.enter()
            try:
                time.sleep(delay)
                if fail_at is not None and i == fail_at:
                    raise RuntimeError(f"block {i} failed")
                return block
            finally:
                if counter is not None:
                    counter.leave()

        arr = da.from_array(x[sel], chunks=x[sel].shape).map_blocks(compute, dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
        yield BlockTask(key, sel, arr, (chunk_rows, x.shape[1]), c, 0, name="/x", index=(i, 0))
        start += n


@st.composite
def _plans(draw):
    chunk_rows = draw(st.integers(1, 8))
    blocks = draw(st.lists(st.integers(1, 6), min_size=1, max_size=12))  # in chunks
    rows = [b * chunk_rows for b in blocks]
    if len(rows) > 1:  # a short edge block (the dataset stays at least one chunk long: h5py's rule)
        rows[-1] -= draw(st.integers(0, chunk_rows - 1))
    cols = draw(st.integers(1, 5))
    budget = draw(st.integers(1, max(rows) * cols * 2 * 3))
    workers = draw(st.integers(1, 3))
    return chunk_rows, rows, cols, budget, workers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=_plans(), seed=st.integers(0, 2**16))
def test_window_never_exceeds_the_budget(tmp_path, plan, seed):
    chunk_rows, rows, cols, budget, workers = plan
    x = np.random.default_rng(seed).integers(-500, 500, (sum(rows), cols)).astype("int16")
    c = codec("zstd")
    lock = threading.Lock()
    state = {"bytes": 0, "tasks": 0, "peak_bytes": 0, "peak_tasks": 0, "over": []}

    def submitted(task):
        with lock:
            state["bytes"] += task.nbytes
            state["tasks"] += 1
            state["peak_tasks"] = max(state["peak_tasks"], state["tasks"])
            if state["bytes"] > budget and state["tasks"] > 1:
                state["over"].append((state["bytes"], state["tasks"]))

    path = tmp_path / f"w{seed}.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(chunk_rows, cols), **c.dataset_kwargs())
        seen = []
        for done in run_block_tasks(_tasks(x, rows, chunk_rows, c), max_inflight_bytes=budget, scheduler="threads",
                                    workers=workers, on_submit=submitted):
            seen.append(done.selection[0].start)
            assert done.nbytes == (done.selection[0].stop - done.selection[0].start) * cols * 2
            store_block(d, done.selection, done.chunks)
            with lock:
                state["bytes"] -= done.nbytes
                state["tasks"] -= 1
    assert state["over"] == []  # never over the budget unless one task is alone in flight
    assert state["peak_tasks"] <= BLOCKS_PER_WORKER * workers
    assert sorted(seen) == [sum(rows[:i]) for i in range(len(rows))]  # every block once
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], x)


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_a_failing_task_leaves_no_task_running(scheduler):
    counter = _Counter()
    x = np.arange(40 * 3, dtype="int32").reshape(40, 3)
    tasks = _tasks(x, [4] * 10, 2, codec("gzip"), delay=0.1, counter=counter, fail_at=3)
    with pytest.raises(RuntimeError, match="block 3 failed"):
        for _ in run_block_tasks(tasks, scheduler=scheduler, workers=2):
            pass
    assert counter.running == 0  # the tasks already running ended before the error reached us
    started = counter.started
    time.sleep(0.4)
    assert counter.started == started < 10  # nothing started afterwards, and not every block was computed
    assert not [t for t in threading.enumerate() if t.name.startswith("nwb_dask-encode")]


def test_cancel_event_stops_the_engine():
    counter = _Counter()
    cancel = threading.Event()
    x = np.ones((80, 2), dtype="uint8")
    got = []
    for done in run_block_tasks(_tasks(x, [4] * 20, 4, codec("zstd"), delay=0.05, counter=counter),
                                scheduler="threads", workers=2, cancel=cancel):
        got.append(done)
        cancel.set()
    assert 1 <= len(got) <= 2 * BLOCKS_PER_WORKER and counter.running == 0
    started = counter.started
    time.sleep(0.2)
    assert counter.started == started < 20


class _Bar:
    """Records what the engine's one bar was told."""

    def __init__(self, bars, total, enabled, desc):
        self.total, self.enabled, self.desc, self.updates = total, enabled, desc, []
        bars.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    bars: list[_Bar] = []
    monkeypatch.setattr(engine, "progress_bar", lambda total, enabled, desc="": _Bar(bars, total, enabled, desc))
    return bars


def test_one_progress_bar_counts_the_bytes_hdf5(tmp_path, bars):
    x = np.random.default_rng(1).integers(0, 100, (1000, 7)).astype("int16")
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(64, 7), **codec("gzip").dataset_kwargs())
        stats = write_dask_array(da.from_array(x, chunks=(128, 7)), d, scheduler="threads", progress=True)
    assert len(bars) == 1 and bars[0].enabled and bars[0].closed
    assert bars[0].total == sum(bars[0].updates) == x.nbytes == stats.logical_bytes
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][...], x)


def test_one_progress_bar_counts_the_bytes_zarr(tmp_path, bars):
    x = np.random.default_rng(2).integers(0, 100, (1000, 7)).astype("int16")
    target = zarr.open(str(tmp_path / "p.zarr"), "w", shape=x.shape, chunks=(64, 7), dtype=x.dtype,
                       compressor=None)
    stats = store_arrays([(target, da.from_array(x, chunks=(128, 7)), None)], scheduler="threads")
    assert len(bars) == 1 and bars[0].closed
    assert bars[0].total == sum(bars[0].updates) == x.nbytes == stats.logical_bytes
    assert stats.stored_bytes == stats.chunks * 64 * 7 * 2  # raw chunks, edge chunks padded
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "p.zarr"), "r")[...], x)


def test_one_progress_bar_counts_the_bytes_queue(tmp_path, bars):
    x = np.random.default_rng(3).integers(0, 100, (1000, 7)).astype("int16")
    with h5py.File(tmp_path / "q.h5", "w") as f:
        d = f.create_dataset("x", x.shape, x.dtype, chunks=(64, 7), **codec("zstd").dataset_kwargs())
        stats = drain_iterators([(d, DataChunkIterator(data=x, buffer_size=100))], workers=2)
    assert len(bars) == 1 and bars[0].closed
    assert bars[0].total == sum(bars[0].updates) == x.nbytes == stats.logical_bytes
    with h5py.File(tmp_path / "q.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][...], x)


class _Pieces:
    """A DataChunkIterator-like source of row pieces; slow, and failing at piece ``fail_at`` if given."""

    def __init__(self, x, rows, counter, delay=0.05, fail_at=None):
        self.x, self.rows, self.counter, self.delay, self.fail_at = x, rows, counter, delay, fail_at
        self.i = 0
        self.dtype = x.dtype

    def __iter__(self):
        return self

    def __next__(self):
        self.counter.enter()
        try:
            time.sleep(self.delay)
            start = self.i * self.rows
            if start >= len(self.x):
                raise StopIteration
            if self.fail_at is not None and self.i == self.fail_at:
                raise RuntimeError(f"piece {self.i} failed")
            self.i += 1
            return DataChunk(self.x[start : start + self.rows], selection=np.s_[start : start + self.rows, :])
        finally:
            self.counter.leave()


def test_queue_failure_leaves_no_task_running(tmp_path):
    counter = _Counter()
    x = np.ones((400, 3), dtype="int16")
    with h5py.File(tmp_path / "q.h5", "w") as f:
        a = f.create_dataset("a", x.shape, x.dtype, chunks=(10, 3), **codec("gzip").dataset_kwargs())
        b = f.create_dataset("b", x.shape, x.dtype, chunks=(10, 3), **codec("gzip").dataset_kwargs())
        slow, failing = _Pieces(x, 10, counter), _Pieces(x, 10, counter, fail_at=3)
        with pytest.raises(RuntimeError, match="piece 3 failed"):
            drain_iterators([(a, slow), (b, failing)], workers=2, progress=False)
        assert counter.running == 0
        started = counter.started
        time.sleep(0.3)
        assert counter.started == started and slow.i < 40  # the other iterator was stopped, not drained
    assert not [t for t in threading.enumerate() if t.name.startswith("nwb_dask-encode")]


def test_zarr_failure_leaves_no_task_running(tmp_path, monkeypatch):
    counter = _Counter()
    original = sink_module._store_block

    def store(block, declared, task):
        counter.enter()
        try:
            time.sleep(0.1)
            if task.index == (2, 0):
                raise RuntimeError("store of block 2 failed")
            return original(block, declared, task)
        finally:
            counter.leave()

    monkeypatch.setattr(sink_module, "_store_block", store)
    x = np.arange(200 * 2, dtype="int32").reshape(200, 2)
    filters, compressor = numcodecs_pipeline(codec("zstd"), 4)
    target = zarr.open(str(tmp_path / "f.zarr"), "w", shape=x.shape, chunks=(10, 2), dtype=x.dtype,
                       filters=filters, compressor=compressor)
    with pytest.raises(RuntimeError, match="store of block 2 failed"):
        store_arrays([(target, da.from_array(x, chunks=(10, 2)), codec("zstd"))], scheduler="threads",
                     progress=False)
    assert counter.running == 0
    started = counter.started
    time.sleep(0.3)
    assert counter.started == started < 20


def test_zarr_tasks_store_on_the_worker(tmp_path):
    """Through the engine the caller gets sizes back, never chunk bytes: the worker stored them."""
    x = np.random.default_rng(4).integers(0, 9, (100, 3)).astype("uint8")
    filters, compressor = numcodecs_pipeline(codec("zstd"), 1)
    target = zarr.open(str(tmp_path / "s.zarr"), "w", shape=x.shape, chunks=(16, 3), dtype=x.dtype,
                       filters=filters, compressor=compressor)
    tasks = list(sink_module._tasks(0, target, da.from_array(x, chunks=(32, 3)), codec("zstd")))
    results = list(run_block_tasks(tasks, scheduler="threads", workers=2))
    assert all(isinstance(r, EncodedBlock) and r.chunks == [] and r.stored > 0 for r in results)
    assert sum(r.n_chunks for r in results) == 7
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "s.zarr"), "r")[...], x)


def test_plain_calls_run_on_threads_only():
    with pytest.raises(ValueError, match="run on threads"):
        list(run_block_tasks([CallTask(1, int, ("1",))], scheduler="processes", workers=1))
    assert list(run_block_tasks([CallTask(1, int, ("7",)), CallTask(1, int, ("8",))], scheduler="threads")) in (
        [7, 8], [8, 7])


def test_a_source_waiting_with_nothing_in_flight_is_an_error():
    with pytest.raises(RuntimeError, match="waits for a result with no task in flight"):
        list(run_block_tasks(iter([None]), scheduler="threads"))
    with pytest.raises(RuntimeError, match="waits for a result with no task in flight"):
        list(run_block_tasks(iter([None]), scheduler="sync"))


def test_interleave_is_round_robin():
    assert list(interleave([[1, 2, 3], [], "ab", iter([10])])) == [1, "a", 10, 2, "b", 3]

"""Tests of nwb_dask.live: streaming writes for live acquisition (in-process behaviour).

SIGKILL and multi-process SWMR tests are in test_live_crash.py.  Here, "another
process" checks run a fresh interpreter that opens the file with plain h5py in
SWMR mode: a handle opened in *this* process shares the writer's HDF5 file state
(it sees extents and chunks before they reach the disk), so only another
process shows what a flush made durable.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import ElectricalSeries

import nwb_dask
import nwb_dask.live
from conftest import read_with_plain_pynwb
from nwb_dask.chunking import ChunkShapeError
from nwb_dask.live import (
    FlushInfo,
    GrowingData,
    StreamError,
    StreamOverrunError,
    StreamWriter,
    follow,
    growing,
    open_live,
    recover,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CODEC_FILTERS = {
    "gzip": (2, 1),  # shuffle, deflate (gzip shuffles by default)
    "none": (),
    "zstd": (hdf5plugin.ZSTD_ID,),
    "blosc": (hdf5plugin.BLOSC_ID,),
    "lz4": (hdf5plugin.LZ4_ID,),
    "bitshuffle": (hdf5plugin.BSHUF_ID,),
}
AVAILABLE = nwb_dask.available_codecs()


# --------------------------------------------------------------------------- #
# helpers                                                                      #
# --------------------------------------------------------------------------- #
def new_nwbfile() -> NWBFile:
    return NWBFile("live test", "live-0001", T0)


def add_ephys(nwb: NWBFile, channels: int = 16, rate: float = 30000.0, **growing_kw) -> None:
    dev = nwb.create_device("probe")
    grp = nwb.create_electrode_group("shank0", "one shank", "CA1", dev)
    for _ in range(channels):
        nwb.add_electrode(group=grp, location="CA1")
    region = nwb.create_electrode_table_region(list(range(channels)), "all")
    nwb.add_acquisition(ElectricalSeries(name="ephys", data=growing("int16", (channels,), **growing_kw),
                                         electrodes=region, rate=rate, starting_time=0.0))


def add_analog(nwb: NWBFile, name: str = "analog", rate: float = 1000.0, starting_time: float = 2.5,
               dtype="float32", **growing_kw) -> None:
    nwb.add_acquisition(TimeSeries(name=name, data=growing(dtype, **growing_kw), unit="V", rate=rate,
                                   starting_time=starting_time))


def add_events(nwb: NWBFile, name: str = "events", **growing_kw) -> None:
    nwb.add_acquisition(TimeSeries(name=name, data=growing("int32", **growing_kw), timestamps=growing("float64"),
                                   unit="n/a"))


def three_streams(channels: int = 16) -> NWBFile:
    """ephys int16 (channels,) @ 30 kHz, analog float32 @ 1 kHz, events int32 with timestamps."""
    nwb = new_nwbfile()
    add_ephys(nwb, channels)
    add_analog(nwb)
    add_events(nwb)
    return nwb


def analog_only(**growing_kw) -> NWBFile:
    nwb = new_nwbfile()
    add_analog(nwb, **growing_kw)
    return nwb


def filter_ids(dset: h5py.Dataset) -> tuple[int, ...]:
    plist = dset.id.get_create_plist()
    return tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))


def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


_SWMR_READER = textwrap.dedent(
    """
    import sys
    import h5py
    import hdf5plugin  # noqa: F401
    import numpy as np

    path, out, *names = sys.argv[1:]
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        np.savez(out, *[f[n][()] for n in names])
    """
)


def read_in_other_process(path: Path, *datasets: str) -> list[np.ndarray]:
    """Read whole datasets with plain h5py (SWMR mode) in a fresh interpreter."""
    out = Path(path).parent / f"swmr-{uuid.uuid4().hex}.npz"
    proc = subprocess.run([sys.executable, "-c", _SWMR_READER, str(path), str(out), *datasets],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"SWMR reader failed on {path}: {proc.stderr[-3000:]}")
    with np.load(out) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(datasets))]
    out.unlink()
    return arrays


# --------------------------------------------------------------------------- #
# 1. multi-stream round trip                                                   #
# --------------------------------------------------------------------------- #
def test_multi_stream_round_trip(tmp_path):
    side_codec = "zstd" if "zstd" in AVAILABLE else "gzip"
    tile_codec = "blosc" if "blosc" in AVAILABLE else "gzip"
    nwb = new_nwbfile()
    add_ephys(nwb, 16)
    add_analog(nwb, codec=side_codec)
    add_events(nwb)
    add_analog(nwb, name="temperature", rate=10.0, starting_time=1.0, dtype="float64")
    nwb.add_acquisition(TimeSeries(name="raw", data=growing("uint16", (4,), codec="none"), unit="au",
                                   rate=500.0, starting_time=0.0))
    nwb.add_acquisition(TimeSeries(name="tiled", data=growing("uint8", (3,), chunks=(10, 2), codec=tile_codec),
                                   unit="au", rate=100.0, starting_time=0.0))

    rng = np.random.default_rng(1)
    ephys = rng.integers(-2000, 2000, (7508, 16), dtype=np.int16)
    analog = rng.standard_normal(337).astype(np.float32)
    events = rng.integers(0, 1000, 1500, dtype=np.int32)
    ev_ts = np.sort(rng.uniform(0, 100, 1500))
    ev_ts[10] = ev_ts[9]  # equal timestamps are allowed (non-decreasing)
    temperature = rng.uniform(20, 30, 41)
    raw = rng.integers(0, 2**16, (130, 4), dtype=np.uint16)
    tiled = rng.integers(0, 256, (57, 3), dtype=np.uint8)

    plan = {  # stream -> block sizes (crossing chunk boundaries, some tiny)
        "ephys": [1, 999, 1500, 2001, 7, 3000],
        "analog": [3, 50, 47, 100, 137],
        "events": [1, 1023, 1, 475],
        "temperature": [5, 11, 16, 9],
        "raw": [24, 1, 25, 80],
        "tiled": [9, 1, 10, 37],
    }
    source = {"ephys": ephys, "analog": analog, "events": events, "temperature": temperature, "raw": raw,
              "tiled": tiled}
    for name, sizes in plan.items():
        assert sum(sizes) == len(source[name]), name

    path = tmp_path / "multi.nwb"
    with StreamWriter(path, nwb, flush_every=0.2) as w:
        assert w.streams == ("analog", "ephys", "events", "raw", "temperature", "tiled")
        positions = dict.fromkeys(plan, 0)
        for step in range(6):
            for name, sizes in plan.items():
                if step >= len(sizes):
                    continue
                a, b = positions[name], positions[name] + sizes[step]
                if name == "events":
                    count = w.append(name, source[name][a:b], timestamps=ev_ts[a:b])
                else:
                    count = w.append(name, source[name][a:b])
                assert count == b
                positions[name] = b
            if step == 2:
                flushed = w.flush()
                assert flushed == positions
        stats_before_close = w.stats
        assert stats_before_close.samples == {k: len(v) for k, v in source.items()}

    st_ = w.stats
    assert st_.flushed == st_.samples == {k: len(v) for k, v in source.items()}
    expected_bytes = sum(v.nbytes for v in source.values()) + ev_ts.nbytes
    assert st_.logical_bytes == expected_bytes
    assert st_.stored_bytes > 0 and st_.flushes >= 2
    assert st_.ratio == pytest.approx(st_.logical_bytes / st_.stored_bytes)

    # chunk rule: rate * flush_every / 4 (min 16) for rate streams, 1024 for timestamped streams
    expected_chunks = {
        "ephys/data": (1500, 16),
        "analog/data": (50,),
        "events/data": (1024,),
        "events/timestamps": (1024,),
        "temperature/data": (16,),
        "raw/data": (25, 4),
        "tiled/data": (10, 2),
    }
    expected_filters = {
        "ephys/data": CODEC_FILTERS["gzip"],
        "analog/data": CODEC_FILTERS[side_codec],
        "events/data": CODEC_FILTERS["gzip"],
        "events/timestamps": CODEC_FILTERS["gzip"],
        "temperature/data": CODEC_FILTERS["gzip"],
        "raw/data": (),
        "tiled/data": CODEC_FILTERS[tile_codec],
    }
    with h5py.File(path, "r") as f:
        for name, arr in source.items():
            d = f[f"acquisition/{name}/data"]
            assert d.dtype == arr.dtype, name
            assert d.maxshape == (None, *arr.shape[1:]), name
            np.testing.assert_array_equal(d[()], arr, err_msg=name)
        t = f["acquisition/events/timestamps"]
        assert t.dtype == np.float64 and t.maxshape == (None,)
        np.testing.assert_array_equal(t[()], ev_ts)
        for key, chunks in expected_chunks.items():
            assert f[f"acquisition/{key}"].chunks == chunks, key
            assert filter_ids(f[f"acquisition/{key}"]) == expected_filters[key], key
        assert f["acquisition/raw/data"].compression is None
        for name, rate, start in [("ephys", 30000.0, 0.0), ("analog", 1000.0, 2.5), ("temperature", 10.0, 1.0)]:
            s = f[f"acquisition/{name}/starting_time"]
            assert s[()] == start and s.attrs["rate"] == rate and s.attrs["unit"] == "seconds", name
        assert f["acquisition/analog/data"].attrs["unit"] == "V"
        assert f["acquisition/events/data"].attrs["unit"] == "n/a"
        assert "starting_time" not in f["acquisition/events"]

    with NWBHDF5IO(str(path), "r") as io:
        nwb2 = io.read()
        acq = nwb2.acquisition
        np.testing.assert_array_equal(acq["ephys"].data[:], ephys)
        assert acq["ephys"].rate == 30000.0 and acq["ephys"].starting_time == 0.0
        assert len(acq["ephys"].electrodes) == 16
        np.testing.assert_array_equal(acq["analog"].data[:], analog)
        assert acq["analog"].rate == 1000.0 and acq["analog"].starting_time == 2.5
        assert acq["analog"].unit == "V"
        np.testing.assert_array_equal(acq["events"].data[:], events)
        np.testing.assert_array_equal(acq["events"].timestamps[:], ev_ts)
        assert acq["events"].rate is None
        np.testing.assert_array_equal(acq["tiled"].data[:], tiled)


@pytest.mark.parametrize("codec", list(CODEC_FILTERS))
def test_codec_declared_and_partial_chunks_restored(tmp_path, codec):
    """Each codec: filter declared; repeated partial-chunk rewrites (same-size ones too) read back exactly."""
    if codec not in AVAILABLE:
        pytest.skip(f"codec {codec} not available")
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="sig", data=growing("int16", (4,), chunks=(64, 4), codec=codec),
                                   unit="au", rate=100.0))
    rng = np.random.default_rng(2)
    blocks = [np.zeros((5, 4), np.int16), np.zeros((7, 4), np.int16),  # same stored size twice (constant data)
              rng.integers(-9, 9, (30, 4), dtype=np.int16), rng.integers(-9, 9, (40, 4), dtype=np.int16),
              np.zeros((3, 4), np.int16), np.zeros((1, 4), np.int16)]
    path = tmp_path / f"{codec}.nwb"
    with StreamWriter(path, nwb, flush_every=None) as w:
        total = 0
        for block in blocks:
            total = w.append("sig", block)
            assert w.flush() == {"sig": total}
        assert w.stats.superseded_bytes > 0
    expected = np.concatenate(blocks)
    with h5py.File(path, "r") as f:
        d = f["acquisition/sig/data"]
        assert filter_ids(d) == CODEC_FILTERS[codec]
        assert d.chunks == (64, 4)
        np.testing.assert_array_equal(d[()], expected)


@pytest.mark.parametrize("value", [0, 5])
@pytest.mark.parametrize("codec", ["gzip", "zstd", "blosc"])
def test_flushed_partial_chunk_is_never_overwritten_in_place(tmp_path, codec, value):
    """docs/live.md: a re-stored partial chunk goes elsewhere, "so the flushed copy is never overwritten".

    Constant data compress to the same size at every level; a re-stored chunk with other bytes at the same
    file address is the flushed copy being overwritten (a torn write would lose flushed samples).
    """
    if codec not in AVAILABLE:
        pytest.skip(f"codec {codec} not available")
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="sig", data=growing("int16", (4,), chunks=(64, 4), codec=codec),
                                   unit="au", rate=100.0))
    path = tmp_path / "flat.nwb"
    copies = []  # (file address, stored bytes) of chunk 0 after each flush
    with StreamWriter(path, nwb, flush_every=None) as w, open_live(path) as r:
        d = r["acquisition/sig/data"]
        for n in (5, 7, 2, 9):
            w.append("sig", np.full((n, 4), value, np.int16))
            w.flush()
            d.refresh()
            info = d.id.get_chunk_info_by_coord((0, 0))
            copies.append((info.byte_offset, d.id.read_direct_chunk((0, 0))[1]))
    for (addr0, bytes0), (addr1, bytes1) in zip(copies, copies[1:]):
        assert addr1 != addr0 or bytes1 == bytes0, f"flushed copy at {addr0} overwritten in place with other bytes"
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/sig/data"][()], np.full((23, 4), value, np.int16))


# --------------------------------------------------------------------------- #
# 2. plain pynwb reads and validates                                           #
# --------------------------------------------------------------------------- #
def test_plain_pynwb_reads_and_validates(tmp_path):
    nwb = three_streams(16)
    nwb.add_acquisition(TimeSeries(name="packed", data=growing("float32", codec="zstd" if "zstd" in AVAILABLE
                                                               else "gzip"), unit="V", rate=200.0))
    rng = np.random.default_rng(3)
    ephys = rng.integers(-500, 500, (3100, 16), dtype=np.int16)
    path = tmp_path / "plain.nwb"
    with StreamWriter(path, nwb) as w:
        for a in range(0, 3100, 700):
            w.append("ephys", ephys[a:a + 700])
        w.append("analog", np.arange(12, dtype=np.float32))
        w.append("events", [1, 2, 3], timestamps=[0.5, 0.75, 1.0])
        w.append("packed", np.linspace(0, 1, 9, dtype=np.float32))
    np.testing.assert_array_equal(read_with_plain_pynwb(path, "ephys", tmp_path), ephys)


# --------------------------------------------------------------------------- #
# 3-5. flushing: explicit, time-based, byte-based                              #
# --------------------------------------------------------------------------- #
def test_flush_makes_exactly_the_flushed_samples_visible(tmp_path):
    nwb = new_nwbfile()
    add_ephys(nwb, 16)
    add_analog(nwb, chunks=(100,))
    add_events(nwb)
    path = tmp_path / "flush.nwb"
    rng = np.random.default_rng(4)
    ephys = rng.integers(-3000, 3000, (3100, 16), dtype=np.int16)
    analog = rng.standard_normal(280).astype(np.float32)
    events = np.arange(7, dtype=np.int32) * 3
    ev_ts = np.array([0.1, 0.2, 0.2, 0.3, 0.5, 0.8, 1.3])
    names = ["acquisition/ephys/data", "acquisition/analog/data", "acquisition/events/data",
             "acquisition/events/timestamps"]

    w = StreamWriter(path, nwb, flush_every=None)
    try:
        assert [w.dataset_path(n) for n in ("ephys", "analog", "events")] == ["/" + n for n in names[:3]]
        assert w.dataset_path("events", "timestamps") == "/" + names[3]
        assert w.stats.superseded_bytes == 0
        w.append("ephys", ephys[:2500])  # 2 full chunks of 1024 + partial 452
        w.append("analog", analog[:250])  # 2 full chunks of 100 + partial 50
        w.append("events", events[:5], timestamps=ev_ts[:5])
        time.sleep(0.2)
        # no flush yet (flush_every=None, flush_bytes far away): another process sees empty datasets
        assert w.flushed == {"ephys": 0, "analog": 0, "events": 0}
        assert [a.shape[0] for a in read_in_other_process(path, *names)] == [0, 0, 0, 0]

        assert w.flush() == {"ephys": 2500, "analog": 250, "events": 5}
        assert w.flushed == {"ephys": 2500, "analog": 250, "events": 5}
        assert w.stats.superseded_bytes == 0
        got = read_in_other_process(path, *names)
        np.testing.assert_array_equal(got[0], ephys[:2500])
        np.testing.assert_array_equal(got[1], analog[:250])
        np.testing.assert_array_equal(got[2], events[:5])
        np.testing.assert_array_equal(got[3], ev_ts[:5])
        with open_live(path) as f:  # open_live handle, same view
            d = f["acquisition/ephys/data"]
            d.refresh()
            assert d.shape == (2500, 16)
            np.testing.assert_array_equal(d[2048:], ephys[2048:2500])  # the partial last chunk
        stored_first = w.stats.stored_bytes

        w.append("ephys", ephys[2500:])  # completes the partial chunk, starts another
        w.append("analog", analog[250:])  # grows the partial chunk
        w.append("events", events[5:], timestamps=ev_ts[5:])
        assert w.flush() == {"ephys": 3100, "analog": 280, "events": 7}
        st_ = w.stats
        assert st_.superseded_bytes > 0
        assert st_.stored_bytes > stored_first
        got = read_in_other_process(path, *names)
        np.testing.assert_array_equal(got[0], ephys)
        np.testing.assert_array_equal(got[1], analog)
        np.testing.assert_array_equal(got[2], events)
        np.testing.assert_array_equal(got[3], ev_ts)
    finally:
        w.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/ephys/data"][()], ephys)
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], analog)


def test_time_based_flushes_and_on_flush(tmp_path):
    infos: list[FlushInfo] = []
    path = tmp_path / "timed.nwb"
    rng = np.random.default_rng(5)
    ephys = rng.integers(-100, 100, (900, 16), dtype=np.int16)
    analog = rng.standard_normal(60).astype(np.float32)
    with StreamWriter(path, three_streams(16), flush_every=0.2, on_flush=infos.append) as w:
        w.append("ephys", ephys[:300])
        w.append("analog", analog[:20])
        time.sleep(0.6)  # no flush() call: the timer flushes
        wait_until(lambda: w.flushed == {"ephys": 300, "analog": 20, "events": 0}, what="a timed flush")
        e, a = read_in_other_process(path, "acquisition/ephys/data", "acquisition/analog/data")
        np.testing.assert_array_equal(e, ephys[:300])
        np.testing.assert_array_equal(a, analog[:20])

        w.append("ephys", ephys[300:])
        w.append("analog", analog[20:])
        w.append("events", [4, 5], timestamps=[0.25, 0.5])
        final = {"analog": 60, "ephys": 900, "events": 2}
        wait_until(lambda: infos and infos[-1].samples == final, what="a second timed flush and its callback")
        assert w.flushed == final
        n_infos = len(infos)
        time.sleep(0.5)  # idle: no new data, no flushes, no callbacks
        assert len(infos) == n_infos
        e, a = read_in_other_process(path, "acquisition/ephys/data", "acquisition/analog/data")
        np.testing.assert_array_equal(e, ephys)
        np.testing.assert_array_equal(a, analog)

    assert len(infos) >= 2
    assert all(isinstance(i, FlushInfo) for i in infos)
    assert [i.number for i in infos] == list(range(1, len(infos) + 1))
    for prev, cur in zip(infos, infos[1:]):
        assert cur.wall_time >= prev.wall_time
        assert all(cur.samples[k] >= prev.samples[k] for k in prev.samples)
    assert infos[-1].samples == {"analog": 60, "ephys": 900, "events": 2}
    assert any(i.samples == {"analog": 20, "ephys": 300, "events": 0} for i in infos)
    assert all(i.stored_bytes > 0 and i.seconds >= 0 for i in infos)
    assert sum(i.stored_bytes for i in infos) == w.stats.stored_bytes
    assert w.stats.flushes == len(infos)


def test_byte_based_flushes(tmp_path):
    path = tmp_path / "bytes.nwb"
    analog = np.arange(1100, dtype=np.float32)
    infos = []
    with StreamWriter(path, analog_only(), flush_every=None, flush_bytes=4096, on_flush=infos.append) as w:
        w.append("analog", analog[:500])  # 2000 bytes: below flush_bytes
        time.sleep(0.3)
        assert w.flushed == {"analog": 0} and infos == []
        w.append("analog", analog[500:])  # 4400 bytes waiting
        wait_until(lambda: w.flushed == {"analog": 1100} and len(infos) == 1, what="a byte-triggered flush")
        (got,) = read_in_other_process(path, "acquisition/analog/data")
        np.testing.assert_array_equal(got, analog)
        assert len(infos) == 1 and infos[0].samples == {"analog": 1100}


def test_on_flush_exception_does_not_stop_the_writer(tmp_path, capfd):
    calls = []

    def bad_callback(info):
        calls.append(info.number)
        raise RuntimeError("callback bug")

    path = tmp_path / "cb.nwb"
    with StreamWriter(path, analog_only(), flush_every=None, on_flush=bad_callback) as w:
        w.append("analog", np.arange(10, dtype=np.float32))
        w.flush()
        w.append("analog", np.arange(10, 30, dtype=np.float32))
        assert w.flush() == {"analog": 30}
    assert calls[:2] == [1, 2]
    assert "on_flush callback raised RuntimeError: callback bug" in capfd.readouterr().err
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], np.arange(30, dtype=np.float32))


# --------------------------------------------------------------------------- #
# 6. overrun                                                                   #
# --------------------------------------------------------------------------- #
def test_overrun_raise_appends_nothing_and_can_be_retried(tmp_path):
    path = tmp_path / "overrun.nwb"
    a = np.arange(1000, dtype=np.float32)
    with StreamWriter(path, analog_only(), flush_every=None, max_pending_bytes=1000, on_overrun="raise") as w:
        w.append("analog", a[:300])  # 1200 bytes > max, but nothing pending: accepted, and flushed at once
        wait_until(lambda: w.flushed == {"analog": 300}, what="the first flush")
        w.append("analog", a[300:400])  # 400 bytes pending, below flush_bytes (= max_pending_bytes)
        with pytest.raises(StreamOverrunError, match=r"stream 'analog'.*max_pending_bytes.*Nothing was appended"):
            w.append("analog", a[400:1000])
        assert w.stats.samples == {"analog": 400}
        assert w.stats.overrun_waits == 0
        assert issubclass(StreamOverrunError, StreamError)
        w.flush()
        assert w.append("analog", a[400:1000]) == 1000  # the same block, retried
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], a)


def _gated_callback():
    """An on_flush callback that parks the writer thread until ``gate`` is set."""
    gate, entered = threading.Event(), threading.Event()

    def on_flush(info):
        entered.set()
        gate.wait(20)

    return gate, entered, on_flush


def test_overrun_block_waits_and_writes_everything(tmp_path):
    path = tmp_path / "block.nwb"
    a = np.random.default_rng(6).standard_normal(5000).astype(np.float32)
    gate, entered, on_flush = _gated_callback()
    w = StreamWriter(path, analog_only(), flush_every=None, max_pending_bytes=1000, on_flush=on_flush)
    try:
        w.append("analog", a[:300])  # flushed at once; the writer then waits in the callback
        assert entered.wait(10)
        w.append("analog", a[300:400])  # nothing pending: accepted
        t0 = time.monotonic()  # before the timer: the gate opens >= 0.3 s after t0 however loaded the machine
        timer = threading.Timer(0.3, gate.set)
        timer.start()
        w.append("analog", a[400:700])  # must wait until the writer is free and has flushed
        assert time.monotonic() - t0 >= 0.25
        assert w.stats.overrun_waits >= 1
        w.extend("analog", (a[i:i + 250] for i in range(700, 5000, 250)))
        assert w.stats.samples == {"analog": 5000}
    finally:
        gate.set()
        w.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], a)


def test_overrun_timeout_and_flush_timeout(tmp_path):
    path = tmp_path / "timeout.nwb"
    a = np.arange(1000, dtype=np.float32)
    gate, entered, on_flush = _gated_callback()
    w = StreamWriter(path, analog_only(), flush_every=None, max_pending_bytes=1000, overrun_timeout=0.2,
                     on_flush=on_flush)
    try:
        w.append("analog", a[:300])
        assert entered.wait(10)
        w.append("analog", a[300:400])
        with pytest.raises(StreamOverrunError, match=r"stream 'analog': waited 0\.2 s.*Nothing was appended"):
            w.append("analog", a[400:700])
        assert w.stats.samples == {"analog": 400}
        with pytest.raises(StreamError, match=r"flush did not finish within 0\.1 s"):
            w.flush(timeout=0.1)
        gate.set()
        assert w.flush() == {"analog": 400}
        assert w.append("analog", a[400:1000]) == 1000  # nothing pending now: no wait
    finally:
        gate.set()
        w.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], a)


# --------------------------------------------------------------------------- #
# 7. input errors                                                              #
# --------------------------------------------------------------------------- #
@pytest.fixture
def writer(tmp_path):
    w = StreamWriter(tmp_path / "w.nwb", three_streams(16), flush_every=None)
    yield w
    w.close()


def test_wrong_sample_shape(writer):
    with pytest.raises(ValueError, match=r"stream 'ephys': data of shape \(10, 8\) do not match the sample shape "
                                         r"\(16,\) \(expected \(n, 16\)\)"):
        writer.append("ephys", np.zeros((10, 8), np.int16))
    with pytest.raises(ValueError, match=r"data of shape \(2, 3, 16\) do not match"):
        writer.append("ephys", np.zeros((2, 3, 16), np.int16))
    with pytest.raises(ValueError, match=r"stream 'analog': data of shape \(5, 2\) do not match the sample shape"):
        writer.append("analog", np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"stream 'events': timestamps of shape \(2, 2\)"):
        writer.append("events", [1, 2], timestamps=[[0.0, 1.0], [2.0, 3.0]])
    assert writer.stats.samples == {"analog": 0, "ephys": 0, "events": 0}


def test_dtype_safety(writer):
    with pytest.raises(TypeError, match=r"stream 'ephys': data of dtype float64 would change when stored as int16"):
        writer.append("ephys", np.full((3, 16), 1.5))
    with pytest.raises(TypeError, match=r"data of dtype int64 would change when stored as int16"):
        writer.append("ephys", np.full((2, 16), 40000, np.int64))
    with pytest.raises(TypeError, match=r"stream 'analog': data of dtype float64 would change when stored as float32"):
        writer.append("analog", [0.1, 0.2])  # not representable in float32
    assert writer.stats.samples == {"analog": 0, "ephys": 0, "events": 0}
    # values that survive the cast are accepted
    assert writer.append("ephys", [[1] * 16, [-2] * 16]) == 2  # python ints that fit
    assert writer.append("ephys", np.full((1, 16), 7.0)) == 3  # integral floats
    assert writer.append("ephys", np.full((1, 16), True)) == 4  # bool: a safe cast
    assert writer.append("analog", [0.5, 1.25, np.nan]) == 3  # exactly representable, nan too
    assert writer.append("events", np.array([3], np.uint8), timestamps=[7]) == 1
    writer.close()
    with h5py.File(writer.path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/ephys/data"][()],
                                      np.array([[1] * 16, [-2] * 16, [7] * 16, [1] * 16], np.int16))
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], np.array([0.5, 1.25, np.nan], np.float32))
        np.testing.assert_array_equal(f["acquisition/events/timestamps"][()], [7.0])


def test_int64_that_float64_cannot_hold_is_refused(writer):
    """numpy calls int64 -> float64 a "safe" cast, but 2**53 + 1 becomes 2**53: the value would change."""
    with pytest.raises(TypeError, match=r"stream 'events': timestamps of dtype int64 would change"):
        writer.append("events", [1], timestamps=[2**53 + 1])
    assert writer.stats.samples["events"] == 0
    assert writer.append("events", [1], timestamps=[2**53]) == 1  # exactly representable: fine


def test_strings_are_not_numbers(writer):
    """Strings of digits are not numeric data: they must be refused, not parsed."""
    with pytest.raises(TypeError, match=r"stream 'analog'"):
        writer.append("analog", ["1", "2"])
    with pytest.raises(TypeError, match=r"stream 'events'"):
        writer.append("events", [1], timestamps=["0.5"])
    assert writer.stats.samples == {"analog": 0, "ephys": 0, "events": 0}


def test_timestamp_errors(writer):
    with pytest.raises(ValueError, match=r"stream 'events' has growing timestamps: pass timestamps="):
        writer.append("events", [1, 2])
    with pytest.raises(ValueError, match=r"stream 'analog' is regularly sampled \(rate=\); it takes no timestamps"):
        writer.append("analog", [1.0], timestamps=[0.0])
    with pytest.raises(ValueError, match=r"stream 'events': 3 samples but 2 timestamps"):
        writer.append("events", [1, 2, 3], timestamps=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"stream 'events': timestamps go backwards"):
        writer.append("events", [1, 2, 3], timestamps=[0.0, 2.0, 1.0])
    assert writer.stats.samples["events"] == 0
    assert writer.append("events", [1, 2], timestamps=[1.0, 5.0]) == 2
    with pytest.raises(ValueError, match=r"stream 'events': timestamps go backwards \(last appended 5\.0"):
        writer.append("events", [3], timestamps=[4.0])
    assert writer.append("events", [3], timestamps=[5.0]) == 3  # equal to the last: fine
    assert writer.append("events", [], timestamps=[]) == 3  # empty blocks are no-ops
    assert writer.stats.samples["events"] == 3
    writer.close()
    with h5py.File(writer.path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/events/data"][()], [1, 2, 3])
        np.testing.assert_array_equal(f["acquisition/events/timestamps"][()], [1.0, 5.0, 5.0])


def test_stream_names(writer):
    assert writer.streams == ("analog", "ephys", "events")
    with pytest.raises(KeyError, match=r"no stream 'nope' in .*w\.nwb; streams: \['analog', 'ephys', 'events'\]"):
        writer.append("nope", [1.0])
    with pytest.raises(KeyError, match=r"no stream 'nope'"):
        writer.dataset_path("nope")
    with pytest.raises(KeyError, match=r"stream 'analog' has no growing 'timestamps'"):
        writer.dataset_path("analog", "timestamps")
    # the group path, with or without the leading slash, names a stream too
    assert writer.append("acquisition/analog", [1.0]) == 1
    assert writer.append("/acquisition/analog", [2.0]) == 2
    assert writer.stats.samples["analog"] == 2
    assert repr(writer).startswith("<nwb_dask.live.StreamWriter") and "analog" in repr(writer)


def test_dataset_path_rejects_unknown_column(writer):
    with pytest.raises((KeyError, ValueError), match="bogus"):
        writer.dataset_path("events", "bogus")


def test_existing_path_is_not_touched(tmp_path):
    path = tmp_path / "exists.nwb"
    with StreamWriter(path, analog_only()) as w:
        w.append("analog", [1.0, 2.0])
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=True"):
        StreamWriter(path, analog_only())
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.nwb"]
    with StreamWriter(path, analog_only(), overwrite=True) as w:
        w.append("analog", [3.0])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], [3.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.nwb"]


def test_nwbfile_errors_create_no_file(tmp_path):
    path = tmp_path / "bad.nwb"
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="fixed", data=np.arange(3.0), unit="V", rate=1.0))
    with pytest.raises(ValueError, match=r"the NWBFile has no growing datasets"):
        StreamWriter(path, nwb)

    nwb = new_nwbfile()  # growing data, fixed (not growing) timestamps, no rate
    nwb.add_acquisition(TimeSeries(name="fixed_ts", data=growing("float32"), timestamps=np.zeros(0), unit="V"))
    with pytest.raises(ValueError, match=r"'fixed_ts': a growing series needs rate= or timestamps=growing"):
        StreamWriter(path, nwb)

    nwb = new_nwbfile()  # growing timestamps, fixed data
    nwb.add_acquisition(TimeSeries(name="half", data=np.zeros(0), timestamps=growing("float64"), unit="V"))
    with pytest.raises(ValueError, match=r"'half': timestamps are growing but data are not"):
        StreamWriter(path, nwb)

    with pytest.raises(ValueError, match=r"on_overrun must be 'block' or 'raise', got 'drop'"):
        StreamWriter(path, analog_only(), on_overrun="drop")
    with pytest.raises(ValueError, match=r"flush_every must be positive"):
        StreamWriter(path, analog_only(), flush_every=0)
    with pytest.raises(ValueError, match=r"flush_bytes and max_pending_bytes must be positive"):
        StreamWriter(path, analog_only(), max_pending_bytes=0)
    assert list(tmp_path.iterdir()) == []


def test_growing_declarations():
    d = growing("int16", (384,))
    assert isinstance(d, GrowingData)
    assert d.maxshape == (None, 384) and d.dtype == np.int16 and d.data.shape == (0, 384)
    assert growing("float64").maxshape == (None,)
    assert growing("bool", (2,), chunks=(8, 1)).chunk_shape == (8, 1)
    for dtype in ("U8", "S4", object, ">i2", [("a", "<i4"), ("b", "<f8")]):
        with pytest.raises(TypeError, match=r"live streams hold little-endian numbers or booleans, got dtype"):
            growing(dtype)
    with pytest.raises(ChunkShapeError, match=r"chunks \(10,\) must be positive and have 2 axes"):
        growing("int16", (16,), chunks=(10,))
    with pytest.raises(ChunkShapeError, match=r"chunks \(0, 16\) must be positive"):
        growing("int16", (16,), chunks=(0, 16))
    with pytest.raises(ChunkShapeError, match=r"chunks \(10, 32\) exceed the sample shape \(16,\)"):
        growing("int16", (16,), chunks=(10, 32))
    with pytest.raises(ValueError, match=r"sample shape \(0,\) must have positive extents"):
        growing("int16", (0,))
    assert issubclass(ChunkShapeError, ValueError)


# --------------------------------------------------------------------------- #
# 8. dask arrays and extend()                                                  #
# --------------------------------------------------------------------------- #
def _content(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {f"{n}/{c}": f[f"acquisition/{n}/{c}"][()] for n in ("ephys", "analog", "events")
                for c in ("data", "timestamps") if c in f[f"acquisition/{n}"]}


def test_dask_and_extend_equal_numpy_appends(tmp_path):
    rng = np.random.default_rng(7)
    ephys = rng.integers(-1000, 1000, (3000, 16), dtype=np.int16)
    analog = rng.standard_normal(2100).astype(np.float32)
    events = rng.integers(0, 50, 1500, dtype=np.int32)
    ev_ts = np.cumsum(rng.uniform(0, 0.01, 1500))
    kw = dict(flush_every=None, flush_bytes=4096)  # dask arrays are computed in several pieces

    with StreamWriter(tmp_path / "np.nwb", three_streams(16), **kw) as w:
        w.append("ephys", ephys)
        w.append("analog", analog)
        w.append("events", events, timestamps=ev_ts)

    with StreamWriter(tmp_path / "dask.nwb", three_streams(16), **kw) as w:
        assert w.append("ephys", da.from_array(ephys, chunks=(333, 7))) == 3000
        assert w.append("analog", da.from_array(analog, chunks=500)) == 2100
        assert w.append("events", da.from_array(events, chunks=400),
                        timestamps=da.from_array(ev_ts, chunks=256)) == 1500

    def pieces(arr, sizes):
        i = 0
        for n in sizes:
            yield arr[i:i + n]
            i += n

    with StreamWriter(tmp_path / "extend.nwb", three_streams(16), **kw) as w:
        assert w.extend("ephys", pieces(ephys, [1, 1023, 1024, 900, 52])) == 3000
        assert w.extend("analog", (b for b in [analog[:100], da.from_array(analog[100:], chunks=700)])) == 2100
        cuts = [0, 1, 700, 1024, 1500]
        assert w.extend("events", ((events[a:b], ev_ts[a:b]) for a, b in zip(cuts, cuts[1:]))) == 1500

    want = {"ephys/data": ephys, "analog/data": analog, "events/data": events, "events/timestamps": ev_ts}
    for name in ("np", "dask", "extend"):
        got = _content(tmp_path / f"{name}.nwb")
        assert got.keys() == want.keys()
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{name}: {k}")


def test_dask_timestamps_of_the_wrong_length_are_refused(writer):
    """As with numpy input: n samples need exactly n timestamps, and nothing is appended otherwise."""
    data = da.arange(10, dtype=np.int32, chunks=5)
    with pytest.raises(ValueError, match=r"stream 'events': 10 samples but 20 timestamps"):
        writer.append("events", data, timestamps=da.arange(20, dtype=np.float64, chunks=5))
    with pytest.raises(ValueError, match=r"10 samples but 20 timestamps"):
        writer.append("events", np.arange(10, dtype=np.int32), timestamps=da.arange(20, dtype=np.float64, chunks=5))
    assert writer.stats.samples["events"] == 0


def test_dask_append_that_fails_midway_appends_nothing(tmp_path):
    """A dask block whose timestamps go backwards late in the array: nothing of it may be appended."""
    ts = np.arange(5000, dtype=np.float64)
    ts[4500] = -1.0
    with StreamWriter(tmp_path / "d.nwb", three_streams(16), flush_every=None, flush_bytes=4096) as w:
        with pytest.raises(ValueError, match=r"stream 'events': timestamps go backwards"):
            w.append("events", da.zeros(5000, dtype=np.int32, chunks=1000), timestamps=da.from_array(ts, chunks=1000))
        assert w.stats.samples["events"] == 0


# --------------------------------------------------------------------------- #
# 9. single samples                                                            #
# --------------------------------------------------------------------------- #
def test_single_sample_appends(writer):
    rows = np.arange(5 * 16, dtype=np.int16).reshape(5, 16)
    for i, row in enumerate(rows):
        assert writer.append("ephys", row) == 2 * i + 1  # one sample of shape (16,)
        assert writer.append("ephys", [int(v) for v in row]) == 2 * i + 2  # a list of python ints
    assert writer.flush() == {"analog": 0, "ephys": 10, "events": 0}
    writer.close()
    with h5py.File(writer.path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/ephys/data"][()], np.repeat(rows, 2, axis=0))


def test_single_scalar_samples(writer):
    assert writer.append("analog", 1.5) == 1
    assert writer.append("analog", np.float32(2.5)) == 2
    assert writer.append("events", 7, timestamps=0.25) == 1
    assert writer.append("events", np.int32(8), timestamps=np.float64(0.25)) == 2
    with pytest.raises(ValueError, match=r"stream 'events' has growing timestamps"):
        writer.append("events", 9)
    writer.close()
    with h5py.File(writer.path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], [1.5, 2.5])
        np.testing.assert_array_equal(f["acquisition/events/data"][()], [7, 8])
        np.testing.assert_array_equal(f["acquisition/events/timestamps"][()], [0.25, 0.25])


# --------------------------------------------------------------------------- #
# 10. closing                                                                  #
# --------------------------------------------------------------------------- #
def test_closed_writer(tmp_path):
    path = tmp_path / "closed.nwb"
    w = StreamWriter(path, analog_only(), flush_every=None)
    w.append("analog", [1.0, 2.0])
    w.close()
    w.close()  # twice is fine
    with pytest.raises(StreamError, match=r"closed\.nwb: the writer is closed"):
        w.append("analog", [3.0])
    with pytest.raises(StreamError, match=r"the writer is closed"):
        w.flush()
    assert w.stats.samples == {"analog": 2} and w.flushed == {"analog": 2}
    with h5py.File(path, "r") as f:  # plain (non-SWMR) readers open it
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], [1.0, 2.0])


def test_context_manager_closes_and_keeps_data_on_exception(tmp_path):
    path = tmp_path / "ctx.nwb"
    with pytest.raises(RuntimeError, match="acquisition broke"):
        with StreamWriter(path, analog_only(), flush_every=None) as w:
            w.append("analog", [1.0, 2.0, 3.0])
            raise RuntimeError("acquisition broke")
    with pytest.raises(StreamError, match="closed"):
        w.append("analog", [4.0])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], [1.0, 2.0, 3.0])


def test_writer_failure_is_reported_and_the_file_keeps_the_last_flush(tmp_path, monkeypatch):
    path = tmp_path / "failed.nwb"
    a = np.arange(1, 501, dtype=np.float32)
    w = StreamWriter(path, analog_only(), flush_every=None)
    w.append("analog", a[:300])
    w.flush()

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(nwb_dask.live.columns, "encode_block", broken_encoder)  # where encode_rows looks it up
    w.append("analog", a[300:400])
    with pytest.raises(StreamError, match=r"failed\.nwb: the live writer failed: RuntimeError: encoder exploded"):
        w.flush()
    with pytest.raises(StreamError, match=r"encoder exploded"):
        w.append("analog", a[400:])
    assert w.flushed == {"analog": 300}
    with pytest.raises(StreamError, match=r"encoder exploded"):
        w.close()
    w.close()  # already closed: no-op
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        d = f["acquisition/analog/data"]
        np.testing.assert_array_equal(d[:300], a[:300])
        # "the file keeps every sample of the last completed flush" -- and no samples that were never stored
        assert d.shape == (300,), f"the file claims {d.shape[0]} samples; only 300 were flushed"


def test_duplicate_series_names(tmp_path):
    """Two series named "x" (acquisition and a processing module): addressed by path, counted separately."""
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="x", data=growing("float32"), unit="V", rate=10.0))
    mod = nwb.create_processing_module("proc", "processed")
    mod.add(TimeSeries(name="x", data=growing("float32"), unit="V", rate=20.0))
    path = tmp_path / "dup.nwb"
    with StreamWriter(path, nwb, flush_every=None) as w:
        assert len(w.streams) == 2
        with pytest.raises(KeyError, match=r"'x'"):
            w.append("x", [0.0])  # ambiguous
        assert w.append("acquisition/x", [1.0, 2.0]) == 2
        assert w.append("/processing/proc/x", [3.0]) == 1
        counts = w.flush()
        assert sorted(counts.values()) == [1, 2], counts
        assert sorted(w.stats.samples.values()) == [1, 2], w.stats.samples
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/x/data"][()], [1.0, 2.0])
        np.testing.assert_array_equal(f["processing/proc/x/data"][()], [3.0])


# --------------------------------------------------------------------------- #
# 11. readers and recover                                                      #
# --------------------------------------------------------------------------- #
def test_follow(tmp_path):
    path = tmp_path / "follow.nwb"
    a = np.arange(700, dtype=np.float32)
    w = StreamWriter(path, analog_only(), flush_every=None)
    try:
        ds = w.dataset_path("analog")
        w.append("analog", a[:250])
        w.flush()
        g = follow(path, ds, poll=0.01, idle_timeout=5)
        first, block = next(g)
        assert first == 0
        np.testing.assert_array_equal(block, a[:250])
        w.append("analog", a[250:])
        w.flush()
        first, block = next(g)
        assert first == 250
        np.testing.assert_array_equal(block, a[250:])
        g.close()
    finally:
        w.close()
    got = list(follow(path, "acquisition/analog/data", start=100, idle_timeout=0.1))
    assert [s for s, _ in got] == [100]
    np.testing.assert_array_equal(got[0][1], a[100:])
    with pytest.raises(KeyError, match=r"no dataset 'acquisition/nope'"):
        next(follow(path, "acquisition/nope", idle_timeout=0.1))
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_live(tmp_path / "missing.nwb")


def test_recover_closed_file_is_harmless(tmp_path):
    path = tmp_path / "rec.nwb"
    a = np.arange(100, dtype=np.float32)
    with StreamWriter(path, analog_only()) as w:
        w.append("analog", a)
    recover(path)
    recover(path)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], a)
    with NWBHDF5IO(str(path), "r") as io:
        np.testing.assert_array_equal(io.read().acquisition["analog"].data[:], a)
    with pytest.raises(FileNotFoundError, match=r"missing\.nwb: no such file"):
        recover(tmp_path / "missing.nwb")
    assert not (tmp_path / "missing.nwb").exists()


def test_recover_refuses_a_file_held_by_a_writer_in_this_process(tmp_path):
    """docs/live.md: recover "refuses a file that a running writer holds open"."""
    path = tmp_path / "held.nwb"
    with StreamWriter(path, analog_only(), flush_every=None) as w:
        w.append("analog", [1.0])
        w.flush()
        with pytest.raises(OSError, match="writer"):
            recover(path)


def test_recover_refuses_a_file_this_process_holds_open_for_writing_found_without_hdf5(tmp_path):
    """recover asks /proc/self, not HDF5's list of open files (walking it crashed the interpreter):
    a descriptor open for writing is a writer here (refused, nothing changed); a read-only one is not."""
    import nwb_dask.live.recovery as recovery

    path = tmp_path / "held.nwb"
    with StreamWriter(path, analog_only(), flush_every=None) as w:
        w.append("analog", [1.0, 2.0])
    assert recovery.held_for_writing_here(path) is False
    with open(path, "rb"):
        assert recovery.held_for_writing_here(path) is False
    with h5py.File(path, "r+"):  # a plain h5py writer: no StreamWriter lock, found by its descriptor
        before = path.read_bytes()  # (opening for writing set HDF5's own mark)
        assert recovery.held_for_writing_here(path) is True
        with pytest.raises(OSError, match=r"held\.nwb: cannot clear the writer's mark; a writer in this process holds it open"):
            recover(path)
        assert path.read_bytes() == before
    recover(path)  # closed: nothing in this process holds it
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["acquisition/analog/data"][()], [1.0, 2.0])


# --------------------------------------------------------------------------- #
# random splits and flush points                                               #
# --------------------------------------------------------------------------- #
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("grid"), st.integers(0, 40)),
        st.tuples(st.just("ev"), st.integers(0, 12)),
        st.just(("flush", 0)),
    ),
    max_size=20,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, seed=st.integers(0, 2**16), codec=st.sampled_from([c for c in ("gzip", "zstd", "none", "blosc")
                                                                    if c in AVAILABLE]))
def test_random_appends_and_flushes_reproduce_the_concatenation(ops, seed, codec):
    rng = np.random.default_rng(seed)
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="grid", data=growing("int16", (5,), chunks=(8, 3), codec=codec),
                                   unit="au", rate=100.0))
    nwb.add_acquisition(TimeSeries(name="ev", data=growing("uint8", chunks=(5,), codec=codec),
                                   timestamps=growing("float64", chunks=(4,)), unit="n/a"))
    grid = rng.integers(-2**15, 2**15, (40 * 20, 5), dtype=np.int16)
    ev = rng.integers(0, 256, 12 * 20, dtype=np.uint8)
    ev_ts = np.cumsum(rng.choice([0.0, 0.25, 1.5], 12 * 20))
    n_grid = n_ev = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.nwb"
        with StreamWriter(path, nwb, flush_every=None) as w, open_live(path) as r:
            for op, n in ops:
                if op == "grid":
                    assert w.append("grid", grid[n_grid:n_grid + n]) == n_grid + n
                    n_grid += n
                elif op == "ev":
                    assert w.append("ev", ev[n_ev:n_ev + n], timestamps=ev_ts[n_ev:n_ev + n]) == n_ev + n
                    n_ev += n
                else:
                    assert w.flush() == {"grid": n_grid, "ev": n_ev}
                    for name, want in [("acquisition/grid/data", grid[:n_grid]), ("acquisition/ev/data", ev[:n_ev]),
                                       ("acquisition/ev/timestamps", ev_ts[:n_ev])]:
                        d = r[name]
                        d.refresh()
                        np.testing.assert_array_equal(d[()], want, err_msg=name)
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["acquisition/grid/data"][()], grid[:n_grid])
            np.testing.assert_array_equal(f["acquisition/ev/data"][()], ev[:n_ev])
            np.testing.assert_array_equal(f["acquisition/ev/timestamps"][()], ev_ts[:n_ev])
            assert f["acquisition/grid/data"].chunks == (8, 3)
            assert f["acquisition/ev/timestamps"].chunks == (4,)


def test_the_package_re_exports_each_public_name_from_the_module_that_does_its_job():
    """``nwb_dask.live`` is a package of one-job modules (docs/live.md, "Inside the live writer");
    every public name of the former single module stays importable from the package, and no
    submodule shadows a function of the same name (``nwb_dask.live.recover`` is the function)."""
    import importlib

    homes = {
        "datasets": ["GrowingData", "growing"],
        "readers": ["follow", "open_live"],
        "recovery": ["recover"],
        "writer": ["StreamWriter", "StreamError", "StreamOverrunError", "FlushInfo", "StreamStats",
                   "DEFAULT_FLUSH_SECONDS", "DEFAULT_FLUSH_BYTES", "DEFAULT_MAX_PENDING_BYTES", "LIBVER"],
    }
    for module, names in homes.items():
        mod = importlib.import_module(f"nwb_dask.live.{module}")
        for name in names:
            assert getattr(nwb_dask.live, name) is getattr(mod, name), (module, name)
    assert set(nwb_dask.live.__all__) == {n for names in homes.values() for n in names}
    assert callable(nwb_dask.live.recover) and callable(nwb_dask.live.growing)
    assert issubclass(StreamOverrunError, StreamError)
    assert (nwb_dask.live.DEFAULT_FLUSH_SECONDS, nwb_dask.live.DEFAULT_FLUSH_BYTES,
            nwb_dask.live.DEFAULT_MAX_PENDING_BYTES, nwb_dask.live.LIBVER) == (1.0, 64 * 2**20, 256 * 2**20,
                                                                                ("v110", "v110"))

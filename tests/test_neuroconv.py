"""GenericDataChunkIterator sources (neuroconv, SpikeInterface) written by NWBDaskIO: parallel planned reads.

The first tests need only hdmf; those against neuroconv's own mock interfaces
are skipped when neuroconv (the ``neuroconv`` extra) is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hdmf.data_utils import GenericDataChunkIterator
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb_dask.nwb.queue import drain_iterators, planned_selections

ROOT = Path(__file__).resolve().parents[1]
SERIES = "acquisition/ElectricalSeries/data"


class ArrayIterator(GenericDataChunkIterator):
    """A GenericDataChunkIterator over an array, recording its ``_get_data`` calls and their overlap."""

    def __init__(self, array, delay: float = 0.0, **kwargs):
        self.array, self.delay = array, delay
        self.calls: list[tuple] = []
        self.active = self.peak = 0
        self._count = threading.Lock()
        super().__init__(**kwargs)

    def _get_data(self, selection):
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append(selection)
        time.sleep(self.delay)
        with self._count:
            self.active -= 1
        return self.array[selection]

    def _get_maxshape(self):
        return self.array.shape

    def _get_dtype(self):
        return self.array.dtype


def _noise(shape, seed=0):
    return (np.random.default_rng(seed).normal(0, 20, size=shape)).astype("int16")


def _drain(path, it, chunks, **kwargs):
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", shape=it.maxshape, dtype=it.dtype, chunks=chunks, compression="gzip",
                                compression_opts=4)
        stats = drain_iterators([(dset, it)], progress=False, **kwargs)
    with h5py.File(path, "r") as f:
        return f["x"][()], stats


def test_planned_reads_run_concurrently_and_store_the_same_values(tmp_path):
    data = _noise((10_000, 12))
    it = ArrayIterator(data, delay=0.05, chunk_shape=(500, 12), buffer_shape=(4000, 12))
    stored, _ = _drain(tmp_path / "p.h5", it, (500, 12), workers=4, read_bytes=500 * 12 * 2)
    assert np.array_equal(stored, data)
    assert it.peak > 1  # several _get_data calls at once
    # every planned read is one chunk row, inside one buffer, and together they cover the data once
    assert all(s[0].stop - s[0].start <= 500 and s[0].start % 500 == 0 for s in it.calls)
    assert sorted((s[0].start, s[0].stop) for s in it.calls) == [(i, min(i + 500, 10_000)) for i in range(0, 10_000, 500)]


def test_planned_reads_stay_inside_the_engine_window(tmp_path):
    """One 1-buffer iterator (hdmf would read it whole): reads of one chunk row, at most the window's worth at once."""
    data = _noise((40 * 250, 16), seed=4)
    row = 250 * 16 * 2
    it = ArrayIterator(data, delay=0.01, chunk_shape=(250, 16), buffer_shape=data.shape)
    stored, _ = _drain(tmp_path / "m.h5", it, (250, 16), workers=8, read_bytes=row, max_inflight_bytes=3 * row)
    assert np.array_equal(stored, data)
    assert len(it.calls) == 40 and all(s[0].stop - s[0].start == 250 for s in it.calls)
    assert 1 < it.peak <= 3


def test_opt_out_reads_serially(tmp_path):
    data = _noise((6000, 5), seed=1)
    it = ArrayIterator(data, delay=0.02, chunk_shape=(500, 5), buffer_shape=(1000, 5))
    it.nwb_dask_parallel_reads = False
    stored, _ = _drain(tmp_path / "s.h5", it, (500, 5), workers=4)
    assert np.array_equal(stored, data)
    assert it.peak == 1
    assert [s[0].start for s in it.calls] == list(range(0, 6000, 1000))  # hdmf's buffers, in order


def test_started_iterator_is_not_planned(tmp_path):
    data = _noise((3000, 4), seed=2)
    it = ArrayIterator(data, chunk_shape=(500, 4), buffer_shape=(1000, 4))
    first = next(it)  # someone already iterated: the queue must not re-plan the buffers
    with h5py.File(tmp_path / "r.h5", "w") as f:
        dset = f.create_dataset("x", shape=data.shape, dtype=data.dtype, chunks=(500, 4), compression="gzip")
        dset[first.selection] = first.data
        drain_iterators([(dset, it)], progress=False, workers=2)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert np.array_equal(f["x"][()], data)
    assert len(it.calls) == 3


def test_wrong_shape_from_get_data_names_the_dataset(tmp_path):
    class Short(ArrayIterator):
        def _get_data(self, selection):
            return super()._get_data(selection)[:-1]

    it = Short(_noise((2000, 3)), chunk_shape=(500, 3), buffer_shape=(1000, 3))
    with pytest.raises(ValueError, match=r"/x.*_get_data returned shape \(\d+, 3\) for a selection of shape"):
        _drain(tmp_path / "w.h5", it, (500, 3))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 900), cols=st.integers(1, 9), c0=st.integers(1, 120), c1=st.integers(1, 9),
       b=st.integers(1, 4), read_rows=st.integers(1, 400))
def test_planned_selections_cover_each_element_once(rows, cols, c0, c1, b, read_rows):
    c0, c1 = min(c0, rows), min(c1, cols)
    it = ArrayIterator(np.zeros((rows, cols), "int16"), chunk_shape=(c0, c1),
                       buffer_shape=(min(rows, c0 * b), min(cols, c1 * b)))
    seen = np.zeros((rows, cols), int)
    for sel in planned_selections(it, (c0, c1), read_bytes=read_rows * cols * 2):
        assert sel[0].start % c0 == 0 and (sel[0].stop % c0 == 0 or sel[0].stop == rows)  # whole chunk rows
        seen[sel] += 1
    assert (seen == 1).all()


def test_file_gzip_is_within_one_percent_of_zlib(tmp_path):
    """The file's own gzip 4 (as hdmf/neuroconv configure it) is stored within 1% of h5py's zlib."""
    data = _noise((60_000, 32), seed=3)
    it = ArrayIterator(data, chunk_shape=(10_000, 32), buffer_shape=(30_000, 32))
    stored, stats = _drain(tmp_path / "z.h5", it, (10_000, 32), workers=2)
    assert np.array_equal(stored, data)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        ref = f.create_dataset("x", data=data, chunks=(10_000, 32), compression="gzip", compression_opts=4)
        zlib_bytes = ref.id.get_storage_size()
    with h5py.File(tmp_path / "z.h5", "r") as f:
        ours = f["x"].id.get_storage_size()
    assert ours <= 1.01 * zlib_bytes, (ours, zlib_bytes)


# --- against neuroconv's own mock interfaces ------------------------------------------------------------

needs_neuroconv = pytest.mark.skipif(
    importlib.util.find_spec("neuroconv") is None or importlib.util.find_spec("spikeinterface") is None,
    reason="the neuroconv extra (neuroconv, spikeinterface) is not installed",
)


def _write_both(tmp_path, interface, configure=None):
    import pynwb
    from neuroconv.tools.nwb_helpers import configure_backend, get_default_backend_configuration

    import nwb_dask

    paths = {}
    for name, io_class in (("hdf5io", pynwb.NWBHDF5IO), ("daskio", nwb_dask.NWBDaskIO)):
        nwbfile = interface.create_nwbfile(metadata=interface.get_metadata())
        config = get_default_backend_configuration(nwbfile, backend="hdf5")
        if configure:
            configure(config)
        configure_backend(nwbfile=nwbfile, backend_configuration=config)
        paths[name] = tmp_path / f"{name}.nwb"
        with io_class(paths[name], "w") as io:
            io.write(nwbfile)
    return paths


def _assert_same(a, b, name=SERIES):
    import hdf5plugin  # noqa: F401  (plugin filters)

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        da, db = fa[name], fb[name]
        assert (da.shape, da.dtype, da.chunks) == (db.shape, db.dtype, db.chunks)
        assert da._filters == db._filters  # filter ids and cd_values, in order
        assert np.array_equal(da[()], db[()])
        return dict(da._filters), da.chunks


@needs_neuroconv
def test_mock_recording_interface_matches_nwbhdf5io(tmp_path):
    from neuroconv.tools.testing.mock_interfaces import MockRecordingInterface

    interface = MockRecordingInterface(num_channels=16, durations=(3.0,))
    paths = _write_both(tmp_path, interface)
    filters, chunks = _assert_same(paths["hdf5io"], paths["daskio"])
    assert "gzip" in filters
    with h5py.File(paths["hdf5io"], "r") as a, h5py.File(paths["daskio"], "r") as b:  # zlib's size within 1%
        assert b[SERIES].id.get_storage_size() <= 1.01 * a[SERIES].id.get_storage_size()
    with h5py.File(paths["daskio"], "r") as f:
        data = f[SERIES]
        traces = interface.recording_extractor.get_traces()
        assert np.array_equal(data[()], traces)
    # pynwb reads it in a fresh process
    code = ("import hashlib, sys, pynwb; io = pynwb.NWBHDF5IO(sys.argv[1], 'r'); nwb = io.read(); "
            "d = nwb.acquisition['ElectricalSeries'].data; print(d.shape, hashlib.sha256(d[()].tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(paths["daskio"])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == hashlib.sha256(np.ascontiguousarray(traces).tobytes()).hexdigest()
    assert out.stdout.split(")")[0] + ")" == str(traces.shape)


@needs_neuroconv
def test_backend_configuration_with_hdf5plugin_codec_is_honoured(tmp_path):
    from neuroconv.tools.testing.mock_interfaces import MockRecordingInterface

    def zstd(config):
        for dataset in config.dataset_configurations.values():
            if dataset.location_in_file == SERIES:
                dataset.compressors = ["Zstd"]
                dataset.compressor_options = [{"clevel": 5}]
                dataset.chunk_shape = (7_500, 8)

    interface = MockRecordingInterface(num_channels=16, durations=(2.0,))
    paths = _write_both(tmp_path, interface, zstd)
    filters, chunks = _assert_same(paths["hdf5io"], paths["daskio"])
    assert filters["32015"] == (5,), filters  # hdf5plugin's Zstd, level 5
    assert chunks == (7_500, 8)


@needs_neuroconv
def test_benchmark_quick_prints_the_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "neuroconv.py"), "--quick"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("NWBHDF5IO") for line in lines) and any(line.startswith("NWBDaskIO") for line in lines)
    assert "values, chunks and filters identical" in out.stdout

"""read_nwb, external links and virtual datasets as dask arrays."""

from __future__ import annotations

import os

import dask.array as da
import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO

import nwb_dask
import nwb_dask.hdf5.read
from nwb_dask.testing import ephys_nwbfile


def _segments(folder, n=3, rows=2500, cols=16):
    rng = np.random.default_rng(1)
    parts = []
    gzip = nwb_dask.codec("gzip")
    for i in range(n):
        x = (rng.normal(size=(rows + 100 * i, cols)) * 30).astype("int16")
        with h5py.File(folder / f"seg{i}.h5", "w") as f:
            f.create_dataset("data", data=x, chunks=(500, cols), **gzip.dataset_kwargs())
        parts.append(x)
    return parts


def test_read_nwb_gives_dask_arrays_equal_to_pynwb(tmp_path):
    x = da.from_array((np.arange(300_000) % 1000).astype("int16").reshape(10_000, 30), chunks=(2_000, 30))
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(x, codec="zstd")), tmp_path / "s.nwb", progress=False)
    nwbfile = nwb_dask.read_nwb(tmp_path / "s.nwb", min_bytes=100_000)
    try:
        data = nwbfile.acquisition["ElectricalSeries"].data
        assert isinstance(data, da.Array)
        assert not isinstance(nwbfile.electrodes["location"].data, da.Array)  # small: as pynwb gives it
        assert nwbfile.acquisition["ElectricalSeries"].rate == 30_000.0
        np.testing.assert_array_equal(data.compute(), x.compute())
    finally:
        nwbfile.read_io.close()
    # The dask array reopens the file itself: still usable after close.
    np.testing.assert_array_equal(data[:7].compute(), x[:7].compute())


def test_external_link_reads_from_the_target_with_relative_paths(tmp_path, monkeypatch):
    (parts,) = [_segments(tmp_path, n=1)]
    with h5py.File(tmp_path / "main.h5", "w") as f:
        f["raw"] = h5py.ExternalLink("seg0.h5", "/data")  # relative to main.h5's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    arr = nwb_dask.read_dataset(tmp_path / "main.h5", "raw")
    np.testing.assert_array_equal(arr.compute(), parts[0])
    # The tasks read the link's target directly: the linking file is no longer needed.
    nwb_dask.hdf5.read._open.cache_clear()
    os.remove(tmp_path / "main.h5")
    np.testing.assert_array_equal(arr[100:200].compute(scheduler="sync"), parts[0][100:200])


def test_broken_external_link_is_a_clear_error_at_open_time(tmp_path):
    with h5py.File(tmp_path / "main.h5", "w") as f:
        f["raw"] = h5py.ExternalLink("missing_segment.h5", "/data")
    with pytest.raises(FileNotFoundError, match="/raw is an external link to missing_segment.h5:/data"):
        nwb_dask.read_dataset(tmp_path / "main.h5", "raw")


def test_nwb_with_externally_linked_data(tmp_path):
    (x,) = _segments(tmp_path, n=1)
    with h5py.File(tmp_path / "seg0.h5", "r") as src:
        nwbfile = ephys_nwbfile(src["data"])  # pynwb links an h5py dataset from another file
        with NWBHDF5IO(str(tmp_path / "linked.nwb"), "w") as io:
            io.write(nwbfile, link_data=True)
    with h5py.File(tmp_path / "linked.nwb", "r") as f:
        assert isinstance(f.get("acquisition/ElectricalSeries/data", getlink=True), h5py.ExternalLink)
    nwb = nwb_dask.read_nwb(tmp_path / "linked.nwb", min_bytes=0)
    try:
        data = nwb.acquisition["ElectricalSeries"].data
        assert isinstance(data, da.Array)
        np.testing.assert_array_equal(data.compute(), x)
    finally:
        nwb.read_io.close()


def test_virtual_dataset_across_segment_files(tmp_path, monkeypatch):
    parts = _segments(tmp_path, n=3)
    total = sum(len(p) for p in parts)
    layout = h5py.VirtualLayout(shape=(total, 16), dtype="int16")
    start = 0
    for i, p in enumerate(parts):
        layout[start : start + len(p)] = h5py.VirtualSource(f"seg{i}.h5", "data", shape=p.shape)
        start += len(p)
    with h5py.File(tmp_path / "joined.h5", "w") as f:
        f.create_virtual_dataset("data", layout)
    monkeypatch.chdir(tmp_path.parent)
    arr = nwb_dask.read_dataset(tmp_path / "joined.h5", "data", block_bytes=50_000)
    assert arr.numblocks[0] > 1
    np.testing.assert_array_equal(arr.compute(), np.concatenate(parts))


def test_linked_and_virtual_on_a_process_cluster(tmp_path):
    from distributed import Client, LocalCluster

    parts = _segments(tmp_path, n=2)
    with h5py.File(tmp_path / "main.h5", "w") as f:
        f["raw"] = h5py.ExternalLink("seg1.h5", "/data")
        layout = h5py.VirtualLayout(shape=(len(parts[0]) + len(parts[1]), 16), dtype="int16")
        layout[: len(parts[0])] = h5py.VirtualSource("seg0.h5", "data", shape=parts[0].shape)
        layout[len(parts[0]) :] = h5py.VirtualSource("seg1.h5", "data", shape=parts[1].shape)
        f.create_virtual_dataset("joined", layout)
    linked = nwb_dask.read_dataset(tmp_path / "main.h5", "raw", block_bytes=20_000)
    joined = nwb_dask.read_dataset(tmp_path / "main.h5", "joined", block_bytes=20_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            got_linked, got_joined = client.compute([linked, joined], sync=True)
    np.testing.assert_array_equal(got_linked, parts[1])
    np.testing.assert_array_equal(got_joined, np.concatenate(parts))


def test_nwbdaskio_read_mode(tmp_path):
    x = da.from_array(np.arange(600_000, dtype="int16").reshape(20_000, 30), chunks=(5_000, 30))
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(x)), tmp_path / "r.nwb", progress=False)
    with nwb_dask.NWBDaskIO(tmp_path / "r.nwb", "r") as io:
        assert not isinstance(io.read().acquisition["ElectricalSeries"].data, da.Array)  # 1.2 MB < 16 MiB
    with nwb_dask.NWBDaskIO(tmp_path / "r.nwb", "r") as io:
        data = io.read(min_bytes=1_000_000).acquisition["ElectricalSeries"].data
        assert isinstance(data, da.Array)
        np.testing.assert_array_equal(data.compute(), x.compute())

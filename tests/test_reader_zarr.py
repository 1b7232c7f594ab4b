"""NWB-Zarr style stores: datasets as dask arrays."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import nwb_dask


@pytest.fixture()
def store(tmp_path):
    x = (np.random.default_rng(4).normal(size=(7_001, 12)) * 30).astype("int16")
    root = zarr.open_group(str(tmp_path / "s.nwb.zarr"), mode="w")
    acq = root.create_group("acquisition/ElectricalSeries")
    arr = acq.create_array("data", shape=x.shape, dtype=x.dtype, chunks=(500, 12))
    arr[...] = x
    return tmp_path / "s.nwb.zarr", x


def test_zarr_dataset_as_dask_array(store):
    path, x = store
    arr = nwb_dask.read_dataset(path, "acquisition/ElectricalSeries/data", block_bytes=50_000)
    assert arr.numblocks[0] > 1 and all(c % 500 == 0 for c in arr.chunks[0][:-1])
    np.testing.assert_array_equal(arr.compute(), x)


def test_zarr_on_a_process_cluster(store):
    from distributed import Client, LocalCluster

    path, x = store
    arr = nwb_dask.read_dataset(path, "acquisition/ElectricalSeries/data", block_bytes=50_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            np.testing.assert_array_equal(client.compute(arr, sync=True), x)


def test_zarr_errors(store):
    path, _ = store
    with pytest.raises(KeyError, match="no dataset 'acquisition/missing'"):
        nwb_dask.read_dataset(path, "acquisition/missing")
    with pytest.raises(TypeError, match="not a dataset"):
        nwb_dask.read_dataset(path, "acquisition")

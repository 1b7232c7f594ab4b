"""NWB-Zarr stores (written by hdmf-zarr): datasets as dask arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import nwb_dask
from nwb_dask.testing import ephys_nwbfile

NAME = "acquisition/ElectricalSeries/data"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from hdmf_zarr import ZarrDataIO
    from hdmf_zarr.nwb import NWBZarrIO

    x = (np.random.default_rng(4).normal(size=(7_001, 12)) * 30).astype("int16")
    path = tmp_path_factory.mktemp("zarr") / "s.nwb.zarr"
    with NWBZarrIO(str(path), "w") as io:
        io.write(ephys_nwbfile(ZarrDataIO(x, chunks=(500, 12))))
    return path, x


def test_zarr_dataset_as_dask_array(store):
    path, x = store
    arr = nwb_dask.read_dataset(path, NAME, block_bytes=50_000)
    assert arr.numblocks[0] > 1 and all(c % 500 == 0 for c in arr.chunks[0][:-1])
    np.testing.assert_array_equal(arr.compute(), x)


def test_read_nwb_on_nwb_zarr(store):
    path, x = store
    nwbfile = nwb_dask.read_nwb(path, min_bytes=10_000, block_bytes=50_000)
    series = nwbfile.acquisition["ElectricalSeries"]
    assert isinstance(series.data, da.Array) and series.rate == 30_000.0
    np.testing.assert_array_equal(series.data.compute(), x)


def test_zarr_on_a_process_cluster(store):
    from distributed import Client, LocalCluster

    path, x = store
    arr = nwb_dask.read_nwb(path, min_bytes=10_000, block_bytes=50_000).acquisition["ElectricalSeries"].data
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            np.testing.assert_array_equal(client.compute(arr, sync=True), x)


def test_zarr_errors(store):
    path, _ = store
    with pytest.raises(KeyError, match="no dataset 'acquisition/missing'"):
        nwb_dask.read_dataset(path, "acquisition/missing")
    with pytest.raises(TypeError, match="not a dataset"):
        nwb_dask.read_dataset(path, "acquisition")

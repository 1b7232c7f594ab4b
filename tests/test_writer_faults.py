"""A distributed worker dying mid-write: dask retries the block, or the write ends with a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest

import nwb_dask


def _die_once(block, marker: str, block_id=None):
    """Kill this worker process the first time block 2 is computed."""
    if block_id[0] == 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return block


def _die_always(block, block_id=None):
    if block_id[0] == 2:
        os._exit(1)
    return block


def _cluster(allowed_failures: int):
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    return cluster, Client(cluster, set_as_default=False)


def _source():
    x = np.arange(80_000, dtype=np.int32).reshape(8_000, 10)
    return x, da.from_array(x, chunks=(1_000, 10))


def test_lost_worker_is_retried(tmp_path):
    cluster, client = _cluster(allowed_failures=3)
    try:
        x, arr = _source()
        arr = arr.map_blocks(_die_once, str(tmp_path / "died"), dtype=arr.dtype)
        gzip = nwb_dask.codec("gzip")
        with h5py.File(tmp_path / "retry.h5", "w") as f:
            dset = f.create_dataset("x", x.shape, x.dtype, chunks=(500, 10), **gzip.dataset_kwargs())
            nwb_dask.write_dask_array(arr, dset, scheduler=client, progress=False)
        assert (tmp_path / "died").exists(), "the worker was never killed: the test did not test anything"
        with h5py.File(tmp_path / "retry.h5", "r") as f:
            np.testing.assert_array_equal(f["x"][...], x)
    finally:
        client.close()
        cluster.close()


def test_worker_lost_for_good_is_a_clear_error_and_leaves_no_file(tmp_path):
    from distributed.scheduler import KilledWorker

    cluster, client = _cluster(allowed_failures=0)
    try:
        _, arr = _source()
        arr = arr.map_blocks(_die_always, dtype=arr.dtype)
        from nwb_dask.testing import ephys_nwbfile

        nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec="gzip"))
        with pytest.raises(KilledWorker) as err:
            nwb_dask.write_nwb(nwbfile, tmp_path / "lost.nwb", scheduler=client, progress=False)
        assert "acquisition/ElectricalSeries/data" in " ".join(getattr(err.value, "__notes__", []))
        assert list(tmp_path.iterdir()) == []
    finally:
        client.close()
        cluster.close()

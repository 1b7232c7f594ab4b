"""Full read plus a per-channel mean of a large gzip dataset: nwb_dask vs h5py.

Writes a synthetic 384-channel int16 recording (default 70 s, 1.6 GB) with
gzip-4+shuffle once, then in one run measures:

* ``h5py serial``: ``dset[...]`` then ``mean(axis=0)`` (HDF5's filter pipeline, one thread);
* ``da.from_array(h5py)``: ``da.from_array(dset, chunks=...)`` on the threaded scheduler
  (h5py's lock serialises the decompression);
* ``nwb_dask``: ``nwb_dask.read_dataset`` (direct chunk reads decoded on the
  workers) on the threaded scheduler, and on a LocalCluster of processes.

Usage::

    python benchmarks/read.py [--seconds 70] [--path existing.h5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import dask
import dask.array as da
import h5py
import numpy as np

import nwb_dask
from nwb_dask.testing import synthetic_ephys


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=70.0)
    ap.add_argument("--path", help="reuse this file (dataset 'x') instead of writing one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nwb_dask_read_") as tmp:
        path = args.path or os.path.join(tmp, "read.h5")
        if not args.path:
            arr = synthetic_ephys(seconds=args.seconds, seed=11)
            gzip = nwb_dask.codec("gzip", engine="libdeflate")
            with h5py.File(path, "w") as f:
                d = f.create_dataset("x", arr.shape, arr.dtype, chunks=(1250, 384), **gzip.dataset_kwargs())
                with dask.config.set(scheduler="threads"):
                    nwb_dask.write_dask_array(arr, d, gzip, progress=False)
        with h5py.File(path, "r") as f:
            shape, chunks, nbytes = f["x"].shape, f["x"].chunks, f["x"].size * f["x"].dtype.itemsize
            stored = f["x"].id.get_storage_size()
        print(f"# {shape} int16, {nbytes / 1e9:.2f} GB, chunks {chunks}, ratio {nbytes / stored:.2f}, "
              f"{os.cpu_count()} cpus; task: full read + per-channel mean")
        rows = []
        with h5py.File(path, "r") as f:
            t, ref = timed(lambda: f["x"][...].mean(axis=0))
        rows.append(("h5py serial", t))
        with h5py.File(path, "r") as f, dask.config.set(scheduler="threads"):
            x = da.from_array(f["x"], chunks=(chunks[0] * 24, 384))
            t, got = timed(lambda: x.mean(axis=0).compute())
        assert np.allclose(got, ref)
        rows.append(("da.from_array(h5py), threads", t))
        with dask.config.set(scheduler="threads"):
            t, got = timed(lambda: nwb_dask.read_dataset(path, "x").mean(axis=0).compute())
        assert np.allclose(got, ref)
        rows.append(("nwb_dask.read_dataset, threads", t))
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=os.cpu_count(), threads_per_worker=1, dashboard_address=None) as cluster:
            with Client(cluster):
                t, got = timed(lambda: nwb_dask.read_dataset(path, "x").mean(axis=0).compute())
        assert np.allclose(got, ref)
        rows.append(("nwb_dask.read_dataset, LocalCluster", t))
        base = rows[0][1]
        print(f"{'reader':<38} {'seconds':>8} {'MB/s':>7} {'x h5py':>7}")
        for name, t in rows:
            print(f"{name:<38} {t:>8.2f} {nbytes / 1e6 / t:>7.0f} {base / t:>7.2f}")


if __name__ == "__main__":
    main()

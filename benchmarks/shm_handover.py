#!/usr/bin/env python
"""A/B of the same-host handover (issue 19): results over TCP (``NWB_DASK_SHM=off``) vs a shared-memory file (on).

One LocalCluster of 2 single-threaded worker processes, the synthetic recording
persisted on it, written with gzip-4 + shuffle (or blosc lz4) into one HDF5 dataset per round
(``write_dask_array``), modes interleaved and rotated round by round so that
each sees the same load; the threaded scheduler on the same data (persisted in
this process) is the reference.  Reported per mode: best and median wall MB/s,
and the CPU-seconds of this process (client + scheduler) and of the workers
(user + system, from ``psutil``), medians: on a shared machine CPU-seconds are
the steadier figure.

Usage::

    python benchmarks/shm_handover.py --seconds 70 --rounds 5 [--codec blosc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=35.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="threads,off,on")
    ap.add_argument("--codec", choices=("gzip", "blosc"), default="gzip", help="gzip-4 + shuffle, or blosc lz4 + byte shuffle")
    args = ap.parse_args()

    import distributed
    import h5py

    import nwb_dask
    from nwb_dask.hdf5.write import write_dask_array
    from nwb_dask.testing import synthetic_ephys

    arr = synthetic_ephys(args.seconds)
    arr = arr.rechunk((30000, arr.shape[1]))
    gz = nwb_dask.codec("gzip") if args.codec == "gzip" else nwb_dask.codec("blosc", cname="lz4", shuffle="byte")
    modes = args.modes.split(",")
    rows: dict[str, list] = {m: [] for m in modes}
    print(f"# load at start: {open('/proc/loadavg').read().strip()}")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client, tempfile.TemporaryDirectory() as tmp:
        on_cluster = client.persist(arr)
        distributed.wait(on_cluster)
        local = arr.persist(scheduler="threads") if "threads" in modes else None
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for mode in order:
                os.environ["NWB_DASK_SHM"] = "off" if mode == "threads" else mode
                path = os.path.join(tmp, f"{mode}.h5")
                w0 = sum(client.run(_cpu).values())
                c0, t0 = _cpu(), time.perf_counter()
                with h5py.File(path, "w") as f:
                    d = f.create_dataset("x", arr.shape, arr.dtype, chunks=(1250, arr.shape[1]), **gz.dataset_kwargs())
                    if mode == "threads":
                        write_dask_array(local, d, scheduler="threads", progress=False)
                    else:
                        write_dask_array(on_cluster, d, scheduler=client, progress=False)
                wall, client_cpu = time.perf_counter() - t0, _cpu() - c0
                workers_cpu = sum(client.run(_cpu).values()) - w0
                rows[mode].append((arr.nbytes / 1e6 / wall, client_cpu, workers_cpu, os.getloadavg()[0]))
                os.remove(path)
    print(f"# {arr.nbytes / 1e9:.2f} GB {gz!r}, {args.rounds} rounds; load at end: "
          f"{open('/proc/loadavg').read().strip()}")
    print(f"{'mode':<8} {'best MB/s':>9} {'median':>7} {'/thr best':>9} {'/thr med':>8} {'client CPU-s':>12} "
          f"{'workers CPU-s':>13} {'load':>5}")
    ref = rows.get("threads")
    for mode, rs in rows.items():
        speeds = [r[0] for r in rs]
        best, med = max(speeds), statistics.median(speeds)
        rb = best / max(r[0] for r in ref) if ref else float("nan")
        rm = med / statistics.median(r[0] for r in ref) if ref else float("nan")
        print(f"{mode:<8} {best:>9.1f} {med:>7.1f} {rb:>9.2f} {rm:>8.2f} {statistics.median(r[1] for r in rs):>12.2f} "
              f"{statistics.median(r[2] for r in rs):>13.2f} {statistics.median(r[3] for r in rs):>5.2f}")


if __name__ == "__main__":
    main()

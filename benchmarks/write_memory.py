"""Peak RSS of the parallel writer does not grow with the data.

Writes synthetic 384-channel int16 recordings of increasing size (default 1 GB
and 8 GB) with ``nwb_dask.write_nwb``, each in a fresh subprocess, and prints
the writing process's peak RSS (``ru_maxrss``) and its ratio to the smallest.
Back-pressure (``max_inflight_bytes``) is what keeps it flat.

Usage::

    python benchmarks/write_memory.py [--gb 1,8] [--codec gzip] [--engine isal] [--scheduler threads]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

BYTES_PER_SECOND = 384 * 2 * 30_000


def child(gb: float, path: str, codec_spec, scheduler: str, inflight: int) -> None:
    import dask

    import nwb_dask
    from nwb_dask.testing import ephys_block, ephys_nwbfile, synthetic_ephys

    ephys_block(0, 10, seed=9)  # the generator's fixed noise bank, outside the measurement
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    arr = synthetic_ephys(seconds=gb * 1e9 / BYTES_PER_SECOND, seed=9)
    nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec=codec_spec))
    with dask.config.set(scheduler=scheduler):
        t0 = time.perf_counter()
        stats = nwb_dask.write_nwb(nwbfile, path, progress=False, max_inflight_bytes=inflight)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"gb": arr.nbytes / 1e9, "seconds": seconds, "peak_mb": peak, "base_mb": base, "ratio": stats.ratio}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", default="1,8", help="comma-separated sizes in GB (default 1,8)")
    ap.add_argument("--codec", default="gzip")
    ap.add_argument("--engine", default="isal", help="deflate engine for gzip (default isal)")
    ap.add_argument("--scheduler", default="threads", choices=["threads", "processes", "sync"])
    ap.add_argument("--inflight-mb", type=int, default=256)
    ap.add_argument("--child", nargs=2, metavar=("GB", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    spec = (args.codec, {"engine": args.engine}) if args.codec == "gzip" else args.codec
    if args.child:
        child(float(args.child[0]), args.child[1], spec, args.scheduler, args.inflight_mb * 2**20)
        return
    sizes = [float(x) for x in args.gb.split(",")]
    print(f"# nwb_dask write_nwb, codec {spec}, scheduler {args.scheduler}, max_inflight {args.inflight_mb} MiB, "
          f"{os.cpu_count()} cpus")
    print(f"{'GB':>6} {'seconds':>8} {'MB/s':>7} {'ratio':>6} {'peak RSS MB':>12} {'vs first':>9}")
    first = None
    with tempfile.TemporaryDirectory(prefix="nwb_dask_mem_") as tmp:
        for gb in sizes:
            path = os.path.join(tmp, "mem.nwb")
            cmd = [sys.executable, __file__, "--child", str(gb), path, "--codec", args.codec, "--engine", args.engine,
                   "--scheduler", args.scheduler, "--inflight-mb", str(args.inflight_mb)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first = first or r["peak_mb"]
            print(f"{r['gb']:>6.2f} {r['seconds']:>8.1f} {r['gb'] * 1e3 / r['seconds']:>7.0f} {r['ratio']:>6.3f} "
                  f"{r['peak_mb']:>12.0f} {r['peak_mb'] / first:>9.3f}")
            os.remove(path)


if __name__ == "__main__":
    main()

"""Consolidate a multi-file recording: nwb_dask.consolidate vs a serial h5py copy.

In one run: writes ``--segments`` segment NWB files (``--seconds`` each, 384-channel
int16, gzip), joins them into one NWB file as a virtual dataset
(``nwb_dask.join_timeseries``), then makes it self-contained

* with ``nwb_dask.consolidate``: the segments are chunked alike and each starts on a
  chunk boundary, so their chunks are copied as stored (no decode, no encode), then
  verified against the sources;
* with ``nwb_dask.consolidate(codec="gzip")``: every chunk decoded and encoded again by
  the parallel writer, verified;
* with plain h5py, block by block through HDF5's filters (gzip-4 + shuffle), unverified,

and prints time, throughput, ratio and peak RSS of each (the h5py copy runs in a
subprocess so its RSS is its own).

    python benchmarks/consolidate.py [--segments 3] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time

import nwb_dask
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

NAME = "acquisition/ElectricalSeries/data"
H5PY_COPY = textwrap.dedent(
    """
    import resource, sys, time, h5py
    src, dst, name = sys.argv[1:4]
    t = time.perf_counter()
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        v = fin[name]
        d = fout.create_dataset(name, shape=v.shape, dtype=v.dtype, chunks=(1365, v.shape[1]),
                                compression="gzip", compression_opts=4, shuffle=True)
        step = 1365 * 48
        for i in range(0, v.shape[0], step):
            d[i : i + step] = v[i : i + step]
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each segment")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nwb_dask_consolidate_") as tmp:
        paths = []
        for i in range(args.segments):
            p = os.path.join(tmp, f"seg{i}.nwb")
            data = synthetic_ephys(seconds=args.seconds, seed=i)
            nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(data), starting_time=args.seconds * i), p,
                               progress=False)
            paths.append(p)
        joined = nwb_dask.join_timeseries(paths)
        session = os.path.join(tmp, "session.nwb")
        nwb_dask.write_nwb(ephys_nwbfile(joined["data"], rate=joined["rate"], starting_time=joined["starting_time"]),
                           session, progress=False)
        nbytes = joined["data"].array.nbytes
        print(f"# {args.segments} segments x {args.seconds:g} s x 384 ch: {nbytes / 1e6:.0f} MB, virtual; "
              f"{os.cpu_count()} cpus")

        out = os.path.join(tmp, "standalone.nwb")
        t0 = time.perf_counter()
        result = nwb_dask.consolidate(session, out, progress=False)
        ours = time.perf_counter() - t0
        ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        ours_size = os.path.getsize(out)

        again = os.path.join(tmp, "reencoded.nwb")
        t0 = time.perf_counter()
        reencoded = nwb_dask.consolidate(session, again, codec="gzip", progress=False)
        encoding = time.perf_counter() - t0
        again_size = os.path.getsize(again)
        os.remove(again)

        copy = os.path.join(tmp, "h5py-copy.h5")
        proc = subprocess.run([sys.executable, "-c", H5PY_COPY, session, copy, NAME], capture_output=True, text=True,
                              check=True)
        theirs, theirs_rss = (float(v) for v in proc.stdout.split())
        theirs_size = os.path.getsize(copy)

    print()
    print(f"{'method':<40}{'seconds':>9}{'MB/s':>8}{'ratio':>7}{'peak RSS MB':>13}")
    print(f"{'nwb_dask.consolidate, raw (verified)':<40}{ours:>9.2f}{nbytes / 1e6 / ours:>8.0f}"
          f"{nbytes / ours_size:>7.2f}{ours_rss:>13.0f}")
    print(f"{'nwb_dask.consolidate, gzip (verified)':<40}{encoding:>9.2f}{nbytes / 1e6 / encoding:>8.0f}"
          f"{nbytes / again_size:>7.2f}{'-':>13}")
    print(f"{'h5py block copy, gzip-4 (unverified)':<40}{theirs:>9.2f}{nbytes / 1e6 / theirs:>8.0f}"
          f"{nbytes / theirs_size:>7.2f}{theirs_rss / 1e3:>13.0f}")
    print(f"\nspeed-up {theirs / ours:.1f}x; nwb_dask verified {len(result.datasets)} dataset(s), copied "
          f"{result.raw_chunks} chunks raw ({reencoded.raw_chunks} with codec='gzip'); its RSS includes writing "
          f"the segments; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

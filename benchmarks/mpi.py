"""Compressed-write throughput from MPI ranks: 1 vs 2 ranks, funnel and collective, and PyNWB's comm=.

In one run, on the same synthetic recording (384-channel int16, gzip-4 +
shuffle, default 20 s = 461 MB), each row launched with ``mpiexec``:

* ``funnel``: ``nwb_dask.mpi.write(nwbfile, path, mode="funnel")`` with this
  Python (h5py wheel, ``pip install mpi4py mpich``);
* ``collective``: the same with ``mode="collective"``, run by the Python of a
  parallel-HDF5 environment (``--parallel-python``, default ``.venv-mpi/bin/python``
  as made by ``scripts/install-parallel-h5py.sh``; skipped if missing) and
  Debian's ``mpiexec.mpich``;
* ``pynwb comm=``: PyNWB's own parallel route (each rank writing its slab
  through ``NWBHDF5IO(path, "a", comm=comm, driver="mpio")``), with gzip (what
  fails) and without compression (for scale), in the parallel environment.

Every rank builds the data lazily and generates one small block before the
clock starts (the generator's noise bank).  Ranks run with one BLAS/OpenMP
thread each (``ONE_THREAD``), as MPI jobs are run.  The time is rank 0's wall time
for the whole write, structure included; files are checked against the data.

    python benchmarks/mpi.py [--seconds 20] [--ranks 1 2] [--parallel-python PATH]
                             [--methods funnel ...] [--repeat N] [--block-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
#: One core per rank, as MPI jobs are run: numpy's BLAS would otherwise spread one rank over
#: every core (the synthetic generator mixes its LFP with a matrix product), so "1 rank"
#: would really be several.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- #
# one measurement, inside mpiexec                                              #
# --------------------------------------------------------------------------- #
def worker(method: str, seconds: float, out: str, block_mib: float) -> None:
    import numpy as np
    from mpi4py import MPI

    import nwb_dask
    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

    comm = MPI.COMM_WORLD
    data = synthetic_ephys(seconds=seconds, seed=0)
    data[:100].compute()  # build the generator's per-process tables before timing
    result = {"method": method, "ranks": comm.size, "mb": data.nbytes / 1e6}
    comm.Barrier()
    t0 = time.perf_counter()
    try:
        if method in ("funnel", "collective"):
            import nwb_dask.mpi

            nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(data, codec="gzip"))
            nwb_dask.mpi.write(nwbfile, out, comm=comm, mode=method, block_bytes=int(block_mib * 2**20))
        else:
            _pynwb_comm(comm, data, out, gzip=method == "pynwb-gzip")
        comm.Barrier()
        result["seconds"] = time.perf_counter() - t0
    except Exception as exc:  # PyNWB's compressed route fails: report the error as the result
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        comm.Abort(0) if comm.size > 1 and comm.rank != 0 else None
    if comm.rank == 0:
        if "seconds" in result:
            import h5py

            with h5py.File(out, "r") as f:
                d = f["acquisition/ElectricalSeries/data"]
                for start in range(0, d.shape[0], 600_000):
                    stop = min(start + 600_000, d.shape[0])
                    assert np.array_equal(d[start:stop], data[start:stop].compute()), f"{method}: data differ"
                result["stored_mb"] = d.id.get_storage_size() / 1e6
        print("RESULT " + json.dumps(result), flush=True)


def _pynwb_comm(comm, data, out: str, gzip: bool) -> None:
    """PyNWB's parallel route: the file is opened with ``comm=`` and each rank writes its slab.

    Creating the file itself with ``NWBHDF5IO(path, "w", comm=comm,
    driver="mpio")``, as PyNWB's parallel tutorial does, fails on this HDF5
    (1.10.8: "Parallel IO does not support writing VL or region reference
    datatypes yet"; an NWB file has variable-length strings), so rank 0
    creates it serially; then every rank opens it with the mpio driver
    through ``NWBHDF5IO`` and writes its rows.
    """
    import numpy as np
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO

    from nwb_dask.testing import ephys_nwbfile

    chunks = (1365, 384)  # 1 MiB, as nwb_dask would choose
    kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if gzip else {}
    if comm.rank == 0:
        empty = H5DataIO(shape=data.shape, dtype=data.dtype, chunks=chunks, **kwargs)
        with NWBHDF5IO(out, "w") as io:
            io.write(ephys_nwbfile(empty))
    comm.Barrier()
    rows = -(-data.shape[0] // comm.size)
    rows = -(-rows // chunks[0]) * chunks[0]  # whole chunks per rank
    lo, hi = comm.rank * rows, min((comm.rank + 1) * rows, data.shape[0])
    import h5py

    # NWBHDF5IO(out, "a", comm=comm, driver="mpio") fails here before writing anything
    # (hdmf opens the file once more without the communicator to load namespaces:
    # "set_fapl_mpio() takes exactly 2 positional arguments"), so hand it the same
    # mpio file object instead.
    with h5py.File(out, "a", driver="mpio", comm=comm) as f, NWBHDF5IO(file=f, mode="a") as io:
        dset = io.read().acquisition["ElectricalSeries"].data
        for start in range(lo, hi, chunks[0] * 16):
            stop = min(start + chunks[0] * 16, hi)
            dset[start:stop] = np.asarray(data[start:stop].compute(scheduler="sync"))


# --------------------------------------------------------------------------- #
# the driver                                                                   #
# --------------------------------------------------------------------------- #
def _mpiexec_for(python: str, parallel: bool) -> str | None:
    if parallel:
        return shutil.which("mpiexec.mpich") or "/usr/bin/mpiexec.mpich"
    here = os.path.dirname(python)
    return shutil.which("mpiexec", path=here + os.pathsep + os.environ.get("PATH", ""))


def run(method: str, ranks: int, python: str, parallel: bool, seconds: float, tmp: str, block_mib: float) -> dict:
    out = os.path.join(tmp, f"{method}-{ranks}.nwb")
    cmd = [_mpiexec_for(python, parallel), "-n", str(ranks), python, HERE, "--worker", method,
           "--seconds", str(seconds), "--out", out, "--block-mib", str(block_mib)]
    env = dict(os.environ, **ONE_THREAD)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            if os.path.exists(out):
                os.remove(out)
            return json.loads(line[7:])
    return {"method": method, "ranks": ranks, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parallel-python", default=os.path.join(os.path.dirname(HERE), "..", ".venv-mpi", "bin", "python"))
    ap.add_argument("--methods", nargs="+", default=["funnel", "collective", "pynwb-gzip", "pynwb-uncompressed"])
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per row; the table shows the median (rank counts alternate order per round)")
    ap.add_argument("--block-mib", type=float, default=64.0, help="nwb_dask.mpi.write block_bytes, MiB")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.seconds, args.out, args.block_mib)
        return

    parallel = os.path.abspath(args.parallel_python)
    have_parallel = os.path.exists(parallel)
    plan = [("funnel", sys.executable, False)]
    if have_parallel:
        plan += [("collective", parallel, True), ("pynwb-gzip", parallel, True), ("pynwb-uncompressed", parallel, True)]
    else:
        print(f"# no parallel-HDF5 Python at {parallel}: collective and pynwb comm= rows skipped "
              "(scripts/install-parallel-h5py.sh makes one)")
    plan = [p for p in plan if p[0] in args.methods]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nwb_dask_mpi_") as tmp:
        for method, python, par in plan:
            runs: dict[int, list] = {n: [] for n in args.ranks}
            for i in range(args.repeat):
                for n in (args.ranks if i % 2 == 0 else args.ranks[::-1]):  # alternate order against drift
                    r = run(method, n, python, par, args.seconds, tmp, args.block_mib)
                    runs[n].append(r)
                    print(f"# {method} x{n} round {i + 1}: {r.get('seconds', r.get('error'))}", flush=True)
            for n in args.ranks:
                ok = sorted((r for r in runs[n] if "seconds" in r), key=lambda r: r["seconds"])
                rows.append(ok[len(ok) // 2] if ok else runs[n][0])
    print()
    print(f"{'method':<22}{'ranks':>6}{'seconds':>9}{'MB/s':>8}{'ratio':>7}{'x 1 rank':>10}")
    base: dict[str, float] = {}
    for r in rows:
        if "seconds" not in r:
            print(f"{r['method']:<22}{r['ranks']:>6}   failed: {r['error']}")
            continue
        mbs = r["mb"] / r["seconds"]
        base.setdefault(r["method"], mbs) if r["ranks"] == min(args.ranks) else None
        speed = mbs / base[r["method"]] if r["method"] in base else float("nan")
        ratio = r["mb"] / r["stored_mb"]
        print(f"{r['method']:<22}{r['ranks']:>6}{r['seconds']:>9.2f}{mbs:>8.0f}{ratio:>7.2f}{speed:>10.2f}")
    print(f"\n(same data, gzip-4+shuffle except pynwb-uncompressed; {os.cpu_count()} cpus; target: 2 ranks >= 1.7x 1 rank)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark writing a large dask array to NWB/HDF5: pynwb, dask, raw h5py, nwb_dask.

The same synthetic 384-channel int16 recording (``nwb_dask.testing.synthetic_ephys``,
23 MB per second; 70 s = 1.6 GB by default) is written once per case, each case
in its own fresh Python subprocess, so peak RSS is per case:

(a) ``pynwb``              plain ``pynwb.NWBHDF5IO`` writing an ElectricalSeries whose
                           data is ``H5DataIO(DaskDataChunkIterator(arr), gzip 4, shuffle)``;
                           dask "threads" scheduler (HDF5 compresses in one thread).
(b) ``dask_to_hdf5``       ``dask.array.to_hdf5`` with gzip 4 + shuffle and the chunk shape
                           nwb_dask chooses; dask "threads" scheduler.
(c) ``h5py_raw``           plain h5py, uncompressed, same chunk shape, one dask block at a
                           time (``dset[sel] = block.compute()``): the practical limit.
(d) ``nwb_dask_gzip``      nwb_dask's parallel writer (``write_nwb`` + ``DaskDataIO``),
                           gzip 4 + shuffle, default deflate engine (ISA-L at level 4);
(d2) ``nwb_dask_gzip_libdeflate`` the same with the libdeflate engine (size first);
(e) ``nwb_dask_zstd``      zstd level 3 + shuffle, and ``nwb_dask_blosc`` blosc lz4 + byte shuffle.
(g) ``nwb_dask_gzip_sharded{1,2,4}`` sharded writes (``shards="workers"``): a LocalCluster
                           of 1/2/4 processes x 1 thread, each worker writing its own part
                           file; then ``consolidate`` (raw chunk copies) timed apart.
                           The nwb_dask cases run on a ``distributed.LocalCluster``
                           (``--workers`` processes x 1 thread) or, with
                           ``--scheduler threads``, on dask's threaded scheduler.
(f) ``nwb_dask_gzip_threads`` / ``nwb_dask_gzip_local`` (and ``_blosc_``): (d) and
                           ``nwb_dask_blosc`` pinned to one scheduler whatever
                           ``--scheduler`` says, so that one run compares the two
                           paths; column "local/thr" is a LocalCluster row's speed
                           over its threads row's.

With ``--persist`` the dask array is persisted before the timer: in the child
on the threaded scheduler (in this process's memory), or on the LocalCluster's
workers (``client.persist``), so the writer alone is timed (block compute,
encode, transfer and store), not the synthetic generator.

Measured per case (in the child):

* write time: wall time of the write call alone (file open to file closed).  Not
  included: imports, building the NWBFile, starting the LocalCluster, and the
  synthetic generator's one-off 32 MiB noise bank (built before the timer in
  the child and, for the LocalCluster, on every worker);
* MB/s = logical bytes / 1e6 / write time;
* ratio = logical bytes / ``dset.id.get_storage_size()`` (the dataset's stored bytes);
* peak RSS of the child process (``ru_maxrss``), and with a LocalCluster the sum
  of the workers' peak RSS too (the workers hold the blocks being compressed);
* verification: 3 random 1-second windows are read back with plain h5py and must
  equal the dask array, otherwise the case is reported as FAILED.

Columns "x (a)", "x (b)" are speed ratios to cases (a) and (b), "% of (c)" is
the speed as a percentage of (c), "ratio vs (a)" the compression ratio divided
by that of (a).  Cases whose API is not importable (yet) show "not available".
The machine may be shared: compare cases of one run, and re-run for noise.

Usage::

    python benchmarks/write.py                          # all cases, 70 s (1.6 GB)
    python benchmarks/write.py --seconds 3              # quick check
    python benchmarks/write.py --cases pynwb,nwb_dask_gzip --scheduler threads
    python benchmarks/write.py --persist --repeat 3 --cases nwb_dask_gzip_threads,nwb_dask_gzip_local,nwb_dask_blosc_threads,nwb_dask_blosc_local
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RATE = 30_000
N_CHANNELS = 384
NWB_DATASET = "/acquisition/ElectricalSeries/data"

#: case name -> (label in the table, nwb_dask codec spec or None[, scheduler]).  The
#: optional third item pins an nwb_dask case to "threads" or "local" (LocalCluster),
#: whatever ``--scheduler`` says; without it the case follows ``--scheduler``.
CASES: dict[str, tuple] = {
    "pynwb": ("(a)", None),
    "dask_to_hdf5": ("(b)", None),
    "h5py_raw": ("(c)", None),
    "nwb_dask_gzip": ("(d)", "gzip"),
    "nwb_dask_gzip_libdeflate": ("(d2)", ("gzip", {"engine": "libdeflate"})),
    "nwb_dask_zstd": ("(e)", ("zstd", {"level": 3, "shuffle": True})),
    "nwb_dask_blosc": ("(e)", ("blosc", {"cname": "lz4", "shuffle": "byte"})),
    "nwb_dask_gzip_threads": ("(f)", "gzip", "threads"),
    "nwb_dask_gzip_local": ("(f)", "gzip", "local"),
    "nwb_dask_blosc_threads": ("(f)", ("blosc", {"cname": "lz4", "shuffle": "byte"}), "threads"),
    "nwb_dask_blosc_local": ("(f)", ("blosc", {"cname": "lz4", "shuffle": "byte"}), "local"),
    # the same-host handover's A/B (the child's environment, NWB_DASK_SHM): results over the network instead
    # of a shared-memory file (nwb_dask.cluster.run_distributed)
    "nwb_dask_gzip_local_tcp": ("(f)", "gzip", "local", {"NWB_DASK_SHM": "off"}),
    "nwb_dask_blosc_local_tcp": ("(f)", ("blosc", {"cname": "lz4", "shuffle": "byte"}), "local", {"NWB_DASK_SHM": "off"}),
    # sharded writes (s19): gzip, one part per worker of a LocalCluster of 1/2/4 processes (_write_sharded)
    "nwb_dask_gzip_sharded1": ("(g)", "gzip", "local"),
    "nwb_dask_gzip_sharded2": ("(g)", "gzip", "local"),
    "nwb_dask_gzip_sharded4": ("(g)", "gzip", "local"),
}


def case_scheduler(name: str, default: str) -> str:
    """The scheduler a case runs on: the one its CASES entry pins, else ``default`` (``--scheduler``)."""
    entry = CASES[name]
    return entry[2] if len(entry) > 2 else default


def _threads_twin(name: str) -> str | None:
    """The threads case with the same codec as the LocalCluster case ``name`` (for the local/threads ratio)."""
    if "_local" not in name:
        return None
    twin = name[: name.rindex("_local")] + "_threads"
    return twin if twin in CASES else None
GZIP_H5 = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _mb(kib: int) -> float:
    """ru_maxrss is in KiB on Linux."""
    return kib * 1024 / 1e6


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_now_kib() -> int:
    """This process's current RSS in KiB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _warm_generator() -> None:
    """Build the synthetic generator's cached noise bank (a one-off cost per process)."""
    from nwb_dask.testing import ephys_block

    ephys_block(0, 1, N_CHANNELS)


# --------------------------------------------------------------------------- child


def _write_pynwb(arr, path, args):
    import dask
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO

    from nwb_dask import DaskDataChunkIterator
    from nwb_dask.testing import ephys_nwbfile

    nwbfile = ephys_nwbfile(H5DataIO(DaskDataChunkIterator(arr), **GZIP_H5))
    with dask.config.set(scheduler="threads"):
        t0 = time.perf_counter()
        with NWBHDF5IO(path, "w") as io:
            io.write(nwbfile)
        return time.perf_counter() - t0, NWB_DATASET, {}


def _write_dask_to_hdf5(arr, path, args):
    import dask
    import dask.array as da

    with dask.config.set(scheduler="threads"):
        t0 = time.perf_counter()
        da.to_hdf5(path, "/data", arr, chunks=tuple(args.chunk_shape), **GZIP_H5)
        return time.perf_counter() - t0, "/data", {}


def _write_h5py_raw(arr, path, args):
    import dask
    import h5py
    import numpy as np

    offsets = [np.cumsum((0,) + c) for c in arr.chunks]
    with dask.config.set(scheduler="threads"):
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            dset = f.create_dataset("data", shape=arr.shape, dtype=arr.dtype, chunks=tuple(args.chunk_shape))
            for block_id in np.ndindex(*arr.numblocks):
                sel = tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, block_id))
                dset[sel] = arr.blocks[block_id].compute()
        return time.perf_counter() - t0, "/data", {}


def _write_nwb_dask(arr, path, args, spec):
    """nwb_dask's parallel writer; raises _NotAvailable when its API is missing."""
    try:
        from nwb_dask import DaskDataIO, write_nwb
    except ImportError as exc:
        raise _NotAvailable(f"nwb_dask.write_nwb/DaskDataIO: {exc}") from exc
    import nwb_dask
    from nwb_dask.testing import ephys_nwbfile

    try:
        nwb_dask.codec(spec)
    except nwb_dask.CodecError as exc:
        raise _NotAvailable(str(exc)) from exc

    extra = {}
    if case_scheduler(args.case, args.scheduler) == "threads":
        import dask

        nwbfile = ephys_nwbfile(DaskDataIO(arr, codec=spec))  # arr: persisted by run_child with --persist
        with dask.config.set(scheduler="threads"):
            t0 = time.perf_counter()
            write_nwb(nwbfile, path, progress=False)
            seconds = time.perf_counter() - t0
    else:
        import logging

        from distributed import Client, LocalCluster, wait

        logging.getLogger("distributed").setLevel(logging.ERROR)
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:
            client.run(_warm_generator)
            if args.persist:  # the blocks live on the workers: the writer alone is timed
                arr = client.persist(arr)
                wait(arr)
                extra["workers_rss_persisted_mb"] = sum(_mb(v) for v in client.run(_rss_now_kib).values())
            nwbfile = ephys_nwbfile(DaskDataIO(arr, codec=spec))
            t0 = time.perf_counter()
            write_nwb(nwbfile, path, progress=False)
            seconds = time.perf_counter() - t0
            rss = [_mb(v) for v in client.run(_peak_rss_kib).values()]
            extra["workers_rss_mb"] = sum(rss)
            extra["worker_rss_max_mb"] = max(rss)
            del nwbfile, arr
    return seconds, NWB_DATASET, extra


class _NotAvailable(Exception):
    pass


# ------------------------------------------------------------- sharded writes (s19)
#: sharded case -> LocalCluster workers (1 thread each), one part file per worker
SHARDED = {"nwb_dask_gzip_sharded1": 1, "nwb_dask_gzip_sharded2": 2, "nwb_dask_gzip_sharded4": 4}


def _write_sharded(arr, path, args):
    """``write_nwb(..., shards="workers")`` on a LocalCluster of SHARDED[case] processes, then consolidate.

    The blocks are generated on the workers (persisted there first with
    ``--persist``, where the benchmark has it).  Timed: the write alone; then
    :func:`nwb_dask.consolidate` (raw chunk copies) separately.  Reported: the
    workers' peak RSS (sum and largest), the parts' stored bytes, the
    consolidate time and the chunks it copied raw.
    """
    import logging

    from distributed import Client, LocalCluster, wait

    import nwb_dask
    from nwb_dask.testing import ephys_nwbfile

    logging.getLogger("distributed").setLevel(logging.ERROR)
    extra = {}
    with LocalCluster(n_workers=SHARDED[args.case], threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_warm_generator)
        if getattr(args, "persist", False):
            arr = client.persist(arr)
            wait(arr)
        nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec=CASES[args.case][1]))
        t0 = time.perf_counter()
        stats = nwb_dask.write_nwb(nwbfile, path, scheduler=client, shards="workers", progress=False)
        seconds = time.perf_counter() - t0
        rss = [_mb(v) for v in client.run(_peak_rss_kib).values()]
        extra.update(workers_rss_mb=sum(rss), worker_rss_max_mb=max(rss), stored_bytes=stats.stored_bytes,
                     parts=SHARDED[args.case], rss_peak_mb=_mb(_peak_rss_kib()))  # the client's, before consolidate
        del nwbfile, arr
    one = path + ".consolidated.nwb"
    t0 = time.perf_counter()
    result = nwb_dask.consolidate(path, one, scheduler="threads", progress=False)
    extra.update(consolidate_seconds=time.perf_counter() - t0, raw_chunks=result.raw_chunks)
    os.remove(one)
    return seconds, NWB_DATASET, extra


def _sharded_summary(results: dict, cases: list) -> None:
    """The sharded rows against the single-writer LocalCluster row (d), and consolidate."""
    rows = [n for n in cases if n in SHARDED and results[n]["status"] == "ok"]
    if not rows:
        return
    # the single-writer LocalCluster gzip row: a case pinned to the LocalCluster if there is one, else (d)
    pinned = [n for n in ("nwb_dask_gzip_local", "nwb_dask_gzip") if n in results and results[n]["status"] == "ok"]
    ref = results[pinned[0]]["mb_s"] if pinned else None
    print(f"\n# sharded (g): one part per LocalCluster worker; x single = speed over the single writer "
          f"{pinned[0] if pinned else '(not run)'} (it runs on a LocalCluster unless --scheduler threads)")
    print(f"{'case':<25} {'MB/s':>7} {'x single':>8} {'workers RSS MB sum/max':>22} {'consolidate s':>13} "
          f"{'raw chunks':>10}")
    for name in rows:
        r = results[name]
        print(f"{name:<25} {r['mb_s']:>7.1f} {_fmt(r['mb_s'] / ref if ref else None, '>8.2f'):>8} "
              f"{r['workers_rss_mb']:>12.0f}/{r['worker_rss_max_mb']:<9.0f} {r['consolidate_seconds']:>13.2f} "
              f"{r['raw_chunks']:>10}")


def _verify(path, dataset, arr, seed=0):
    """Compare 3 random 1-second windows of the file with the dask array."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    n = arr.shape[0]
    win = min(RATE, n)
    with h5py.File(path, "r") as f:
        dset = f[dataset]
        assert dset.shape == arr.shape, f"shape {dset.shape} != {arr.shape}"
        assert dset.dtype == arr.dtype, f"dtype {dset.dtype} != {arr.dtype}"
        stored = dset.id.get_storage_size()
        chunks = dset.chunks
        for start in rng.integers(0, n - win + 1, 3):
            start = int(start)
            got = dset[start : start + win, :]
            want = arr[start : start + win, :].compute(scheduler="threads")
            assert np.array_equal(got, want), f"{path}:{dataset} differs from the source at samples {start}:{start + win}"
    return stored, chunks


def run_child(args) -> dict:
    # Import the same stack in every case, so the RSS baselines are comparable.
    import dask.array  # noqa: F401
    import h5py  # noqa: F401
    import pynwb  # noqa: F401

    import nwb_dask
    import nwb_dask.testing  # not imported by the package any more (issue 16)

    source = arr = nwb_dask.testing.synthetic_ephys(args.seconds, N_CHANNELS, RATE)
    _warm_generator()
    out = {"case": args.case, "logical_bytes": int(arr.nbytes), "rss_start_mb": _mb(_peak_rss_kib())}
    on_cluster = args.case in CASES and CASES[args.case][1] is not None and case_scheduler(args.case, args.scheduler) == "local"
    if args.persist and not on_cluster:  # a LocalCluster case persists on its workers (_write_nwb_dask)
        arr = arr.persist(scheduler="threads")
        out["rss_persisted_mb"] = _mb(_rss_now_kib())
    ext = "h5" if args.case in ("dask_to_hdf5", "h5py_raw") else "nwb"
    path = os.path.join(args.tmpdir, f"{args.case}.{ext}")
    try:
        if args.case == "pynwb":
            seconds, dataset, extra = _write_pynwb(arr, path, args)
        elif args.case == "dask_to_hdf5":
            seconds, dataset, extra = _write_dask_to_hdf5(arr, path, args)
        elif args.case == "h5py_raw":
            seconds, dataset, extra = _write_h5py_raw(arr, path, args)
        elif args.case in SHARDED:
            seconds, dataset, extra = _write_sharded(arr, path, args)
        else:
            seconds, dataset, extra = _write_nwb_dask(arr, path, args, CASES[args.case][1])
        out["rss_peak_mb"] = _mb(_peak_rss_kib())  # before verification reads
        out.update(extra)
        out["write_seconds"] = seconds
        out["file_bytes"] = os.path.getsize(path)
        stored, chunks = _verify(path, dataset, source)  # the generator again: pure, and not on a closed cluster
        stored = extra.get("stored_bytes", stored)  # a sharded file's dataset is virtual: its parts hold the bytes
        out.update(status="ok", stored_bytes=int(stored), chunks=list(chunks) if chunks else None)
    except _NotAvailable as exc:
        out.update(status="not available", error=str(exc))
    finally:
        if os.path.exists(path):
            os.remove(path)
        shutil.rmtree(path + ".parts", ignore_errors=True)  # a sharded write's part files
    return out


# -------------------------------------------------------------------------- parent


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import h5py

    parts = [f"python {platform.python_version()}"]
    for pkg in ("numpy", "h5py", "hdmf", "pynwb", "dask", "distributed", "hdf5plugin", "nwb_dask"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} -")
    parts.append(f"HDF5 {h5py.version.hdf5_version}")
    return ", ".join(parts)


def _deflate_engines() -> str:
    try:
        from nwb_dask.codecs.deflate import DEFLATE_ENGINES, ENGINES, auto_engine

        found = [e for e in DEFLATE_ENGINES if e in ENGINES]
        return f"{auto_engine(4)} at level 4 (installed: {', '.join(found)})"
    except Exception:  # pragma: no cover - informative only
        return "?"


def _run_case(name, args, tmpdir, chunk_shape) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--case", name,
        "--seconds", repr(args.seconds),
        "--scheduler", args.scheduler,
        "--workers", str(args.workers),
        "--tmpdir", tmpdir,
        "--chunk-shape", ",".join(map(str, chunk_shape)),
    ] + (["--persist"] if args.persist else [])  # fmt: skip
    env = {**os.environ, **(CASES[name][3] if len(CASES[name]) > 3 else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}, no output"])[-1]
    return {"case": name, "status": "FAILED", "error": tail, "stderr": proc.stderr}


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=70.0, help="recording length (23 MB per second; default 70 = 1.6 GB)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {','.join(CASES)}")
    ap.add_argument("--scheduler", choices=("local", "threads"), default="local",
                    help="scheduler of the nwb_dask cases: distributed LocalCluster of processes, or dask threads")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (1 thread each)")
    ap.add_argument("--persist", action="store_true",
                    help="persist the dask array before the timer (threads: in the child; LocalCluster: on the "
                         "workers), so that the writer alone is timed")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all cases; each row shows its best round (and the median of all) - "
                         "for a shared, noisy machine")
    ap.add_argument("--tmpdir", default=None, help="directory for the files (default: a new temporary directory, removed)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--chunk-shape", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()

    if args.case:
        args.chunk_shape = tuple(int(c) for c in args.chunk_shape.split(",")) if args.chunk_shape else None
        print(json.dumps(run_child(args)), flush=True)
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    import nwb_dask
    import nwb_dask.testing  # not imported by the package any more (issue 16)

    arr = nwb_dask.testing.synthetic_ephys(args.seconds, N_CHANNELS, RATE)
    chunk_shape = nwb_dask.DaskDataChunkIterator(arr).recommended_chunk_shape()
    ncpu = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = ncpu
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# cpus: {ncpu} ({usable} usable), load average at start: {load}")
    print(f"# data: {arr.shape[0]} samples x {arr.shape[1]} channels int16 = {args.seconds:g} s, "
          f"{arr.nbytes / 1e9:.3f} GB (MB = 1e6 bytes); dask blocks {arr.chunksize}")
    print(f"# HDF5 chunk shape (nwb_dask's choice): {chunk_shape}; gzip = level 4 + shuffle; "
          f"nwb_dask deflate engine 'auto' = {_deflate_engines()}")
    print(f"# nwb_dask scheduler: {'LocalCluster ' + str(args.workers) + ' processes x 1 thread' if args.scheduler == 'local' else 'dask threads'}; "
          "(a)-(c): dask threads; *_threads / *_local cases: threads / LocalCluster whatever --scheduler says"
          + ("; data persisted before the timer (--persist)" if args.persist else ""))
    print(f"# {_versions()}")
    print(flush=True)

    own_tmp = args.tmpdir is None
    tmpdir = tempfile.mkdtemp(prefix="nwb_dask_write_bench_") if own_tmp else args.tmpdir
    os.makedirs(tmpdir, exist_ok=True)
    results = {}
    try:
        for round_ in range(args.repeat):  # rounds of every case, so that each case sees the same load
            for name in cases:
                print(f"... {name}" + (f" (round {round_ + 1}/{args.repeat})" if args.repeat > 1 else ""),
                      file=sys.stderr, flush=True)
                r = _run_case(name, args, tmpdir, chunk_shape)
                r["load"] = os.getloadavg()[0]
                if r["status"] == "ok":
                    r["mb_s"] = r["logical_bytes"] / 1e6 / r["write_seconds"]
                    r["ratio"] = r["logical_bytes"] / max(1, r["stored_bytes"])
                    if r.get("chunks") and tuple(r["chunks"]) != tuple(chunk_shape):
                        r["note"] = f"chunks {tuple(r['chunks'])}"
                best = results.get(name)
                speeds = (best or {}).get("all_mb_s", []) + ([r["mb_s"]] if r["status"] == "ok" else [])
                if best is None or best["status"] != "ok" or (r["status"] == "ok" and r["mb_s"] > best["mb_s"]):
                    best = results[name] = r  # the best round's row (a failed round is kept only if all fail)
                best["all_mb_s"] = speeds
                for leftover in os.listdir(tmpdir):  # a crashed child may leave its file
                    if leftover.startswith(name + "."):
                        where = os.path.join(tmpdir, leftover)
                        shutil.rmtree(where) if os.path.isdir(where) else os.remove(where)  # a sharded write's parts
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def ref(name, key):
        r = results.get(name)
        return r.get(key) if r and r["status"] == "ok" else None

    a_speed, b_speed, c_speed, a_ratio = ref("pynwb", "mb_s"), ref("dask_to_hdf5", "mb_s"), ref("h5py_raw", "mb_s"), ref("pynwb", "ratio")
    cols = (f"{'case':<29} {'MB/s':>7} {'write s':>8} {'ratio':>6} {'peak RSS MB':>11} {'+workers MB':>11} "
            f"{'max wkr MB':>10} {'local/thr':>9} {'x (a)':>6} {'x (b)':>6} {'% of (c)':>8} {'ratio vs (a)':>12}"
            + (f" {'median MB/s':>11} {'load':>5}" if args.repeat > 1 else ""))
    print(cols)
    print("-" * len(cols))
    failed = False
    for name in cases:
        r = results[name]
        label = f"{CASES[name][0]} {name}"
        if r["status"] != "ok":
            failed |= r["status"] == "FAILED"
            print(f"{label:<29} {r['status']}: {r.get('error', '')}")
            continue
        s, q = r["mb_s"], r["ratio"]
        twin = _threads_twin(name)
        twin_speed = ref(twin, "mb_s") if twin else None
        print(
            f"{label:<29} {s:>7.1f} {r['write_seconds']:>8.2f} {q:>6.3f} {r['rss_peak_mb']:>11.0f} "
            f"{_fmt(r.get('workers_rss_mb'), '>11.0f'):>11} {_fmt(r.get('worker_rss_max_mb'), '>10.0f'):>10} "
            f"{_fmt(s / twin_speed if twin_speed else None, '>9.2f'):>9} "
            f"{_fmt(s / a_speed if a_speed else None, '>6.2f'):>6} {_fmt(s / b_speed if b_speed else None, '>6.2f'):>6} "
            f"{_fmt(100 * s / c_speed if c_speed else None, '.0f') + ('%' if c_speed else ''):>8} "
            f"{_fmt(q / a_ratio if a_ratio else None, '>12.3f'):>12}"
            + (f" {statistics.median(r['all_mb_s']):>11.1f} {r['load']:>5.2f}" if args.repeat > 1 else "")
            + (f"  ({r['note']})" if r.get("note") else "")
        )
    _sharded_summary(results, cases)
    rss0 = [r["rss_start_mb"] for r in results.values() if "rss_start_mb" in r]
    if rss0:
        print(f"\n# peak RSS = the child process's ru_maxrss; its RSS before writing (imports, generator bank) "
              f"was {min(rss0):.0f}-{max(rss0):.0f} MB.  +workers = sum of LocalCluster workers' peak RSS, "
              f"max wkr = the largest; local/thr = a _local case's MB/s over its _threads case's (same run).")
        if args.persist:
            print("# --persist: threads rows' peak RSS includes the persisted array, LocalCluster rows' workers hold it")
    if args.repeat > 1:
        print(f"# {args.repeat} rounds of all cases; each row is its best round (its load average: the 1-minute one "
              "at its end); median MB/s over all rounds")
    print("# every written file passed the check: 3 random 1 s windows read with h5py equal the source"
          if not failed else "# FAILED cases did not write a correct file (or crashed): see above")
    for name in cases:
        if results[name]["status"] == "FAILED" and results[name].get("stderr"):
            print(f"\n# stderr of {name}:\n" + results[name]["stderr"][-3000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""NWB-Zarr write throughput: nwb_dask's Zarr writer vs hdmf-zarr's own ``number_of_jobs`` parallel write vs nwb_dask's HDF5 writer.

In one run, on the same synthetic recording (384-channel int16 at 30 kHz from
``nwb_dask.testing.synthetic_ephys``, default 30 s = 691 MB), with the same chunk
shape and the same compression (gzip level 4 + byte shuffle), each row in a
fresh subprocess:

* ``nwb_dask zarr threads``: ``nwb_dask.zarr.write_nwb_zarr(ephys_nwbfile(
  DaskDataIO(data, codec="gzip")), path)`` on dask's threaded scheduler, 2 workers;
* ``nwb_dask zarr thr zlib``: the same with ``codec=("gzip", {"engine": "zlib"})``:
  nwb_dask's default deflate engine at level 4 is ISA-L (faster, compresses a
  little less); with zlib the stored bytes are exactly numcodecs'
  ``Zlib(level=4)``'s, as in the hdmf-zarr rows, so this row separates the
  writer from the engine;
* ``nwb_dask zarr local``: the same on a ``distributed.LocalCluster(processes=True,
  n_workers=2, threads_per_worker=1)`` (workers warmed up before the clock);
* ``hdmf-zarr jobs=2``: hdmf-zarr's own parallel write,
  ``NWBZarrIO(path, "w").write(nwbfile, number_of_jobs=2)``.  hdmf-zarr only
  parallelizes ``GenericDataChunkIterator`` data that pickles through
  ``_to_dict``/``_from_dict``, so the data is :class:`SyntheticIterator` (a
  small ``GenericDataChunkIterator`` over the same dask array; one buffer = one
  30000-sample dask block = 24 chunks) in ``hdmf_zarr.ZarrDataIO(chunks=<nwb_dask's
  chunk shape>, compressor=numcodecs.Zlib(level=4), filters=[numcodecs.Shuffle(elementsize=2)])``.
  Its ``ProcessPoolExecutor`` forks from the child after the generator is
  warmed, so the workers inherit the warm generator; hdmf-zarr sends the
  iterator with every buffer (it pickles as its parameters and is rebuilt in
  the worker: about 10 ms per 23 MB buffer);
* ``hdmf-zarr jobs=1``: the same, serial (``number_of_jobs=1``), for scale;
* ``nwb_dask hdf5 threads``: ``nwb_dask.write_nwb(ephys_nwbfile(DaskDataIO(data,
  codec="gzip")), path)`` on dask threads (2 workers);
* ``source only``: computing the dask array on 2 threads, nothing written (the
  generator's own cost, a floor for every row).

Chunk shape: what ``DaskDataIO`` chooses, i.e. ``guess_chunk_shape(shape, dtype)``
= (1365, 384) nudged by ``fit_to_blocks`` to (1250, 384) so chunks tile the
30000-sample dask blocks; every row stores that chunk shape (checked).

Columns: write time (whole file or store, structure included); MB/s = logical
(uncompressed) MB / write time (MB = 1e6 bytes); ratio = logical bytes /
stored bytes (Zarr: the sum of the ElectricalSeries array's chunk files; HDF5:
``get_storage_size``); peak RSS of the child process (``ru_maxrss``) and the
sum of its workers' peak RSS (LocalCluster workers via ``client.run``;
hdmf-zarr's pool workers sampled at each buffer they fetch, which counts pages
a forked worker shares with its parent once per worker); "x jobs=2" / "x
jobs=1" = speed relative to hdmf-zarr's rows of the same run.  Every output is
verified: 3 random 1-second windows read back (Zarr with ``zarr.open``, HDF5
with h5py) must equal the source, else the row says FAILED; Zarr stores are
also opened with ``hdmf_zarr.NWBZarrIO`` and the note says if that fails.  The
machine (2 cores) may be shared: compare rows of one run; ``--repeat N``
alternates the row order per round and reports medians.

Usage::

    python benchmarks/zarr_convert.py              # all rows, 30 s (691 MB)
    python benchmarks/zarr_convert.py --seconds 3  # quick check
    python benchmarks/zarr_convert.py --cases hdmf_zarr_jobs2,nwb_dask_zarr_threads --repeat 3
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
DATASET = "acquisition/ElectricalSeries/data"
WORKERS = 2
#: nwb_dask's gzip with the zlib engine: the bytes numcodecs.Zlib(level=4) (hdmf-zarr's rows) produces.
ZLIB_CODEC = ("gzip", {"engine": "zlib"})

#: case name -> label in the table
CASES: dict[str, str] = {
    "nwb_dask_zarr_threads": "nwb_dask zarr threads",
    "nwb_dask_zarr_threads_zlib": "nwb_dask zarr thr zlib",
    "nwb_dask_zarr_local": "nwb_dask zarr local",
    "hdmf_zarr_jobs2": "hdmf-zarr jobs=2",
    "hdmf_zarr_jobs1": "hdmf-zarr jobs=1",
    "nwb_dask_hdf5_threads": "nwb_dask hdf5 threads",
    "source_only": "source only",
}


def _mb(kib: int) -> float:
    """ru_maxrss is in KiB on Linux."""
    return kib * 1024 / 1e6


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _warm_generator() -> None:
    """Build the generator's cached noise bank and pay its other first-call costs (~0.2 s per process)."""
    from nwb_dask.testing import ephys_block

    ephys_block(0, RATE, N_CHANNELS)


def _source(seconds: float):
    import nwb_dask
    import nwb_dask.testing  # not imported by the package any more (issue 16)

    return nwb_dask.testing.synthetic_ephys(seconds, N_CHANNELS, RATE)


# --------------------------------------------------------------------------- hdmf-zarr's iterator


def _iterator_class():
    """Defined lazily so the parent process need not import hdmf."""
    global SyntheticIterator
    if "SyntheticIterator" in globals():
        return SyntheticIterator
    from hdmf.data_utils import GenericDataChunkIterator

    class SyntheticIterator(GenericDataChunkIterator):
        """The synthetic recording as a picklable ``GenericDataChunkIterator`` (what hdmf-zarr's parallel write needs).

        Pickles as its parameters (``_to_dict``/``_from_dict``); each buffer is
        computed from the same dask array with the synchronous scheduler.  With
        ``rss_dir``, every buffer fetch records the process's peak RSS in
        ``rss_dir/<pid>`` (for the table's worker RSS column).
        """

        def __init__(self, seconds, chunk_shape, buffer_shape, rss_dir=None):
            self._seconds = float(seconds)
            self._rss_dir = rss_dir
            self._array = _source(self._seconds)
            super().__init__(chunk_shape=tuple(chunk_shape), buffer_shape=tuple(buffer_shape), display_progress=False)

        def _get_data(self, selection):
            self._record_rss()
            data = self._array[selection].compute(scheduler="sync")
            self._record_rss()
            return data

        def _get_maxshape(self):
            return tuple(self._array.shape)

        def _get_dtype(self):
            return self._array.dtype

        def _to_dict(self):
            return {"seconds": self._seconds, "chunk_shape": list(self.chunk_shape),
                    "buffer_shape": list(self.buffer_shape), "rss_dir": self._rss_dir}

        @classmethod
        def _from_dict(cls, dictionary):
            return cls(dictionary["seconds"], dictionary["chunk_shape"], dictionary["buffer_shape"],
                       dictionary["rss_dir"])

        def _record_rss(self):
            if self._rss_dir and os.getpid() != _CHILD_PID:
                with open(os.path.join(self._rss_dir, str(os.getpid())), "w") as f:
                    f.write(str(_peak_rss_kib()))

    SyntheticIterator.__module__ = __name__
    SyntheticIterator.__qualname__ = "SyntheticIterator"
    globals()["SyntheticIterator"] = SyntheticIterator
    return SyntheticIterator


_CHILD_PID = os.getpid()


# --------------------------------------------------------------------------- child: the writers


def _write_nwb_dask_zarr(arr, path, args, local, codec="gzip"):
    import dask

    from nwb_dask import DaskDataIO
    from nwb_dask.testing import ephys_nwbfile
    from nwb_dask.zarr.io import write_nwb_zarr

    nwbfile = ephys_nwbfile(DaskDataIO(arr, codec=codec))
    if not local:
        with dask.config.set(scheduler="threads", num_workers=WORKERS):
            t0 = time.perf_counter()
            stats = write_nwb_zarr(nwbfile, path, scheduler="threads", progress=False)
            return time.perf_counter() - t0, {"reported_stored": stats.stored_bytes}
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_warm_generator)
        t0 = time.perf_counter()
        stats = write_nwb_zarr(nwbfile, path, scheduler=client, progress=False)
        seconds = time.perf_counter() - t0
        rss = client.run(_peak_rss_kib)
    return seconds, {"workers_rss_mb": sum(_mb(v) for v in rss.values()), "reported_stored": stats.stored_bytes}


def _write_hdmf_zarr(arr, path, args, jobs):
    import numcodecs
    from hdmf_zarr import ZarrDataIO
    from hdmf_zarr.nwb import NWBZarrIO

    from nwb_dask.testing import ephys_nwbfile

    chunk_shape = tuple(args.chunk_shape)
    # One buffer = one dask block of the source (30000 samples = 24 chunks of 1250), as nwb_dask's tasks.
    buffer_shape = (max(arr.chunks[0]), arr.shape[1])
    rss_dir = os.path.join(args.tmpdir, "rss-hdmf") if jobs > 1 else None
    if rss_dir:
        os.makedirs(rss_dir, exist_ok=True)
    iterator = _iterator_class()(args.seconds, chunk_shape, buffer_shape, rss_dir)
    data = ZarrDataIO(data=iterator, chunks=list(chunk_shape), compressor=numcodecs.Zlib(level=4),
                      filters=[numcodecs.Shuffle(elementsize=arr.dtype.itemsize)])
    nwbfile = ephys_nwbfile(data)
    extra = {}
    t0 = time.perf_counter()
    with NWBZarrIO(path, "w") as io:
        io.write(nwbfile, number_of_jobs=jobs)
    seconds = time.perf_counter() - t0
    if rss_dir:
        peaks = []
        for name in os.listdir(rss_dir):
            with open(os.path.join(rss_dir, name)) as f:
                peaks.append(int(f.read()))
        shutil.rmtree(rss_dir, ignore_errors=True)
        if not peaks:  # hdmf-zarr fell back to its serial loop (iterator not picklable, ...)
            extra["note"] = "no pool worker fetched a buffer: written serially"
        else:
            extra["workers_rss_mb"] = sum(_mb(v) for v in peaks)
            extra["note"] = f"{len(peaks)} pool workers fetched buffers"
    return seconds, extra


def _write_nwb_dask_hdf5(arr, path, args):
    import dask

    from nwb_dask import DaskDataIO, write_nwb
    from nwb_dask.testing import ephys_nwbfile

    nwbfile = ephys_nwbfile(DaskDataIO(arr, codec="gzip"))
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        t0 = time.perf_counter()
        write_nwb(nwbfile, path, scheduler="threads", progress=False)
        return time.perf_counter() - t0, {}


def _source_only(arr, path, args):
    """Compute every block on 2 threads and drop it: the generator's cost alone."""
    import dask
    import numpy as np

    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        t0 = time.perf_counter()
        total = arr.map_blocks(lambda b: np.full((1,) * b.ndim, b.size), chunks=(1, 1), dtype=np.int64).sum().compute()
        seconds = time.perf_counter() - t0
    assert int(total) == arr.size
    return seconds, {}


# --------------------------------------------------------------------------- child: checks


def _windows(arr, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = arr.shape[0]
    win = min(RATE, n)
    return [(int(s), int(s) + win) for s in rng.integers(0, n - win + 1, 3)]


def _verify_zarr(path, arr) -> dict:
    import numpy as np
    import zarr

    z = zarr.open(path, mode="r")[DATASET]
    assert z.shape == arr.shape, f"shape {z.shape} != {arr.shape}"
    assert z.dtype == arr.dtype, f"dtype {z.dtype} != {arr.dtype}"
    for start, stop in _windows(arr):
        want = arr[start:stop].compute(scheduler="threads")
        assert np.array_equal(z[start:stop], want), f"{path}:{DATASET} differs from the source at {start}:{stop}"
    array_dir = os.path.join(path, *DATASET.split("/"))
    stored = sum(e.stat().st_size for e in os.scandir(array_dir) if e.is_file() and not e.name.startswith("."))
    comp = z.compressor.get_config() if z.compressor else {"id": "none"}
    codec = "+".join([f.codec_id for f in (z.filters or [])] + [f"{comp['id']}-{comp.get('level', '')}".rstrip("-")])
    out = {"stored_bytes": stored, "chunks": list(z.chunks), "codec": codec}
    # Can hdmf-zarr's own reader open the store?
    try:
        from hdmf_zarr.nwb import NWBZarrIO

        start, stop = _windows(arr)[0]
        with NWBZarrIO(path, "r") as io:
            got = io.read().acquisition["ElectricalSeries"].data[start:stop]
        assert np.array_equal(got, arr[start:stop].compute(scheduler="threads")), "NWBZarrIO reads different data"
    except Exception as exc:  # noqa: BLE001 - reported in the row's note
        out["note"] = f"NWBZarrIO read fails: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
    return out


def _verify_hdf5(path, arr) -> dict:
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        d = f[DATASET]
        assert d.shape == arr.shape, f"shape {d.shape} != {arr.shape}"
        assert d.dtype == arr.dtype, f"dtype {d.dtype} != {arr.dtype}"
        for start, stop in _windows(arr):
            want = arr[start:stop].compute(scheduler="threads")
            assert np.array_equal(d[start:stop], want), f"{path}:{DATASET} differs from the source at {start}:{stop}"
        return {"stored_bytes": int(d.id.get_storage_size()), "chunks": list(d.chunks),
                "codec": f"{d.compression}-{d.compression_opts}{'+shuffle' if d.shuffle else ''}"}


def run_child(args) -> dict:
    # The same imports in every case, so the RSS baselines are comparable.
    import dask.array  # noqa: F401
    import h5py  # noqa: F401
    import hdmf_zarr  # noqa: F401
    import numcodecs  # noqa: F401
    import pynwb  # noqa: F401
    import zarr  # noqa: F401

    import nwb_dask.zarr  # noqa: F401

    arr = _source(args.seconds)
    _warm_generator()
    out = {"case": args.case, "logical_bytes": int(arr.nbytes), "rss_start_mb": _mb(_peak_rss_kib())}
    is_zarr = args.case != "nwb_dask_hdf5_threads"
    path = os.path.join(args.tmpdir, f"{args.case}.nwb" + (".zarr" if is_zarr else ""))
    try:
        if args.case == "nwb_dask_zarr_threads":
            seconds, extra = _write_nwb_dask_zarr(arr, path, args, local=False)
        elif args.case == "nwb_dask_zarr_threads_zlib":
            seconds, extra = _write_nwb_dask_zarr(arr, path, args, local=False, codec=ZLIB_CODEC)
        elif args.case == "nwb_dask_zarr_local":
            seconds, extra = _write_nwb_dask_zarr(arr, path, args, local=True)
        elif args.case == "hdmf_zarr_jobs2":
            seconds, extra = _write_hdmf_zarr(arr, path, args, jobs=2)
        elif args.case == "hdmf_zarr_jobs1":
            seconds, extra = _write_hdmf_zarr(arr, path, args, jobs=1)
        elif args.case == "nwb_dask_hdf5_threads":
            seconds, extra = _write_nwb_dask_hdf5(arr, path, args)
        else:
            seconds, extra = _source_only(arr, path, args)
        out["rss_peak_mb"] = _mb(_peak_rss_kib())  # before verification reads
        out["write_seconds"] = seconds
        out.update(extra)
        if args.case != "source_only":
            checked = _verify_zarr(path, arr) if is_zarr else _verify_hdf5(path, arr)
            if "note" in checked and "note" in out:
                checked["note"] = out["note"] + "; " + checked["note"]
            out.update(checked)
        out["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing writer is a row of the table
        import traceback

        traceback.print_exc()
        out.update(status="FAILED", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    finally:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
    return out


# --------------------------------------------------------------------------- parent


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for pkg in ("numpy", "zarr", "numcodecs", "hdmf", "hdmf-zarr", "pynwb", "h5py", "dask", "distributed", "nwb_dask"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} -")
    return ", ".join(parts)


def _run_case(name, args, tmpdir, chunk_shape) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", name, "--seconds", repr(args.seconds),
           "--tmpdir", tmpdir, "--chunk-shape", ",".join(map(str, chunk_shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break
            if r["status"] != "ok":
                r["stderr"] = proc.stderr
            return r
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}, no output"])[-1]
    return {"case": name, "status": "FAILED", "error": tail, "stderr": proc.stderr}


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="recording length (23 MB per second; default 30 = 691 MB)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {','.join(CASES)}")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (row order alternates); the table shows medians")
    ap.add_argument("--tmpdir", default=None, help="directory for the outputs (default: a new temporary directory, removed)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--chunk-shape", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()

    if args.case:
        args.chunk_shape = tuple(int(c) for c in args.chunk_shape.split(","))
        print(json.dumps(run_child(args)), flush=True)
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    import nwb_dask
    from nwb_dask.chunking import guess_chunk_shape

    arr = _source(args.seconds)
    chunk_shape = tuple(nwb_dask.DaskDataIO(arr, codec="gzip").data.chunk_shape)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# cpus: {os.cpu_count()}, load average at start: {load}")
    print(f"# data: {arr.shape[0]} samples x {arr.shape[1]} channels int16 = {args.seconds:g} s, "
          f"{arr.nbytes / 1e6:.0f} MB (MB = 1e6 bytes); dask blocks {arr.chunksize}")
    print(f"# chunk shape {chunk_shape} in every row (DaskDataIO's: guess_chunk_shape = "
          f"{guess_chunk_shape(arr.shape, arr.dtype)} fitted to the dask blocks); "
          "gzip level 4 + shuffle (zarr: Shuffle(2) + Zlib(4))")
    try:
        from nwb_dask.codecs.deflate import auto_engine

        engine = auto_engine(4)
    except Exception:  # noqa: BLE001  # pragma: no cover - informative only
        engine = "?"
    print(f"# nwb_dask's gzip engine 'auto' at level 4 = {engine}; 'thr zlib' row and hdmf-zarr rows: zlib")
    print(f"# {WORKERS} workers everywhere: dask threads / LocalCluster 2 processes x 1 thread / hdmf-zarr number_of_jobs=2")
    print(f"# {_versions()}")
    print(flush=True)

    own_tmp = args.tmpdir is None
    tmpdir = tempfile.mkdtemp(prefix="nwb_dask_zarr_bench_") if own_tmp else args.tmpdir
    os.makedirs(tmpdir, exist_ok=True)
    runs: dict[str, list] = {c: [] for c in cases}
    try:
        for i in range(args.repeat):
            for name in (cases if i % 2 == 0 else cases[::-1]):
                print(f"... {name} (round {i + 1})", file=sys.stderr, flush=True)
                r = _run_case(name, args, tmpdir, chunk_shape)
                if r["status"] == "ok":
                    print(f"... {name}: {r['write_seconds']:.2f} s", file=sys.stderr, flush=True)
                else:
                    print(f"... {name}: {r['status']}: {r.get('error')}", file=sys.stderr, flush=True)
                runs[name].append(r)
                for leftover in os.listdir(tmpdir):  # a crashed child may leave its output
                    if leftover.startswith((name + ".", "." + name + ".")):
                        p = os.path.join(tmpdir, leftover)
                        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)

    results = {}
    for name in cases:
        ok = sorted((r for r in runs[name] if r["status"] == "ok"), key=lambda r: r["write_seconds"])
        if ok and len(ok) == len(runs[name]):
            r = dict(ok[len(ok) // 2])
            r["all_seconds"] = [x["write_seconds"] for x in runs[name]]
            r["write_seconds"] = statistics.median(r["all_seconds"])
            r["mb_s"] = r["logical_bytes"] / 1e6 / r["write_seconds"]
            if "stored_bytes" in r:
                r["ratio"] = r["logical_bytes"] / max(1, r["stored_bytes"])
                if tuple(r["chunks"]) != chunk_shape:
                    r["note"] = (r.get("note", "") + f"; chunks {tuple(r['chunks'])}").lstrip("; ")
            results[name] = r
        else:
            results[name] = next(r for r in runs[name] if r["status"] != "ok")

    def speed(name):
        r = results.get(name)
        return r.get("mb_s") if r and r["status"] == "ok" else None

    j2, j1 = speed("hdmf_zarr_jobs2"), speed("hdmf_zarr_jobs1")
    cols = (f"{'row':<22} {'write s':>8} {'MB/s':>7} {'ratio':>6} {'codec':>14} {'peak RSS MB':>11} {'+workers MB':>11} "
            f"{'x jobs=2':>8} {'x jobs=1':>8}")
    print(cols)
    print("-" * len(cols))
    failed = False
    for name in cases:
        r = results[name]
        if r["status"] != "ok":
            failed = True
            print(f"{CASES[name]:<22} FAILED: {r.get('error', '')}")
            continue
        s = r["mb_s"]
        spread = f" [{min(r['all_seconds']):.2f}-{max(r['all_seconds']):.2f}]" if len(r["all_seconds"]) > 1 else ""
        print(f"{CASES[name]:<22} {r['write_seconds']:>8.2f} {s:>7.1f} {_fmt(r.get('ratio'), '>6.3f'):>6} "
              f"{r.get('codec', '-'):>14} {r['rss_peak_mb']:>11.0f} {_fmt(r.get('workers_rss_mb'), '>11.0f'):>11} "
              f"{_fmt(s / j2 if j2 else None, '>8.2f'):>8} {_fmt(s / j1 if j1 else None, '>8.2f'):>8}"
              + spread + (f"  ({r['note']})" if r.get("note") else ""))
    rss0 = [r["rss_start_mb"] for r in results.values() if "rss_start_mb" in r]
    if rss0:
        print(f"\n# peak RSS = the child's ru_maxrss (before writing: {min(rss0):.0f}-{max(rss0):.0f} MB); "
              "+workers = sum of the worker processes' peak RSS (LocalCluster workers; hdmf-zarr's forked pool "
              "workers, shared parent pages counted in each)")
    print(f"# load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("# every output passed the check: 3 random 1 s windows read back equal the source"
          if not failed else "# FAILED rows did not write a correct output (or crashed): see above and stderr")
    for name in cases:
        if results[name]["status"] != "ok" and results[name].get("stderr"):
            print(f"\n# stderr of {name}:\n" + results[name]["stderr"][-3000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Live streaming write: sustained real-time factor, memory, and reader-visible latency.

Three streams, as a Neuropixels rig produces them: 384-channel int16 ephys at
30 kHz (23 MB/s), a 1 kHz float64 analog channel and timestamped int32 events,
appended in 30 ms blocks, compressed (gzip-4 + shuffle by default) and flushed
every second.  Each row runs in a fresh process:

* ``nwb_dask``: ``nwb_dask.live.StreamWriter`` (appends return after a copy;
  chunks are compressed in background threads and stored at each flush);
* ``h5py gzip``: the anchor a user writes without nwb_dask: an h5py file in
  SWMR mode, ``resize`` + write of each block through HDF5's own gzip filter,
  ``flush`` every second;
* ``h5py none``: the same without compression (the storage ceiling).

The producer appends as fast as the writer accepts, from a 10 s bank of
synthetic ephys computed beforehand (``nwb_dask.testing``), so the figure is
the writer's sustained rate: *real-time factor* = seconds of data written per
wall-clock second, creation and final flush included.  Peak RSS is measured
above the bank (``/proc/self/status`` VmHWM after ``clear_refs``).

Latency: the nwb_dask writer then runs paced at real time, with the analog
stream carrying the wall-clock time of each append, while a second process
follows the file with ``nwb_dask.live.follow``; each sample's latency is
the time it became visible to the reader minus the time it was appended.

    python benchmarks/stream.py [--seconds 60] [--codec gzip] [--flush-every 1.0] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
RATE, CHANNELS, BLOCK = 30_000, 384, 900  # 30 ms blocks
ANALOG_RATE = 1_000
BANK_SECONDS = 10


def _bank():
    from nwb_dask.testing import synthetic_ephys

    return synthetic_ephys(seconds=BANK_SECONDS, n_channels=CHANNELS, seed=3).compute(scheduler="threads")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _blocks(bank, seconds: float):
    """(ephys block, analog block, event codes, event times) every 30 ms of data time."""
    import numpy as np

    rng = np.random.default_rng(1)
    n_blocks = int(seconds * RATE / BLOCK)
    per_analog = BLOCK * ANALOG_RATE // RATE
    for i in range(n_blocks):
        start = (i * BLOCK) % (bank.shape[0] - BLOCK)
        t = i * BLOCK / RATE
        k = int(rng.poisson(0.3))
        yield (bank[start:start + BLOCK], np.sin(np.arange(per_analog) + i * per_analog),
               rng.integers(0, 8, k).astype("int32"), np.sort(t + rng.random(k) * BLOCK / RATE))


def _nwbfile(codec: str, flush_every: float):
    import nwb_dask.live as live
    from nwb_dask.testing import ephys_nwbfile
    from pynwb import TimeSeries

    nwbfile = ephys_nwbfile(live.growing("int16", (CHANNELS,), codec=codec), rate=float(RATE),
                            name="ephys", starting_time=0.0)
    nwbfile.add_acquisition(TimeSeries(name="analog", data=live.growing("float64", codec=codec), unit="V",
                                       rate=float(ANALOG_RATE), starting_time=0.0))
    nwbfile.add_acquisition(TimeSeries(name="events", data=live.growing("int32", codec=codec),
                                       timestamps=live.growing("float64", codec=codec), unit="n/a"))
    return nwbfile


# --------------------------------------------------------------------------- #
# children                                                                     #
# --------------------------------------------------------------------------- #
def child_throughput(method: str, seconds: float, codec: str, flush_every: float, path: str) -> dict:
    import numpy as np

    bank = _bank()
    blocks = list(_blocks(bank, seconds))
    _reset_peak()
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "nwb_dask":
        import nwb_dask.live as live

        with live.StreamWriter(path, _nwbfile(codec, flush_every), flush_every=flush_every) as w:
            for eph, ana, codes, times in blocks:
                w.append("ephys", eph)
                w.append("analog", ana)
                if codes.size:
                    w.append("events", codes, timestamps=times)
        stats = w.stats
        extra = {"flushes": stats.flushes, "max_flush_s": stats.max_flush_seconds,
                 "superseded_pct": 100 * stats.superseded_bytes / max(1, stats.stored_bytes)}
    else:
        import h5py

        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if method == "h5py-gzip" else {}
        with h5py.File(path, "w", libver=("v110", "v110")) as f:
            e = f.create_dataset("ephys", (0, CHANNELS), "int16", maxshape=(None, CHANNELS), chunks=(1365, CHANNELS), **kw)
            a = f.create_dataset("analog", (0,), "float64", maxshape=(None,), chunks=(250,), **kw)
            ec = f.create_dataset("event_codes", (0,), "int32", maxshape=(None,), chunks=(1024,), **kw)
            et = f.create_dataset("event_times", (0,), "float64", maxshape=(None,), chunks=(1024,), **kw)
            f.swmr_mode = True
            last = time.monotonic()
            flushes = 0
            for eph, ana, codes, times in blocks:
                for d, x in ((e, eph), (a, ana), (ec, codes), (et, times)):
                    if len(x):
                        n = d.shape[0]
                        d.resize(n + len(x), axis=0)
                        d[n:] = x
                if time.monotonic() - last >= flush_every:
                    f.flush()
                    flushes += 1
                    last = time.monotonic()
        extra = {"flushes": flushes}
    wall = time.perf_counter() - t0
    peak = _peak_mb() - base
    import h5py

    with h5py.File(path, "r") as f:  # verify the ephys stream
        d = f["acquisition/ephys/data" if method == "nwb_dask" else "ephys"]
        assert d.shape[0] == len(blocks) * BLOCK, (d.shape, len(blocks) * BLOCK)
        for i in range(0, len(blocks), max(1, len(blocks) // 20)):
            assert np.array_equal(d[i * BLOCK:(i + 1) * BLOCK], blocks[i][0]), f"{method}: block {i} differs"
    data_seconds = len(blocks) * BLOCK / RATE
    size = os.path.getsize(path)
    return {"method": method, "data_s": data_seconds, "wall_s": wall, "rt": data_seconds / wall,
            "mb_s": len(blocks) * blocks[0][0].nbytes / wall / 1e6, "ratio": len(blocks) * blocks[0][0].nbytes / size,
            "peak_mb": peak, **extra}


def child_latency(seconds: float, codec: str, flush_every: float, path: str) -> dict:
    import numpy as np

    import nwb_dask.live as live

    bank = _bank()
    blocks = list(_blocks(bank, seconds))
    reader = None
    with live.StreamWriter(path, _nwbfile(codec, flush_every), flush_every=flush_every) as w:
        reader = subprocess.Popen([sys.executable, HERE, "--reader", path, "--flush-every", str(flush_every)],
                                  stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        per_analog = BLOCK * ANALOG_RATE // RATE
        for i, (eph, _, codes, times) in enumerate(blocks):
            due = t0 + i * BLOCK / RATE  # real time: block i is "acquired" at t0 + its data time
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            w.append("ephys", eph)
            w.append("analog", np.full(per_analog, time.time()))  # each sample carries its append time
            if codes.size:
                w.append("events", codes, timestamps=times)
        behind = time.monotonic() - (t0 + len(blocks) * BLOCK / RATE)
    out, _ = reader.communicate(timeout=60)
    lat = np.array(json.loads(out.strip().splitlines()[-1]))
    return {"samples_seen": int(lat.size), "median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)),
            "max_s": float(lat.max()), "producer_behind_s": behind}


def child_reader(path: str, flush_every: float) -> None:
    import numpy as np

    import nwb_dask.live as live

    latencies = []
    for _, new in live.follow(path, "acquisition/analog/data", poll=0.005, idle_timeout=max(3.0, 3 * flush_every)):
        latencies.append(time.time() - new)
    print(json.dumps(np.concatenate(latencies).tolist() if latencies else []), flush=True)


# --------------------------------------------------------------------------- #
# driver                                                                       #
# --------------------------------------------------------------------------- #
def _run(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, HERE, *args], capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of data per throughput row")
    ap.add_argument("--codec", default="gzip")
    ap.add_argument("--flush-every", type=float, default=1.0)
    ap.add_argument("--paced-seconds", type=float, default=10.0, help="seconds of real-time run for the latency")
    ap.add_argument("--methods", nargs="+", default=["nwb_dask", "h5py-gzip", "h5py-none"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.reader:
        child_reader(a.reader, a.flush_every)
        return
    if a.child == "latency":
        print("RESULT " + json.dumps(child_latency(a.seconds, a.codec, a.flush_every, a.out)), flush=True)
        return
    if a.child:
        print("RESULT " + json.dumps(child_throughput(a.child, a.seconds, a.codec, a.flush_every, a.out)), flush=True)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="nwb_dask_stream_", dir=os.environ.get("NWB_DASK_BENCH_DIR")) as tmp:
        for method in a.methods:
            r = _run(["--child", method, "--seconds", str(a.seconds), "--codec", a.codec,
                      "--flush-every", str(a.flush_every), "--out", os.path.join(tmp, f"{method}.nwb")])
            print(f"# {method}: {r}", flush=True)
            rows.append(r)
        lat = _run(["--child", "latency", "--seconds", str(a.paced_seconds), "--codec", a.codec,
                    "--flush-every", str(a.flush_every), "--out", os.path.join(tmp, "latency.nwb")])
        print(f"# latency: {lat}", flush=True)
    base = next((r for r in rows if r["method"] == "h5py-gzip"), rows[0])
    print()
    print(f"{a.seconds:g} s of 384-ch int16 @ 30 kHz + 1 kHz analog + events, {a.codec}, "
          f"flush every {a.flush_every:g} s, {os.cpu_count()} cpus")
    print(f"{'writer':<12}{'wall s':>8}{'x real time':>13}{'MB/s':>8}{'ratio':>7}{'peak MB':>9}{'x h5py gzip':>13}")
    for r in rows:
        print(f"{r['method']:<12}{r['wall_s']:>8.2f}{r['rt']:>13.1f}{r['mb_s']:>8.0f}{r['ratio']:>7.2f}"
              f"{r['peak_mb']:>9.0f}{r['rt'] / base['rt']:>13.2f}")
    nd = next((r for r in rows if r["method"] == "nwb_dask"), None)
    if nd:
        print(f"\nnwb_dask: {nd['flushes']} flushes, longest {nd['max_flush_s']:.3f} s; "
              f"re-stored partial chunks {nd['superseded_pct']:.1f}% of stored bytes")
    print(f"reader-visible latency at real time ({a.paced_seconds:g} s, {lat['samples_seen']} samples): "
          f"median {lat['median_s']:.3f} s, p95 {lat['p95_s']:.3f} s, max {lat['max_s']:.3f} s "
          f"(producer ended {lat['producer_behind_s']:.3f} s behind real time)")
    print("target: >= 10x real time")


if __name__ == "__main__":
    main()

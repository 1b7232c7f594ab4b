"""Child processes for tests/test_live_crash.py: a pre-imported fork server, live writers, SWMR readers.

``python tests/live_job.py serve`` imports pynwb, h5py and nwb_dask.live once,
prints ``{"ready": ...}`` and then reads one JSON request a line on stdin:

  {"cmd": "spawn", "role": ROLE, "stderr": PATH, "kwargs": {...}}  fork a child running ROLE -> {"pid": PID}
  {"cmd": "wait", "pid": PID, "timeout": SECONDS}   reap it -> {"pid", "exitcode" or "signal"} or {"running": true}

Each child starts already imported (a fork costs milliseconds, a fresh Python
with pynwb ~1-2 s), which keeps 20+ SIGKILLs cheap.  On EOF of stdin the server
SIGKILLs and reaps the children it still has, by pid, and exits.

The data are a pure function of the global sample index (not of how they were
cut into blocks), so a verifier recomputes any prefix from a count alone:
:func:`ephys_block`, :func:`analog_block`, :func:`event_block`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

import numpy as np

N_CHANNELS = 64
EPHYS_RATE = 30000.0
ANALOG_RATE = 1000.0
STREAMS = ("analog", "ephys", "events")
#: HDF5 paths of the growing datasets (pynwb puts acquisition series under /acquisition).
DATASETS = {
    "ephys": ("acquisition/ephys/data",),
    "analog": ("acquisition/analog/data",),
    "events": ("acquisition/events/data", "acquisition/events/timestamps"),
}


# --------------------------------------------------------------------------- #
# deterministic data                                                           #
# --------------------------------------------------------------------------- #
def ephys_block(start: int, n: int) -> np.ndarray:
    """Samples ``start .. start+n`` of the 64-channel int16 stream (hash noise over a slow ramp)."""
    i = np.arange(start, start + n, dtype=np.uint64)[:, None]
    c = np.arange(N_CHANNELS, dtype=np.uint64)[None, :]
    h = (i * np.uint64(2654435761) + c * np.uint64(40503) + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    h = (h * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    noise = (h >> np.uint64(25)).astype(np.int64) - 64  # 7 bits of noise
    ramp = ((i // np.uint64(7) + c * np.uint64(13)) % np.uint64(400)).astype(np.int64) - 200
    return (ramp * 37 + noise).astype(np.int16)


def analog_block(start: int, n: int) -> np.ndarray:
    """Samples of the 1 kHz float32 stream (exact arithmetic only: k/1024 values)."""
    i = np.arange(start, start + n, dtype=np.int64)
    return (((i * 7919) % 10007).astype(np.float64) / 1024.0 - 4.0).astype(np.float32)


def event_block(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Events ``start .. start+n``: (int32 codes, float64 non-decreasing timestamps)."""
    k = np.arange(start, start + n, dtype=np.int64)
    data = ((k * 31 + 7) % 100003).astype(np.int32)
    ts = k.astype(np.float64) * 0.0371 + 0.25
    return data, ts


def expected(dataset: str, count: int, start: int = 0) -> np.ndarray:
    """Samples ``start .. count`` of an HDF5 dataset path of :data:`DATASETS`."""
    n = max(0, count - start)
    if dataset.endswith("ephys/data"):
        return ephys_block(start, n)
    if dataset.endswith("analog/data"):
        return analog_block(start, n)
    data, ts = event_block(start, n)
    return ts if dataset.endswith("timestamps") else data


def make_nwbfile():
    """The live session: 64-ch ElectricalSeries @30 kHz, 1 kHz analog, timestamped events."""
    from datetime import datetime, timezone

    from pynwb import NWBFile, TimeSeries
    from pynwb.ecephys import ElectricalSeries

    from nwb_dask.live import growing

    nwb = NWBFile("live crash test", "crash-0001", datetime(2026, 1, 1, tzinfo=timezone.utc))
    dev = nwb.create_device("probe")
    grp = nwb.create_electrode_group("shank0", "one shank", "CA1", dev)
    for _ in range(N_CHANNELS):
        nwb.add_electrode(group=grp, location="CA1")
    region = nwb.create_electrode_table_region(list(range(N_CHANNELS)), "all")
    nwb.add_acquisition(ElectricalSeries(name="ephys", data=growing("int16", (N_CHANNELS,)), electrodes=region,
                                         rate=EPHYS_RATE, starting_time=0.0))
    nwb.add_acquisition(TimeSeries(name="analog", data=growing("float32"), unit="V", rate=ANALOG_RATE,
                                   starting_time=0.0))
    nwb.add_acquisition(TimeSeries(name="events", data=growing("int32"), timestamps=growing("float64"),
                                   unit="n/a"))
    return nwb


def parse_log(text: str) -> dict:
    """The writer's log: only complete lines count (a kill may cut the last one).

    Returns ``{"started", "created", "closed": counts or None, "flushes": [counts, ...],
    "creation_seconds": from start to created, or None, "in_flush": a flush began and did not end}``.
    """
    out = {"started": False, "created": False, "closed": None, "flushes": [], "creation_seconds": None,
           "in_flush": False}
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
    started = None
    for line in lines:
        word, *rest = line.split()
        if word == "start":
            out["started"] = True
            started = float(rest[1]) if len(rest) > 1 else None
        elif word == "created":
            out["created"] = True
            if started is not None and rest:
                out["creation_seconds"] = float(rest[0]) - started
        elif word == "flushing":
            out["in_flush"] = True
        elif word in ("flush", "closed"):
            out["in_flush"] = False
            counts = {k: int(v) for k, v in (kv.split("=") for kv in rest if "=" in kv)}
            if word == "flush":
                out["flushes"].append(counts)
            else:
                out["closed"] = counts
    return out


# --------------------------------------------------------------------------- #
# roles                                                                        #
# --------------------------------------------------------------------------- #
def writer(path: str, log: str, seed: int, duration: float, flush_every: float, fsync: bool = True,
           speed: float = 3.0) -> int:
    """Stream the three series to ``path`` for ``duration`` s (then close), logging each completed flush.

    Log lines (each one ``os.write`` on an O_APPEND fd): ``start``, ``created``
    (the StreamWriter exists), ``flushing`` (the writer thread starts a flush;
    instrumentation only), ``flush N analog=.. ephys=.. events=..`` (written by
    ``on_flush``, i.e. after the flush completed) and ``closed ...``.
    ``speed`` paces the appends at that many times real time (0: no pacing).
    """
    from nwb_dask.live import StreamWriter

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def out(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    def counts_text(samples: dict) -> str:
        return " ".join(f"{k}={samples[k]}" for k in STREAMS)

    out(f"start {os.getpid()} {time.time():.6f}")
    rng = np.random.default_rng(seed)
    nwb = make_nwbfile()
    w = StreamWriter(path, nwb, flush_every=flush_every, fsync=fsync,
                     on_flush=lambda info: out(f"flush {info.number} {counts_text(info.samples)}"))
    out(f"created {time.time():.6f}")
    real_flush = w._flush  # instrumented only to tell which kills land inside a flush

    def logged_flush(job):
        out("flushing")
        return real_flush(job)

    w._flush = logged_flush
    n = {"ephys": 0, "analog": 0, "events": 0}
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        m = int(rng.integers(300, 3001))
        w.append("ephys", ephys_block(n["ephys"], m))
        n["ephys"] += m
        a = n["ephys"] * int(ANALOG_RATE) // int(EPHYS_RATE) - n["analog"]  # keep pace with ephys (0 at times)
        w.append("analog", analog_block(n["analog"], a))
        n["analog"] += a
        e = int(rng.integers(0, 4))  # empty appends included
        data, ts = event_block(n["events"], e)
        w.append("events", data, timestamps=ts)
        n["events"] += e
        if speed:
            ahead = n["ephys"] / EPHYS_RATE / speed - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    w.close()
    out(f"closed {counts_text(n)}")
    os.close(fd)
    return 0


def _writer_done(log: str | None) -> bool:
    if not log:
        return False
    try:
        with open(log) as f:
            return parse_log(f.read())["closed"] is not None
    except OSError:
        return False


def follower(path: str, dataset: str, result: str, writer_log: str, deadline: float = 60.0) -> int:
    """Follow ``dataset`` with :func:`nwb_dask.live.follow`, checking every sample seen.

    Keeps following until the writer's log says it closed, then picks up the
    rest; writes a JSON summary to ``result``: the lengths seen (and whether
    the writer was still running), samples checked, mismatches.
    """
    from nwb_dask.live import follow

    pos, seen, bad, checked = 0, [], [], 0
    t_end = time.monotonic() + deadline
    finished = False
    while time.monotonic() < t_end:
        done_before = _writer_done(writer_log)
        for start, new in follow(path, dataset, start=pos, poll=0.01, idle_timeout=0.3 if done_before else 0.5):
            if start != pos:
                bad.append(f"follow yielded start {start}, expected {pos}")
            want = expected(dataset, start + len(new), start)
            if new.shape != want.shape or new.dtype != want.dtype:
                bad.append(f"block at {start}: shape/dtype {new.shape} {new.dtype} != {want.shape} {want.dtype}")
            else:
                rows = np.flatnonzero((new != want).reshape(len(new), -1).any(axis=1))
                if rows.size:
                    zero = bool((new[rows] == 0).all())
                    bad.append(f"{rows.size} wrong samples in block {start}..{start + len(new)}, first "
                               f"{start + int(rows[0])}, all zero (fill): {zero}")
            checked += len(new)
            pos = start + len(new)
            seen.append([pos, time.time(), not _writer_done(writer_log)])
            if len(bad) > 20 or time.monotonic() > t_end:
                break
        if done_before or len(bad) > 20:
            finished = True
            break
    with open(result, "w") as f:
        json.dump({"final": pos, "seen": seen, "checked": checked, "bad": bad, "finished": finished}, f)
    return 0


def poller(path: str, result: str, writer_log: str, deadline: float = 60.0) -> int:
    """Poll every growing dataset with ``open_live`` + ``refresh``; check what it sees; JSON summary."""
    from nwb_dask.live import open_live

    paths = [p for ps in DATASETS.values() for p in ps]
    lengths = {p: 0 for p in paths}
    distinct = {p: set() for p in paths}
    bad: list[str] = []
    polls = 0
    t_end = time.monotonic() + deadline
    with open_live(path) as f:
        dsets = {p: f[p] for p in paths}
        while time.monotonic() < t_end and len(bad) < 20:
            done = _writer_done(writer_log)  # before the look: a look after "closed" sees everything
            for p, d in dsets.items():
                d.refresh()
                n = d.shape[0]
                if n < lengths[p]:
                    bad.append(f"{p} shrank from {lengths[p]} to {n}")
                if n > lengths[p]:
                    lo = max(0, lengths[p] - 5)  # re-read a few old samples too (the re-stored partial chunk)
                    got = d[lo:n]
                    want = expected(p, n, lo)
                    if not np.array_equal(got, want):
                        rows = np.flatnonzero((got != want).reshape(len(got), -1).any(axis=1))
                        bad.append(f"{p}: {rows.size} wrong samples in {lo}..{n}, first {lo + int(rows[0])}")
                    lengths[p] = n
                    distinct[p].add(n)
            polls += 1
            if done:
                break
            time.sleep(0.02)
    with open(result, "w") as f:
        json.dump({"final": lengths, "distinct": {p: len(v) for p, v in distinct.items()}, "polls": polls,
                   "bad": bad}, f)
    return 0


def writer_stalled_reopen(path: str, log: str) -> int:
    """A writer that stops for good as soon as it holds the renamed file open for writing.

    ``h5py.File`` is wrapped (in this child only): when a File on ``path``
    opened for writing comes back, the child logs ``reopened`` and sleeps, so
    the test kills it there, before the StreamWriter's next step (today:
    switching the file to SWMR writing).  Should the StreamWriter never open
    ``path`` through ``h5py.File``, it logs ``constructed`` and sleeps instead.
    """
    import h5py

    from nwb_dask.live import StreamWriter

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    real_file = h5py.File

    class StallingFile(real_file):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.mode == "r+" and os.path.abspath(self.filename) == os.path.abspath(path):
                os.write(fd, f"reopened swmr={self.swmr_mode}\n".encode())
                time.sleep(600)

    h5py.File = StallingFile
    os.write(fd, b"start\n")
    w = StreamWriter(path, make_nwbfile(), flush_every=0.05)
    os.write(fd, f"constructed swmr={w._file.swmr_mode}\n".encode())
    time.sleep(600)
    return 1


ROLES = {"writer": writer, "follower": follower, "poller": poller, "writer_stalled_reopen": writer_stalled_reopen}


# --------------------------------------------------------------------------- #
# the fork server                                                              #
# --------------------------------------------------------------------------- #
def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child(req: dict) -> None:
    """In the forked child: stdout/stderr to the request's file, run the role, never return."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(err, 1)  # never write into the server's reply pipe
        os.dup2(err, 2)
        os.close(err)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = ROLES[req["role"]](**req["kwargs"])
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code or 0)


def serve() -> int:
    t0 = time.perf_counter()
    import h5py  # noqa: F401
    import pynwb
    import pynwb.ecephys  # noqa: F401

    import nwb_dask.live  # noqa: F401

    make_nwbfile()  # loads what pynwb imports lazily
    children: set[int] = set()
    _reply({"ready": True, "pid": os.getpid(), "import_seconds": time.perf_counter() - t0})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            if req["cmd"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    _child(req)
                children.add(pid)
                _reply({"pid": pid})
            elif req["cmd"] == "wait":
                pid, end = req["pid"], time.monotonic() + float(req.get("timeout", 0))
                while True:
                    got, status = os.waitpid(pid, os.WNOHANG)
                    if got == pid:
                        children.discard(pid)
                        if os.WIFSIGNALED(status):
                            _reply({"pid": pid, "signal": os.WTERMSIG(status)})
                        else:
                            _reply({"pid": pid, "exitcode": os.WEXITSTATUS(status)})
                        break
                    if time.monotonic() >= end:
                        _reply({"pid": pid, "running": True})
                        break
                    time.sleep(0.005)
            else:
                _reply({"error": f"unknown command {req['cmd']!r}"})
    finally:
        for pid in children:  # the test went away: end what this server started
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        sys.exit(serve())
    sys.exit(f"usage: {sys.argv[0]} serve")

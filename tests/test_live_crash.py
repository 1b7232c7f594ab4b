"""nwb_dask.live across processes: a writer SIGKILLed at random moments, and SWMR readers following a growing file.

The children are forked by a pre-imported server (``tests/live_job.py serve``) so
that each one starts in milliseconds instead of the 1-2 s of importing pynwb.
A writer logs ``flush N analog=.. ephys=.. events=..`` after each completed
flush (from ``on_flush``, one ``os.write`` on an O_APPEND fd), so the last
complete line of its log is the lower bound of what the file must hold.

``NWB_DASK_CRASH_SEED`` and ``NWB_DASK_CRASH_KILLS`` override the seed (default
fixed) and the number of kills (default 30).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_dask import live

JOB = Path(__file__).with_name("live_job.py")
_spec = importlib.util.spec_from_file_location("_live_job", JOB)
job = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(job)

SEED = int(os.environ.get("NWB_DASK_CRASH_SEED", "20261125"))
KILLS = int(os.environ.get("NWB_DASK_CRASH_KILLS", "30"))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


# --------------------------------------------------------------------------- #
# the fork server                                                              #
# --------------------------------------------------------------------------- #
class ForkServer:
    """``python tests/live_job.py serve``: forks pre-imported children on request; kills them by pid."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.err_path = folder / "server.err"
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(JOB), "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, cwd=folder)
        self._buf = b""
        self.children: set[int] = set()  # forked and not yet reaped (their pids cannot be reused)
        self.ready = self._read(timeout=180)

    def _read(self, timeout: float) -> dict:
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"fork server: no reply within {timeout} s (exit {self.proc.poll()}); "
                                   f"stderr: {self.err_path.read_text()[-3000:]}")
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, req: dict, timeout: float = 60) -> dict:
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def spawn(self, role: str, stderr: Path, **kwargs) -> int:
        pid = self.request({"cmd": "spawn", "role": role, "stderr": str(stderr), "kwargs": kwargs})["pid"]
        self.children.add(pid)
        return pid

    def wait(self, pid: int, timeout: float) -> dict:
        """``{"exitcode": n}`` or ``{"signal": n}`` once reaped, ``{"running": True}`` after ``timeout``."""
        reply = self.request({"cmd": "wait", "pid": pid, "timeout": timeout}, timeout=timeout + 60)
        if not reply.get("running"):
            self.children.discard(pid)
        return reply

    def kill(self, pid: int) -> None:
        if pid in self.children:  # not reaped yet: the pid is still this child's
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        try:
            for pid in list(self.children):
                self.kill(pid)
                self.wait(pid, timeout=30)
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()  # the server ends its own children on EOF; this is the last resort
            self.proc.wait()
        finally:
            self._err.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ForkServer(tmp_path_factory.mktemp("live_server"))
    try:
        yield srv
    finally:
        srv.close()


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.002):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def _log(path: Path) -> dict:
    try:
        return job.parse_log(path.read_text())
    except FileNotFoundError:
        return job.parse_log("")


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text()[-n:]
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- #
# checking a file against the deterministic data                               #
# --------------------------------------------------------------------------- #
_EXPECTED: dict[str, np.ndarray] = {}


def _expected(dataset: str, n: int) -> np.ndarray:
    """``job.expected(dataset, n)``, computed once for the longest ``n`` asked (cut to size)."""
    have = _EXPECTED.get(dataset)
    if have is None or len(have) < n:
        have = _EXPECTED[dataset] = job.expected(dataset, max(n, 2 * len(have) if have is not None else n))
    return have[:n]


def _check_contents(f, bound: dict, where: str, refresh: bool = False) -> tuple[list[str], dict]:
    """Problems with the growing datasets of an open file: shorter than ``bound`` or not bit-exact below it.

    Beyond the bound (an unfinished flush may have grown a dataset or stored
    some chunks) each sample must be the expected one or HDF5's fill value
    (0): never anything else.  Returns (problems, lengths).
    """
    problems, lengths = [], {}
    for stream, paths in job.DATASETS.items():
        for p in paths:
            d = f[p]
            if refresh:
                d.refresh()
            n = d.shape[0]
            lengths[p] = n
            want = bound[stream]
            if n < want:
                problems.append(f"{where}: {p} has {n} samples, {want} were flushed")
                continue
            got = d[:n]
            exp = _expected(p, n)
            if got.dtype != exp.dtype or got.shape != exp.shape:
                problems.append(f"{where}: {p} is {got.dtype}{got.shape}, expected {exp.dtype}{exp.shape}")
                continue
            if got[:want].tobytes() != exp[:want].tobytes():
                rows = np.flatnonzero((got[:want] != exp[:want]).reshape(want, -1).any(axis=1))
                problems.append(f"{where}: {p}: {rows.size} of the {want} flushed samples differ, first at "
                                f"{rows[0]}: {got[rows[0]]!r} != {exp[rows[0]]!r}")
            if n > want:
                extra, ex = got[want:], exp[want:]
                wrong = (extra != ex).reshape(n - want, -1).any(axis=1)
                garbage = wrong & (extra != 0).reshape(n - want, -1).any(axis=1)
                if garbage.any():
                    i = want + int(np.flatnonzero(garbage)[0])
                    problems.append(f"{where}: {p}: beyond the flushed {want} samples (length {n}), "
                                    f"{int(garbage.sum())} samples are neither the data nor the fill value, "
                                    f"first at {i}")
    return problems, lengths


def _check_pynwb(path: Path, bound: dict, where: str, validate: bool, swmr: bool = False) -> list[str]:
    """Problems reading the file with pynwb (through ``open_live`` when ``swmr``); validation errors."""
    from pynwb import NWBHDF5IO
    from pynwb import validate as nwb_validate

    problems = []
    f = live.open_live(path) if swmr else None
    with NWBHDF5IO(file=f, mode="r") if swmr else NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        for stream in job.STREAMS:
            ts = nwb.acquisition[stream]
            if ts.data.shape[0] < bound[stream]:
                problems.append(f"{where}: pynwb {stream}.data has {ts.data.shape[0]} < {bound[stream]} samples")
        k = bound["ephys"]
        if nwb.acquisition["ephys"].data[:k].tobytes() != _expected(job.DATASETS["ephys"][0], k).tobytes():
            problems.append(f"{where}: pynwb reads different ephys samples")
        if nwb.acquisition["ephys"].rate != job.EPHYS_RATE or len(nwb.electrodes) != job.N_CHANNELS:
            problems.append(f"{where}: pynwb reads different metadata")
        if validate:
            errors = nwb_validate(io=io)
            if errors:
                problems.append(f"{where}: pynwb validation errors: {errors!r}"[:2000])
    if f is not None:
        f.close()
    return problems


# --------------------------------------------------------------------------- #
# SIGKILL at random moments                                                    #
# --------------------------------------------------------------------------- #
def _kill_trial(server: ForkServer, folder: Path, trial: int, rng: random.Random, creation: float) -> dict:
    """One writer killed after a random delay; returns what happened (phase, counts, problems).

    ``creation`` estimates the seconds from the child's start to a complete
    StreamWriter (measured on earlier trials).  A quarter of the kills land
    during creation, a quarter in the first flushes, the rest anywhere in the
    first 1.2 s after the child started.
    """
    folder.mkdir()
    path, logp, errp = folder / "live.nwb", folder / "writer.log", folder / "writer.err"
    flush_every = rng.choice([0.05, 0.1])
    aim = ("anywhere", "creation", "anywhere", "first flushes")[trial % 4]
    delay = {"creation": lambda: rng.uniform(0.0, creation),
             "first flushes": lambda: creation + rng.uniform(0.0, 3 * flush_every),
             "anywhere": lambda: rng.uniform(0.0, 1.2)}[aim]()
    params = {"seed": SEED * 1000 + trial, "flush_every": flush_every, "fsync": trial % 2 == 0,
              "speed": rng.choice([1.0, 3.0, 6.0])}
    ctx = f"seed {SEED} trial {trial} delay {delay:.3f}s (aimed at {aim}) params {params}"
    pid = server.spawn("writer", errp, path=str(path), log=str(logp), duration=60.0, **params)
    try:
        _wait_for(lambda: _log(logp)["started"], 60, f"the writer to start ({ctx})")
        time.sleep(delay)
    finally:
        server.kill(pid)
    status = server.wait(pid, timeout=60)
    assert status.get("signal") == signal.SIGKILL, (
        f"{ctx}: the writer was not killed by SIGKILL but ended {status}; stderr: {_tail(errp)}")

    log = _log(logp)
    flushes = log["flushes"]
    result = {"trial": trial, "delay": delay, "aim": aim, "flushes": len(flushes), "params": params,
              "creation_seconds": log["creation_seconds"], "problems": []}
    problems = result["problems"]
    names = {p.name for p in folder.iterdir()}
    partial = {n for n in names  # nwb_dask.atomic.partial_path's name for the file
               if re.fullmatch(rf"\.{re.escape(path.stem)}\.[0-9a-f]{{8}}\.partial{re.escape(path.suffix)}", n)}
    unexpected = names - {path.name, logp.name, errp.name} - partial
    if unexpected:
        problems.append(f"{ctx}: unexpected files left: {sorted(unexpected)}")
    if partial and (path.exists() or flushes):
        problems.append(f"{ctx}: temporary {sorted(partial)} left beside the file / after a flush")

    if not path.exists():
        if flushes or log["created"]:
            problems.append(f"{ctx}: {path.name} is missing though the log says {log}")
        result["phase"] = "creating (temp file)" if partial else "before file"
        return result

    bound = flushes[-1] if flushes else {s: 0 for s in job.STREAMS}
    result["bound"] = bound
    result["phase"] = "after >=1 flush" if flushes else "file in place, 0 flushes"
    if log["in_flush"]:
        result["phase"] += " (in a flush)"
    ctx += f" phase {result['phase']!r} last flush {bound}"
    # 1. a SWMR reader opens the file as the killed writer left it
    try:
        with live.open_live(path) as f:
            found, lengths = _check_contents(f, bound, f"{ctx} [open_live, before recover]", refresh=True)
            problems += found
            result["lengths"] = lengths
            result["ahead"] = any(lengths[p] > bound[s] for s, ps in job.DATASETS.items() for p in ps)
        if flushes:  # pynwb through a SWMR handle, as docs/live.md shows
            problems += _check_pynwb(path, bound, f"{ctx} [pynwb on open_live, before recover]", validate=False,
                                     swmr=True)
    except OSError as exc:
        hint = ""
        if not flushes and "not already open for SWMR writing" in str(exc):
            hint = (" (killed while the file was open for writing but not yet in SWMR mode: see "
                    "test_sigkill_right_after_reopen_leaves_a_file_swmr_readers_open)")
        problems.append(f"{ctx}: open_live failed on the killed writer's file: {exc}{hint}")
    # 2. recover, then plain h5py and pynwb
    try:
        live.recover(path)
    except OSError as exc:
        problems.append(f"{ctx}: recover failed: {exc}")
        return result
    with h5py.File(path, "r") as f:
        problems += _check_contents(f, bound, f"{ctx} [plain h5py after recover]")[0]
    problems += _check_pynwb(path, bound, f"{ctx} [pynwb after recover]", validate=bool(flushes) and trial % 2 == 0)
    if not problems:
        path.unlink()  # tens of MB each; the logs stay
    return result


def test_sigkill_at_random_moments_keeps_every_flushed_sample(server, tmp_path):
    """KILLS writers, each SIGKILLed after a seeded random delay; every file holds its last flush, bit-exact."""
    assert KILLS >= 20
    rng = random.Random(SEED)
    t0 = time.monotonic()
    results, creations = [], []
    for t in range(KILLS):
        creation = float(np.median(creations)) if creations else 0.1
        results.append(_kill_trial(server, tmp_path / f"trial{t:02d}", t, rng, creation))
        if results[-1]["creation_seconds"] is not None:
            creations.append(results[-1]["creation_seconds"])
    seconds = time.monotonic() - t0
    phases: dict[str, int] = {}
    for r in results:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    flushed = [r for r in results if r["flushes"]]
    ahead = sum(bool(r.get("ahead")) for r in results)
    creation = float(np.median(creations)) if creations else float("nan")
    summary = (f"seed {SEED}: {len(results)} kills in {seconds:.1f} s, phases {phases}, {ahead} files longer "
               f"than their last logged flush (killed mid-flush), creation took {creation:.3f} s (median), "
               f"flushes before each kill: {[r['flushes'] for r in results]}, "
               f"delays {[round(r['delay'], 3) for r in results]}")
    print(summary)
    problems = [p for r in results for p in r["problems"]]
    assert not problems, "\n".join(problems[:20]) + "\n" + summary
    # the test must have tested something: most kills land after some flushes, in files with data
    assert len(flushed) >= KILLS // 4, summary
    assert max(r["bound"]["ephys"] for r in flushed) > 10_000, summary


def test_sigkill_right_after_reopen_leaves_a_file_swmr_readers_open(server, tmp_path):
    """A writer killed once the complete file is renamed into place and reopened for writing.

    The child stops (a wrapper of ``h5py.File`` sleeps) as soon as it holds the
    final path open for writing, and is killed there: today that is between
    ``h5py.File(path, "r+")`` and ``swmr_mode = True``.  The module promises that
    SWMR readers open a killed writer's file as it is (``open_live`` works "on a
    live or crashed file"; there is "never a half-made file at the target"), and
    that ``recover`` makes it readable by any HDF5 reader.
    """
    path, logp, errp = tmp_path / "live.nwb", tmp_path / "writer.log", tmp_path / "writer.err"
    pid = server.spawn("writer_stalled_reopen", errp, path=str(path), log=str(logp))

    def stalled():
        text = logp.read_text() if logp.exists() else ""
        return next((line for line in text.splitlines() if line.startswith(("reopened", "constructed"))), None)

    try:
        where = _wait_for(stalled, 60, f"the writer to reopen the file ({_tail(errp)})")
    finally:
        server.kill(pid)
    assert server.wait(pid, timeout=60).get("signal") == signal.SIGKILL, _tail(errp)
    assert path.exists()
    empty = {s: 0 for s in job.STREAMS}
    try:
        with live.open_live(path) as f:
            assert _check_contents(f, empty, "open_live", refresh=True)[0] == []
    except OSError as exc:
        swmr_failure = f"killed at {where!r}: open_live refuses the file: {exc}"
    else:
        swmr_failure = None
    live.recover(path)
    with h5py.File(path, "r") as f:
        assert _check_contents(f, empty, "plain h5py after recover")[0] == []
        assert f["acquisition/ephys/data"].shape == (0, job.N_CHANNELS)
    assert swmr_failure is None, swmr_failure


def test_recover_refuses_a_file_whose_writer_is_running(server, tmp_path):
    """``recover`` while another process is still writing must refuse (its docstring) and change nothing.

    Clearing the marks of a live file is HDF5's ``h5clear`` under a running
    writer: the clearing process closes the file at the end of file it read,
    which may cut chunks the writer has stored since.  The test calls
    ``recover`` repeatedly between the writer's flushes, then checks the
    closed file.
    """
    path, logp, errp = tmp_path / "live.nwb", tmp_path / "writer.log", tmp_path / "writer.err"
    pid = server.spawn("writer", errp, path=str(path), log=str(logp), seed=SEED, duration=2.0, flush_every=0.1,
                       fsync=False, speed=2.0)
    accepted, refused = 0, []
    try:
        _wait_for(lambda: len(_log(logp)["flushes"]) >= 2, 60, "two flushes")
        end = time.monotonic() + 1.0
        while time.monotonic() < end and _log(logp)["closed"] is None:
            try:
                live.recover(path)
                accepted += 1
            except OSError as exc:
                refused.append(str(exc))
            time.sleep(0.005)
        status = server.wait(pid, timeout=120)
    finally:
        server.kill(pid)
        if pid in server.children:
            server.wait(pid, timeout=30)
    assert status.get("exitcode") == 0, f"the writer ended {status}: {_tail(errp)}"
    final = _log(logp)["closed"]
    try:
        with h5py.File(path, "r") as f:
            damage = _check_contents(f, final, "the closed file")[0]
    except OSError as exc:
        damage = [f"the closed file: {exc}"]
    assert accepted == 0 and not damage, (
        f"recover() cleared the marks of a file another process was writing {accepted} times out of "
        f"{accepted + len(refused)} (docstring: 'It refuses a file that a live writer still holds open'); "
        f"the closed file then: {damage or 'intact'}")


# --------------------------------------------------------------------------- #
# SWMR readers following a growing file                                        #
# --------------------------------------------------------------------------- #
def test_swmr_readers_follow_a_growing_file(server, tmp_path):
    """A writer process streams for ~2 s (flush every 0.1 s); two reader processes watch it grow.

    One follows the ephys data with ``follow()``, one polls every dataset with
    ``open_live`` + ``refresh``; both check every sample they see.  Then the
    closed file opens in plain h5py and pynwb with no recover.
    """
    path, logp = tmp_path / "live.nwb", tmp_path / "writer.log"
    fres, pres = tmp_path / "follower.json", tmp_path / "poller.json"
    pids = []
    try:
        wpid = server.spawn("writer", tmp_path / "writer.err", path=str(path), log=str(logp), seed=SEED,
                            duration=2.0, flush_every=0.1, fsync=True, speed=2.0)
        pids.append(wpid)
        _wait_for(lambda: _log(logp)["created"], 60, "the writer to create the file")
        pids.append(server.spawn("follower", tmp_path / "follower.err", path=str(path),
                                 dataset=job.DATASETS["ephys"][0], result=str(fres), writer_log=str(logp)))
        pids.append(server.spawn("poller", tmp_path / "poller.err", path=str(path), result=str(pres),
                                 writer_log=str(logp)))
        for pid, name in zip(pids, ("writer", "follower", "poller")):
            status = server.wait(pid, timeout=120)
            assert status.get("exitcode") == 0, f"{name} ended {status}: {_tail(tmp_path / (name + '.err'))}"
    finally:
        for pid in pids:
            server.kill(pid)
            if pid in server.children:
                server.wait(pid, timeout=30)

    log = _log(logp)
    final = log["closed"]
    assert final is not None and final["ephys"] > 0, log
    flushes = log["flushes"]
    assert len(flushes) >= 5, f"the writer flushed only {len(flushes)} times in 2 s"

    fol = json.loads(fres.read_text())
    assert fol["bad"] == [], fol["bad"]
    assert fol["finished"]
    assert fol["final"] == final["ephys"] == fol["checked"], (fol["final"], final, fol["checked"])
    while_running = {n for n, _, running in fol["seen"] if running}
    assert len(while_running) >= 5, f"follow() saw only the lengths {sorted(while_running)} while the writer ran"
    flushed_lengths = {f["ephys"] for f in flushes}
    assert {n for n, _, _ in fol["seen"]} <= flushed_lengths, "follow() saw a length no flush made durable"

    pol = json.loads(pres.read_text())
    assert pol["bad"] == [], pol["bad"]
    for stream, paths in job.DATASETS.items():
        for p in paths:
            assert pol["final"][p] == final[stream], (p, pol["final"], final)
    assert pol["distinct"]["acquisition/ephys/data"] >= 5, pol

    # closed normally: no recover needed
    with h5py.File(path, "r") as f:
        problems, lengths = _check_contents(f, final, "plain h5py after close")
        assert problems == []
        assert all(lengths[p] == final[s] for s, ps in job.DATASETS.items() for p in ps), (lengths, final)
    assert _check_pynwb(path, final, "pynwb after close", validate=True) == []

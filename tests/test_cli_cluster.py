"""The CLI on a running Dask cluster (``--scheduler tcp://...``, ``--scheduler-file``) and ``demo --shards``.

A cluster of 2 worker processes runs in this test process; every command runs
as a user runs it, in a subprocess that connects to that cluster by address or
through a scheduler file.  The checks: the output is right element by element
(reopened with plain h5py or pynwb), the cluster's workers did the work (the
scheduler's own counters), the cluster is still running afterwards (it is not
the command's to stop), and wrong or unreachable schedulers are one clear
``nwb-dask CMD: error:`` line with exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest

import nwb_dask
import nwb_dask.cluster
from nwb_dask.nwb.shards import parts_dir
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys
from test_cli_errors import bad_input  # the one check of an error line: status 2, no stdout, no traceback

pytestmark = pytest.mark.filterwarnings("ignore:.*compression may not be available:UserWarning")

NWB_DASK = str(Path(sys.executable).with_name("nwb-dask"))
ES = "/acquisition/ElectricalSeries/data"


def run(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([NWB_DASK, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c, set_as_default=False) as client:
            yield client


@pytest.fixture(scope="module")
def scheduler_file(cluster, tmp_path_factory) -> Path:
    """The cluster's scheduler file, as ``dask scheduler --scheduler-file`` and dask-mpi write it."""
    path = tmp_path_factory.mktemp("sched") / "scheduler.json"
    cluster.write_scheduler_file(str(path))
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A gzip NWB file of 20000 x 16 int16 in 8 chunks, written with the threaded scheduler."""
    path = tmp_path_factory.mktemp("rec") / "in.nwb"
    data = nwb_dask.DaskDataIO(synthetic_ephys(seconds=2 / 3, n_channels=16, seed=7), codec="gzip",
                               chunks=(2500, 16))
    nwb_dask.write_nwb(ephys_nwbfile(data), path, scheduler="threads", progress=False)
    return path


def _counter(cluster) -> int:
    return cluster.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


@pytest.mark.parametrize("how", ["address", "host:port", "scheduler-file"])
def test_repack_on_a_running_cluster_leaves_it_running(cluster, scheduler_file, recording, tmp_path, how):
    workers = sorted(cluster.scheduler_info()["workers"])
    before = _counter(cluster)
    if how == "address":
        where = ["--scheduler", cluster.scheduler.address]
    elif how == "host:port":  # as dask's Client takes it, without the scheme
        where = ["--scheduler", cluster.scheduler.address.removeprefix("tcp://")]
    else:
        where = ["--scheduler-file", scheduler_file]
    out = tmp_path / "r.nwb"
    res = run("repack", recording, out, "--codec", "zstd", "--min-mb", "0", "--chunks", "source", "--json",
              "--quiet", *where)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["verified"] is True
    with h5py.File(out, "r") as f, h5py.File(recording, "r") as g:
        assert "32015" in f[ES]._filters and f[ES].chunks == (2500, 16)  # zstd, as asked; 8 chunks
        np.testing.assert_array_equal(f[ES][()], g[ES][()])
    assert _counter(cluster) - before >= 8 * 3  # the 8 blocks were scheduled (and computed) on this cluster
    assert sorted(cluster.scheduler_info()["workers"]) == workers  # still running, with the same workers


def test_a_scheduler_file_written_after_the_command_started_is_waited_for(cluster, scheduler_file, recording,
                                                                          tmp_path):
    """A batch script starts the scheduler and nwb-dask together: the file appears a second later."""
    late = tmp_path / "late.json"
    late.write_text("")  # the scheduler has created it and not yet written it
    timer = threading.Timer(1.0, lambda: late.write_text(scheduler_file.read_text()))
    timer.start()
    try:
        res = run("repack", recording, tmp_path / "r.nwb", "--min-mb", "0", "--quiet", "--scheduler-file", late)
    finally:
        timer.join()
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "r.nwb", "r") as f, h5py.File(recording, "r") as g:
        np.testing.assert_array_equal(f[ES][()], g[ES][()])


def test_demo_sharded_on_a_running_cluster(cluster, tmp_path):
    """demo --shards workers: one part file per worker of the cluster; pynwb in a fresh process reads it whole."""
    out = tmp_path / "rec.nwb"
    res = run("demo", "-o", out, "--seconds", "1", "--serial-seconds", "0", "--quiet", "--json",
              "--scheduler", cluster.scheduler.address, "--shards", "workers")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["parts"] == 2 and report["kept"] is True and report["shape"] == [30000, 384]
    parts = sorted(p.relative_to(parts_dir(out)).as_posix() for p in parts_dir(out).rglob("*.h5"))
    assert parts == ["acquisition/ElectricalSeries/data.0.h5", "acquisition/ElectricalSeries/data.1.h5"]
    on_disk = out.stat().st_size + sum((parts_dir(out) / p).stat().st_size for p in parts)
    assert report["file_bytes"] == on_disk and 0 < report["stored_bytes"] < on_disk
    expected = synthetic_ephys(seconds=1, seed=2026).compute()
    check = (f"import numpy as np, pynwb\n"
             f"with pynwb.NWBHDF5IO({str(out)!r}, 'r') as io:\n"
             f"    d = io.read().acquisition['ElectricalSeries'].data\n"
             f"    assert d.is_virtual\n"
             f"    np.save({str(tmp_path / 'back.npy')!r}, d[()])\n")
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), expected)

    whole = tmp_path / "whole.nwb"  # and the parts join into one self-contained file
    res = run("consolidate", out, whole, "--quiet", "--json", "--scheduler", cluster.scheduler.address)
    assert res.returncode == 0, res.stderr
    with h5py.File(whole, "r") as f:
        assert not f[ES].is_virtual
        np.testing.assert_array_equal(f[ES][()], expected)


def test_demo_through_a_scheduler_file_reports_it(cluster, scheduler_file, tmp_path):
    res = run("demo", "--seconds", "0.2", "--serial-seconds", "0", "--quiet", "--json", "--scheduler-file",
              scheduler_file)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["scheduler"] == f"the cluster of {scheduler_file}"
    bad_input(run("demo", "--scheduler", "sync", "--scheduler-file", scheduler_file), "demo",
              "--scheduler sync and --scheduler-file", "give one")


@pytest.mark.parametrize("shards, n_parts", [("1", 1), ("3", 3)])
def test_demo_shards_n_on_threads(tmp_path, shards, n_parts):
    out = tmp_path / "rec.nwb"
    res = run("demo", "-o", out, "--seconds", "0.5", "--serial-seconds", "0", "--quiet", "--json",
              "--scheduler", "threads", "--shards", shards)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["parts"] == n_parts
    with h5py.File(out, "r") as f:
        assert f[ES].is_virtual and len({m.file_name for m in f[ES].virtual_sources()}) == n_parts
        np.testing.assert_array_equal(f[ES][()], synthetic_ephys(seconds=0.5, seed=2026).compute())


def test_unsharded_demo_reports_no_parts(tmp_path):
    res = run("demo", "-o", tmp_path / "rec.nwb", "--seconds", "0.2", "--serial-seconds", "0", "--quiet", "--json",
              "--scheduler", "sync")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["parts"] == 0 and not parts_dir(tmp_path / "rec.nwb").exists()


def test_scheduler_errors_are_one_line(cluster, scheduler_file, recording, tmp_path):
    out = tmp_path / "r.nwb"
    address = cluster.scheduler.address
    bad_input(run("repack", recording, out, "--scheduler", address, "--workers", "2"), "repack",
              "--workers 2", address, "drop --workers")
    with socket.socket() as held:  # bound, never listening: refused, and no other process can take the port meanwhile
        held.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{held.getsockname()[1]}"
        res = run("repack", recording, out, "--scheduler", dead,
                  env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    bad_input(res, "repack", f"cannot reach the dask scheduler at {dead}")
    bad_input(run("repack", recording, out, "--scheduler-file", tmp_path / "none.json",
                  env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}), "repack",
              f"scheduler file {tmp_path / 'none.json'} not found after 2 s")
    bad_input(run("repack", recording, out, "--scheduler", "threads", "--scheduler-file", scheduler_file),
              "repack", "--scheduler threads and --scheduler-file", "give one")
    fast = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    (tmp_path / "empty.json").write_text("")
    bad_input(run("repack", recording, out, "--scheduler-file", tmp_path / "empty.json", env=fast), "repack",
              f"scheduler file {tmp_path / 'empty.json'} is not a dask scheduler file (not JSON) after 2 s")
    (tmp_path / "other.json").write_text('{"type": "Scheduler"}')
    bad_input(run("repack", recording, out, "--scheduler-file", tmp_path / "other.json", env=fast), "repack",
              'is not a dask scheduler file (no "address" in its JSON)')
    bad_input(run("repack", recording, out, "--scheduler-file", tmp_path, env=fast), "repack",
              f"scheduler file {tmp_path} is a directory")
    bad_input(run("repack", recording, out, "--scheduler", "tpc://127.0.0.1:8786"), "repack",
              "cannot connect to the dask scheduler tpc://127.0.0.1:8786", "tpc")
    for name in ("empty.json", "other.json"):
        (tmp_path / name).unlink()
    res = run("repack", recording, out, "--scheduler", "lokal")
    assert res.returncode == 2 and "argument --scheduler: must be one of local, threads, processes, sync" in res.stderr
    res = run("demo", "--shards", "0")
    assert res.returncode == 2 and "argument --shards: must be workers or a positive integer, got '0'" in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# workers from another environment                                             #
# --------------------------------------------------------------------------- #
def _worker(address: str, prelude: str) -> subprocess.Popen:
    """A ``dask worker`` process joined to ``address`` after ``prelude`` ran in it (a changed environment)."""
    code = (f"{prelude}\n"
            "import sys\n"
            "from distributed.cli.dask_worker import main\n"
            f"sys.argv = ['dask-worker', {address!r}, '--nthreads', '1', '--no-dashboard', '--no-nanny', "
            "'--name', 'node-7']\n"
            "main()\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("prelude, needles", [
    ("import sys; sys.modules['nwb_dask'] = None  # as if nwb-dask were not installed there",
     ["the dask workers cannot import nwb_dask", "install nwb-dask"]),
    ("import nwb_dask; nwb_dask.__version__ = '0.0.1'  # the code the worker's tasks would run",
     ["the dask workers run another nwb_dask than this process", "runs 0.0.1", "install the same version"]),
])
def test_workers_of_another_environment_are_named(tmp_path, recording, prelude, needles):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        proc = _worker(lc.scheduler_address, prelude)
        try:
            client.wait_for_workers(1, timeout=120)
            worker = next(iter(client.nthreads()))
            out = tmp_path / "r.nwb"
            res = run("repack", recording, out, "--min-mb", "0", "--quiet", "--scheduler", lc.scheduler_address)
            err = bad_input(res, "repack", *needles, f"{worker} (node-7)")  # the address and the worker's name
            assert not out.exists() and list(tmp_path.iterdir()) == [], err
            with pytest.raises(nwb_dask.cluster.WorkerEnvironmentError, match=re.escape(needles[0])):
                x = da.ones((100, 4), chunks=(10, 4))  # the API too, before any block is sent
                with h5py.File(tmp_path / "x.h5", "w") as f:
                    d = f.create_dataset("x", x.shape, x.dtype, chunks=(10, 4))
                    nwb_dask.write_dask_array(x, d, scheduler=client, progress=False)
        finally:
            proc.kill()
            proc.wait()


def _write_in_thread(client, path, x, chunks) -> tuple[threading.Thread, list]:
    """write_dask_array of ``x`` to ``path`` in a thread (a test that would hang fails on a join timeout instead)."""
    outcome: list = []

    def write():
        try:
            with h5py.File(path, "w") as f:
                d = f.create_dataset("x", x.shape, x.dtype, chunks=(100,) + x.shape[1:])
                nwb_dask.write_dask_array(da.from_array(x, chunks=chunks), d, scheduler=client, progress=False)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t, outcome


def test_a_cluster_without_workers_warns_and_the_write_waits_for_them(tmp_path):
    distributed = pytest.importorskip("distributed")
    x = np.arange(4000, dtype="i2").reshape(1000, 4)
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        with pytest.warns(RuntimeWarning, match=f"the dask cluster at {re.escape(lc.scheduler_address)} has no "
                                                "workers yet: the write waits until workers join"):
            t, outcome = _write_in_thread(client, tmp_path / "x.h5", x, (250, 4))
            time.sleep(1.0)
            assert t.is_alive() and outcome == []  # waiting for a worker
            lc.scale(2)
            t.join(120)
        assert not t.is_alive() and outcome == [None], outcome
        assert sorted(distributed_checked(client)) == sorted(client.nthreads())  # the workers that joined were checked
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], x)


def distributed_checked(client) -> list:
    """The worker addresses nwb_dask.cluster has checked for this client."""
    return list(vars(nwb_dask.cluster)["_CHECKED"].get(client, {}))


def test_a_worker_of_another_environment_joining_an_empty_cluster_is_named(tmp_path):
    """The write waits for a first worker; one without nwb_dask joins: named, not a write that waits for ever."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        with pytest.warns(RuntimeWarning, match="has no workers yet"):
            t, outcome = _write_in_thread(client, tmp_path / "x.h5", np.ones((400, 4), "i2"), (100, 4))
            proc = _worker(lc.scheduler_address, "import sys; sys.modules['nwb_dask'] = None")
            try:
                t.join(120)
            finally:
                proc.kill()
                proc.wait()
        assert not t.is_alive() and len(outcome) == 1
        assert isinstance(outcome[0], nwb_dask.cluster.WorkerEnvironmentError), outcome
        assert "the dask workers cannot import nwb_dask (tcp://127.0.0.1:" in str(outcome[0])


def test_a_worker_that_left_is_no_environment_error(cluster, tmp_path, monkeypatch):
    """A worker listed, then gone before it answers: skipped (not blamed), the write runs on the others."""
    real = vars(nwb_dask.cluster)["_worker_ids"]
    gone = "tcp://127.0.0.1:9"
    monkeypatch.setattr(nwb_dask.cluster, "_worker_ids", lambda c: {**real(c), gone: ("gone", "/nowhere")})
    x = np.arange(8000, dtype="i2").reshape(2000, 4)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        t, outcome = _write_in_thread(cluster, tmp_path / "x.h5", x, (500, 4))
        t.join(120)
    assert not t.is_alive() and outcome == [None], outcome
    assert gone not in distributed_checked(cluster)  # checked again by a later write, should it come back
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], x)


def test_a_closed_client_is_distributed_own_error(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as lc:
        client = distributed.Client(lc, set_as_default=False)
        client.close()
        with h5py.File(tmp_path / "x.h5", "w") as f:
            d = f.create_dataset("x", (10,), "i2", chunks=(5,))
            with pytest.raises(Exception, match="[Cc]lient is closed|not running") as err:
                nwb_dask.write_dask_array(da.ones(10, "i2", chunks=5), d, scheduler=client, progress=False)
        assert not isinstance(err.value, AttributeError)

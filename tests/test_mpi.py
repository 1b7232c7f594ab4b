"""MPI fallback (nwb_dask.mpi), run under real ``mpiexec`` from pytest.

Funnel mode needs only ``pip install mpi4py mpich`` (test extra) and the h5py
wheel.  Collective mode needs h5py built with parallel HDF5: those tests run
when ``NWB_DASK_MPI_PYTHON`` names the Python of such an environment (``.ci/run``
builds one with ``scripts/install-parallel-h5py.sh``), launched with
``NWB_DASK_MPIEXEC`` (default Debian's ``/usr/bin/mpiexec.mpich``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import read_with_plain_pynwb

from nwb_dask.testing import synthetic_ephys

JOB = Path(__file__).with_name("mpi_job.py")
PARALLEL_PYTHON = os.environ.get("NWB_DASK_MPI_PYTHON")
#: The launcher of the MPI that parallel h5py was built with (Debian's MPICH by default).
PARALLEL_MPIEXEC = os.environ.get("NWB_DASK_MPIEXEC", "/usr/bin/mpiexec.mpich")


def _mpiexec(python: str) -> str:
    if python == PARALLEL_PYTHON:
        return PARALLEL_MPIEXEC
    here = os.path.dirname(python)
    found = shutil.which("mpiexec", path=here + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        pytest.fail("mpiexec not found: `pip install mpi4py mpich` (the test extra installs them)")
    return found


def run_job(n: int, kind: str, out: Path, mode: str, python: str = sys.executable, timeout: float = 180):
    """``mpiexec -n N python tests/mpi_job.py KIND OUT MODE``; returns the CompletedProcess."""
    cmd = [_mpiexec(python), "-n", str(n), python, str(JOB), kind, str(out), mode]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out.parent)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def _check_mapping(out: Path) -> None:
    with h5py.File(out, "r") as f:
        ephys, ramp = f["ephys/data"], f["other/ramp"]
        assert ephys.compression == "gzip" and ephys.shuffle and ramp.compression == "gzip"
        np.testing.assert_array_equal(ephys[...], synthetic_ephys(seconds=2, n_channels=64, seed=5).compute())
        np.testing.assert_array_equal(ramp[...], np.arange(350_000, dtype="f4").reshape(50_000, 7))


# --------------------------------------------------------------------------- #
# funnel mode: any h5py                                                        #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n", [2, 3])
def test_funnel_nwb_reads_back_in_plain_pynwb(n, tmp_path):
    out = tmp_path / "mpi.nwb"
    proc = run_job(n, "nwb", out, "funnel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = read_with_plain_pynwb(out, "ElectricalSeries", tmp_path)  # also validates
    np.testing.assert_array_equal(data, synthetic_ephys(seconds=2, n_channels=64, seed=4).compute())
    with h5py.File(out, "r") as f:
        assert f["acquisition/ElectricalSeries/data"].compression == "gzip"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("n", [1, 3])
def test_funnel_mapping_of_dask_and_memmap_sources(n, tmp_path):
    out = tmp_path / "mpi.h5"
    proc = run_job(n, "mapping", out, "funnel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_mapping(out)


def test_funnel_failing_rank_ends_the_job_with_a_clear_error(tmp_path):
    out = tmp_path / "mpi.h5"
    proc = run_job(3, "fail", out, "funnel", timeout=120)
    assert proc.returncode != 0
    assert re.search(r"rank [12] failed on dataset '/ephys/data' block \(\(\d+, \d+\), \(0, 64\)\)", proc.stderr)
    assert re.search(r"ValueError: synthetic failure on rank [12]", proc.stderr)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_funnel_stalled_rank_is_bounded_by_the_timeout(tmp_path):
    out = tmp_path / "mpi.h5"
    proc = run_job(3, "stall", out, "funnel", timeout=120)  # the job's own timeout is 5 s
    assert proc.returncode != 0
    assert "a rank is stuck" in proc.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_collective_without_parallel_h5py_is_a_clear_error(tmp_path):
    if h5py.get_config().mpi:
        pytest.skip("this h5py has parallel HDF5")
    out = tmp_path / "mpi.h5"
    proc = run_job(2, "mapping", out, "collective")
    assert proc.returncode != 0
    assert "needs h5py built with parallel HDF5" in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- #
# collective mode: h5py with parallel HDF5 (NWB_DASK_MPI_PYTHON)                #
# --------------------------------------------------------------------------- #
needs_parallel = pytest.mark.skipif(
    not PARALLEL_PYTHON, reason="NWB_DASK_MPI_PYTHON not set (run scripts/install-parallel-h5py.sh; .ci/run does)"
)


@needs_parallel
@pytest.mark.parametrize("n", [2, 3])
def test_collective_mapping(n, tmp_path):
    out = tmp_path / "mpi.h5"
    proc = run_job(n, "mapping", out, "collective", python=PARALLEL_PYTHON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_mapping(out)
    assert _leftovers(tmp_path) == []


@needs_parallel
def test_collective_nwb_reads_back_in_plain_pynwb(tmp_path):
    out = tmp_path / "mpi.nwb"
    proc = run_job(3, "nwb", out, "collective", python=PARALLEL_PYTHON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = read_with_plain_pynwb(out, "ElectricalSeries", tmp_path)
    np.testing.assert_array_equal(data, synthetic_ephys(seconds=2, n_channels=64, seed=4).compute())


@needs_parallel
def test_collective_failing_rank_raises_on_every_rank(tmp_path):
    out = tmp_path / "mpi.h5"
    proc = run_job(3, "fail", out, "collective", python=PARALLEL_PYTHON, timeout=120)
    assert proc.returncode != 0
    assert re.search(r"MPIWriteError: rank [12] failed on dataset '/ephys/data' block", proc.stderr)
    assert not out.exists() and _leftovers(tmp_path) == []

"""Packaging: pyproject and environment.yml agree; the console script and public API exist."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI distribution names
CONDA_TO_PYPI = {"python-isal": "isal"}


def _name(req: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def _pyproject_names() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {_name(r) for r in reqs}


def _environment_names() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(p) for p in dep["pip"] if not p.startswith("-")}
        else:
            names.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    return names - {"python", "pip"}


def test_environment_matches_pyproject():
    py, env = _pyproject_names(), _environment_names()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_dependency_lists_cover_the_stack():
    assert {"dask", "distributed", "pynwb", "hdmf", "h5py", "hdf5plugin", "numpy", "zarr"} <= _pyproject_names()


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "nwb_dask.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout
    out = subprocess.run(["nwb-dask", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("nwb-dask ")


def test_public_api():
    import nwb_dask

    for name in nwb_dask.__all__:
        assert getattr(nwb_dask, name) is not None, name
    assert {"codec", "DaskDataChunkIterator"} <= set(nwb_dask.__all__)
    import nwb_dask.chunking  # chunk shapes live in their layer since the narrow public API (issue 16)

    assert "guess_chunk_shape" in nwb_dask.chunking.__all__


def test_test_extra_resolves_without_backtracking():
    """README command (b) must resolve quickly on a fresh machine (issue 14.1).

    A dry-run resolve of ``.[test]`` ignoring what is installed: before the
    boto3/botocore bounds, pip backtracked ~20 minutes into ResolutionImpossible.
    """
    import time

    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--disable-pip-version-check", f"{ROOT}[test]"],
        capture_output=True, text=True, timeout=600,
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0 and ("Could not find a version" in out.stderr or "connection" in out.stderr.lower()) \
            and "ResolutionImpossible" not in out.stderr:
        pytest.skip(f"package registry not reachable: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    # pip's words when it starts backtracking
    assert "looking at multiple versions" not in out.stderr, out.stderr[-2000:]
    assert elapsed < 180, f"resolving .[test] took {elapsed:.0f} s"


def test_boto_bounds_inside_aiobotocore_window():
    """The boto3/botocore bounds of the test extra overlap what the installed aiobotocore accepts."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        reqs = [Requirement(r) for r in metadata.requires("aiobotocore") or []]
    except metadata.PackageNotFoundError:
        pytest.skip("aiobotocore not installed")
    window = next(r.specifier for r in reqs if r.name == "botocore")
    ours = next(Requirement(r).specifier for r in tomllib.loads((ROOT / "pyproject.toml").read_text())
                ["project"]["optional-dependencies"]["test"] if Requirement(r).name == "botocore")
    installed = Version(metadata.version("botocore"))
    assert installed in window and installed in ours, (str(window), str(ours), str(installed))

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


def _requirements(conda: bool = False) -> list:
    """environment.yml's entries as ``packaging`` Requirements (conda names mapped to PyPI's)."""
    from packaging.requirements import Requirement

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += [Requirement(p) for p in dep["pip"] if not p.startswith("-")]
        elif _name(dep) not in ("python", "pip"):
            name = _name(dep)
            reqs.append(Requirement(CONDA_TO_PYPI.get(name, name) + dep.strip()[len(name):]))
    return reqs


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_versions_match_pyproject():
    """Each environment.yml entry has the version bounds pyproject gives that package (in one of its lists)."""
    from packaging.requirements import Requirement

    meta = _project()
    specs: dict[str, set[str]] = {}
    for r in list(meta["dependencies"]) + [r for extra in meta["optional-dependencies"].values() for r in extra]:
        req = Requirement(r)
        specs.setdefault(_name(req.name), set()).add(str(req.specifier))
    wrong = {str(r): sorted(specs.get(_name(r.name), ())) for r in _requirements()
             if str(r.specifier) not in specs.get(_name(r.name), ())}
    assert not wrong, f"environment.yml bounds that pyproject does not have (pyproject's in brackets): {wrong}"


def test_core_dependencies_leave_zarr_to_the_extra():
    """Issue 18.5: the HDF5 core installs beside zarr 3; NWB-Zarr (zarr 2, hdmf-zarr) is the [zarr] extra."""
    from packaging.requirements import Requirement

    meta = _project()
    core = {_name(Requirement(r).name): Requirement(r) for r in meta["dependencies"]}
    extras = {k: {_name(Requirement(r).name): Requirement(r) for r in v} for k, v in meta["optional-dependencies"].items()}
    assert not {"zarr", "hdmf-zarr", "lindi"} & set(core), sorted(core)
    # numcodecs encodes the core's zstd / blosc / shuffle: kept, without zarr 2's <0.16
    assert "0.16.6" in core["numcodecs"].specifier and "0.11" not in core["numcodecs"].specifier
    zarr_extra = extras["zarr"]
    assert set(zarr_extra) == {"zarr", "numcodecs", "hdmf-zarr"}
    assert "2.18.7" in zarr_extra["zarr"].specifier and "3.0.0" not in zarr_extra["zarr"].specifier
    assert "0.16.0" not in zarr_extra["numcodecs"].specifier  # zarr 2.18 needs numcodecs<0.16
    assert "3.0.0" not in extras["index"]["zarr"].specifier and "lindi" in extras["index"]  # lindi needs zarr<3
    test_extra = set(meta["optional-dependencies"]["test"])
    assert set(meta["optional-dependencies"]["zarr"]) <= test_extra  # the NWB-Zarr tests run in CI
    assert "zarr" in {_name(r.name) for r in _requirements()}  # the development environment has NWB-Zarr


def _dry_run(*reqs: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict | None, float]:
    """``pip install --dry-run --ignore-installed --report`` of ``reqs``: the process, the report, the seconds."""
    import json
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                              "--disable-pip-version-check", "--report", str(report), *reqs],
                             capture_output=True, text=True, timeout=timeout)
        elapsed = time.perf_counter() - t0
        data = json.loads(report.read_text()) if report.exists() and out.returncode == 0 else None
    if out.returncode != 0 and ("Could not find a version" in out.stderr or "connection" in out.stderr.lower()) \
            and "ResolutionImpossible" not in out.stderr:
        pytest.skip(f"package registry not reachable: {out.stderr[-300:]}")
    return out, data, elapsed


def test_core_resolves_beside_zarr_3():
    """``pip install nwb-dask "zarr>=3"`` resolves (no backtracking) to zarr 3 and numcodecs >= 0.16."""
    out, report, elapsed = _dry_run(str(ROOT), "zarr>=3")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "looking at multiple versions" not in out.stderr, out.stderr[-2000:]
    got = {_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    assert int(got["zarr"].split(".")[0]) >= 3, got["zarr"]
    assert tuple(int(x) for x in got["numcodecs"].split(".")[:2]) >= (0, 16), got["numcodecs"]
    assert "nwb-dask" in got and "hdmf-zarr" not in got and "lindi" not in got, sorted(got)
    assert elapsed < 180, f"resolving took {elapsed:.0f} s"


def test_zarr_extra_refuses_zarr_3():
    """The [zarr] extra pins zarr 2 (hdmf-zarr 0.13 needs it): asked beside zarr 3, pip refuses instead of breaking."""
    out, _, _ = _dry_run(f"{ROOT}[zarr]", "zarr>=3")
    assert out.returncode != 0 and "ResolutionImpossible" in out.stderr, out.stderr[-2000:]
    assert "nwb-dask[zarr] 0.1.0 depends on zarr<3" in out.stdout, out.stdout[-2000:]  # pip's words for the cause


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


def test_the_version_is_pyprojects():
    """nwb_dask.version.__version__ (what a cluster's workers are compared by) is the version pip installs."""
    import nwb_dask
    from nwb_dask.version import __version__

    assert __version__ == nwb_dask.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

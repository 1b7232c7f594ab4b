"""Packaging: pyproject and environment.yml agree; the console script and public API exist."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

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
    assert {"codec", "DaskDataChunkIterator", "guess_chunk_shape"} <= set(nwb_dask.__all__)

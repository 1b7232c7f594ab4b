"""nwb-dask demo: the main job, end to end."""

from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest

from nwb_dask.demo import run_demo
from nwb_dask.testing import synthetic_ephys


def test_run_demo_writes_a_verified_file(tmp_path):
    path = tmp_path / "demo.nwb"
    result = run_demo(seconds=1.5, path=path, scheduler="threads", progress=False)
    assert result.shape == (45_000, 384)
    assert result.logical_bytes == 45_000 * 384 * 2
    assert 1.5 < result.ratio < 4
    assert "identical to the source" in result.report()
    with h5py.File(path, "r") as f:
        dset = f["acquisition/ElectricalSeries/data"]
        assert dset.compression == "gzip" and dset.shuffle
        np.testing.assert_array_equal(dset[:30_000], synthetic_ephys(seconds=1.5, seed=2026)[:30_000].compute())


def test_cli_demo_on_a_local_cluster(tmp_path):
    out = subprocess.run(
        ["nwb-dask", "demo", "--seconds", "1", "--workers", "2", "--quiet", "--codec", "zstd", "--level", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for key in ("size", "ratio", "write", "verify", "scheduler local", "codec        zstd-2,"):
        assert key in out.stdout, (key, out.stdout)
    assert list(tmp_path.iterdir()) == [], "the temporary output was not cleaned up"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codec", "brotli"], "unknown codec 'brotli'"),
        (["--level", "42"], "level=42 is invalid"),
        (["--seconds", "-1"], "seconds must be positive"),
    ],
)
def test_cli_demo_bad_options(args, message):
    out = subprocess.run(["nwb-dask", "demo", "--quiet", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert message in out.stderr


def test_a_failed_check_leaves_no_output(tmp_path, monkeypatch):
    """cli.md: a demo whose read-back does not verify exits 1 and leaves nothing at OUTPUT."""
    import nwb_dask.demo as demo
    from nwb_dask.cli import main
    from nwb_dask.errors import VerificationError

    def bad_verify(dset, source, progress):
        raise VerificationError("simulated mismatch at sample 0")

    monkeypatch.setattr(demo, "_verify", bad_verify)
    out = tmp_path / "v.nwb"
    status = main(["demo", "-o", str(out), "--seconds", "0.2", "--scheduler", "sync", "--serial-seconds", "0", "-q"])
    assert status == 1 and not out.exists() and list(tmp_path.iterdir()) == []

"""Every NWB file nwb_dask writes in its demo, its fixtures and its docs passes nwbinspector (issue 18.4).

nwbinspector (optional: the ``test`` and ``inspect`` extras) must report no
finding of importance CRITICAL or BEST_PRACTICE_VIOLATION (nor ERROR or
PYNWB_VALIDATION, which rank above them) on: the ``nwb-dask demo`` file, the
``nwb_dask.testing`` fixtures (``ephys_nwbfile`` written by NWBDaskIO, plain
NWBHDF5IO and to NWB-Zarr; ``write_rich_nwbfile`` plain and compressed, with an
external link), the live example of docs/live.md, and every ``.nwb`` file the
docs examples write.  A repack of a file keeps that file's findings and adds
none.  Findings are printed in full when the test fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

nwbinspector = pytest.importorskip("nwbinspector")

import nwb_dask  # noqa: E402
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys, write_rich_nwbfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
Importance = nwbinspector.Importance
#: the findings a file must not have: BEST_PRACTICE_VIOLATION and everything ranked above it
FORBIDDEN = {i for i in Importance if i.value >= Importance.BEST_PRACTICE_VIOLATION.value}


def _describe(messages) -> str:
    return "\n".join(f"  {m.importance.name} {m.check_function_name} at {m.location} ({m.object_type} "
                     f"{m.object_name!r}): {m.message}" for m in messages)


def findings(path) -> list:
    """nwbinspector's findings on an HDF5 NWB file or an NWB-Zarr store."""
    path = Path(path)
    if nwb_dask.api.is_zarr(path):  # nwbinspector 0.7 opens HDF5 paths only: inspect the object hdmf-zarr reads
        from hdmf_zarr.nwb import NWBZarrIO

        with NWBZarrIO(str(path), "r") as io:
            return list(nwbinspector.inspect_nwbfile_object(io.read()))
    return list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path)))


def assert_passes(path) -> list:
    """No CRITICAL or BEST_PRACTICE_VIOLATION finding (or worse); returns every finding."""
    messages = findings(path)
    bad = [m for m in messages if m.importance in FORBIDDEN]
    assert not bad, f"nwbinspector on {path}:\n{_describe(bad)}\nall findings:\n{_describe(messages)}"
    return messages


def test_the_check_sees_what_it_must_refuse(tmp_path):
    """The assertion can fail: a file without a Subject, int16 with conversion 1.0, regular timestamps."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwbfile = ephys_nwbfile(np.zeros((100, 4), "int16"), conversion=1.0)
    plain = NWBFile("bad", "bad", datetime(2026, 1, 1, tzinfo=timezone.utc))
    nwbfile.add_acquisition(TimeSeries(name="events", data=np.arange(10), unit="n/a",
                                       timestamps=np.arange(10) * 0.5, description="regular"))
    with NWBHDF5IO(tmp_path / "bad.nwb", "w") as io:
        io.write(nwbfile)
    with NWBHDF5IO(tmp_path / "plain.nwb", "w") as io:
        io.write(plain)
    checks = {m.check_function_name for m in findings(tmp_path / "bad.nwb") if m.importance in FORBIDDEN}
    assert {"check_electrical_series_unscaled_data", "check_regular_timestamps"} <= checks, checks
    assert "check_subject_exists" in {m.check_function_name for m in findings(tmp_path / "plain.nwb")}
    with pytest.raises(AssertionError, match="check_subject_exists"):
        assert_passes(tmp_path / "plain.nwb")


def test_demo_file(tmp_path):
    from nwb_dask.demo import run_demo

    result = run_demo(seconds=0.2, path=tmp_path / "demo.nwb", scheduler="threads", progress=False,
                      serial_seconds=0)
    assert_passes(result.path)


def test_ephys_nwbfile_through_every_writer(tmp_path):
    from pynwb import NWBHDF5IO

    data = synthetic_ephys(seconds=0.1, n_channels=16, seed=1)
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(data)), tmp_path / "dask.nwb", progress=False,
                       scheduler="sync")
    with NWBHDF5IO(tmp_path / "plain.nwb", "w") as io:
        io.write(ephys_nwbfile(data.compute()))
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(data)), tmp_path / "zarr.nwb.zarr", progress=False,
                       scheduler="sync")
    for name in ("dask.nwb", "plain.nwb", "zarr.nwb.zarr"):
        assert_passes(tmp_path / name)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_rich_nwbfile(tmp_path, compressed):
    target = write_rich_nwbfile(tmp_path / "target.nwb", seconds=0.5, n_channels=8, seed=3)
    path = write_rich_nwbfile(tmp_path / "rich.nwb", seconds=0.5, n_channels=8, seed=4, compressed=compressed,
                              external_target=(target, "ElectricalSeries"))
    assert_passes(target)
    assert_passes(path)


def test_repack_adds_no_findings(tmp_path):
    """A repacked file has its input's findings and no more (nwb_dask never invents or drops metadata)."""
    old = ROOT / "tests" / "data" / "pynwb3.0.0_bands.nwb"  # no Subject, as pynwb 3.0.0's test files were
    rich = write_rich_nwbfile(tmp_path / "rich.nwb", seconds=0.5, n_channels=8)
    for source in (old, rich):
        out = tmp_path / f"repacked-{source.name}"
        nwb_dask.repack(source, out, min_bytes=0, progress=False, scheduler="sync")
        key = lambda m: (m.check_function_name, m.location, m.object_name)  # noqa: E731
        before, after = {key(m) for m in findings(source)}, {key(m) for m in findings(out)}
        assert after <= before, f"{out} gained findings: {sorted(after - before)}"


def _run_page(page: Path, folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("page", ["live.md", "writer.md", "external.md"])
def test_files_written_by_docs(page, tmp_path, monkeypatch):
    """The live example (regular and irregular streams, int16 with its conversion) and a page's other files."""
    _run_page(ROOT / "docs" / page, tmp_path, monkeypatch)
    written = sorted(p for p in tmp_path.rglob("*.nwb") if p.is_file())
    assert written, f"docs/{page} wrote no .nwb file"
    for path in written:
        assert_passes(path)
    if page == "live.md":
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(tmp_path / "session.nwb", "r") as io:
            f = io.read()
            assert f.acquisition["ephys"].conversion == pytest.approx(0.195e-6)
            times = f.acquisition["events"].timestamps[:]
            assert len(times) == 20 and np.all(np.diff(times) > 0) and np.ptp(np.diff(times)) > 1e-3

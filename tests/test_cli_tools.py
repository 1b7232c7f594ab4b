"""The ``nwb-dask`` command line: repack, info, convert, follow and recover through ``cli.main``.

Every command runs in process through :func:`nwb_dask.cli.main` (which returns
the exit status); outputs are reopened with h5py / hdmf-zarr and compared with
the inputs, printed reports are read from capsys, and errors are checked by
exit status 2 and the ``nwb-dask <cmd>: error: ...`` line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from pynwb import NWBFile, TimeSeries

import nwb_dask
from nwb_dask.cli import main
from nwb_dask.live import StreamWriter, growing
from nwb_dask.testing import write_rich_nwbfile

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
    "ignore:AnnotationSeries is deprecated:UserWarning",  # pynwb reading the rich file back
)

ES = "/acquisition/ElectricalSeries/data"
LIVE = "acquisition/sig/data"
FILTER_ZSTD = 32015


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def error_of(capsys, command: str) -> str:
    """The stderr of a command that failed as the CLI fails: one ``nwb-dask CMD: error:`` line, no stdout."""
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"nwb-dask {command}: error: "), captured.err
    return captured.err


@pytest.fixture(scope="module")
def rich_dir(tmp_path_factory) -> Path:
    """An uncompressed rich NWB file (2 s x 32 channels: a 3.8 MB ElectricalSeries)."""
    d = tmp_path_factory.mktemp("cli")
    write_rich_nwbfile(d / "rich.nwb", seconds=2.0, n_channels=32)
    return d


@pytest.fixture
def rich(rich_dir, tmp_path) -> Path:
    """A private copy of the rich file; its digest is checked after the test (inputs are never modified)."""
    path = tmp_path / "rich.nwb"
    path.write_bytes((rich_dir / "rich.nwb").read_bytes())
    digest = sha256(path)
    yield path
    assert sha256(path) == digest, "the input was modified"


def es_data(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[ES][()]


@pytest.fixture(scope="module")
def live_file(tmp_path_factory) -> Path:
    """A finished (closed) live file: acquisition/sig holds 1234 samples of 4 channels."""
    path = tmp_path_factory.mktemp("live") / "live.nwb"
    nwb = NWBFile("live", "live-cli", datetime(2026, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(TimeSeries(name="sig", data=growing("int16", (4,)), unit="V", rate=1000.0,
                                   starting_time=0.0))
    with StreamWriter(path, nwb, flush_every=None) as w:
        w.append("sig", np.arange(4000, dtype="int16").reshape(1000, 4))
        w.flush()
        w.append("sig", np.ones((234, 4), "int16"))
    return path


def live_values() -> np.ndarray:
    return np.concatenate([np.arange(4000, dtype="int16").reshape(1000, 4), np.ones((234, 4), "int16")])


# --------------------------------------------------------------------------- #
# repack                                                                       #
# --------------------------------------------------------------------------- #
def test_repack_verified_with_report(rich, tmp_path, capsys):
    out = tmp_path / "packed.nwb"
    assert main(["repack", str(rich), str(out), "--quiet", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    report = captured.out
    assert ES in report and "verifying" in report and "every object compared" in report
    assert "contiguous -> " in report and "none -> gzip-4+shuffle" in report
    assert str(out) in report
    with h5py.File(out, "r") as f:
        dset = f[ES]
        assert dset.compression == "gzip" and dset.compression_opts == 4 and dset.shuffle
        assert dset.chunks is not None
        assert dset.id.get_storage_size() < dset.size * dset.dtype.itemsize
    np.testing.assert_array_equal(es_data(out), es_data(rich))
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_repack_chunks_shape_and_no_verify(rich, tmp_path, capsys):
    out = tmp_path / "chunked.nwb"
    assert main(["repack", str(rich), str(out), "--chunks", "1000,8", "--no-verify", "--quiet",
                 "--scheduler", "sync"]) == 0
    report = capsys.readouterr().out
    assert "1000x8" in report and "not verified" in report and "verifying" not in report
    with h5py.File(out, "r") as f:
        assert f[ES].chunks == (1000, 8)
    np.testing.assert_array_equal(es_data(out), es_data(rich))


def test_repack_bad_chunks(rich, tmp_path, capsys):
    out = tmp_path / "bad.nwb"
    assert main(["repack", str(rich), str(out), "--chunks", "x", "--quiet"]) == 2
    err = error_of(capsys, "repack")
    assert "--chunks must be auto, source or a shape" in err and "'x'" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_repack_chunks_shape_applies_its_leading_axes_to_1d_datasets(rich, tmp_path, capsys):
    """A (time, channels) shape gives 1-D datasets (LFP timestamps, power) its time extent."""
    out = tmp_path / "ts.nwb"
    assert main(["repack", str(rich), str(out), "--chunks", "1000,8", "--min-mb", "0.01", "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        assert f[ES].chunks == (1000, 8)
        assert f["/processing/ecephys/LFP/LFP/timestamps"].chunks == (1000,)


def test_repack_existing_output(rich, tmp_path, capsys):
    out = tmp_path / "exists.nwb"
    out.write_bytes(b"keep me")
    assert main(["repack", str(rich), str(out), "--quiet"]) == 2
    err = error_of(capsys, "repack")
    assert "exists" in err and "--overwrite" in err and str(out) in err
    assert out.read_bytes() == b"keep me"
    assert main(["repack", str(rich), str(out), "--quiet", "--overwrite", "--min-mb", "0.5"]) == 0
    np.testing.assert_array_equal(es_data(out), es_data(rich))


def test_repack_zstd_level(rich, tmp_path, capsys):
    out = tmp_path / "zstd.nwb"
    assert main(["repack", str(rich), str(out), "--codec", "zstd", "--level", "5", "--quiet"]) == 0
    assert "zstd-5" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        plist = f[ES].id.get_create_plist()
        filters = {plist.get_filter(i)[0]: plist.get_filter(i)[2] for i in range(plist.get_nfilters())}
        assert FILTER_ZSTD in filters and filters[FILTER_ZSTD][0] == 5
        assert str(FILTER_ZSTD) in f[ES]._filters
    assert [d.codec for d in nwb_dask.info(out).datasets if d.path == ES] == ["zstd-5"]
    np.testing.assert_array_equal(es_data(out), es_data(rich))


def test_repack_errors(rich, tmp_path, capsys):
    assert main(["repack", str(tmp_path / "none.nwb"), str(tmp_path / "o.nwb"), "--quiet"]) == 2
    assert "none.nwb" in error_of(capsys, "repack")
    assert main(["repack", str(rich), str(rich), "--quiet", "--overwrite"]) == 2  # never onto the input
    assert "is the input file" in error_of(capsys, "repack")
    assert main(["repack", str(rich), str(tmp_path / "o.nwb"), "--codec", "nonsense", "--quiet"]) == 2
    assert "nonsense" in error_of(capsys, "repack")
    assert not (tmp_path / "o.nwb").exists()


# --------------------------------------------------------------------------- #
# info                                                                         #
# --------------------------------------------------------------------------- #
def test_info_json_and_table(rich, capsys):
    assert main(["info", str(rich), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = nwb_dask.info(rich)
    assert data["file"] == expected.file
    assert [d["path"] for d in data["datasets"]] == [d.path for d in expected.datasets]  # every dataset
    es = next(d for d in data["datasets"] if d["path"] == ES)
    assert es["codec"] == "none" and es["shape"] == [60_000, 32] and es["ratio"] == pytest.approx(1.0, rel=0.01)

    assert main(["info", str(rich)]) == 0
    table = capsys.readouterr().out
    assert table.rstrip("\n") == expected.report()
    assert "datasets under 1 MiB not shown" in table and "/units/spike_times " not in table
    assert main(["info", str(rich), "--all"]) == 0
    full = capsys.readouterr().out
    assert full.rstrip("\n") == expected.report(all_datasets=True)
    assert "/units/spike_times " in full and "not shown" not in full


def test_info_missing_file(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.nwb")]) == 2
    assert "missing.nwb" in error_of(capsys, "info")
    (tmp_path / "not_hdf5.nwb").write_bytes(b"plain text, not HDF5")
    assert main(["info", str(tmp_path / "not_hdf5.nwb")]) == 2  # h5py's OSError
    err = error_of(capsys, "info")
    assert "not_hdf5.nwb: cannot open as HDF5/NWB" in err and "file signature not found" in err


# --------------------------------------------------------------------------- #
# convert                                                                      #
# --------------------------------------------------------------------------- #
def test_convert_to_zarr_and_back(rich, tmp_path, capsys):
    store = tmp_path / "rich.nwb.zarr"
    back = tmp_path / "back.nwb"
    assert main(["convert", str(rich), str(store), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "hdf5->zarr" in report and "verifying" in report
    assert store.is_dir()

    # the store holds a compound dataset with references, stored with Pickle: refused unless allowed
    assert main(["convert", str(store), str(back), "--quiet"]) == 2
    assert "--allow-pickle" in error_of(capsys, "convert")
    assert not back.exists()

    assert main(["convert", str(store), str(back), "--quiet", "--allow-pickle"]) == 0
    assert "zarr->hdf5" in capsys.readouterr().out
    np.testing.assert_array_equal(es_data(back), es_data(rich))
    import zarr

    np.testing.assert_array_equal(zarr.open(str(store), mode="r")[ES.lstrip("/")][:], es_data(rich))


def test_convert_hdf5_to_hdf5_points_to_repack(rich, tmp_path, capsys):
    out = tmp_path / "copy.nwb"
    assert main(["convert", str(rich), str(out), "--quiet"]) == 2
    err = error_of(capsys, "convert")
    assert "repack" in err and "HDF5 files" in err
    assert not out.exists()
    assert main(["convert", str(tmp_path / "absent.nwb"), str(tmp_path / "x.nwb.zarr"), "--quiet"]) == 2
    assert "absent.nwb" in error_of(capsys, "convert")


# --------------------------------------------------------------------------- #
# follow and recover                                                           #
# --------------------------------------------------------------------------- #
def test_follow_finished_file(live_file, capsys):
    t0 = time.monotonic()
    assert main(["follow", str(live_file), LIVE, "--idle-timeout", "0.3", "--poll", "0.05"]) == 0
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3.0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "no new samples for 0.3 s; 1234 samples"
    assert lines[0].endswith(f"{LIVE}: 1234 samples (+1234)")

    assert main(["follow", str(live_file), LIVE, "--start", "1000", "--idle-timeout", "0.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"{LIVE}: 1234 samples (+234)")
    assert lines[-1] == "no new samples for 0.3 s; 1234 samples"

    assert main(["follow", str(live_file), LIVE, "--start", "1234", "--idle-timeout", "0.3"]) == 0
    assert capsys.readouterr().out.splitlines() == ["no new samples for 0.3 s; 1234 samples"]


def test_follow_missing_dataset_and_file(live_file, tmp_path, capsys):
    assert main(["follow", str(live_file), "acquisition/nope/data", "--idle-timeout", "0.3"]) == 2
    err = error_of(capsys, "follow")
    assert "acquisition/nope/data" in err and "no dataset" in err
    assert main(["follow", str(tmp_path / "gone.nwb"), LIVE, "--idle-timeout", "0.3"]) == 2
    assert "gone.nwb" in error_of(capsys, "follow")


def test_recover_closed_live_file(live_file, tmp_path, capsys):
    path = tmp_path / "closed.nwb"
    path.write_bytes(live_file.read_bytes())
    assert main(["recover", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: writer mark cleared; any HDF5 reader opens it now\n"
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[LIVE][()], live_values())


def test_recover_file_of_a_killed_writer(tmp_path, capsys):
    """A writer that died in SWMR mode leaves HDF5's mark; plain readers refuse the file until recover."""
    path = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import os, h5py, numpy as np
        f = h5py.File({str(path)!r}, "w", libver="latest")
        d = f.create_dataset("x", data=np.arange(100), chunks=(10,), maxshape=(None,))
        f.swmr_mode = True
        d.resize((150,)); d[100:] = np.arange(100, 150); f.flush()
        os._exit(0)  # no close: the "open for writing" mark stays
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with pytest.raises(OSError):
        h5py.File(path, "r").close()
    assert main(["recover", str(path)]) == 0
    assert "writer mark cleared" in capsys.readouterr().out
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(150))


def test_recover_errors(tmp_path, capsys):
    assert main(["recover", str(tmp_path / "missing.nwb")]) == 2
    err = error_of(capsys, "recover")
    assert "missing.nwb" in err and "no such file" in err

    nwb = NWBFile("live", "live-open", datetime(2026, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(TimeSeries(name="sig", data=growing("int16", (4,)), unit="V", rate=1000.0,
                                   starting_time=0.0))
    path = tmp_path / "open.nwb"
    with StreamWriter(path, nwb, flush_every=None) as w:
        w.append("sig", np.zeros((10, 4), "int16"))
        w.flush()
        assert main(["recover", str(path)]) == 2  # a writer holds it
        assert "writer" in error_of(capsys, "recover")
    with h5py.File(path, "r") as f:
        assert f[LIVE].shape == (10, 4)


def test_convert_takes_min_mb_as_repack_does(tmp_path):
    """`--min-mb` on convert as on repack: 0 rewrites every numeric dataset in parallel; negative is bad input."""
    import json
    import subprocess
    from pathlib import Path

    src = Path(__file__).parent / "data" / "pynwb3.0.0_ecephys384.nwb"

    def convert(out, *extra):
        return subprocess.run(["nwb-dask", "convert", str(src), str(tmp_path / out), "-q", "--json", *extra],
                              capture_output=True, text=True, timeout=300)

    default, everything = convert("a.nwb.zarr"), convert("b.nwb.zarr", "--min-mb", "0")
    assert default.returncode == 0 and everything.returncode == 0, default.stderr + everything.stderr
    assert json.loads(default.stdout)["datasets"] == []  # a small file: nothing of 1 MiB or more
    assert "/acquisition/ElectricalSeries/data" in json.loads(everything.stdout)["datasets"]
    bad = convert("c.nwb.zarr", "--min-mb", "-1")
    assert bad.returncode == 2 and "--min-mb: must be a number >= 0" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "c.nwb.zarr").exists()

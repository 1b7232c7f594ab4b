"""consolidate (issue 5): self-contained copies of files with external links and virtual datasets.

The input must never change (its bytes are hashed before and after), the
output must appear whole or not at all, and every output is reopened with
plain h5py and read by plain pynwb in a fresh interpreter (with validation).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from conftest import read_with_plain_pynwb
from pynwb.ecephys import ElectricalSeries

import nwb_dask
import nwb_dask.cli
import nwb_dask.hdf5.write
from nwb_dask import (
    DaskDataIO,
    audit_links,
    consolidate,
    external_data,
    join_timeseries,
    write_nwb,
)
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
)

DATA = "acquisition/ElectricalSeries/data"
LINKED = "acquisition/Linked/data"
RATE = 30_000.0
CH = 16
N = 30_000


# --------------------------------------------------------------------------- #
# Helpers                                                                      #
# --------------------------------------------------------------------------- #
def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if ".partial" in p.name)


@pytest.fixture(scope="module")
def dataset_set(tmp_path_factory):
    """The set of files consolidated below, and the segments' values.

    * ``raw/seg{0,1,2}.nwb``: 1 s x 16 channels each; seg0 is zstd-2 with
      conversion 1e-6, seg1/seg2 gzip, contiguous (starting_time 1 and 2 s);
    * ``linked.nwb``: its data an external link to seg0;
    * ``joined.nwb``: seg1 + seg2 as a virtual dataset;
    * ``both.nwb``: both in one file: the virtual dataset, and a link to seg0
      whose container declared conversion 0.5 (overridden; readers see 1e-6).
    """
    root = tmp_path_factory.mktemp("consolidate_set")
    (root / "raw").mkdir()
    values = []
    for i in range(3):
        x = synthetic_ephys(1.0, CH, seed=30 + i)
        write_nwb(
            ephys_nwbfile(
                DaskDataIO(x, codec=("zstd", {"level": 2}) if i == 0 else "gzip", chunks=(7_500, CH)),
                starting_time=float(i),
                conversion=1e-6 if i == 0 else 0.195e-6,
                identifier=f"seg{i}",
            ),
            root / "raw" / f"seg{i}.nwb",
            progress=False,
        )
        values.append(x.compute())
    seg = [root / "raw" / f"seg{i}.nwb" for i in range(3)]

    write_nwb(ephys_nwbfile(external_data(seg[0], DATA), conversion=1e-6, identifier="linked"),
              root / "linked.nwb", progress=False)

    j = join_timeseries(seg[1:])
    write_nwb(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"], identifier="joined"),
              root / "joined.nwb", progress=False)

    j = join_timeseries(seg[1:])
    nwbfile = ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"], identifier="both")
    es = nwbfile.acquisition["ElectricalSeries"]
    nwbfile.add_acquisition(ElectricalSeries(
        name="Linked", data=external_data(seg[0], DATA, on_mismatch="ignore"), electrodes=es.electrodes,
        rate=RATE, conversion=0.5,
    ))
    write_nwb(nwbfile, root / "both.nwb", progress=False)
    return root, values


@pytest.fixture
def files(dataset_set, tmp_path):
    """A private copy of the set under tmp_path/set, and the segments' values."""
    root, values = dataset_set
    shutil.copytree(root, tmp_path / "set")
    return tmp_path / "set", values


# --------------------------------------------------------------------------- #
# Consolidating links and virtual datasets                                     #
# --------------------------------------------------------------------------- #
def test_consolidate_linked_file(files, tmp_path):
    root, values = files
    src = root / "linked.nwb"
    before = sha256(src)
    assert [r.kind for r in audit_links(src)] == ["external"]
    out = tmp_path / "out" / "linked_full.nwb"
    out.parent.mkdir()

    result = consolidate(src, out, progress=False)
    assert result.output == out and result.verified
    assert result.datasets == ["/" + DATA] and result.groups == []
    assert result.stats.logical_bytes == values[0].nbytes
    assert sha256(src) == before
    assert leftovers(out.parent) == [] and leftovers(root) == []
    assert audit_links(out) == []

    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.HardLink)
        d = f[DATA]
        assert not d.is_virtual
        np.testing.assert_array_equal(d[...], values[0])
        # the target's attributes and storage: what readers of the input saw through the link
        assert d.attrs["conversion"] == 1e-6 and d.attrs["unit"] == "volts"
        assert d.chunks == (7_500, CH) and d._filters == {"32015": (2,)}
        # everything else byte-for-byte: the electrode table and its references still resolve
        es = f["acquisition/ElectricalSeries"]
        assert es["electrodes"].attrs["table"] is not None
        assert f[es["electrodes"].attrs["table"]].name == "/general/extracellular_ephys/electrodes"

    shutil.rmtree(root)  # the output stands alone
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values[0])


def test_consolidate_virtual_file(files, tmp_path):
    root, values = files
    src = root / "joined.nwb"
    before = sha256(src)
    out = tmp_path / "joined_full.nwb"
    result = consolidate(src, out, progress=False)
    assert result.verified and result.datasets == ["/" + DATA]
    assert sha256(src) == before and leftovers(tmp_path) == []
    assert audit_links(out) == []
    expected = np.concatenate(values[1:])
    with h5py.File(src, "r") as s, h5py.File(out, "r") as f:
        d = f[DATA]
        assert not d.is_virtual and d.chunks is not None and d.compression == "gzip"
        assert dict(d.attrs) == dict(s[DATA].attrs)
        np.testing.assert_array_equal(d[...], expected)
    shutil.rmtree(root)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), expected)


def test_consolidate_link_and_virtual_in_one_file_with_codec_and_chunks(files, tmp_path):
    root, values = files
    src = root / "both.nwb"
    before = sha256(src)
    with h5py.File(src, "r") as f:
        assert f[LINKED].attrs["conversion"] == 1e-6  # the link hides the declared 0.5
    out = tmp_path / "both_full.nwb"
    result = consolidate(src, out, codec=("zstd", {"level": 1}), chunks=(4_000, 8), progress=False)
    assert sorted(result.datasets) == sorted(["/" + DATA, "/" + LINKED]) and result.verified
    assert sha256(src) == before and leftovers(tmp_path) == []
    assert audit_links(out) == []
    with h5py.File(out, "r") as f:
        for name, expected, conv in ((DATA, np.concatenate(values[1:]), 0.195e-6), (LINKED, values[0], 1e-6)):
            d = f[name]
            assert not d.is_virtual and d.chunks == (4_000, 8) and d._filters == {"32015": (1,)}
            assert d.attrs["conversion"] == pytest.approx(conv)
            np.testing.assert_array_equal(d[...], expected)
    shutil.rmtree(root)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "Linked", tmp_path), values[0])


def test_consolidate_external_group_and_small_objects(tmp_path):
    rng = np.random.default_rng(5)
    big = rng.integers(-1000, 1000, (2_000, 6)).astype("i4")
    with h5py.File(tmp_path / "target.h5", "w") as t:
        g = t.create_group("grp")
        g.attrs["description"] = "linked group"
        g.create_dataset("big", data=big, chunks=(500, 6), compression="gzip")
        g.create_dataset("names", data=np.array([b"a", b"bc"]))
        g.create_group("sub").create_dataset("scalar", data=3.5)
        t["strings"] = np.array(["x", "yz"], dtype=h5py.string_dtype())
        t["floats"] = np.linspace(0, 1, 50)
        t["floats"].attrs["unit"] = "s"
        t["one"] = np.float32(2.0)
    src = tmp_path / "main.h5"
    with h5py.File(src, "w") as f:
        f["own"] = np.arange(5)
        f["ext_group"] = h5py.ExternalLink("target.h5", "/grp")
        f["ext_strings"] = h5py.ExternalLink("target.h5", "/strings")
        f["ext_floats"] = h5py.ExternalLink("target.h5", "/floats")
        f["ext_scalar"] = h5py.ExternalLink("target.h5", "/one")
    before = sha256(src)
    out = tmp_path / "full.h5"
    result = consolidate(src, out, progress=False)
    assert result.groups == ["/ext_group"]
    assert sorted(result.datasets) == ["/ext_floats", "/ext_scalar", "/ext_strings"]
    assert sha256(src) == before and audit_links(out) == []
    (tmp_path / "target.h5").unlink()  # the output stands alone
    with h5py.File(out, "r") as f:
        for name in ("ext_group", "ext_strings", "ext_floats", "ext_scalar"):
            assert isinstance(f.get(name, getlink=True), h5py.HardLink), name
        g = f["ext_group"]
        assert g.attrs["description"] == "linked group"
        np.testing.assert_array_equal(g["big"][...], big)
        assert g["big"].chunks == (500, 6) and g["big"].compression == "gzip"
        assert list(g["names"][...]) == [b"a", b"bc"]
        assert g["sub/scalar"][()] == 3.5
        assert [s.decode() for s in f["ext_strings"][...]] == ["x", "yz"]
        np.testing.assert_array_equal(f["ext_floats"][...], np.linspace(0, 1, 50))
        assert f["ext_floats"].attrs["unit"] == "s"
        assert f["ext_scalar"][()] == np.float32(2.0) and f["ext_scalar"].dtype == np.float32
        np.testing.assert_array_equal(f["own"][...], np.arange(5))


def test_consolidate_file_without_links_is_a_copy(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(10)
    result = consolidate(tmp_path / "plain.h5", tmp_path / "copy.h5", progress=False)
    assert result.datasets == [] and result.groups == []
    assert sha256(tmp_path / "plain.h5") == sha256(tmp_path / "copy.h5")


def test_overwrite(files, tmp_path):
    root, values = files
    out = tmp_path / "out.nwb"
    out.write_bytes(b"old")
    consolidate(root / "linked.nwb", out, overwrite=True, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f[DATA][...], values[0])


# --------------------------------------------------------------------------- #
# Refusals                                                                     #
# --------------------------------------------------------------------------- #
def test_refuses_to_write_over_its_input(files):
    root, _ = files
    src = root / "linked.nwb"
    before = sha256(src)
    for target in (src, root / "raw" / ".." / "linked.nwb"):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="is the input file"):
                consolidate(src, target, overwrite=overwrite, progress=False)
    os.link(src, root / "hardlink.nwb")
    with pytest.raises(ValueError, match="is the input file"):
        consolidate(src, root / "hardlink.nwb", overwrite=True, progress=False)
    os.symlink(src, root / "symlink.nwb")
    with pytest.raises(ValueError, match="is the input file"):
        consolidate(src, root / "symlink.nwb", overwrite=True, progress=False)
    assert sha256(src) == before and leftovers(root) == []


def test_refuses_existing_output(files, tmp_path):
    root, _ = files
    out = tmp_path / "exists.nwb"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="exists.nwb.*overwrite=True"):
        consolidate(root / "linked.nwb", out, progress=False)
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == []


def test_broken_link_is_refused_and_nothing_is_written(files, tmp_path):
    root, _ = files
    (root / "raw" / "seg0.nwb").unlink()
    out = tmp_path / "out.nwb"
    before = sha256(root / "linked.nwb")
    with pytest.raises(FileNotFoundError, match="broken external data") as err:
        consolidate(root / "linked.nwb", out, progress=False)
    msg = str(err.value)
    assert f"/{DATA} -> raw/seg0.nwb:/{DATA}" in msg and "not found" in msg
    assert not out.exists() and leftovers(tmp_path) == [] and leftovers(root) == []
    assert sha256(root / "linked.nwb") == before
    # a missing virtual source too (HDF5 itself would silently read fill values)
    (root / "raw" / "seg2.nwb").unlink()
    with pytest.raises(FileNotFoundError, match="seg2.nwb"):
        consolidate(root / "joined.nwb", out, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nwb"):
        consolidate(tmp_path / "nope.nwb", tmp_path / "out.nwb", progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# Interrupted and corrupted consolidations                                     #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_mid_write_leaves_input_and_no_output(files, tmp_path, monkeypatch, exc):
    root, _ = files
    src = root / "both.nwb"
    before = sha256(src)
    real = nwb_dask.hdf5.write.write_arrays
    calls = []

    def write_some_then_fail(jobs, **kwargs):
        calls.append(len(jobs))
        real(jobs[:1], **kwargs)  # one dataset fully written into the temporary file
        raise exc

    monkeypatch.setattr(nwb_dask.hdf5.write, "write_arrays", write_some_then_fail)
    out = tmp_path / "out.nwb"
    with pytest.raises(type(exc)):
        # a codec re-encodes the virtual dataset too (by default its chunks are copied raw, without write_arrays)
        consolidate(src, out, progress=False, codec="gzip")
    assert calls == [2], "the patched writer was not used: the test did not interrupt anything"
    assert sha256(src) == before
    assert not out.exists()
    assert leftovers(tmp_path) == [] and leftovers(root) == []


_KILLED = textwrap.dedent(
    """
    import sys
    import nwb_dask
    nwb_dask.consolidate(sys.argv[1], sys.argv[2], codec=("gzip", {"level": 9}), scheduler="threads", progress=False)
    """
)


def test_sigkill_mid_write_leaves_input_and_no_output(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    seg = []
    for i in range(3):  # 3 x 10 s x 64 channels = 115 MB of int16, stored uncompressed (fast to make)
        seg.append(d / f"seg{i}.nwb")
        write_nwb(ephys_nwbfile(DaskDataIO(synthetic_ephys(10.0, 64, seed=i), codec="none"),
                                starting_time=10.0 * i), seg[-1], progress=False)
    j = join_timeseries(seg)
    src = d / "joined.nwb"
    write_nwb(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"]), src, progress=False)
    before = sha256(src)
    src_size = src.stat().st_size
    out = tmp_path / "out.nwb"

    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(src), str(out)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        partial = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = [p for p in tmp_path.iterdir() if ".partial" in p.name]
            if found and found[0].stat().st_size > src_size + 2**20:  # data blocks are landing
                partial = found[0]
                break
            time.sleep(0.01)
        assert partial is not None, f"consolidate never started writing (rc={proc.poll()}): {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sha256(src) == before
    assert not out.exists()
    # after SIGKILL the temporary file may stay behind, under its hidden .partial name only
    assert all(p.name.startswith(".out.") and ".partial" in p.name for p in tmp_path.iterdir() if p.is_file())
    # and the input still reads completely
    with h5py.File(src, "r") as f:
        np.testing.assert_array_equal(f[DATA][-5:], synthetic_ephys(10.0, 64, seed=2)[-5:].compute())


def test_verification_catches_a_corrupted_copy(files, tmp_path, monkeypatch):
    root, values = files
    src = root / "both.nwb"
    before = sha256(src)
    real = nwb_dask.hdf5.write.plan_write

    def corrupting_plan_write(array, dset, *args, **kwargs):
        if dset.name == "/" + LINKED:  # one sample per block off by one
            array = array.map_blocks(lambda b: np.where(np.arange(len(b))[:, None] == 123, b + 1, b).astype(b.dtype),
                                     dtype=array.dtype)
        return real(array, dset, *args, **kwargs)

    monkeypatch.setattr(nwb_dask.hdf5.write, "plan_write", corrupting_plan_write)
    out = tmp_path / "out.nwb"
    with pytest.raises(ValueError, match=r"verification failed: /acquisition/Linked/data") as err:
        consolidate(src, out, progress=False)
    assert str(src) in str(err.value)
    assert not out.exists() and leftovers(tmp_path) == []
    assert sha256(src) == before

    # without verification the corrupted copy is written: verification is what caught it
    result = consolidate(src, out, verify=False, progress=False)
    assert not result.verified
    with h5py.File(out, "r") as f:
        diff = f[LINKED][...].astype(int) - values[0]
        assert np.count_nonzero(diff) > 0 and set(np.unique(diff)) == {0, 1}
        np.testing.assert_array_equal(f[DATA][...], np.concatenate(values[1:]))


# --------------------------------------------------------------------------- #
# Command line                                                                 #
# --------------------------------------------------------------------------- #
def test_cli_consolidate(files, tmp_path, capsys):
    root, values = files
    src = root / "joined.nwb"
    before = sha256(src)
    out = tmp_path / "cli.nwb"
    assert nwb_dask.cli.main(["consolidate", str(src), str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verified" in printed and "/" + DATA in printed
    assert sha256(src) == before and audit_links(out) == []
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f[DATA][...], np.concatenate(values[1:]))

    # existing output: exit 2, message on stderr, output untouched
    stamp = sha256(out)
    assert nwb_dask.cli.main(["consolidate", str(src), str(out), "-q"]) == 2
    captured = capsys.readouterr()
    assert "nwb-dask consolidate: error:" in captured.err and "exists" in captured.err and captured.out == ""
    assert sha256(out) == stamp
    # --overwrite, --codec, --level, --no-verify
    assert nwb_dask.cli.main(["consolidate", str(src), str(out), "-q", "--overwrite", "--codec", "zstd",
                              "--level", "4", "--no-verify"]) == 0
    assert "verified" not in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f[DATA]._filters == {"32015": (4,)}
        np.testing.assert_array_equal(f[DATA][...], np.concatenate(values[1:]))
    # same file: exit 2
    assert nwb_dask.cli.main(["consolidate", str(src), str(src), "-q", "--overwrite"]) == 2
    assert "is the input file" in capsys.readouterr().err
    # broken link: exit 2, nothing written
    (root / "raw" / "seg0.nwb").unlink()
    assert nwb_dask.cli.main(["consolidate", str(root / "linked.nwb"), str(tmp_path / "b.nwb"), "-q"]) == 2
    assert "seg0.nwb" in capsys.readouterr().err
    assert not (tmp_path / "b.nwb").exists() and leftovers(tmp_path) == []

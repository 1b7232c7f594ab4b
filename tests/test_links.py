"""External data (issue 5): link or copy a dataset of another file, checked; audit links.

Every output is reopened with plain h5py and read by plain pynwb in a fresh
interpreter (with validation), and compared element by element with the
source.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import datetime, timezone

import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from conftest import read_with_plain_pynwb
from hdmf.data_utils import DataChunkIterator
from pynwb import NWBFile
from pynwb.ecephys import ElectricalSeries

import nwb_dask
import nwb_dask.cli
from nwb_dask import (
    DaskDataIO,
    LinkMismatchError,
    NWBDaskIO,
    audit_links,
    external_data,
    write_nwb,
)
from nwb_dask.nwb.links import LinkedData
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
)

DATA = "acquisition/ElectricalSeries/data"
RATE = 30_000.0
N = 30_000  # 1 s
CH = 16
SRC_CHUNKS = (6_000, 16)
SRC_CODEC = ("gzip", {"level": 6, "shuffle": False})  # distinguishable from the gzip-4+shuffle fallback


# --------------------------------------------------------------------------- #
# Helpers                                                                      #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A 1 s x 16 channel NWB file (gzip 6, no shuffle, chunks 6000x16) and its data."""
    path = tmp_path_factory.mktemp("source") / "src.nwb"
    data = synthetic_ephys(1.0, CH, seed=1)
    write_nwb(ephys_nwbfile(DaskDataIO(data, codec=SRC_CODEC, chunks=SRC_CHUNKS), identifier="src"), path,
              progress=False)
    with h5py.File(path, "r") as f:
        values = f[DATA][...]
    np.testing.assert_array_equal(values, data.compute())
    return path, values


@pytest.fixture
def src(source_file, tmp_path):
    """A private copy of the source file at tmp_path/raw/src.nwb, and its data."""
    path, values = source_file
    (tmp_path / "raw").mkdir()
    dest = tmp_path / "raw" / "src.nwb"
    shutil.copyfile(path, dest)
    return dest, values


def partials(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if ".partial" in p.name]


def electrodes_nwbfile(data, n_electrodes: int, **kwargs) -> NWBFile:
    """An NWBFile whose ElectricalSeries references ``n_electrodes`` electrodes (whatever the data)."""
    nwbfile = NWBFile(session_description="t", identifier="t", session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group("shank0", description="s", location="CA1", device=device)
    for _ in range(n_electrodes):
        nwbfile.add_electrode(group=group, location="CA1")
    region = nwbfile.create_electrode_table_region(list(range(n_electrodes)), "all")
    nwbfile.add_acquisition(
        ElectricalSeries(name="ElectricalSeries", data=data, electrodes=region, rate=RATE, conversion=0.195e-6, **kwargs)
    )
    return nwbfile


# --------------------------------------------------------------------------- #
# Link                                                                         #
# --------------------------------------------------------------------------- #
def test_link_is_a_relative_external_link_read_by_plain_pynwb(src, tmp_path):
    path, values = src
    data = external_data(path, DATA)
    assert isinstance(data, LinkedData)
    (tmp_path / "derived").mkdir()
    out = tmp_path / "derived" / "linked.nwb"
    write_nwb(ephys_nwbfile(data, identifier="linked"), out, progress=False)
    assert partials(tmp_path / "derived") == []

    with h5py.File(out, "r") as f:
        link = f.get(DATA, getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert not os.path.isabs(link.filename)
        assert link.filename == os.path.join("..", "raw", "src.nwb")
        assert link.path == "/" + DATA
        np.testing.assert_array_equal(f[DATA][...], values)  # through the link, in plain h5py

    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values)

    # nwb_dask's readers follow the link
    x = nwb_dask.read_dataset(out, DATA)
    assert x.shape == values.shape and x.dtype == values.dtype
    np.testing.assert_array_equal(x.compute(), values)
    nwbfile = nwb_dask.read_nwb(out, min_bytes=0)
    try:
        d = nwbfile.acquisition["ElectricalSeries"].data
        import dask.array as da

        assert isinstance(d, da.Array)
        np.testing.assert_array_equal(d.compute(), values)
        assert nwbfile.acquisition["ElectricalSeries"].conversion == pytest.approx(0.195e-6)
    finally:
        nwbfile.read_io.close()

    # audit: one relative, resolvable link
    (rec,) = audit_links(out)
    assert rec.kind == "external" and rec.path == "/" + DATA
    assert rec.file == os.path.join("..", "raw", "src.nwb")
    assert os.path.samefile(rec.resolved, path) and not rec.broken and not rec.absolute and rec.reason == ""


def test_linked_set_moved_together_still_reads(src, tmp_path):
    path, values = src
    (tmp_path / "derived").mkdir()
    out = tmp_path / "derived" / "linked.nwb"
    write_nwb(ephys_nwbfile(external_data(path, DATA), identifier="linked"), out, progress=False)

    moved = tmp_path / "elsewhere" / "set"
    moved.mkdir(parents=True)
    shutil.move(str(tmp_path / "raw"), str(moved / "raw"))
    shutil.move(str(tmp_path / "derived"), str(moved / "derived"))
    assert not path.exists()
    new_out = moved / "derived" / "linked.nwb"

    np.testing.assert_array_equal(read_with_plain_pynwb(new_out, "ElectricalSeries", tmp_path), values)
    np.testing.assert_array_equal(nwb_dask.read_dataset(new_out, DATA).compute(), values)
    (rec,) = audit_links(new_out)
    assert os.path.samefile(rec.resolved, moved / "raw" / "src.nwb") and not rec.broken


def test_link_in_the_same_directory(src, tmp_path):
    path, values = src
    out = path.parent / "linked.nwb"
    write_nwb(ephys_nwbfile(external_data(path, DATA), identifier="linked"), out, progress=False)
    with h5py.File(out, "r") as f:
        assert f.get(DATA, getlink=True).filename == "src.nwb"
        np.testing.assert_array_equal(f[DATA][...], values)


# --------------------------------------------------------------------------- #
# Copy                                                                         #
# --------------------------------------------------------------------------- #
def test_copy_with_codec_and_chunks(src, tmp_path):
    path, values = src
    data = external_data(path, DATA, mode="copy", codec=("zstd", {"level": 3}), chunks=(1000, 16))
    assert isinstance(data, DaskDataIO) and not isinstance(data, LinkedData)
    out = tmp_path / "copy.nwb"
    write_nwb(ephys_nwbfile(data, identifier="copy", conversion=1.0), out, progress=False)

    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.HardLink)
        d = f[DATA]
        assert not d.is_virtual and d.external is None
        assert d.chunks == (1000, 16)
        assert d._filters == {"32015": (3,)}  # zstd level 3
        assert d.attrs["conversion"] == 1.0  # a copy carries the container's attributes
        np.testing.assert_array_equal(d[...], values)
    assert audit_links(out) == []

    # the source can go: the copy stands alone
    path.unlink()
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values)


def test_copy_defaults_to_the_source_codec_and_chunks(src, tmp_path):
    path, values = src
    out = tmp_path / "copy.nwb"
    write_nwb(ephys_nwbfile(external_data(path, DATA, mode="copy"), identifier="copy"), out, progress=False)
    with h5py.File(path, "r") as s, h5py.File(out, "r") as f:
        d = f[DATA]
        assert isinstance(f.get(DATA, getlink=True), h5py.HardLink)
        assert s[DATA].compression == "gzip" and s[DATA].compression_opts == 6 and not s[DATA].shuffle
        assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 6, False)
        assert d.chunks == SRC_CHUNKS
        np.testing.assert_array_equal(d[...], values)


def test_copy_of_a_contiguous_dataset(tmp_path):
    """An unchunked, uncompressed source: the copy gets chunks guessed and the gzip default."""
    values = (np.arange(3_000 * 4) % 1_000).astype("int16").reshape(3_000, 4)
    with h5py.File(tmp_path / "contig.h5", "w") as f:
        d = f.create_dataset("d", data=values)
        d.attrs.update(unit="volts", conversion=0.195e-6, offset=0.0, resolution=-1.0)
    out = tmp_path / "copy.nwb"
    write_nwb(ephys_nwbfile(external_data(tmp_path / "contig.h5", "d", mode="copy")), out, progress=False)
    with h5py.File(out, "r") as f:
        d = f[DATA]
        assert d.chunks is not None and (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True)
        np.testing.assert_array_equal(d[...], values)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values)


# --------------------------------------------------------------------------- #
# Mismatches                                                                   #
# --------------------------------------------------------------------------- #
def test_conversion_mismatch_raises_and_leaves_nothing(src, tmp_path):
    path, _ = src
    out = tmp_path / "bad.nwb"
    with pytest.raises(LinkMismatchError) as err:
        write_nwb(ephys_nwbfile(external_data(path, DATA), identifier="bad", conversion=1.0), out, progress=False)
    msg = str(err.value)
    assert "conversion" in msg and "1.0" in msg and "1.95e-07" in msg
    assert str(path) in msg and "/" + DATA in msg
    assert "on_mismatch" in msg
    assert not out.exists()
    assert partials(tmp_path) == []


def test_mismatch_override_warn_writes_the_link(src, tmp_path):
    path, values = src
    out = tmp_path / "warned.nwb"
    with pytest.warns(UserWarning, match=r"conversion=1\.0.*conversion=1\.95e-07"):
        write_nwb(
            ephys_nwbfile(external_data(path, DATA, on_mismatch="warn"), identifier="w", conversion=1.0),
            out,
            progress=False,
        )
    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.ExternalLink)
        assert f[DATA].attrs["conversion"] == pytest.approx(0.195e-6)  # the link shows the target's
        np.testing.assert_array_equal(f[DATA][...], values)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values)


def test_mismatch_override_ignore_is_silent(src, tmp_path):
    path, values = src
    out = tmp_path / "ignored.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", ".*compression may not be available")
        write_nwb(
            ephys_nwbfile(external_data(path, DATA, on_mismatch="ignore"), identifier="i", conversion=1.0),
            out,
            progress=False,
        )
    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.ExternalLink)
        np.testing.assert_array_equal(f[DATA][...], values)


def test_matching_link_is_silent(src, tmp_path):
    path, _ = src
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", ".*compression may not be available")
        write_nwb(ephys_nwbfile(external_data(path, DATA, on_mismatch="warn")), tmp_path / "ok.nwb", progress=False)


def test_target_without_nwb_attributes(tmp_path):
    values = np.arange(300 * CH, dtype=np.int16).reshape(300, CH)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("data", data=values)
    out = tmp_path / "bad.nwb"
    with pytest.raises(LinkMismatchError, match="target has no 'unit' attribute") as err:
        write_nwb(ephys_nwbfile(external_data(plain, "data"), identifier="bad"), out, progress=False)
    assert str(plain) in str(err.value)
    assert not out.exists() and partials(tmp_path) == []


def test_timestamps_length_mismatch(src, tmp_path):
    """Timestamps shared with another series (pynwb cannot check their length): the link check does."""
    path, _ = src
    out = tmp_path / "bad.nwb"
    ts = np.arange(N - 5) / RATE
    nwbfile = ephys_nwbfile(np.zeros((N - 5, CH), "int16"), rate=None, timestamps=ts, name="Other", identifier="bad")
    other = nwbfile.acquisition["Other"]
    nwbfile.add_acquisition(
        ElectricalSeries(name="ElectricalSeries", data=external_data(path, DATA), electrodes=other.electrodes,
                         timestamps=other, conversion=0.195e-6)
    )
    with pytest.raises(LinkMismatchError, match=rf"{N - 5} timestamps, the target has {N} samples") as err:
        write_nwb(nwbfile, out, progress=False)
    assert str(path) in str(err.value)
    assert not out.exists() and partials(tmp_path) == []


def test_timestamps_of_unknown_length_are_not_checked(src, tmp_path):
    """A generator of timestamps has no length before it is written: the link is written, no crash."""
    path, values = src
    out = tmp_path / "gen.nwb"
    ts = DataChunkIterator(data=(i / RATE for i in range(N)), buffer_size=5000)
    write_nwb(ephys_nwbfile(external_data(path, DATA), rate=None, timestamps=ts, identifier="gen"), out,
              progress=False)
    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.ExternalLink)
        np.testing.assert_array_equal(f["acquisition/ElectricalSeries/timestamps"][...], np.arange(N) / RATE)
        np.testing.assert_array_equal(f[DATA][...], values)


def test_matching_timestamps_link(src, tmp_path):
    path, values = src
    out = tmp_path / "ts.nwb"
    ts = np.arange(N) / RATE
    write_nwb(ephys_nwbfile(external_data(path, DATA), rate=None, timestamps=ts, identifier="ts"), out,
              progress=False)
    with h5py.File(out, "r") as f:
        assert isinstance(f.get(DATA, getlink=True), h5py.ExternalLink)
        np.testing.assert_array_equal(f["acquisition/ElectricalSeries/timestamps"][...], ts)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), values)


def test_electrodes_count_mismatch(src, tmp_path):
    path, _ = src
    out = tmp_path / "bad.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb may warn about the electrode count itself
        nwbfile = electrodes_nwbfile(external_data(path, DATA), 8)
    with pytest.raises(LinkMismatchError, match=rf"8 electrodes, the target has {CH} channels"):
        write_nwb(nwbfile, out, progress=False)
    assert not out.exists() and partials(tmp_path) == []


def test_expected_shape_and_dtype_checked_at_call_time(src):
    path, _ = src
    for mode in ("link", "copy"):
        with pytest.raises(LinkMismatchError, match=r"expected shape \(100, 16\), the target has shape \(30000, 16\)"):
            external_data(path, DATA, mode=mode, shape=(100, 16))
        with pytest.raises(LinkMismatchError, match="expected dtype float32, the target has dtype int16"):
            external_data(path, DATA, mode=mode, dtype="float32")
        with pytest.raises(LinkMismatchError, match="expected shape"):
            external_data(path, DATA, mode=mode, shape=(N,))  # wrong rank
    # None matches any extent; the right dtype passes
    assert isinstance(external_data(path, DATA, shape=(None, CH), dtype="int16"), LinkedData)
    assert isinstance(external_data(path, DATA, mode="copy", shape=(N, None), dtype=np.int16), DaskDataIO)


def test_bare_h5py_dataset_link_is_checked(src, tmp_path):
    """hdmf writes an h5py.Dataset of another file as a link; NWBDaskIO checks it like external_data."""
    path, values = src
    out = tmp_path / "bare.nwb"
    with h5py.File(path, "r") as f:
        with pytest.raises(LinkMismatchError, match=r"conversion=1\.0.*conversion=1\.95e-07"):
            write_nwb(ephys_nwbfile(f[DATA], identifier="bare", conversion=1.0), out, progress=False)
        assert not out.exists() and partials(tmp_path) == []
        # with matching attributes the implicit link is written
        write_nwb(ephys_nwbfile(f[DATA], identifier="bare"), out, progress=False)
    with h5py.File(out, "r") as g:
        assert isinstance(g.get(DATA, getlink=True), h5py.ExternalLink)
        np.testing.assert_array_equal(g[DATA][...], values)


def test_nwbdaskio_checks_links_with_explicit_io(src, tmp_path):
    path, _ = src
    out = tmp_path / "bad.nwb"
    with pytest.raises(LinkMismatchError, match=r"offset=0\.5, the target has offset=0\.0"), \
            NWBDaskIO(out, "w", progress=False) as io:
        io.write(ephys_nwbfile(external_data(path, DATA), identifier="bad", offset=0.5))
    assert not out.exists() and partials(tmp_path) == []


# --------------------------------------------------------------------------- #
# Errors                                                                       #
# --------------------------------------------------------------------------- #
def test_external_data_errors(src, tmp_path):
    path, _ = src
    missing = tmp_path / "nope.nwb"
    with pytest.raises(FileNotFoundError, match="nope.nwb"):
        external_data(missing, DATA)
    with pytest.raises(KeyError, match="acquisition/Nope/data"):
        external_data(path, "acquisition/Nope/data")
    with pytest.raises(TypeError, match="Group, not a dataset"):
        external_data(path, "acquisition/ElectricalSeries")
    with pytest.raises(ValueError, match="mode must be 'link' or 'copy'"):
        external_data(path, DATA, mode="symlink")
    with pytest.raises(ValueError, match="on_mismatch must be one of"):
        external_data(path, DATA, on_mismatch="maybe")
    with pytest.raises(ValueError, match="codec and chunks apply to copies"):
        external_data(path, DATA, codec="zstd")
    with pytest.raises(ValueError, match="codec and chunks apply to copies"):
        external_data(path, DATA, chunks=(100, 16))


# --------------------------------------------------------------------------- #
# Audit                                                                        #
# --------------------------------------------------------------------------- #
def _target(path, n=10):
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(n, dtype="i4")
        f.create_group("grp")


def test_audit_links_ok_broken_missing_object_absolute(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    _target(tmp_path / "t" / "a.h5")
    _target(tmp_path / "t" / "gone.h5")
    _target(tmp_path / "t" / "abs.h5")
    f_path = tmp_path / "links.h5"
    with h5py.File(f_path, "w") as f:
        f["ok"] = h5py.ExternalLink("t/a.h5", "/data")
        f["okgroup"] = h5py.ExternalLink("t/a.h5", "/grp")
        f["nested/broken"] = h5py.ExternalLink("t/gone.h5", "/data")
        f["noobj"] = h5py.ExternalLink("t/a.h5", "/missing")
        f["abs"] = h5py.ExternalLink(str(tmp_path / "t" / "abs.h5"), "/data")
        f["noth5"] = h5py.ExternalLink("t/text.txt", "/data")
        f["local"] = np.zeros(3)
    (tmp_path / "t" / "gone.h5").unlink()
    (tmp_path / "t" / "text.txt").write_text("not HDF5")

    # CLI while nothing is broken
    ok_path = tmp_path / "ok.h5"
    with h5py.File(ok_path, "w") as f:
        f["ok"] = h5py.ExternalLink("t/a.h5", "/data")
    assert nwb_dask.cli.main(["links", str(ok_path)]) == 0
    out = capsys.readouterr().out
    assert "/ok" in out and "ok ->" in out and "BROKEN" not in out and "0 broken" in out

    records = {r.path: r for r in audit_links(f_path)}
    assert set(records) == {"/ok", "/okgroup", "/nested/broken", "/noobj", "/abs", "/noth5"}
    assert all(r.kind == "external" for r in records.values())
    ok = records["/ok"]
    assert (ok.file, ok.object, ok.resolved, ok.broken, ok.absolute) == (
        "t/a.h5", "/data", str(tmp_path / "t" / "a.h5"), False, False)
    assert not records["/okgroup"].broken
    br = records["/nested/broken"]
    assert br.broken and br.resolved is None and not br.absolute
    assert "t/gone.h5" in br.reason and "not found" in br.reason
    no = records["/noobj"]
    assert no.broken and no.resolved == str(tmp_path / "t" / "a.h5") and "/missing" in no.reason
    ab = records["/abs"]
    assert ab.absolute and not ab.broken and ab.file == str(tmp_path / "t" / "abs.h5")
    nh = records["/noth5"]
    assert nh.broken and nh.resolved == str(tmp_path / "t" / "text.txt") and "cannot open" in nh.reason

    # CLI: exit 1, names the broken links
    assert nwb_dask.cli.main(["links", str(f_path)]) == 1
    out = capsys.readouterr().out
    broken_lines = [line for line in out.splitlines() if "BROKEN" in line]
    assert len(broken_lines) == 3
    assert any("/nested/broken" in line and "t/gone.h5" in line for line in broken_lines)
    assert any("/noobj" in line for line in broken_lines)
    assert any("/noth5" in line for line in broken_lines)
    assert any("/abs" in line and "absolute" in line for line in out.splitlines())
    assert "6 link(s), 3 broken, 1 with absolute paths" in out

    # --json
    assert nwb_dask.cli.main(["links", str(f_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["broken"] == 3 and report["absolute"] == 1 and report["file"] == str(f_path)
    by_path = {r["path"]: r for r in report["links"]}
    assert set(by_path) == set(records)
    for r in by_path.values():
        assert set(r) == {"kind", "path", "file", "object", "resolved", "absolute", "broken", "reason"}
    assert by_path["/nested/broken"]["broken"] is True and by_path["/nested/broken"]["resolved"] is None
    assert by_path["/abs"]["absolute"] is True


def test_audit_absolute_link_breaks_when_moved_and_relative_does_not(tmp_path):
    """An absolute link cannot move with its target: HDF5 then looks for the bare name beside the file."""
    d = tmp_path / "set"
    d.mkdir()
    _target(d / "a.h5")
    with h5py.File(d / "f.h5", "w") as f:
        f["abs"] = h5py.ExternalLink(str(d / "sub" / "a.h5"), "/data")  # absolute, to a subfolder
        f["rel"] = h5py.ExternalLink("a.h5", "/data")
    (d / "sub").mkdir()
    shutil.copyfile(d / "a.h5", d / "sub" / "a.h5")
    recs = {r.path: r for r in audit_links(d / "f.h5")}
    assert recs["/abs"].resolved == str(d / "sub" / "a.h5") and recs["/abs"].absolute
    shutil.move(str(d), str(tmp_path / "moved"))
    recs = {r.path: r for r in audit_links(tmp_path / "moved" / "f.h5")}
    # HDF5 falls back to the bare name beside the file: a.h5 (not sub/a.h5)
    assert recs["/abs"].resolved == str(tmp_path / "moved" / "a.h5") and recs["/abs"].absolute
    assert recs["/rel"].resolved == str(tmp_path / "moved" / "a.h5") and not recs["/rel"].absolute
    with h5py.File(tmp_path / "moved" / "f.h5", "r") as f:  # what HDF5 itself does
        assert f["abs"].file.filename.endswith(os.path.join("moved", "a.h5"))


def test_audit_virtual_dataset_sources(tmp_path, capsys):
    for i in range(3):
        with h5py.File(tmp_path / f"s{i}.h5", "w") as f:
            f["x"] = np.full(5, i, "i4")
    layout = h5py.VirtualLayout(shape=(15,), dtype="i4")
    for i in range(3):
        layout[i * 5 : (i + 1) * 5] = h5py.VirtualSource(f"s{i}.h5", "x", shape=(5,))
    with h5py.File(tmp_path / "vds.h5", "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-1)
    recs = audit_links(tmp_path / "vds.h5")
    assert [(r.kind, r.path, r.file, r.object, r.broken, r.absolute) for r in recs] == [
        ("virtual", "/v", f"s{i}.h5", "x", False, False) for i in range(3)
    ]
    assert [r.resolved for r in recs] == [str(tmp_path / f"s{i}.h5") for i in range(3)]
    assert nwb_dask.cli.main(["links", str(tmp_path / "vds.h5")]) == 0
    capsys.readouterr()

    (tmp_path / "s1.h5").unlink()
    recs = audit_links(tmp_path / "vds.h5")
    assert [r.broken for r in recs] == [False, True, False]
    assert "s1.h5" in recs[1].reason and recs[1].resolved is None
    with h5py.File(tmp_path / "vds.h5", "r") as f:  # HDF5 silently fills the hole: hence the audit
        np.testing.assert_array_equal(f["v"][...], [0] * 5 + [-1] * 5 + [2] * 5)
    assert nwb_dask.cli.main(["links", str(tmp_path / "vds.h5")]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "BROKEN" in line]
    assert line.startswith("virtual") and "s1.h5" in line


def test_audit_file_without_links(tmp_path, capsys):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    assert audit_links(tmp_path / "plain.h5") == []
    assert nwb_dask.cli.main(["links", str(tmp_path / "plain.h5")]) == 0
    assert "no external links" in capsys.readouterr().out


def test_links_cli_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.nwb"
    with pytest.raises(FileNotFoundError, match="missing.nwb"):
        audit_links(missing)
    assert nwb_dask.cli.main(["links", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "nwb-dask links: error:" in captured.err and "missing.nwb" in captured.err

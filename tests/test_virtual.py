"""Multi-file recordings (issue 5): segments joined as HDF5 virtual datasets or copies.

Outputs are reopened with plain h5py and read by plain pynwb in a fresh
interpreter (with validation), and compared element by element with the
concatenated segments.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from conftest import read_with_plain_pynwb
from hypothesis import given, settings
from hypothesis import strategies as st

import nwb_dask
from nwb_dask import (
    DaskDataIO,
    SegmentError,
    audit_links,
    join_segments,
    join_timeseries,
    write_nwb,
)
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys
from nwb_dask.nwb.virtual import VirtualData

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
)

DATA = "acquisition/ElectricalSeries/data"
SERIES = "acquisition/ElectricalSeries"
RATE = 30_000.0
N = 30_000  # 1 s per segment
CH = 16
N_SEG = 4
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- #
# Helpers                                                                      #
# --------------------------------------------------------------------------- #
def write_segment(path, seed, *, seconds=1.0, channels=CH, session_start_time=T0, dtype=None, **series_kwargs):
    """One segment NWB file; returns its data (as written)."""
    data = synthetic_ephys(seconds, channels, seed=seed)
    if dtype is not None:
        data = data.astype(dtype)
    kwargs = {"rate": RATE} if "timestamps" in series_kwargs else {"starting_time": 0.0, "rate": RATE}
    kwargs.update(series_kwargs)
    write_nwb(
        ephys_nwbfile(DaskDataIO(data, chunks=(min(10_000, data.shape[0]), channels)), identifier=f"seg{seed}",
                      session_start_time=session_start_time, **kwargs),
        path,
        progress=False,
    )
    return data.compute()


@pytest.fixture(scope="module")
def segment_files(tmp_path_factory):
    """4 contiguous 1 s x 16 channel segments (starting_time 0, 1, 2, 3 s), different data."""
    d = tmp_path_factory.mktemp("segments")
    values = [write_segment(d / f"seg{i}.nwb", seed=10 + i, starting_time=i * 1.0) for i in range(N_SEG)]
    assert not any(np.array_equal(values[0], v) for v in values[1:])
    return d, values


@pytest.fixture
def segments(segment_files, tmp_path):
    """Private copies of the 4 segments in tmp_path/set/segments/, and their concatenated data."""
    src, values = segment_files
    d = tmp_path / "set" / "segments"
    d.mkdir(parents=True)
    paths = []
    for i in range(N_SEG):
        shutil.copyfile(src / f"seg{i}.nwb", d / f"seg{i}.nwb")
        paths.append(d / f"seg{i}.nwb")
    return paths, np.concatenate(values)


def partials(directory) -> list[str]:
    return [p.name for p in Path(directory).iterdir() if ".partial" in p.name]


# --------------------------------------------------------------------------- #
# Virtual concatenation of 4 segment files                                     #
# --------------------------------------------------------------------------- #
def test_join_timeseries_virtual_reads_everywhere(segments, tmp_path):
    paths, expected = segments
    j = join_timeseries(paths)
    assert set(j) == {"data", "starting_time", "rate"}
    assert isinstance(j["data"], VirtualData)
    assert j["starting_time"] == 0.0 and j["rate"] == RATE
    assert j["data"].array.shape == (N_SEG * N, CH)
    assert [s[0] for s in j["data"].sources] == [str(p) for p in paths]
    np.testing.assert_array_equal(j["data"].array.compute(), expected)  # the lazy join itself

    out = tmp_path / "set" / "joined.nwb"
    write_nwb(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"], identifier="joined"), out,
              progress=False)
    assert partials(out.parent) == []
    with h5py.File(out, "r") as f:
        d = f[DATA]
        assert d.is_virtual
        sources = d.virtual_sources()
        assert [s.file_name for s in sources] == [os.path.join("segments", f"seg{i}.nwb") for i in range(N_SEG)]
        assert all(s.dset_name == "/" + DATA for s in sources)
        assert d.attrs["conversion"] == pytest.approx(0.195e-6) and d.attrs["unit"] == "volts"
        assert f["acquisition/ElectricalSeries/starting_time"][()] == 0.0
        assert f["acquisition/ElectricalSeries/starting_time"].attrs["rate"] == RATE
        np.testing.assert_array_equal(d[...], expected)
        assert os.path.getsize(out) < expected.nbytes / 4  # no copy of the samples

    recs = audit_links(out)
    assert [(r.kind, r.file, r.broken, r.absolute) for r in recs] == [
        ("virtual", os.path.join("segments", f"seg{i}.nwb"), False, False) for i in range(N_SEG)
    ]

    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), expected)
    np.testing.assert_array_equal(nwb_dask.read_dataset(out, DATA).compute(), expected)

    # move the whole folder: still reads (sources are relative)
    shutil.move(str(tmp_path / "set"), str(tmp_path / "moved"))
    moved = tmp_path / "moved" / "joined.nwb"
    np.testing.assert_array_equal(read_with_plain_pynwb(moved, "ElectricalSeries", tmp_path), expected)
    np.testing.assert_array_equal(nwb_dask.read_dataset(moved, DATA).compute(), expected)
    nwbfile = nwb_dask.read_nwb(moved, min_bytes=0)
    try:
        x = nwbfile.acquisition["ElectricalSeries"].data
        assert isinstance(x, da.Array)
        np.testing.assert_array_equal(x.compute(), expected)
    finally:
        nwbfile.read_io.close()


def test_join_timeseries_copy(segments, tmp_path):
    paths, expected = segments
    j = join_timeseries(paths, mode="copy", codec=("zstd", {"level": 3}), chunks=(5_000, CH))
    assert isinstance(j["data"], DaskDataIO) and not isinstance(j["data"], VirtualData)
    out = tmp_path / "copy.nwb"
    write_nwb(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"], identifier="copy"), out,
              progress=False)
    with h5py.File(out, "r") as f:
        d = f[DATA]
        assert not d.is_virtual and d.chunks == (5_000, CH) and d._filters == {"32015": (3,)}
        np.testing.assert_array_equal(d[...], expected)
    assert audit_links(out) == []
    shutil.rmtree(tmp_path / "set")  # the copy stands alone
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), expected)


def test_plain_nwbhdf5io_writes_virtualdata_as_a_copy(segments, tmp_path):
    """VirtualData is a DaskDataIO: a writer that knows no virtual datasets writes the joined data."""
    from pynwb import NWBHDF5IO

    paths, expected = segments
    j = join_timeseries(paths[:2])
    out = tmp_path / "plain.nwb"
    with NWBHDF5IO(str(out), "w") as io:
        io.write(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"]))
    with h5py.File(out, "r") as f:
        assert not f[DATA].is_virtual
        np.testing.assert_array_equal(f[DATA][...], expected[: 2 * N])


# --------------------------------------------------------------------------- #
# Timing across segments                                                       #
# --------------------------------------------------------------------------- #
def test_segments_with_their_own_session_start_are_contiguous(tmp_path):
    a = write_segment(tmp_path / "a.nwb", 1, starting_time=0.0)
    b = write_segment(tmp_path / "b.nwb", 2, starting_time=0.0, session_start_time=T0 + timedelta(seconds=1))
    c = write_segment(tmp_path / "c.nwb", 3, starting_time=0.5, session_start_time=T0 + timedelta(seconds=1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        j = join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb", tmp_path / "c.nwb"])
    assert j["starting_time"] == 0.0 and j["rate"] == RATE and "timestamps" not in j
    # relative to a later session start, the first segment starts later
    j2 = join_timeseries([tmp_path / "b.nwb", tmp_path / "c.nwb"], session_start_time=T0)
    assert j2["starting_time"] == pytest.approx(1.0) and j2["rate"] == RATE
    out = tmp_path / "joined.nwb"
    write_nwb(ephys_nwbfile(j["data"], rate=j["rate"], starting_time=j["starting_time"]), out, progress=False)
    with h5py.File(out, "r") as f:
        assert f[DATA].is_virtual
        np.testing.assert_array_equal(f[DATA][...], np.concatenate([a, b, c]))


def test_gap_gives_timestamps_with_a_warning(tmp_path):
    starts = [0.0, 1.0, 2.5]  # 0.5 s gap before the third segment
    values = [write_segment(tmp_path / f"g{i}.nwb", 20 + i, starting_time=s) for i, s in enumerate(starts)]
    paths = [tmp_path / f"g{i}.nwb" for i in range(3)]
    with pytest.warns(UserWarning, match=r"g2\.nwb starts 0\.500000 s after the previous one ends"):
        j = join_timeseries(paths)
    assert "starting_time" not in j and "rate" not in j
    expected_t = np.concatenate([np.arange(N) / RATE + s for s in starts])
    ts = j["timestamps"]
    assert isinstance(ts, DaskDataIO)
    np.testing.assert_allclose(ts.array.compute(), expected_t, rtol=0, atol=1e-9)

    out = tmp_path / "gap.nwb"
    write_nwb(ephys_nwbfile(j["data"], rate=None, timestamps=j["timestamps"], identifier="gap"), out, progress=False)
    with h5py.File(out, "r") as f:
        assert f[DATA].is_virtual
        np.testing.assert_allclose(f["acquisition/ElectricalSeries/timestamps"][...], expected_t, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), np.concatenate(values))


def test_small_misalignment_within_tolerance_is_contiguous(tmp_path):
    write_segment(tmp_path / "a.nwb", 1, seconds=0.1, starting_time=0.0)
    write_segment(tmp_path / "b.nwb", 2, seconds=0.1, starting_time=0.1 + 0.2 / RATE)  # 0.2 samples late
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        j = join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb"])
    assert j["rate"] == RATE and j["starting_time"] == 0.0
    with pytest.warns(UserWarning, match="writing timestamps"):
        j = join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb"], tolerance=0.1)
    assert "timestamps" in j


def test_overlap_is_an_error(tmp_path):
    write_segment(tmp_path / "a.nwb", 1, starting_time=0.0)
    write_segment(tmp_path / "b.nwb", 2, starting_time=0.5)
    with pytest.raises(SegmentError, match=r"b\.nwb starts 0\.500000 s before the previous segment ends"):
        join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb"])
    # the same overlap through session start times
    write_segment(tmp_path / "c.nwb", 3, starting_time=0.0, session_start_time=T0 + timedelta(seconds=0.5))
    with pytest.raises(SegmentError, match="overlap"):
        join_timeseries([tmp_path / "a.nwb", tmp_path / "c.nwb"])


def test_timestamp_segments(tmp_path):
    ts0 = np.sort(np.random.default_rng(0).uniform(0, 1, 3_000))
    ts1 = np.sort(np.random.default_rng(1).uniform(0, 1, 3_000))
    a = write_segment(tmp_path / "a.nwb", 1, seconds=0.1, rate=None, timestamps=ts0)
    b = write_segment(tmp_path / "b.nwb", 2, seconds=0.1, rate=None, timestamps=ts1,
                      session_start_time=T0 + timedelta(seconds=2))
    j = join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb"])
    np.testing.assert_array_equal(j["timestamps"].array.compute(), np.concatenate([ts0, ts1 + 2.0]))
    np.testing.assert_array_equal(j["data"].array.compute(), np.concatenate([a, b]))
    # the second segment's times start before the first one's end: overlap
    c = tmp_path / "c.nwb"
    write_segment(c, 3, seconds=0.1, rate=None, timestamps=ts1, session_start_time=T0 + timedelta(seconds=0.5))
    with pytest.raises(SegmentError, match="decrease across segments"):
        join_timeseries([tmp_path / "a.nwb", c])


# --------------------------------------------------------------------------- #
# Errors                                                                       #
# --------------------------------------------------------------------------- #
def _h5(path, array, name="x", **attrs):
    with h5py.File(path, "w") as f:
        d = f.create_dataset(name, data=array, chunks=True)
        d.attrs.update(attrs)


def test_join_segments_errors(tmp_path):
    a, b, c, e = (tmp_path / n for n in ("a.h5", "b.h5", "c.h5", "e.h5"))
    _h5(a, np.zeros((10, 4), "i2"))
    _h5(b, np.zeros((7, 4), "f4"))
    _h5(c, np.zeros((7, 5), "i2"))
    _h5(e, np.zeros((7, 4), "i2"))
    with pytest.raises(SegmentError, match="dtype") as err:
        join_segments([a, b], "x")
    assert str(a) in str(err.value) and str(b) in str(err.value)
    assert "float32" in str(err.value) and "int16" in str(err.value)

    with pytest.raises(SegmentError, match="shape") as err:
        join_segments([a, c], "x")
    assert str(a) in str(err.value) and str(c) in str(err.value)
    assert "(7, 5)" in str(err.value) and "(10, 4)" in str(err.value)
    # along axis 1 the trailing shapes must agree on axis 0: (10, 4) vs (7, 4) fails, (7, 4) + (7, 5) joins
    with pytest.raises(SegmentError, match="all axes but axis 1"):
        join_segments([a, e], "x", axis=1)
    j = join_segments([e, c], "x", axis=1)
    assert j.array.shape == (7, 9)

    missing = tmp_path / "missing.h5"
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        join_segments([a, missing], "x")
    with pytest.raises(KeyError, match="'nope'"):
        join_segments([a, e], "nope")
    with pytest.raises(KeyError, match="b.h5"):
        join_segments([(a, "x"), (b, "y")])
    with pytest.raises(ValueError, match="no segments"):
        join_segments([], "x")
    with pytest.raises(ValueError, match="mode must be"):
        join_segments([a, e], "x", mode="symlink")
    with pytest.raises(ValueError, match="give the dataset path"):
        join_segments([a, e])
    with pytest.raises(SegmentError, match="axis 2 is out of range"):
        join_segments([a, e], "x", axis=2)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["x"] = 3
    with pytest.raises(SegmentError, match="scalar"):
        join_segments([tmp_path / "s.h5"], "x")
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("x")
    with pytest.raises(KeyError, match="no dataset 'x'"):
        join_segments([tmp_path / "g.h5"], "x")


def test_segment_behind_an_external_link(tmp_path):
    """A segment file whose dataset is an external link (to another name): the VDS reads through the link."""
    (tmp_path / "parts").mkdir()
    a = np.arange(40, dtype="i4").reshape(20, 2)
    b = 100 + np.arange(30, dtype="i4").reshape(15, 2)
    _h5(tmp_path / "parts" / "raw.h5", a, name="deep/raw")
    _h5(tmp_path / "parts" / "b.h5", b)
    with h5py.File(tmp_path / "parts" / "a.h5", "w") as f:
        f["x"] = h5py.ExternalLink("raw.h5", "/deep/raw")
    j = join_segments([tmp_path / "parts" / "a.h5", tmp_path / "parts" / "b.h5"], "x")
    expected = np.concatenate([a, b])
    np.testing.assert_array_equal(j.array.compute(), expected)
    (tmp_path / "out").mkdir()
    with h5py.File(tmp_path / "out" / "v.h5", "w") as f:
        j.create(f, "v")
    with h5py.File(tmp_path / "out" / "v.h5", "r") as f:
        np.testing.assert_array_equal(f["v"][...], expected)
    recs = audit_links(tmp_path / "out" / "v.h5")
    assert [(r.file, r.object, r.broken) for r in recs] == [
        (os.path.join("..", "parts", "a.h5"), "/x", False),
        (os.path.join("..", "parts", "b.h5"), "/x", False),
    ]
    np.testing.assert_array_equal(nwb_dask.read_dataset(tmp_path / "out" / "v.h5", "v").compute(), expected)


def test_join_timeseries_attribute_mismatch(tmp_path):
    write_segment(tmp_path / "a.nwb", 1, seconds=0.1, starting_time=0.0)
    write_segment(tmp_path / "b.nwb", 2, seconds=0.1, starting_time=0.1, conversion=1e-6)
    write_segment(tmp_path / "c.nwb", 3, seconds=0.1, starting_time=0.1, offset=0.25)
    with pytest.raises(SegmentError, match="differ in conversion") as err:
        join_timeseries([tmp_path / "a.nwb", tmp_path / "b.nwb"])
    assert "a.nwb: 1.95e-07" in str(err.value) and "b.nwb: 1e-06" in str(err.value)
    with pytest.raises(SegmentError, match="differ in offset"):
        join_timeseries([tmp_path / "a.nwb", tmp_path / "c.nwb"])
    # unit (set through the file: ElectricalSeries fixes it to volts)
    shutil.copyfile(tmp_path / "a.nwb", tmp_path / "d.nwb")
    with h5py.File(tmp_path / "d.nwb", "r+") as f:
        f[DATA].attrs["unit"] = "microvolts"
    with pytest.raises(SegmentError, match="differ in unit") as err:
        join_timeseries([tmp_path / "a.nwb", tmp_path / "d.nwb"])
    assert "'volts'" in str(err.value) and "'microvolts'" in str(err.value)
    # dtype and channel count differ between NWB segments
    write_segment(tmp_path / "e.nwb", 4, seconds=0.1, starting_time=0.1, channels=8)
    with pytest.raises(SegmentError, match=r"\(3000, 8\).*\(3000, 16\)"):
        join_timeseries([tmp_path / "a.nwb", tmp_path / "e.nwb"])
    with pytest.raises(FileNotFoundError, match="nope.nwb"):
        join_timeseries([tmp_path / "a.nwb", tmp_path / "nope.nwb"])
    with pytest.raises(KeyError, match="acquisition/Nope"):
        join_timeseries([tmp_path / "a.nwb"], series="acquisition/Nope")


# --------------------------------------------------------------------------- #
# Property: any segment layout, written by VirtualData.create                 #
# --------------------------------------------------------------------------- #
@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    columns=st.integers(1, 5),
    dtype=st.sampled_from(["int16", "float32", "uint8"]),
    chunk_rows=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_virtual_layout_matches_concatenate(lengths, columns, dtype, chunk_rows, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "parts").mkdir()
        parts, pairs = [], []
        for i, n in enumerate(lengths):
            x = (rng.standard_normal((n, columns)) * 50).astype(dtype)
            with h5py.File(tmp / "parts" / f"p{i}.h5", "w") as f:
                f.create_dataset("grp/x", data=x, chunks=(min(chunk_rows, n), columns), compression="gzip")
            parts.append(x)
            pairs.append((tmp / "parts" / f"p{i}.h5", "grp/x"))
        expected = np.concatenate(parts)
        j = join_segments(pairs)
        assert isinstance(j, VirtualData) and j.axis == 0
        np.testing.assert_array_equal(j.array.compute(), expected)
        (tmp / "out").mkdir()
        with h5py.File(tmp / "out" / "v.h5", "w") as f:
            d = j.create(f, "v")
            assert d.is_virtual and d.shape == expected.shape and d.dtype == expected.dtype
        with h5py.File(tmp / "out" / "v.h5", "r") as f:
            assert [s.file_name for s in f["v"].virtual_sources()] == [
                os.path.join("..", "parts", f"p{i}.h5") for i in range(len(lengths))
            ]
            np.testing.assert_array_equal(f["v"][...], expected)
            # partial reads across segment boundaries
            k = len(expected) // 3
            np.testing.assert_array_equal(f["v"][k : 2 * k + 1, -1], expected[k : 2 * k + 1, -1])
        np.testing.assert_array_equal(nwb_dask.read_dataset(tmp / "out" / "v.h5", "v").compute(), expected)

        # the same segments joined along axis 1 (equal lengths)
        cols = join_segments([(p, "grp/x") for p, _ in pairs[:1]] * 2, axis=1)
        with h5py.File(tmp / "h.h5", "w") as f:
            cols.create(f, "h")
        with h5py.File(tmp / "h.h5", "r") as f:
            np.testing.assert_array_equal(f["h"][...], np.concatenate([parts[0], parts[0]], axis=1))

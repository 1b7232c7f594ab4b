"""nwb_dask.to_xarray: TimeSeries as labelled, lazy xarray DataArrays (issue 18, item 3).

Every value is compared element by element with what pynwb (``NWBHDF5IO``) or
h5py read from the same file: data, the time coordinate (timestamps, rate,
0-length and 1-sample series), the electrode coordinates, ``scale=True``
against pynwb's ``get_data_in_units()``.  Creation computes nothing (a dask
callback counts tasks); the arrays compute on a 2-process LocalCluster and
over HTTP (the loopback server of tests/http_server.py); the examples of
docs/analysis.md, including its cluster and HTTP functions, run here.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import ElectricalSeries
from pynwb.image import ImageSeries

import nwb_dask

xr = pytest.importorskip("xarray")

ROOT = Path(__file__).resolve().parents[1]
N_CHANNELS = 6
RNG = np.random.default_rng(18)
RAW = RNG.integers(-2000, 2000, size=(3000, N_CHANNELS), dtype=np.int16)
CHANNEL_CONVERSION = np.linspace(0.5, 1.5, N_CHANNELS, dtype=np.float32)
TIMESTAMPS = np.cumsum(RNG.uniform(0.001, 0.002, size=500)) + 10.0
REGION = [5, 0, 3, 2]  # a region out of table order: the coordinates follow the region


class TaskCount(Callback):
    """Counts the dask tasks run (on the local schedulers) while active."""

    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dsk, state):
        self.tasks += 1


def build_nwbfile() -> NWBFile:
    nwbfile = NWBFile(session_description="to_xarray tests", identifier="x18",
                      session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    device = nwbfile.create_device(name="probe", description="test probe")
    groups = [nwbfile.create_electrode_group(f"shank{i}", description="shank", location="CA1", device=device)
              for i in range(2)]
    nwbfile.add_electrode_column("impedance", "ohms")
    nwbfile.add_electrode_column("label", "a string per electrode")
    nwbfile.add_electrode_column("tags", "ragged: a list per electrode", index=True)
    nwbfile.add_electrode_column("pos2", "2 values per electrode (not 1-D per row)")
    for i in range(N_CHANNELS):
        nwbfile.add_electrode(group=groups[i % 2], location=f"L{i}", x=float(i), y=2.0 * i, z=0.5,
                              rel_x=-float(i), filtering="none", impedance=1e5 + i, label=f"e{i}",
                              tags=["a"] * (i % 3 + 1), pos2=[float(i), float(i + 1)], id=100 + i)
    all_electrodes = nwbfile.create_electrode_table_region(list(range(N_CHANNELS)), "all")
    nwbfile.add_acquisition(ElectricalSeries(
        name="raw", data=RAW, electrodes=all_electrodes, rate=30000.0, starting_time=2.5,
        conversion=0.195e-6, offset=-1e-3, resolution=1e-7, channel_conversion=CHANNEL_CONVERSION,
        description="raw ephys"))
    nwbfile.add_acquisition(ElectricalSeries(
        name="subset", data=RAW[:500, REGION].astype(np.float32), timestamps=TIMESTAMPS,
        electrodes=nwbfile.create_electrode_table_region(REGION, "some"), conversion=2.0, description="subset"))
    nwbfile.add_acquisition(TimeSeries(name="speed", data=RAW[:, 0].astype(np.float64) / 7, unit="m/s",
                                       rate=100.0, starting_time=0.25, conversion=0.01, offset=3.0))
    nwbfile.add_acquisition(TimeSeries(name="linked", data=RAW[:500, 1], unit="a.u.",
                                       timestamps=nwbfile.acquisition["subset"]))
    nwbfile.add_acquisition(TimeSeries(name="empty", data=np.zeros((0, 3), dtype=np.int16), unit="a.u.", rate=10.0))
    nwbfile.add_acquisition(TimeSeries(name="one", data=np.array([7.5]), unit="a.u.", rate=10.0, starting_time=4.0))
    nwbfile.add_acquisition(TimeSeries(name="one_ts", data=np.array([7.5]), unit="a.u.", timestamps=[4.0]))
    nwbfile.add_acquisition(ImageSeries(name="camera", data=RNG.integers(0, 255, (20, 8, 5), dtype=np.uint8),
                                        unit="n.a.", rate=25.0))
    return nwbfile


@pytest.fixture(scope="module")
def nwb_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("xarray") / "x.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb's best-practice warnings on the synthetic series
        with NWBHDF5IO(str(path), "w") as io:
            io.write(build_nwbfile())
    return path


@pytest.fixture(scope="module")
def dask_file(nwb_path):
    """The file as ``read_nwb`` gives it, every numeric dataset a dask array (min_bytes=1)."""
    nwbfile = nwb_dask.read_nwb(nwb_path, min_bytes=1)
    yield nwbfile
    nwbfile.read_io.close()


@pytest.fixture(scope="module")
def pynwb_file(nwb_path):
    io = NWBHDF5IO(str(nwb_path), "r")
    yield io.read()
    io.close()


SERIES = ["raw", "subset", "speed", "linked", "empty", "one", "one_ts", "camera"]


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- #
# values against pynwb / h5py                                                 #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", SERIES)
def test_data_and_time_match_pynwb(name, dask_file, pynwb_file, nwb_path):
    series = dask_file.acquisition[name]
    arr = nwb_dask.to_xarray(series)
    assert isinstance(arr.data, da.Array)
    reference = pynwb_file.acquisition[name]
    assert_same(arr.values, reference.data[()])
    with h5py.File(nwb_path, "r") as f:
        assert_same(arr.values, f[f"acquisition/{name}/data"][()])
    time = arr.coords["time"]
    assert isinstance(time.data, da.Array) and "time" not in arr.indexes  # lazy: no index read
    assert_same(time.values, reference.get_timestamps()[()])
    assert time.attrs["units"] == "seconds"
    assert arr.name == name and arr.attrs["name"] == name
    assert arr.attrs["neurodata_type"] == type(reference).__name__
    for key in ("unit", "conversion", "offset", "resolution", "description"):
        assert arr.attrs[key] == getattr(reference, key), key
    assert arr.attrs["scaled"] is False and "units" not in arr.attrs


def test_dims(dask_file):
    acq = dask_file.acquisition
    assert nwb_dask.to_xarray(acq["raw"]).dims == ("time", "channel")
    assert nwb_dask.to_xarray(acq["speed"]).dims == ("time",)
    assert nwb_dask.to_xarray(acq["empty"]).dims == ("time", "dim_1")  # TimeSeries' num_DIM2
    assert nwb_dask.to_xarray(acq["camera"]).dims == ("time", "x", "y")  # ImageSeries' frame, x, y


def test_zero_and_one_sample_series(dask_file):
    empty = nwb_dask.to_xarray(dask_file.acquisition["empty"])
    assert empty.shape == (0, 3) and empty.coords["time"].shape == (0,)
    assert empty.compute().shape == (0, 3)
    for name in ("one", "one_ts"):
        one = nwb_dask.to_xarray(dask_file.acquisition[name])
        assert one.values.tolist() == [7.5] and one.coords["time"].values.tolist() == [4.0]


def test_the_same_dask_array_backs_the_data_array(dask_file):
    series = dask_file.acquisition["raw"]
    assert nwb_dask.to_xarray(series).data is series.data


def test_time_off_and_selection_by_time(dask_file):
    series = dask_file.acquisition["raw"]
    assert "time" not in nwb_dask.to_xarray(series, time=False).coords
    arr = nwb_dask.to_xarray(series).set_xindex("time")  # reads the coordinate, builds the index
    window = arr.sel(time=slice(2.5, 2.5 + 99.5 / 30000))
    assert_same(window.values, RAW[:100])


def test_electrode_coordinates_match_the_table(dask_file, pynwb_file):
    for name, rows in (("raw", list(range(N_CHANNELS))), ("subset", REGION)):
        arr = nwb_dask.to_xarray(dask_file.acquisition[name])
        table = pynwb_file.electrodes
        assert arr.coords["channel"].values.tolist() == [100 + r for r in rows]
        assert "channel" in arr.indexes  # small: indexed, so .sel(channel=...) works
        for column in ("location", "x", "y", "z", "rel_x", "filtering", "impedance", "label", "group_name"):
            expected = np.asarray(table[column].data[:])[rows]
            coord = arr.coords[column]
            assert coord.dims == ("channel",)
            assert coord.values.tolist() == expected.tolist(), column
        assert arr.coords["location"].values.tolist() == [f"L{r}" for r in rows]
        assert arr.coords["group_name"].values.tolist() == [f"shank{r % 2}" for r in rows]
        assert sorted(arr.attrs["skipped_electrode_columns"]) == ["group", "pos2", "tags"]
        for skipped in ("group", "pos2", "tags", "tags_index"):
            assert skipped not in arr.coords
        picked = arr.sel(channel=[100 + rows[1]])
        assert_same(picked.values, np.asarray(pynwb_file.acquisition[name].data[()])[:, [1]])


def test_electrode_region_that_does_not_match_the_data_is_an_error():
    nwbfile = build_nwbfile()
    region = nwbfile.create_electrode_table_region([0, 1], "two")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb only warns
        series = ElectricalSeries(name="bad", data=np.zeros((10, 3)), electrodes=region, rate=1.0)
    with pytest.raises(ValueError, match=r"ElectricalSeries 'bad'.*2 rows for 3 channels"):
        nwb_dask.to_xarray(series)


def test_timestamps_that_do_not_match_the_data_are_an_error():
    series = TimeSeries(name="bad_ts", data=np.zeros(5), unit="a.u.", timestamps=np.arange(5.0))
    series.fields["timestamps"] = np.arange(4.0)  # pynwb only warns about this when it reads a file
    with pytest.raises(ValueError, match=r"TimeSeries 'bad_ts': 4 timestamps for 5 samples"):
        nwb_dask.to_xarray(series)


# --------------------------------------------------------------------------- #
# scale=True against pynwb's get_data_in_units                                #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["raw", "subset", "speed", "one"])
def test_scale_matches_get_data_in_units(name, dask_file, pynwb_file):
    arr = nwb_dask.to_xarray(dask_file.acquisition[name], scale=True)
    reference = pynwb_file.acquisition[name]
    assert_same(arr.values, reference.get_data_in_units())  # values and dtype
    assert arr.attrs["scaled"] is True and arr.attrs["units"] == reference.unit


def test_scale_applies_channel_conversion_per_channel(dask_file):
    series = dask_file.acquisition["raw"]
    arr = nwb_dask.to_xarray(series, scale=True)
    assert isinstance(series.conversion, np.float64)  # as pynwb reads it: a NumPy scalar, so float64 wins
    assert arr.dtype == np.float64
    first = arr.isel(time=0).values
    expected = RAW[0] * (np.float64(0.195e-6) * CHANNEL_CONVERSION) + np.float64(-1e-3)
    assert_same(first, expected)
    assert not np.allclose(first, RAW[0] * 0.195e-6 - 1e-3)  # the per-channel factor is there


# --------------------------------------------------------------------------- #
# laziness, plain pynwb series                                                #
# --------------------------------------------------------------------------- #
def test_creation_computes_nothing(dask_file):
    counter = TaskCount()
    with counter:
        arrays = [nwb_dask.to_xarray(dask_file.acquisition[name], scale=True) for name in SERIES]
        assert counter.tasks == 0
        arrays[0].isel(time=slice(0, 10)).compute()
    assert counter.tasks > 0  # the callback does count tasks: the check above can fail


def test_plain_pynwb_series_h5py_backed(pynwb_file, nwb_path):
    series = pynwb_file.acquisition["raw"]
    assert isinstance(series.data, h5py.Dataset)
    counter = TaskCount()
    with counter:
        arr = nwb_dask.to_xarray(series)
    assert counter.tasks == 0
    assert isinstance(arr.data, da.Array)
    pickle.dumps(arr.data)  # nwb_dask's own reader, no open h5py objects: distributed-safe
    assert_same(arr.values, RAW)
    assert_same(arr.coords["time"].values, series.get_timestamps())


def test_plain_in_memory_series():
    nwbfile = build_nwbfile()
    arr = nwb_dask.to_xarray(nwbfile.acquisition["raw"], scale=True)
    assert isinstance(arr.data, da.Array)
    assert_same(arr.values, nwbfile.acquisition["raw"].get_data_in_units())
    # a Python-float conversion is "weak" under NumPy 2: int16 * float32 channel_conversion stays float32
    assert arr.dtype == np.float32
    subset = nwb_dask.to_xarray(nwbfile.acquisition["subset"], scale=True)
    assert subset.dtype == np.float32  # float32 data * 2.0
    assert_same(subset.values, nwbfile.acquisition["subset"].get_data_in_units())
    assert arr.coords["channel"].values.tolist() == list(range(100, 100 + N_CHANNELS))
    ts = nwb_dask.to_xarray(nwbfile.acquisition["linked"])  # timestamps linked to another series
    assert_same(ts.coords["time"].values, TIMESTAMPS)


def test_dask_data_io_wrapper_before_writing():
    values = da.from_array(RAW, chunks=(1000, N_CHANNELS))
    series = TimeSeries(name="w", data=nwb_dask.DaskDataIO(values), unit="V", rate=2.0)
    arr = nwb_dask.to_xarray(series)
    assert arr.data is values


# --------------------------------------------------------------------------- #
# hypothesis: shapes, rates, starting times                                   #
# --------------------------------------------------------------------------- #
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 400),
    width=st.sampled_from([(), (1,), (3,), (2, 2)]),
    rate=st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False),
    starting_time=st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False),
    dtype=st.sampled_from(["int16", "uint8", "float32", "float64"]),
    conversion=st.floats(1e-9, 1e3),
    offset=st.floats(-10, 10),
    chunk=st.integers(1, 64),
    with_timestamps=st.booleans(),
)
def test_time_data_and_scale_match_pynwb_everywhere(n, width, rate, starting_time, dtype, conversion, offset,
                                                    chunk, with_timestamps):
    values = (np.arange(n * int(np.prod(width)), dtype=np.int64) % 97).astype(dtype).reshape((n, *width))
    data = da.from_array(values, chunks=(chunk, *width))
    timing = {"rate": rate, "starting_time": starting_time}
    if with_timestamps:
        timing = {"timestamps": starting_time + np.cumsum(np.full(n, 1.0 / rate))}
    series = TimeSeries(name="h", data=values, unit="V", conversion=conversion, offset=offset, **timing)
    series.fields["data"] = data  # as read_nwb's daskify puts it there (pynwb's constructor takes no dask array)
    if with_timestamps and n:
        series.fields["timestamps"] = da.from_array(timing["timestamps"], chunks=chunk)
    arr = nwb_dask.to_xarray(series, scale=True)
    assert arr.dims[0] == "time" and len(arr.dims) == values.ndim
    assert isinstance(arr.coords["time"].data, da.Array)
    reference = TimeSeries(name="h", data=values, unit="V", conversion=conversion, offset=offset, **timing)
    assert_same(arr.coords["time"].values, reference.get_timestamps())
    assert_same(arr.values, reference.get_data_in_units())
    assert_same(nwb_dask.to_xarray(series).values, values)


# --------------------------------------------------------------------------- #
# distributed and HTTP                                                        #
# --------------------------------------------------------------------------- #
BIG = RNG.integers(-1000, 1000, size=(250_000, N_CHANNELS), dtype=np.int16)  # 3 MB: past the metadata blocks


def write_served(directory: Path) -> str:
    from hdmf.backends.hdf5 import H5DataIO

    path = directory / "served.nwb"
    nwbfile = build_nwbfile()
    nwbfile.add_acquisition(ElectricalSeries(
        name="big", data=H5DataIO(BIG, chunks=(10_000, N_CHANNELS), compression="gzip"), rate=1000.0,
        electrodes=nwbfile.create_electrode_table_region(list(range(N_CHANNELS)), "all"), conversion=1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    return path.name


@pytest.mark.parametrize("min_bytes", [1, None], ids=["all-dask", "default-min-bytes"])
def test_over_http(server, tmp_path, min_bytes):
    name = write_served(tmp_path)
    nwbfile = nwb_dask.read_nwb(server.url(name), **({} if min_bytes is None else {"min_bytes": min_bytes}))
    try:
        subset = nwb_dask.to_xarray(nwbfile.acquisition["subset"])  # small h5py data and timestamps by default
        assert_same(subset.coords["time"].values, TIMESTAMPS)
        assert_same(subset.values, RAW[:500, REGION].astype(np.float32))
        pickle.dumps(subset.data)
        arr = nwb_dask.to_xarray(nwbfile.acquisition["raw"], scale=True)
        assert arr.coords["label"].values.tolist() == [f"e{i}" for i in range(N_CHANNELS)]
        with dask.config.set(scheduler="threads"):
            mean = arr.mean("time").compute()
            server.reset_counts()
            # 3 MB: a dask array with min_bytes=1; below read_nwb's default 16 MiB an h5py dataset of the
            # remote file, read when the DataArray is made (it has no file path for the workers to open)
            big = nwb_dask.to_xarray(nwbfile.acquisition["big"], scale=True)
            got = big.isel(time=slice(100_000, 130_000)).values
        assert server.requests, "the samples were fetched over HTTP"
        assert_same(got, BIG[100_000:130_000] * np.float64(1e-6) + np.float64(0.0))
        with NWBHDF5IO(str(tmp_path / name), "r") as io:
            expected = io.read().acquisition["raw"].get_data_in_units()
            assert_same(arr.values, expected)
        assert np.allclose(mean.values, expected.mean(axis=0), rtol=1e-12)
    finally:
        nwbfile.read_io.close()


def test_on_local_cluster_local_and_http(server, tmp_path, nwb_path):
    distributed = pytest.importorskip("distributed")
    name = write_served(tmp_path)
    local = nwb_dask.read_nwb(nwb_path, min_bytes=1)
    remote = nwb_dask.read_nwb(server.url(name), min_bytes=1)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            for nwbfile in (local, remote):
                arr = nwb_dask.to_xarray(nwbfile.acquisition["raw"], scale=True)
                sub = nwb_dask.to_xarray(nwbfile.acquisition["subset"])
                got, got_sub, got_time = client.compute([arr.data, sub.data, arr.coords["time"].data], sync=True)
                with NWBHDF5IO(str(nwb_path), "r") as io:
                    ref = io.read().acquisition
                    assert_same(got, ref["raw"].get_data_in_units())
                    assert_same(got_sub, ref["subset"].data[()])
                    assert_same(got_time, ref["raw"].get_timestamps())
    finally:
        local.read_io.close()
        remote.read_io.close()


# --------------------------------------------------------------------------- #
# the optional dependency                                                     #
# --------------------------------------------------------------------------- #
def test_without_xarray_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['xarray'] = None\n"
        "import numpy as np, nwb_dask\n"
        "from pynwb import TimeSeries\n"
        "assert 'xarray' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    nwb_dask.to_xarray(TimeSeries(name='t', data=np.zeros(3), unit='V', rate=1.0))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "nwb-dask[xarray]"' in out.stdout, out.stdout + out.stderr


def test_import_nwb_dask_does_not_import_xarray():
    code = "import sys, nwb_dask; print('xarray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- #
# docs/analysis.md: its cluster and HTTP functions run                        #
# --------------------------------------------------------------------------- #
def test_analysis_page_functions_run_on_a_cluster_and_over_http(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the page writes its file into the served directory
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "analysis.md").read_text(), re.S | re.M)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"analysis.md[block {i}]", "exec"), namespace)
    means = namespace["per_channel_mean_on_cluster"]("analysis.nwb")
    remote = namespace["per_channel_mean_over_http"](server.url("analysis.nwb"))
    assert server.requests
    with NWBHDF5IO(str(tmp_path / "analysis.nwb"), "r") as io:
        expected = io.read().acquisition["ElectricalSeries"].get_data_in_units().mean(axis=0)
    assert np.allclose(means.values, expected) and np.allclose(remote.values, expected)
    assert means.dims == ("channel",) and "location" in means.coords


def test_nwb_zarr_series(tmp_path):
    """NWB-Zarr: read_nwb leaves small arrays as zarr arrays; they are wrapped lazily, and pickle."""
    from nwb_dask.testing import ephys_nwbfile

    values = (np.arange(4000 * 8) % 300).astype(np.int16).reshape(4000, 8)
    path = tmp_path / "x.nwb.zarr"
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(da.from_array(values, chunks=(1000, 8)))), path,
                       progress=False, scheduler="sync")
    nwbfile = nwb_dask.read_nwb(path)
    series = nwbfile.acquisition["ElectricalSeries"]
    counter = TaskCount()
    with counter:
        arr = nwb_dask.to_xarray(series, scale=True)
    assert counter.tasks == 0
    pickle.loads(pickle.dumps(arr.data))
    assert arr.dims == ("time", "channel") and arr.coords["location"].values.tolist() == ["CA1"] * 8
    assert_same(arr.values, series.get_data_in_units())
    assert_same(arr.coords["time"].values, series.get_timestamps())


def test_h5py_file_opened_from_a_file_object(nwb_path, monkeypatch):
    """No path for the workers: small datasets are read at creation, a large one is an error naming it."""
    with open(nwb_path, "rb") as fileobj, h5py.File(fileobj, "r") as f, NWBHDF5IO(file=f, mode="r") as io:
        series = io.read().acquisition["raw"]
        arr = nwb_dask.to_xarray(series, scale=True)
        assert_same(arr.values, series.get_data_in_units())
        pickle.dumps(arr.data)
        monkeypatch.setattr("nwb_dask.nwb.labelled.READ_MIN_BYTES", 1024)  # "large" for this 36 kB dataset
        with pytest.raises(ValueError, match=r"ElectricalSeries 'raw': data: an h5py dataset of 36000 bytes "
                                             r"in a file opened from a file object.*nwb_dask.read_nwb\(url\)"):
            nwb_dask.to_xarray(series)

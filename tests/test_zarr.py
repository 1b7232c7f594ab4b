"""NWB-Zarr (nwb_dask.zarr): parallel Zarr writes, codecs, HDF5 <-> Zarr conversion, atomicity.

Stores written by nwb_dask are read back independently of it: with plain
``zarr`` and hdmf-zarr's ``NWBZarrIO`` (in a fresh interpreter that never
imports nwb_dask for the main round trip), and compared element by element
with the source.  Conversions are compared object by object with pynwb /
hdmf-zarr and validated with ``pynwb.validate``; every convert test checks
that its inputs are byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
import re
from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numcodecs
import numcodecs.pickles
import numpy as np
import pytest
from conftest import assert_same_nwb, object_ids, open_nwb
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynwb import NWBFile, TimeSeries, validate

import nwb_dask
from nwb_dask import DaskDataIO
from nwb_dask.codecs import CodecError
from nwb_dask.codecs import codec as make_codec
from nwb_dask.tools.repack import RepackError
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys, write_rich_nwbfile
from nwb_dask.zarr.io import NWBZarrDaskIO, write_nwb_zarr
from nwb_dask.tools.convert import convert
from nwb_dask.zarr.read import is_zarr_path
from nwb_dask.codecs import numcodecs_pipeline
from nwb_dask.zarr.sink import store_arrays

sink_module = importlib.import_module("nwb_dask.zarr.sink")
convert_module = importlib.import_module("nwb_dask.tools.convert")

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
    "ignore:AnnotationSeries is deprecated:UserWarning",  # pynwb reading the rich file back
)

ES = "acquisition/ElectricalSeries/data"
CAMERA = "acquisition/camera/data"
LFP = "processing/ecephys/LFP/LFP/data"
LFP_TS = "processing/ecephys/LFP/LFP/timestamps"
POWER = "processing/ecephys/LFP_power/data"
#: The rich file (1 s, 16 channels) has these numeric datasets of at least MIN bytes.
MIN = 5_000
LARGE = {ES, CAMERA, LFP, LFP_TS, POWER}


# --------------------------------------------------------------------------- #
# helpers                                                                      #
# --------------------------------------------------------------------------- #
def digest(path: Path) -> str:
    """sha256 of a file, or of every file (relative name and bytes) of a directory."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode() + b"\0")
            if p.is_file():
                h.update(p.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def partials(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if ".partial" in p.name or p.name.endswith(".old"))


def ts_nwbfile(data, name: str = "ts") -> NWBFile:
    nwbfile = NWBFile(session_description="nwb_dask zarr test", identifier="zarr-test",
                      session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    nwbfile.add_acquisition(TimeSeries(name=name, data=data, unit="a.u.", rate=100.0))
    return nwbfile


def write_ts(path: Path, array, **dataio_kwargs) -> zarr.Array:
    """Write ``array`` as acquisition/ts/data with write_nwb_zarr; the stored array, opened with plain zarr."""
    write_nwb_zarr(ts_nwbfile(DaskDataIO(array, **dataio_kwargs)), path, scheduler="threads", progress=False)
    return zarr.open(str(path), "r")["acquisition/ts/data"]


def chunk_files(store: Path, name: str) -> list[str]:
    return sorted(p.name for p in (Path(store) / name).iterdir() if not p.name.startswith("."))


def ints(shape, dtype="int16", seed=0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def allow_pickle(monkeypatch) -> None:
    """Let this process unpickle (stores written by convert keep trials.timeseries with Pickle)."""
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True)


def h5_values(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][()]


# --------------------------------------------------------------------------- #
# 1-2. A distributed write, read back by plain hdmf-zarr in a fresh interpreter #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
          Client(cluster, set_as_default=False) as c):
        c.wait_for_workers(2)
        c.run(importlib.import_module, "nwb_dask.zarr")  # both workers ready before the first task
        yield c


class DistributedWrite:
    """The result of one write_nwb_zarr on the process cluster."""

    n_blocks = 30
    chunk_shape = (1000, 16)

    def __init__(self, client, directory: Path):
        from distributed import get_task_stream

        self.path = directory / "ephys.nwb.zarr"
        x = synthetic_ephys(1.0, 16, seed=7, block_samples=1000)  # 30 blocks of (1000, 16) int16
        self.source = x.compute(scheduler="threads")
        self.client_keys: list[str] = []
        store_cls = zarr.storage.DirectoryStore
        original = store_cls.__setitem__

        def recording(store, key, value):  # patched in this (the client) process only
            self.client_keys.append(key)
            return original(store, key, value)

        with pytest.MonkeyPatch.context() as mp, get_task_stream(client) as ts:
            mp.setattr(store_cls, "__setitem__", recording)
            self.stats = write_nwb_zarr(ephys_nwbfile(DaskDataIO(x, chunks=self.chunk_shape)), self.path,
                                        scheduler=client, progress=False)
        self.tasks = ts.data
        self.workers = set(client.scheduler_info()["workers"])


@pytest.fixture(scope="module")
def distributed_write(client, tmp_path_factory):
    return DistributedWrite(client, tmp_path_factory.mktemp("distributed"))


_PLAIN_ZARR_READER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import zarr
    from hdmf_zarr.nwb import NWBZarrIO

    path, out = sys.argv[1:3]
    with NWBZarrIO(path, "r") as io:
        nwbfile = io.read()
        series = nwbfile.acquisition["ElectricalSeries"]
        data = series.data[:]
        electrodes = nwbfile.electrodes.to_dataframe()  # the group column holds object references
        info = {
            "rate": series.rate,
            "conversion": series.conversion,
            "region": [int(i) for i in series.electrodes.data[:]],
            "region_table": series.electrodes.table.name,
            "n_electrodes": len(electrodes),
            "groups": sorted({type(g).__name__ + ":" + g.name for g in electrodes["group"]}),
            "devices": sorted({g.device.name for g in electrodes["group"]}),
            "locations": sorted(set(electrodes["location"])),
        }
    arr = zarr.open(path, "r")["acquisition/ElectricalSeries/data"]
    info["chunks"] = list(arr.chunks)
    info["dtype"] = arr.dtype.str
    info["compressor"] = arr.compressor.get_config() if arr.compressor is not None else None
    info["filters"] = [f.get_config() for f in arr.filters or []]
    info["nwb_dask_modules"] = sorted(m for m in sys.modules if m.startswith("nwb_dask"))
    np.save(out, data)
    with open(out + ".json", "w") as fh:
        json.dump(info, fh)
    """
)


def test_distributed_write_reads_back_with_plain_hdmf_zarr(distributed_write, tmp_path):
    w = distributed_write
    out = tmp_path / "data.npy"
    env = {k: v for k, v in os.environ.items() if k != "NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE"}
    proc = subprocess.run([sys.executable, "-c", _PLAIN_ZARR_READER, str(w.path), str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False)
    assert proc.returncode == 0, f"plain hdmf-zarr could not read {w.path}:\n{proc.stderr[-3000:]}"
    info = json.loads(Path(str(out) + ".json").read_text())
    assert info["nwb_dask_modules"] == []

    data = np.load(out)
    assert data.dtype == np.int16 and data.shape == (30_000, 16)
    np.testing.assert_array_equal(data, w.source)

    assert info["chunks"] == [1000, 16] and info["dtype"] == "<i2"
    assert info["compressor"] == {"id": "zlib", "level": 4}  # nwb_dask's default gzip level 4 + shuffle
    assert info["filters"] == [{"id": "shuffle", "elementsize": 2}]
    assert info["rate"] == 30_000.0 and info["conversion"] == pytest.approx(0.195e-6)
    assert info["region"] == list(range(16)) and info["region_table"] == "electrodes"
    assert info["n_electrodes"] == 16
    assert info["groups"] == ["ElectrodeGroup:shank0"] and info["devices"] == ["probe"]
    assert info["locations"] == ["CA1"]


def test_distributed_write_stats_and_store_layout(distributed_write):
    w = distributed_write
    files = chunk_files(w.path, ES)
    assert files == sorted(f"{i}.0" for i in range(30))
    assert w.stats.datasets == [ES]
    assert w.stats.chunks == 30 and w.stats.logical_bytes == w.source.nbytes
    assert w.stats.stored_bytes == sum((w.path / ES / f).stat().st_size for f in files)
    assert 0 < w.stats.stored_bytes < w.source.nbytes
    # references are JSON (readable without unpickling); nothing in the store is pickled
    metas = [json.loads(p.read_text()) for p in w.path.rglob(".zarray")]
    ids = {c["id"] for m in metas for c in (m.get("filters") or []) + [m.get("compressor") or {"id": None}]}
    assert "json2" in ids and "pickle" not in ids
    group = json.loads((w.path / "general/extracellular_ephys/electrodes/group/.zarray").read_text())
    assert [f["id"] for f in group["filters"]] == ["json2"]


def test_workers_write_their_own_chunks(distributed_write):
    """Each _store_block task ran on a worker, both workers took part, and the client wrote no chunk."""
    w = distributed_write
    assert len(w.workers) == 2
    store_tasks = [t for t in w.tasks if str(t["key"]).startswith("_store_block")]
    assert len(store_tasks) == w.n_blocks
    assert {t["worker"] for t in store_tasks} == w.workers
    # the client process wrote the structure (metadata) but not one chunk of the series
    assert f"{ES}/.zarray" in w.client_keys
    assert [k for k in w.client_keys if k.startswith(ES + "/") and not k.rsplit("/", 1)[1].startswith(".")] == []


# --------------------------------------------------------------------------- #
# 3. Codecs, dtypes, edge and unaligned chunks                                 #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("spec, compressor, filters", [
    ("gzip", numcodecs.Zlib(level=4), [numcodecs.Shuffle(elementsize=2)]),
    (("gzip", {"level": 1, "shuffle": False}), numcodecs.Zlib(level=1), None),
    ("zstd", numcodecs.Zstd(level=3), None),
    (("zstd", {"level": 7, "shuffle": True}), numcodecs.Zstd(level=7), [numcodecs.Shuffle(elementsize=2)]),
    ("blosc", numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE), None),
    (("blosc", {"cname": "zstd", "level": 3, "shuffle": "bit"}),
     numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE), None),
    ("none", None, None),
])
def test_codecs_round_trip_through_plain_zarr(tmp_path, spec, compressor, filters):
    x = ints((5_000, 6), seed=1)
    arr = write_ts(tmp_path / "c.nwb.zarr", da.from_array(x, chunks=(1000, 6)), codec=spec, chunks=(500, 6))
    assert arr.compressor == compressor
    assert arr.filters == filters
    assert arr.chunks == (500, 6) and arr.dtype == np.int16
    np.testing.assert_array_equal(arr[:], x)
    assert len(chunk_files(tmp_path / "c.nwb.zarr", "acquisition/ts/data")) == 10


@pytest.mark.parametrize("spec", ["lz4", "bitshuffle"])
def test_codecs_without_a_zarr_equivalent_are_refused(tmp_path, spec):
    with pytest.raises(CodecError, match=f"codec '{spec}' has no NWB-Zarr equivalent"):
        numcodecs_pipeline(make_codec(spec), 2)
    x = da.zeros((100, 4), dtype="int16", chunks=(50, 4))
    with pytest.raises(CodecError, match=f"'{spec}'"):
        write_ts(tmp_path / "c.nwb.zarr", x, codec=spec)
    assert list(tmp_path.iterdir()) == []


def test_one_byte_items_with_shuffle(tmp_path):
    """HDF5's shuffle of 1-byte items is a no-op: stored without a Shuffle filter, values intact."""
    assert numcodecs_pipeline(make_codec("gzip"), 1) == ([], numcodecs.Zlib(level=4))
    x = ints((300, 20, 20), dtype="uint8", seed=2)
    arr = write_ts(tmp_path / "u8.nwb.zarr", da.from_array(x, chunks=(64, 20, 20)), codec="gzip", chunks=(32, 20, 20))
    assert arr.dtype == np.uint8 and not arr.filters and arr.compressor == numcodecs.Zlib(level=4)
    np.testing.assert_array_equal(arr[:], x)


@pytest.mark.parametrize("spec", ["gzip", "zstd", "blosc", "none"])
def test_float_data_with_nans_and_infs(tmp_path, spec):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2_000, 5)).astype("float32")
    x[rng.random(x.shape) < 0.1] = np.nan
    x[0, 0], x[1, 1], x[-1, -1] = np.inf, -np.inf, -0.0
    arr = write_ts(tmp_path / "f.nwb.zarr", da.from_array(x, chunks=(400, 5)), codec=spec, chunks=(300, 5))
    back = arr[:]
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), np.isnan(x))
    np.testing.assert_array_equal(back, x)  # NaNs compare equal in assert_array_equal
    assert np.signbit(back[-1, -1])
    if spec != "none":  # 4-byte shuffle only for codecs that have it on
        assert arr.filters == ([numcodecs.Shuffle(elementsize=4)] if spec == "gzip" else None)


def test_edge_chunks(tmp_path):
    """Shape not a multiple of the chunk shape on any axis: the edge chunks are whole, the values exact."""
    x = ints((1_003, 7), seed=4)
    arr = write_ts(tmp_path / "e.nwb.zarr", da.from_array(x, chunks=(200, 6)), codec="zstd", chunks=(100, 3))
    assert arr.chunks == (100, 3)
    np.testing.assert_array_equal(arr[:], x)
    np.testing.assert_array_equal(arr[1000:, 6:], x[1000:, 6:])
    assert len(chunk_files(tmp_path / "e.nwb.zarr", "acquisition/ts/data")) == 11 * 3


@pytest.mark.parametrize("blocks", [(137, 5), (33, 7), (1_003, 1)])
def test_blocks_not_aligned_to_chunks(tmp_path, blocks):
    x = ints((1_003, 7), seed=5)
    source = da.from_array(x, chunks=blocks)
    arr = write_ts(tmp_path / "u.nwb.zarr", source, codec="gzip", chunks=(100, 3))
    np.testing.assert_array_equal(arr[:], x)
    assert len(chunk_files(tmp_path / "u.nwb.zarr", "acquisition/ts/data")) == 11 * 3


def test_nwb_zarr_dask_io_write_and_stats(tmp_path):
    x = ints((4_000, 3), seed=6)
    path = tmp_path / "io.nwb.zarr"
    with NWBZarrDaskIO(path, "w", scheduler="threads", progress=False) as io:
        io.write(ts_nwbfile(DaskDataIO(da.from_array(x, chunks=(1000, 3)), chunks=(1000, 3))))
        stats = io.stats
    assert stats.datasets == ["acquisition/ts/data"] and stats.chunks == 4 and stats.logical_bytes == x.nbytes
    with open_nwb(path) as io:
        series = io.read().acquisition["ts"]
        assert isinstance(series.data, zarr.Array)
        np.testing.assert_array_equal(series.data[:], x)
        assert series.rate == 100.0 and series.unit == "a.u."
    assert is_zarr_path(path) and is_zarr_path(tmp_path / "new.zarr") and not is_zarr_path(tmp_path / "f.nwb")


# --------------------------------------------------------------------------- #
# 4. Property: random shapes, chunk shapes, block shapes, dtypes, codecs        #
# --------------------------------------------------------------------------- #
@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 30), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    blocks = tuple(draw(st.integers(1, s)) for s in shape)
    dtype = draw(st.sampled_from(["int16", "float32", "uint8"]))
    spec = draw(st.sampled_from(["none", "gzip", "zstd", "blosc", ("zstd", {"shuffle": True}),
                                 ("blosc", {"shuffle": "bit"})]))
    separator = draw(st.sampled_from([".", "/"]))
    seed = draw(st.integers(0, 2**16))
    return shape, chunks, blocks, dtype, spec, separator, seed


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_store_arrays_writes_exactly_the_source(layout):
    shape, chunks, blocks, dtype, spec, separator, seed = layout
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        x = rng.standard_normal(shape).astype(dtype)
        x[rng.random(shape) < 0.2] = np.nan
    else:
        x = ints(shape, dtype, seed)
    c = make_codec(spec)
    filters, compressor = numcodecs_pipeline(c, x.dtype.itemsize)
    with tempfile.TemporaryDirectory() as d:
        group = zarr.open_group(os.path.join(d, "s.zarr"), "w")
        target = group.create_dataset("a/b/x", shape=shape, chunks=chunks, dtype=dtype, filters=filters or None,
                                      compressor=compressor, fill_value=0, dimension_separator=separator)
        stats = store_arrays([(target, da.from_array(x, chunks=blocks), c)], scheduler="threads", progress=False)
        back = zarr.open_group(os.path.join(d, "s.zarr"), "r")["a/b/x"][...]
    assert back.dtype == x.dtype
    np.testing.assert_array_equal(back, x)
    assert stats.chunks == math.prod(-(-s // k) for s, k in zip(shape, chunks))
    assert stats.logical_bytes == x.nbytes and stats.datasets == ["a/b/x"]


def test_store_arrays_checks_shapes(tmp_path):
    target = zarr.open_group(str(tmp_path / "s.zarr"), "w").create_dataset("x", shape=(10, 3), chunks=(5, 3),
                                                                             dtype="int16")
    with pytest.raises(ValueError, match=r"'x': source shape \(10, 4\) != store shape \(10, 3\)"):
        store_arrays([(target, da.zeros((10, 4), dtype="int16"), make_codec("gzip"))], progress=False)


# --------------------------------------------------------------------------- #
# 5. convert                                                                   #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """rich.nwb (uncompressed), compressed.nwb (gzip 4 + shuffle) and rich.nwb.zarr converted from rich.nwb."""
    d = tmp_path_factory.mktemp("convert-originals")
    write_rich_nwbfile(d / "rich.nwb", seconds=1.0, n_channels=16, seed=2)
    write_rich_nwbfile(d / "compressed.nwb", seconds=1.0, n_channels=16, seed=2, compressed=True)
    convert(d / "rich.nwb", d / "rich.nwb.zarr", min_bytes=MIN, scheduler="threads", progress=False)
    # a store without pickled datasets (no compound references): an ElectricalSeries written by write_nwb_zarr
    x = synthetic_ephys(0.5, 8, seed=9, block_samples=5000)
    write_nwb_zarr(ephys_nwbfile(DaskDataIO(x, codec="zstd", chunks=(2000, 8))), d / "ephys.nwb.zarr",
                   scheduler="threads", progress=False)
    return d


class Inputs:
    def __init__(self, directory: Path):
        self.dir = directory
        self.rich = directory / "rich.nwb"
        self.compressed = directory / "compressed.nwb"
        self.zarr = directory / "rich.nwb.zarr"
        self.ephys_zarr = directory / "ephys.nwb.zarr"
        self.digests = {p.name: digest(p) for p in directory.iterdir()}

    def check(self) -> None:
        for name, value in self.digests.items():
            assert digest(self.dir / name) == value, f"input {name} was modified"


@pytest.fixture
def inputs(originals, tmp_path):
    directory = tmp_path / "in"
    shutil.copytree(originals, directory)
    files = Inputs(directory)
    yield files
    files.check()
    assert partials(directory) == []


def test_the_comparison_sees_a_difference(inputs, tmp_path, monkeypatch):
    """Guards assert_same_nwb: a Zarr copy with one changed value (or reference) fails it."""
    allow_pickle(monkeypatch)
    assert_same_nwb(inputs.rich, inputs.zarr)
    copy = tmp_path / "copy.nwb.zarr"
    shutil.copytree(inputs.zarr, copy)
    spikes = zarr.open(str(copy), "r+")["units/spike_times"]
    spikes[3] = spikes[3] + 1e-3
    with pytest.raises(AssertionError, match="spike_times"):
        assert_same_nwb(inputs.rich, copy)
    shutil.rmtree(copy)
    shutil.copytree(inputs.zarr, copy)
    refs = zarr.open(str(copy), "r+")["acquisition/reference_images/order_of_images"]
    refs[:] = refs[:][::-1]
    with pytest.raises(AssertionError, match="order_of_images"):
        assert_same_nwb(inputs.rich, copy)


def test_hdf5_to_zarr_to_hdf5(inputs, monkeypatch):
    allow_pickle(monkeypatch)  # for reading the Zarr copy here (trials.timeseries is pickled)
    z, back = inputs.dir / "out.nwb.zarr", inputs.dir / "back.nwb"
    ids = object_ids(inputs.rich)
    assert len(ids) > 40

    to_zarr = convert(inputs.rich, z, min_bytes=MIN, scheduler="threads", progress=False)
    assert (to_zarr.direction, to_zarr.verified, to_zarr.output) == ("hdf5->zarr", True, z)
    assert {n.lstrip("/") for n in to_zarr.datasets} == LARGE
    assert to_zarr.stats.logical_bytes == sum(h5_values(inputs.rich, n).nbytes for n in LARGE)
    assert object_ids(z) == ids
    assert_same_nwb(inputs.rich, z)
    root = zarr.open(str(z), "r")
    for name in LARGE:
        np.testing.assert_array_equal(root[name][...], h5_values(inputs.rich, name))
    assert root[ES].compressor is None and root[ES].filters is None  # "source": the input is uncompressed

    to_hdf5 = convert(z, back, min_bytes=MIN, allow_pickle=True, scheduler="threads", progress=False)
    assert (to_hdf5.direction, to_hdf5.verified) == ("zarr->hdf5", True)
    assert {n.lstrip("/") for n in to_hdf5.datasets} == LARGE
    assert object_ids(back) == ids
    assert_same_nwb(inputs.rich, back)
    assert validate(path=str(back)) == []
    with h5py.File(back, "r") as f:
        for name in LARGE:
            np.testing.assert_array_equal(f[name][()], h5_values(inputs.rich, name))
        link = f.get("/processing/ecephys/LFP_power/timestamps", getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == "/" + LFP_TS
        link = f.get("/acquisition/shown_images/indexed_images", getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == "/acquisition/reference_images"
    assert partials(inputs.dir) == []


def test_read_dataset_of_a_converted_store_is_a_dask_array(inputs):
    arr = nwb_dask.read_dataset(inputs.zarr, ES)
    assert isinstance(arr, da.Array)
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), h5_values(inputs.rich, ES))
    camera = nwb_dask.read_dataset(inputs.zarr, "/" + CAMERA)
    np.testing.assert_array_equal(camera.compute(scheduler="threads"), h5_values(inputs.rich, CAMERA))


def test_convert_keeps_the_source_codec_and_chunks(inputs):
    z = inputs.dir / "c.nwb.zarr"
    convert(inputs.compressed, z, min_bytes=MIN, scheduler="threads", progress=False)
    root = zarr.open(str(z), "r")
    with h5py.File(inputs.compressed, "r") as f:
        for name in (ES, LFP, CAMERA):
            assert root[name].chunks == f[name].chunks, name
            assert root[name].compressor == numcodecs.Zlib(level=4), name
            itemsize = f[name].dtype.itemsize
            assert root[name].filters == ([numcodecs.Shuffle(elementsize=itemsize)] if itemsize > 1 else None), name
            np.testing.assert_array_equal(root[name][...], f[name][()])
    back = inputs.dir / "c.nwb"
    convert(z, back, min_bytes=MIN, allow_pickle=True, scheduler="threads", progress=False)
    with h5py.File(back, "r") as f:
        for name in (ES, LFP, CAMERA):
            d = f[name]
            assert (d.chunks, d.compression, d.compression_opts) == (root[name].chunks, "gzip", 4), name
            assert d.shuffle == (d.dtype.itemsize > 1), name
            np.testing.assert_array_equal(d[()], root[name][...])


def test_convert_codec_and_chunks_options(inputs):
    z = inputs.dir / "zstd.nwb.zarr"
    convert(inputs.compressed, z, codec="zstd", chunks=(500,), min_bytes=MIN, scheduler="threads", progress=False)
    root = zarr.open(str(z), "r")
    expected = {ES: (500, 16), LFP: (500, 8), CAMERA: (64, 64, 64), LFP_TS: (500,), POWER: (500,)}
    for name, chunks in expected.items():
        assert root[name].chunks == chunks, name
        assert root[name].compressor == numcodecs.Zstd(level=3) and root[name].filters is None, name
        np.testing.assert_array_equal(root[name][...], h5_values(inputs.compressed, name))

    z2 = inputs.dir / "gzip.nwb.zarr"
    convert(inputs.rich, z2, codec=("gzip", {"level": 6}), chunks={"/" + ES: (1000, 8)}, min_bytes=MIN,
            scheduler="threads", progress=False)
    es = zarr.open(str(z2), "r")[ES]
    assert es.chunks == (1000, 8)
    assert es.compressor == numcodecs.Zlib(level=6) and es.filters == [numcodecs.Shuffle(elementsize=2)]
    np.testing.assert_array_equal(es[...], h5_values(inputs.rich, ES))

    back = inputs.dir / "zstd.nwb"
    convert(inputs.ephys_zarr, back, codec="zstd", chunks=(1000,), min_bytes=MIN, scheduler="threads",
            progress=False)
    with h5py.File(back, "r") as f:
        d = f[ES]
        plist = d.id.get_create_plist()
        assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [32015]  # zstd
        assert d.chunks == (1000, 8)
        np.testing.assert_array_equal(d[()], zarr.open(str(inputs.ephys_zarr), "r")[ES][...])
    assert validate(path=str(back)) == []


def test_convert_errors(inputs, tmp_path):
    existing = inputs.dir / "existing.nwb.zarr"
    existing.mkdir()
    (existing / "keep").write_text("keep")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        convert(inputs.rich, existing, progress=False)
    assert (existing / "keep").read_text() == "keep" and len(list(existing.iterdir())) == 1
    existing_h5 = inputs.dir / "existing.nwb"
    existing_h5.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="exists"):
        convert(inputs.zarr, existing_h5, progress=False)
    assert existing_h5.read_bytes() == b"keep"

    with pytest.raises(ValueError, match="HDF5 files.*repack"):
        convert(inputs.rich, inputs.dir / "copy.nwb", progress=False)
    with pytest.raises(ValueError, match="Zarr stores.*repack"):
        convert(inputs.zarr, inputs.dir / "copy.nwb.zarr", progress=False)
    with pytest.raises(ValueError, match="Zarr stores.*repack"):  # an existing directory is a Zarr store
        convert(inputs.zarr, existing, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="is the input"):
        convert(inputs.rich, inputs.rich, overwrite=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no such file or store"):
        convert(tmp_path / "missing.nwb", tmp_path / "out.nwb.zarr", progress=False)
    with pytest.raises(FileNotFoundError, match="output directory"):
        convert(inputs.rich, tmp_path / "nowhere" / "out.nwb.zarr", progress=False)
    with pytest.raises(CodecError, match="'lz4'"):
        convert(inputs.rich, inputs.dir / "lz4.nwb.zarr", codec="lz4", min_bytes=MIN, scheduler="threads",
                progress=False)
    with pytest.raises(ValueError, match="Pickle.*allow_pickle=True"):  # trials.timeseries of the converted store
        convert(inputs.zarr, inputs.dir / "back.nwb", progress=False)
    assert sorted(p.name for p in inputs.dir.iterdir()) == sorted(list(inputs.digests) + [existing.name,
                                                                                         existing_h5.name])
    assert not (tmp_path / "out.nwb.zarr").exists() and not (tmp_path / "nowhere").exists()


def _fail_after(n: int, target):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise RuntimeError("injected failure")
        return target(*args, **kwargs)

    return failing, calls


def test_convert_failure_to_zarr_leaves_nothing(inputs, monkeypatch):
    failing, calls = _fail_after(2, sink_module._store_block)
    monkeypatch.setattr(sink_module, "_store_block", failing)
    out = inputs.dir / "out.nwb.zarr"
    with pytest.raises(RuntimeError, match="injected failure"):
        convert(inputs.rich, out, min_bytes=MIN, scheduler="threads", progress=False)
    assert len(calls) > 2  # the failure came after chunks had been written
    assert not out.exists() and partials(inputs.dir) == []

    # with overwrite=True, a failed conversion keeps the existing output
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError, match="injected failure"):
        convert(inputs.rich, out, overwrite=True, min_bytes=MIN, scheduler="threads", progress=False)
    assert [p.name for p in out.iterdir()] == ["old"] and partials(inputs.dir) == []


def test_convert_failure_to_hdf5_leaves_nothing(inputs, monkeypatch):
    import nwb_dask.nwb.io

    failing, _ = _fail_after(0, nwb_dask.nwb.io.write_arrays)
    monkeypatch.setattr(nwb_dask.nwb.io, "write_arrays", failing)
    out = inputs.dir / "out.nwb"
    with pytest.raises(RuntimeError, match="injected failure"):
        convert(inputs.ephys_zarr, out, min_bytes=MIN, scheduler="threads", progress=False)
    assert not out.exists() and partials(inputs.dir) == []


@pytest.mark.parametrize("direction", ["to_zarr", "to_hdf5"])
def test_convert_verification_failure_leaves_nothing(inputs, monkeypatch, direction):
    monkeypatch.setattr(convert_module, "compare_conversion", lambda *a, **k: ["/x: values differ"])
    src, out = ((inputs.rich, inputs.dir / "out.nwb.zarr") if direction == "to_zarr"
                else (inputs.ephys_zarr, inputs.dir / "out.nwb"))
    with pytest.raises(RepackError, match="(?s)verification failed.*/x: values differ"):
        convert(src, out, min_bytes=MIN, scheduler="threads", progress=False)
    assert not out.exists() and partials(inputs.dir) == []


def test_convert_overwrite_replaces(inputs):
    out = inputs.dir / "out.nwb.zarr"
    out.mkdir()
    (out / "stale").write_text("stale")
    result = convert(inputs.rich, out, overwrite=True, min_bytes=MIN, scheduler="threads", progress=False)
    assert result.verified and not (out / "stale").exists()
    np.testing.assert_array_equal(zarr.open(str(out), "r")[ES][...], h5_values(inputs.rich, ES))
    assert partials(inputs.dir) == []


# --------------------------------------------------------------------------- #
# 6. write_nwb_zarr: atomic, overwrite                                         #
# --------------------------------------------------------------------------- #
def test_write_nwb_zarr_failure_leaves_nothing(tmp_path, monkeypatch):
    failing, calls = _fail_after(1, sink_module._store_block)
    monkeypatch.setattr(sink_module, "_store_block", failing)
    x = da.from_array(ints((4_000, 4), seed=8), chunks=(500, 4))
    path = tmp_path / "w.nwb.zarr"
    with pytest.raises(RuntimeError, match="injected failure"):
        write_nwb_zarr(ts_nwbfile(DaskDataIO(x, chunks=(500, 4))), path, scheduler="threads", progress=False)
    assert len(calls) > 1
    assert list(tmp_path.iterdir()) == []


def test_write_nwb_zarr_on_the_processes_scheduler(tmp_path):
    x = ints((20_000, 4), seed=14)
    path = tmp_path / "p.nwb.zarr"
    stats = write_nwb_zarr(ts_nwbfile(DaskDataIO(da.from_array(x, chunks=(5000, 4)), chunks=(1000, 4))), path,
                           scheduler="processes", progress=False)
    assert stats.chunks == 20
    np.testing.assert_array_equal(zarr.open(str(path), "r")["acquisition/ts/data"][:], x)


def test_write_nwb_zarr_overwrite(tmp_path, monkeypatch):
    path = tmp_path / "w.nwb.zarr"
    old = ints((4_000, 4), seed=10)
    write_ts(path, da.from_array(old, chunks=(500, 4)), chunks=(250, 4))
    assert len(chunk_files(path, "acquisition/ts/data")) == 16
    before = digest(path)

    new = ints((1_000, 4), seed=11)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        write_nwb_zarr(ts_nwbfile(DaskDataIO(da.from_array(new), chunks=(500, 4))), path, progress=False)
    assert digest(path) == before

    failing, _ = _fail_after(0, sink_module._store_block)
    with monkeypatch.context() as mp:
        mp.setattr(sink_module, "_store_block", failing)
        with pytest.raises(RuntimeError, match="injected failure"):
            write_nwb_zarr(ts_nwbfile(DaskDataIO(da.from_array(new), chunks=(500, 4))), path, overwrite=True,
                           scheduler="threads", progress=False)
    assert digest(path) == before and partials(tmp_path) == []

    write_nwb_zarr(ts_nwbfile(DaskDataIO(da.from_array(new), chunks=(500, 4))), path, overwrite=True,
                   scheduler="threads", progress=False)
    arr = zarr.open(str(path), "r")["acquisition/ts/data"]
    np.testing.assert_array_equal(arr[:], new)
    assert chunk_files(path, "acquisition/ts/data") == ["0.0", "1.0"]  # no stale chunks of the old store
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# --------------------------------------------------------------------------- #
# failures on the threaded scheduler and on a cluster                          #
# --------------------------------------------------------------------------- #
def test_threaded_failure_leaves_no_partial_store(tmp_path, monkeypatch):
    """A task failing while another is storing its chunks: that one must not re-create the deleted temp store.

    Fails with zarr.py as of 0a135ad: dask.compute on the threaded scheduler
    raises as soon as one task fails, while dask's shared thread pool keeps
    running the _store_block already started; write_nwb_zarr has deleted the
    partial store by the time that task writes its chunks, which re-creates
    ``.w.nwb.zarr.<tag>.partial/acquisition/ts/data/``.
    """
    import threading

    original = sink_module._store_block
    lock, calls, stored = threading.Lock(), [], threading.Event()

    def slow_then_failing(*args, **kwargs):
        with lock:
            calls.append(1)
            n = len(calls)
        if n == 1:  # still storing when the other task fails
            time.sleep(1.0)
            try:
                return original(*args, **kwargs)
            finally:
                stored.set()
        if n == 2:
            time.sleep(0.2)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(sink_module, "_store_block", slow_then_failing)
    x = da.from_array(ints((4_000, 4), seed=13), chunks=(1000, 4))
    with pytest.raises(RuntimeError, match="injected failure"):
        write_nwb_zarr(ts_nwbfile(DaskDataIO(x, chunks=(1000, 4))), tmp_path / "w.nwb.zarr",
                       scheduler="threads", progress=False)
    assert stored.wait(10)
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []


def _idle(client, timeout: float = 20.0) -> None:
    """Wait until no task is processing on the scheduler or executing on a worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = sum(len(v) for v in client.processing().values())
        busy += sum(client.run(lambda dask_worker: len(dask_worker.state.executing)).values())
        if not busy:
            return
        time.sleep(0.1)
    raise AssertionError("the cluster is still busy")


def test_distributed_failure_leaves_no_partial_store(client, tmp_path):
    """A block failing on a worker: no output, and the other blocks do not re-create the deleted temp store.

    Fails with zarr.py as of 0a135ad: _compute_with_progress neither cancels
    the futures nor waits for them when gather raises; write_nwb_zarr removes
    the partial store while the remaining _store_block tasks keep running on
    the workers, and their chunk writes re-create
    ``.w.nwb.zarr.<tag>.partial/acquisition/ts/data/``.
    """
    def slow_or_failing(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 0:
            raise RuntimeError("block 0 failed")
        time.sleep(0.2)
        return block

    x = da.ones((8_000, 4), dtype="int16", chunks=(500, 4)).map_blocks(slow_or_failing, dtype="int16")
    path = tmp_path / "w.nwb.zarr"
    with pytest.raises(RuntimeError, match="block 0 failed"):
        write_nwb_zarr(ts_nwbfile(DaskDataIO(x, chunks=(500, 4))), path, scheduler=client, progress=False)
    _idle(client)
    time.sleep(0.2)
    assert list(tmp_path.iterdir()) == []


def test_distributed_progress_bar_with_a_client_that_is_not_the_default(client, tmp_path):
    """progress=True (the default) with a Client passed as scheduler= (not the default client).

    Fails with zarr.py as of 0a135ad: ``distributed.progress(futures)`` looks
    up the *default* client and raises ``ValueError: No clients found``.
    """
    x = ints((2_000, 4), seed=12)
    path = tmp_path / "p.nwb.zarr"
    stats = write_nwb_zarr(ts_nwbfile(DaskDataIO(da.from_array(x, chunks=(500, 4)), chunks=(500, 4))), path,
                           scheduler=client)
    assert stats.chunks == 4
    np.testing.assert_array_equal(zarr.open(str(path), "r")["acquisition/ts/data"][:], x)


# --------------------------------------------------------------------------- #
# an object store: s3:// through fsspec, against a local moto server           #
# --------------------------------------------------------------------------- #
def test_write_to_s3_url_with_credentials(tmp_path):
    """Workers store chunks straight into S3 (moto on loopback); hdmf-zarr reads it back with the same options."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    import zarr as zarr_pkg
    from hdmf_zarr.nwb import NWBZarrIO

    from nwb_dask import DaskDataIO
    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys
    from nwb_dask.zarr.io import write_nwb_zarr

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                     region_name="us-east-1").create_bucket(Bucket="nwbzarr")
        options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        url = "s3://nwbzarr/session.nwb.zarr"
        source = synthetic_ephys(seconds=0.5, n_channels=16, seed=5)
        stats = write_nwb_zarr(ephys_nwbfile(DaskDataIO(source, chunks=(4096, 16))), url,
                               storage_options=options, progress=False)
        assert stats.logical_bytes == source.nbytes and 0 < stats.stored_bytes < source.nbytes
        store = zarr_pkg.storage.FSStore(url, **options)
        assert ".zmetadata" in store  # consolidated with the credentials
        z = zarr_pkg.open(store, mode="r")["acquisition/ElectricalSeries/data"]
        assert z.chunks == (4096, 16)
        np.testing.assert_array_equal(z[:], source.compute())
        with NWBZarrIO(url, "r", storage_options=options) as io:
            np.testing.assert_array_equal(io.read().acquisition["ElectricalSeries"].data[:], source.compute())
        with pytest.raises(FileExistsError, match=re.escape(url) + " exists; pass overwrite=True"):
            write_nwb_zarr(ephys_nwbfile(DaskDataIO(source)), url, storage_options=options, progress=False)
        other = synthetic_ephys(seconds=0.25, n_channels=16, seed=6)
        write_nwb_zarr(ephys_nwbfile(DaskDataIO(other)), url, storage_options=options, overwrite=True,
                       progress=False)
        z = zarr_pkg.open(zarr_pkg.storage.FSStore(url, **options), mode="r")["acquisition/ElectricalSeries/data"]
        np.testing.assert_array_equal(z[:], other.compute())
    finally:
        server.stop()

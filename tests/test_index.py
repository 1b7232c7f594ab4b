"""LINDI / kerchunk indexes: write_index / nwb-dask index, and read_nwb / read_dataset through an index.

Every value is compared element by element with plain h5py on the original
file.  Remote cases use the loopback server of tests/http_server.py (request
counts per path, fault injection, ETag/Last-Modified).  kerchunk itself is not
installable next to nwb_dask (kerchunk >= 0.2.7 needs zarr 3, nwb_dask pins
zarr 2), so the kerchunk file is made by hand from a LINDI index minus LINDI's
extras, which is what kerchunk's SingleHdf5ToZarr writes for these datasets.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nwb_dask
import nwb_dask.testing
from nwb_dask.nwb.index import IndexStore, StaleIndexError, load_index
from nwb_dask.tools.index import default_index_path, write_index

lindi = pytest.importorskip("lindi")
hdf5plugin = pytest.importorskip("hdf5plugin")

FAST = {"retries": 40, "backoff": 0.0005, "max_backoff": 0.005}


def _compact(f: h5py.File, name: str, data: np.ndarray) -> None:
    """A dataset with HDF5's compact layout (its bytes inside the object header)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(data.shape)
    dsid = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=dcpl)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


def _layouts(path: Path) -> dict[str, np.ndarray]:
    """An HDF5 file with one dataset per layout the index must handle; returns name -> values."""
    rng = np.random.default_rng(7)
    values = {
        "gzip_shuffle": (rng.normal(size=(3000, 7)) * 100).astype("int16"),
        "irregular": rng.normal(size=(1003, 13)).astype("float32"),
        "contiguous": np.arange(300_000, dtype="int32"),
        "big_contiguous": rng.random(5_500_000).astype("float32"),  # 22 MB: LINDI splits it in 20 MB pieces
        "compact": np.arange(50, dtype="float64"),
        "scalar": np.float64(2.5),
        "strings": np.array(["a", "bb", "ccc", "dddd"], dtype=object),
        "fixed_strings": np.array([b"x", b"yy", b"zzz"], dtype="S3"),
        "empty": np.zeros((0, 4), dtype="float32"),
        "one": np.array([42], dtype="uint8"),
        "sparse": np.full((4000,), -7, dtype="int32"),
        "blosc": np.arange(20_000, dtype="int64").reshape(200, 100) % 97,
        "zstd": np.arange(30_000, dtype="uint16") % 1013,
        "fletcher": np.arange(9000, dtype="float64"),
    }
    values["sparse"][1000:1500] = np.arange(500)
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip_shuffle", data=values["gzip_shuffle"], chunks=(256, 7), compression="gzip", shuffle=True)
        f.create_dataset("irregular", data=values["irregular"], chunks=(100, 5), compression="gzip")
        f.create_dataset("contiguous", data=values["contiguous"])
        f.create_dataset("big_contiguous", data=values["big_contiguous"])
        _compact(f, "compact", values["compact"])
        f["scalar"] = values["scalar"]
        f.create_dataset("strings", data=values["strings"], dtype=h5py.string_dtype())
        f["fixed_strings"] = values["fixed_strings"]
        f.create_dataset("empty", data=values["empty"], chunks=(1, 4), maxshape=(None, 4))
        f["one"] = values["one"]
        sparse = f.create_dataset("sparse", shape=(4000,), dtype="int32", chunks=(500,), fillvalue=-7, compression="gzip")
        sparse[1000:1500] = np.arange(500)  # the other chunks are never written: the fill value
        f.create_dataset("blosc", data=values["blosc"], chunks=(50, 100), **hdf5plugin.Blosc(cname="lz4", clevel=5))
        f.create_dataset("zstd", data=values["zstd"], chunks=(4096,), **hdf5plugin.Zstd(clevel=3))
        f.create_dataset("fletcher", data=values["fletcher"], chunks=(1000,), fletcher32=True)
        f.create_group("group/sub").create_dataset("deep", data=values["gzip_shuffle"][:10], compression="gzip")
    values["group/sub/deep"] = values["gzip_shuffle"][:10]
    return values


def _same(got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype == object or got.dtype == object:
        norm = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])
        assert got.shape == want.shape and (norm(got) == norm(want)).all(), (got, want)
        return
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- #
# Round trips                                                                  #
# --------------------------------------------------------------------------- #
def test_every_layout_reads_back_through_the_index(tmp_path):
    values = _layouts(tmp_path / "layouts.h5")
    before = _digest(tmp_path / "layouts.h5")
    result = write_index(tmp_path / "layouts.h5")
    index = tmp_path / "layouts.h5.lindi.json"
    assert result.output == str(index) and index.is_file()
    assert _digest(tmp_path / "layouts.h5") == before  # the input is never modified
    rfs = json.loads(index.read_text())
    chunk_urls = {v[0] for v in rfs["refs"].values() if isinstance(v, list)}
    chunk_urls |= {rfs.get("templates", {}).get(u.strip("{}"), u) for u in chunk_urls}
    assert str(tmp_path / "layouts.h5") in chunk_urls  # the absolute path: the index can be moved
    moved = tmp_path / "elsewhere" / "moved.lindi.json"
    moved.parent.mkdir()
    index.rename(moved)

    with h5py.File(tmp_path / "layouts.h5", "r") as f:
        for name in values:
            want = f[name][()]
            if f[name].shape == ():
                with pytest.raises(TypeError, match="scalar"):
                    nwb_dask.read_dataset(moved, name)
                continue
            got = nwb_dask.read_dataset(moved, name)
            assert isinstance(got, da.Array), name
            _same(got.compute(), want)
            if got.size:  # slices read only what they touch, fill values included
                _same(got[1:][::3].compute(), want[1:][::3])
        # plain lindi reads the same index (but for zstd: lindi 0.4.6 zero-pads every numeric chunk shorter
        # than a whole chunk, compressed ones too, which zstd refuses: "Src size is incorrect")
        lf = lindi.LindiH5pyFile.from_lindi_file(str(moved))
        for name in values:
            if name != "zstd":
                _same(lf[name][()], f[name][()])


def test_chunk_references_are_read_in_parallel_coalesced_requests(tmp_path, server):
    values = _layouts(tmp_path / "layouts.h5")
    write_index(server.url("layouts.h5"), tmp_path / "remote.lindi.json", remote_options=FAST)
    x = nwb_dask.read_dataset(tmp_path / "remote.lindi.json", "gzip_shuffle", block_bytes=1 << 30)
    server.reset_counts()
    _same(x.compute(scheduler="sync"), values["gzip_shuffle"])
    # 12 chunks of ~3 KB, one block: one HEAD (the staleness check) and one coalesced GET
    assert server.count("layouts.h5") == 2, server.requests
    assert [m for m, _ in server.requests] == ["HEAD", "GET"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    chunk_frac=st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
    dtype=st.sampled_from(["int8", "uint16", "int32", ">i4", "float32", "float64", "int64"]),
    codec=st.sampled_from(["none", "gzip", "gzip+shuffle", "shuffle", "zstd", "blosc", "fletcher32"]),
    fill=st.booleans(),
)
def test_any_shape_chunks_dtype_and_codec(tmp_path_factory, shape, chunk_frac, dtype, codec, fill):
    tmp = tmp_path_factory.mktemp("h")
    shape = tuple(shape)
    chunks = tuple(max(1, int(np.ceil(max(s, 1) * f))) for s, f in zip(shape, chunk_frac))
    rng = np.random.default_rng(len(shape) * 100 + sum(shape))
    data = (rng.normal(size=shape) * 50).astype(dtype)
    kwargs = {"none": {}, "gzip": {"compression": "gzip"}, "gzip+shuffle": {"compression": "gzip", "shuffle": True},
              "shuffle": {"shuffle": True}, "zstd": dict(hdf5plugin.Zstd()), "blosc": dict(hdf5plugin.Blosc()),
              "fletcher32": {"fletcher32": True}}[codec]
    with h5py.File(tmp / "x.h5", "w") as f:
        d = f.create_dataset("x", shape=shape, dtype=dtype, chunks=chunks, maxshape=(None,) * len(shape),
                             fillvalue=np.array(3, dtype), **kwargs)
        if not fill and data.size:
            d[...] = data
        elif data.size:  # only the first half along axis 0: the rest is the fill value
            half = shape[0] // 2
            d[:half] = data[:half]
            data[half:] = 3
    with h5py.File(tmp / "x.h5", "r") as f:
        want = f["x"][()]
        masks = []
        if f["x"].chunks and data.size and codec != "none":
            f["x"].id.chunk_iter(lambda info: masks.append(info.filter_mask))
    np.testing.assert_array_equal(want, data)
    if any(masks):  # HDF5 skipped a filter for a chunk it did not shrink: an index cannot say so
        with pytest.raises(ValueError, match=r"x.h5: dataset /x: the chunk at .* filter mask"):
            write_index(tmp / "x.h5")
        assert not (tmp / "x.h5.lindi.json").exists()
        return
    write_index(tmp / "x.h5")
    got = nwb_dask.read_dataset(tmp / "x.h5.lindi.json", "x").compute()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- #
# NWB files: one request to open, chunks in parallel, faults, processes        #
# --------------------------------------------------------------------------- #
def _nwb(path: Path, seconds: float = 1.0) -> np.ndarray:
    data = nwb_dask.testing.synthetic_ephys(seconds=seconds, seed=3)
    values = data.compute()
    nwbfile = nwb_dask.testing.ephys_nwbfile(nwb_dask.DaskDataIO(data, codec="gzip"))
    nwb_dask.write_nwb(nwbfile, path, progress=False, scheduler="sync")
    return values


def test_open_through_a_served_index_is_one_request(tmp_path, server):
    values = _nwb(tmp_path / "rec.nwb")
    server.validators = ("etag", "last-modified")
    write_index(server.url("rec.nwb"), tmp_path / "rec.nwb.lindi.json", remote_options=FAST)
    server.reset_counts()
    nwbfile = nwb_dask.read_nwb(server.url("rec.nwb.lindi.json"), min_bytes=2**20, remote_options=FAST)
    assert server.count("rec.nwb.lindi.json") == 1 and server.count("rec.nwb") == 0, server.paths
    series = nwbfile.acquisition["ElectricalSeries"]
    assert isinstance(series.data, da.Array)
    assert series.rate == 30000.0 and len(series.electrodes.table) == values.shape[1]
    assert list(series.electrodes.table["group_name"][:]) == ["shank0"] * values.shape[1]  # references resolved
    window = series.data[1000:31000].compute()
    np.testing.assert_array_equal(window, values[1000:31000])
    assert server.count("rec.nwb.lindi.json") == 1 and server.count("rec.nwb") >= 2  # HEAD + chunk GETs
    np.testing.assert_array_equal(series.data.compute(scheduler="processes"), values)  # the store pickles

    # the HDF5 URL with index= gives the same file
    nwbfile = nwb_dask.read_nwb(server.url("rec.nwb"), index=server.url("rec.nwb.lindi.json"), min_bytes=2**20)
    data = nwbfile.acquisition["ElectricalSeries"].data
    nwbfile.read_io.close()  # the dask arrays stay usable
    np.testing.assert_array_equal(data.compute(), values)


def test_an_index_of_a_local_copy_reads_the_url(tmp_path, server):
    """index= with a different file: the references are read from it (only the size is checked then)."""
    values = _nwb(tmp_path / "rec.nwb", seconds=1.0)
    local_index = tmp_path / "local" / "rec.nwb.lindi.json"
    local_index.parent.mkdir()
    write_index(tmp_path / "rec.nwb", local_index)
    server.reset_counts()
    x = nwb_dask.read_dataset(server.url("rec.nwb"), "acquisition/ElectricalSeries/data", index=local_index)
    np.testing.assert_array_equal(x.compute(), values)
    assert server.count("rec.nwb") >= 2


def test_chunk_reads_survive_faults(tmp_path, server):
    values = _nwb(tmp_path / "rec.nwb")
    write_index(server.url("rec.nwb"), tmp_path / "rec.nwb.lindi.json", remote_options=FAST)
    server.set_faults(0.25)  # 5xx, resets, truncated bodies, wrong Content-Range
    nwbfile = nwb_dask.read_nwb(server.url("rec.nwb.lindi.json"), min_bytes=2**20,
                                remote_options={**FAST, "max_gap": 0})
    data = nwbfile.acquisition["ElectricalSeries"].data
    for _ in range(2):
        np.testing.assert_array_equal(data.compute(), values)
    assert sum(server.faulted.values()) > 0 and {"error", "reset", "truncate"} <= set(server.faulted)


def test_an_unreachable_chunk_is_an_error_naming_the_url(tmp_path, server):
    _nwb(tmp_path / "rec.nwb", seconds=1.0)
    write_index(server.url("rec.nwb"), tmp_path / "rec.nwb.lindi.json")
    x = nwb_dask.read_dataset(tmp_path / "rec.nwb.lindi.json", "acquisition/ElectricalSeries/data",
                              remote_options={"retries": 2, "backoff": 0.001})
    (tmp_path / "rec.nwb").unlink()
    with pytest.raises(FileNotFoundError, match="rec.nwb"):
        x.compute()


# --------------------------------------------------------------------------- #
# Staleness                                                                    #
# --------------------------------------------------------------------------- #
def _change_in_place(path: Path) -> None:
    """Overwrite the middle of the file with other bytes, keeping its size."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 20_000)
        f.write(b"\xff" * 10_000)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.mark.parametrize("validators", [("etag", "last-modified"), ("last-modified",), ()])
def test_a_changed_remote_file_is_detected(tmp_path, server, validators):
    _nwb(tmp_path / "rec.nwb")
    server.validators = validators
    index = tmp_path / "rec.nwb.lindi.json"
    write_index(server.url("rec.nwb"), index, remote_options=FAST)
    record = json.loads(index.read_text())["generationMetadata"]["nwb_dask"]["sources"][server.url("rec.nwb")]
    assert record["size"] == os.path.getsize(tmp_path / "rec.nwb")
    assert record.get("validator", "").split(":")[0] == (validators[0] if validators else "")
    name = "acquisition/ElectricalSeries/data"
    nwb_dask.read_dataset(index, name).compute()  # fresh: fine

    if validators:  # same size, other bytes: the ETag or Last-Modified tells
        _change_in_place(tmp_path / "rec.nwb")
    else:  # no validators: the size tells
        with open(tmp_path / "rec.nwb", "ab") as f:
            f.write(b"\0" * 100)
    nwbfile = nwb_dask.read_nwb(index, min_bytes=2**20)  # the open reads only the index
    with pytest.raises(StaleIndexError, match=rf"index {index} is stale: {server.url('rec.nwb')} changed.*"
                                              + ("validator" if validators else "size")):
        nwbfile.acquisition["ElectricalSeries"].data.compute()
    with pytest.raises(StaleIndexError, match="nwb-dask index"):
        nwb_dask.read_dataset(index, name).compute()


def test_a_changed_local_file_is_detected(tmp_path):
    _nwb(tmp_path / "rec.nwb", seconds=1.0)
    write_index(tmp_path / "rec.nwb")
    index = tmp_path / "rec.nwb.lindi.json"
    _change_in_place(tmp_path / "rec.nwb")
    with pytest.raises(StaleIndexError, match=rf"{index}.*{tmp_path / 'rec.nwb'} changed.*mtime"):
        nwb_dask.read_dataset(index, "acquisition/ElectricalSeries/data").compute()


def test_a_foreign_index_is_checked_against_the_size(tmp_path):
    """An index without nwb_dask's record (another tool's) still cannot read past a shrunken file."""
    _nwb(tmp_path / "rec.nwb", seconds=1.0)
    write_index(tmp_path / "rec.nwb")
    rfs = json.loads((tmp_path / "rec.nwb.lindi.json").read_text())
    del rfs["generationMetadata"]
    (tmp_path / "foreign.lindi.json").write_text(json.dumps(rfs))
    with open(tmp_path / "rec.nwb", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "rec.nwb") // 2)
    with pytest.raises(StaleIndexError, match=r"foreign.lindi.json does not match .*rec.nwb: it references bytes up to"):
        nwb_dask.read_dataset(tmp_path / "foreign.lindi.json", "acquisition/ElectricalSeries/data").compute()


# --------------------------------------------------------------------------- #
# kerchunk                                                                     #
# --------------------------------------------------------------------------- #
LINDI_EXTRAS = ("_REFERENCE", "_SCALAR", "_SOFT_LINK", "_EXTERNAL_ARRAY_LINK", "_COMPOUND_DTYPE")


def _kerchunk_from_lindi(rfs: dict) -> dict:
    """A LINDI rfs as kerchunk writes one: .zattrs/.zarray as JSON strings, no LINDI attributes, no metadata."""
    refs = {}
    for key, val in rfs["refs"].items():
        if isinstance(val, dict):
            if key.endswith(".zattrs"):
                val = {k: v for k, v in val.items() if k not in LINDI_EXTRAS and "_REFERENCE" not in json.dumps(v)}
            val = json.dumps(val)
        refs[key] = val
    return {"version": 1, "refs": refs, **({"templates": rfs["templates"]} if "templates" in rfs else {})}


def test_a_kerchunk_file_reads_datasets_and_names_what_pynwb_misses(tmp_path):
    values = _nwb(tmp_path / "rec.nwb", seconds=1.0)
    write_index(tmp_path / "rec.nwb")
    kerchunk = tmp_path / "rec.kerchunk.json"
    kerchunk.write_text(json.dumps(_kerchunk_from_lindi(json.loads((tmp_path / "rec.nwb.lindi.json").read_text()))))
    x = nwb_dask.read_dataset(kerchunk, "acquisition/ElectricalSeries/data")
    np.testing.assert_array_equal(x.compute(), values)
    with pytest.raises(ValueError, match=rf"{kerchunk}: pynwb cannot read .*kerchunk.*LINDI's extras"):
        nwb_dask.read_nwb(kerchunk)


# --------------------------------------------------------------------------- #
# Errors                                                                       #
# --------------------------------------------------------------------------- #
def test_reader_errors_name_the_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.lindi.json"):
        nwb_dask.read_nwb(tmp_path / "missing.lindi.json")
    (tmp_path / "bad.lindi.json").write_text("<html>no</html>")
    with pytest.raises(ValueError, match=r"bad.lindi.json is not an index: not JSON"):
        nwb_dask.read_nwb(tmp_path / "bad.lindi.json")
    (tmp_path / "norefs.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match=r"norefs.json is not an index: no 'refs'"):
        nwb_dask.read_dataset(tmp_path / "norefs.json", "x")
    (tmp_path / "v2.json").write_text('{"version": 2, "refs": {}}')
    with pytest.raises(ValueError, match=r"v2.json: reference file version 2 is not supported"):
        nwb_dask.read_dataset(tmp_path / "v2.json", "x")
    (tmp_path / "whole.json").write_text('{"refs": {"x/0": ["/some/file"]}}')
    with pytest.raises(ValueError, match=r"whole.json: reference 'x/0' .*whole-file"):
        nwb_dask.read_dataset(tmp_path / "whole.json", "x")
    (tmp_path / "rel.json").write_text('{"refs": {"x/0": ["./blobs/a", 0, 4]}}')
    with pytest.raises(ValueError, match=r"rel.json: reference 'x/0' is relative .*not supported"):
        nwb_dask.read_dataset(tmp_path / "rel.json", "x")
    (tmp_path / "tmpl.json").write_text('{"refs": {"x/0": ["{{u9}}", 0, 4]}}')
    with pytest.raises(ValueError, match=r"tmpl.json: reference 'x/0' uses an undefined template"):
        nwb_dask.read_dataset(tmp_path / "tmpl.json", "x")
    _layouts(tmp_path / "layouts.h5")
    write_index(tmp_path / "layouts.h5")
    with pytest.raises(KeyError, match=r"layouts.h5.lindi.json has no dataset 'nope'"):
        nwb_dask.read_dataset(tmp_path / "layouts.h5.lindi.json", "nope")
    with pytest.raises(PermissionError, match="read-only"):
        IndexStore(load_index(tmp_path / "layouts.h5.lindi.json"))["x"] = b"1"


def test_writer_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nwb"):
        write_index(tmp_path / "missing.nwb")
    (tmp_path / "page.nwb").write_text("<html>login</html>")
    with pytest.raises(OSError, match="page.nwb"):
        write_index(tmp_path / "page.nwb")
    _layouts(tmp_path / "layouts.h5")
    with pytest.raises(ValueError, match=r"out.json: the name must end in .lindi.json"):
        write_index(tmp_path / "layouts.h5", tmp_path / "out.json")
    write_index(tmp_path / "layouts.h5")
    first = (tmp_path / "layouts.h5.lindi.json").read_bytes()
    with pytest.raises(FileExistsError, match="layouts.h5.lindi.json"):
        write_index(tmp_path / "layouts.h5")
    assert (tmp_path / "layouts.h5.lindi.json").read_bytes() == first
    write_index(tmp_path / "layouts.h5", overwrite=True)
    with h5py.File(tmp_path / "lz4.h5", "w") as f:  # a filter lindi cannot describe
        f.create_dataset("x", data=np.arange(1000), chunks=(100,), **hdf5plugin.LZ4())
    with pytest.raises(ValueError, match=r"lz4.h5: lindi cannot index this file: .*lz4"):
        write_index(tmp_path / "lz4.h5")
    assert not (tmp_path / "lz4.h5.lindi.json").exists()
    noise = np.random.default_rng(0).integers(-128, 128, (28, 36), dtype="int8")
    with h5py.File(tmp_path / "masked.h5", "w") as f:  # blosc does not shrink noise: HDF5 stores it unfiltered
        f.create_dataset("x", data=noise, chunks=(28, 36), **hdf5plugin.Blosc())
        masks = []
        f["x"].id.chunk_iter(lambda info: masks.append(info.filter_mask))
    assert masks == [1]
    with pytest.raises(ValueError, match=r"masked.h5: dataset /x: the chunk at \(0, 0\) was stored with HDF5 filter "
                                         r"mask 0x1 .* repack"):
        write_index(tmp_path / "masked.h5")
    assert not (tmp_path / "masked.h5.lindi.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_default_index_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_index_path("data/x.nwb") == tmp_path / "data" / "x.nwb.lindi.json"
    assert default_index_path("https://host/a/b%20c.nwb?x=1") == tmp_path / "b c.nwb.lindi.json"


def test_without_lindi_the_error_names_the_extra(tmp_path, monkeypatch):
    _layouts(tmp_path / "layouts.h5")
    monkeypatch.setitem(sys.modules, "lindi", None)  # import lindi raises ImportError
    with pytest.raises(ImportError, match=r'pip install "nwb-dask\[index\]"'):
        write_index(tmp_path / "layouts.h5")
    (tmp_path / "x.lindi.json").write_text('{"refs": {}}')
    with pytest.raises(ImportError, match=r'pip install "nwb-dask\[index\]"'):
        nwb_dask.read_nwb(tmp_path / "x.lindi.json")


# --------------------------------------------------------------------------- #
# The command line                                                             #
# --------------------------------------------------------------------------- #
_PLAIN_LINDI = textwrap.dedent(
    """
    import sys
    import lindi
    import numpy as np
    from pynwb import NWBHDF5IO

    f = lindi.LindiH5pyFile.from_lindi_file(sys.argv[1])
    with NWBHDF5IO(file=f, mode="r") as io:
        nwbfile = io.read()
        series = nwbfile.acquisition["ElectricalSeries"]
        np.save(sys.argv[2], series.data[()])
        assert len(series.electrodes.table) == series.data.shape[1]
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    """
)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nwb_dask.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_index_writes_what_plain_lindi_and_pynwb_read(tmp_path, server):
    values = _nwb(tmp_path / "rec.nwb")
    before = _digest(tmp_path / "rec.nwb")
    out = _cli("index", tmp_path / "rec.nwb", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["output"] == str(tmp_path / "rec.nwb.lindi.json") and report["chunk_refs"] > 0
    assert _digest(tmp_path / "rec.nwb") == before
    proc = subprocess.run([sys.executable, "-c", _PLAIN_LINDI, str(tmp_path / "rec.nwb.lindi.json"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), values)

    again = _cli("index", tmp_path / "rec.nwb")
    assert again.returncode == 2 and "rec.nwb.lindi.json" in again.stderr and "exists" in again.stderr
    assert again.stderr.count("\n") == 1  # one line, no traceback
    assert _cli("index", tmp_path / "rec.nwb", "--overwrite").returncode == 0

    # a URL: the default output is in the current directory, the references point at the URL
    work = tmp_path / "work"
    work.mkdir()
    out = _cli("index", server.url("rec.nwb"), "--retries", "3", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and (work / "rec.nwb.lindi.json").is_file()
    rfs = json.loads((work / "rec.nwb.lindi.json").read_text())
    assert server.url("rec.nwb") in json.dumps(rfs["refs"]) + json.dumps(rfs.get("templates", {}))
    proc = subprocess.run([sys.executable, "-c", _PLAIN_LINDI, str(work / "rec.nwb.lindi.json"),
                           str(tmp_path / "out2.npy")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out2.npy"), values)


def test_cli_index_without_lindi_names_the_extra(tmp_path):
    _layouts(tmp_path / "layouts.h5")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "lindi.py").write_text("raise ImportError('No module named lindi (hidden by the test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "nwb_dask.cli", "index", str(tmp_path / "layouts.h5")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    assert 'pip install "nwb-dask[index]"' in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "layouts.h5.lindi.json").exists()


def test_cli_index_bad_input_is_one_line(tmp_path):
    for args, words in [
        (["index", tmp_path / "missing.nwb"], "missing.nwb"),
        (["index", tmp_path], "directory"),
        (["index", tmp_path / "x.nwb", "--timeout", "3"], "apply to URLs"),
    ]:
        out = _cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr, out.stderr


# --------------------------------------------------------------------------- #
# What indexing a URL costs                                                    #
# --------------------------------------------------------------------------- #
def test_indexing_a_url_reads_it_through_nwb_dask(tmp_path, server):
    """write_index(url) reads the HDF5 metadata through nwb_dask's block cache: few requests, none by lindi."""
    _layouts(tmp_path / "layouts.h5")
    server.reset_counts()
    t0 = time.perf_counter()
    write_index(server.url("layouts.h5"), tmp_path / "remote.lindi.json")
    seconds = time.perf_counter() - t0
    ours = server.count("layouts.h5")
    local = tmp_path / "local.lindi.json"
    write_index(tmp_path / "layouts.h5", local)
    a = json.loads((tmp_path / "remote.lindi.json").read_text())["refs"]
    b = json.loads(local.read_text())["refs"]
    assert a.keys() == b.keys()
    for key in a:  # the same index, only the file named differently
        if isinstance(a[key], list):
            assert a[key][1:] == b[key][1:], key
        else:
            assert a[key] == b[key], key
    # the open (size, validator, first block), the metadata prefetch's rounds, the HEAD after
    assert ours <= 8, (ours, seconds, server.requests)


def test_indexing_a_many_object_url_costs_fewer_requests_than_lindis_reader(tmp_path, server):
    """Many objects scattered through a file: lindi's LindiRemfile pays a request per miss, nwb_dask prefetches."""
    from lindi.LindiH5ZarrStore.LindiH5ZarrStore import LindiH5ZarrStore
    from lindi.LindiH5ZarrStore.LindiH5ZarrStoreOpts import LindiH5ZarrStoreOpts

    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "objects.h5", "w") as f:
        for i in range(100):
            g = f.create_group(f"series{i}")
            g.attrs["description"] = f"series {i}"
            g.create_dataset("data", data=rng.normal(size=30_000), chunks=(5000,), compression="gzip")
            g.create_dataset("timestamps", data=np.arange(30_000) / 100.0, chunks=(30_000,))
    server.reset_counts()
    write_index(server.url("objects.h5"), tmp_path / "objects.lindi.json")
    ours = server.count("objects.h5")
    server.reset_counts()
    store = LindiH5ZarrStore.from_file(server.url("objects.h5"), opts=LindiH5ZarrStoreOpts(num_dataset_chunks_threshold=None))
    theirs = store.to_reference_file_system()
    store.close()
    assert json.loads((tmp_path / "objects.lindi.json").read_text())["refs"].keys() == theirs["refs"].keys()
    assert ours < server.count("objects.h5") / 2, (ours, server.count("objects.h5"))


def test_lindi_external_array_links_are_read_from_the_hdf5_file(tmp_path):
    """lindi's default (datasets of > 1000 chunks point back at the HDF5 file) reads through nwb_dask's HDF5 reader."""
    from lindi.LindiH5ZarrStore.LindiH5ZarrStore import LindiH5ZarrStore

    values = np.arange(24_000, dtype="int32") * 3
    with h5py.File(tmp_path / "many.h5", "w") as f:
        f.create_dataset("many", data=values, chunks=(20,), compression="gzip")  # 1200 chunks
    store = LindiH5ZarrStore.from_file(str(tmp_path / "many.h5"), url=str(tmp_path / "many.h5"))
    rfs = store.to_reference_file_system()
    store.close()
    assert "_EXTERNAL_ARRAY_LINK" in json.dumps(rfs["refs"]["many/.zattrs"])
    (tmp_path / "lindi-default.lindi.json").write_text(json.dumps(rfs))
    x = nwb_dask.read_dataset(tmp_path / "lindi-default.lindi.json", "many")
    np.testing.assert_array_equal(x.compute(), values)
    # nwb_dask's own index references every chunk
    write_index(tmp_path / "many.h5")
    refs = json.loads((tmp_path / "many.h5.lindi.json").read_text())["refs"]
    assert sum(1 for k in refs if k.startswith("many/") and k[5:].isdigit()) == 1200


def test_urls_that_are_not_hdf5_are_named(tmp_path, server):
    (tmp_path / "page.html").write_text("<!DOCTYPE html><html><body>log in</body></html>")
    with pytest.raises(OSError, match=rf"{server.url('page.html')}.*HTML page"):
        write_index(server.url("page.html"), tmp_path / "page.lindi.json")
    with pytest.raises((FileNotFoundError, OSError), match=server.url("missing.nwb")):
        write_index(server.url("missing.nwb"), tmp_path / "missing.lindi.json")
    with pytest.raises((FileNotFoundError, OSError), match=server.url("missing.lindi.json")):
        nwb_dask.read_nwb(server.url("missing.lindi.json"))
    assert not list(tmp_path.glob("*.lindi.json"))


def test_a_corrupt_chunk_names_the_index_dataset_chunk_and_bytes(tmp_path):
    from nwb_dask.codecs import CodecError

    values = _layouts(tmp_path / "layouts.h5")
    write_index(tmp_path / "layouts.h5")
    refs = load_index(tmp_path / "layouts.h5.lindi.json")["refs"]
    url, offset, length = refs["gzip_shuffle/3.0"]
    st = os.stat(tmp_path / "layouts.h5")
    with open(tmp_path / "layouts.h5", "r+b") as f:  # garbage in one chunk, size and mtime kept
        f.seek(offset)
        f.write(b"\x00garbage" * (length // 8))
    os.utime(tmp_path / "layouts.h5", ns=(st.st_atime_ns, st.st_mtime_ns))
    x = nwb_dask.read_dataset(tmp_path / "layouts.h5.lindi.json", "gzip_shuffle")
    np.testing.assert_array_equal(x[:3 * 256].compute(), values["gzip_shuffle"][:3 * 256])  # other chunks fine
    with pytest.raises(CodecError, match=rf"layouts.h5.lindi.json: dataset gzip_shuffle: chunk 3.0 \(bytes at "
                                         rf"offset {offset} of {url}, {length} bytes\) does not decode"):
        x.compute()


def test_cli_info_on_an_index(tmp_path, server):
    values = _layouts(tmp_path / "layouts.h5")
    server.validators = ("etag", "last-modified")
    index = tmp_path / "layouts.lindi.json"
    write_index(server.url("layouts.h5"), index)
    out = _cli("info", index)
    assert out.returncode == 0, out.stderr
    assert f"source {server.url('layouts.h5')}: current" in out.stdout
    assert "/big_contiguous" in out.stdout and "/gzip_shuffle" not in out.stdout  # under 1 MiB: --all
    assert "/gzip_shuffle" in _cli("info", index, "--all").stdout
    report = json.loads(_cli("info", index, "--json").stdout)
    rows = {d["path"]: d for d in report["datasets"]}
    assert rows["/gzip_shuffle"]["codec"] == "shuffle+zlib" and rows["/gzip_shuffle"]["shape"] == [3000, 7]
    assert rows["/gzip_shuffle"]["chunk_refs"] == 12 and rows["/compact"]["inline"]
    with h5py.File(tmp_path / "layouts.h5", "r") as f:
        stored = sum(f["gzip_shuffle"].id.get_chunk_info(i).size for i in range(f["gzip_shuffle"].id.get_num_chunks()))
    assert rows["/gzip_shuffle"]["stored_bytes"] == stored
    assert rows["/big_contiguous"]["logical_bytes"] == values["big_contiguous"].nbytes
    _change_in_place(tmp_path / "layouts.h5")
    out = _cli("info", index)
    assert out.returncode == 1 and "STALE: changed since indexed (validator 'etag:" in out.stdout, out.stdout


def test_an_index_written_for_the_url_a_local_file_will_have(tmp_path, server):
    """write_index(local, url=...): the index written beside a file before upload reads the served file."""
    values = _nwb(tmp_path / "rec.nwb", seconds=1.0)
    index = tmp_path / "up" / "rec.nwb.lindi.json"
    index.parent.mkdir()
    result = write_index(tmp_path / "rec.nwb", index, url=server.url("rec.nwb"))
    record = json.loads(index.read_text())["generationMetadata"]["nwb_dask"]["sources"]
    assert record == {server.url("rec.nwb"): {"size": os.path.getsize(tmp_path / "rec.nwb")}}
    assert result.chunk_refs > 0
    doc = json.loads(index.read_text())
    templates = {"{{" + k + "}}": v for k, v in doc.get("templates", {}).items()}
    assert {templates.get(v[0], v[0]) for v in doc["refs"].values() if isinstance(v, list)} == {server.url("rec.nwb")}
    server.reset_counts()
    nwbfile = nwb_dask.read_nwb(index, min_bytes=2**16)
    np.testing.assert_array_equal(nwbfile.acquisition["ElectricalSeries"].data.compute(), values)
    assert server.count("rec.nwb") >= 1
    with pytest.raises(ValueError, match="url=.*is for a local file"):
        write_index(server.url("rec.nwb"), tmp_path / "x.lindi.json", url=server.url("rec.nwb"))
    with pytest.raises(ValueError, match="not a URL"):
        write_index(tmp_path / "rec.nwb", tmp_path / "y.lindi.json", url=str(tmp_path / "rec.nwb"))
    # the served file replaced by one of another size: the index says so instead of reading wrong bytes
    _nwb(tmp_path / "rec.nwb", seconds=1.5)
    nwb_dask.hdf5.read.release_handles()
    with pytest.raises(StaleIndexError, match="rec.nwb"):
        nwb_dask.read_nwb(index, min_bytes=2**16).acquisition["ElectricalSeries"].data.compute()

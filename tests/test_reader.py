"""Lazy reader: HDF5 datasets as dask arrays (local files)."""

from __future__ import annotations

import pickle

import dask
import h5py
import numpy as np
import pytest

import nwb_dask
from nwb_dask import read_dataset


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "data.h5"
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5003, 37)) * 50).astype("int16")
    with h5py.File(path, "w") as f:
        for spec in ["gzip", ("zstd", {"level": 3}), ("blosc", {"shuffle": "bit"}), "lz4", "none"]:
            c = nwb_dask.codec(spec)
            f.create_dataset(c.name, data=x, chunks=(300, 16), **c.dataset_kwargs())
        f.create_dataset("fletcher", data=x, chunks=(300, 16), fletcher32=True, compression="gzip")
        f.create_dataset("contiguous", data=x.astype("f4"))
        sparse = f.create_dataset("sparse", shape=(1000, 10), dtype="f8", chunks=(100, 10), fillvalue=-1.0)
        sparse[200:300] = 7.0
        f.create_group("grp")
    return path, x


@pytest.mark.parametrize("name", ["gzip", "zstd", "blosc", "lz4", "none", "fletcher", "contiguous"])
def test_values_equal_h5py(h5file, name):
    path, x = h5file
    arr = read_dataset(path, name, block_bytes=100_000)
    assert arr.shape == x.shape and arr.numblocks[0] > 1
    with h5py.File(path, "r") as f:
        expected = f[name][...]
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), expected)
    np.testing.assert_array_equal(arr[1234:2345, 5:30].compute(), expected[1234:2345, 5:30])


def test_blocks_are_whole_chunks(h5file):
    path, _ = h5file
    arr = read_dataset(path, "gzip", block_bytes=100_000)
    assert all(c % 300 == 0 for c in arr.chunks[0][:-1])
    assert all(c % 16 == 0 for c in arr.chunks[1][:-1])


def test_unwritten_chunks_read_as_fill_value(h5file):
    path, _ = h5file
    got = read_dataset(path, "sparse").compute()
    expected = np.full((1000, 10), -1.0)
    expected[200:300] = 7.0
    np.testing.assert_array_equal(got, expected)


def test_graph_pickles_without_open_files(h5file):
    path, x = h5file
    arr = read_dataset(path, "gzip")
    clone = pickle.loads(pickle.dumps(arr))
    np.testing.assert_array_equal(clone.compute(scheduler="sync"), x)


def test_distributed_processes(h5file):
    from distributed import Client, LocalCluster

    path, x = h5file
    arr = read_dataset(path, "zstd", block_bytes=100_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            np.testing.assert_array_equal(client.compute(arr).result(), x)
            np.testing.assert_allclose(client.compute(arr.mean(axis=0)).result(), x.mean(axis=0))


def test_processes_scheduler(h5file):
    path, x = h5file
    with dask.config.set(scheduler="processes", num_workers=2):
        np.testing.assert_array_equal(read_dataset(path, "gzip", block_bytes=200_000).compute(), x)


def test_errors_name_the_culprit(h5file, tmp_path):
    path, _ = h5file
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_dataset(tmp_path / "nope.h5", "x")
    with pytest.raises(KeyError, match="'missing'"):
        read_dataset(path, "missing")
    with pytest.raises(TypeError, match="grp is a Group, not a dataset"):
        read_dataset(path, "grp")


# --------------------------------------------------------------------------- #
# Selections: dask fuses slices into the read, so windows read only their chunks
# --------------------------------------------------------------------------- #
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from nwb_dask.hdf5.read import _covering  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_covering_box_then_rest_equals_numpy_indexing(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    x = np.arange(int(np.prod(shape))).reshape(shape)
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    region, rest = _covering(index, shape)
    assert len(region) == len(shape) and all(s.step in (None, 1) for s in region)
    boxed = x[region]
    np.testing.assert_array_equal(boxed if rest is None else boxed[rest], x[index])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_covering_integer_arrays(data):
    n = data.draw(st.integers(1, 50))
    x = np.arange(n * 3).reshape(n, 3)
    idx = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=8))
    region, rest = _covering((idx, slice(None)), x.shape)
    np.testing.assert_array_equal(x[region][rest], x[idx])


def test_covering_errors():
    with pytest.raises(IndexError, match="out of bounds for axis 1 with size 4"):
        _covering((0, 4), (3, 4))
    with pytest.raises(IndexError, match="too many indices"):
        _covering((0, 0, 0), (3, 4))


def test_window_of_a_large_block_decodes_only_its_chunks(h5file, monkeypatch):
    path, x = h5file
    arr = read_dataset(path, "gzip")  # 64 MiB blocks: the whole dataset is one block
    assert arr.numblocks == (1, 1)
    codec = nwb_dask.codec("gzip")
    calls = []
    original = type(codec).decode
    monkeypatch.setattr(type(codec), "decode", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    window = arr[650:660, 3:20].compute(scheduler="sync")
    np.testing.assert_array_equal(window, x[650:660, 3:20])
    assert len(calls) == 2  # chunk row 600-900 x channel groups 0-16 and 16-32
    calls.clear()
    np.testing.assert_array_equal(arr[::1000, 5].compute(scheduler="sync"), x[::1000, 5])
    np.testing.assert_array_equal(arr[[7, 4000, 12], :].compute(scheduler="sync"), x[[7, 4000, 12], :])


# --------------------------------------------------------------------------- #
# Virtual datasets: whole-source tiles are read from their sources directly    #
# --------------------------------------------------------------------------- #
def _vds_file(folder, layout_kind: str):
    rng = np.random.default_rng(9)
    parts = [(rng.normal(size=(n, 6)) * 30).astype("i2") for n in (700, 1300, 500)]
    for i, p in enumerate(parts):
        with h5py.File(folder / f"part{i}.h5", "w") as f:
            f.create_dataset("x", data=p, chunks=(200, 6), **nwb_dask.codec("gzip").dataset_kwargs())
    whole = np.concatenate(parts)
    layout = h5py.VirtualLayout(shape=whole.shape, dtype="i2")
    start = 0
    for i, p in enumerate(parts):
        src = h5py.VirtualSource(f"part{i}.h5", "x", shape=p.shape)
        if layout_kind == "strided" and i == 1:  # every other row of part 1, rest fill
            layout[start : start + len(p) : 2] = src[::2]
            whole[start + 1 : start + len(p) : 2] = -7
        else:
            layout[start : start + len(p)] = src
        start += len(p)
    with h5py.File(folder / "vds.h5", "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-7)
    return folder / "vds.h5", whole


def test_virtual_tiles_are_read_from_their_sources(tmp_path, monkeypatch):
    path, whole = _vds_file(tmp_path, "tiles")
    arr = read_dataset(path, "v")
    assert "part1.h5" in str(dict(arr.__dask_graph__()))  # the sources, not the virtual dataset
    np.testing.assert_array_equal(arr.compute(), whole)
    np.testing.assert_array_equal(arr[650:720, 2].compute(), whole[650:720, 2])
    monkeypatch.chdir(tmp_path.parent)  # relative source names resolve against the file's folder
    np.testing.assert_array_equal(read_dataset(path, "v").compute(), whole)


def test_other_virtual_layouts_are_read_through_hdf5(tmp_path):
    path, whole = _vds_file(tmp_path, "strided")
    arr = read_dataset(path, "v")
    assert "part1.h5" not in str(dict(arr.__dask_graph__()))
    np.testing.assert_array_equal(arr.compute(), whole)
    (tmp_path / "part2.h5").unlink()  # a missing source: h5py reads HDF5's fill values there without a word,
    with h5py.File(path, "r") as f:
        assert (f["v"][...] == 0).any()
    with pytest.raises(FileNotFoundError, match=r"vds.h5:/v is a virtual dataset over files that are not there: "
                                                r"part2.h5 \("):
        read_dataset(path, "v")  # nwb_dask names the file instead

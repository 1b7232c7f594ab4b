"""Blocks that compute another dtype than they declare (issue 14, finding 2): never stored as wrong bytes.

The rule (nwb_dask.blocks.checked_block, docs/writer.md): a block of the
declared dtype passes untouched; a block of another dtype is converted when
every value survives exactly, else BlockDtypeError names the dataset, the
block, both dtypes and a value.  Checked here on every entry point, with
results read back by plain h5py / zarr and compared element by element, and
against a numpy oracle over pairs of dtypes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from pynwb import NWBFile, TimeSeries

import nwb_dask
from nwb_dask.blocks import BlockDtypeError, checked_block

NUMERIC = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"]
#: The numeric dtypes nwb_dask accepts, both byte orders (bool and 1-byte types have none).
DTYPES = [np.dtype(bool)] + [np.dtype(o + c) for c in NUMERIC for o in ("<", ">") if not (c[1] == "1" and o == ">")]
DATA = "/acquisition/ts/data"


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Element by element, in exact Python arithmetic (int == float compares exactly; NaN is NaN)."""
    if a.shape != b.shape:
        return False
    return all(x == y or (x != x and y != y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist()))


def survives(block: np.ndarray, dtype: np.dtype) -> bool:
    """The oracle: numpy's cast keeps every value (a value the dtype holds exactly is cast to itself)."""
    with np.errstate(all="ignore"):
        return same_values(block, block.astype(dtype))


def nwbfile_with(data, name: str = "ts") -> NWBFile:
    f = NWBFile("block dtypes", "block-dtype", datetime(2026, 1, 1, tzinfo=timezone.utc))
    f.add_acquisition(TimeSeries(name=name, data=data, unit="a.u.", rate=100.0))
    return f


def computing(declared, values: np.ndarray, chunks=(100, 4)) -> da.Array:
    """A dask array declaring ``declared`` whose blocks compute ``values`` (their own dtype)."""
    x = da.from_array(values, chunks=chunks)
    return x.map_blocks(lambda b: b.copy(), dtype=np.dtype(declared))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


LOSSLESS = [  # (declared, computed values)
    ("f8", (np.arange(4000) % 7 - 3).astype("i2").reshape(1000, 4)),  # the example, int16 computed
    ("i2", (np.arange(4000, dtype="f8") - 2000).reshape(1000, 4)),  # integral floats
    ("i4", (np.arange(4000) * 7 - 14000).astype("i2").reshape(1000, 4)),  # narrower int
    ("<i2", np.arange(4000, dtype=">i2").reshape(1000, 4)),  # other byte order
    ("f4", np.linspace(-2, 2, 4000).astype("f2").reshape(1000, 4)),  # narrower float
    ("u1", np.arange(4000, dtype="i8").reshape(1000, 4) % 256),  # wider int, in range
]
LOSSY = [  # (declared, computed values, message)
    ("i2", np.full((1000, 4), 1.5), r"data of dtype float64 would change when stored as int16: 1\.5 at \[250, 0\] "
                                    r"is not an integer"),
    ("i2", np.full((1000, 4), 40000, "i8"), r"data of dtype int64 would change when stored as int16: 40000 at \[250, 0\] is above"),
    ("u2", np.full((1000, 4), -1, "i4"), r"data of dtype int32 would change when stored as uint16: -1 at \[250, 0\] is below"),
    ("i4", np.full((1000, 4), np.nan), r"data of dtype float64 would change when stored as int32: nan at \[250, 0\] is not finite"),
    ("f4", np.full((1000, 4), 0.1), r"data of dtype float64 would change when stored as float32: 0\.1 at \[250, 0\] is rounded"),
    ("f8", np.full((1000, 4), 2**53 + 1, "i8"), r"data of dtype int64 would change when stored as float64: 9007199254740993 at \[250, 0\]"),
]


def lossy_at(values: np.ndarray, row: int) -> np.ndarray:
    """Zeros (which survive), except ``values`` in row ``row`` (so the failing block need not be the first)."""
    out = np.zeros(values.shape, values.dtype)
    out[row] = values[row]
    return out


# --------------------------------------------------------------------------- #
# the rule against the numpy oracle                                            #
# --------------------------------------------------------------------------- #
@st.composite
def declared_and_block(draw):
    declared = draw(st.sampled_from(DTYPES))
    computed = draw(st.sampled_from([d for d in DTYPES if d != declared]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5))
    if draw(st.booleans()):  # any values of the computed dtype: mostly lossy when narrowing
        block = draw(hnp.arrays(computed, shape, elements=hnp.from_dtype(computed)))
    else:  # values of the declared dtype, computed as another: often lossless
        source = draw(hnp.arrays(declared, shape, elements=hnp.from_dtype(declared)))
        with np.errstate(all="ignore"):
            block = source.astype(computed)
    return declared, block


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declared_and_block())
def test_rule_matches_the_numpy_oracle(case):
    declared, block = case
    if survives(block, declared):
        out = checked_block(block, declared)
        assert out.dtype == declared and same_values(out, block)
    else:
        with pytest.raises(BlockDtypeError, match=rf"data of dtype {block.dtype} would change when stored as "
                                                  rf"{declared}: .* at \[[\d, ]*\] "):
            checked_block(block, declared)


@pytest.mark.parametrize("declared", DTYPES, ids=str)
def test_the_declared_dtype_passes_untouched(declared):
    block = np.ones((3, 2), declared)
    assert checked_block(block, declared) is block  # no copy, no check on the normal path


@pytest.mark.parametrize("value, dtype, reason", [
    (2**63, "i8", "above the range"),  # rounds to 2**63 in float64: beyond int64 (CPUs differ on such casts)
    (-(2**63), "i8", None),  # exactly int64's minimum
    (2**64, "u8", "above the range"),
    (2.0**63 - 1024, "i8", None),  # the largest float64 below 2**63
    (65504.0, "u2", None),
    (np.inf, "u1", "not finite"),
    (-0.5, "u1", "not an integer"),
    (2.0, bool, "above the range"),
    (1.0, bool, None),
])
def test_float_to_integer_edges(value, dtype, reason):
    block = np.array([0.0, value], dtype="f8")
    if reason is None:
        assert same_values(checked_block(block, dtype), block)
    else:
        with pytest.raises(BlockDtypeError, match=rf"at \[1\] is {reason}"):
            checked_block(block, dtype)


def test_integers_beyond_a_float_mantissa():
    """numpy calls int64 -> float64 "safe"; 2**53 + 1 is not a float64.  uint64 max rounds up past its range."""
    assert same_values(checked_block(np.array([2**53, -(2**53)], "i8"), "f8"), np.array([2**53, -(2**53)]))
    with pytest.raises(BlockDtypeError, match=r"9007199254740993 at \[0\] is rounded"):
        checked_block(np.array([2**53 + 1], "i8"), "f8")
    with pytest.raises(BlockDtypeError, match=r"18446744073709551615 at \[0\] is rounded"):
        checked_block(np.array([2**64 - 1], "u8"), "f8")
    with pytest.raises(BlockDtypeError, match=r"2049 at \[0\] is rounded"):
        checked_block(np.array([2049], "i2"), "f2")
    with pytest.raises(BlockDtypeError, match=r"70000 at \[0\] is rounded"):  # inf in float16
        checked_block(np.array([70000], "i4"), "f2")


def test_complex_strings_objects_and_other_containers():
    assert same_values(checked_block(np.array([1 + 0j, 2.5 + 0j]), "f4"), np.array([1.0, 2.5]))
    with pytest.raises(BlockDtypeError, match=r"complex128 would change when stored as float64: \(1\+2j\) at \[1\] "
                                              r"has an imaginary part"):
        checked_block(np.array([1 + 0j, 1 + 2j]), "f8")
    with pytest.raises(BlockDtypeError, match=r"complex128 would change when stored as complex64: .* is rounded"):
        checked_block(np.array([0.1 + 0j]), "c8")
    with pytest.raises(BlockDtypeError, match=r"data of dtype <U1 are not numbers; they cannot be stored as int16"):
        checked_block(np.array(["1", "2"]), "i2")
    with pytest.raises(BlockDtypeError, match=r"data of dtype object are not numbers"):
        checked_block(np.array([1, 2], dtype=object), "i2")
    assert same_values(checked_block([[1, 2], [3, 4]], "i2"), np.array([[1, 2], [3, 4]]))  # a list
    m = checked_block(np.matrix([[1.0, 2.0]]), "i2")
    assert type(m) is np.ndarray and m.dtype == np.int16 and same_values(m, np.array([[1, 2]]))
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, False])
    assert same_values(checked_block(masked, "i2"), np.array([1, 2]))  # nothing masked: the values
    with pytest.raises(BlockDtypeError, match=r"masked array with 1 masked value\(s\); HDF5 stores no mask"):
        checked_block(np.ma.masked_array([1.0, 2.0], mask=[False, True]), "f8")
    with pytest.raises(ValueError, match=r"block at \[0:3\]: data computed to shape \(2,\), expected \(3,\)"):
        checked_block(np.zeros(2), "f8", shape=(3,), label="block at [0:3]")


def test_values_are_reported_where_they_are_in_the_dataset():
    block = np.zeros((10, 3))
    block[7, 2] = 0.25
    with pytest.raises(BlockDtypeError, match=r"^dataset '/x' block \(2, 1\) at \[20:30, 3:6\]: data of dtype "
                                              r"float64 would change when stored as int8: 0\.25 at \[27, 5\] "):
        checked_block(block, "i1", selection=(slice(20, 30), slice(3, 6)),
                      label=nwb_dask.blocks.block_label("/x", (slice(20, 30), slice(3, 6)), (2, 1)))


# --------------------------------------------------------------------------- #
# write_nwb / NWBDaskIO                                                        #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("declared, values", LOSSLESS, ids=lambda v: getattr(v, "dtype", v))
def test_write_nwb_stores_lossless_mismatches_exactly(declared, values, tmp_path):
    out = tmp_path / "x.nwb"
    nwb_dask.write_nwb(nwbfile_with(nwb_dask.DaskDataIO(computing(declared, values))), out, progress=False)
    with h5py.File(out, "r") as f:
        d = f[DATA]
        assert d.dtype == np.dtype(declared) and d.compression == "gzip"
        assert same_values(d[()], values)


@pytest.mark.parametrize("declared, values, message", LOSSY, ids=lambda v: getattr(v, "dtype", v))
def test_write_nwb_refuses_lossy_mismatches(declared, values, message, tmp_path):
    out = tmp_path / "x.nwb"
    array = computing(declared, lossy_at(values, 250))
    with pytest.raises(BlockDtypeError, match=rf"^dataset '{DATA}' block \(\d+, 0\) at \[\d+:\d+, 0:4\]: {message}"):
        nwb_dask.write_nwb(nwbfile_with(nwb_dask.DaskDataIO(array)), out, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "distributed"])
def test_every_scheduler_refuses_with_the_message_intact(scheduler, tmp_path, request):
    sched = request.getfixturevalue("local_cluster") if scheduler == "distributed" else scheduler
    good = np.arange(4000, dtype="f8").reshape(1000, 4)
    nwb_dask.write_nwb(nwbfile_with(nwb_dask.DaskDataIO(computing("i4", good))), tmp_path / "ok.nwb",
                       scheduler=sched, progress=False)
    with h5py.File(tmp_path / "ok.nwb", "r") as f:
        assert f[DATA].dtype == np.int32 and same_values(f[DATA][()], good)
    bad = good.copy()
    bad[613, 3] = 613.5
    out = tmp_path / "x.nwb"
    out.write_bytes(b"what was there before")
    with pytest.raises(BlockDtypeError, match=rf"^dataset '{DATA}' block \(\d+, 0\) at \[\d+:\d+, 0:4\]: data of "
                                              r"dtype float64 would change when stored as int32: 613\.5 at "
                                              r"\[613, 3\] is not an integer") as info:
        nwb_dask.write_nwb(nwbfile_with(nwb_dask.DaskDataIO(computing("i4", bad))), out, scheduler=sched,
                           progress=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert out.read_bytes() == b"what was there before" and leftovers(tmp_path) == []


def test_filters_inside_hdf5_follow_the_same_rule(tmp_path):
    """Filters nwb_dask cannot run (fletcher32, big-endian data): h5py writes the block (converting silently), so it is checked first."""
    from nwb_dask.hdf5.write import plan_write

    values = np.arange(4000, dtype="<i2").reshape(1000, 4)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        d = f.create_dataset("x", (1000, 4), ">f8", chunks=(100, 4))
        assert plan_write(computing(">f8", values), d).codec is None
        nwb_dask.write_dask_array(computing(">f8", values), d, progress=False)
        assert d.dtype == np.dtype(">f8") and same_values(d[()], values)
        with pytest.raises(BlockDtypeError, match=r"dataset '/x' .*: data of dtype float64 would change when stored "
                                                  r"as >f4: 0\.1 at \[250, 0\] is rounded"):
            nwb_dask.write_dask_array(computing(">f4", lossy_at(np.full((1000, 4), 0.1), 250)), d,
                                      progress=False)
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        d = f.create_dataset("x", (1000, 4), "i2", chunks=(100, 4), fletcher32=True)
        assert plan_write(computing("i2", values), d).codec is None
        with pytest.raises(BlockDtypeError, match=r"dataset '/x' block \(\d+, 0\) at \[\d+:\d+, 0:4\]: data of dtype "
                                                  r"float64 would change when stored as int16: 0\.5 at \[999, 0\] is not an integer"):
            nwb_dask.write_dask_array(computing("i2", lossy_at(np.full((1000, 4), 0.5), 999)), d, progress=False)
        nwb_dask.write_dask_array(computing("i2", values.astype("f4")), d, progress=False)
    with h5py.File(tmp_path / "raw.h5", "r") as f:
        assert f["x"].fletcher32 and same_values(f["x"][()], values)


def test_nwbdaskio_with_a_bare_dask_iterator(tmp_path):
    values = (np.arange(4000) - 2000).astype("f4").reshape(1000, 4)
    it = nwb_dask.DaskDataChunkIterator(computing("i2", values), (100, 4))
    with nwb_dask.NWBDaskIO(tmp_path / "x.nwb", "w", progress=False) as io:
        io.write(nwbfile_with(it))
    with h5py.File(tmp_path / "x.nwb", "r") as f:
        assert f[DATA].dtype == np.int16 and same_values(f[DATA][()], values)
    it = nwb_dask.DaskDataChunkIterator(computing("i2", lossy_at(np.full((1000, 4), 1e6, "f4"), 500)), (100, 4))
    with pytest.raises(BlockDtypeError, match=rf"dataset '{DATA}' block \(5, 0\) at \[500:600, 0:4\]: data of dtype "
                                              r"float32 would change when stored as int16: 1000000\.0 at \[500, 0\]"):
        with nwb_dask.NWBDaskIO(tmp_path / "y.nwb", "w", progress=False) as io:
            io.write(nwbfile_with(it))
    assert not (tmp_path / "y.nwb").exists() and leftovers(tmp_path) == []


def test_dask_iterator_alone_checks_its_blocks():
    """Used with plain hdmf (which lets h5py convert), the iterator's DataChunks already follow the rule."""
    it = nwb_dask.DaskDataChunkIterator(computing("u1", np.full((300, 4), 7.0)), (100, 4), name="x")
    chunk = next(it)
    assert chunk.data.dtype == np.uint8 and same_values(chunk.data, np.full((100, 4), 7))
    it = nwb_dask.DaskDataChunkIterator(computing("u1", np.full((300, 4), 256.0)), (100, 4), name="x")
    with pytest.raises(BlockDtypeError, match=r"dataset 'x' block at \[0:100, 0:4\]: data of dtype float64 would change "
                                              r"when stored as uint8: 256\.0 at \[0, 0\] is above"):
        next(it)


# --------------------------------------------------------------------------- #
# write_dask_array                                                             #
# --------------------------------------------------------------------------- #
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    declared=st.sampled_from([d for d in DTYPES if d.byteorder != ">"]),
    computed=st.sampled_from(DTYPES),
    rows=st.integers(0, 40),
    step=st.integers(1, 13),
    lossy=st.booleans(),
    data=st.data(),
)
def test_write_dask_array_rule_on_irregular_chunks(declared, computed, rows, step, lossy, data, tmp_path_factory):
    source = data.draw(hnp.arrays(declared if not lossy else computed, (rows, 3)))
    with np.errstate(all="ignore"):
        values = source.astype(computed)
    chunks = (tuple(min(step, rows - i) for i in range(0, rows, step)) or (0,), (3,))
    array = da.from_array(values, chunks=chunks).map_blocks(lambda b: b.copy(), dtype=declared)
    path = tmp_path_factory.mktemp("wda") / "x.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", (rows, 3), declared, chunks=(max(1, min(rows, 5)), 3), maxshape=(None, 3),
                             **nwb_dask.codec("gzip").dataset_kwargs())
        if survives(values, declared):
            nwb_dask.write_dask_array(array, d, progress=False)
            assert same_values(d[()], values)
        else:
            with pytest.raises(BlockDtypeError, match=rf"dataset '/x' block \(\d+, 0\) at \[\d+:\d+, 0:3\]: data of "
                                                      rf"dtype {values.dtype} would change when stored as {declared}"):
                nwb_dask.write_dask_array(array, d, progress=False)


def test_write_dask_array_into_a_dataset_of_another_dtype(tmp_path):
    """The array's declared dtype is checked; the documented cast to the dataset's dtype follows."""
    values = np.arange(400, dtype="i2").reshape(100, 4)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        d = f.create_dataset("x", (100, 4), "f4", chunks=(10, 4), **nwb_dask.codec("zstd").dataset_kwargs())
        nwb_dask.write_dask_array(computing("f8", values, (10, 4)), d, progress=False)  # f8 declared, i2 computed
        assert d.dtype == np.float32 and same_values(d[()], values)
        with pytest.raises(BlockDtypeError, match=r"float64 would change when stored as int64: 0\.5 at \[50, 0\]"):
            nwb_dask.write_dask_array(computing("i8", lossy_at(np.full((100, 4), 0.5), 50), (10, 4)), d, progress=False)


def mixed_blocks(first, rest: np.ndarray, chunks=(100, 4)) -> da.Array:
    """Declares ``rest``'s dtype; its first block computes ``first`` (another dtype), the others ``rest``."""
    def block(b, block_info=None):
        return np.full(b.shape, first) if block_info[None]["chunk-location"][0] == 0 else b

    return da.from_array(rest, chunks=chunks).map_blocks(block, dtype=rest.dtype)


@pytest.mark.parametrize("where", ["hdf5", "zarr", "iterator"])
def test_blocks_are_checked_before_a_rechunk_merges_them(where, tmp_path):
    """A rechunk concatenates blocks and numpy promotes int64 + float64 to float64 (2**53 + 1 becomes 2**53):
    blocks merged into whole chunks are checked before the merge."""
    big = np.full((1000, 4), 2**53 + 1, "i8")
    expected = big.copy()
    expected[:100] = 0
    exact, lossy = mixed_blocks(0.0, big), mixed_blocks(0.5, big)
    message = (r"block \(0, 0\) at \[0:100, 0:4\]: data of dtype float64 would change when stored as int64: "
               r"0\.5 at \[0, 0\] is not an integer")
    if where == "hdf5":
        with h5py.File(tmp_path / "x.h5", "w") as f:
            d = f.create_dataset("x", (1000, 4), "i8", chunks=(1000, 4), **nwb_dask.codec("gzip").dataset_kwargs())
            nwb_dask.write_dask_array(exact, d, progress=False)
            assert same_values(d[()], expected)
            with pytest.raises(BlockDtypeError, match="dataset '/x' " + message):
                nwb_dask.write_dask_array(lossy, d, progress=False)
        return
    if where == "zarr":
        nwb_dask.write_nwb_zarr(nwbfile_with(nwb_dask.DaskDataIO(exact, chunks=(1000, 4))), tmp_path / "x.zarr",
                                scheduler="threads", progress=False)
        assert same_values(zarr.open(str(tmp_path / "x.zarr"), "r")["acquisition/ts/data"][...], expected)
        with pytest.raises(BlockDtypeError, match=f"dataset '{DATA}' " + message):
            nwb_dask.write_nwb_zarr(nwbfile_with(nwb_dask.DaskDataIO(lossy, chunks=(1000, 4))), tmp_path / "y.zarr",
                                    scheduler="threads", progress=False)
        assert not (tmp_path / "y.zarr").exists() and leftovers(tmp_path) == []
        return
    it = nwb_dask.DaskDataChunkIterator(exact, (1000, 4), name="x")
    assert same_values(next(it).data, expected)
    with pytest.raises(BlockDtypeError, match="dataset 'x' " + message):
        next(nwb_dask.DaskDataChunkIterator(lossy, (1000, 4), name="x"))


def test_blocks_that_are_not_ndarrays(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        d = f.create_dataset("x", (20, 2), "i2", chunks=(10, 2), **nwb_dask.codec("gzip").dataset_kwargs())
        lists = da.zeros((20, 2), "i2", chunks=(10, 2)).map_blocks(lambda b: (b + 3).tolist(), dtype="i2",
                                                                   meta=np.empty((0, 0), "i2"))
        nwb_dask.write_dask_array(lists, d, progress=False, scheduler="sync")
        assert same_values(d[()], np.full((20, 2), 3))
        matrices = da.zeros((20, 2), "i2", chunks=(10, 2)).map_blocks(lambda b: np.matrix(b + 4.0), dtype="i2",
                                                                      meta=np.empty((0, 0), "i2"))
        nwb_dask.write_dask_array(matrices, d, progress=False, scheduler="threads")
        assert same_values(d[()], np.full((20, 2), 4))
        masked = da.zeros((20, 2), "i2", chunks=(10, 2)).map_blocks(
            lambda b: np.ma.masked_array(b + 5, mask=b == 0), dtype="i2")
        with pytest.raises(BlockDtypeError, match=r"dataset '/x' block \(\d, 0\) at \[\d+:\d+, 0:2\]: data is a "
                                                  r"masked array with 20 masked value\(s\)"):
            nwb_dask.write_dask_array(masked, d, progress=False, scheduler="sync")


# --------------------------------------------------------------------------- #
# hdmf DataChunkIterator through the parallel queue                            #
# --------------------------------------------------------------------------- #
def test_datachunkiterator_queue(tmp_path):
    from hdmf.data_utils import DataChunkIterator

    values = (np.arange(4000) - 2000).astype("f8").reshape(1000, 4)
    it = DataChunkIterator(data=values, dtype=np.dtype("i2"), buffer_size=64)  # declares int16, yields float64
    nwb_dask.write_nwb(nwbfile_with(it), tmp_path / "x.nwb", progress=False)
    with h5py.File(tmp_path / "x.nwb", "r") as f:
        assert f[DATA].dtype == np.int16 and same_values(f[DATA][()], values)
    grow = DataChunkIterator(data=(row for row in np.full((50, 4), 2.0)), maxshape=(None, 4), dtype=np.dtype("u1"))
    nwb_dask.write_nwb(nwbfile_with(grow), tmp_path / "g.nwb", progress=False)  # growing, one row at a time
    with h5py.File(tmp_path / "g.nwb", "r") as f:
        assert f[DATA].dtype == np.uint8 and same_values(f[DATA][()], np.full((50, 4), 2))
    bad = values.copy()
    bad[700, 1] = 0.5
    it = DataChunkIterator(data=bad, dtype=np.dtype("i2"), buffer_size=64)
    with pytest.raises(BlockDtypeError, match=rf"dataset '{DATA}' block at \[640:704, 0:4\]: data of dtype float64 "
                                              r"would change when stored as int16: 0\.5 at \[700, 1\] is not an integer"):
        nwb_dask.write_nwb(nwbfile_with(it), tmp_path / "y.nwb", progress=False)
    assert not (tmp_path / "y.nwb").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- #
# NWB-Zarr                                                                     #
# --------------------------------------------------------------------------- #
def test_write_nwb_zarr(tmp_path):
    values = np.arange(4000, dtype="i2").reshape(1000, 4)
    nwb_dask.write_nwb_zarr(nwbfile_with(nwb_dask.DaskDataIO(computing(">f8", values))), tmp_path / "x.zarr",
                            scheduler="threads", progress=False)
    z = zarr.open(str(tmp_path / "x.zarr"), "r")["acquisition/ts/data"]
    assert z.dtype == np.dtype("<f8") and same_values(z[...], values)
    bad = computing("u2", lossy_at(np.full((1000, 4), -3, "i8"), 300))
    with pytest.raises(BlockDtypeError, match=r"dataset '/acquisition/ts/data' block \(\d+, 0\) at \[\d+:\d+, 0:4\]: "
                                              r"data of dtype int64 would change when stored as uint16: -3 at \[300, 0\]"):
        nwb_dask.write_nwb_zarr(nwbfile_with(nwb_dask.DaskDataIO(bad)), tmp_path / "y.zarr", scheduler="threads",
                                progress=False)
    assert not (tmp_path / "y.zarr").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- #
# live appends                                                                 #
# --------------------------------------------------------------------------- #
def test_stream_writer_append(tmp_path):
    from nwb_dask.live import StreamWriter, growing

    nwb = NWBFile("live", "live-dtype", datetime(2026, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(TimeSeries(name="analog", data=growing("float32", (2,)), unit="V", rate=1000.0))
    nwb.add_acquisition(TimeSeries(name="counts", data=growing("int64", (2,)), unit="n", rate=1000.0))
    with StreamWriter(tmp_path / "w.nwb", nwb, flush_every=None) as w:
        ints = np.arange(20, dtype="i2").reshape(10, 2)
        assert w.append("analog", ints) == 10
        lazy = da.from_array(np.arange(20, 40, dtype="f8").reshape(10, 2), chunks=(4, 2))
        assert w.append("analog", lazy.map_blocks(lambda b: b.astype("i4"), dtype="f4")) == 20
        with pytest.raises(BlockDtypeError, match=r"stream 'analog': data of dtype float64 would change when stored "
                                                  r"as float32: 0\.1 at \[20, 0\] is rounded"):
            w.append("analog", np.full((3, 2), 0.1))
        # both blocks are wrong; dask's threads decide which one is reported first
        with pytest.raises(TypeError, match=r"stream 'analog': the dask array's (block \(0, 0\) at \[0:4, 0:2\]: "
                                            r"data of dtype float64 would change when stored as float32: 0\.1 at "
                                            r"\[0, 0\]|block \(1, 0\) at \[4:8, 0:2\]: data of dtype float64 would "
                                            r"change when stored as float32: 0\.1 at \[4, 0\]) is rounded"):
            w.append("analog", da.full((8, 2), 0.1, chunks=(4, 2)).map_blocks(lambda b: b, dtype="f4"))
        # int64 and float64 blocks: one piece spans both, and dask's concatenation would make 2**53 + 1 a float
        big = np.full((8, 2), 2**53 + 1, "i8")
        assert w.append("counts", mixed_blocks(0.0, big, chunks=(4, 2))) == 8
        with pytest.raises(TypeError, match=r"stream 'counts': the dask array's block \(0, 0\) at \[0:4, 0:2\]: "
                                            r"data of dtype float64 would change when stored as int64: 0\.5 at \[0, 0\]"):
            w.append("counts", mixed_blocks(0.5, big, chunks=(4, 2)))
        assert w.stats.samples["counts"] == 8
        assert w.stats.samples["analog"] == 20
    with h5py.File(tmp_path / "w.nwb", "r") as f:
        stored = f["acquisition/analog/data"]
        assert stored.dtype == np.float32 and same_values(stored[()], np.arange(40).reshape(20, 2))
        counts = f["acquisition/counts/data"]
        assert counts.dtype == np.int64 and same_values(counts[()], np.r_[np.zeros((4, 2), "i8"), big[4:]])


# --------------------------------------------------------------------------- #
# MPI funnel (slow: one lossless and one lossy job)                            #
# --------------------------------------------------------------------------- #
def _mpi(kind: str, out: Path):
    import shutil

    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mpiexec is None:
        pytest.fail("mpiexec not found: `pip install mpi4py mpich` (the test extra installs them)")
    job = Path(__file__).with_name("mpi_job.py")
    return subprocess.run([mpiexec, "-n", "2", sys.executable, str(job), kind, str(out), "funnel"],
                          capture_output=True, text=True, timeout=180, cwd=out.parent)


def test_mpi_funnel(tmp_path):
    out = tmp_path / "ok.h5"
    proc = _mpi("dtype_exact", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(out, "r") as f:
        assert f["x"].dtype == np.int16 and same_values(f["x"][()], np.arange(40_000).reshape(10_000, 4) % 1000)
    out = tmp_path / "bad.h5"
    proc = _mpi("dtype_lossy", out)
    assert proc.returncode != 0
    assert re.search(r"failed on dataset '/x' block \(\(\d+, \d+\), \(0, 4\)\): BlockDtypeError: dataset '/x' "
                     r"block (\(\d+, 0\) )?at \[\d+:\d+, 0:4\]: data of dtype float64 would change when stored as int16: 0\.5 at "
                     r"\[7777, 2\] is not an integer", proc.stderr), proc.stderr[-3000:]
    assert not out.exists() and leftovers(tmp_path) == []

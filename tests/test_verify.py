"""The rules that exist once: value comparison (nwb_dask.tools.verify) and "is this a large numeric dataset"
(nwb_dask.chunking.is_large_numeric), and that repack, convert and consolidate go through them."""

from __future__ import annotations

import math

import dask.array as da
import h5py
import numpy as np
import pytest
from dask.callbacks import Callback
from hypothesis import given, settings
from hypothesis import strategies as st

import nwb_dask.tools.verify as verify
from nwb_dask.chunking import NUMERIC_KINDS, READ_MIN_BYTES, REWRITE_MIN_BYTES, is_large_numeric
from nwb_dask.tools.info import HINT_MIN_BYTES
from nwb_dask.tools.verify import array_differences, differing_datasets, equal_values, same_values


# --------------------------------------------------------------------------- #
# is_large_numeric                                                             #
# --------------------------------------------------------------------------- #
def test_defaults_keep_their_values_under_names_that_say_their_purpose():
    assert READ_MIN_BYTES == 16 * 2**20  # read_nwb / daskify
    assert REWRITE_MIN_BYTES == 2**20  # repack / convert
    assert HINT_MIN_BYTES == 16 * 2**20  # info's hints


DTYPES = ["i1", "u2", "<i2", ">i2", "f4", "<f8", "c8", "?", "S4", "U3", "O", "M8[s]", [("a", "i4"), ("b", "f8")]]


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.integers(0, 3000), max_size=3).map(tuple), dtype=st.sampled_from(DTYPES),
       min_bytes=st.integers(-1, 2**22), kinds=st.sampled_from([NUMERIC_KINDS, "biuf"]))
def test_is_large_numeric_is_an_array_of_numbers_of_at_least_min_bytes(shape, dtype, min_bytes, kinds):
    dt = np.dtype(dtype)
    expected = len(shape) > 0 and dt.kind in kinds and math.prod(shape) * dt.itemsize >= min_bytes
    assert is_large_numeric(shape, dt, min_bytes, kinds=kinds) is expected


def test_is_large_numeric_boundaries():
    assert is_large_numeric((READ_MIN_BYTES // 2,), "i2", READ_MIN_BYTES)  # exactly the threshold: large
    assert not is_large_numeric((READ_MIN_BYTES // 2 - 1,), "i2", READ_MIN_BYTES)
    assert not is_large_numeric((), "f8", 0)  # a scalar never
    assert not is_large_numeric(None, "f8", 0)  # h5py's empty dataspace
    assert is_large_numeric((0,), "f8", 0) and not is_large_numeric((0,), "f8", 1)
    assert is_large_numeric((4,), ">f8", 32)  # byte order is the codecs' question (runs_outside_hdf5), not this one
    assert is_large_numeric((4,), "c16", 1) and not is_large_numeric((4,), "c16", 1, kinds="biuf")


def test_read_nwb_and_repack_use_their_thresholds(tmp_path):
    """daskify makes dask arrays of exactly the datasets is_large_numeric(READ_MIN_BYTES) names."""
    import nwb_dask
    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

    path = tmp_path / "e.nwb"
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(synthetic_ephys(0.2, 8, seed=1))), path, progress=False)
    nwbfile = nwb_dask.read_nwb(path)
    try:
        data = nwbfile.acquisition["ElectricalSeries"].data
        assert isinstance(data, h5py.Dataset)  # 0.2 s x 8 channels of int16 is far below 16 MiB
        assert not is_large_numeric(data.shape, data.dtype, READ_MIN_BYTES)
    finally:
        nwbfile.read_io.close()
    nwbfile = nwb_dask.read_nwb(path, min_bytes=1)
    try:
        assert isinstance(nwbfile.acquisition["ElectricalSeries"].data, da.Array)
    finally:
        nwbfile.read_io.close()


# --------------------------------------------------------------------------- #
# values                                                                       #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("a, b, same", [
    (np.array([1.0, np.nan]), np.array([1.0, np.nan]), True),
    (np.array([1.0, np.nan], "f4"), np.array([1.0, np.nan], "f4"), True),
    (np.float32("nan"), np.float32("nan"), True),  # numpy scalars as arrays: NaN equals NaN
    (float("nan"), float("nan"), True),
    (np.array([1.0, np.nan]), np.array([1.0, 2.0]), False),
    (np.array([1, 2]), np.array([1, 2, 3]), False),
    (np.array([[1, 2]]), np.array([1, 2]), False),
    ([1, [2.0, float("nan")]], [1, [2.0, float("nan")]], True),
    ((1, "a"), (1, "b"), False),
    (1, 1.0, True),
    ("x", "x", True),
    (np.array([1 + 1j, np.nan]), np.array([1 + 1j, np.nan]), True),
])
def test_equal_values(a, b, same):
    assert equal_values(a, b) is same
    assert equal_values(b, a) is same


class _Computes(Callback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def _start(self, dsk):
        self.count += 1


def test_same_values_in_one_parallel_pass():
    x = np.arange(1000, dtype="f8")
    x[5] = np.nan
    y = x.copy()
    y[7] = -1
    pairs = [(da.from_array(x, chunks=100), da.from_array(x.copy(), chunks=100)),
             (da.from_array(x, chunks=100), da.from_array(y, chunks=300)),
             (da.arange(10, chunks=3), da.arange(10, chunks=5))]
    with _Computes() as c:
        assert same_values(pairs, "threads") == [True, False, True]
    assert c.count == 1


def test_array_differences_names_what_differs():
    a = da.zeros((10, 2), dtype="i2", chunks=5)
    pairs = {"/same": (a, da.zeros((10, 2), dtype="i2", chunks=2)),
             "/values": (a, da.ones((10, 2), dtype="i2", chunks=5)),
             "/shape": (a, da.zeros((10, 3), dtype="i2", chunks=5)),
             "/dtype": (a, da.zeros((10, 2), dtype="i4", chunks=5))}
    assert sorted(array_differences(pairs, "threads")) == sorted([
        "/values: values differ", "/shape: (10, 2) int16 became (10, 3) int16",
        "/dtype: (10, 2) int16 became (10, 2) int32"])


def test_differing_datasets_small_and_large_in_one_pass(tmp_path, monkeypatch):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    big = np.arange(200_000, dtype="f4")
    big[3] = np.nan
    for path, change in ((a, False), (b, True)):
        with h5py.File(path, "w") as f:
            f["big_same"] = big
            f["big_differs"] = big + (1 if change else 0)
            f["nan_scalar"] = np.float32("nan")
            f["text"] = "b" if change else "a"
            f["text_same"] = "t"
            f["empty"] = np.zeros((0,), "f8")
            f["records"] = np.array([(1, 2.0)], dtype=[("x", "i4"), ("y", "f8")])
            f["refs"] = np.array([f["text"].ref], dtype=h5py.ref_dtype)
            f["reshaped"] = np.zeros((4, 2) if change else (2, 4))
    calls = []
    real = verify.same_values
    monkeypatch.setattr(verify, "same_values", lambda pairs, s=None: calls.append(len(pairs)) or real(pairs, s))
    names = ["big_same", "big_differs", "nan_scalar", "text", "text_same", "empty", "records", "refs", "reshaped"]
    assert differing_datasets(b, a, names, "threads") == ["big_differs", "text", "reshaped"]
    assert calls == [2]  # both large datasets in one pass


def test_repack_convert_consolidate_compare_through_verify(tmp_path, monkeypatch):
    """The three tools' verifiers end in verify.same_values (one mechanism); a difference found there fails them."""
    import nwb_dask
    from nwb_dask.tools.repack import RepackError
    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

    src = tmp_path / "src.nwb"
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(synthetic_ephys(0.2, 8, seed=3))), src, progress=False)
    monkeypatch.setattr(verify, "same_values", lambda pairs, scheduler=None: [False] * len(pairs))
    with pytest.raises(RepackError, match="ElectricalSeries/data: values differ"):
        nwb_dask.repack(src, tmp_path / "r.nwb", min_bytes=1, progress=False)
    with pytest.raises(RepackError, match="ElectricalSeries/data: values differ"):
        nwb_dask.convert(src, tmp_path / "c.nwb.zarr", min_bytes=1, progress=False)
    assert not (tmp_path / "r.nwb").exists() and not (tmp_path / "c.nwb.zarr").exists()

    linked = tmp_path / "linked.nwb"
    with h5py.File(linked, "w") as f:
        f["x"] = h5py.ExternalLink(src.name, "/acquisition/ElectricalSeries/data")
    with pytest.raises(ValueError, match="verification failed: /x of the consolidated copy differs"):
        nwb_dask.consolidate(linked, tmp_path / "self.nwb", progress=False)
    assert not (tmp_path / "self.nwb").exists()

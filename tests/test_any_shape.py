"""Any shape, any dask chunking, every dtype and codec, through every entry point.

Arrays of 1 to 4 dimensions, axes of length 0, 1, small and non-dividing, in
irregular, non-dividing, single-element and zero-length dask blocks, of every
dtype nwb_dask writes, with every codec, through ``DaskDataIO``, a bare
``DaskDataChunkIterator``, plain pynwb's ``H5DataIO(DaskDataChunkIterator(x))``,
``write_dask_array``, ``write_nwb_zarr``, ``mpi.write`` and
``StreamWriter.append``; each file is read back with plain h5py (zarr for Zarr)
and compared element by element, and every chunk shape stays within the data
(along fixed axes; docs/chunking.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from hdmf.backends.hdf5 import H5DataIO
from any_shape_mpi_job import values
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

import nwb_dask
from nwb_dask import DaskDataChunkIterator, DaskDataIO, NWBDaskIO, write_dask_array, write_nwb
from nwb_dask.chunking import (
    ChunkShapeError,
    align_to_chunks,
    block_shape,
    check_chunk_shape,
    chunked_maxshape,
    fit_to_blocks,
    guess_chunk_shape,
    is_aligned,
    resolve_chunk_shape,
)
from nwb_dask.codecs import CodecError
from nwb_dask.live import StreamWriter, growing
from nwb_dask.zarr.io import write_nwb_zarr

#: Every dtype nwb_dask writes (as_dask_array: bool, ints, floats, complex; big-endian through h5py).
DTYPES = ["?", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "c8", "c16", ">i2", ">f8"]
#: Every codec, with its options where they change the stored bytes.
CODEC_SPECS = [
    "none",
    "gzip",
    ("gzip", {"level": 1, "shuffle": False}),
    "zstd",
    ("zstd", {"level": -1, "shuffle": True}),
    "blosc",
    ("blosc", {"cname": "zstd", "shuffle": "bit"}),
    ("blosc", {"cname": "blosclz", "shuffle": "none"}),
    "lz4",
    ("lz4", {"block_bytes": 64, "shuffle": True}),
    "bitshuffle",
    ("bitshuffle", {"cname": "zstd", "block": 8}),
    ("bitshuffle", {"cname": "none"}),
]
AVAILABLE = nwb_dask.available_codecs()
CODECS = [s for s in CODEC_SPECS if (s if isinstance(s, str) else s[0]) in AVAILABLE]
ZARR_REFUSED = {"lz4", "bitshuffle"}  # no NWB-Zarr equivalent: CodecError by design (docs/zarr.md)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def codec_name(spec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def make_codec(spec):
    return nwb_dask.codec(spec) if isinstance(spec, str) else nwb_dask.codec(spec[0], **spec[1])


# --------------------------------------------------------------------------- #
# strategies                                                                   #
# --------------------------------------------------------------------------- #
#: Longest axis drawn per number of dimensions (keeps each array small).
_MAX_LEN = {1: 700, 2: 90, 3: 14, 4: 7}


def axis_lengths(ndim: int):
    top = _MAX_LEN[ndim]
    return st.one_of(st.sampled_from([0, 1]), st.integers(2, min(9, top)), st.integers(min(10, top), top))


def axis_chunks(n: int):
    """Dask block sizes along an axis of length ``n``: regular (often not dividing), whole,
    single-element, irregular, irregular with zero-length blocks."""
    if n == 0:
        return st.just((0,))

    def regular(b):
        return (b,) * (n // b) + ((n % b,) if n % b else ())

    def irregular(cuts):
        edges = [0, *sorted(set(cuts)), n]
        return tuple(b - a for a, b in zip(edges, edges[1:]))

    options = [st.integers(1, n).map(regular), st.just((n,))]
    if n <= 24:
        options.append(st.just((1,) * n))
    if n > 1:
        cuts = st.lists(st.integers(1, n - 1), min_size=1, max_size=min(n - 1, 6))
        options.append(cuts.map(irregular))
        options.append(st.tuples(cuts.map(irregular), st.integers(0, 6)).map(
            lambda t: t[0][: t[1] % len(t[0])] + (0,) + t[0][t[1] % len(t[0]):]))  # a zero-length block
    return st.one_of(options)


@st.composite
def arrays(draw, dtypes=DTYPES, min_ndim=1, max_ndim=4, max_blocks=120):
    """(numpy array, dask array with drawn block sizes)."""
    ndim = draw(st.integers(min_ndim, max_ndim))
    shape = tuple(draw(axis_lengths(ndim)) for _ in range(ndim))
    chunks = tuple(draw(axis_chunks(n)) for n in shape)
    assume(math.prod(len(c) for c in chunks) <= max_blocks)
    dtype = draw(st.sampled_from(dtypes))
    x = values(shape, dtype, draw(st.integers(0, 2**16)))
    return x, da.from_array(x, chunks=chunks)


def assert_same(got: np.ndarray, x: np.ndarray, *, byte_order_free: bool = False) -> None:
    """Element by element, with the same shape and dtype (up to byte order where the writer normalises it)."""
    assert got.shape == x.shape
    if byte_order_free:
        assert got.dtype.newbyteorder("=") == x.dtype.newbyteorder("="), (got.dtype, x.dtype)
    else:
        assert got.dtype == x.dtype, (got.dtype, x.dtype)
    np.testing.assert_array_equal(got, x)


def assert_chunks_within(chunks, shape, growing_axes=()) -> None:
    """1 <= chunk <= max(1, length) on every axis but the growing ones."""
    assert chunks is not None and len(chunks) == len(shape)
    for axis, (c, s) in enumerate(zip(chunks, shape)):
        assert c >= 1, (chunks, shape)
        if axis not in growing_axes:
            assert c <= max(1, s), (chunks, shape)


def ts_file(data, name: str = "ts") -> NWBFile:
    nwb = NWBFile(session_description="any shape", identifier="any-shape", session_start_time=T0)
    nwb.add_acquisition(TimeSeries(name=name, data=data, unit="au", rate=10.0))
    return nwb


# --------------------------------------------------------------------------- #
# the chunking functions themselves (fast, many examples)                      #
# --------------------------------------------------------------------------- #
shapes0 = st.integers(1, 4).flatmap(lambda n: st.tuples(*[axis_lengths(n)] * n))


@settings(max_examples=400, deadline=None)
@given(shapes0, st.sampled_from(DTYPES), st.integers(1, 4 * 2**20), st.booleans())
def test_guess_within_the_data(shape, dtype, target, time_series):
    chunk = guess_chunk_shape(shape, dtype, target, time_series=time_series)
    assert_chunks_within(chunk, shape)
    assert check_chunk_shape(chunk, shape) == chunk


@settings(max_examples=300, deadline=None)
@given(shapes0, st.data())
def test_guess_may_pass_the_data_only_along_unlimited_axes(shape, data):
    unlimited = data.draw(st.sets(st.integers(0, len(shape) - 1)))
    maxshape = tuple(None if i in unlimited else s for i, s in enumerate(shape))
    chunk = guess_chunk_shape(shape, "i2", maxshape=maxshape)
    assert_chunks_within(chunk, shape, growing_axes=unlimited)
    check_chunk_shape(chunk, shape, maxshape)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(*[axis_lengths(n).flatmap(
    lambda s: st.tuples(st.just(s), axis_chunks(s)))] * n)), st.sampled_from(["i2", "f8", "?"]),
    st.integers(1, 2**20))
def test_fit_align_and_blocks_stay_within_the_data(axes, dtype, target):
    shape = tuple(s for s, _ in axes)
    chunks = tuple(c for _, c in axes)
    guess = resolve_chunk_shape("auto", shape, dtype, target_bytes=target)
    fitted = fit_to_blocks(guess, chunks)
    assert_chunks_within(fitted, shape)
    for budget in (1, target, 64 * 2**20):
        blocks = block_shape(fitted, shape, dtype, budget)
        assert all(b >= 1 and (b % c == 0 or b >= s) for b, c, s in zip(blocks, fitted, shape)), (blocks, fitted)
    if math.prod(len(c) for c in chunks) <= 200 and math.prod(shape) <= 50_000:
        aligned = align_to_chunks(da.zeros(shape, dtype, chunks=chunks), fitted, max(1, target))
        assert aligned.shape == shape and is_aligned(aligned.chunks, fitted)


def test_fit_to_blocks_never_rounds_past_the_axis():
    # The cases of issue 14: 384 channels in blocks of 100 once gave 400-channel chunks,
    # (1000, 2) in blocks of 150 gave 1050 samples.
    assert fit_to_blocks((1365, 384), ((30000,) * 4, (100, 100, 100, 84))) == (1250, 384)
    assert fit_to_blocks((1000, 2), ((150,) * 6 + (100,), (2,))) == (1000, 2)
    assert fit_to_blocks((5, 7, 3), ((2, 2, 1), (3, 3, 1), (2, 1))) == (4, 6, 3)
    # Within the axis the nudge is unchanged.
    assert fit_to_blocks((5461, 384), ((30000, 30000, 12000), (384,))) == (5000, 384)


def test_empty_axes_get_one_element_chunks_and_an_unlimited_maxshape():
    assert resolve_chunk_shape("auto", (0, 64), "i2") == (1, 64)
    assert resolve_chunk_shape((-1, 64), (0, 64), "i2") == (1, 64)
    assert chunked_maxshape((0, 64)) == (None, 64)
    assert chunked_maxshape((100, 0)) == (100, None)
    assert chunked_maxshape((0, 3), (None, 3)) == (None, 3)
    assert chunked_maxshape((0, 3), (5, 3)) == (5, 3)  # may grow to 5: a 1-element chunk fits
    # What h5py accepts: a 1-element chunk on a 0-length axis only when that axis may grow.
    with h5py.File("in-memory.h5", "w", driver="core", backing_store=False) as f:
        with pytest.raises(ValueError, match="Chunk shape must not be greater than data shape"):
            f.create_dataset("fixed", shape=(0, 64), dtype="i2", chunks=(1, 64))
        d = f.create_dataset("ok", shape=(0, 64), dtype="i2", chunks=(1, 64), maxshape=chunked_maxshape((0, 64)))
        assert d.shape == (0, 64) and d[()].shape == (0, 64)


@pytest.mark.parametrize(
    "chunks, shape, maxshape, match",
    [
        ((10, 4), (10, 3), None, r"'acq/x' of shape \(10, 3\): chunk shape \(10, 4\) exceeds .* on axis 1 \(4 > 3\)"),
        ((2, 64), (0, 64), None, r"'acq/x' of shape \(0, 64\): chunk shape \(2, 64\) exceeds .* on axis 0 \(2 > 1\)"),
        ((0, 3), (10, 3), None, r"'acq/x' of shape \(10, 3\): chunk shape \(0, 3\) has an invalid extent 0 on axis 0"),
        ((11, 3), (10, 3), (10, 3), r"exceeds the maximum shape \(10, 3\) on axis 0"),
    ],
)
def test_check_chunk_shape_names_dataset_shape_and_chunks(chunks, shape, maxshape, match):
    with pytest.raises(ChunkShapeError, match=match):
        check_chunk_shape(chunks, shape, maxshape, name="acq/x")
    with pytest.raises(ChunkShapeError, match=match):
        resolve_chunk_shape(chunks, shape, "i2", maxshape=maxshape, name="acq/x")
    # Along a growing axis a longer chunk is legitimate.
    check_chunk_shape((500, 3), (10, 3), (None, 3))


def test_user_chunks_beyond_the_data_are_refused_not_clipped():
    """docs/chunking.md: a given chunk shape is honoured exactly or refused (h5py refuses it too)."""
    x = da.zeros((10, 3), "i2", chunks=5)
    with pytest.raises(ChunkShapeError, match=r"'acquisition/ts/data' of shape \(10, 3\): chunk shape \(4, 4\)"):
        DaskDataChunkIterator(x, (4, 4), name="acquisition/ts/data")
    with pytest.raises(ChunkShapeError, match=r"'ts/data' of shape \(10, 3\): chunk shape \(4, 4\) exceeds .* axis 1"):
        DaskDataIO(x, chunks=(4, 4), name="ts/data")
    assert DaskDataChunkIterator(x, (4, 3)).recommended_chunk_shape() == (4, 3)
    assert DaskDataChunkIterator(x, (4, -1)).recommended_chunk_shape() == (4, 3)


# --------------------------------------------------------------------------- #
# NWB entry points: DaskDataIO, bare iterator, plain pynwb adapter              #
# --------------------------------------------------------------------------- #
ENTRY_POINTS = ["DaskDataIO+write_nwb", "DaskDataIO+NWBDaskIO", "bare iterator+NWBDaskIO",
                "H5DataIO(iterator, codec)+NWBDaskIO", "H5DataIO(iterator, gzip)+NWBHDF5IO"]


def write_entry_point(entry: str, a, spec, path: Path, chunks="auto", chunk_bytes: int = 2**20) -> None:
    kw = dict(chunk_bytes=chunk_bytes)
    if entry == "DaskDataIO+write_nwb":
        write_nwb(ts_file(DaskDataIO(a, codec=spec, chunks=chunks, **kw)), path, progress=False)
    elif entry == "DaskDataIO+NWBDaskIO":
        with NWBDaskIO(path, "w", progress=False) as io:
            io.write(ts_file(DaskDataIO(a, codec=spec, chunks=chunks, **kw)))
    elif entry == "bare iterator+NWBDaskIO":
        with NWBDaskIO(path, "w", progress=False) as io:
            io.write(ts_file(DaskDataChunkIterator(a, chunks, **kw)))
    elif entry == "H5DataIO(iterator, codec)+NWBDaskIO":
        with NWBDaskIO(path, "w", progress=False) as io:
            io.write(ts_file(H5DataIO(DaskDataChunkIterator(a, chunks, **kw), **make_codec(spec).h5dataio_kwargs())))
    else:  # the adapter inside plain pynwb, as in the issue
        with NWBHDF5IO(str(path), "w") as io:
            io.write(ts_file(H5DataIO(DaskDataChunkIterator(a, chunks, **kw), compression="gzip")))


@settings(FAST, max_examples=200)
@given(arrays(), st.sampled_from(CODECS), st.sampled_from(ENTRY_POINTS), st.data())
def test_nwb_entry_points_any_shape(arr, spec, entry, data):
    x, a = arr
    # Automatic chunks of several target sizes (small ones give many chunks), or the user's within the data.
    user = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
    chunks = data.draw(st.sampled_from(["auto", "auto", user]))
    chunk_bytes = data.draw(st.sampled_from([1, 64, 1000, 2**20]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nwb"
        write_entry_point(entry, a, spec, path, chunks, chunk_bytes)
        with h5py.File(path, "r") as f:
            d = f["acquisition/ts/data"]
            # hdmf stores big-endian arrays little-endian (same values).
            assert_same(d[()], x, byte_order_free=True)
            assert_chunks_within(d.chunks, x.shape)
            assert d.maxshape == chunked_maxshape(x.shape)
            if chunks is user:
                assert d.chunks == user


@pytest.mark.parametrize("spec", CODECS, ids=str)
def test_every_dtype_with_every_codec(spec, tmp_path):
    """Each dtype (one TimeSeries each) with each codec: a 3-D array in irregular blocks, and an empty one."""
    nwb = NWBFile(session_description="dtypes", identifier="dtypes", session_start_time=T0)
    expected = {}
    for i, dtype in enumerate(DTYPES):
        for shape, chunks in (((5, 7, 3), ((2, 2, 1), (3, 3, 1), (2, 1))), ((0, 4), ((0,), (3, 1)))):
            name = f"t{i}_{len(expected) % 2}"
            expected[name] = values(shape, dtype, i)
            nwb.add_acquisition(TimeSeries(name=name, unit="au", rate=10.0, data=DaskDataIO(
                da.from_array(expected[name], chunks=chunks), codec=spec, chunk_bytes=40)))
    write_nwb(nwb, tmp_path / "x.nwb", progress=False)
    with h5py.File(tmp_path / "x.nwb", "r") as f:
        for name, x in expected.items():
            d = f[f"acquisition/{name}/data"]
            assert_same(d[()], x, byte_order_free=True)
            assert_chunks_within(d.chunks, x.shape)


def test_issue_cases_read_by_plain_pynwb_in_a_fresh_process(tmp_path):
    """The failing cases of issue 14, in one NWB file each read back (and validated) by plain pynwb."""
    cases = {
        "ch384_blocks100": ((3000, 384), (1000, 100), "i2"),
        "blocks150": ((1000, 2), (150, 2), "f4"),
        "empty_time": ((0, 64), (0, 64), "i2"),
        "empty_channels": ((100, 0), (10, 0), "u1"),
        "one_d": ((1000,), (300,), "i4"),
        "three_d": ((5, 7, 3), ((2, 2, 1), (3, 3, 1), (2, 1)), "u2"),
    }
    nwb = NWBFile(session_description="issue 14", identifier="issue-14", session_start_time=T0)
    expected = {}
    for name, (shape, chunks, dtype) in cases.items():
        expected[name] = values(shape, dtype, 1)
        nwb.add_acquisition(TimeSeries(name=name, data=DaskDataIO(da.from_array(expected[name], chunks=chunks)),
                                       unit="au", rate=10.0))
    path = tmp_path / "issue14.nwb"
    write_nwb(nwb, path, progress=False)
    reader = textwrap.dedent(
        """
        import sys, numpy as np
        from pynwb import NWBHDF5IO, validate
        path, out = sys.argv[1:3]
        with NWBHDF5IO(path, "r") as io:
            acq = io.read().acquisition
            np.savez(out, **{k: acq[k].data[()] for k in acq})
        assert not any(m.startswith("nwb_dask") for m in sys.modules)
        errors = validate(path=path)
        if errors:
            raise SystemExit("validation errors: %r" % (errors,))
        """
    )
    out = tmp_path / "read.npz"
    proc = subprocess.run([sys.executable, "-c", reader, str(path), str(out)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    with h5py.File(path, "r") as f:
        for name, x in expected.items():
            assert_same(got[name], x)
            assert_chunks_within(f[f"acquisition/{name}/data"].chunks, x.shape)
        assert f["acquisition/ch384_blocks100/data"].chunks[1] <= 384
        assert f["acquisition/empty_time/data"].maxshape == (None, 64)


# --------------------------------------------------------------------------- #
# write_dask_array into datasets made with nwb_dask's chunk shapes             #
# --------------------------------------------------------------------------- #
@settings(FAST, max_examples=150)
@given(arrays(), st.sampled_from(CODECS), st.data())
def test_write_dask_array_any_shape(arr, spec, data):
    x, a = arr
    user = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
    chunks = data.draw(st.sampled_from(["auto", user, (-1,) * x.ndim]))
    c = make_codec(spec)
    chunk_shape = resolve_chunk_shape(chunks, x.shape, x.dtype, name="x")
    assert_chunks_within(chunk_shape, x.shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", shape=x.shape, dtype=x.dtype, chunks=chunk_shape,
                                 maxshape=chunked_maxshape(x.shape), **c.dataset_kwargs())
            write_dask_array(a, d, progress=False, block_bytes=data.draw(st.sampled_from([1, 4096, 2**26])))
        with h5py.File(path, "r") as f:
            assert_same(f["x"][()], x)
            assert f["x"].chunks == chunk_shape


# --------------------------------------------------------------------------- #
# write_nwb_zarr                                                               #
# --------------------------------------------------------------------------- #
@settings(FAST, max_examples=80)
@given(arrays(), st.sampled_from(CODECS), st.sampled_from([64, 1000, 2**20]))  # a file per chunk: not 1-byte ones
def test_write_nwb_zarr_any_shape(arr, spec, chunk_bytes):
    x, a = arr
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nwb.zarr"
        if codec_name(spec) in ZARR_REFUSED:
            with pytest.raises(CodecError, match=f"codec '{codec_name(spec)}' has no NWB-Zarr equivalent"):
                write_nwb_zarr(ts_file(DaskDataIO(a, codec=spec, chunk_bytes=chunk_bytes)), path, progress=False)
            assert not path.exists()
            return
        write_nwb_zarr(ts_file(DaskDataIO(a, codec=spec, chunk_bytes=chunk_bytes)), path, progress=False)
        z = zarr.open(str(path), mode="r")["acquisition/ts/data"]
        assert_same(z[...], x, byte_order_free=True)  # stored little-endian (docs/zarr.md)
        assert_chunks_within(z.chunks, x.shape)


# --------------------------------------------------------------------------- #
# StreamWriter.append into growing datasets                                    #
# --------------------------------------------------------------------------- #
#: Live streams hold little-endian real numbers and booleans (next test).
LIVE_DTYPES = [d for d in DTYPES if not d.startswith(">") and not d.startswith("c")]


@settings(FAST, max_examples=60)
@given(arrays(dtypes=LIVE_DTYPES), st.sampled_from(CODECS), st.data())
def test_stream_writer_append_any_shape(arr, spec, data):
    x, a = arr
    trailing = x.shape[1:]
    assume(all(s >= 1 for s in trailing))  # a sample shape has positive extents (next test)
    user = tuple(data.draw(st.integers(1, s)) for s in (max(1, x.shape[0]) * 3, *trailing))
    chunks = data.draw(st.sampled_from([None, user]))
    nwb = NWBFile(session_description="live", identifier="live", session_start_time=T0)
    nwb.add_acquisition(TimeSeries(name="ts", data=growing(x.dtype, trailing, chunks=chunks, codec=make_codec(spec)),
                                   unit="au", rate=10.0))
    # Appends of dask pieces along time (empty ones included), flushed now and then.
    cuts = sorted(data.draw(st.lists(st.integers(0, x.shape[0]), max_size=5)))
    edges = [0, *cuts, x.shape[0]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.nwb"
        with StreamWriter(path, nwb, flush_every=None) as w:
            for lo, hi in zip(edges, edges[1:]):
                assert w.append("ts", a[lo:hi]) == hi
                if data.draw(st.booleans()):
                    w.flush()
        with h5py.File(path, "r") as f:
            d = f["acquisition/ts/data"]
            assert_same(d[()], x)
            assert d.maxshape == (None, *trailing)
            # Time is unlimited: a chunk may be longer than the samples so far; the sample axes never.
            assert_chunks_within(d.chunks, x.shape, growing_axes=(0,))
            if chunks is not None:
                assert d.chunks == chunks


def test_stream_writer_refuses_empty_sample_axes_big_endian_and_complex():
    with pytest.raises(ValueError, match=r"sample shape \(0, 3\) must have positive extents"):
        growing("i2", (0, 3))
    with pytest.raises(TypeError, match="little-endian"):
        growing(">i2", (3,))
    with pytest.raises(TypeError, match="hdmf refuses complex complex64"):
        growing("c8", (3,))
    with pytest.raises(ChunkShapeError, match=r"exceed the sample shape \(3,\)"):
        growing("i2", (3,), chunks=(10, 4))


# --------------------------------------------------------------------------- #
# mpi.write (funnel mode under mpiexec; few examples, one launch each)          #
# --------------------------------------------------------------------------- #
MPI_JOB = Path(__file__).with_name("any_shape_mpi_job.py")


@settings(FAST, max_examples=3, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: 1 launch each
@given(st.lists(arrays(max_blocks=40), min_size=3, max_size=3), st.sampled_from(CODECS), st.integers(0, 2**16))
def test_mpi_write_any_shape(arrs, spec, seed):
    from test_mpi import _mpiexec

    specs = [{"shape": list(x.shape), "dtype": x.dtype.str, "chunks": [list(c) for c in a.chunks],
              "seed": seed + i} for i, (x, a) in enumerate(arrs)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mpi.h5"
        (Path(tmp) / "spec.json").write_text(json.dumps({"arrays": specs, "codec": spec}))
        proc = subprocess.run([_mpiexec(sys.executable), "-n", "2", sys.executable, str(MPI_JOB), str(out)],
                              capture_output=True, text=True, timeout=240, cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with h5py.File(out, "r") as f, h5py.File(out.with_suffix(".nwb"), "r") as nwb:
            for i, s in enumerate(specs):
                x = values(tuple(s["shape"]), s["dtype"], s["seed"])
                for d, by_hdmf in ((f[f"d{i}"], False), (nwb[f"acquisition/d{i}/data"], True)):
                    assert_same(d[()], x, byte_order_free=by_hdmf)  # hdmf stores big-endian data little-endian
                    assert_chunks_within(d.chunks, x.shape)


def test_repack_and_convert_keep_source_chunks_of_a_growing_file_within_its_data(tmp_path):
    """A live recording's chunks pass its data along time; chunks="source" cuts them to the data."""
    from nwb_dask.tools.convert import convert

    nwb = NWBFile(session_description="live", identifier="live", session_start_time=T0)
    nwb.add_acquisition(TimeSeries(name="ts", data=growing("i2", (4,), chunks=(64, 4)), unit="au", rate=10.0))
    x = values((10, 4), "i2", 3)
    src = tmp_path / "live.nwb"
    with StreamWriter(src, nwb, flush_every=None) as w:
        w.append("ts", x)
    with h5py.File(src, "r") as f:
        assert f["acquisition/ts/data"].chunks == (64, 4) and f["acquisition/ts/data"].shape == (10, 4)
    nwb_dask.repack(src, tmp_path / "re.nwb", chunks="source", min_bytes=0, progress=False)
    with h5py.File(tmp_path / "re.nwb", "r") as f:
        d = f["acquisition/ts/data"]
        assert_same(d[()], x)
        assert d.chunks == (10, 4)
    convert(src, tmp_path / "c.nwb.zarr", min_bytes=0, progress=False)  # chunks="source" by default
    z = zarr.open(str(tmp_path / "c.nwb.zarr"), mode="r")["acquisition/ts/data"]
    assert_same(z[...], x)
    assert z.chunks == (10, 4)

"""DaskDataChunkIterator: plain pynwb writes dask arrays through it."""

from __future__ import annotations

import math
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from hdmf.backends.hdf5 import H5DataIO
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO

from conftest import read_with_plain_pynwb
from nwb_dask import ChunkShapeError, DaskDataChunkIterator, codec
from nwb_dask.testing import ephys_block, ephys_nwbfile, synthetic_ephys


def _tile_check(it, source):
    """Every block is chunk-aligned, equals the source, and they cover it exactly once."""
    covered = np.zeros(source.shape, dtype=np.uint8)
    expected = source.compute() if isinstance(source, da.Array) else source
    for piece in it:
        sel = piece.selection
        for s, c in zip(sel, it.chunk_shape):
            assert s.start % c == 0, (sel, it.chunk_shape)
        np.testing.assert_array_equal(piece.data, expected[sel])
        covered[sel] += 1
    assert (covered == 1).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 200), st.integers(1, 6)), min_size=1, max_size=4),
    st.sampled_from(["i1", "u2", "i4", "f4", "f8", "?", "u8"]),
    st.integers(16, 4096),
    st.booleans(),
    st.data(),
)
def test_blocks_tile_the_array(dims, dtype, block_bytes, prefetch, data):
    shape = tuple(d[0] for d in dims)
    assume(math.prod(shape) <= 50_000)
    dask_chunks = tuple(max(1, -(-s // n)) for s, n in zip(shape, (d[1] for d in dims)))
    x = (np.arange(math.prod(shape)) % 251).astype(dtype).reshape(shape)
    arr = da.from_array(x, chunks=dask_chunks)
    chunk = data.draw(st.sampled_from(["auto", tuple(max(1, s // 3) for s in shape)]))
    it = DaskDataChunkIterator(arr, chunk, block_bytes=block_bytes, chunk_bytes=256, prefetch=prefetch)
    assert it.maxshape == shape and it.dtype == np.dtype(dtype)
    if chunk != "auto":
        assert it.recommended_chunk_shape() == chunk
    assume(math.prod(-(-s // c) for s, c in zip(shape, it.chunk_shape)) <= 2000)
    _tile_check(it, x)


def _write(path, data_io):
    nwbfile = ephys_nwbfile(data_io)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


@pytest.mark.parametrize("spec", ["gzip", ("zstd", {"level": 3}), "none"])
def test_plain_pynwb_reads_what_the_adapter_wrote(tmp_path, spec):
    arr = synthetic_ephys(seconds=2.0, n_channels=64, seed=5, block_samples=7_000)
    c = codec(spec)
    path = tmp_path / "adapter.nwb"
    it = DaskDataChunkIterator(arr, block_bytes=2**20)
    _write(path, H5DataIO(it, **c.h5dataio_kwargs()))
    got = read_with_plain_pynwb(path, "ElectricalSeries", tmp_path)
    np.testing.assert_array_equal(got, arr.compute())
    import h5py

    with h5py.File(path, "r") as f:
        dset = f["acquisition/ElectricalSeries/data"]
        assert dset.chunks == it.chunk_shape
        assert codec_name(dset) == c.name
        assert dset.dtype == np.int16


def codec_name(dset):
    from nwb_dask.codecs import codec_from_dataset

    return codec_from_dataset(dset).name


def test_adapter_without_h5dataio(tmp_path):
    arr = da.from_array(np.arange(30_000, dtype="f8").reshape(3000, 10), chunks=(700, 10))
    path = tmp_path / "plain.nwb"
    _write(path, DaskDataChunkIterator(arr, (500, 10)))
    np.testing.assert_array_equal(read_with_plain_pynwb(path, "ElectricalSeries", tmp_path), arr.compute())


def _peak_while_iterating(seconds, buffer):
    arr = synthetic_ephys(seconds=seconds, seed=1, block_samples=30_000)  # rechunked to fit the buffer
    it = DaskDataChunkIterator(arr, block_bytes=buffer)
    assert math.prod(it.array.chunksize) * 2 <= buffer
    with dask.config.set(scheduler="threads"):
        tracemalloc.start()
        total = 0
        for piece in it:
            total += piece.data.nbytes
            del piece
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert total == arr.nbytes
    return peak


def test_memory_is_bounded_by_the_buffer():
    buffer = 16 * 2**20
    ephys_block(0, 10, seed=1)  # the generator's fixed 32 MiB noise bank is not the iterator's
    small = _peak_while_iterating(5, buffer)  # 115 MB
    large = _peak_while_iterating(30, buffer)  # 690 MB
    # Two blocks in flight (handed out + prefetched), each up to twice the
    # buffer while dask concatenates its source pieces: at most 4 buffers.
    assert large < 4 * buffer, f"peak {large / 2**20:.0f} MiB for a {buffer / 2**20:.0f} MiB buffer"
    assert large < 1.15 * small + 2**20, f"peak grew with the data: {small / 2**20:.0f} -> {large / 2**20:.0f} MiB"


def test_unknown_chunk_sizes_are_computed_or_rejected():
    x = da.from_array(np.arange(1000), chunks=100)
    y = x[x % 3 == 0]
    assert math.isnan(y.shape[0])
    it = DaskDataChunkIterator(y, (50,))
    assert it.maxshape == (334,)
    assert math.isnan(y.shape[0]), "the caller's array was modified"
    _tile_check(it, np.arange(0, 1000, 3))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        DaskDataChunkIterator(y, compute_chunk_sizes=False, name="spike_times")


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="expected a dask.array.Array, got ndarray"):
        DaskDataChunkIterator(np.zeros(3))
    with pytest.raises(ValueError, match="0-d"):
        DaskDataChunkIterator(da.from_array(np.float64(1.0)))
    with pytest.raises(TypeError, match="dtype object"):
        DaskDataChunkIterator(da.from_array(np.array(["a", 1], dtype=object), chunks=1))
    with pytest.raises(ChunkShapeError, match="'acquisition/ES/data'.*exceeds"):
        DaskDataChunkIterator(da.zeros((10, 4)), (5, 8), name="acquisition/ES/data")
    with pytest.raises(ValueError, match="block_bytes must be positive"):
        DaskDataChunkIterator(da.zeros((10, 4)), block_bytes=0)


def test_task_errors_propagate_unchanged():
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("sensor unplugged")
        return block

    arr = da.zeros((100, 4), chunks=(10, 4)).map_blocks(boom, dtype=float)
    it = DaskDataChunkIterator(arr, (10, 4), block_bytes=10 * 4 * 8)
    next(it), next(it)
    with pytest.raises(RuntimeError, match="sensor unplugged"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_wrong_block_shape_is_reported():
    arr = da.zeros((100, 4), chunks=(10, 4)).map_blocks(lambda b: b[:5], dtype=float)
    it = DaskDataChunkIterator(arr, (10, 4), block_bytes=320)
    with pytest.raises(ValueError, match="computed to shape \\(5, 4\\), expected \\(10, 4\\)"):
        next(it)

"""Chunk shapes and dask block alignment."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nwb_dask.chunking import (
    DEFAULT_CHUNK_BYTES,
    ChunkShapeError,
    align_to_chunks,
    block_shape,
    chunk_offsets,
    chunk_overlaps,
    fit_to_blocks,
    guess_chunk_shape,
    is_aligned,
    resolve_chunk_shape,
)

shapes = st.lists(st.integers(1, 3000), min_size=1, max_size=4).map(tuple)
dtypes = st.sampled_from(["i1", "i2", "u4", "f4", "f8", "?"])
targets = st.integers(1, 8 * 2**20)


@settings(max_examples=300, deadline=None)
@given(shapes, dtypes, targets)
def test_guess_within_shape_and_budget(shape, dtype, target):
    chunk = guess_chunk_shape(shape, dtype, target)
    assert len(chunk) == len(shape)
    assert all(1 <= c <= s for c, s in zip(chunk, shape))
    itemsize = np.dtype(dtype).itemsize
    # Within the target, unless even the smallest possible chunk row exceeds it.
    nbytes = math.prod(chunk) * itemsize
    assert nbytes <= max(target, itemsize) or all(c == 1 for c in chunk[:1]), (chunk, nbytes)
    # Never pointlessly small: a dataset smaller than the target is one chunk
    # (time-series rule for 2-D may split channels only when they exceed the budget).
    if math.prod(shape) * itemsize <= target:
        assert chunk == shape


def test_time_series_rule_keeps_all_channels():
    assert guess_chunk_shape((1_800_000, 384), "int16") == (DEFAULT_CHUNK_BYTES // 2 // 384, 384)
    # A short window across all channels touches one or two chunks.
    chunk = guess_chunk_shape((1_800_000, 384), "int16", 2**20)
    assert chunk[1] == 384 and chunk[0] >= 1024


def test_time_series_rule_whole_channel_groups():
    # 0.5 MiB cannot hold 1024 samples of 384 channels: whole 64-channel
    # groups, in a number that tiles the 6 groups evenly.
    chunk = guess_chunk_shape((1_800_000, 384), "int16", 2**19)
    assert chunk[1] % 64 == 0 and 384 % chunk[1] == 0
    assert chunk[0] * chunk[1] * 2 <= 2**19
    # Channel counts that are not multiples of 64 use a divisor near 64.
    chunk = guess_chunk_shape((10**6, 10000), "float64")
    assert 10000 % chunk[1] == 0


def test_images_keep_whole_frames():
    assert guess_chunk_shape((10_000, 512, 512), "uint16") == (DEFAULT_CHUNK_BYTES // (512 * 512 * 2), 512, 512)
    big = guess_chunk_shape((100, 4096, 4096), "uint16")
    assert big[0] == 1 and math.prod(big) * 2 <= DEFAULT_CHUNK_BYTES


def test_unlimited_axis_gets_a_useful_extent():
    assert guess_chunk_shape((0, 384), "int16", maxshape=(None, 384)) == (DEFAULT_CHUNK_BYTES // 2 // 384, 384)


def test_scalar_is_an_error():
    with pytest.raises(ChunkShapeError, match="scalar"):
        guess_chunk_shape((), "f8")


@pytest.mark.parametrize(
    "chunks, match",
    [
        ((10,), "has 1 dimensions but the data shape \\(100, 4\\) has 2"),
        ((0, 4), "invalid extent 0 on axis 0"),
        ((10, 2.5), "invalid extent 2.5 on axis 1"),
        ((10, True), "invalid extent True on axis 1"),
        ((10, 5), "exceeds the maximum shape \\(100, 4\\) on axis 1"),
        ("big", "chunks='big' is not understood"),
        (False, "is not understood"),
        (7, "must be 'auto' or a tuple"),
    ],
)
def test_resolve_rejects_bad_shapes(chunks, match):
    with pytest.raises(ChunkShapeError, match=match) as err:
        resolve_chunk_shape(chunks, (100, 4), "int16", name="acquisition/ES/data")
    assert "acquisition/ES/data" in str(err.value)


def test_resolve_rejects_chunks_over_4gib():
    with pytest.raises(ChunkShapeError, match="4 GiB"):
        resolve_chunk_shape((2**20, 2**10), (2**30, 2**10), "float64")


def test_resolve_honours_user_shape():
    assert resolve_chunk_shape((10, -1), (100, 4), "i2") == (10, 4)
    assert resolve_chunk_shape((10, None), (100, 4), "i2") == (10, 4)
    assert resolve_chunk_shape((500, 4), (100, 4), "i2", maxshape=(None, 4)) == (500, 4)
    assert resolve_chunk_shape("auto", (100, 4), "i2") == (100, 4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 500), st.integers(1, 60)), min_size=1, max_size=3),
    st.integers(1, 2**16),
    st.data(),
)
def test_block_shape_is_whole_chunks_within_budget(dims, budget, data):
    shape = tuple(d[0] for d in dims)
    chunk = tuple(min(d[1], d[0]) for d in dims)
    prefer = data.draw(st.none() | st.tuples(*[st.integers(1, 600) for _ in shape]))
    block = block_shape(chunk, shape, "i2", budget, prefer=prefer)
    for b, c, s in zip(block, chunk, shape):
        assert b % c == 0 or b >= s, (block, chunk, shape)
    nbytes = math.prod(block) * 2
    assert nbytes <= budget or all(min(b, s) == min(c, s) for b, c, s in zip(block, chunk, shape))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(1, 40), st.integers(1, 8)), min_size=1, max_size=3),
    st.integers(64, 2**15),
)
def test_align_to_chunks_gives_chunk_aligned_blocks(dims, budget):
    shape = tuple(d[0] for d in dims)
    chunk = tuple(min(d[1], d[0]) for d in dims)
    # at most 8 dask blocks per axis and a few hundred chunks keep the graph small
    dask_chunks = tuple(max(1, -(-d[0] // d[2])) for d in dims)
    assume(math.prod(-(-s // c) for s, c in zip(shape, chunk)) <= 400)
    x = np.arange(math.prod(shape), dtype=np.int16).reshape(shape)
    arr = da.from_array(x, chunks=dask_chunks)
    aligned = align_to_chunks(arr, chunk, budget)
    assert is_aligned(aligned.chunks, chunk)
    np.testing.assert_array_equal(aligned.compute(), x)
    # Each block splits into whole chunks that cover it exactly once.
    offsets = [np.cumsum((0,) + c) for c in aligned.chunks]
    for idx in np.ndindex(*aligned.numblocks):
        sel = tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, idx))
        covered = np.zeros([s.stop - s.start for s in sel], dtype=int)
        for start, local in chunk_offsets(sel, chunk):
            assert all(st_ % c == 0 for st_, c in zip(start, chunk))
            covered[local] += 1
        assert (covered == 1).all()


def test_aligned_array_is_not_rechunked():
    arr = da.zeros((1000, 64), dtype="i2", chunks=(200, 64))
    assert align_to_chunks(arr, (100, 64), 2**20) is arr


def test_chunk_offsets_rejects_misaligned_blocks():
    with pytest.raises(ChunkShapeError, match="not aligned"):
        list(chunk_offsets((slice(5, 20),), (10,)))


def test_fit_to_blocks():
    assert fit_to_blocks((5461, 384), ((30000, 30000, 12000), (384,))) == (5000, 384)
    assert fit_to_blocks((5461, 384), ((1000,) * 9, (384,))) == (5000, 384)
    # Irregular dask chunks: keep the guess.
    assert fit_to_blocks((5461, 384), ((30000, 20000, 12000), (384,))) == (5461, 384)
    # A prime block extent has no divisor nearby: keep the guess.
    assert fit_to_blocks((100, 3), ((1009, 1009), (3,))) == (100, 3)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_chunk_overlaps_tile_any_box(data):
    shape = data.draw(st.lists(st.integers(1, 60), min_size=1, max_size=3).map(tuple))
    chunks = tuple(data.draw(st.integers(1, n)) for n in shape)
    box = []
    for n in shape:
        a = data.draw(st.integers(0, n - 1))
        box.append(slice(a, data.draw(st.integers(a + 1, n))))
    x = np.arange(math.prod(shape)).reshape(shape)
    out = np.full(tuple(s.stop - s.start for s in box), -1)
    for offset, local, within in chunk_overlaps(box, chunks):
        assert all(o % c == 0 for o, c in zip(offset, chunks))
        chunk = x[tuple(slice(o, o + c) for o, c in zip(offset, chunks))]
        assert (out[local] == -1).all()  # no element written twice
        out[local] = chunk[within]
    np.testing.assert_array_equal(out, x[tuple(box)])

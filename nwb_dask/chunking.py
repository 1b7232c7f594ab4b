"""HDF5 chunk shapes, and dask blocks aligned to them.

Every module that needs a chunk shape or a block layout asks this one:

* :func:`guess_chunk_shape` chooses an HDF5 chunk shape from shape, dtype and a
  target size, with a time-series rule (time x channels, whole channel groups);
* :func:`resolve_chunk_shape` honours and validates a user-given shape;
* :func:`check_chunk_shape` holds the one invariant every chunk shape meets,
  ``1 <= chunk[i] <= max(1, shape[i])`` on fixed axes, and
  :func:`chunked_maxshape` the maximum shape a chunked dataset is created with
  (0-length axes unlimited, see docs/chunking.md "Empty axes");
* :func:`block_shape` / :func:`align_to_chunks` make dask blocks whole
  multiples of the HDF5 chunk shape on every axis (except at the edges), so
  a block splits into complete chunks that can be encoded independently.

The default target, :data:`DEFAULT_CHUNK_BYTES`, comes from
``benchmarks/chunking.py`` (see docs/chunking.md for the table).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence, Union

import numpy as np

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "CLOUD_CHUNK_BYTES",
    "DEFAULT_BLOCK_BYTES",
    "CHANNEL_GROUP",
    "MIN_TIME_SAMPLES",
    "ChunkShapeError",
    "guess_chunk_shape",
    "resolve_chunk_shape",
    "check_chunk_shape",
    "chunked_maxshape",
    "block_shape",
    "align_to_chunks",
    "is_aligned",
    "fit_to_blocks",
    "chunk_offsets",
    "chunk_overlaps",
    "block_selections",
    "is_large_numeric",
    "READ_MIN_BYTES",
    "REWRITE_MIN_BYTES",
]

#: Default uncompressed bytes per HDF5 chunk (1 MiB): see docs/chunking.md.  A chunk
#: that fits HDF5's default 1 MiB chunk cache is decompressed once by plain
#: h5py readers however they slice it.
DEFAULT_CHUNK_BYTES = 2**20
#: Target uncompressed bytes per chunk of cloud-optimized files (``cloud=True``, chunks "auto"): 2 MiB,
#: twice the local default, so a range read (one round trip of ~30-100 ms plus its bytes at ~50-100 MB/s
#: per connection) carries more data per request.  Not larger: in a paged file (8 MiB pages,
#: nwb_dask.nwb.io.CLOUD_PAGE_BYTES) HDF5 never splits a chunk smaller than a page across pages, so each
#: page wastes up to one compressed chunk; measured (docs/writer.md) 4 MiB chunks made files ~30% larger,
#: 2 MiB ones ~7% (most of it the fixed last pages).
CLOUD_CHUNK_BYTES = 2 * 2**20
#: Default uncompressed bytes per dask block handed to writers (64 MiB).
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: Channels are kept together in groups of this many when all channels do not fit.
CHANNEL_GROUP = 64
#: A time-series chunk keeps at least this many samples along time.
MIN_TIME_SAMPLES = 1024
#: HDF5 refuses chunks of 4 GiB or more.
_HDF5_MAX_CHUNK_BYTES = 2**32 - 1

ChunksArg = Union[None, str, bool, Sequence[int]]


class ChunkShapeError(ValueError):
    """A chunk shape is invalid for the dataset it is meant for."""


def _label(name: str | None) -> str:
    return f"dataset {name!r}" if name else "dataset"


def check_chunk_shape(
    chunk_shape: Sequence[int],
    shape: Sequence[int],
    maxshape: Sequence[int | None] | None = None,
    *,
    name: str | None = None,
) -> tuple[int, ...]:
    """The invariant of every chunk shape nwb_dask chooses or accepts.

    ``1 <= chunk[i] <= max(1, maxshape[i])`` on every axis, ``maxshape``
    defaulting to ``shape``: a chunk never extends past the data on a fixed
    axis.  Only along an axis that may grow (``maxshape[i]`` None, or larger
    than ``shape[i]``) can a chunk be longer than the current data; it is
    filled as the dataset grows.  A 0-length axis still has chunk extent 1
    (HDF5 chunks have at least one element; see :func:`chunked_maxshape`).

    Parameters
    ----------
    chunk_shape, shape : sequence of int
    maxshape : sequence of int or None, optional
        ``None`` entries mark unlimited axes; default: ``shape`` (fixed).
    name : str, optional
        Dataset name for the message.

    Returns
    -------
    tuple of int
        ``chunk_shape`` as plain ints.

    Raises
    ------
    ChunkShapeError
        The invariant does not hold; the message names the dataset, its shape,
        the chunk shape and the axis.
    """
    shape = tuple(int(s) for s in shape)
    maxshape = shape if maxshape is None else tuple(maxshape)
    chunk = tuple(chunk_shape)
    if len(chunk) != len(shape) or len(maxshape) != len(shape):
        raise ChunkShapeError(
            f"{_label(name)}: chunk shape {chunk} has {len(chunk)} dimensions but the data shape {shape} "
            f"has {len(shape)}"
        )
    for axis, (c, s, m) in enumerate(zip(chunk, shape, maxshape)):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise ChunkShapeError(
                f"{_label(name)} of shape {shape}: chunk shape {chunk} has an invalid extent {c!r} on axis {axis}; "
                "extents must be positive integers"
            )
        if m is not None and c > max(1, m):
            raise ChunkShapeError(
                f"{_label(name)} of shape {shape}: chunk shape {chunk} exceeds the maximum shape {maxshape} on "
                f"axis {axis} ({c} > {max(1, m)}); use at most the axis length, or -1 for the whole axis"
            )
    return tuple(int(c) for c in chunk)


def chunked_maxshape(shape: Sequence[int], maxshape: Sequence[int | None] | None = None) -> tuple[int | None, ...]:
    """The maximum shape to create a chunked dataset of ``shape`` with.

    ``maxshape`` (default: ``shape``), with every 0-length fixed axis made
    unlimited: a chunk is at least 1 element on every axis, and h5py refuses
    a chunk extent beyond a fixed axis (``create_dataset(shape=(0, 64),
    chunks=(1, 64))`` raises), whereas ``maxshape=(None, 64)`` is accepted and
    reads back as the same empty array in h5py and pynwb.

    Examples
    --------
    >>> chunked_maxshape((0, 64)), chunked_maxshape((100, 3))
    ((None, 64), (100, 3))
    """
    shape = tuple(int(s) for s in shape)
    maxshape = shape if maxshape is None else tuple(maxshape)
    return tuple(None if m is None or (s == 0 and m == 0) else int(m) for s, m in zip(shape, maxshape))


def guess_chunk_shape(
    shape: Sequence[int],
    dtype: np.dtype | str,
    target_bytes: int = DEFAULT_CHUNK_BYTES,
    *,
    maxshape: Sequence[int | None] | None = None,
    time_series: bool = True,
    channel_group: int = CHANNEL_GROUP,
) -> tuple[int, ...]:
    """Choose an HDF5 chunk shape near ``target_bytes``.

    Parameters
    ----------
    shape : sequence of int
        Dataset shape (current shape for growing datasets).
    dtype : numpy dtype
        Element type.
    target_bytes : int
        Wanted uncompressed chunk size; the result is at most this (unless a
        single row along the trailing axes is larger).
    maxshape : sequence of int or None, optional
        Maximum shape; ``None`` entries mark unlimited axes, which may get a
        chunk extent beyond the current size.
    time_series : bool
        Treat axis 0 as time (the NWB convention).  Trailing axes are filled
        first: all channels (or whole groups of ``channel_group`` channels for
        2-D data), whole frames for images; time takes the rest of the budget.
        With ``False``, axes are filled from the last one backwards.
    channel_group : int
        Channel group size for 2-D time series with many channels.

    Returns
    -------
    tuple of int
        Chunk shape, every extent >= 1 and <= the (max)shape.

    Examples
    --------
    >>> guess_chunk_shape((1_800_000, 384), "int16")
    (1365, 384)
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ChunkShapeError("a scalar (0-d) dataset cannot be chunked")
    if target_bytes <= 0:
        raise ChunkShapeError(f"target_bytes must be positive, got {target_bytes}")
    itemsize = max(1, np.dtype(dtype).itemsize)
    maxshape = tuple(shape) if maxshape is None else tuple(maxshape)
    # Upper bound per axis: the current extent, or the target for unlimited axes.
    limit = [
        max(1, s) if m is not None else max(1, s, target_bytes // itemsize) for s, m in zip(shape, maxshape)
    ]
    budget = max(1, target_bytes // itemsize)  # elements per chunk
    chunk = [1] * len(shape)

    if time_series and len(shape) == 2:
        n_ch = limit[1]
        min_t = min(limit[0], MIN_TIME_SAMPLES)
        if n_ch * min_t <= budget:
            chunk[1] = n_ch
        else:
            group = _channel_group(n_ch, channel_group)
            fit = max(1, budget // (min_t * group))  # whole groups that fit the budget
            total = math.ceil(n_ch / group)
            # Prefer a number of groups that tiles the channels evenly.
            groups = next(k for k in range(min(fit, total), 0, -1) if total % k == 0)
            chunk[1] = min(n_ch, groups * group)
        chunk[0] = max(1, min(limit[0], budget // chunk[1]))
        return tuple(chunk)

    # Fill trailing axes first (whole frames / rows), then the leading axes.
    order = range(len(shape) - 1, -1, -1)
    if time_series and len(shape) > 2:
        # Images: split a frame that exceeds the budget along its largest axes,
        # keeping at least MIN_TIME_SAMPLES frames is not possible then.
        frame = limit[1:]
        while math.prod(frame) > budget and max(frame) > 1:
            i = int(np.argmax(frame))
            frame[i] = math.ceil(frame[i] / 2)
        chunk[1:] = frame
        chunk[0] = max(1, min(limit[0], budget // math.prod(frame)))
        return tuple(chunk)
    remaining = budget
    for i in order:
        chunk[i] = max(1, min(limit[i], remaining))
        remaining = max(1, remaining // chunk[i])
    return tuple(chunk)


def _channel_group(n_channels: int, group: int) -> int:
    """A group size near ``group`` that divides ``n_channels`` when one exists."""
    if n_channels <= group:
        return n_channels
    for g in range(group, group // 2, -1):
        if n_channels % g == 0:
            return g
    return group


def resolve_chunk_shape(
    chunks: ChunksArg,
    shape: Sequence[int],
    dtype: np.dtype | str,
    *,
    maxshape: Sequence[int | None] | None = None,
    target_bytes: int = DEFAULT_CHUNK_BYTES,
    name: str | None = None,
) -> tuple[int, ...]:
    """Honour a user's chunk option, or guess one.

    Parameters
    ----------
    chunks : None, "auto", True, or sequence of int
        ``None``/``"auto"``/``True`` choose with :func:`guess_chunk_shape`;
        a sequence is validated and returned.  ``-1`` or ``None`` inside the
        sequence mean "the whole axis".
    shape, dtype, maxshape, target_bytes
        As for :func:`guess_chunk_shape`.
    name : str, optional
        Dataset name used in error messages.

    Returns
    -------
    tuple of int

    Raises
    ------
    ChunkShapeError
        Wrong number of dimensions, non-positive or non-integer extents, an
        extent beyond a fixed maximum shape, or a chunk of 4 GiB or more.
    """
    shape = tuple(int(s) for s in shape)
    maxshape = tuple(shape) if maxshape is None else tuple(maxshape)
    if chunks is None or chunks is True or (isinstance(chunks, str) and chunks == "auto"):
        return check_chunk_shape(guess_chunk_shape(shape, dtype, target_bytes, maxshape=maxshape), shape, maxshape,
                                 name=name)
    if isinstance(chunks, str) or chunks is False:
        raise ChunkShapeError(f"{_label(name)}: chunks={chunks!r} is not understood; use 'auto' or a tuple of ints")
    try:
        given = tuple(chunks)
    except TypeError:
        raise ChunkShapeError(f"{_label(name)}: chunks={chunks!r} must be 'auto' or a tuple of ints") from None
    if len(given) != len(shape):
        raise ChunkShapeError(
            f"{_label(name)}: chunk shape {given} has {len(given)} dimensions but the data shape {shape} has {len(shape)}"
        )
    # -1 / None: the whole axis (at least 1 element, also for a 0-length axis).
    whole = [c is None or (isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c == -1) for c in given]
    out = list(check_chunk_shape([max(1, s) if w else c for w, c, s in zip(whole, given, shape)], shape, maxshape,
                                 name=name))
    nbytes = math.prod(out) * np.dtype(dtype).itemsize
    if nbytes > _HDF5_MAX_CHUNK_BYTES:
        raise ChunkShapeError(f"{_label(name)}: chunk shape {tuple(out)} is {nbytes} bytes; HDF5 chunks must be < 4 GiB")
    return tuple(out)


def block_shape(
    chunk_shape: Sequence[int],
    shape: Sequence[int],
    dtype: np.dtype | str,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    prefer: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """A regular block shape made of whole chunks, within a memory budget.

    Parameters
    ----------
    chunk_shape : sequence of int
        HDF5 chunk shape.
    shape : sequence of int
        Array shape.
    dtype : numpy dtype
    block_bytes : int
        Upper bound on a block's uncompressed size (a block is never smaller
        than one chunk, even if the chunk exceeds the bound).
    prefer : sequence of int, optional
        Typical block extents of the source (e.g. a dask array's chunks);
        each is rounded to a multiple of the chunk extent.  By default blocks
        grow along the trailing axes first, then time.

    Returns
    -------
    tuple of int
        Block extents, each a multiple of the chunk extent or the whole axis.
    """
    itemsize = np.dtype(dtype).itemsize
    nchunks = [max(1, math.ceil(s / c)) for s, c in zip(shape, chunk_shape)]  # chunks per axis
    if prefer is not None:
        mult = [min(n, max(1, round(p / c))) for p, c, n in zip(prefer, chunk_shape, nchunks)]
    else:
        mult = [1] * len(shape)
        budget = max(1, block_bytes // (math.prod(chunk_shape) * itemsize))
        for i in range(len(shape) - 1, -1, -1):
            mult[i] = max(1, min(nchunks[i], budget))
            budget = max(1, budget // mult[i])
    # Shrink the largest multiple until the block fits the budget.
    while math.prod(m * c for m, c in zip(mult, chunk_shape)) * itemsize > block_bytes and max(mult) > 1:
        i = int(np.argmax(mult))
        mult[i] = max(1, mult[i] // 2)
    return tuple(min(m * c, max(s, c)) for m, c, s in zip(mult, chunk_shape, shape))


def is_aligned(chunks: Sequence[Sequence[int]], chunk_shape: Sequence[int]) -> bool:
    """Whether every block boundary of dask ``chunks`` falls on an HDF5 chunk boundary."""
    for axis_chunks, c in zip(chunks, chunk_shape):
        for size in axis_chunks[:-1]:
            if size % c:
                return False
    return True


def fit_to_blocks(chunk_shape: Sequence[int], chunks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Nudge a guessed chunk shape so it tiles a dask array's blocks.

    On each axis where the dask blocks are regular with extent ``b``: a chunk
    extent ``c < b`` becomes the largest divisor of ``b`` in ``[c/2, c]``; a
    chunk extent ``c > b`` becomes the nearest multiple of ``b`` within a
    factor 1.5, unless that multiple passes the axis length (the sum of the
    axis' blocks).  Where neither applies the extent is kept, and the blocks
    are rechunked instead.  Blocks that are already whole chunks cost no
    rechunk and no recomputation of source tasks shared between blocks.

    No extent is made longer than its axis: rounding up to a multiple of
    ``b`` past the data once made 100-channel blocks of 384 channels give
    400-channel chunks, which HDF5 refuses.  Such a guess (all 384 channels)
    is kept, and the blocks are merged along that axis instead.

    Parameters
    ----------
    chunk_shape : sequence of int
        A guessed HDF5 chunk shape.
    chunks : sequence of sequence of int
        The dask array's ``.chunks``.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> fit_to_blocks((5461, 384), ((30000, 30000, 12000), (384,)))
    (5000, 384)
    >>> fit_to_blocks((1365, 384), ((30000,) * 10, (100, 100, 100, 84)))
    (1250, 384)
    """
    out = []
    for c, axis_chunks in zip(chunk_shape, chunks):
        length = max(1, int(sum(axis_chunks)))
        body = axis_chunks[:-1] if len(axis_chunks) > 1 else axis_chunks
        b = body[0] if body and all(x == body[0] for x in body) else 0
        if b and c < b:
            c = next((d for d in range(c, (c + 1) // 2 - 1, -1) if d > 0 and b % d == 0), c)
        elif b and c > b:
            m = max(1, round(c / b))
            if 2 * m * b >= c and m * b <= 1.5 * c and m * b <= length:
                c = m * b
        out.append(int(c))
    return tuple(out)


def align_to_chunks(array, chunk_shape: Sequence[int], block_bytes: int = DEFAULT_BLOCK_BYTES):
    """Rechunk a dask array so each block is whole HDF5 chunks (edges excepted).

    An array whose blocks are already aligned and within the budget is
    returned unchanged (no rechunk tasks are added).

    Parameters
    ----------
    array : dask.array.Array
        Source with known chunk sizes.
    chunk_shape : sequence of int
        HDF5 chunk shape.
    block_bytes : int
        Budget per block.

    Returns
    -------
    dask.array.Array
    """
    chunk_shape = tuple(chunk_shape)
    largest = math.prod(max(c) if c else 0 for c in array.chunks) * array.dtype.itemsize
    if is_aligned(array.chunks, chunk_shape) and largest <= max(block_bytes, math.prod(chunk_shape) * array.dtype.itemsize):
        return array
    prefer = [max(c) if c else 1 for c in array.chunks]
    blocks = block_shape(chunk_shape, array.shape, array.dtype, block_bytes, prefer=prefer)
    return array.rechunk(blocks)


def block_selections(chunks: Sequence[Sequence[int]]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Every block of a dask array's ``chunks``, in C order.

    Yields
    ------
    (block_id, selection)
        The block's index (for ``array.blocks[block_id]``) and its place in
        the array as slices.
    """
    edges = [np.cumsum((0,) + tuple(c)) for c in chunks]
    for block_id in np.ndindex(*(len(c) for c in chunks)):
        yield block_id, tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, block_id))


def chunk_offsets(
    selection: Sequence[slice], chunk_shape: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """HDF5 chunks covering a chunk-aligned block.

    Parameters
    ----------
    selection : sequence of slice
        The block's position in the dataset (starts on chunk boundaries).
    chunk_shape : sequence of int

    Yields
    ------
    (offset, local)
        ``offset``: the chunk's start in dataset coordinates (for
        ``write_direct_chunk``); ``local``: its slice within the block.
    """
    ranges = []
    for sel, c in zip(selection, chunk_shape):
        if sel.start % c:
            raise ChunkShapeError(f"block starting at {sel.start} is not aligned to chunk extent {c}")
        ranges.append(range(sel.start, sel.stop, c))
    for offset in np.ndindex(*(len(r) for r in ranges)):
        start = tuple(r[i] for r, i in zip(ranges, offset))
        local = tuple(
            slice(s - sel.start, min(s + c, sel.stop) - sel.start) for s, sel, c in zip(start, selection, chunk_shape)
        )
        yield start, local


def chunk_overlaps(
    selection: Sequence[slice], chunk_shape: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """HDF5 chunks overlapping any box of step-1 slices (aligned or not).

    Parameters
    ----------
    selection : sequence of slice
        The box, in dataset coordinates (``start`` and ``stop`` set).
    chunk_shape : sequence of int

    Yields
    ------
    (offset, local, within)
        ``offset``: the chunk's start in dataset coordinates; ``local``: the
        overlap's place in the box; ``within``: the overlap's place in the chunk.

    Examples
    --------
    >>> [(o, l[0], w[0]) for o, l, w in chunk_overlaps([slice(5, 25)], [10])]
    [((0,), slice(0, 5, None), slice(5, 10, None)), ((10,), slice(5, 15, None), slice(0, 10, None)), ((20,), slice(15, 20, None), slice(0, 5, None))]
    """
    ranges = [range(sel.start - sel.start % c, sel.stop, c) for sel, c in zip(selection, chunk_shape)]
    for index in np.ndindex(*(len(r) for r in ranges)):
        offset = tuple(r[i] for r, i in zip(ranges, index))
        lo = [max(o, sel.start) for o, sel in zip(offset, selection)]
        hi = [min(o + c, sel.stop) for o, sel, c in zip(offset, selection, chunk_shape)]
        local = tuple(slice(a - sel.start, b - sel.start) for a, b, sel in zip(lo, hi, selection))
        within = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset))
        yield offset, local, within


# --------------------------------------------------------------------------- #
# "is this a large numeric dataset" (readers, rewriters, info: one rule)      #
# --------------------------------------------------------------------------- #
#: read_nwb / daskify: numeric datasets at least this large (uncompressed) become dask arrays.
READ_MIN_BYTES = 16 * 2**20
#: repack / convert: datasets at least this large are rewritten by the parallel writer (the rest is exported).
REWRITE_MIN_BYTES = 2**20
#: Numbers and booleans: what nwb_dask's readers and writers take over.
NUMERIC_KINDS = "biufc?"


def is_large_numeric(shape: Sequence[int] | None, dtype: np.dtype | str, min_bytes: int, *,
                     kinds: str = NUMERIC_KINDS) -> bool:
    """Whether a dataset of ``shape`` and ``dtype`` is a large numeric one: worth dask, the parallel writer, a hint.

    An array (not a scalar) of a dtype kind in ``kinds`` with at least
    ``min_bytes`` uncompressed bytes (:data:`READ_MIN_BYTES` for reads,
    :data:`REWRITE_MIN_BYTES` for rewrites).  Empty arrays count only when
    ``min_bytes`` is 0 or less, as ``nbytes >= min_bytes`` says (writers,
    which have no block to write for them, also ask for ``size > 0``).
    """
    dtype = np.dtype(dtype)
    if not shape or dtype.kind not in kinds:  # a scalar (shape ()), or h5py's empty dataspace (shape None)
        return False
    return math.prod(int(s) for s in shape) * dtype.itemsize >= min_bytes

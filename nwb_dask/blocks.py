"""What a computed block must be before its bytes are stored: one rule for every write path.

A dask array declares a dtype, but its blocks compute whatever their functions
return (``map_blocks(f, dtype=...)`` is trusted, never checked by dask), and a
DataChunkIterator's chunks may hold another dtype than the iterator reports.
Encoding such a block's bytes as if they were the declared dtype stores
garbage; HDF5/numpy casts would silently round, wrap or truncate.
:func:`checked_block` applies one rule, used by the parallel writer (every
scheduler, HDF5 filters inside or outside HDF5), repack and consolidate, the
DataChunkIterator queue, :class:`~nwb_dask.DaskDataChunkIterator`, NWB-Zarr,
MPI and live appends:

* a block of the declared dtype passes untouched (no copy, no check);
* a block of another numeric or boolean dtype is converted to the declared
  dtype when every value survives exactly (``int16`` computed for
  ``float64``, ``3.0`` computed for ``int16``, ``>i2`` for ``<i2``, ...);
* otherwise (fractions or NaN/inf into integers, values out of range, floats
  that the declared float rounds, integers beyond a float's 2**mantissa, an
  imaginary part into reals, strings or objects into numbers, masked values)
  :class:`BlockDtypeError` names the dataset, the block, both dtypes and the
  first value that would change.

Datasets of non-numeric dtypes (strings, references, compounds) are left to
h5py, which converts or refuses them itself.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["BlockDtypeError", "as_dask_array", "block_label", "checked_array", "checked_block"]

_NUMERIC = "biufc"


class BlockDtypeError(ValueError, TypeError):
    """A computed block holds values the declared dtype cannot store exactly.

    A ``ValueError`` like the package's other write errors, and a ``TypeError``
    as the live writer's dtype refusals always were.
    """


def block_label(name: str | None, selection: Sequence[slice] | None = None, index: Sequence[int] | None = None) -> str:
    """``"dataset '/acquisition/ts/data' block (1, 0) at [100:200, 0:4]"``, for messages."""
    parts = [f"dataset {name!r}"] if name else []
    if index is not None and len(index):
        parts.append(f"block {tuple(int(i) for i in index)}")
    elif selection is not None:
        parts.append("block")
    if selection is not None:
        parts.append("at [" + ", ".join(f"{s.start}:{s.stop}" for s in selection) + "]")
    return " ".join(parts) or "block"


def checked_block(
    block: Any,
    dtype: Any,
    *,
    shape: Sequence[int] | None = None,
    stored: Any = None,
    label: str = "block",
    what: str = "data",
    selection: Sequence[slice] | None = None,
) -> np.ndarray:
    """The computed ``block`` as an ndarray of the declared ``dtype`` (then ``stored``), or an error.

    Parameters
    ----------
    block : array-like
        What a task, an iterator or a caller produced (an ndarray, a list, a
        ``numpy.matrix``, a masked array without masked values, ...).
    dtype : numpy dtype
        The dtype the data declares (a dask array's ``dtype``).
    shape : sequence of int, optional
        The shape the block must have.
    stored : numpy dtype, optional
        The dataset's dtype when it differs from the declared one; the checked
        block is then cast to it as h5py would (the documented cast of a dask
        array into a dataset of another dtype, see :func:`nwb_dask.write_dask_array`).
    label, what : str
        Where the block goes and what it is, for messages:
        ``"{label}: {what} of dtype float64 would change when stored as int16..."``.
    selection : sequence of slice, optional
        The block's place in the dataset: offending values are reported at
        their index in the dataset rather than in the block.

    Raises
    ------
    ValueError
        Wrong shape.
    BlockDtypeError
        A value would change in the declared dtype, or the block is not numeric.
    """
    dtype = np.dtype(dtype)
    if isinstance(block, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(block))
        if masked:
            raise BlockDtypeError(f"{label}: {what} is a masked array with {masked} masked value(s); HDF5 stores "
                                  "no mask: fill them (numpy.ma.filled) first")
        block = block.data
    if type(block) is not np.ndarray:
        try:
            block = np.asarray(block)
        except Exception as exc:
            raise BlockDtypeError(f"{label}: {what} of type {type(block).__name__} is not an array numpy can "
                                  f"store: {type(exc).__name__}: {exc}") from exc
    if shape is not None and block.shape != tuple(shape):
        raise ValueError(f"{label}: {what} computed to shape {block.shape}, expected {tuple(shape)} "
                         "(a map_blocks function returned the wrong shape?)")
    if block.dtype != dtype and dtype.kind in _NUMERIC:
        block = _convert(block, dtype, label, what, selection)
    if stored is not None:
        stored = np.dtype(stored)
        if stored != block.dtype and stored.kind in _NUMERIC and block.dtype.kind in _NUMERIC:
            block = block.astype(stored)
    return block


def checked_array(array, name: str | None = None, *, prefix: str = ""):
    """``array`` with each of its own blocks checked (:func:`checked_block`) as it is computed.

    For a dask array about to be rechunked to whole HDF5 chunks: a rechunk
    concatenates blocks, and numpy promotes blocks of mixed dtypes (an
    ``int64`` and a ``float64`` block become ``float64``, rounding integers
    past 2**53) before any later check could see them.  The writers check
    the source blocks here when they rechunk; a block that needs no rechunk
    is checked where it is encoded.  ``prefix`` starts messages (e.g. the
    stream a dask array is appended to), before the block's label.
    """
    return array.map_blocks(_checked_source_block, array.dtype, name, prefix, dtype=array.dtype, meta=array._meta)


def _checked_source_block(block, dtype, name, prefix, block_info=None):
    info = (block_info or {}).get(None)
    if info is None:  # dask probing the function's output type
        return checked_block(block, dtype, label=prefix + block_label(name))
    selection = tuple(slice(a, b) for a, b in info["array-location"])
    return checked_block(block, dtype, shape=tuple(s.stop - s.start for s in selection), selection=selection,
                         label=prefix + block_label(name, selection, info["chunk-location"]))


def _convert(block: np.ndarray, dtype: np.dtype, label: str, what: str, selection) -> np.ndarray:
    """``block`` in ``dtype`` when every value survives, else :class:`BlockDtypeError`."""
    src = block.dtype
    if src.kind not in _NUMERIC:
        raise BlockDtypeError(f"{label}: {what} of dtype {src} are not numbers; they cannot be stored as {dtype}")
    if block.size == 0:
        return np.empty(block.shape, dtype)
    if _exact_cast(src, dtype):
        return block.astype(dtype)
    with np.errstate(all="ignore"):  # overflow / invalid casts are found and reported below
        problem = _first_change(block, dtype)
        if problem is None:
            return (block.real if src.kind == "c" and dtype.kind != "c" else block).astype(dtype)
    reason, flat = problem
    pos = np.unravel_index(flat, block.shape)
    value = block[pos].item()
    if selection is not None:
        pos = tuple(int(p) + s.start for p, s in zip(pos, selection))
    at = "[" + ", ".join(str(int(p)) for p in pos) + "]"
    raise BlockDtypeError(f"{label}: {what} of dtype {src} would change when stored as {dtype}: {value!r} at {at} "
                          f"{reason}; cast the data first (a dask array's blocks must compute the dtype it declares: "
                          "map_blocks(..., dtype=) is trusted, not checked, by dask)")


def _exact_cast(src: np.dtype, dst: np.dtype) -> bool:
    """Whether every value of ``src`` survives in ``dst``: numpy's "safe" casts, less integers wider than a float's mantissa.

    numpy calls int64 -> float64 safe, but 2**53 + 1 becomes 2**53.
    """
    if not np.can_cast(src, dst, "safe"):
        return False
    if src.kind in "iu" and dst.kind in "fc":
        return _int_bits(src) <= np.finfo(dst).nmant + 1
    return True


def _int_bits(dt: np.dtype) -> int:
    return dt.itemsize * 8 - (dt.kind == "i")


def _first(bad: np.ndarray) -> int:
    return int(np.argmax(bad))


def _first_change(block: np.ndarray, dtype: np.dtype) -> tuple[str, int] | None:
    """``(reason, flat index)`` of the first value of ``block`` that ``dtype`` does not hold exactly, or None.

    Checked with comparisons whose results are exact (Python ints for ranges),
    not by casting back: out-of-range casts are undefined in C and saturate on
    some CPUs, so a round trip can compare equal.
    """
    src = block.dtype
    if src.kind == "c":
        if dtype.kind != "c":
            bad = block.imag != 0
            if bad.any():
                return "has an imaginary part", _first(bad)
            return _first_change(block.real, dtype)
        part = np.finfo(dtype).dtype
        return _first_change(block.real, part) or _first_change(block.imag, part)
    flat = block.reshape(-1)
    if dtype.kind in "biu":
        lo, hi = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        if src.kind == "f":
            bad = ~np.isfinite(flat)
            if bad.any():
                return "is not finite", _first(bad)
            bad = flat != np.trunc(flat)
            if bad.any():
                return "is not an integer", _first(bad)
        i = int(np.argmin(flat))
        if int(flat[i]) < lo:
            return f"is below the range of {dtype}", i
        i = int(np.argmax(flat))
        if int(flat[i]) > hi:
            return f"is above the range of {dtype}", i
        return None
    # into a float (complex: its real part holds the value; the imaginary part is 0)
    real = np.finfo(dtype).dtype
    if src.kind in "iu":
        limit = 2 ** (np.finfo(real).nmant + 1)  # every integer up to this magnitude is exact
        if int(flat.min()) >= -limit and int(flat.max()) <= limit:
            return None
        out = flat.astype(real)
        info = np.iinfo(src)
        # out of the source's range (rounded up past its maximum, or inf): not the value
        ok = np.isfinite(out) & (out >= np.float64(info.min)) & (out < np.float64(info.max) + 1.0)
        back = np.where(ok, out, 0).astype(src)
        bad = ~ok | (back != flat)
        return ("is rounded", _first(bad)) if bad.any() else None
    out = flat.astype(real)  # a narrower float
    back = out.astype(src)
    bad = (back != flat) & ~(np.isnan(back) & np.isnan(flat))
    if not bad.any():
        return None
    i = _first(bad)
    return ("overflows" if np.isinf(out[i]) and np.isfinite(flat[i]) else "is rounded"), i


def as_dask_array(array: Any, *, compute_chunk_sizes: bool = True, name: str | None = None):
    """Validate a dask array for writing; compute unknown chunk sizes.

    Parameters
    ----------
    array : dask.array.Array
        The data.
    compute_chunk_sizes : bool
        If the array has unknown (NaN) chunk sizes, as after boolean indexing,
        compute them (this runs the graph once).  With ``False``, raise.
    name : str, optional
        Dataset name for error messages.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    TypeError
        Not a dask array, or an object/structured dtype that cannot be stored
        chunk by chunk.
    ValueError
        A 0-d array, or unknown chunk sizes with ``compute_chunk_sizes=False``.
    """
    import dask.array as da

    label = f"dataset {name!r}" if name else "dask array"
    if not isinstance(array, da.Array):
        raise TypeError(f"{label}: expected a dask.array.Array, got {type(array).__name__}")
    if array.ndim == 0:
        raise ValueError(f"{label}: a 0-d (scalar) array cannot be written chunk by chunk; pass a numpy scalar")
    if array.dtype.kind not in "biufc" and array.dtype.kind != "?":
        raise TypeError(f"{label}: dtype {array.dtype} is not supported for chunked writes (numeric and bool only)")
    if any(math.isnan(s) for s in array.shape):
        if not compute_chunk_sizes:
            raise ValueError(
                f"{label} has unknown chunk sizes (shape {array.shape}); call array.compute_chunk_sizes() "
                "or pass compute_chunk_sizes=True"
            )
        # compute_chunk_sizes() works in place: do it on a twin, not the caller's array.
        array = da.Array(array.dask, array.name, array.chunks, meta=array._meta).compute_chunk_sizes()
    return array

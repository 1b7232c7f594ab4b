"""HDF5's byte shuffle (H5Z_FILTER_SHUFFLE, filter 2): the stage put before gzip, zstd or lz4.

Not a codec of its own: a family with ``shuffle_filter = True`` takes a
boolean ``shuffle`` option, and the pipeline puts :class:`Shuffle` first.
"""

from __future__ import annotations

import numpy as np

from nwb_dask.codecs.base import Stage

__all__ = ["FILTER_SHUFFLE", "Shuffle", "transpose_bytes"]

FILTER_SHUFFLE = 2


class Shuffle(Stage):
    """HDF5's byte shuffle (H5Z_FILTER_SHUFFLE).

    Written with numpy because no library exposes HDF5's exact shuffle on a
    buffer; the rule (skip when itemsize is 1 or there is a single element) is
    H5Z__filter_shuffle's.
    """

    filter_id = FILTER_SHUFFLE

    def encode(self, buf, itemsize):
        return memoryview(transpose_bytes(buf, itemsize, inverse=False)).cast("B")  # the compressor takes buffers

    def decode(self, buf, nbytes, itemsize, dest: np.ndarray | None = None):
        return transpose_bytes(buf, itemsize, inverse=True, dest=dest)


_UINTS = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_SIMD: list = []  # [function or None], found once per process


def _c_kernel(lib, name: str):
    """``planes = f(elements)`` over bitshuffle's exported C kernel ``name``, called through ctypes.

    ctypes drops the GIL for the call (bitshuffle's Cython wrappers hold it):
    encode threads then shuffle in parallel, and the storing thread runs meanwhile.
    """
    import ctypes

    c = getattr(lib, name)
    c.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    c.restype = ctypes.c_int64

    def planes(elements: np.ndarray) -> np.ndarray:
        src = np.ascontiguousarray(elements)
        out = np.empty(src.nbytes, np.uint8)
        if c(src.ctypes.data, out.ctypes.data, src.size, src.itemsize) < 0:
            raise RuntimeError(f"bitshuffle {name} failed")
        return out

    planes.__name__ = name
    return planes


def _simd_transpose():
    """bitshuffle's SIMD byte transpose (elements -> byte planes, HDF5's shuffle), if installed and right here; else None.

    numpy's per-plane strided copy ran at 1.3 GB/s on blocks read from memory
    (a fifth of a gzip-4 + shuffle write's CPU time); bitshuffle's
    ``bshuf_trans_byte_elem_SSE`` at 5.7 GB/s (``benchmarks/shuffle.py``).  No
    library exposes HDF5's shuffle on a buffer with SIMD under a documented
    Python name: bitshuffle's extension exports these C kernels (its own tests
    call their Python wrappers), so each candidate is first checked against
    the numpy transpose on a probe of every element size and odd lengths, and
    any error or difference keeps numpy.
    """
    if _SIMD:
        return _SIMD[0]
    found = None
    try:
        import ctypes

        from bitshuffle import ext  # optional: the numpy path is the reference

        lib = ctypes.CDLL(ext.__file__)
    except Exception:  # not installed, a broken build, no ctypes
        lib = None
    rng = np.random.default_rng(0)
    for name in ("bshuf_trans_byte_elem_SSE", "bshuf_trans_byte_elem_NEON", "bshuf_trans_byte_elem_scal"):
        try:
            fn = _c_kernel(lib, name)
            ok = True
            for size, dtype in _UINTS.items():
                for n in (2, 3, 7, 8, 9, 31, 33, 1027):
                    probe = rng.integers(0, 256, n * size, dtype=np.uint8)
                    got = np.asarray(fn(probe.view(dtype))).view(np.uint8)
                    ok = ok and np.array_equal(got, probe.reshape(n, size).T.ravel())
        except Exception:  # no such symbol (NEON on x86), a kernel refusing this CPU
            ok = False
        if ok:
            found = fn
            break
    _SIMD.append(found)
    return found


def transpose_bytes(
    buf: bytes | memoryview | np.ndarray, itemsize: int, inverse: bool, dest: np.ndarray | None = None
) -> np.ndarray:
    """Byte-transpose the whole elements of ``buf`` (trailing bytes stay as they are).

    Returns a 1-D uint8 array: ``dest`` when given (``len(buf)`` bytes,
    C-contiguous), else a new one.  One strided copy per byte plane
    (``out[j] = src[:, j]``) runs at several GB/s, against about 0.5 GB/s for
    numpy's generic ``.T.tobytes()``.
    """
    src = np.frombuffer(buf, np.uint8)
    n = len(src) // itemsize
    if not inverse and dest is None and n > 1 and itemsize in _UINTS and (fast := _simd_transpose()) is not None:
        planes = np.asarray(fast(src[: n * itemsize].view(_UINTS[itemsize]))).view(np.uint8)
        return planes if n * itemsize == len(src) else np.concatenate([planes, src[n * itemsize :]])
    out = np.empty(len(src), np.uint8) if dest is None else dest
    if itemsize <= 1 or n <= 1:
        out[:] = src
        return out
    if inverse:  # planes -> elements
        planes, elems = src[: n * itemsize].reshape(itemsize, n), out[: n * itemsize].reshape(n, itemsize)
        for j in range(itemsize):
            elems[:, j] = planes[j]
    else:  # elements -> planes
        elems, planes = src[: n * itemsize].reshape(n, itemsize), out[: n * itemsize].reshape(itemsize, n)
        for j in range(itemsize):
            planes[j] = elems[:, j]
    out[n * itemsize :] = src[n * itemsize :]
    return out

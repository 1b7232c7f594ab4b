#!/usr/bin/env python
"""HDF5's byte shuffle on blocks read from memory: numpy's per-plane transpose against bitshuffle's SIMD kernel.

What ``nwb_dask.codecs.shuffle.transpose_bytes`` chooses between (issue 19:
the shuffle was a fifth of a gzip-4 + shuffle write's CPU).  Each chunk of a
block larger than the caches (default 8 blocks of 30000 x 384, 184 MB) is
shuffled once per round, as a writer does; the table gives seconds per GB (best
of ``--rounds``) for each element size and the speed-up, next to deflate's cost
on the same shuffled int16 chunks (ISA-L level 2, what nwb_dask runs for gzip-4) for scale.

Usage::

    python benchmarks/shuffle.py [--rows 240000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _numpy_planes(chunk: np.ndarray) -> np.ndarray:
    """The numpy path of transpose_bytes (one strided copy per byte plane)."""
    k = chunk.dtype.itemsize
    src = chunk.view(np.uint8).reshape(-1, k)
    out = np.empty(src.size, np.uint8).reshape(k, -1)
    for j in range(k):
        out[j] = src[:, j]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=240_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from nwb_dask.codecs import shuffle

    simd = shuffle._simd_transpose()  # noqa: SLF001 - the benchmark of that choice
    print(f"# load average at start: {open('/proc/loadavg').read().strip() if os.path.exists('/proc/loadavg') else '?'}")
    print(f"# SIMD kernel: {getattr(simd, '__name__', None)}")
    print(f"{'dtype':<6} {'numpy s/GB':>10} {'SIMD s/GB':>10} {'speed-up':>9} {'deflate s/GB':>13}")
    rng = np.random.default_rng(0)
    for dtype in ("i2", "i4", "f8"):
        k = np.dtype(dtype).itemsize
        rows = args.rows * 2 // k  # the same bytes for every dtype
        big = rng.normal(0, 300, (rows, 384)).astype(dtype)
        step = max(1, (1250 * 2) // k)
        chunks = [big[i:i + step].reshape(-1) for i in range(0, rows, step)]

        def per_gb(fn) -> float:
            best = float("inf")
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for c in chunks:
                    fn(c)
                best = min(best, time.perf_counter() - t0)
            return best / big.nbytes * 1e9

        t_numpy = per_gb(_numpy_planes)
        t_simd = per_gb(simd) if simd is not None else float("nan")
        if simd is not None:
            assert np.array_equal(np.asarray(simd(chunks[1])).view(np.uint8), _numpy_planes(chunks[1]).ravel())
        t_deflate = float("nan")
        if dtype == "i2":
            import isal.isal_zlib as zlib_isal

            shuffled = [_numpy_planes(c) for c in chunks[:40]]
            t0 = time.perf_counter()
            for c in shuffled:
                zlib_isal.compress(c, 2)
            t_deflate = (time.perf_counter() - t0) / sum(c.nbytes for c in shuffled) * 1e9
        print(f"{dtype:<6} {t_numpy:>10.3f} {t_simd:>10.3f} {t_numpy / t_simd:>8.1f}x {t_deflate:>13.3f}")


if __name__ == "__main__":
    main()

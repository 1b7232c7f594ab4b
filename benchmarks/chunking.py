"""Which HDF5 chunk size should nwb_dask choose by default?

Writes the same synthetic 384-channel int16 recording with gzip-4+shuffle at
several chunk sizes (chunk shapes from ``guess_chunk_shape``, plus 64-channel
groups for comparison) and measures, in one run:

* parallel write MB/s (encode in threads + ``write_direct_chunk``);
* compression ratio;
* plain h5py reads: random 100 ms windows across all channels, and one
  channel over the whole recording (what analysis code does);
* file metadata size proxy: number of chunks.

Usage::

    python benchmarks/chunking.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

from nwb_dask.chunking import chunk_offsets, guess_chunk_shape
from nwb_dask.codecs import codec, pad_chunk
from nwb_dask.testing import ephys_block


def write(path, data, chunk, c, threads):
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=data.shape, dtype=data.dtype, chunks=chunk, **c.dataset_kwargs())
        sel = tuple(slice(0, s) for s in data.shape)
        offs = list(chunk_offsets(sel, chunk))

        def enc(item):
            off, local = item
            return off, c.encode(pad_chunk(data[local], chunk))

        with ThreadPoolExecutor(threads) as ex:
            for off, (mask, buf) in ex.map(enc, offs):
                d.id.write_direct_chunk(off, buf, mask)
        stored = d.id.get_storage_size()
    return time.perf_counter() - t0, stored, len(offs)


def read_windows(path, n_windows, win, rng):
    with h5py.File(path, "r") as f:
        d = f["x"]
        starts = rng.integers(0, d.shape[0] - win, n_windows)
        t0 = time.perf_counter()
        for s in starts:
            d[s : s + win, :]
        return (time.perf_counter() - t0) / n_windows


def read_channel(path, ch):
    with h5py.File(path, "r") as f:
        t0 = time.perf_counter()
        f["x"][:, ch]
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    n = int(args.seconds * 30_000)
    data = ephys_block(0, n, 384, seed=7)
    c = codec("gzip", level=4, shuffle=True)
    rng = np.random.default_rng(0)
    print(f"# {args.seconds:.0f} s x 384 ch int16 ({data.nbytes / 1e6:.0f} MB), gzip-4+shuffle, {args.threads} threads")
    hdr = f"{'target':>8} {'chunk shape':>14} {'chunks':>7} {'write MB/s':>10} {'ratio':>6} {'100ms all-ch ms':>16} {'1 ch full s':>12}"
    print(hdr)
    print("-" * len(hdr))
    cases = []
    for mib in (0.5, 1, 2, 4, 8, 16):
        cases.append((f"{mib:g} MiB", guess_chunk_shape(data.shape, data.dtype, int(mib * 2**20))))
    for mib in (1, 4):
        cases.append((f"{mib:g} MiB/64", (int(mib * 2**20) // (64 * 2), 64)))
    with tempfile.TemporaryDirectory() as tmp:
        for label, chunk in cases:
            path = os.path.join(tmp, "c.h5")
            dt, stored, nchunks = write(path, data, chunk, c, args.threads)
            win = read_windows(path, 20, 3000, rng)
            ch = read_channel(path, 100)
            print(
                f"{label:>8} {str(chunk):>14} {nchunks:>7} {data.nbytes / 1e6 / dt:>10.0f} {data.nbytes / stored:>6.3f} "
                f"{win * 1e3:>16.1f} {ch:>12.2f}"
            )
            os.remove(path)


if __name__ == "__main__":
    main()

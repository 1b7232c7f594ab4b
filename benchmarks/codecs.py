#!/usr/bin/env python
"""Benchmark nwb_dask's HDF5-exact codecs against h5py's own filter pipeline.

Synthetic Neuropixels-like data (int16, 384 channels, 30 kHz, see
``nwb_dask.testing``) is split into HDF5 chunks (edge chunks padded with
``pad_chunk``).  For every codec variant the script measures, in one run:

* encode MB/s with 1 thread and with all cores (a ThreadPoolExecutor over
  chunks; the compression libraries release the GIL), including slicing the
  chunk out of the in-memory array and padding it;
* decode MB/s with 1 thread and with all cores, including copying the decoded
  chunk into an output array of the dataset's shape;
* the compression ratio (dataset bytes / encoded bytes);
* h5py's own filter pipeline with the same settings: ``dset[...] = data``
  write MB/s, ``dset[...]`` read MB/s and the ratio of the stored size;
* the speed-up of our all-cores encode over h5py's write.

MB = 1e6 bytes of uncompressed data.  In-memory codec timings are the best of
``--repeats`` runs; a codec so slow that one run over all chunks would take
more than ``--budget`` seconds is timed on the first chunks only (listed under
the table).  The compression ratio always covers all chunks; the h5py timings
are single runs over all the data.  Before a codec is
reported, its decoded chunks must equal the original data, and its encoded
chunks (the first and last rows of chunks) are written with
``write_direct_chunk`` and read back through h5py, which must also give the
original data.

Run from the repository root::

    python benchmarks/codecs.py                 # 20 s of data, ~460 MB
    python benchmarks/codecs.py --seconds 2     # quick check
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

from nwb_dask.codecs import codec, codec_from_dataset, pad_chunk
from nwb_dask.testing import ephys_block

#: (label, spec) for every benchmarked variant, in table order.
VARIANTS: list[tuple[str, tuple[str, dict]]] = [
    ("none", ("none", {})),
    ("gzip-4 +shuffle libdeflate", ("gzip", {"level": 4, "shuffle": True, "engine": "libdeflate"})),
    ("gzip-4 +shuffle isal", ("gzip", {"level": 4, "shuffle": True, "engine": "isal"})),
    ("gzip-4 +shuffle zlib-ng", ("gzip", {"level": 4, "shuffle": True, "engine": "zlib-ng"})),
    ("gzip-4 +shuffle zlib", ("gzip", {"level": 4, "shuffle": True, "engine": "zlib"})),
    ("gzip-1 +shuffle isal", ("gzip", {"level": 1, "shuffle": True, "engine": "isal"})),
    ("gzip-1 +shuffle libdeflate", ("gzip", {"level": 1, "shuffle": True, "engine": "libdeflate"})),
    ("zstd-1", ("zstd", {"level": 1})),
    ("zstd-1 +shuffle", ("zstd", {"level": 1, "shuffle": True})),
    ("zstd-3", ("zstd", {"level": 3})),
    ("zstd-3 +shuffle", ("zstd", {"level": 3, "shuffle": True})),
    ("blosc lz4 byte-shuffle", ("blosc", {"cname": "lz4", "shuffle": "byte"})),
    ("blosc zstd byte-shuffle", ("blosc", {"cname": "zstd", "shuffle": "byte"})),
    ("blosc zstd bit-shuffle", ("blosc", {"cname": "zstd", "shuffle": "bit"})),
    ("lz4", ("lz4", {})),
    ("lz4 +shuffle", ("lz4", {"shuffle": True})),
    ("bitshuffle lz4", ("bitshuffle", {"cname": "lz4"})),
    ("bitshuffle zstd", ("bitshuffle", {"cname": "zstd"})),
]

RATE = 30_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "missing"
    for attr in ("__version__", "version"):
        v = getattr(mod, attr, None)
        if isinstance(v, str):
            return v
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # pragma: no cover - best effort
        return "?"


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds used by this process) so far, or None.

    The difference over the run shows how much CPU other processes took,
    which would distort the timings.  Linux only (reads /proc/stat).
    """
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def make_data(seconds: float, n_channels: int) -> np.ndarray:
    """The recording ``synthetic_ephys(seconds)`` describes, built block by block without dask."""
    n = int(round(seconds * RATE))
    out = np.empty((n, n_channels), np.int16)
    for start in range(0, n, RATE):
        stop = min(start + RATE, n)
        out[start:stop] = ephys_block(start, stop, n_channels)
    return out


def chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """(chunk offset, slices of the dataset it covers) for every chunk, edge chunks clipped."""
    grid = []
    for t in range(0, shape[0], chunks[0]):
        for c in range(0, shape[1], chunks[1]):
            sl = (slice(t, min(t + chunks[0], shape[0])), slice(c, min(c + chunks[1], shape[1])))
            grid.append(((t, c), sl))
    return grid


def run(pool: ThreadPoolExecutor | None, fn, items) -> list:
    if pool is None:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


def timed(pool, fn, items) -> tuple[float, list]:
    """Wall time of one run of ``fn`` over ``items`` (in ``pool`` or serially) and its results."""
    t0 = time.perf_counter()
    result = run(pool, fn, items)
    return time.perf_counter() - t0, result


def valid_bytes(data: np.ndarray, items) -> int:
    """Bytes of the dataset covered by the chunks ``items`` (edge chunks count their valid part)."""
    return sum((sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start) for _off, sl in items) * data.itemsize


def bench_codec(c, data, chunks, grid, pools, repeats, budget, threads):
    """In-memory encode/decode speeds (MB/s) of one codec, its ratio, and its encoded chunks.

    The first single-thread encode runs over every chunk: it gives the
    compression ratio and the chunks to decode and verify.  Every other run
    (the second single-thread encode, and all all-cores and decode runs)
    covers the first ``k`` chunks, where ``k`` is all of them unless the
    first encode shows that a run over all chunks takes longer than
    ``budget`` seconds; then ``k`` is just enough chunks for ``budget``
    seconds (a multiple of ``threads``).  Each speed is the best of
    ``repeats`` runs.
    """

    def encode(item):
        _off, sl = item
        return c.encode(pad_chunk(data[sl], chunks))

    out = np.empty_like(data)

    def decode(i):
        _off, sl = grid[i]
        mask, buf = encoded[i]
        arr = c.decode(buf, data.dtype, chunks, mask)
        out[sl] = arr[tuple(slice(0, s.stop - s.start) for s in sl)]

    t_start = time.perf_counter()
    encode(grid[0])  # warm up lazily initialised libraries
    n = len(grid)
    t_full, encoded = timed(None, encode, grid)
    per_chunk = t_full / n
    k = n
    if t_full > budget:
        k = min(n, max(2 * threads, math.ceil(budget / per_chunk)))
        k = min(n, math.ceil(k / threads) * threads)
    sub = grid[:k]
    mb_all, mb_sub = valid_bytes(data, grid) / 1e6, valid_bytes(data, sub) / 1e6

    res = {"chunks_timed": k, "chunks": n}
    enc_times = {"1": [t_full * mb_sub / mb_all]}  # scaled to the subset's size, to compare like with like
    for name, pool in pools.items():
        enc_times.setdefault(name, [])
        while len(enc_times[name]) < repeats:
            enc_times[name].append(timed(pool, encode, sub)[0])
        res[f"enc_{name}"] = mb_sub / min(enc_times[name])
    for name, pool in pools.items():
        for _off, sl in sub:
            out[sl] = 0
        res[f"dec_{name}"] = mb_sub / min(timed(pool, decode, range(k))[0] for _ in range(repeats))
        assert all(np.array_equal(out[sl], data[sl]) for _off, sl in sub), f"{c!r}: decode(encode(x)) != x"
    res["elapsed"] = time.perf_counter() - t_start
    res["stored"] = sum(len(buf) for _mask, buf in encoded)
    return res, encoded


def verify_h5py(c, data, chunks, grid, encoded, path) -> str | None:
    """Write our encoded chunks with write_direct_chunk; h5py must read them back exactly.

    To save time only the first and the last row of chunks along time are
    written and read (they include the edge chunks of both axes); the in-memory
    decode has already checked the timed chunks.  Also checks that
    ``codec_from_dataset`` recognises the file's pipeline; a mismatch is
    returned as a warning (it does not affect the numbers).
    """
    rows = sorted({0, grid[-1][1][0].start})
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", data.shape, data.dtype, chunks=chunks, **c.dataset_kwargs())
        for (off, _sl), (mask, buf) in zip(grid, encoded):
            if off[0] in rows:
                d.id.write_direct_chunk(off, buf, mask)
    with h5py.File(path, "r") as f:
        d = f["data"]
        for t in rows:
            sl = slice(t, min(t + chunks[0], data.shape[0]))
            assert np.array_equal(d[sl], data[sl]), (
                f"{c!r}: chunks written with write_direct_chunk read back wrong through h5py"
            )
        found = codec_from_dataset(d)
    os.remove(path)
    if found is None or found.name != c.name or found.options.get("cname") != c.options.get("cname"):
        return f"codec_from_dataset() on a {c!r} dataset gave {found!r}"
    return None


def bench_h5py(kwargs, data, chunks, path) -> dict:
    """h5py's own filter pipeline: write dset[...] = data, read dset[...], stored size."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", data.shape, data.dtype, chunks=chunks, **kwargs)
        t0 = time.perf_counter()
        d[...] = data
        f.flush()
        write = time.perf_counter() - t0
        stored = d.id.get_storage_size()
    with h5py.File(path, "r") as f:
        d = f["data"]
        t0 = time.perf_counter()
        back = d[...]
        read = time.perf_counter() - t0
    os.remove(path)
    assert np.array_equal(back, data), f"h5py round trip failed for {kwargs}"
    return {"write": write, "read": read, "stored": stored}


def fmt_table(rows: list[dict], threads: int) -> str:
    head1 = ["", "encode MB/s", "", "decode MB/s", "", "", "h5py filters", "", "", "enc speed-up"]
    head2 = ["codec", "1 thr", f"{threads} thr", "1 thr", f"{threads} thr", "ratio", "write MB/s", "read MB/s", "ratio", f"{threads} thr/h5py"]
    body = []
    for r in rows:
        body.append([
            r["label"],
            f"{r['enc_1']:.0f}",
            f"{r['enc_n']:.0f}",
            f"{r['dec_1']:.0f}",
            f"{r['dec_n']:.0f}",
            f"{r['ratio']:.3f}",
            f"{r['h5_write']:.0f}",
            f"{r['h5_read']:.0f}",
            f"{r['h5_ratio']:.3f}",
            f"{r['speedup']:.1f}x",
        ])
    widths = [max(len(x[i]) for x in [head1, head2] + body) for i in range(len(head2))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head1), line(head2), sep] + [line(b) for b in body])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of 384-channel 30 kHz int16 data (default 20, ~460 MB)")
    p.add_argument("--chunk", default="40000,64", help="HDF5 chunk shape, time,channels (default 40000,64)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the all-cores columns (default: cpu count)")
    p.add_argument("--channels", type=int, default=384, help="number of channels (default 384)")
    p.add_argument("--repeats", type=int, default=2, help="repetitions of each in-memory timing; the best is kept (default 2)")
    p.add_argument(
        "--budget",
        type=float,
        default=1.5,
        help="seconds per timing run: a codec whose run over all chunks would take longer is timed on "
        "the first chunks only (default 1.5)",
    )
    p.add_argument("--only", default=None, help="comma-separated substrings; benchmark only matching variants")
    args = p.parse_args(argv)
    chunks = tuple(int(x) for x in args.chunk.split(","))
    if len(chunks) != 2 or min(chunks) < 1:
        p.error("--chunk must be two positive integers, e.g. 40000,64")
    variants = VARIANTS
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        variants = [v for v in VARIANTS if any(k in v[0] for k in keys)]

    t_start = time.perf_counter()
    cpu_start = cpu_seconds()
    log("generating data ...")
    data = make_data(args.seconds, args.channels)
    mb = data.nbytes / 1e6
    grid = chunk_grid(data.shape, chunks)
    n_edge = sum(1 for _off, sl in grid if (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) != chunks)

    import hdf5plugin  # noqa: F401  (registers the plugin filters for h5py)

    header = [
        "nwb_dask codec benchmark",
        f"machine: {platform.machine()} {platform.system()}, os.cpu_count()={os.cpu_count()}, threads={args.threads}, Python {platform.python_version()}",
        "versions: " + ", ".join(
            [f"h5py {h5py.version.version}", f"HDF5 {h5py.version.hdf5_version}"]
            + [f"{m} {_version(m)}" for m in ("hdf5plugin", "numcodecs", "isal", "deflate", "zlib_ng", "lz4", "numpy")]
        ),
        f"data: synthetic ephys {args.seconds:g} s x {args.channels} ch int16 = {data.shape}, {mb:.1f} MB; "
        f"chunks {chunks} ({len(grid)} chunks, {n_edge} padded edge chunks)",
        f"MB = 1e6 bytes of uncompressed data; codec columns: best of {args.repeats} runs (runs of slow codecs "
        f"cover only the first chunks, see below); ratio and h5py columns: all chunks, one run",
    ]

    pools = {"1": None}
    pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
    pools["n"] = pool
    h5_cache: dict[str, dict] = {}
    rows = []
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nwb_dask_codec_bench_") as tmp:
        for i, (label, spec) in enumerate(variants):
            t0 = time.perf_counter()
            c = codec(spec)
            res, encoded = bench_codec(c, data, chunks, grid, pools, args.repeats, args.budget, args.threads)
            t1 = time.perf_counter()
            warning = verify_h5py(c, data, chunks, grid, encoded, os.path.join(tmp, f"direct_{i}.h5"))
            if warning:
                warnings.append(warning)
            t_verify = time.perf_counter() - t1
            del encoded
            kwargs = c.dataset_kwargs()
            key = repr(sorted(kwargs.items()))
            t1 = time.perf_counter()
            if key not in h5_cache:  # the gzip engines share one h5py pipeline (HDF5's own deflate)
                h5_cache[key] = bench_h5py(kwargs, data, chunks, os.path.join(tmp, f"h5py_{i}.h5"))
            h5 = h5_cache[key]
            enc_n = res["enc_n"]
            h5_write = mb / h5["write"]
            rows.append({
                "label": label,
                "enc_1": res["enc_1"],
                "enc_n": enc_n,
                "dec_1": res["dec_1"],
                "dec_n": res["dec_n"],
                "chunks_timed": res["chunks_timed"],
                "ratio": data.nbytes / res["stored"],
                "h5_write": h5_write,
                "h5_read": mb / h5["read"],
                "h5_ratio": data.nbytes / h5["stored"],
                "speedup": enc_n / h5_write,
            })
            t_h5 = time.perf_counter() - t1
            log(
                f"  {label:<28s} {time.perf_counter() - t0:5.1f} s (codec {res['elapsed']:.1f}, "
                f"verify {t_verify:.1f}, h5py {t_h5:.1f})"
            )
    if pool is not None:
        pool.shutdown()

    print("\n".join(header))
    print()
    print(fmt_table(rows, args.threads))
    print()
    print(
        "All codecs verified: decode(encode(chunk)) == chunk for every timed chunk, and encoded chunks "
        "(first and last chunk rows) written with write_direct_chunk read back identical through h5py."
    )
    sampled = [f"{r['label']} ({r['chunks_timed']})" for r in rows if r["chunks_timed"] < len(grid)]
    if sampled:
        print(
            f"Timed on the first chunks only (of {len(grid)}; a run over all would exceed {args.budget:g} s): "
            + ", ".join(sampled)
        )
    for w in warnings:
        print(f"warning: {w}")
    if sum(1 for _label, spec in variants if spec[0] == "gzip") > 1:
        print("h5py's gzip rows share one measurement (HDF5 deflates with its own zlib whatever our engine).")
    wall = time.perf_counter() - t_start
    cpu_end = cpu_seconds()
    if cpu_start and cpu_end:
        others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / wall
        print(
            f"machine load: this benchmark used {(cpu_end[1] - cpu_start[1]) / wall:.2f} CPUs on average, "
            f"other processes {others:.2f} CPUs (of {os.cpu_count()}); timings are only comparable on an idle machine"
        )
    print(f"total runtime: {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Repack an uncompressed NWB file: nwb_dask.repack vs HDMF export, neuroconv and h5repack.

One run writes (or reuses, ``--input``) an *uncompressed* synthetic NWB file
(384-channel int16 at 30 kHz, ~23 MB per second: the default ``--seconds 70``
gives ~1.6 GB) and recompresses it with each tool below, every one in a fresh
process (so its peak RSS is its own: ``ru_maxrss`` of the command, started by a small
fresh interpreter, since Linux carries a parent's high-water mark across fork + exec):

``nwb_dask``            ``nwb_dask.tools.repack.repack(src, out, codec=...)``: pynwb reads, the large
                        datasets become lazy parallel reads wrapped in ``DaskDataIO``,
                        ``NWBDaskIO`` exports (compression on dask threads + direct chunk
                        writes), the output is compared object by object, fsynced and renamed.
``nwb_dask-noverify``   the same with ``verify=False``.
``nwb_dask-L<n>``       extra levels (``--extra-levels 7 9``; 7-9 use libdeflate), and
                        extra codecs (``--extra-codec gzip:level=2,engine=libdeflate ...``).
``hdmf``                what neuroconv's repack does with HDMF alone: ``NWBHDF5IO(src).read()``,
                        for every large dataset field (the selection nwb_dask makes: numeric
                        h5py datasets >= 1 MiB in the fields of ``nwbfile.objects``)
                        ``container.set_data_io(field, H5DataIO, {gzip, level, chunks,
                        shuffle}, DataChunkIterator, {buffer_size})`` + ``container.set_modified()``,
                        then ``NWBHDF5IO(out, "w").export(src_io, nwbfile)``: serial, through
                        HDF5's filter pipeline.  Same chunk shapes as nwb_dask
                        (``guess_chunk_shape``), ~64 MiB buffers, shuffle *off* (neuroconv's
                        default for ``data``).
``hdmf-shuffle``        the same with shuffle *on* (nwb_dask's default gzip has shuffle, so this
                        is the like-for-like ratio comparison).
``neuroconv``           ``neuroconv.tools.nwb_helpers.repack_nwbfile(nwbfile_path=...,
                        export_nwbfile_path=...)`` with its defaults, run by
                        ``--neuroconv-python`` (a venv with ``pip install neuroconv``; this script
                        installs nothing; the row notes it when the interpreter is missing).
                        Defaults in neuroconv 0.10: HDF5, gzip (h5py's level 4), no shuffle
                        for ``data``, ElectricalSeries chunks of <= 10 MB x 64 channels, the
                        source wrapped in a ``DataChunkIterator`` whose buffer is the whole
                        dataset.
``h5repack``            ``h5repack -f GZIP=<level> in out`` (Debian ``hdf5-tools``).  A failure
                        is shown as ``failed: <first line of its error>``.

Why the wrappers in ``hdmf``: ``set_data_io`` on an h5py dataset alone is ignored by the
export (HDMF copies an ``h5py.Dataset`` with ``Group.copy``, keeping its old layout: hdmf
issue 1170), so neuroconv and this row wrap it in a ``DataChunkIterator``; and an HDMF export
reuses the cached builder of an unmodified container, so without ``set_modified()`` the new
DataIO is never seen and the data are copied unchanged (``--hdmf-no-set-modified`` shows it).

Columns: ``s`` the operation's wall time (measured inside the child for the Python rows,
interpreter start and imports excluded; the subprocess's wall time for h5repack), every one
including an ``fsync`` of the output (nwb_dask's repack fsyncs before its rename; the others
are fsynced, timed, when their export or command returns); ``proc s`` the child process's whole wall time;
``MB/s`` the large datasets' uncompressed MB / ``s``; ``data ratio`` their uncompressed bytes /
their stored bytes (h5py ``get_storage_size``) in the output; ``file ratio`` input / output
file size; ``RSS MB`` the child's peak RSS; ``x`` a row's time / nwb_dask's (verify=True)
time, i.e. nwb_dask's speed-up over that row.  Each output's large datasets (the
ElectricalSeries data included) are compared with the input on sampled blocks with h5py, and
plain pynwb must open it; the ``check`` column says so.

    python benchmarks/repack.py [--seconds 70] [--rich] [--codec gzip] [--level N]
        [--extra-levels 7 ...] [--extra-codec SPEC ...] [--input PATH] [--keep]
        [--neuroconv-python PATH] [--skip ROW ...]

``--level`` applies to every row (anchors included; default: gzip's 4).  The full-size run:

    python benchmarks/repack.py --rich --extra-levels 7 --extra-codec gzip:level=2,engine=libdeflate

``--rich`` writes the input with ``nwb_dask.testing.write_rich_nwbfile`` (many neurodata
types: LFP, units, trials, images, links...) instead of a lone ElectricalSeries.
On a shared 2-core machine the same row varied by up to ~40% between runs: rerun before
concluding from a small difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

ROWS = ("nwb_dask", "nwb_dask-noverify", "hdmf", "hdmf-shuffle", "neuroconv", "h5repack")
ANCHORS = ("hdmf", "hdmf-shuffle", "neuroconv", "h5repack")
MAIN = "/acquisition/ElectricalSeries/data"
DEFAULT_NEUROCONV = "/work/venvs/neuroconv/bin/python"
#: HDMF row: rows of the DataChunkIterator buffer are whole chunks, about this many bytes.
BUFFER_BYTES = 64 * 2**20
TIMEOUT = 3600

NEUROCONV_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from neuroconv.tools.nwb_helpers import repack_nwbfile
    from importlib.metadata import version
    t = time.perf_counter()
    repack_nwbfile(nwbfile_path=Path(sys.argv[1]), export_nwbfile_path=Path(sys.argv[2]))
    fd = os.open(sys.argv[2], os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    print(json.dumps({"seconds": time.perf_counter() - t, "note": "neuroconv " + version("neuroconv")}))
    """
)


# --------------------------------------------------------------------------- #
# helpers shared by the parent and the workers                                 #
# --------------------------------------------------------------------------- #
def large_fields(nwbfile, source: str, min_bytes: int = 2**20):
    """``[(container, field, h5py.Dataset)]``: the datasets nwb_dask.repack recompresses (its own selection)."""
    from nwb_dask.tools.repack import large_fields as selection

    return selection(nwbfile, min_bytes, source)


def parse_spec(text: str) -> list:
    """``"gzip:level=6,engine=libdeflate"`` -> ``["gzip", {"level": 6, "engine": "libdeflate"}]``."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if value.lstrip("-").isdigit():
            options[key] = int(value)
        elif value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
        else:
            options[key] = value
    return [name, options]


def fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def codec_spec(args) -> object:
    return args.codec if args.level is None else (args.codec, {"level": args.level})


# --------------------------------------------------------------------------- #
# workers: each runs in its own process                                        #
# --------------------------------------------------------------------------- #
def worker_nwb_dask(args) -> dict:
    from nwb_dask.tools.repack import repack

    if args.spec:
        name, options = json.loads(args.spec)
        spec = (name, options)
    else:
        spec = args.codec if args.worker_level is None else (args.codec, {"level": args.worker_level})
    t = time.perf_counter()
    result = repack(args.src, args.out, codec=spec, verify=not args.no_verify, progress=False)
    seconds = time.perf_counter() - t
    codecs = sorted({d.codec_out for d in result.datasets})
    note = "+".join(codecs)
    if result.verified:
        note += f"; verify {result.verify_seconds:.1f} s"
    return {"seconds": seconds, "note": note}


def worker_hdmf(args) -> dict:
    from hdmf.common import Data
    from hdmf.data_utils import DataChunkIterator
    from pynwb import NWBHDF5IO, H5DataIO

    from nwb_dask.chunking import guess_chunk_shape

    level = 4 if args.worker_level is None else args.worker_level
    t = time.perf_counter()
    with NWBHDF5IO(args.src, "r", load_namespaces=True) as io:
        nwbfile = io.read()
        n = 0
        for container, key, dset in large_fields(nwbfile, args.src):
            chunks = guess_chunk_shape(dset.shape, dset.dtype)
            chunk_bytes = math.prod(chunks) * dset.dtype.itemsize
            rows = chunks[0] * max(1, BUFFER_BYTES // chunk_bytes)
            kwargs = {"compression": "gzip", "compression_opts": level, "shuffle": args.shuffle, "chunks": chunks}
            iterator = {"data_chunk_iterator_class": DataChunkIterator,
                        "data_chunk_iterator_kwargs": {"buffer_size": rows}}
            if isinstance(container, Data):
                container.set_data_io(H5DataIO, kwargs, **iterator)
            else:
                container.set_data_io(key, H5DataIO, kwargs, **iterator)
            if not args.hdmf_no_set_modified:
                container.set_modified()
            n += 1
        with NWBHDF5IO(args.out, "w") as out_io:
            out_io.export(src_io=io, nwbfile=nwbfile)
    fsync(args.out)
    seconds = time.perf_counter() - t
    note = f"gzip-{level}{'+shuffle' if args.shuffle else ''}, {n} dataset(s)"
    if args.hdmf_no_set_modified:
        note += ", no set_modified()"
    return {"seconds": seconds, "note": note}


def run_worker(args) -> None:
    fn = {"nwb_dask": worker_nwb_dask, "hdmf": worker_hdmf}[args.worker]
    print("RESULT " + json.dumps(fn(args)), flush=True)


# --------------------------------------------------------------------------- #
# the parent                                                                   #
# --------------------------------------------------------------------------- #
#: Runs a command and records its wall time and peak RSS.  A child's ru_maxrss starts from
#: its parent's high-water mark (Linux keeps it across fork + exec), so the command is started
#: by this small fresh interpreter, not by the benchmark process holding hundreds of MB.
LAUNCHER = textwrap.dedent(
    """
    import resource, subprocess, sys, time
    t = time.perf_counter()
    rc = subprocess.call(sys.argv[2:])
    wall = time.perf_counter() - t
    with open(sys.argv[1], "w") as fh:
        fh.write(f"{rc} {wall} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
    sys.exit(rc)
    """
)


def run_child(cmd: list[str], tmp: str, timeout: float = TIMEOUT) -> tuple[int, float, float, str, str]:
    """Run ``cmd``; ``(returncode, wall s, peak RSS MB, stdout, stderr)``."""
    out_path, err_path = os.path.join(tmp, "child.out"), os.path.join(tmp, "child.err")
    usage_path = os.path.join(tmp, "child.usage")
    if os.path.exists(usage_path):
        os.unlink(usage_path)
    with open(out_path, "w") as fo, open(err_path, "w") as fe:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, usage_path] + cmd, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the launcher's own session: it and the command it started
            proc.wait()
            fe.write(f"timed out after {timeout:.0f} s\n")
        wall = time.perf_counter() - t
    rc, rss = proc.returncode, float("nan")
    if os.path.exists(usage_path):
        with open(usage_path) as fh:
            code, wall_s, maxrss = fh.read().split()
        rc, wall, rss = int(code), float(wall_s), int(maxrss) / 1024
    with open(out_path) as fo, open(err_path) as fe:
        out, err = fo.read(), fe.read()
    return rc, wall, rss, out, err


def first_error_line(stderr: str, stdout: str = "") -> str:
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    # Python tracebacks: the last line names the exception; tools: the first line says it.
    if any(ln.startswith("Traceback") for ln in lines):
        return lines[-1][:160]
    return (lines[0] if lines else "no output")[:160]


def make_input(path: str, seconds: float, rich: bool) -> None:
    t = time.perf_counter()
    if rich:
        from nwb_dask.testing import write_rich_nwbfile

        write_rich_nwbfile(path, seconds=seconds, n_channels=384)
    else:
        from pynwb import NWBHDF5IO

        import nwb_dask
        from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

        nwbfile = ephys_nwbfile(nwb_dask.DaskDataChunkIterator(synthetic_ephys(seconds=seconds)))
        with NWBHDF5IO(path, "w") as io:
            io.write(nwbfile)
    os.sync()
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB, {'rich' if rich else 'plain'}) "
          f"with plain pynwb in {time.perf_counter() - t:.0f} s", flush=True)


def input_datasets(path: str) -> list[tuple[str, int]]:
    """``[(path, uncompressed bytes)]`` of the input's large datasets (nwb_dask's selection)."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(path, "r", load_namespaces=True) as io:
        nwbfile = io.read()
        return [(d.name, int(d.size * d.dtype.itemsize)) for _, _, d in large_fields(nwbfile, path)]


def check_output(src: str, out: str, datasets: list[tuple[str, int]], blocks: int = 8) -> tuple[str, float]:
    """Sampled-block comparison of every large dataset + a plain pynwb read: ``(verdict, data ratio)``."""
    import h5py
    import numpy as np
    from pynwb import NWBHDF5IO

    problems, logical, stored = [], 0, 0
    with h5py.File(src, "r") as fa, h5py.File(out, "r") as fb:
        names = [n for n, _ in datasets]
        if MAIN not in names and MAIN in fa:
            names.append(MAIN)
        for name in names:
            if name not in fb:
                problems.append(f"{name} missing")
                continue
            a, b = fa[name], fb[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{name} {b.shape} {b.dtype} != {a.shape} {a.dtype}")
                continue
            logical += b.size * b.dtype.itemsize
            stored += b.id.get_storage_size()
            n = a.shape[0]
            step = min(n, 4096)
            starts = sorted({int(s) for s in np.linspace(0, n - step, blocks)})
            for s in starts:
                if not np.array_equal(a[s:s + step], b[s:s + step], equal_nan=a.dtype.kind in "fc"):
                    problems.append(f"{name}[{s}:{s + step}] differs")
                    break
    try:
        with NWBHDF5IO(out, "r", load_namespaces=True) as io:
            nwbfile = io.read()
            if "ElectricalSeries" in nwbfile.acquisition:
                nwbfile.acquisition["ElectricalSeries"].data[:10]
    except Exception as exc:  # noqa: BLE001 - reported in the table
        problems.append(f"pynwb cannot read it: {type(exc).__name__}: {exc}"[:120])
    ratio = logical / stored if stored else float("nan")
    return ("ok" if not problems else "BAD: " + "; ".join(problems)[:200]), ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=70.0, help="seconds of 384-channel 30 kHz int16 (~23 MB/s)")
    ap.add_argument("--rich", action="store_true", help="input from nwb_dask.testing.write_rich_nwbfile")
    ap.add_argument("--codec", default="gzip", help="nwb_dask's codec (the anchors always use gzip)")
    ap.add_argument("--level", type=int, default=None, help="compression level of every row (default: gzip's 4)")
    ap.add_argument("--extra-levels", type=int, nargs="*", default=[], help="more nwb_dask rows at these levels")
    ap.add_argument("--extra-codec", nargs="*", default=[], metavar="SPEC",
                    help="more nwb_dask rows with these codecs, e.g. gzip:level=6,engine=libdeflate")
    ap.add_argument("--input", help="reuse this NWB file instead of writing one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (input and outputs)")
    ap.add_argument("--tmpdir", default=None, help="where to make the temporary directory")
    ap.add_argument("--neuroconv-python", default=DEFAULT_NEUROCONV)
    ap.add_argument("--skip", nargs="*", default=[], choices=ROWS, metavar="ROW", help=f"rows to skip: {ROWS}")
    ap.add_argument("--hdmf-no-set-modified", action="store_true",
                    help="HDMF rows without container.set_modified() (shows that it is needed)")
    # worker mode
    ap.add_argument("--worker", choices=("nwb_dask", "hdmf"), help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shuffle", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-level", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_worker(args)
        return

    tmp = tempfile.mkdtemp(prefix="nwb_dask_repack_", dir=args.tmpdir)
    try:
        bench(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(args, tmp: str) -> None:
    if args.input:
        src = os.path.abspath(args.input)
    else:
        src = os.path.join(tmp, "input.nwb")
        make_input(src, args.seconds, args.rich)
    datasets = input_datasets(src)
    logical = sum(b for _, b in datasets)
    in_size = os.path.getsize(src)
    print(f"input {src}: {in_size / 1e6:.0f} MB; {len(datasets)} large dataset(s), {logical / 1e6:.0f} MB "
          f"uncompressed: " + ", ".join(n for n, _ in datasets), flush=True)
    level = args.level
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--src", src] + (["--worker-level", str(level)] if level is not None else [])
    jobs = []  # (row, label, cmd, kind)
    if "nwb_dask" not in args.skip:
        jobs.append(("nwb_dask", "nwb_dask repack", me + ["--worker", "nwb_dask", "--codec", args.codec] + common,
                     "worker"))
    if "nwb_dask-noverify" not in args.skip:
        jobs.append(("nwb_dask-noverify", "nwb_dask repack --no-verify",
                     me + ["--worker", "nwb_dask", "--codec", args.codec, "--no-verify"] + common, "worker"))
    for extra in args.extra_levels:
        jobs.append((f"nwb_dask-L{extra}", f"nwb_dask repack level {extra}",
                     me + ["--worker", "nwb_dask", "--codec", args.codec, "--src", src, "--worker-level", str(extra)],
                     "worker"))
    for text in args.extra_codec:
        jobs.append((f"nwb_dask-{text}", f"nwb_dask {text}",
                     me + ["--worker", "nwb_dask", "--src", src, "--spec", json.dumps(parse_spec(text))], "worker"))
    nsm = ["--hdmf-no-set-modified"] if args.hdmf_no_set_modified else []
    if "hdmf" not in args.skip:
        jobs.append(("hdmf", "HDMF export + set_data_io", me + ["--worker", "hdmf"] + common + nsm, "worker"))
    if "hdmf-shuffle" not in args.skip:
        jobs.append(("hdmf-shuffle", "HDMF export + set_data_io, shuffle",
                     me + ["--worker", "hdmf", "--shuffle"] + common + nsm, "worker"))
    if "neuroconv" not in args.skip:
        jobs.append(("neuroconv", "neuroconv repack_nwbfile", [args.neuroconv_python, "-c", NEUROCONV_RUN, src],
                     "py"))
    if "h5repack" not in args.skip:
        jobs.append(("h5repack", f"h5repack -f GZIP={4 if level is None else level}",
                     ["h5repack", "-f", f"GZIP={4 if level is None else level}", src], "tool"))

    results = []
    for row, label, cmd, kind in jobs:
        out = os.path.join(tmp, f"out-{row}.nwb")
        if os.path.exists(out):
            os.unlink(out)
        cmd = cmd + (["--out", out] if kind == "worker" else [out])
        r = {"row": row, "label": label, "seconds": None, "note": ""}
        results.append(r)
        if row == "neuroconv" and not os.path.exists(args.neuroconv_python):
            r["note"] = f"skipped: no {args.neuroconv_python} (python -m venv ... && pip install neuroconv)"
            print(f"{label}: {r['note']}", flush=True)
            continue
        if row == "h5repack" and shutil.which("h5repack") is None:
            r["note"] = "skipped: no h5repack (apt-get install hdf5-tools)"
            print(f"{label}: {r['note']}", flush=True)
            continue
        os.sync()  # no writeback of the previous row during this one
        print(f"running {label} ...", flush=True)
        rc, wall, rss, stdout, stderr = run_child(cmd, tmp)
        r.update(proc=wall, rss=rss)
        if rc != 0 or not os.path.exists(out):
            r["note"] = "failed: " + first_error_line(stderr, stdout)
            print(f"  {r['note']}", flush=True)
            with open(os.path.join(tmp, f"{row}.stderr"), "w") as fh:
                fh.write(stderr)
            if os.path.exists(out):
                os.unlink(out)
            continue
        if kind == "tool":  # timed from outside; fsync its output like the others
            t = time.perf_counter()
            fsync(out)
            r["seconds"] = wall + (time.perf_counter() - t)
        else:
            line = next((ln for ln in stdout.splitlines() if ln.startswith(("RESULT ", "{"))), None)
            if line is None:
                r["note"] = "failed: no timing printed: " + first_error_line(stderr, stdout)
                continue
            info = json.loads(line.split(" ", 1)[1] if line.startswith("RESULT ") else line)
            r["seconds"] = info["seconds"]
            r["note"] = info.get("note", "")
        r["out_size"] = os.path.getsize(out)
        r["check"], r["ratio"] = check_output(src, out, datasets)
        print(f"  {r['seconds']:.1f} s, {rss:.0f} MB RSS, data ratio {r['ratio']:.3f}, "
              f"file ratio {in_size / r['out_size']:.3f}, {r['check']}", flush=True)
        if not args.keep:
            os.unlink(out)

    print_table(args, results, logical, in_size)


def print_table(args, results, logical: int, in_size: int) -> None:
    base = next((r for r in results if r["row"] == "nwb_dask" and r["seconds"]), None)
    print()
    print(f"input: {in_size / 1e6:.0f} MB file, {logical / 1e6:.0f} MB in large datasets; "
          f"{os.cpu_count()} cores; codec {args.codec} level {args.level if args.level is not None else 'default'}")
    head = f"{'row':<44}{'s':>8}{'proc s':>8}{'MB/s':>8}{'data ratio':>11}{'file ratio':>11}{'RSS MB':>8}{'x':>7}  check / note"
    print(head)
    print("-" * len(head))
    for r in results:
        if r["seconds"] is None:
            proc = f"{r['proc']:>8.1f}" if r.get("proc") else f"{'':>8}"
            rss = f"{r['rss']:>8.0f}" if r.get("rss") else f"{'':>8}"
            print(f"{r['label']:<44}{'-':>8}{proc}{'-':>8}{'-':>11}{'-':>11}{rss}{'-':>7}  {r['note']}")
            continue
        x = f"{r['seconds'] / base['seconds']:.2f}" if base else "-"
        print(f"{r['label']:<44}{r['seconds']:>8.1f}{r['proc']:>8.1f}{logical / 1e6 / r['seconds']:>8.0f}"
              f"{r['ratio']:>11.3f}{in_size / r['out_size']:>11.3f}{r['rss']:>8.0f}{x:>7}  {r['check']}"
              + (f"; {r['note']}" if r["note"] else ""))
    anchors = [r for r in results if r["row"] in ANCHORS and r["seconds"] and r["check"] == "ok"]
    ours = [r for r in results if r["row"].startswith("nwb_dask") and r["seconds"] and r["check"] == "ok"]
    print()
    print("target: nwb_dask >= 5x faster than the anchors at a compression ratio at least theirs")
    if not anchors or not ours:
        print("  (no anchor or no nwb_dask row succeeded)")
        return
    print("  speed-up (anchor s / nwb_dask s) and data ratio vs each anchor ('>=': ratio at least the anchor's):")
    print(f"  {'nwb_dask setting':<42}" + "".join(f"{a['row']:>{max(16, len(a['row']) + 2)}}" for a in anchors)
          + "   all met")
    for o in ours:
        cells, met = [], True
        for a in anchors:
            speed = a["seconds"] / o["seconds"]
            ge = o["ratio"] >= a["ratio"]
            met &= ge and speed >= 5
            cells.append(f"{speed:.1f}x {'>=' if ge else '< '}".rjust(max(16, len(a["row"]) + 2)))
        print(f"  {o['label']:<42}" + "".join(cells) + f"   {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()

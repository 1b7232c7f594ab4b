"""The ``nwb-dask`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .codecs import CodecError, codec

__all__ = ["main"]


def _codec_arg(args: argparse.Namespace):
    options = {}
    if args.level is not None:
        options["level"] = args.level
    return codec(args.codec, **options)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(
        seconds=args.seconds,
        path=args.output,
        codec_spec=_codec_arg(args),
        scheduler=args.scheduler,
        workers=args.workers,
        progress=not args.quiet,
        serial_seconds=args.serial_seconds,
    )
    print(result.report())
    return 0


def _cmd_links(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .links import audit_links

    records = audit_links(args.file)
    broken = sum(r.broken for r in records)
    absolute = sum(r.absolute for r in records)
    if args.json:
        print(json.dumps({
            "file": args.file,
            "links": [dataclasses.asdict(r) for r in records],
            "broken": broken,
            "absolute": absolute,
        }, indent=2))
    else:
        if not records:
            print(f"{args.file}: no external links or virtual-dataset sources")
        for r in records:
            status = f"BROKEN: {r.reason}" if r.broken else f"ok -> {r.resolved}"
            flag = "  [absolute path: the files cannot be moved together]" if r.absolute else ""
            print(f"{r.kind:<9} {r.path}  ->  {r.file}:{r.object}  {status}{flag}")
        if records:
            print(f"{len(records)} link(s), {broken} broken, {absolute} with absolute paths")
    return 1 if broken else 0


def _cmd_consolidate(args: argparse.Namespace) -> int:
    from .consolidate import consolidate

    result = consolidate(
        args.input,
        args.output,
        codec=_codec_arg(args) if args.codec else None,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    moved = result.datasets + result.groups
    print(f"wrote {result.output}: {len(moved)} object(s) copied in"
          + (", verified against the sources" if result.verified else ""))
    for name in moved:
        print(f"  {name}")
    return 0


def _chunks_arg(text: str | None):
    if text is None or text in ("auto", "source"):
        return text or "auto"
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--chunks must be auto, source or a shape like 30000,64; got {text!r}") from None


def _rewrite(run, args: argparse.Namespace, **extra) -> int:
    """Run repack or convert with the options they share, on the chosen scheduler; print the report."""
    from .scheduler import use_scheduler

    with use_scheduler(args.scheduler, args.workers):
        result = run(
            args.input,
            args.output,
            codec="source" if args.codec == "source" else _codec_arg(args),
            chunks=_chunks_arg(args.chunks),
            verify=not args.no_verify,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **extra,
        )
    print(result.report())
    return 0


def _cmd_repack(args: argparse.Namespace) -> int:
    from .repack import repack

    return _rewrite(repack, args, min_bytes=int(args.min_mb * 2**20))


def _cmd_convert(args: argparse.Namespace) -> int:
    from .zarr import convert

    return _rewrite(convert, args, allow_pickle=args.allow_pickle)


def _add_rewrite_arguments(parser: argparse.ArgumentParser, *, codec: str, codec_help: str, chunks: str,
                           chunks_help: str, overwrite_help: str) -> None:
    """The arguments repack and convert share; ``codec`` and ``chunks`` are their defaults."""
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--codec", default=codec, help=codec_help)
    parser.add_argument("--level", type=int, help="compression level for --codec")
    parser.add_argument("--chunks", default=chunks, help=chunks_help)
    parser.add_argument("--scheduler", default="threads", choices=["threads", "processes", "local", "sync"],
                        help="dask scheduler (default threads; local = a LocalCluster of processes)")
    parser.add_argument("--workers", type=int, help="dask workers (default: all cores)")
    parser.add_argument("--no-verify", action="store_true", help="skip comparing OUTPUT with INPUT")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import info

    result = info(args.file)
    print(result.to_json() if args.json else result.report(all_datasets=args.all))
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    from .live import recover

    recover(args.file)
    print(f"{args.file}: writer mark cleared; any HDF5 reader opens it now")
    return 0


def _cmd_follow(args: argparse.Namespace) -> int:
    import time

    from .live import follow

    t0 = time.monotonic()
    total = args.start
    for start, new in follow(args.file, args.dataset, start=args.start, poll=args.poll,
                             idle_timeout=args.idle_timeout):
        total = start + len(new)
        print(f"{time.monotonic() - t0:8.2f} s  {args.dataset}: {total} samples (+{len(new)})", flush=True)
    print(f"no new samples for {args.idle_timeout:g} s; {total} samples")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="nwb-dask", description="Parallel, out-of-core NWB I/O with Dask."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nwb-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="write a synthetic recording to NWB in parallel, read it back and check it",
        description="Build a synthetic out-of-core 384-channel int16 recording as a dask array, write it "
        "to an NWB file as a compressed ElectricalSeries with the parallel writer, reopen it with pynwb, "
        "verify every sample, and print size, ratio, time and throughput next to a serial pynwb write "
        "of a slice of the same data.",
    )
    demo.add_argument("--seconds", type=float, default=65.0, help="recording length (23 MB/s; default 65 s = 1.5 GB)")
    demo.add_argument("--output", "-o", help="keep the NWB file here (default: a temporary file, deleted)")
    demo.add_argument("--codec", default="gzip", help="none, gzip, zstd, blosc, lz4 or bitshuffle (default gzip)")
    demo.add_argument("--level", type=int, help="compression level for the codec")
    demo.add_argument(
        "--scheduler",
        default="local",
        choices=["local", "threads", "processes", "sync"],
        help="dask scheduler: a local distributed cluster (default), threads, processes or sync",
    )
    demo.add_argument("--workers", type=int, help="number of dask workers (default: all cores)")
    demo.add_argument(
        "--serial-seconds",
        type=float,
        default=5.0,
        help="also write this much with plain serial pynwb for comparison (0: skip; default 5)",
    )
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    links = sub.add_parser(
        "links",
        help="list external links and virtual-dataset sources; exit 1 if any is broken",
        description="List the external links and virtual-dataset sources of an HDF5/NWB file, resolved the "
        "way HDF5 resolves them (relative to the file's directory), flag broken targets and absolute paths. "
        "Exit status 1 if any target is broken, 0 otherwise.",
    )
    links.add_argument("file", help="HDF5/NWB file")
    links.add_argument("--json", action="store_true", help="machine-readable output")
    links.set_defaults(func=_cmd_links)

    cons = sub.add_parser(
        "consolidate",
        help="copy external links and virtual datasets into a new self-contained file",
        description="Write a self-contained copy of INPUT at OUTPUT: external links and virtual datasets "
        "are replaced by real datasets, copied in parallel and verified against their sources. OUTPUT "
        "appears atomically; INPUT is never modified.",
    )
    cons.add_argument("input")
    cons.add_argument("output")
    cons.add_argument("--codec", help="compression of the copied datasets (default: the source's, else gzip)")
    cons.add_argument("--level", type=int, help="compression level for --codec")
    cons.add_argument("--scheduler", choices=["threads", "processes", "sync"], help="dask scheduler (default threads)")
    cons.add_argument("--no-verify", action="store_true", help="skip comparing the copies with their sources")
    cons.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (never INPUT)")
    cons.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    cons.set_defaults(func=_cmd_consolidate)

    rp = sub.add_parser(
        "repack",
        help="recompress and rechunk an NWB file in parallel, atomically, verified",
        description="Rewrite INPUT (any NWB 2.x file pynwb reads) as OUTPUT with its large numeric datasets "
        "recompressed and rechunked on dask workers; everything else (groups, attributes, object IDs, "
        "references, links, tables, strings) is kept as it was. OUTPUT is built under a temporary name, "
        "compared with INPUT object by object, and renamed into place; INPUT is never modified.",
    )
    _add_rewrite_arguments(
        rp,
        codec="gzip",
        codec_help="none, gzip, zstd, blosc, lz4, bitshuffle, or source (keep each dataset's); default gzip",
        chunks="auto",
        chunks_help="auto (default), source, or a shape such as 30000,64",
        overwrite_help="replace OUTPUT if it exists (never INPUT)",
    )
    rp.add_argument("--min-mb", type=float, default=1.0, help="recompress datasets of at least this many MiB (1)")
    rp.set_defaults(func=_cmd_repack)

    cv = sub.add_parser(
        "convert",
        help="convert an HDF5 NWB file to NWB-Zarr or back, in parallel, verified",
        description="Convert INPUT to OUTPUT between HDF5 NWB and NWB-Zarr (a directory or a name ending in "
        ".zarr is Zarr): large datasets are read lazily and written in parallel (to Zarr, every worker "
        "stores its own chunks); everything else goes through HDMF's export (object IDs, references kept). "
        "OUTPUT is verified against INPUT and appears atomically; INPUT is never modified.",
    )
    _add_rewrite_arguments(
        cv,
        codec="source",
        codec_help="source (default: keep each dataset's codec), none, gzip, zstd or blosc",
        chunks="source",
        chunks_help="source (default), auto, or a shape such as 30000,64",
        overwrite_help="replace OUTPUT if it exists",
    )
    cv.add_argument("--allow-pickle", action="store_true",
                    help="read a Zarr INPUT whose object datasets use numcodecs' Pickle (trusted stores only)")
    cv.set_defaults(func=_cmd_convert)

    inf = sub.add_parser(
        "info",
        help="datasets, chunks, codecs, sizes, links and storage hints of a file or URL",
        description="List the datasets of an NWB/HDF5 file (local, or http(s)/s3 URL: metadata only) with "
        "shape, dtype, chunk shape, codec, logical and stored size and ratio, external links and virtual "
        "sources, and hints where chunking or compression is poor.",
    )
    inf.add_argument("file", help="file or URL")
    inf.add_argument("--json", action="store_true", help="machine-readable output (every dataset)")
    inf.add_argument("--all", action="store_true", help="also list datasets under 1 MiB")
    inf.set_defaults(func=_cmd_info)

    rec = sub.add_parser(
        "recover",
        help="clear the 'open for writing' mark a killed live writer left (like h5clear -s)",
        description="A live file whose writer was killed keeps HDF5's 'file is open for writing' mark, and "
        "HDF5 readers other than SWMR readers refuse it. This clears the mark (as HDF5's `h5clear -s` does) "
        "without changing the data: the file holds every sample up to the writer's last flush. Refuses a "
        "file a writer still holds open.",
    )
    rec.add_argument("file")
    rec.set_defaults(func=_cmd_recover)

    fol = sub.add_parser(
        "follow",
        help="watch a growing dataset of a live file (SWMR reader)",
        description="Open a live file read-only in SWMR mode and print the dataset's length each time a "
        "flush makes new samples visible; stop after --idle-timeout seconds without new samples.",
    )
    fol.add_argument("file")
    fol.add_argument("dataset", help="HDF5 path, e.g. acquisition/ephys/data")
    fol.add_argument("--start", type=int, default=0, help="first sample to report")
    fol.add_argument("--poll", type=float, default=0.1, help="seconds between looks (default 0.1)")
    fol.add_argument("--idle-timeout", type=float, default=10.0, help="stop after this many idle seconds (default 10)")
    fol.set_defaults(func=_cmd_follow)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nwb-dask``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CodecError, ValueError, OSError, KeyError) as exc:
        print(f"nwb-dask {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

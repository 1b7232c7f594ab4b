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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nwb-dask``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CodecError, ValueError, OSError) as exc:
        print(f"nwb-dask {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``nwb-dask`` command line.

One convention for every command (docs/cli.md):

* exit status 0: done; 1: a check failed (a broken link, a copy that does
  not verify); 2: bad input (a missing, wrong or corrupt file, an invalid
  option), reported as one ``nwb-dask CMD: error: ...`` line on stderr,
  without a traceback; 3: an unexpected error (a bug), with its traceback;
  130: interrupted.  A reader that closes the pipe early (``| head``) ends the
  command quietly with status 0.
* ``--json`` on every command that reports (demo, repack, convert,
  consolidate, info, index, links, clean, cache): one JSON object on stdout instead of the text.
* ``--scheduler`` (local, threads, processes, sync, or a running cluster's address),
  ``--scheduler-file`` and ``--workers`` on every
  command that computes (demo, repack, convert, consolidate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
import warnings
from typing import Any, Sequence

from nwb_dask.chunking import REWRITE_MIN_BYTES
from nwb_dask.codecs import codec

__all__ = ["main"]

#: Exit statuses (docs/cli.md).
OK, CHECK_FAILED, BAD_INPUT, INTERNAL_ERROR, INTERRUPTED = 0, 1, 2, 3, 130
#: The schedulers of every command that computes (nwb_dask.engine.use_scheduler).
SCHEDULERS = ("local", "threads", "processes", "sync")


class UsageError(ValueError):
    """Options that do not go together (exit status 2)."""


class _StdoutClosed(Exception):
    """The reader of stdout went away (``nwb-dask info ... | head``)."""


def _out(text: str = "", *, flush: bool = False) -> None:
    """Print to stdout; a closed pipe becomes :class:`_StdoutClosed` (not any other BrokenPipeError)."""
    try:
        print(text, flush=flush)
    except BrokenPipeError:
        raise _StdoutClosed from None


def _emit(args: argparse.Namespace, result: Any, text: str) -> None:
    """The report: ``text``, or with ``--json`` the result's fields as one JSON object."""
    if getattr(args, "json", False):
        data = result if isinstance(result, dict) else dataclasses.asdict(result)
        _out(json.dumps(data, indent=2, default=str))
    else:
        _out(text)


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low`` (``what`` names the rule in the error)."""
    def parse(text: str) -> int:
        value = int(text) if text.strip().lstrip("+-").isdigit() else None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _codec_arg(args: argparse.Namespace, keep: Any = "source"):
    """``--codec``/``--level`` as a Codec, or ``keep`` when the command keeps each dataset's own codec."""
    if args.codec in (None, "source"):
        if args.level is not None:
            given = "--codec source" if args.codec else "no --codec"
            raise UsageError(f"--level {args.level} sets the level of a codec named with --codec; with {given} "
                             "each dataset keeps its own codec and level (name one, e.g. --codec gzip --level 6)")
        return keep
    options = {}
    if args.level is not None:
        options["level"] = args.level
    return codec(args.codec, **options)


def _scheduler_kind(text: str) -> str:
    """An argparse type: one of :data:`SCHEDULERS` or a running scheduler's address (``tcp://HOST:PORT``)."""
    if text in SCHEDULERS or "://" in text:
        return text
    host, _, port = text.rpartition(":")
    if host and port.isdigit():  # HOST:PORT, as dask's Client takes it
        return f"tcp://{text}"
    raise argparse.ArgumentTypeError(f"must be one of {', '.join(SCHEDULERS)} or a scheduler's address such as "
                                     f"tcp://HOST:8786, got {text!r}")


def _shards_arg(text: str) -> int | str:
    """An argparse type: ``workers`` or a positive number of parts (``shards=`` of NWBDaskIO)."""
    return text if text == "workers" else _int_at_least(1, "workers or a positive integer")(text)


def _check_scheduler_args(args: argparse.Namespace) -> None:
    """Refuse ``--scheduler`` with ``--scheduler-file``; then put the command's default in an absent --scheduler."""
    if args.scheduler_file is not None and args.scheduler is not None:
        raise UsageError(f"--scheduler {args.scheduler} and --scheduler-file {args.scheduler_file} both name a "
                         "scheduler; give one")
    args.scheduler = args.scheduler or args.scheduler_default


def _scheduler(args: argparse.Namespace):
    from nwb_dask.engine import use_scheduler

    _check_scheduler_args(args)
    return use_scheduler(args.scheduler, args.workers, scheduler_file=args.scheduler_file)


def _add_compute_arguments(parser: argparse.ArgumentParser, default: str = "threads") -> None:
    """``--scheduler``, ``--scheduler-file`` and ``--workers``: the same choices on every command that computes."""
    parser.add_argument("--scheduler", type=_scheduler_kind,
                        metavar="{" + ",".join(SCHEDULERS) + ",tcp://HOST:PORT}",
                        help=f"dask scheduler (default {default}; local = a LocalCluster of worker processes; an "
                             "address connects to a running cluster, which is left running)")
    parser.add_argument("--scheduler-file", metavar="FILE",
                        help="connect to the running cluster whose scheduler wrote FILE (dask scheduler "
                             "--scheduler-file, dask-mpi)")
    parser.add_argument("--workers", type=_positive_int,
                        help="workers of the cluster or pool nwb-dask starts (default: all cores; not with an "
                             "address or --scheduler-file)")
    parser.set_defaults(scheduler_default=default)  # applied by _check_scheduler_args


def _add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object (docs/cli.md)")


def _cmd_demo(args: argparse.Namespace) -> int:
    from nwb_dask.demo import run_demo

    _check_scheduler_args(args)
    c = codec(args.codec, **({"level": args.level} if args.level is not None else {}))
    result = run_demo(
        seconds=args.seconds,
        path=args.output,
        codec_spec=c,
        scheduler=args.scheduler,
        workers=args.workers,
        progress=not args.quiet,
        serial_seconds=args.serial_seconds,
        overwrite=args.overwrite,
        scheduler_file=args.scheduler_file,
        shards=args.shards,
    )
    data = dataclasses.asdict(result)
    data.update(ratio=result.ratio, write_mb_s=result.write_mb_s, kept=args.output is not None)
    _emit(args, data, result.report())
    return OK


def _cmd_links(args: argparse.Namespace) -> int:
    from nwb_dask.nwb.links import audit_links

    records = audit_links(args.file)
    broken = sum(r.broken for r in records)
    absolute = sum(r.absolute for r in records)
    if args.json:
        _out(json.dumps({
            "file": args.file,
            "links": [dataclasses.asdict(r) for r in records],
            "broken": broken,
            "absolute": absolute,
        }, indent=2))
    else:
        if not records:
            _out(f"{args.file}: no external links or virtual-dataset sources")
        for r in records:
            status = f"BROKEN: {r.reason}" if r.broken else f"ok -> {r.resolved}"
            flag = "  [absolute path: the files cannot be moved together]" if r.absolute else ""
            _out(f"{r.kind:<9} {r.path}  ->  {r.file}:{r.object}  {status}{flag}")
        if records:
            _out(f"{len(records)} link(s), {broken} broken, {absolute} with absolute paths")
    return CHECK_FAILED if broken else OK


def _cmd_consolidate(args: argparse.Namespace) -> int:
    from nwb_dask.tools.consolidate import consolidate

    c = _codec_arg(args, keep=None)
    with _scheduler(args):
        result = consolidate(
            args.input,
            args.output,
            codec=c,
            verify=not args.no_verify,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    moved = result.datasets + result.groups
    text = (f"wrote {result.output}: {len(moved)} object(s) copied in"
            + (", verified against the sources" if result.verified else ""))
    _emit(args, result, "\n".join([text] + [f"  {name}" for name in moved]))
    return OK


def _chunks_arg(text: str | None):
    if text is None or text in ("auto", "source"):
        return text or "auto"
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--chunks must be auto, source or a shape like 30000,64; got {text!r}") from None


def _rewrite(run, args: argparse.Namespace, **extra) -> int:
    """Run repack or convert with the options they share, on the chosen scheduler; print the report."""
    c = _codec_arg(args)
    chunks = _chunks_arg(args.chunks)
    with _scheduler(args):
        result = run(
            args.input,
            args.output,
            codec=c,
            chunks=chunks,
            verify=not args.no_verify,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **extra,
        )
    _emit(args, result, result.report())
    return OK


def _cmd_repack(args: argparse.Namespace) -> int:
    from nwb_dask.tools.repack import repack

    return _rewrite(repack, args, min_bytes=int(args.min_mb * 2**20), cloud=args.cloud)


def _cmd_convert(args: argparse.Namespace) -> int:
    from nwb_dask.tools.convert import convert

    return _rewrite(convert, args, allow_pickle=args.allow_pickle, min_bytes=int(args.min_mb * 2**20))


def _add_rewrite_arguments(parser: argparse.ArgumentParser, *, codec: str, codec_help: str, chunks: str,
                           chunks_help: str, overwrite_help: str) -> None:
    """The arguments repack and convert share; ``codec`` and ``chunks`` are their defaults."""
    parser.add_argument("input", help="the NWB file to read (convert: or an .nwb.zarr store); never modified")
    parser.add_argument("output", help="the file or store to write (atomically; see --overwrite)")
    parser.add_argument("--codec", default=codec, help=codec_help)
    parser.add_argument("--level", type=int, help="compression level for --codec (not with --codec source)")
    parser.add_argument("--chunks", default=chunks, help=chunks_help)
    parser.add_argument("--min-mb", type=_non_negative, default=REWRITE_MIN_BYTES / 2**20,
                        help="rewrite datasets of at least this many MiB in parallel "
                        f"(>= 0; default {REWRITE_MIN_BYTES / 2**20:g}); "
                        "smaller ones go through HDMF's export as they are")
    _add_compute_arguments(parser)
    parser.add_argument("--no-verify", action="store_true", help="skip comparing OUTPUT with INPUT")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_json_argument(parser)


def _remote_options(args: argparse.Namespace, path: str) -> dict:
    """``remote_options`` from ``--timeout``, ``--retries`` and (where the command has it) ``--no-cache``.

    Refused, naming the flags, when ``path`` is local.
    """
    from nwb_dask.hdf5.read import is_url

    options = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.retries is not None:
        options["retries"] = args.retries
    has_cache_flag = hasattr(args, "no_cache")
    if has_cache_flag and args.no_cache:
        options["metadata_cache"] = False
    if options and not is_url(path):
        flags = "--timeout, --retries and --no-cache" if has_cache_flag else "--timeout and --retries"
        raise UsageError(f"{flags} apply to URLs; {path} is a local path")
    return options


def _cmd_info(args: argparse.Namespace) -> int:
    from nwb_dask.tools.info import info

    options = _remote_options(args, args.file)
    from nwb_dask.nwb.index import is_index

    if is_index(args.file):  # a LINDI / kerchunk index: its datasets and whether its sources changed
        from nwb_dask.tools.index import describe_index

        result = describe_index(args.file, remote_options=options or None)
        _out(result.to_json() if args.json else result.report(all_datasets=args.all))
        return CHECK_FAILED if any(s["stale"] for s in result.sources.values()) else OK
    try:
        result = info(args.file, remote_options=options or None)
    except IsADirectoryError as exc:  # a Zarr store is pointed to convert / read_nwb: say if they need the extra
        from nwb_dask.api import is_zarr
        from nwb_dask.compat import zarr_problem

        problem = zarr_problem("that", extra="zarr") if is_zarr(args.file) else None
        if problem is None:
            raise
        raise IsADirectoryError(f"{exc}; {problem}") from None
    _out(result.to_json() if args.json else result.report(all_datasets=args.all))
    return OK


def _cmd_index(args: argparse.Namespace) -> int:
    options = _remote_options(args, args.source)
    try:
        from nwb_dask.tools.index import write_index

        result = write_index(args.source, args.output, overwrite=args.overwrite, remote_options=options or None,
                             url=args.url)
    except ImportError as exc:  # lindi missing: bad setup, one line naming the extra
        raise UsageError(str(exc)) from None
    _emit(args, result, result.report())
    return OK


def _cmd_cache(args: argparse.Namespace) -> int:
    from nwb_dask.sources import MetadataCache

    cache = MetadataCache(args.dir) if args.dir else MetadataCache()
    if args.action == "clear":
        removed = cache.clear()
        _emit(args, {"directory": str(cache.directory), "removed": removed},
              f"removed {removed} metadata cache entr{'y' if removed == 1 else 'ies'} from {cache.directory}")
        return OK
    report = cache.info()
    lines = [f"{row['url']}  {row['size']} bytes  {row['validator']}  {row['metadata_bytes']} metadata bytes "
             f"in {row['runs']} runs" for row in report["files"]]
    lines.append(f"{report['entries']} entr{'y' if report['entries'] == 1 else 'ies'}, {report['bytes']} bytes "
                 f"of {report['max_bytes']} in {report['directory']}")
    _emit(args, report, "\n".join(lines))
    return OK


def _cmd_recover(args: argparse.Namespace) -> int:
    from nwb_dask.live import recover

    recover(args.file)
    _out(f"{args.file}: writer mark cleared; any HDF5 reader opens it now")
    return OK


def _cmd_follow(args: argparse.Namespace) -> int:
    import time

    from nwb_dask.live import follow

    t0 = time.monotonic()
    total = args.start
    for start, new in follow(args.file, args.dataset, start=args.start, poll=args.poll,
                             idle_timeout=args.idle_timeout):
        total = start + len(new)
        _out(f"{time.monotonic() - t0:8.2f} s  {args.dataset}: {total} samples (+{len(new)})", flush=True)
    _out(f"no new samples for {args.idle_timeout:g} s; {total} samples")
    return OK


def _cmd_clean(args: argparse.Namespace) -> int:
    from nwb_dask.atomic import find_partials, remove_partials

    seconds = args.older_than * 60
    if args.dry_run:
        found = find_partials(args.directory, older_than=seconds, recursive=args.recursive)
    else:
        found = remove_partials(args.directory, older_than=seconds, recursive=args.recursive)
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {path}" for path in found]
    lines.append(f"{len(found)} nwb_dask temporar{'y' if len(found) == 1 else 'ies'} "
                 f"{'found' if args.dry_run else 'removed'} in {args.directory}")
    _emit(args, {"directory": str(args.directory), "dry_run": args.dry_run, "older_than_minutes": args.older_than,
                 "recursive": args.recursive, "paths": [str(p) for p in found]}, "\n".join(lines))
    return OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="nwb-dask", description="Parallel, out-of-core NWB I/O with Dask.",
        epilog="Exit status: 0 done, 1 a check failed (broken link, output that does not verify), 2 bad input "
        "(one error line naming the file or option), 3 an unexpected error (a bug; traceback shown). "
        "--json and --scheduler/--workers mean the same on every command (docs/cli.md).",
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
    _add_compute_arguments(demo, default="local")
    demo.add_argument(
        "--serial-seconds",
        type=_non_negative,
        default=5.0,
        help="also write this much with plain serial pynwb for comparison (0: skip; default 5)",
    )
    demo.add_argument("--shards", type=_shards_arg, metavar="workers|N",
                      help="write the recording sharded: one part file per worker (workers) or N parts, "
                           "under OUTPUT.parts, joined by a virtual dataset (docs/cluster.md)")
    demo.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _add_json_argument(demo)
    demo.set_defaults(func=_cmd_demo)

    links = sub.add_parser(
        "links",
        help="list external links and virtual-dataset sources; exit 1 if any is broken",
        description="List the external links and virtual-dataset sources of an HDF5/NWB file, resolved the "
        "way HDF5 resolves them (relative to the file's directory), flag broken targets and absolute paths. "
        "Exit status 1 if any target is broken, 0 otherwise.",
    )
    links.add_argument("file", help="HDF5/NWB file")
    _add_json_argument(links)
    links.set_defaults(func=_cmd_links)

    cons = sub.add_parser(
        "consolidate",
        help="copy external links and virtual datasets into a new self-contained file",
        description="Write a self-contained copy of INPUT at OUTPUT: external links and virtual datasets "
        "are replaced by real datasets, copied in parallel and verified against their sources. OUTPUT "
        "appears atomically; INPUT is never modified.",
    )
    cons.add_argument("input", help="the NWB file with external links or virtual datasets; never modified")
    cons.add_argument("output", help="the self-contained NWB file to write (atomically)")
    cons.add_argument("--codec", help="compression of the copied datasets (default: the source's, else gzip)")
    cons.add_argument("--level", type=int, help="compression level for --codec (only with --codec)")
    _add_compute_arguments(cons)
    cons.add_argument("--no-verify", action="store_true", help="skip comparing the copies with their sources")
    cons.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (never INPUT)")
    cons.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _add_json_argument(cons)
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
    rp.add_argument("--cloud", action="store_true",
                    help="write a cloud-optimized file: HDF5 paged aggregation (8 MiB pages, metadata together) "
                    "and, with --chunks auto, 2 MiB chunks for range reads; see docs/repack.md")
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
    inf.add_argument("--json", action="store_true", help="print the report as one JSON object (every dataset)")
    inf.add_argument("--all", action="store_true", help="also list datasets under 1 MiB")
    inf.add_argument("--timeout", type=_positive, help="URL only: connect and read timeout of each request in "
                     "seconds (default 5 to connect, 10 to read)")
    inf.add_argument("--retries", type=_non_negative_int, metavar="N",
                     help="URL only: retries of a failed request (default 5, of which 1 after a timeout)")
    inf.add_argument("--no-cache", action="store_true",
                     help="URL only: do not use the on-disk metadata cache (docs/reader.md, Metadata cache)")
    inf.set_defaults(func=_cmd_info)

    ix = sub.add_parser(
        "index",
        help="write a LINDI index (.lindi.json) of a local or remote file, to open it in one request",
        description="Write a LINDI JSON index of an HDF5/NWB file (local, or http(s)/s3 URL): the file's "
        "structure and small datasets, and where every chunk's bytes are in the original file (its absolute "
        "path or the URL, so the index can be moved). nwb_dask.read_nwb(INDEX) and lindi open the file "
        "through it in one request. The source's size and ETag (else Last-Modified; local: mtime) are recorded, "
        "and reads check them. Needs lindi: pip install \"nwb-dask[index]\".",
    )
    ix.add_argument("source", help="HDF5/NWB file or URL")
    ix.add_argument("-o", "--output", help="the index, ending in .lindi.json (default: SOURCE-NAME.lindi.json "
                    "beside a local file, in the current directory for a URL)")
    ix.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ix.add_argument("--url", help="local SOURCE only: the http(s)/s3 URL the file will be served at (uploaded "
                    "with the index beside it); chunk references point there and only the size is recorded")
    ix.add_argument("--timeout", type=_positive, help="URL only: connect and read timeout of each request in "
                    "seconds (default 5 to connect, 10 to read)")
    ix.add_argument("--retries", type=_non_negative_int, metavar="N",
                    help="URL only: retries of a failed request (default 5, of which 1 after a timeout)")
    _add_json_argument(ix)
    ix.set_defaults(func=_cmd_index)

    cac = sub.add_parser(
        "cache",
        help="list or clear the on-disk metadata cache of remote files",
        description="Remote opens keep the metadata they read in an on-disk cache (default "
        "$NWB_DASK_CACHE_DIR, else $XDG_CACHE_HOME/nwb_dask/metadata, else ~/.cache/nwb_dask/metadata), "
        "checked against each file's size and ETag/Last-Modified. 'info' lists the entries, 'clear' removes them.",
    )
    cac.add_argument("action", choices=("info", "clear"))
    cac.add_argument("--dir", help="the cache directory (default: as above)")
    _add_json_argument(cac)
    cac.set_defaults(func=_cmd_cache)

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
    fol.add_argument("--poll", type=_positive, default=0.1, help="seconds between looks (default 0.1)")
    fol.add_argument("--idle-timeout", type=_non_negative, default=10.0, help="stop after this many idle seconds (default 10)")
    fol.set_defaults(func=_cmd_follow)

    cl = sub.add_parser(
        "clean",
        help="find and delete the .NAME.XXXXXXXX.partial.* temporaries a killed writer left",
        description="nwb_dask writers build every output under a hidden temporary name next to it "
        "(.NAME.XXXXXXXX.partial.SUFFIX) and remove it on any error, Ctrl-C or SIGTERM; only SIGKILL, "
        "a crash or a power cut leaves one behind. This lists (--dry-run) or deletes them. Run it when no "
        "writer is writing there, or give --older-than.",
    )
    cl.add_argument("directory")
    cl.add_argument("--recursive", "-r", action="store_true", help="also in subdirectories")
    cl.add_argument("--older-than", type=_non_negative, default=0.0, metavar="MINUTES",
                    help="only temporaries not modified for this many minutes (spares running writers)")
    cl.add_argument("--dry-run", "-n", action="store_true", help="list only, delete nothing")
    _add_json_argument(cl)
    cl.set_defaults(func=_cmd_clean)
    return parser


def _message(exc: BaseException) -> str:
    """An expected error's message (without the quotes ``str(KeyError)`` adds)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input: exit status 2, one line on stderr, no traceback.

    Missing, wrong or corrupt files (``OSError``: FileNotFoundError,
    FileExistsError, IsADirectoryError, :class:`nwb_dask.errors.NotHDF5Error`,
    :class:`nwb_dask.sources.RemoteReadError`, h5py's errors), invalid values
    and options (``ValueError``: CodecError, ChunkShapeError, RepackError,
    NotNWBError, WriteError, UsageError, ...), missing objects (``KeyError``),
    a live writer's failure (:class:`nwb_dask.live.StreamError`), a cluster
    whose workers lack nwb_dask or run another version
    (:class:`nwb_dask.cluster.WorkerEnvironmentError`) and an
    optional part not installed (:class:`nwb_dask.compat.MissingExtraError`:
    a Zarr store or an index without the extra, naming it).
    """
    from nwb_dask.cluster import WorkerEnvironmentError
    from nwb_dask.compat import MissingExtraError
    from nwb_dask.live import StreamError

    return OSError, ValueError, KeyError, StreamError, MissingExtraError, WorkerEnvironmentError


def _silence_stdout() -> None:
    """Point stdout at devnull, so the interpreter's final flush does not fail again (Python's signal docs)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capturing output)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _one_line_warnings(where: str) -> Any:
    """Warnings as ``nwb-dask CMD: warning: ...`` lines on stderr, not Python's file:line and source line.

    Returns the previous ``warnings.showwarning`` (main() puts it back).
    """
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{where}: warning: {message}", file=file or sys.stderr)

    previous, warnings.showwarning = warnings.showwarning, show
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nwb-dask``; returns the exit status (see the module docstring and docs/cli.md)."""
    args = build_parser().parse_args(argv)  # bad usage: argparse prints it and exits with status 2
    where = f"nwb-dask {args.command}"
    shown = _one_line_warnings(where)
    try:
        return _main(args, where)
    finally:
        warnings.showwarning = shown


def _main(args: argparse.Namespace, where: str) -> int:
    from nwb_dask.errors import VerificationError

    try:
        status = args.func(args)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise _StdoutClosed from None
        return status
    except _StdoutClosed:  # `nwb-dask info ... | head`: the reader has what it wanted
        _silence_stdout()
        return OK
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if isinstance(exc, VerificationError):
            print(f"{where}: check failed: {exc}", file=sys.stderr)
            return CHECK_FAILED
        if isinstance(exc, expected_errors()):
            print(f"{where}: error: {_message(exc)}", file=sys.stderr)
            return BAD_INPUT
        traceback.print_exc()  # a bug: keep the traceback for the report
        print(f"{where}: internal error ({type(exc).__name__}: {exc}); this is a bug in nwb_dask, please report it "
              "with the traceback above", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

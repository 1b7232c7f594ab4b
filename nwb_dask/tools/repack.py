"""Repack: recompress and rechunk an existing NWB file in parallel, atomically, verified.

:func:`repack` rewrites any NWB 2.x file pynwb can read:

* pynwb reads the input (never opened for writing) and HDMF's *export* writes
  the output, which keeps every group, attribute, object ID, object and region
  reference, soft and external link, table (ragged columns included), string,
  compound and image dataset as it was;
* before the export, every large numeric dataset of the input (at least
  ``min_bytes``) is swapped for a lazy nwb_dask read of itself
  (:func:`nwb_dask.read_dataset`) wrapped in :class:`nwb_dask.DaskDataIO` with
  the new codec and chunk shape, so its bytes are decoded, re-chunked and
  compressed on the dask workers and stored by the parallel writer;
* the output is built under a temporary name next to the target, compared with
  the input object by object (links, attributes, small datasets read whole,
  large datasets chunk by chunk in parallel), ``fsync``\\ ed and only then
  renamed into place.  On any error, Ctrl-C or SIGTERM the temporary file is
  removed and nothing appears at the target (:class:`nwb_dask.atomic.AtomicOutput`).

This is what neuroconv's ``repack_nwbfile`` does with HDMF's ``set_data_io``
(serially, through HDF5's filter pipeline); benchmarks/repack.py compares them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


from nwb_dask.chunking import (
    CLOUD_CHUNK_BYTES,
    DEFAULT_CHUNK_BYTES,
    REWRITE_MIN_BYTES,
    ChunkShapeError,
    guess_chunk_shape,
    is_large_numeric,
    resolve_chunk_shape,
)
from nwb_dask.codecs import Codec, CodecSpec, codec as make_codec, runs_outside_hdf5, source_codec
from nwb_dask.errors import VerificationError
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.tools.verify import compare_files

__all__ = ["RepackError", "RepackResult", "RepackedDataset", "repack"]


class RepackError(ValueError):
    """Repack could not run, or the output differs from the input (named object)."""


class RepackVerificationError(RepackError, VerificationError):
    """The repacked or converted output differs from its input (the objects are named); no output was left."""


@dataclasses.dataclass
class RepackedDataset:
    """One dataset rewritten by :func:`repack`."""

    path: str
    shape: tuple
    dtype: str
    logical_bytes: int
    chunks_in: tuple | None
    codec_in: str
    stored_in: int
    chunks_out: tuple
    codec_out: str
    stored_out: int = 0

    @property
    def ratio_in(self) -> float:
        return self.logical_bytes / self.stored_in if self.stored_in else float("nan")

    @property
    def ratio_out(self) -> float:
        return self.logical_bytes / self.stored_out if self.stored_out else float("nan")


@dataclasses.dataclass
class RepackResult:
    """What :func:`repack` did.

    Attributes
    ----------
    input, output : pathlib.Path
    datasets : list of RepackedDataset
        The datasets recompressed (the rest was exported as it was).
    input_bytes, output_bytes : int
        File sizes.
    seconds : float
        Wall time, verification included.
    verify_seconds : float
    verified : bool
    stats : WriteStats
        The parallel writer's statistics.
    migrations : list of nwb_dask.migrations.Migration
        The schema migrations pynwb's export applied to an older file (each
        object and what changed), accepted by the verifier.
    """

    input: Path
    output: Path
    datasets: list[RepackedDataset]
    input_bytes: int
    output_bytes: int
    seconds: float
    verify_seconds: float
    verified: bool
    stats: WriteStats
    migrations: list = dataclasses.field(default_factory=list)

    def report(self) -> str:
        """A human-readable summary (what ``nwb-dask repack`` prints)."""
        lines = [f"{'dataset':<48}{'shape':>18} {'chunks in -> out':>28} {'codec in -> out':>22}{'ratio':>14}"]
        for d in self.datasets:
            chunks = f"{'virtual' if d.codec_in == 'virtual' else _fmt(d.chunks_in)} -> {_fmt(d.chunks_out)}"
            lines.append(f"{d.path:<48}{_fmt(d.shape):>18} {chunks:>28} {d.codec_in + ' -> ' + d.codec_out:>22}"
                         f"{d.ratio_in:>6.2f} -> {d.ratio_out:<5.2f}")
        mb = self.stats.logical_bytes / 1e6
        lines.append(
            f"{self.input} ({self.input_bytes / 1e6:.1f} MB) -> {self.output} ({self.output_bytes / 1e6:.1f} MB): "
            f"{_size_change(self.input_bytes, self.output_bytes)}; {len(self.datasets)} dataset(s), "
            f"{mb:.0f} MB recompressed in {self.seconds:.1f} s"
            + (f" ({self.verify_seconds:.1f} s verifying, every object compared)" if self.verified else " (not verified)"))
        return "\n".join(lines + migration_lines(self.migrations))


def migration_lines(migrations: Sequence) -> list[str]:
    """The report's lines on the schema migrations applied (none: no line)."""
    if not migrations:
        return []
    return [f"{len(migrations)} schema migration(s) by pynwb's export of an older file (nwb_dask.migrations):"] + [
        f"  {m}" for m in migrations]


def _size_change(before: int, after: int) -> str:
    """``"2.50x smaller"`` or ``"1.20x larger"``."""
    return f"{before / max(1, after):.2f}x smaller" if after <= before else f"{after / max(1, before):.2f}x larger"


def _fmt(shape) -> str:
    return "contiguous" if shape is None else "x".join(str(s) for s in shape)


def _stored(dset) -> int:
    try:
        return int(dset.id.get_storage_size())
    except Exception:  # pragma: no cover
        return 0


# --------------------------------------------------------------------------- #
# choosing the datasets                                                        #
# --------------------------------------------------------------------------- #
def chunks_for(chunks: Any, dset, name: str, target_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, ...]:
    """The output chunk shape of one dataset (``target_bytes``: the size "auto" aims at).

    One shape for every dataset is a time-series shape: its leading axes apply
    (``(30000, 64)`` gives 1-D timestamps ``(30000,)``), trailing axes are whole.
    A shape given for one dataset in a mapping must have its number of axes.
    """
    per_dataset = isinstance(chunks, Mapping)
    if per_dataset:
        chunks = chunks.get(name, chunks.get(name.lstrip("/"), "auto"))
    if chunks in (None, "auto", True):
        return guess_chunk_shape(dset.shape, dset.dtype, target_bytes)
    if chunks == "source":
        if not dset.chunks:
            return guess_chunk_shape(dset.shape, dset.dtype, target_bytes)
        # A growing source's chunks may pass its data (docs/chunking.md): clipped to it below.
        chunks = dset.chunks
    if isinstance(chunks, str):
        raise ChunkShapeError(f"chunks must be 'auto', 'source', a shape or a mapping, got {chunks!r}")
    given = tuple(int(c) for c in chunks)
    if len(given) != dset.ndim:
        if len(given) < dset.ndim:  # a time-series shape (time, channels) applies to the leading axes
            given = given + tuple(dset.shape[len(given):])
        elif not per_dataset:
            given = given[:dset.ndim]
        else:
            raise ChunkShapeError(f"dataset {name!r} of shape {dset.shape}: chunks {given} have too many axes")
    return resolve_chunk_shape(tuple(min(c, max(1, s)) for c, s in zip(given, dset.shape)), dset.shape, dset.dtype,
                               name=name)


def large_fields(
    nwbfile, min_bytes: int, stored: Callable[[Any], str | None] | str | os.PathLike
) -> list[tuple[Any, str | None, Any]]:
    """``[(container, field, array)]``: the numeric stored datasets of an NWBFile worth the parallel writer.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        As read by pynwb (HDF5) or hdmf-zarr (Zarr).
    min_bytes : int
        Smallest uncompressed size.
    stored : callable or path
        ``stored(value)`` is the dataset's path in the input when ``value`` is
        a dataset of it that may be rewritten (an ``h5py.Dataset`` of this
        file, a ``zarr.Array``, ...), else None.  A path stands for the
        datasets of that HDF5 file, virtual ones included (what :func:`repack`
        rewrites; see :func:`in_file`).

    Returns
    -------
    list of (container, field, array)
        ``field`` is None for the values of an hdmf ``Data`` (table columns,
        images), which are not fields; each dataset appears once.
    """
    from hdmf.container import Data

    if not callable(stored):
        stored = in_file(Path(stored).resolve())
    seen: set[str] = set()
    found = []
    for container in nwbfile.objects.values():
        items = list((getattr(container, "fields", None) or {}).items())
        if isinstance(container, Data):
            items.append((None, container.data))
        for key, value in items:
            name = stored(value)
            if name is None or name in seen:
                continue
            # an empty dataset has no block to write; other dtypes only HDF5 converts and filters
            if not is_large_numeric(value.shape, value.dtype, min_bytes) or value.size == 0 \
                    or not runs_outside_hdf5(value.dtype):
                continue
            seen.add(name)
            found.append((container, key, value))
    return found


def own_codec(dset) -> Codec:
    """The codec an HDF5 dataset is stored with, as nwb_dask writes it again (``codec="source"``).

    Contiguous data stay uncompressed; filters nwb_dask cannot run (lzf, ...)
    become gzip.
    """
    return source_codec(dset, contiguous="none")


def swap_field(container, key: str | None, new: Any) -> None:
    """Replace a field (or, with ``key=None``, a ``Data``'s values) of a container read from a file.

    The container is marked modified: HDMF's export rebuilds only modified
    containers, and would otherwise copy the old dataset as it was.
    """
    if key is None:
        container.transform(lambda _old, new=new: new)
    else:
        container.fields[key] = new
    container.set_modified()


def in_file(source: Path) -> Callable[[Any], str | None]:
    """``stored`` for :func:`large_fields`: datasets of the HDF5 file ``source`` (links stay links).

    A virtual dataset of the file is one of them: it is rewritten as a real
    dataset (its sources read, :func:`nwb_dask.read_dataset`).  Kept virtual
    by HDMF's export, it named its sources relative to the *output*, so the
    output read fill values once anywhere else than beside them (a sharded
    file's ``.parts``), and the codec asked for was not applied.
    """
    import h5py

    def stored(value: Any) -> str | None:
        if not isinstance(value, h5py.Dataset):
            return None
        try:
            return value.name if os.path.samefile(value.file.filename, source) else None
        except OSError:
            return None

    return stored


# --------------------------------------------------------------------------- #
# repack                                                                       #
# --------------------------------------------------------------------------- #
def repack(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    codec: CodecSpec = "gzip",
    chunks: Any = "auto",
    min_bytes: int = REWRITE_MIN_BYTES,
    verify: bool = True,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    cloud: bool = False,
) -> RepackResult:
    """Rewrite an NWB file with its large datasets recompressed and rechunked in parallel.

    Parameters
    ----------
    source : str or PathLike
        Any NWB 2.x file pynwb reads (extensions with cached namespaces
        included).  Opened read-only; never modified.
    output : str or PathLike
        The new file, created atomically.
    codec : codec spec
        Compression of the large datasets (default ``"gzip"``: level 4 +
        shuffle, ISA-L); ``"source"`` keeps each dataset's own codec where
        nwb_dask can run it.
    chunks : "auto", "source", tuple or mapping
        Chunk shapes: nwb_dask's guess (default), the input's, one shape for
        every large dataset (leading axes; trailing axes whole), or
        ``{dataset path: shape}``.
    min_bytes : int
        Datasets smaller than this (uncompressed) are exported as they are.
    verify : bool
        Compare the output with the input object by object before renaming it
        into place (default True).
    overwrite : bool
        Replace an existing ``output`` (never ``source``).
    scheduler : optional
        Dask scheduler (default: the active one; threads).
    progress : bool
        Progress bar of the parallel writer.
    cloud : bool
        Write a cloud-optimized file (default False): HDF5 paged aggregation
        (:func:`nwb_dask.nwb.io.cloud_file_options`, 8 MiB pages) and, for
        ``chunks="auto"``, chunks near :data:`~nwb_dask.chunking.CLOUD_CHUNK_BYTES`
        (2 MiB) for range reads.  See docs/repack.md.

    Returns
    -------
    RepackResult

    Raises
    ------
    FileNotFoundError
        No such ``source``.
    FileExistsError
        ``output`` exists and ``overwrite`` is false.
    RepackError
        ``output`` is ``source``, or the output differs from the input (the
        differences are listed; nothing is left at ``output``).
    """
    import h5py
    from pynwb import NWBHDF5IO

    from nwb_dask.atomic import AtomicOutput, check_output
    from nwb_dask.errors import check_input_file
    from nwb_dask.tools.info import codec_label
    from nwb_dask.nwb.io import DaskDataIO, NWBDaskIO
    from nwb_dask.tools.migrations import keep_user_metadata, rebuild_incomplete
    from nwb_dask.hdf5.read import release_handles
    from nwb_dask.nwb.read import read_dataset

    t0 = time.perf_counter()
    src = Path(source).resolve()
    check_input_file(src, nwb=True, tool="repack")  # missing, a directory, not HDF5 or plain HDF5: named
    out = check_output(output, overwrite=overwrite, tool="repack", source=src, same_error=RepackError)
    fixed = None if codec == "source" else make_codec(codec)

    datasets: list[RepackedDataset] = []
    migrations: list = []
    verify_seconds = 0.0
    with AtomicOutput(out) as atomic:
        temp = atomic.temp
        with NWBHDF5IO(str(src), "r", load_namespaces=True) as src_io:
            nwbfile = src_io.read()
            for container, key, dset in large_fields(nwbfile, min_bytes, in_file(src)):
                c = fixed if fixed is not None else own_codec(dset)
                shape = chunks_for(chunks, dset, dset.name, CLOUD_CHUNK_BYTES if cloud else DEFAULT_CHUNK_BYTES)
                datasets.append(RepackedDataset(
                    dset.name, tuple(dset.shape), str(dset.dtype), int(dset.size * dset.dtype.itemsize),
                    tuple(dset.chunks) if dset.chunks else None, "virtual" if dset.is_virtual else codec_label(dset),
                    _stored(dset),
                    tuple(shape), c.label))
                extra = {"fillvalue": dset.fillvalue} if dset.fillvalue not in (None, 0) else {}
                swap_field(container, key, DaskDataIO(read_dataset(src, dset.name), codec=c, chunks=shape, **extra))
            if isinstance(chunks, Mapping):  # a mistyped path would silently keep the default
                done = {d.path for d in datasets}
                unknown = [k for k in chunks if "/" + str(k).lstrip("/") not in done]
                if unknown:
                    raise ChunkShapeError(f"chunks given for {unknown}, which are not datasets repack recompresses "
                                          f"(those are: {sorted(done)})")
            keep_user_metadata(nwbfile, src_io)
            rebuild_incomplete(nwbfile, src_io)
            with NWBDaskIO(temp, "w", atomic=False, scheduler=scheduler, progress=progress, cloud=cloud) as io:
                io.export(src_io, nwbfile)
                stats = io.stats or WriteStats()
            nwbfile = container = dset = None  # noqa: F841 - release the input's HDF5 objects
        if verify:
            tv = time.perf_counter()
            try:
                diffs = compare_files(src, temp, bulk=[d.path for d in datasets], scheduler=scheduler,
                                      migrations=migrations)
            finally:
                release_handles()  # the output (and input) free to open for writing once returned
            verify_seconds = time.perf_counter() - tv
            if diffs:
                shown = "\n  ".join(diffs[:20]) + (f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else "")
                raise RepackVerificationError(f"verification failed: the repacked copy of {src} differs:\n  {shown}")
        with h5py.File(temp, "r") as f:
            for d in datasets:
                d.stored_out = _stored(f[d.path])
    return RepackResult(src, out, datasets, src.stat().st_size, out.stat().st_size, time.perf_counter() - t0,
                        verify_seconds, verify, stats, migrations)

"""HDF5 NWB <-> NWB-Zarr conversion: in parallel, verified object by object, atomically."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from nwb_dask.atomic import AtomicOutput, check_output
from nwb_dask.chunking import REWRITE_MIN_BYTES
from nwb_dask.codecs import ZARR_CODECS, codec as make_codec, source_codec
from nwb_dask.compat import require_zarr
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.nwb.dataio import DaskDataIO
from nwb_dask.tools.verify import compare_conversion, object_ids
from nwb_dask.zarr.io import io_class, pickle_allowed, pickled_arrays
from nwb_dask.zarr.read import is_zarr_path

__all__ = ["ConvertResult", "convert"]


# --------------------------------------------------------------------------- #
# convert                                                                      #
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class ConvertResult:
    """What :func:`convert` did."""

    input: Path
    output: Path
    direction: str  # "hdf5->zarr" or "zarr->hdf5"
    datasets: list[str]
    seconds: float
    verify_seconds: float
    verified: bool
    stats: WriteStats
    #: The schema migrations pynwb's export applied to an older file (nwb_dask.migrations.Migration).
    migrations: list = dataclasses.field(default_factory=list)

    def report(self) -> str:
        from nwb_dask.tools.repack import migration_lines

        return "\n".join([f"{self.input} -> {self.output} ({self.direction}): {len(self.datasets)} large dataset(s), "
                          f"{self.stats.logical_bytes / 1e6:.0f} MB written in parallel, {self.seconds:.1f} s"
                          + (f" ({self.verify_seconds:.1f} s verifying)" if self.verified else " (not verified)")]
                         + migration_lines(self.migrations))


def _zarr_array_path(value: Any) -> str | None:
    """``stored`` for :func:`nwb_dask.repack.large_fields`: arrays of a Zarr store."""
    import zarr  # convert checked it (require_zarr)

    return "/" + value.path if isinstance(value, zarr.Array) else None


def convert(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    codec: Any = "source",
    chunks: Any = "source",
    min_bytes: int = REWRITE_MIN_BYTES,
    verify: bool = True,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    allow_pickle: bool = False,
) -> ConvertResult:
    """Convert an HDF5 NWB file to an NWB-Zarr store, or back, in parallel and verified.

    The direction follows the paths: a Zarr store (a directory, or a name
    ending in ``.zarr``) on one side, an HDF5 file on the other.  pynwb (or
    hdmf-zarr) reads the input, never for writing; every numeric dataset of
    at least ``min_bytes`` is read lazily by nwb_dask and written in parallel
    (to Zarr: each dask task stores its own chunks; to HDF5: nwb_dask's
    parallel writer); HDMF's export writes everything else, keeping object
    IDs, references and links.  The output is built under a temporary name,
    its large datasets compared with the input element by element (and its
    object IDs with the input's), and only then renamed into place.

    Parameters
    ----------
    source, output : str or PathLike
    codec : codec spec or "source"
        Compression of the large datasets; ``"source"`` (default) keeps each
        one's codec where the other format has it, else gzip.
    chunks : "source", "auto", tuple or mapping
        As for :func:`nwb_dask.repack` (default: keep the input's chunks).
    min_bytes : int
        Smaller datasets are exported as they are.
    verify : bool
        Compare before renaming (default True).
    overwrite : bool
        Replace an existing ``output``.
    scheduler : optional
        Dask scheduler or Client.
    progress : bool
        Progress bar.
    allow_pickle : bool
        Read a Zarr input whose object datasets use numcodecs' Pickle codec
        (hdmf-zarr's default for references; unpickling can run code, so
        numcodecs refuses it unless told).  nwb_dask writes references as
        JSON, and Pickle only for compound datasets holding references.

    Returns
    -------
    ConvertResult
    """
    from pynwb import NWBHDF5IO

    from nwb_dask.nwb.io import NWBDaskIO
    from nwb_dask.hdf5.read import release_handles
    from nwb_dask.nwb.read import read_dataset
    from nwb_dask.errors import check_input_file, looks_like_zarr
    from nwb_dask.tools.migrations import keep_user_metadata
    from nwb_dask.tools.repack import (
        RepackVerificationError,
        chunks_for,
        in_file,
        large_fields,
        swap_field,
    )

    t0 = time.perf_counter()
    src = Path(source).absolute()
    if not src.exists():
        raise FileNotFoundError(f"no such file or store: {src}")
    out = check_output(output, overwrite=overwrite, tool="convert", source=src)
    to_zarr = is_zarr_path(out)
    from_zarr = src.is_dir()
    if from_zarr and not looks_like_zarr(src):
        raise IsADirectoryError(f"{src} is a directory without Zarr metadata (.zgroup or zarr.json); convert reads "
                                "an NWB (HDF5) file or an NWB-Zarr store")
    if to_zarr == from_zarr:
        kind = "Zarr stores" if to_zarr else "HDF5 files"
        raise ValueError(f"both {src} and {out} are {kind}; convert goes from HDF5 to Zarr or back "
                         "(nwb-dask repack rewrites an HDF5 file)")
    if not from_zarr:
        check_input_file(src, nwb=True, tool="convert")  # not HDF5, or plain HDF5: say so, naming the file
    require_zarr(f"convert {src} -> {out}")  # NWB-Zarr on one side: the [zarr] extra
    from hdmf_zarr.nwb import NWBZarrIO
    names: list[str] = []
    migrations: list = []
    verify_seconds = 0.0
    with AtomicOutput(out) as atomic:  # a file is fsynced, a store's files are not (see docs/zarr.md)
        temp = atomic.temp
        if from_zarr:
            pickled = pickled_arrays(src)
            if pickled and not allow_pickle:
                raise ValueError(
                    f"{src} stores {len(pickled)} dataset(s) with numcodecs' Pickle codec ({', '.join(pickled[:3])}"
                    f"{', ...' if len(pickled) > 3 else ''}), which can run code when read; if you trust the store, "
                    "pass allow_pickle=True (nwb-dask convert --allow-pickle)")
            with pickle_allowed(bool(pickled)), NWBZarrIO(str(src), "r") as src_io:
                nwbfile = src_io.read()
                for container, key, arr in large_fields(nwbfile, min_bytes, _zarr_array_path):
                    name = "/" + arr.path
                    c = source_codec(arr, allowed=ZARR_CODECS) if codec == "source" else make_codec(codec)
                    shape = chunks_for(chunks, arr, name)
                    swap_field(container, key, DaskDataIO(read_dataset(src, name), codec=c, chunks=shape))
                    names.append(name)
                keep_user_metadata(nwbfile, src_io)
                with NWBDaskIO(temp, "w", atomic=False, scheduler=scheduler, progress=progress) as io:
                    io.export(src_io, nwbfile, write_args={"link_data": False})  # HDMF's rule across backends
                    stats = io.stats or WriteStats()
                ids_in = object_ids(nwbfile)
        else:
            with NWBHDF5IO(str(src), "r", load_namespaces=True) as src_io:
                nwbfile = src_io.read()
                for container, key, dset in large_fields(nwbfile, min_bytes, in_file(src)):
                    c = source_codec(dset, contiguous="none", allowed=ZARR_CODECS) if codec == "source" else make_codec(codec)
                    shape = chunks_for(chunks, dset, dset.name)
                    swap_field(container, key, DaskDataIO(read_dataset(src, dset.name), codec=c, chunks=shape))
                    names.append(dset.name)
                keep_user_metadata(nwbfile, src_io)
                with io_class()(temp, "w", scheduler=scheduler, progress=progress) as io:
                    io.export(src_io, nwbfile, write_args={"link_data": False})  # HDMF's rule across backends
                    stats = io.stats or WriteStats()
                ids_in = object_ids(nwbfile)
            nwbfile = container = dset = None  # noqa: F841 - release the input's HDF5 objects
        if verify:
            tv = time.perf_counter()
            try:
                diffs = compare_conversion(src, temp, names, ids_in, to_zarr, scheduler, migrations)
            finally:
                release_handles()  # the output (and input) free to open for writing once returned
            verify_seconds = time.perf_counter() - tv
            if diffs:
                raise RepackVerificationError(f"verification failed: the converted copy of {src} differs:\n  "
                                              + "\n  ".join(diffs))
    return ConvertResult(src, out, "hdf5->zarr" if to_zarr else "zarr->hdf5", names,
                         time.perf_counter() - t0, verify_seconds, verify, stats, migrations)

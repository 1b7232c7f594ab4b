"""Consolidate: turn a file with external links or virtual datasets into a self-contained one.

:func:`consolidate` never opens its input for writing.  It copies the input
byte for byte to a temporary file next to the output (so every object, object
reference and attribute stays exactly as it was), then, in the copy, replaces

* each external link to a dataset with a real dataset holding the target's
  data and attributes (what readers of the input saw through the link);
* each external link to a group with a copy of that group (HDF5's object
  copy, following further external links);
* each virtual dataset with a real, chunked, compressed dataset holding the
  data HDF5 assembles from its sources (with the virtual dataset's
  attributes).  When its sources are chunked datasets with one chunk shape,
  dtype, filters and fill value, each mapped whole onto chunk boundaries (a
  sharded write's parts, :mod:`nwb_dask.nwb.shards`), and no ``codec`` or
  ``chunks`` is asked for, their chunks are copied as stored
  (``read_direct_chunk`` -> ``write_direct_chunk``: nothing decoded or
  re-encoded); otherwise they are read and written anew;

where datasets are read lazily from the input and written by the parallel
writer.  Every written dataset is then compared with its source element by
element (in parallel), and only then is the copy renamed to the output.  On any
error, or if interrupted, the temporary file is removed (or, after SIGKILL,
left under its ``.NAME.*.partial`` name) and nothing appears at the output.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from nwb_dask.chunking import guess_chunk_shape, is_large_numeric
from nwb_dask.codecs import CodecSpec, codec as make_codec
from nwb_dask.hdf5.write import WriteStats
from nwb_dask.tools.verify import differing_datasets

__all__ = ["ConsolidateResult", "consolidate"]


@dataclasses.dataclass
class ConsolidateResult:
    """What :func:`consolidate` did.

    Attributes
    ----------
    output : pathlib.Path
    datasets : list of str
        Datasets materialised (former external links and virtual datasets).
    groups : list of str
        Externally linked groups copied in.
    verified : bool
        Every materialised dataset was compared with its source.
    stats : WriteStats
        Bytes written by the parallel writer and copied raw.
    raw_chunks : int
        Chunks copied as stored, without decoding or encoding (virtual
        datasets over sources chunked like them, e.g. sharded writes' parts).
    raw_datasets : list of str
        The virtual datasets materialised by raw chunk copies.
    """

    output: Path
    datasets: list[str]
    groups: list[str]
    verified: bool
    stats: WriteStats
    raw_chunks: int = 0
    raw_datasets: list[str] = dataclasses.field(default_factory=list)


def _copy_attrs(source, dest) -> None:
    """Copy attributes with their exact HDF5 types; object references cannot cross files."""
    import h5py

    for key in source.attrs:
        attr_type = source.attrs.get_id(key).dtype
        if h5py.check_dtype(ref=attr_type) is not None:
            warnings.warn(
                f"{dest.name}: attribute {key!r} holds object references into {source.file.filename}; not copied",
                UserWarning,
                stacklevel=3,
            )
            continue
        dest.attrs.create(key, source.attrs[key], dtype=attr_type)


def _bulk(dset) -> bool:
    """Worth the parallel writer: a non-empty array of numbers (any size: every linked dataset is copied)."""
    return is_large_numeric(dset.shape, dset.dtype, 0, kinds="biuf") and dset.size > 0


def consolidate(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    codec: CodecSpec | None = None,
    chunks: tuple | None = None,
    verify: bool = True,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
) -> ConsolidateResult:
    """Write a self-contained copy of ``source`` with external data copied in.

    Parameters
    ----------
    source : str or PathLike
        An HDF5/NWB file with external links and/or virtual datasets (others
        are copied unchanged).  Never modified.
    output : str or PathLike
        The self-contained file, created atomically.
    codec : codec spec, optional
        Compression of the materialised datasets.  Default: the linked
        dataset's own codec when nwb_dask can run it, else ``"gzip"``.
    chunks : tuple, optional
        Chunk shape of the materialised datasets (default: the source's, or
        :func:`nwb_dask.chunking.guess_chunk_shape`).
    verify : bool
        Compare every materialised dataset with its source before renaming.
    overwrite : bool
        Replace an existing ``output`` (never ``source`` itself).
    scheduler : optional
        Dask scheduler for reading and writing (default: the active one).
    progress : bool
        Progress bars.

    Returns
    -------
    ConsolidateResult

    Raises
    ------
    FileNotFoundError
        ``source`` is missing, or a link or virtual source is broken (all are
        listed; nothing is written).
    FileExistsError
        ``output`` exists and ``overwrite`` is false.
    ValueError
        ``output`` is ``source``, or verification failed (the named dataset
        differs from its source; nothing is left at ``output``).
    """
    import h5py

    from nwb_dask.codecs import source_codec
    from nwb_dask.atomic import AtomicOutput, check_output
    from nwb_dask.errors import VerificationError, check_input_file
    from nwb_dask.nwb.links import audit_links
    from nwb_dask.hdf5.read import release_handles
    from nwb_dask.nwb.read import read_dataset
    from nwb_dask.hdf5.write import plan_write, write_arrays

    src = Path(source).resolve()
    check_input_file(src)  # missing, a directory or not HDF5: named
    out = check_output(output, overwrite=overwrite, tool="consolidate", source=src)
    records = audit_links(src)
    broken = [r for r in records if r.broken]
    if broken:
        listing = "; ".join(f"{r.path} -> {r.file}:{r.object} ({r.reason})" for r in broken)
        raise FileNotFoundError(f"{src} has broken external data, cannot consolidate: {listing}")

    atomic = AtomicOutput(out)
    temp = atomic.temp
    done_datasets: list[str] = []
    done_groups: list[str] = []
    raw_datasets: list[str] = []
    raw = [0, 0, 0]  # chunks, stored bytes, logical bytes copied raw
    jobs = []
    try:
        shutil.copyfile(src, temp)
        t0 = time.perf_counter()
        with h5py.File(src, "r") as fin, h5py.File(temp, "r+") as fout:
            targets = [r.path for r in records if r.kind == "external"]
            targets += list(dict.fromkeys(r.path for r in records if r.kind == "virtual"))
            for name in targets:
                obj = fin[name]
                parent, base = name.rsplit("/", 1)
                parent = parent or "/"
                if isinstance(obj, h5py.Group) or (not obj.is_virtual and not _bulk(obj)):
                    # groups, strings, scalars, compound types: HDF5's own object copy
                    del fout[name]
                    fout.copy(obj, fout[parent], name=base, expand_external=True)
                    (done_groups if isinstance(obj, h5py.Group) else done_datasets).append(name)
                    continue
                if obj.is_virtual and codec is None and chunks is None and _copy_raw(obj, src.parent, fout, name, raw):
                    raw_datasets.append(name)  # sources chunked like it (sharded parts): chunks copied as stored
                    done_datasets.append(name)
                    continue
                if not _bulk(obj):  # a small or non-numeric virtual dataset: read it whole
                    del fout[name]
                    _copy_attrs(obj, fout.create_dataset(name, data=obj[()], dtype=obj.dtype))
                    done_datasets.append(name)
                    continue
                c = make_codec(codec) if codec is not None else source_codec(obj)  # virtual, contiguous, ...: gzip
                shape = chunks or (obj.chunks if obj.chunks and not obj.is_virtual else None)
                shape = shape or guess_chunk_shape(obj.shape, obj.dtype)
                del fout[name]
                dset = fout.create_dataset(
                    name, shape=obj.shape, dtype=obj.dtype, chunks=tuple(shape), fillvalue=obj.fillvalue,
                    **c.dataset_kwargs(),
                )
                _copy_attrs(obj, dset)
                jobs.append(plan_write(read_dataset(src, name), dset, c, name=name))
                done_datasets.append(name)
            # All datasets at once: the writer interleaves their blocks on the workers.
            stats = write_arrays(jobs, scheduler=scheduler, progress=progress) if jobs else WriteStats()
            stats.chunks, stats.stored_bytes, stats.logical_bytes = (
                stats.chunks + raw[0], stats.stored_bytes + raw[1], stats.logical_bytes + raw[2])
            stats.datasets = list(stats.datasets) + [d for d in raw_datasets if d not in stats.datasets]
            stats.seconds = time.perf_counter() - t0  # the raw copies and the parallel write (verification apart)
        differ = differing_datasets(temp, src, done_datasets, scheduler) if verify else []
        if differ:
            name = differ[0]
            raise VerificationError(f"verification failed: {name} of the consolidated copy differs from {src}:{name}"
                                    + (f" (and {len(differ) - 1} more: {', '.join(differ[1:6])})" if len(differ) > 1
                                       else ""))
        release_handles()  # the output free to open for writing once returned
        atomic.commit()
    except BaseException as exc:
        # The traceback keeps this frame alive: drop its HDF5 objects now.  A virtual
        # dataset's creation property list that outlived h5py crashed the C library's
        # exit handler (H5_term_library -> H5D__virtual_reset_layout).
        obj = dset = None  # noqa: F841
        jobs.clear()
        atomic.discard()
        atomic.raise_for(exc)
        raise
    return ConsolidateResult(out, done_datasets, done_groups, verify, stats, raw[0], raw_datasets)


def _copy_raw(vds, here: Path, fout, name: str, counts: list) -> bool:
    """Materialise a virtual dataset in ``fout`` by copying its sources' chunks as stored, if it can (else False).

    The new dataset has the sources' creation properties (chunks, filters,
    fill value) and the virtual dataset's attributes; ``counts`` (chunks,
    bytes, logical bytes) grows by what was copied.
    """
    import h5py

    from nwb_dask.hdf5.shards import copy_chunks_raw, create_like, raw_copy_plan

    sources, _why = raw_copy_plan(vds, here)
    if not sources:
        return False
    group = fout[name.rsplit("/", 1)[0] or "/"]
    scratch = f".{name.rsplit('/', 1)[1]}.nwb_dask-raw"
    with h5py.File(sources[0][0], "r") as first:
        dset = create_like(group, scratch, first[sources[0][1]], vds.shape)
    if dset is None:  # HDF5 would store the filters' parameters differently: read and write the values instead
        return False
    del fout[name]
    group.move(scratch, name.rsplit("/", 1)[1])
    dset = fout[name]
    _copy_attrs(vds, dset)
    for path, dname, offset in sources:
        with h5py.File(path, "r") as f:
            n, nbytes = copy_chunks_raw(f[dname], dset, offset)
        counts[0] += n
        counts[1] += nbytes
    counts[2] += int(vds.size) * vds.dtype.itemsize
    return True


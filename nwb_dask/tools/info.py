"""What an NWB/HDF5 file holds, and where its storage could be better (``nwb-dask info``).

:func:`info` lists every dataset of a local file or a remote one (``http(s)://``,
``s3://``: only metadata is fetched) with its shape, dtype, chunk shape, codec,
stored and logical size and compression ratio, its neurodata type, external
links and virtual-dataset sources, and a hint where chunking or compression is
poor and what would fix it (``nwb-dask repack``, ``nwb-dask consolidate``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from nwb_dask.chunking import is_large_numeric
from nwb_dask.compat import dataset_filters, vds_unescape

__all__ = ["DatasetInfo", "FileInfo", "info"]

#: Datasets smaller than this get no storage hints: their layout costs nothing.
HINT_MIN_BYTES = 16 * 2**20
_SMALL_CHUNK = 64 * 2**10
_LARGE_CHUNK = 16 * 2**20
_MIN_TIME_CHUNK = 64


@dataclasses.dataclass
class DatasetInfo:
    """One dataset, external link or virtual dataset of a file."""

    path: str
    kind: str  # "dataset", "virtual", "external" or "soft"
    shape: tuple | None = None
    dtype: str | None = None
    chunks: tuple | None = None
    codec: str | None = None
    logical_bytes: int = 0
    stored_bytes: int = 0
    neurodata_type: str | None = None
    target: str | None = None  # links: "file:/path" or "/path"
    sources: list[str] = dataclasses.field(default_factory=list)  # virtual datasets: "file:/dataset"
    broken: bool = False
    hint: str | None = None

    @property
    def ratio(self) -> float | None:
        """Logical / stored bytes (None for links and empty datasets)."""
        if self.kind not in ("dataset", "virtual") or not self.stored_bytes or not self.logical_bytes:
            return None
        return self.logical_bytes / self.stored_bytes


@dataclasses.dataclass
class FileInfo:
    """What :func:`info` found."""

    file: str
    file_bytes: int | None
    nwb_version: str | None
    groups: int
    datasets: list[DatasetInfo]

    @property
    def hints(self) -> list[DatasetInfo]:
        return [d for d in self.datasets if d.hint]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for d, entry in zip(self.datasets, out["datasets"]):
            entry["ratio"] = d.ratio
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def report(self, *, all_datasets: bool = False) -> str:
        """The table ``nwb-dask info`` prints (datasets of 1 MiB or more unless ``all_datasets``)."""
        logical = sum(d.logical_bytes for d in self.datasets if d.kind in ("dataset", "virtual"))
        stored = sum(d.stored_bytes for d in self.datasets if d.kind in ("dataset", "virtual"))  # virtual: sources
        head = [f"{self.file}: " + (f"{self.file_bytes / 1e6:.1f} MB, " if self.file_bytes is not None else "")
                + f"NWB {self.nwb_version or '?'}, {self.groups} groups, "
                f"{sum(d.kind == 'dataset' for d in self.datasets)} datasets "
                f"({logical / 1e6:.1f} MB of data stored in {stored / 1e6:.1f} MB)"]
        shown = [d for d in self.datasets if all_datasets or d.kind != "dataset" or d.logical_bytes >= 2**20]
        hidden = len(self.datasets) - len(shown)
        rows = [f"{'path':<52} {'type':<26} {'shape':>16} {'dtype':>8} {'chunks':>14} {'codec':>16} "
                f"{'MB':>9} {'stored':>9} {'ratio':>6}"]
        for d in shown:
            if d.kind in ("external", "soft"):
                rows.append(f"{d.path:<52} {d.kind + ' link':<26} -> {d.target}" + ("  [BROKEN]" if d.broken else ""))
                continue
            ratio = f"{d.ratio:.2f}" if d.ratio else "-"
            chunks = "x".join(map(str, d.chunks)) if d.chunks else ("virtual" if d.kind == "virtual" else "contig.")
            rows.append(f"{d.path:<52} {(d.neurodata_type or '')[:26]:<26} {'x'.join(map(str, d.shape or ())):>16} "
                        f"{d.dtype or '':>8} {chunks:>14} {d.codec or '':>16} {d.logical_bytes / 1e6:>9.1f} "
                        f"{d.stored_bytes / 1e6:>9.1f} {ratio:>6}")
            for s in d.sources:
                rows.append(f"{'':<4}virtual source {s}")
        if hidden:
            rows.append(f"({hidden} datasets under 1 MiB not shown; --all shows them)")
        hints = [f"hint: {d.path}: {d.hint}" for d in self.hints]
        return "\n".join(head + rows + (hints or ["no storage hints: large datasets are chunked and compressed"]))


#: HDF5 filters that store every byte: a pipeline of only these is uncompressed.
_NOT_COMPRESSING = {"shuffle", "fletcher32"}


def codec_label(dset) -> str:
    """How a dataset is compressed, in the words of reports: ``"gzip-4+shuffle"``, ``"none"``, ``"filters lzf"``.

    Pipelines nwb_dask cannot run (lzf, fletcher32, scale-offset, ...) are
    named by HDF5's filter names.
    """
    from nwb_dask.codecs import codec_from_dataset

    try:
        c = codec_from_dataset(dset)
    except Exception:
        c = None
    if c is None:  # contiguous, or a pipeline nwb_dask cannot run (lzf, fletcher32, ...): name HDF5's filters
        filters = list(dataset_filters(dset)) if dset.chunks else []
        return "filters " + ",".join(str(k) for k in filters) if filters else "none"
    return c.label


def _hint(d: DatasetInfo, dtype: np.dtype) -> str | None:
    """What would improve a large numeric dataset's storage, if anything."""
    if d.kind == "virtual":
        return (f"virtual dataset over {len(d.sources)} source(s): it reads only where they are beside it; "
                "`nwb-dask consolidate` makes a self-contained copy (chunks copied as they are stored)")
    if d.kind != "dataset" or not is_large_numeric(d.shape, dtype, HINT_MIN_BYTES, kinds="biuf"):
        return None
    if d.chunks is None:
        return ("contiguous and uncompressed: `nwb-dask repack` chunks and compresses it "
                "(ephys int16 typically 2x smaller)")
    chunk_bytes = int(np.prod(d.chunks)) * dtype.itemsize
    if d.codec == "none" or (d.codec.startswith("filters ")
                             and set(d.codec[len("filters "):].split(",")) <= _NOT_COMPRESSING):
        return "uncompressed: `nwb-dask repack` compresses it (ephys int16 typically 2x smaller)"
    if chunk_bytes < _SMALL_CHUNK:
        return (f"chunks of {chunk_bytes / 1024:.0f} KiB are small: reads need many chunk lookups and "
                "requests (slow remotely); `nwb-dask repack --chunks auto` makes ~1 MiB chunks")
    if chunk_bytes > _LARGE_CHUNK:
        return (f"chunks of {chunk_bytes / 2**20:.0f} MiB are large: any small slice reads and decodes a "
                "whole chunk; `nwb-dask repack --chunks auto` makes ~1 MiB chunks")
    if len(d.shape) >= 2 and d.chunks[0] < _MIN_TIME_CHUNK and d.shape[0] > 100 * d.chunks[0]:
        return (f"chunks hold {d.chunks[0]} time sample(s): reading a time range touches many chunks; "
                "`nwb-dask repack --chunks auto` (time x channels)")
    if d.ratio is not None and d.ratio < 1.15:
        return (f"compressed only {d.ratio:.2f}x: the codec gains little here; try `nwb-dask repack "
                "--codec zstd` or shuffle, or store it uncompressed")
    return None


def info(path: str | os.PathLike, *, remote_options: dict | None = None) -> FileInfo:
    """Describe an NWB/HDF5 file's datasets, links and storage.

    Parameters
    ----------
    path : str or PathLike
        A local file, or an ``http(s)://`` / ``s3://`` URL (metadata only is
        read, through :mod:`nwb_dask.sources`).
    remote_options : dict, optional
        As for :func:`nwb_dask.read_dataset`.

    Returns
    -------
    FileInfo

    Raises
    ------
    FileNotFoundError, IsADirectoryError, nwb_dask.errors.NotHDF5Error
        No such local file, a directory that is not a Zarr store, or not an
        HDF5 file (named).  A local NWB-Zarr store is described too (its
        arrays' numcodecs codecs; no storage hints).
    """
    import h5py

    from nwb_dask.errors import open_hdf5
    from nwb_dask.hdf5.prefetch import prefetch_metadata
    from nwb_dask.hdf5.read import is_url, options_key
    from nwb_dask.sources import byte_source
    from nwb_dask.sources.cache import remember
    from nwb_dask.zarr.read import is_zarr_path

    remote = is_url(path)
    if not remote and is_zarr_path(path) and os.path.isdir(path):
        return _zarr_info(os.path.abspath(os.fspath(path)))
    if remote:
        # a fresh handle, not reader.open_remote's: that cache is keyed by the URL alone and
        # would describe a file replaced at the same URL as it was when first opened
        source = byte_source(str(path), **dict(options_key(remote_options)))
        fobj = source.open()
        try:
            prefetch_metadata(fobj)  # info visits every object: a hierarchy level per round trip
            f = open_hdf5(fobj, name=str(path))
        except BaseException:
            fobj.close()
            raise
        file_bytes = None
        where = str(path)
    else:
        where = os.path.abspath(os.fspath(path))
        fobj = None
        f = open_hdf5(where)  # errors name the path
        file_bytes = os.path.getsize(where)
    try:
        records = {}
        if not remote:
            from nwb_dask.nwb.links import audit_links

            records = {(r.kind, r.path, r.file, r.object): r for r in audit_links(where)}
        datasets: list[DatasetInfo] = []
        groups = 0

        def visit(name: str, link) -> None:
            nonlocal groups
            p = "/" + name
            if isinstance(link, h5py.ExternalLink):
                rec = records.get(("external", p, link.filename, link.path))
                datasets.append(DatasetInfo(p, "external", target=f"{link.filename}:{link.path}",
                                            broken=bool(rec and rec.broken)))
                return
            if isinstance(link, h5py.SoftLink):
                datasets.append(DatasetInfo(p, "soft", target=link.path, broken=f.get(p) is None))
                return
            obj = f.get(name)
            if isinstance(obj, h5py.Group):
                groups += 1
                return
            if not isinstance(obj, h5py.Dataset):
                return
            nd = obj.attrs.get("neurodata_type")
            nd = nd.decode() if isinstance(nd, bytes) else (str(nd) if nd is not None else None)
            shape = tuple(obj.shape) if obj.shape is not None else ()
            itemsize = obj.dtype.itemsize
            d = DatasetInfo(p, "virtual" if obj.is_virtual else "dataset", shape=shape, dtype=str(obj.dtype),
                            chunks=tuple(obj.chunks) if obj.chunks else None,
                            codec=None if obj.is_virtual else codec_label(obj),
                            logical_bytes=int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize,
                            stored_bytes=0 if obj.is_virtual else int(obj.id.get_storage_size()),
                            neurodata_type=nd or _parent_type(obj))
            if obj.is_virtual:
                found = {}  # (resolved file, dataset) -> its codec label and stored bytes, each source once
                for vs in obj.virtual_sources():
                    rec = records.get(("virtual", p, vds_unescape(vs.file_name), vs.dset_name))
                    d.sources.append(f"{vs.file_name}:{vs.dset_name}" + ("  [BROKEN]" if rec and rec.broken else ""))
                    d.broken |= bool(rec and rec.broken)
                    if rec and not rec.broken and rec.resolved and (rec.resolved, vs.dset_name) not in found:
                        found[rec.resolved, vs.dset_name] = _source_storage(rec.resolved, vs.dset_name)
                labels = sorted({c for c, _ in found.values() if c})
                d.codec = ", ".join(labels) or None  # what the sources are stored with
                d.stored_bytes = sum(n for _, n in found.values())
            d.hint = _hint(d, obj.dtype)
            datasets.append(d)

        f.visititems_links(visit)
        version = f.attrs.get("nwb_version")
        version = version.decode() if isinstance(version, bytes) else (str(version) if version is not None else None)
        if remote:
            remember(source, fobj)  # the metadata just read, for the next open (nwb_dask.sources.cache)
        return FileInfo(where, file_bytes, version, groups + 1, datasets)
    finally:
        f.close()
        if fobj is not None:
            fobj.close()


def _zarr_info(where: str) -> FileInfo:
    """:func:`info` of a local NWB-Zarr store: its arrays, their codecs (numcodecs), chunks and stored bytes.

    No storage hints: they name ``nwb-dask repack``, which rewrites HDF5 files.
    """
    from nwb_dask.codecs.gate import codec_from_numcodecs
    from nwb_dask.compat import require_zarr

    zarr = require_zarr(f"nwb-dask info {where}")
    root = zarr.open_group(where, mode="r")
    datasets: list[DatasetInfo] = []
    groups = 0

    def visit(name: str, obj) -> None:
        nonlocal groups
        if not hasattr(obj, "chunks"):
            groups += 1
            return
        parent, _, leaf = name.rpartition("/")
        nd = obj.attrs.get("neurodata_type")
        ptype = root[parent].attrs.get("neurodata_type") if parent else None
        found = codec_from_numcodecs(obj.compressor, obj.filters)
        shape = tuple(obj.shape)
        itemsize = obj.dtype.itemsize
        datasets.append(DatasetInfo(
            "/" + name, "dataset", shape=shape, dtype=str(obj.dtype), chunks=tuple(obj.chunks),
            codec=found.label if found is not None else (type(obj.compressor).__name__ if obj.compressor else "none"),
            logical_bytes=int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize,
            stored_bytes=int(obj.nbytes_stored), neurodata_type=nd or (f"{ptype}.{leaf}" if ptype else None)))

    root.visititems(visit)
    version = root.attrs.get("nwb_version")
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(where) for n in names)
    return FileInfo(where, size, str(version) if version is not None else None, groups + 1, datasets)


def _source_storage(path: str, name: str) -> tuple[str | None, int]:
    """A virtual dataset's source: its codec label and stored bytes ((None, 0) if it cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            src = f[name]
            return (None if src.is_virtual else codec_label(src)), int(src.id.get_storage_size())
    except (OSError, KeyError):
        return None, 0


def _parent_type(dset) -> str | None:
    """The neurodata type of the group holding an untyped dataset (``data`` of an ElectricalSeries)."""
    nd = dset.parent.attrs.get("neurodata_type")
    if nd is None:
        return None
    return (nd.decode() if isinstance(nd, bytes) else str(nd)) + "." + dset.name.rsplit("/", 1)[-1]

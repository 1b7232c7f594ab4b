"""Write a LINDI index (``.lindi.json``) of a local or remote HDF5/NWB file: ``nwb-dask index``.

The index holds the file's whole structure and, for every chunk, where its
bytes are in the original file, so that :func:`nwb_dask.read_nwb` (and plain
``lindi.LindiH5pyFile.from_lindi_file``) opens the file in one request and
reads chunks straight from it (see :mod:`nwb_dask.nwb.index`).

lindi's own generator makes the references (``LindiH5ZarrStore``, as
``LindiH5pyFile.from_hdf5_file`` uses it), with two choices of ours:

* every chunk is referenced (``num_dataset_chunks_threshold=None``; lindi's
  default sends datasets of more than 1000 chunks back to the HDF5 file);
* the HDF5 metadata of a URL is read as :func:`nwb_dask.read_nwb` reads it
  (the byte source's block-cached file: coalesced, parallel, retried ranges;
  the whole file's metadata prefetched a hierarchy level per round trip,
  :func:`nwb_dask.hdf5.prefetch.prefetch_metadata`; remembered in the
  metadata cache) instead of through lindi's own ``LindiRemfile``:
  ``LindiH5ZarrStore.from_file`` offers no way to pass an open file, so its
  constructor is called with our h5py handle's file id (``h5py.File(file_id)``
  shares it).  The handle is this call's own, not the per-process one of
  :func:`nwb_dask.hdf5.read.open_remote`, which could describe an older
  version of a file that changed.  A local file is opened by
  :func:`nwb_dask.errors.open_hdf5` (errors naming the file).

The size and validator (ETag, else Last-Modified; local: size and mtime) of the source are
recorded in ``generationMetadata["nwb_dask"]`` before and checked after the
generation (a file that changes meanwhile is refused), and the reader checks
them before it reads a chunk.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from nwb_dask.nwb.index import RECORD_KEY, StaleIndexError, require_lindi, source_state, state_differences

__all__ = ["IndexInfo", "IndexResult", "check_filter_masks", "default_index_path", "describe_index", "write_index"]

SUFFIX = ".lindi.json"


@dataclass
class IndexResult:
    """What :func:`write_index` wrote."""

    source: str
    output: str
    datasets: int
    chunk_refs: int
    inline_refs: int
    index_bytes: int
    seconds: float
    state: dict = field(default_factory=dict)

    def report(self) -> str:
        return (f"wrote {self.output}: {self.datasets} dataset(s), {self.chunk_refs} chunk reference(s) into "
                f"{self.source}, {self.inline_refs} inline value(s), {self.index_bytes / 1e6:.2f} MB, "
                f"{self.seconds:.2f} s")


def check_filter_masks(f, url: str) -> None:
    """Refuse chunks HDF5 stored with a filter skipped (a non-zero filter mask): a LINDI index cannot say so.

    HDF5 skips an optional filter for a chunk it does not shrink (blosc and
    deflate of incompressible bytes, for instance) and records that in the
    chunk's filter mask; an index lists every chunk with the dataset's full
    pipeline, so such a chunk would not decode.
    """
    import h5py

    from nwb_dask.compat import dataset_filters

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.chunks is None or not dataset_filters(obj):
            return None
        bad = []

        def look(info):
            if info.filter_mask and not bad:
                bad.append(info)

        obj.id.chunk_iter(look)
        if bad:
            raise ValueError(f"{url}: dataset /{name}: the chunk at {tuple(bad[0].chunk_offset)} was stored with HDF5 "
                             f"filter mask {bad[0].filter_mask:#x} (a filter skipped because it did not shrink the "
                             "chunk), which a LINDI index cannot describe; repack the file (nwb-dask repack) first")
        return None

    f.visititems(visit)


def _version() -> str:
    """nwb_dask's installed version (the package metadata: importing nwb_dask's top level here would go up a layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nwb-dask")
    except PackageNotFoundError:  # pragma: no cover - a checkout on sys.path, not installed
        return "unknown"


def _is_url(src: str) -> bool:
    return "://" in src


def default_index_path(src: str | os.PathLike) -> Path:
    """``<name>.lindi.json``: beside a local file, in the current directory for a URL."""
    text = os.fspath(src)
    if _is_url(text):
        name = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(text).path).rstrip("/")) or "index"
        return Path.cwd() / (name + SUFFIX)
    return Path(os.path.abspath(text + SUFFIX))


def write_index(src: str | os.PathLike, out: str | os.PathLike | None = None, *, overwrite: bool = False,
                remote_options: dict | None = None, url: str | None = None) -> IndexResult:
    """Write a LINDI index of an HDF5/NWB file; its chunk references point at ``src`` itself (or ``url``).

    Parameters
    ----------
    src : str or PathLike
        Local HDF5/NWB file (referenced by its absolute path, so the index
        can be moved) or ``http(s)://`` / ``s3://`` URL (referenced as given).
    out : str or PathLike, optional
        The index; its name must end in ``.lindi.json``.  Default
        :func:`default_index_path`.
    url : str, optional
        For a local file about to be served (uploaded to an archive or a
        bucket): the ``http(s)://`` / ``s3://`` URL it will have.  The chunk
        references point there, and only the file's size is recorded (the
        server's ETag is not known yet), so readers check the size.
    overwrite : bool
        Replace an existing ``out``; without it an existing one is refused.
    remote_options : dict, optional
        Settings of the byte source for a URL (as for :func:`nwb_dask.read_nwb`).

    Returns
    -------
    IndexResult

    Raises
    ------
    ImportError
        lindi is not installed (``pip install "nwb-dask[index]"``).
    FileNotFoundError, FileExistsError, NotHDF5Error, ValueError
        A missing or non-HDF5 source, an existing output, a wrong suffix;
        each names the file.
    StaleIndexError
        The source changed while it was being indexed.

    lindi shows a progress bar per dataset whose chunk index takes more than 2 s.
    """
    require_lindi(f"writing a LINDI index of {os.fspath(src)}")
    from nwb_dask.compat import lindi_store

    from nwb_dask.atomic import AtomicOutput, check_output
    from nwb_dask.errors import open_hdf5

    text = os.fspath(src)
    served_at = url
    if served_at is not None and (_is_url(text) or not _is_url(served_at)):
        raise ValueError(f"url={served_at!r} is for a local file that will be served at that http(s):// or s3:// URL; "
                         f"{text} is {'a URL already' if _is_url(text) else 'local but that is not a URL'}")
    url = text if _is_url(text) else os.path.abspath(text)
    target = Path(out) if out is not None else default_index_path(text)
    if not target.name.endswith(SUFFIX):
        raise ValueError(f"index {target}: the name must end in {SUFFIX} (what lindi and nwb_dask read as an index)")
    target = check_output(target, overwrite=overwrite, tool="nwb-dask index", source=None if _is_url(text) else url)
    t0 = time.perf_counter()
    if _is_url(text):
        from nwb_dask.hdf5.prefetch import prefetch_metadata
        from nwb_dask.sources import byte_source

        source = byte_source(url, **(remote_options or {}))
        view = source.open()  # one GET: the size, the validator and the first block (+ the cached metadata)
        handle = open_hdf5(view, name=url)  # not HDF5: an error naming the URL
        before = {"size": source.size, **({"validator": source.validator} if getattr(source, "validator", None) else {})}
        prefetch_metadata(view)  # the whole file's metadata, a hierarchy level per round trip
    else:
        source = view = None
        handle = open_hdf5(url)  # missing, a directory or not HDF5: an error naming it
        try:
            before = source_state(url, remote_options)
        except BaseException:
            handle.close()
            raise
    # lindi's generator over our open handle (h5py.File(file_id) shares it): lindi's
    # public from_file() would read a URL through its own serial LindiRemfile.
    store = lindi_store(handle, served_at or url)
    try:
        try:
            rfs = store.to_reference_file_system()
        except Exception as exc:  # lindi raises bare Exceptions
            raise ValueError(f"{url}: lindi cannot index this file: {exc}") from exc
        check_filter_masks(handle, url)
        if source is not None:
            from nwb_dask.sources.cache import remember

            remember(source, view)  # the metadata read, for the next open of this version (sources/cache.py)
    finally:
        store.close()
    after = source_state(url, remote_options)
    diffs = state_differences(before, after)
    if diffs:
        raise StaleIndexError(f"{url} changed while it was being indexed ({'; '.join(diffs)}); nothing was written "
                              f"to {target}")
    rfs["generationMetadata"] = {
        "generatedBy": "nwb_dask",
        "generatedByVersion": _version(),
        "generatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        RECORD_KEY: {"sources": {served_at: {"size": before["size"]}} if served_at else {url: before}},
    }
    chunk_refs = sum(1 for v in rfs["refs"].values() if isinstance(v, list))
    datasets = sum(1 for k in rfs["refs"] if k.endswith(".zarray"))
    body = json.dumps(rfs, indent=2, sort_keys=True).encode()
    with AtomicOutput(target) as output:
        output.temp.write_bytes(body)
    return IndexResult(source=url, output=str(target), datasets=datasets, chunk_refs=chunk_refs,
                       inline_refs=len(rfs["refs"]) - chunk_refs - datasets, index_bytes=len(body),
                       seconds=time.perf_counter() - t0, state=before)


@dataclass
class IndexInfo:
    """What an index holds (``nwb-dask info INDEX``): its datasets, sources and whether they changed."""

    index: str
    generated_by: str | None
    sources: dict  # url -> {"recorded": {...}, "now": {...} or None, "stale": str or None}
    datasets: list  # each: path, shape, dtype, chunks, codec, chunk_refs, stored_bytes, logical_bytes, inline

    def to_dict(self) -> dict:
        return {"index": self.index, "generated_by": self.generated_by, "sources": self.sources,
                "datasets": self.datasets}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def report(self, *, all_datasets: bool = False) -> str:
        """A table like ``nwb-dask info`` prints for a file (datasets of 1 MiB or more unless ``all_datasets``)."""
        stored = sum(d["stored_bytes"] for d in self.datasets)
        lines = [f"{self.index}: index ({self.generated_by or 'generator not recorded'}) of "
                 f"{len(self.sources)} file(s), {len(self.datasets)} datasets "
                 f"({sum(d['chunk_refs'] for d in self.datasets)} chunk references, {stored / 1e6:.1f} MB stored)"]
        for url, src in self.sources.items():
            state = "STALE: " + src["stale"] if src["stale"] else ("current" if src["now"] else "not checked")
            lines.append(f"  source {url}: {state}")
        shown = [d for d in self.datasets if all_datasets or d["logical_bytes"] >= 2**20]
        lines.append(f"{'path':<52} {'shape':>16} {'dtype':>8} {'chunks':>14} {'codec':>22} {'refs':>7} {'stored MB':>10}")
        for d in shown:
            lines.append(f"{d['path']:<52} {str(tuple(d['shape'])):>16} {d['dtype']:>8} "
                         f"{str(tuple(d['chunks'])):>14} {d['codec']:>22} {d['chunk_refs']:>7} "
                         f"{d['stored_bytes'] / 1e6:>10.2f}")
        if len(shown) < len(self.datasets):
            lines.append(f"({len(self.datasets) - len(shown)} datasets under 1 MiB not shown; --all lists them)")
        return "\n".join(lines)


def describe_index(index: str | os.PathLike, remote_options: dict | None = None, *, check: bool = True) -> IndexInfo:
    """What an index (LINDI or kerchunk) holds, and (``check``) whether its sources changed since it was written."""
    import math

    import numpy as np

    from nwb_dask.nwb.index import load_index

    loaded = load_index(index, remote_options)
    refs, meta = loaded["refs"], loaded["metadata"]
    record = (meta.get(RECORD_KEY) or {}).get("sources") or {}
    parents: dict[str, list] = {}
    for key, val in refs.items():
        parents.setdefault(key.rpartition("/")[0], []).append(val)
    datasets = []
    for key in sorted(k for k in refs if k.endswith(".zarray")):
        path = key[: -len("/.zarray")] if "/" in key else ""
        z = refs[key] if isinstance(refs[key], dict) else json.loads(refs[key])
        chain = [c["id"] for c in (z.get("filters") or [])] + ([z["compressor"]["id"]] if z.get("compressor") else [])
        chunk_refs = [v for v in parents.get(path, []) if isinstance(v, tuple)]
        dtype = np.dtype(z["dtype"]) if not isinstance(z["dtype"], list) else None
        datasets.append({
            "path": "/" + path, "shape": z["shape"], "dtype": str(dtype) if dtype is not None else "compound",
            "chunks": z["chunks"], "codec": "+".join(chain) or "none", "chunk_refs": len(chunk_refs),
            "stored_bytes": sum(v[2] for v in chunk_refs),
            "logical_bytes": math.prod(z["shape"]) * (dtype.itemsize if dtype is not None else 0),
            "inline": len(chunk_refs) == 0,
        })
    urls = sorted({v[0] for v in refs.values() if isinstance(v, tuple)})
    sources = {}
    for url in urls:
        entry = {"recorded": record.get(url, {}), "now": None, "stale": None}
        if check:
            entry["now"] = source_state(url, remote_options)
            diffs = state_differences(entry["recorded"], entry["now"])
            end = max(v[1] + v[2] for v in refs.values() if isinstance(v, tuple) and v[0] == url)
            if diffs:
                entry["stale"] = "changed since indexed (" + "; ".join(diffs) + ")"
            elif entry["now"]["size"] < end:
                entry["stale"] = f"references bytes up to {end}, the file has {entry['now']['size']}"
        sources[url] = entry
    generated = meta.get("generatedBy")
    if generated and meta.get("generatedByVersion"):
        generated = f"{generated} {meta['generatedByVersion']}"
    return IndexInfo(index=loaded["name"], generated_by=generated, sources=sources, datasets=datasets)

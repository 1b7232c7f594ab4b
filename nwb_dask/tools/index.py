"""Write a LINDI index (``.lindi.json``) of a local or remote HDF5/NWB file: ``nwb-dask index``.

The index holds the file's whole structure and, for every chunk, where its
bytes are in the original file, so that :func:`nwb_dask.read_nwb` (and plain
``lindi.LindiH5pyFile.from_lindi_file``) opens the file in one request and
reads chunks straight from it (see :mod:`nwb_dask.nwb.index`).

lindi's own generator makes the references (``LindiH5ZarrStore``, as
``LindiH5pyFile.from_hdf5_file`` uses it), with two choices of ours:

* every chunk is referenced (``num_dataset_chunks_threshold=None``; lindi's
  default sends datasets of more than 1000 chunks back to the HDF5 file);
* the HDF5 metadata of a URL is read through nwb_dask's byte source (a
  block-cached file over coalesced, parallel, retried ranges) instead of
  lindi's own ``LindiRemfile``: ``LindiH5ZarrStore.from_file`` offers no
  way to pass an open file, so its constructor is called with one.  Both
  are opened by nwb_dask (:func:`nwb_dask.errors.open_hdf5`, errors naming
  the file) and given to lindi as an open h5py file id.

The size and ETag/Last-Modified (local: size and mtime) of the source are
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

__all__ = ["IndexResult", "check_filter_masks", "default_index_path", "write_index"]

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

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.chunks is None or not obj._filters:
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
                remote_options: dict | None = None) -> IndexResult:
    """Write a LINDI index of an HDF5/NWB file; its chunk references point at ``src`` itself.

    Parameters
    ----------
    src : str or PathLike
        Local HDF5/NWB file (referenced by its absolute path, so the index
        can be moved) or ``http(s)://`` / ``s3://`` URL (referenced as given).
    out : str or PathLike, optional
        The index; its name must end in ``.lindi.json``.  Default
        :func:`default_index_path`.
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
    require_lindi()
    from lindi.LindiH5ZarrStore.LindiH5ZarrStore import LindiH5ZarrStore
    from lindi.LindiH5ZarrStore.LindiH5ZarrStoreOpts import LindiH5ZarrStoreOpts

    from nwb_dask.atomic import AtomicOutput, check_output
    from nwb_dask.errors import open_hdf5

    text = os.fspath(src)
    url = text if _is_url(text) else os.path.abspath(text)
    target = Path(out) if out is not None else default_index_path(text)
    if not target.name.endswith(SUFFIX):
        raise ValueError(f"index {target}: the name must end in {SUFFIX} (what lindi and nwb_dask read as an index)")
    target = check_output(target, overwrite=overwrite, tool="nwb-dask index", source=None if _is_url(text) else url)
    t0 = time.perf_counter()
    if _is_url(text):
        from nwb_dask.sources import byte_source

        handle = open_hdf5(byte_source(url, **(remote_options or {})).open(), name=url)
    else:
        handle = open_hdf5(url)  # missing, a directory or not HDF5: an error naming it
    try:
        before = source_state(url, remote_options)
    except BaseException:
        handle.close()
        raise
    # lindi's generator over our open handle (h5py.File(file_id) shares it): lindi's
    # public from_file() would read a URL through its own serial LindiRemfile.
    opts = LindiH5ZarrStoreOpts(num_dataset_chunks_threshold=None)
    store = LindiH5ZarrStore(_file=handle.id, _url=url, _opts=opts, _entities_to_close=[handle])
    try:
        try:
            rfs = store.to_reference_file_system()
        except Exception as exc:  # lindi raises bare Exceptions
            raise ValueError(f"{url}: lindi cannot index this file: {exc}") from exc
        check_filter_masks(handle, url)
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
        RECORD_KEY: {"sources": {url: before}},
    }
    chunk_refs = sum(1 for v in rfs["refs"].values() if isinstance(v, list))
    datasets = sum(1 for k in rfs["refs"] if k.endswith(".zarray"))
    body = json.dumps(rfs, indent=2, sort_keys=True).encode()
    with AtomicOutput(target) as output:
        output.temp.write_bytes(body)
    return IndexResult(source=url, output=str(target), datasets=datasets, chunk_refs=chunk_refs,
                       inline_refs=len(rfs["refs"]) - chunk_refs - datasets, index_bytes=len(body),
                       seconds=time.perf_counter() - t0, state=before)

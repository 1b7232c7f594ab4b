"""External data: link or copy a dataset of another file, explicitly, with checks; audit links.

HDMF writes an ``h5py.Dataset`` of another file given as ``data=`` as an HDF5
external link, and silently drops the attributes the new container declares
for it (``unit``, ``conversion``, ``offset``, ``resolution``): readers of the
new file see the *target's* attributes.  nwb_dask makes the choice explicit
and checked:

* :func:`external_data` returns ``data=`` for a pynwb container that is either
  a link (:class:`LinkedData`) or a copy (a :class:`~nwb_dask.io.DaskDataIO`
  read lazily from the source, so the parallel writer can recompress and
  rechunk it);
* when :class:`~nwb_dask.io.NWBDaskIO` writes a link (a :class:`LinkedData`
  or a bare ``h5py.Dataset`` of another file), :func:`check_link` compares
  what the container declares with the target: every attribute of the
  dataset (``unit``, ``conversion``, ``offset``, ``resolution``, ...), the
  length of the series' ``timestamps``, the number of ``electrodes``, and an
  expected ``shape``/``dtype``.  A mismatch raises :class:`LinkMismatchError`
  naming both values, unless overridden (``on_mismatch="warn"`` or
  ``"ignore"``);
* :func:`audit_links` lists a file's external links and virtual-dataset
  sources, resolved the way HDF5 resolves them, and flags broken targets and
  absolute paths (``nwb-dask links FILE``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Literal

import numpy as np

from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, ChunksArg
from nwb_dask.codecs import CodecSpec
from nwb_dask.compat import vds_unescape
from nwb_dask.hdf5.read import link_candidates
from nwb_dask.nwb.dataio import ON_MISMATCH, LinkedData, OnMismatch

__all__ = [
    "LinkMismatchError",
    "LinkRecord",
    "LinkedData",
    "audit_links",
    "check_link",
    "external_data",
]


class LinkMismatchError(ValueError):
    """What a container declares for a linked dataset disagrees with the link's target."""


def _open_dataset(path: str | os.PathLike, name: str):
    import h5py

    from nwb_dask.errors import open_hdf5

    path = os.path.abspath(os.fspath(path))
    f = open_hdf5(path)  # missing, a directory or not HDF5: an error naming the path
    if name not in f:
        f.close()
        raise KeyError(f"{path} has no dataset {name!r}")
    dset = f[name]
    if not isinstance(dset, h5py.Dataset):
        f.close()
        raise TypeError(f"{path}:{name} is a {type(dset).__name__}, not a dataset")
    return dset


def external_data(
    path: str | os.PathLike,
    name: str,
    *,
    mode: Literal["link", "copy"] = "link",
    on_mismatch: OnMismatch = "raise",
    shape: tuple | None = None,
    dtype: Any = None,
    codec: CodecSpec | None = None,
    chunks: ChunksArg | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
):
    """A dataset of another HDF5/NWB file as ``data=`` for a pynwb container.

    Parameters
    ----------
    path : str or PathLike
        The file holding the data.
    name : str
        Dataset path in that file, e.g. ``"acquisition/ElectricalSeries/data"``.
    mode : {"link", "copy"}
        ``"link"`` (default): the new file gets an HDF5 external link (no
        data copied; the new file needs the source beside it, at the same
        relative path).  ``"copy"``: the data is read lazily and written into
        the new file by the parallel writer.
    on_mismatch : {"raise", "warn", "ignore"}
        Links only: what to do when the container's declared attributes,
        shape or dtype disagree with the target (see :func:`check_link`).
    shape, dtype : optional
        Expected shape (``None`` entries match anything) and dtype, checked
        against the source now (both modes).
    codec, chunks : optional
        Copies only: compression and chunk shape of the copy.  Default: the
        source's own codec when nwb_dask can run it (else ``"gzip"``) and
        chunk shape.
    block_bytes : int
        Copies only: dask block size for reading the source.

    Returns
    -------
    LinkedData or nwb_dask.DaskDataIO

    Raises
    ------
    FileNotFoundError, KeyError, TypeError
        Missing file, missing dataset, or not a dataset.
    LinkMismatchError
        ``shape``/``dtype`` given and not matching the source.
    ValueError
        Bad ``mode``/``on_mismatch``, or ``codec``/``chunks`` with ``mode="link"``.

    Examples
    --------
    >>> data = external_data("raw.nwb", "acquisition/ElectricalSeries/data")   # doctest: +SKIP
    >>> ElectricalSeries(name="ElectricalSeries", data=data, electrodes=region, rate=30000.0)  # doctest: +SKIP
    """
    if mode not in ("link", "copy"):
        raise ValueError(f"mode must be 'link' or 'copy', got {mode!r}")
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, got {on_mismatch!r}")
    dset = _open_dataset(path, name)
    where = f"{dset.file.filename}:{dset.name}"
    problems = _expectation_problems(dset, shape, dtype)
    if problems:
        dset.file.close()
        raise LinkMismatchError(f"{where}: " + "; ".join(problems))
    if mode == "link":
        if codec is not None or chunks is not None:
            dset.file.close()
            raise ValueError("codec and chunks apply to copies; a link keeps the target's storage (use mode='copy')")
        return LinkedData(dset, on_mismatch=on_mismatch, shape=shape, dtype=dtype)

    from nwb_dask.codecs import source_codec
    from nwb_dask.nwb.dataio import DaskDataIO
    from nwb_dask.hdf5.read import dataset_array

    if codec is None:
        codec = source_codec(dset)  # a filter nwb_dask cannot run, or contiguous: gzip
    if chunks is None:
        chunks = dset.chunks or "auto"
    array = dataset_array(dset, block_bytes=block_bytes)
    dset.file.close()
    return DaskDataIO(array, codec=codec, chunks=chunks)


def _expectation_problems(dset, shape, dtype) -> list[str]:
    problems = []
    if shape is not None:
        shape = tuple(shape)
        if len(shape) != dset.ndim or any(e is not None and e != a for e, a in zip(shape, dset.shape)):
            problems.append(f"expected shape {shape}, the target has shape {dset.shape}")
    if dtype is not None and np.dtype(dtype) != dset.dtype:
        problems.append(f"expected dtype {np.dtype(dtype)}, the target has dtype {dset.dtype}")
    return problems


def _plain(value: Any) -> Any:
    """An attribute value comparable across h5py and hdmf (str for bytes, arrays as arrays)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)) or bool(
            np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=0, equal_nan=True)
        )
    except (TypeError, ValueError):
        return a == b


def _length(data: Any) -> int | None:
    """Length of a builder's data (array, list, DataIO, h5py dataset), or None if unknown."""
    from hdmf.utils import get_data_shape

    try:
        shape = get_data_shape(data)
    except Exception:  # pragma: no cover - exotic data
        return None
    return int(shape[0]) if shape and shape[0] is not None else None  # None: length unknown (e.g. a generator)


def _object_path(builder) -> str:
    """A builder's path in the file (hdmf's ``builder.path`` starts at ``root``)."""
    path = builder.path
    return "/" + path[len("root/"):] if path.startswith("root/") else path


def check_link(builder, target, *, on_mismatch: OnMismatch = "raise", shape=None, dtype=None) -> list[str]:
    """Compare what a container declares for a linked dataset with the link's target.

    Parameters
    ----------
    builder : hdmf.build.DatasetBuilder
        The dataset being written as a link (hdmf's builder: its attributes
        are what the container declares and what HDMF would drop).
    target : h5py.Dataset
        The link's target.
    on_mismatch : {"raise", "warn", "ignore"}
    shape, dtype : optional
        Expected shape and dtype.

    Returns
    -------
    list of str
        The mismatches found (empty when all agree).

    Raises
    ------
    LinkMismatchError
        With ``on_mismatch="raise"``, naming each attribute, the declared and
        the target's value, the target file and dataset, and the overrides.
    """
    from hdmf.build import Builder, DatasetBuilder, ReferenceBuilder

    problems = []
    for key, declared in builder.attributes.items():
        if isinstance(declared, (Builder, ReferenceBuilder)):
            continue  # references are resolved by HDMF, not declared values
        if key not in target.attrs:
            problems.append(f"the container declares {key}={_plain(declared)!r}, the target has no {key!r} attribute")
        elif not _same(declared, target.attrs[key]):
            problems.append(
                f"the container declares {key}={_plain(declared)!r}, the target has {key}={_plain(target.attrs[key])!r}"
            )
    parent = builder.parent
    if parent is not None and builder.name == "data" and target.ndim >= 1:
        ts = parent.datasets.get("timestamps")
        if ts is None and "timestamps" in parent.links:  # timestamps=another series: a link to its timestamps
            ts = parent.links["timestamps"].builder
        n = _length(ts.data) if isinstance(ts, DatasetBuilder) and not isinstance(ts.data, ReferenceBuilder) else None
        if n is not None and n != target.shape[0]:
            problems.append(f"the container has {n} timestamps, the target has {target.shape[0]} samples")
        el = parent.datasets.get("electrodes")
        m = _length(el.data) if el is not None else None
        if m is not None and target.ndim >= 2 and m != target.shape[1]:
            problems.append(f"the container has {m} electrodes, the target has {target.shape[1]} channels")
    problems += _expectation_problems(target, shape, dtype)
    if problems and on_mismatch != "ignore":
        msg = (
            f"{_object_path(builder)}: linking to {target.file.filename}:{target.name}: "
            + "; ".join(problems)
            + ". A link shows the target's attributes, not the container's. Pass "
            "on_mismatch='warn' or 'ignore' to nwb_dask.external_data to link anyway, or "
            "mode='copy' to write a copy with the container's attributes."
        )
        if on_mismatch == "raise":
            raise LinkMismatchError(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
    return problems


# --------------------------------------------------------------------------- #
# Audit                                                                       #
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class LinkRecord:
    """One external link or virtual-dataset source of a file.

    Attributes
    ----------
    kind : {"external", "virtual"}
    path : str
        The link (or virtual dataset) in the audited file.
    file : str
        Target file name as stored in the file.
    object : str
        Target object (dataset or group) in that file.
    resolved : str or None
        The file HDF5 opens, found the way HDF5 searches; None if none exists.
    absolute : bool
        The stored file name is an absolute path (the set cannot be moved).
    broken : bool
        The target file or object cannot be found.
    reason : str
        Why it is broken (empty otherwise).
    """

    kind: str
    path: str
    file: str
    object: str
    resolved: str | None
    absolute: bool
    broken: bool
    reason: str = ""


def _record(kind: str, path: str, stored: str, obj: str, parent_file: str) -> LinkRecord:
    parent_dir = os.path.dirname(os.path.abspath(parent_file))
    if stored == ".":  # a virtual source in the same file
        found: str | None = os.path.abspath(parent_file)
    else:
        env = "HDF5_EXT_PREFIX" if kind == "external" else "HDF5_VDS_PREFIX"
        found = next((os.path.normpath(c) for c in link_candidates(stored, parent_dir, env) if os.path.isfile(c)), None)
    reason = ""
    if found is None:
        reason = f"target file {stored!r} not found (looked in {parent_dir} and the working directory)"
    else:
        from nwb_dask.errors import NotHDF5Error, open_hdf5

        try:
            with open_hdf5(found) as t:
                if obj not in t:
                    reason = f"{found} has no object {obj!r}"
        except NotHDF5Error as exc:  # names the file already
            reason = str(exc)
        except OSError as exc:
            reason = f"cannot open {found}: {exc}"
    return LinkRecord(kind, path, stored, obj, found, os.path.isabs(stored), bool(reason), reason)


def audit_links(path: str | os.PathLike) -> list[LinkRecord]:
    """External links and virtual-dataset sources of an HDF5/NWB file.

    Links are listed without being followed (a link inside a linked file is
    that file's business; audit it separately).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    list of LinkRecord
        In file order: external links, then each virtual dataset's sources.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, nwb_dask.errors.NotHDF5Error
        ``path`` does not exist, is a directory or is not an HDF5 file.
    """
    import h5py

    from nwb_dask.errors import open_hdf5

    path = os.path.abspath(os.fspath(path))
    records: list[LinkRecord] = []
    with open_hdf5(path) as f:  # missing, a directory or not HDF5: an error naming the path
        externals: list[tuple[str, Any]] = []
        datasets: list[str] = []

        def visit(name: str, link) -> None:
            if isinstance(link, h5py.ExternalLink):
                externals.append(("/" + name, link))
            elif isinstance(link, h5py.HardLink) and isinstance(f.get(name), h5py.Dataset):
                datasets.append("/" + name)

        f.visititems_links(visit)
        for name, link in externals:
            records.append(_record("external", name, link.filename, link.path, path))
        for name in datasets:
            dset = f[name]
            if dset.is_virtual:
                seen = set()
                for src in dset.virtual_sources():
                    key = (src.file_name, src.dset_name)
                    if key not in seen:
                        seen.add(key)
                        records.append(_record("virtual", name, vds_unescape(src.file_name), src.dset_name, path))
    return records

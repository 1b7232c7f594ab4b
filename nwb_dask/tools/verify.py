"""Verification: the one object-by-object comparison of an output with its input (repack, convert, consolidate).

What counts as a difference, everywhere:

* an object (group, dataset, link) on one side only, a link of another kind
  or target, a dataset of another shape or dtype class;
* an attribute present on one side only, or of another value (object
  references compared by the path of their target);
* a dataset value that differs: small datasets and attributes read whole and
  compared with :func:`equal_values`, large numeric datasets compared element
  by element as dask arrays, all of them in one parallel pass
  (:func:`same_values`);
* NaN equals NaN (floating point and complex), on both paths;
* storage (chunks, compression, filters) is never compared; neither are
  what an HDMF export rewrites by design (the cached schema, the root's
  schema version) and pynwb's schema migrations of older files
  (:mod:`nwb_dask.tools.migrations`), which are reported instead.

:func:`compare_files` compares two HDF5 files (repack), :func:`compare_conversion`
an HDF5 file with an NWB-Zarr store (convert), :func:`differing_datasets` datasets
of two HDF5 files (consolidate).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nwb_dask.chunking import is_large_numeric
from nwb_dask.compat import require_zarr
from nwb_dask.nwb.read import read_dataset
from nwb_dask.tools.migrations import ABSENT, Difference, match, plain
from nwb_dask.zarr.io import pickle_allowed

__all__ = ["array_differences", "compare_conversion", "compare_files", "compare_nodes", "differing_datasets",
           "equal_values", "nodes_of", "object_ids", "same_values", "small_values_differ"]


# --------------------------------------------------------------------------- #
# values                                                                       #
# --------------------------------------------------------------------------- #
def equal_values(a: Any, b: Any) -> bool:
    """Whether two small values are equal: arrays (and numpy scalars) element by element, lists and tuples
    item by item, anything else with ``==``; NaN equals NaN wherever both sides are floating point."""
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # pragma: no cover
        return False


def same_values(pairs: list, scheduler: Any = None) -> list[bool]:
    """Element-by-element equality of pairs of dask arrays (NaN equals NaN), all computed in one parallel pass."""
    import dask
    import dask.array as da

    tests = []
    for a, b in pairs:
        eq = a == b
        if a.dtype.kind in "fc":
            eq = eq | (da.isnan(a) & da.isnan(b))
        tests.append(eq.all())
    kwargs = {"scheduler": scheduler} if isinstance(scheduler, str) else {}
    return [bool(r) for r in dask.compute(*tests, **kwargs)]


def array_differences(pairs: Mapping[str, tuple], scheduler: Any = None) -> list[str]:
    """``{name: (a, b)}`` of dask arrays: one line per pair of another shape or dtype, or whose values differ.

    The values of every pair of the same shape and dtype are compared in one parallel pass (:func:`same_values`).
    """
    diffs, same_kind = [], {}
    for name, (a, b) in pairs.items():
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs.append(f"{name}: {a.shape} {a.dtype} became {b.shape} {b.dtype}")
        else:
            same_kind[name] = (a, b)
    same = same_values(list(same_kind.values()), scheduler) if same_kind else []
    return diffs + [f"{name}: values differ" for name, ok in zip(same_kind, same) if not ok]


# --------------------------------------------------------------------------- #
# HDF5 files (repack), one dataset (consolidate)                              #
# --------------------------------------------------------------------------- #
#: Objects that an HDMF export rewrites by design: the cached schema (written
#: for the pynwb doing the export) and the root's schema-version attribute.
_EXPORT_REWRITES = ("/specifications",)
_EXPORT_ATTRS = {"/": {"nwb_version", ".specloc"}}


def _norm(value: Any, f) -> Any:
    """A comparable form of an attribute or small dataset value: references become target names, bytes str."""
    import h5py

    if isinstance(value, h5py.Reference):
        return ("ref", f[value].name) if value else ("ref", None)
    if isinstance(value, h5py.RegionReference):  # pragma: no cover - rare in NWB 2.x
        return ("region", f[value].name, str(f[value][value].tolist()))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" or value.dtype.names or value.dtype.kind in "SV":
            return [_norm(v, f) for v in value.tolist()] if value.dtype.kind == "O" else _norm_struct(value, f)
        return value
    if isinstance(value, (list, tuple)):
        return [_norm(v, f) for v in value]
    if isinstance(value, np.void) and value.dtype.names:
        return tuple(_norm(value[n], f) for n in value.dtype.names)
    return value


def _norm_struct(value: np.ndarray, f) -> Any:
    if value.dtype.names:
        return [tuple(_norm(row[n], f) for n in value.dtype.names) for row in value.reshape(-1)]
    return [_norm(v, f) for v in value.reshape(-1).tolist()]


def _links(f) -> dict[str, tuple]:
    """Every link of the file, not followed: ``{path: (kind, target...)}``."""
    import h5py

    out: dict[str, tuple] = {}
    base = os.path.dirname(os.path.abspath(f.filename))

    def visit(group, prefix: str) -> None:
        for name in group:
            path = f"{prefix}/{name}" if prefix != "/" else f"/{name}"
            if any(path == p or path.startswith(p + "/") for p in _EXPORT_REWRITES):
                continue
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                out[path] = ("soft", link.path)
            elif isinstance(link, h5py.ExternalLink):  # by the file it resolves to, not its (relative) text
                out[path] = ("external", os.path.realpath(os.path.join(base, link.filename)), link.path)
            else:
                obj = group.get(name)
                kind = "group" if isinstance(obj, h5py.Group) else "dataset"
                out[path] = (kind,)
                if kind == "group":
                    visit(obj, path)

    visit(f, "/")
    return out


def compare_files(
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    bulk: Sequence[str] = (),
    scheduler: Any = None,
    migrations: list | None = None,
) -> list[str]:
    """Differences between two HDF5/NWB files, object by object (empty list: the same content).

    Compares every link (hard, soft, external) by name and kind, every
    attribute (object references by the name of their target), and every
    dataset's shape, dtype class and values: small ones read whole, those in
    ``bulk`` as dask arrays in parallel.  Storage (chunks, compression) is not
    compared.  ``/specifications`` (the schema cache an export rewrites) and
    the root's ``nwb_version``/``.specloc`` attributes are skipped.

    A difference that is one of pynwb's schema migrations of an older file
    (:data:`nwb_dask.migrations.MIGRATIONS`: ``b`` exported from ``a`` by a
    newer pynwb) is not a difference: it is appended to ``migrations`` (a
    list of :class:`nwb_dask.migrations.Migration`) when one is given.

    Returns
    -------
    list of str
        One line per difference, naming the object.
    """
    import h5py


    diffs: list[str] = []
    found: list = []
    bulk = set(bulk)

    def accepted(path: str, key: str | None, before: Any, after: Any, oa, ob, size_out=None) -> bool:
        parent = fa.get(path.rsplit("/", 1)[0] or "/")
        siblings = list(parent) if isinstance(parent, h5py.Group) else []
        m = match(Difference(path, key, before, after, _attrs(oa, fa), _attrs(ob, fb),
                             _attrs(parent, fa), size_out, siblings))
        if m is not None:
            found.append(m)
        return m is not None

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        la, lb = _links(fa), _links(fb)
        for path in sorted(set(la) | set(lb)):
            if path not in lb:
                diffs.append(f"{path}: only in {a}")
                continue
            if path not in la:
                created = fb.get(path) if lb[path][0] in ("group", "dataset") else None
                size = getattr(created, "size", None)
                if not accepted(path, None, ABSENT, lb[path][0], None, created, size):
                    diffs.append(f"{path}: only in {b}")
                continue
            if la[path] != lb[path]:
                diffs.append(f"{path}: {la[path]} in {a} but {lb[path]} in {b}")
        for path in ["/"] + sorted(p for p, k in la.items() if k[0] in ("group", "dataset") and lb.get(p) == k):
            oa, ob = fa[path], fb[path]
            skip = _EXPORT_ATTRS.get(path, set())
            ka, kb = set(oa.attrs) - skip, set(ob.attrs) - skip
            odd = [k for k in kb - ka if not accepted(path, k, ABSENT, _norm(ob.attrs[k], fb), oa, ob)]
            odd += [k for k in ka - kb if not accepted(path, k, _norm(oa.attrs[k], fa), ABSENT, oa, ob)]
            if odd:
                diffs.append(f"{path}: attributes {sorted(odd)} differ in presence")
            for key in sorted(ka & kb):
                va, vb = _norm(oa.attrs[key], fa), _norm(ob.attrs[key], fb)
                if not equal_values(va, vb) and not accepted(path, key, va, vb, oa, ob):
                    diffs.append(f"{path}: attribute {key!r} is {va!r} in {a} but {vb!r} in {b}")
            if la.get(path, ("group",))[0] != "dataset":
                continue
            if oa.shape != ob.shape or oa.dtype.kind != ob.dtype.kind:
                diffs.append(f"{path}: shape/dtype {oa.shape} {oa.dtype} in {a} but {ob.shape} {ob.dtype} in {b}")
                continue
            if path in bulk:
                continue  # compared below, in parallel
            va, vb = _norm(oa[()], fa), _norm(ob[()], fb)
            if not equal_values(va, vb):
                diffs.append(f"{path}: values differ")
    checks = [p for p in sorted(bulk) if not any(d.startswith(p + ":") for d in diffs)]
    if checks:
        results = same_values([(read_dataset(a, p), read_dataset(b, p)) for p in checks], scheduler)
        diffs += [f"{p}: values differ" for p, ok in zip(checks, results) if not ok]
    if migrations is not None:
        migrations.extend(found)
    return diffs


def _attrs(obj, f) -> dict[str, Any]:
    """The attributes of an HDF5 object (None: none), normalized as :func:`compare_files` compares them."""
    return {} if obj is None else {k: _norm(obj.attrs[k], f) for k in obj.attrs}


def differing_datasets(copy_path, source_path, names: Sequence[str], scheduler: Any = None) -> list[str]:
    """The datasets of ``names`` whose shape, dtype or values differ between two HDF5 files (consolidate).

    Non-empty numeric arrays are compared as dask arrays, all in one parallel
    pass; the rest (scalars, strings, compound and empty datasets, copied by
    HDF5's object copy) is read whole and compared with :func:`equal_values`.
    Object references cannot be compared across files (HDF5's copy re-targets
    them): only their shape is checked.
    """
    import h5py

    differ, bulk = set(), []
    with h5py.File(copy_path, "r") as fc, h5py.File(source_path, "r") as fs:
        for name in names:
            c, s = fc[name], fs[name]
            if c.shape != s.shape or c.dtype != s.dtype:
                differ.add(name)
            elif is_large_numeric(s.shape, s.dtype, 0, kinds="biuf") and s.size > 0:
                bulk.append(name)
            elif h5py.check_dtype(ref=s.dtype) is None and not equal_values(c[()], s[()]):
                differ.add(name)
    if bulk:
        same = same_values([(read_dataset(copy_path, n), read_dataset(source_path, n)) for n in bulk], scheduler)
        differ.update(n for n, ok in zip(bulk, same) if not ok)
    return [n for n in names if n in differ]


# --------------------------------------------------------------------------- #
# HDF5 <-> NWB-Zarr (convert)                                                  #
# --------------------------------------------------------------------------- #
def compare_nodes(nodes_in: Mapping[str, tuple], nodes_out: Mapping[str, tuple], name_in: str, name_out: str,
                  migrations: list) -> list[str]:
    """Differences between two files' objects ``{path: (kind, attrs, size, ...)}`` (attributes as :func:`plain`).

    Objects present on one side only and attributes that differ are
    differences unless they are one of :data:`MIGRATIONS` (then appended to
    ``migrations``).
    """
    diffs: list[str] = []
    children: dict[str, set] = {}
    for p in nodes_in:
        if p != "/":
            head, _, tail = p.rpartition("/")
            children.setdefault(head or "/", set()).add(tail)

    def accepted(path, key, before, after, size=None) -> bool:
        attrs_in = nodes_in[path][1] if path in nodes_in else {}
        attrs_out = nodes_out[path][1] if path in nodes_out else {}
        parent_path = path.rsplit("/", 1)[0] or "/"
        parent = nodes_in[parent_path][1] if parent_path in nodes_in else {}
        m = match(Difference(path, key, before, after, attrs_in, attrs_out, parent, size,
                             children.get(parent_path, set())))
        if m is not None:
            migrations.append(m)
        return m is not None

    for path in sorted(set(nodes_in) | set(nodes_out)):
        if path not in nodes_out:
            diffs.append(f"{path}: only in {name_in}")
            continue
        kind_out, attrs_out, size_out = nodes_out[path][:3]
        if path not in nodes_in:
            if not accepted(path, None, ABSENT, kind_out, size_out):
                diffs.append(f"{path}: only in {name_out}")
            continue
        kind_in, attrs_in = nodes_in[path][:2]
        if kind_in != kind_out:
            diffs.append(f"{path}: a {kind_in} in {name_in} but a {kind_out} in {name_out}")
            continue
        odd = [k for k in set(attrs_out) - set(attrs_in) if not accepted(path, k, ABSENT, attrs_out[k])]
        odd += [k for k in set(attrs_in) - set(attrs_out) if not accepted(path, k, attrs_in[k], ABSENT)]
        if odd:
            diffs.append(f"{path}: attributes {sorted(odd)} differ in presence")
        for key in sorted(set(attrs_in) & set(attrs_out)):
            a, b = attrs_in[key], attrs_out[key]
            if not equal_values(a, b) and not accepted(path, key, a, b):
                diffs.append(f"{path}: attribute {key!r} is {a!r} in {name_in} but {b!r} in {name_out}")
    return diffs


def object_ids(nwbfile) -> dict[str, str]:
    """``{object_id: type name}`` of every object of a read NWBFile."""
    return {c.object_id: type(c).__name__ for c in nwbfile.objects.values()}


#: Attributes of hdmf-zarr's layout (dtype, dimension names, links, schema location), not of the NWB file.
_LAYOUT_ATTRS = {"zarr_dtype", "_ARRAY_DIMENSIONS", "zarr_link", ".specloc", "nwb_version"}


def nodes_of(path: Path, zarr_store: bool) -> dict[str, tuple]:
    """``{object path: (kind, attributes, size, numeric)}`` of an HDF5 file or Zarr store, as the formats have in common.

    Groups and datasets (HDF5 soft/external links, hdmf-zarr's ``zarr_link``
    and the ``/specifications`` cache are left out); attribute values as
    plain Python (:func:`nwb_dask.migrations.plain`), object references as
    ``("ref", target path)`` whichever way the format stores them; ``numeric``:
    a dataset of numbers or booleans (compared by value).
    """
    nodes: dict[str, tuple] = {}

    def attrs_of(attrs, ref) -> dict:
        out = {}
        for key in attrs:
            if key in _LAYOUT_ATTRS:
                continue
            value = attrs[key]
            out[key] = ref(value) if ref(value) is not None else plain(value)
        return out

    if zarr_store:
        zarr = require_zarr(f"reading the objects of the Zarr store {path}", modules=())

        def zref(value):
            if isinstance(value, dict) and value.get("zarr_dtype") == "object" and isinstance(value.get("value"), dict):
                return ["ref", value["value"].get("path")]
            return None

        with pickle_allowed():
            root = zarr.open_group(str(path), mode="r")
            nodes["/"] = ("group", attrs_of(root.attrs, zref), None, False)

            def zvisit(name, obj):
                if name == "specifications" or name.startswith("specifications/"):
                    return
                kind = "group" if isinstance(obj, zarr.hierarchy.Group) else "dataset"
                size = None if kind == "group" else int(obj.size)
                nodes["/" + name] = (kind, attrs_of(obj.attrs, zref), size, kind == "dataset" and obj.dtype.kind in "biuf")

            root.visititems(zvisit)
        return nodes
    import h5py

    with h5py.File(path, "r") as f:
        def href(value):
            if isinstance(value, h5py.Reference):
                return ["ref", f[value].name if value else None]
            return None

        def hvisit(group, prefix):
            for name in group:
                link = group.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    continue
                full = f"{prefix}/{name}" if prefix != "/" else f"/{name}"
                if full == "/specifications":
                    continue
                obj = group[name]
                kind = "group" if isinstance(obj, h5py.Group) else "dataset"
                size = None if kind == "group" else int(obj.size)
                nodes[full] = (kind, attrs_of(obj.attrs, href), size, kind == "dataset" and obj.dtype.kind in "biuf")
                if kind == "group":
                    hvisit(obj, full)

        nodes["/"] = ("group", attrs_of(f.attrs, href), None, False)
        hvisit(f, "/")
    return nodes


def small_values_differ(src: Path, out: Path, to_zarr: bool, paths: list[str]) -> list[str]:
    """The numeric datasets ``paths`` of ``src`` and ``out`` (one HDF5, one Zarr) read whole and compared."""
    import h5py

    if not paths:
        return []
    h5_path, zarr_path = (src, out) if to_zarr else (out, src)
    zarr = require_zarr(f"comparing the datasets of the Zarr store {zarr_path}", modules=())
    diffs = []
    with h5py.File(h5_path, "r") as f, pickle_allowed():
        z = zarr.open_group(str(zarr_path), mode="r")
        for path in paths:
            zb = z[path.lstrip("/")]
            a, b = np.asarray(f[path][()]), np.asarray(zb[()])
            if zb.attrs.get("zarr_dtype") == "scalar" and b.size == 1:  # hdmf-zarr's scalars are 1-element arrays
                b = b.reshape(())
            if a.shape != b.shape or (a.dtype.kind == "b") != (b.dtype.kind == "b") or not equal_values(a, b):
                diffs.append(f"{path}: values differ")
    return diffs


def compare_conversion(src: Path, out: Path, names: list[str], ids_in: dict, to_zarr: bool, scheduler: Any,
                       migrations: list) -> list[str]:
    """Differences between an HDF5 file and an NWB-Zarr store converted from one another (:func:`nwb_dask.convert`).

    Object IDs and types as in the input, every object and attribute (bar pynwb's schema migrations,
    appended to ``migrations``), and every numeric dataset equal element by element (the large ones in
    parallel)."""
    require_zarr(f"verifying the conversion of {src} to {out}")
    from hdmf_zarr.nwb import NWBZarrIO
    from pynwb import NWBHDF5IO

    nodes_in, nodes_out = nodes_of(src, not to_zarr), nodes_of(out, to_zarr)
    diffs = compare_nodes(nodes_in, nodes_out, str(src), str(out), migrations)
    # The other numeric datasets (smaller than min_bytes, exported by HDMF) compared by value too, read whole.
    small = [p for p, n in nodes_in.items() if n[3] and p not in names and p in nodes_out and nodes_out[p][3]]
    diffs += small_values_differ(src, out, to_zarr, small)
    reader = NWBZarrIO if to_zarr else NWBHDF5IO
    with pickle_allowed(to_zarr), reader(str(out), "r") as io:  # our own output: safe to unpickle
        ids_out = object_ids(io.read())
    if ids_out != ids_in:
        missing = sorted(set(ids_in) - set(ids_out))[:5]
        extra = sorted(set(ids_out) - set(ids_in))[:5]
        diffs.append(f"objects differ: missing {missing}, unexpected {extra}")
    diffs += array_differences({name: (read_dataset(src, name), read_dataset(out, name)) for name in names},
                               scheduler)
    return diffs

"""Schema migrations that pynwb's export performs on files written by older pynwb releases.

HDMF's export (what :func:`nwb_dask.repack` and :func:`nwb_dask.convert` run) writes
an old file with the schema of the installed pynwb: some objects change their
type, namespace or gain attributes that the newer schema defines.  The
verifiers of repack and convert accept exactly these changes, listed in
:data:`MIGRATIONS`, and report each one applied (:class:`Migration`); any other
difference (a value, any other attribute, an object gained or lost) is still a
verification failure.

Each rule names where it applies, what the input holds and what the output
must then hold, and why (the NWB/pynwb release that made the change).  They
were found by exporting files written by pynwb 1.5.1, 2.0.1, 2.8.3 and 3.0.0
(tests/data/make_old_files.py) and pynwb's own back-compatibility files (pynwb
1.0.2-2.2.0) with pynwb 4.2 / hdmf 6.2 and comparing object by object.  Only
objects that the export rebuilds change (an HDF5 repack rebuilds what it
rewrites, an export to Zarr everything); the table retyping happens on read.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Collection, Mapping

__all__ = ["ABSENT", "MIGRATIONS", "Difference", "Migration", "Rule", "keep_user_metadata", "match", "plain"]

#: The electrodes table of an NWBFile.
ELECTRODES = "/general/extracellular_ephys/electrodes"
#: What a side without the object or attribute shows in a Difference.
ABSENT = "(absent)"


@dataclasses.dataclass(frozen=True)
class Migration:
    """One accepted change of the output: ``what`` of object ``path`` went from ``before`` to ``after``."""

    path: str
    what: str
    before: Any
    after: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what} {_show(self.before)} -> {_show(self.after)} ({self.rule})"


def _show(value: Any) -> str:
    return value if value == ABSENT else repr(value)


@dataclasses.dataclass(frozen=True)
class Rule:
    """An accepted migration: ``applies(difference)`` says whether a :class:`Difference` is this one."""

    name: str
    where: str
    change: str
    why: str
    applies: Callable[["Difference"], bool]


@dataclasses.dataclass
class Difference:
    """A difference between input and output found by a verifier, with what the rules look at.

    ``key`` is an attribute name, or None for an object present in one file
    only (``before``/``after`` are then ``"(absent)"`` or the object kind).
    ``attrs_in``/``attrs_out`` are the object's attributes, ``parent_in`` the
    input parent's and ``siblings_in`` the names of the parent's members in the
    input; ``size_out`` the size of an output dataset.
    """

    path: str
    key: str | None
    before: Any
    after: Any
    attrs_in: Mapping[str, Any]
    attrs_out: Mapping[str, Any]
    parent_in: Mapping[str, Any]
    size_out: int | None = None
    siblings_in: Collection[str] = ()


@functools.lru_cache(maxsize=1)
def _type_map():
    from pynwb import get_type_map

    return get_type_map()


def _container_cls(attrs: Mapping[str, Any]):
    try:
        return _type_map().get_dt_container_cls(str(attrs["neurodata_type"]), str(attrs["namespace"]))
    except Exception:
        return None


def _is_a(attrs: Mapping[str, Any], class_name: str) -> bool:
    """The object's type (by its ``neurodata_type``/``namespace`` attributes) is ``class_name`` or derives from it."""
    cls = _container_cls(attrs)
    return cls is not None and any(c.__name__ == class_name for c in cls.__mro__)


def _schema_default(d: Difference) -> Any:
    """The installed schema's ``default_value`` of attribute ``d.key`` of a dataset of the parent's type."""
    if d.key is None or "neurodata_type" in d.attrs_in:
        return ABSENT
    try:
        spec = _type_map().namespace_catalog.get_spec(str(d.parent_in["namespace"]), str(d.parent_in["neurodata_type"]))
        attr = spec.get_dataset(d.path.rsplit("/", 1)[1]).get_attribute(d.key)
    except Exception:
        return ABSENT
    return ABSENT if attr is None or attr.default_value is None else attr.default_value


def _retyped(path_ok: Callable[[Difference], bool], old: tuple[str, str], new: tuple[str, str]):
    def applies(d: Difference) -> bool:
        if not path_ok(d) or (d.attrs_in.get("neurodata_type"), d.attrs_in.get("namespace")) != old:
            return False
        if (d.attrs_out.get("neurodata_type"), d.attrs_out.get("namespace")) != new:
            return False
        return (d.key, d.before, d.after) in (("neurodata_type", old[0], new[0]), ("namespace", old[1], new[1]))
    return applies


def _rehomed(d: Difference) -> bool:
    """Same type, now in the namespace the installed schema defines it in, which the input's namespace included."""
    if d.key != "namespace" or d.attrs_in.get("neurodata_type") != d.attrs_out.get("neurodata_type"):
        return False
    cls = _container_cls(d.attrs_in)
    try:
        home = _type_map().get_container_cls_dt(cls)[0] if cls is not None else None
    except Exception:
        home = None
    return home is not None and d.after == home and d.before != home


def _default_added(d: Difference) -> bool:
    return d.before == ABSENT and d.key is not None and _schema_default(d) != ABSENT and d.after == _schema_default(d)


def _series_unit(d: Difference) -> bool:
    return (d.key == "unit" and d.before == ABSENT and d.after == "unknown" and d.path.endswith("/data")
            and "neurodata_type" not in d.attrs_in and _is_a(d.parent_in, "TimeSeries"))


def _series_data(d: Difference) -> bool:
    return (d.key is None and d.before == ABSENT and d.after == "dataset" and d.path.endswith("/data")
            and d.size_out == 0 and _is_a(d.parent_in, "TimeSeries"))


def _help_dropped(d: Difference) -> bool:
    return d.key == "help" and d.after == ABSENT and isinstance(d.before, str) and _container_cls(d.attrs_in) is not None


def _object_id_added(d: Difference) -> bool:
    import uuid

    if d.key != "object_id" or d.before != ABSENT or _container_cls(d.attrs_out) is None:
        return False
    try:
        return str(uuid.UUID(str(d.after))) == str(d.after)
    except ValueError:
        return False


#: Every migration the verifiers accept (and report).
MIGRATIONS: tuple[Rule, ...] = (
    Rule("ElectrodesTable", ELECTRODES,
         "neurodata_type 'DynamicTable' -> 'ElectrodesTable', namespace 'hdmf-common' -> 'core'",
         "NWB 2.9.0 (pynwb 3.1) gave the electrodes table a type of its own; pynwb's NWBFile mapper retypes an "
         "older file's table when it reads it",
         _retyped(lambda d: d.path == ELECTRODES, ("DynamicTable", "hdmf-common"), ("ElectrodesTable", "core"))),
    Rule("FrequencyBandsTable", "the 'bands' table of a DecompositionSeries",
         "neurodata_type 'DynamicTable' -> 'FrequencyBandsTable', namespace 'hdmf-common' -> 'core'",
         "NWB 2.9.0 (pynwb 3.1) typed the bands table; pynwb's NWBFile mapper retypes it on read",
         _retyped(lambda d: d.path.endswith("/bands") and _is_a(d.parent_in, "DecompositionSeries"),
                  ("DynamicTable", "hdmf-common"), ("FrequencyBandsTable", "core"))),
    Rule("namespace", "an object whose type the input named through a namespace that includes its home",
         "namespace 'X' -> the namespace that defines the type (e.g. 'hdmf-experimental' -> 'hdmf-common')",
         "pynwb writes every rebuilt object with the namespace its class is registered in",
         _rehomed),
    Rule("schema default", "an attribute of a dataset of a typed object, absent in the input",
         "absent -> the installed schema's default_value (e.g. TimeSeries data 'offset' 0.0)",
         "newer NWB added optional attributes with defaults (TimeSeries.data offset: NWB 2.4.0); pynwb writes "
         "the default when it rebuilds the object",
         _default_added),
    Rule("TimeSeries unit", "'unit' of a TimeSeries' (or ImageSeries') data, absent in the input",
         "absent -> 'unknown'",
         "pynwb 1.x could write series data without 'unit'; NWB 2.x requires it and pynwb reads the missing "
         "unit as its default 'unknown'",
         _series_unit),
    Rule("TimeSeries data", "'data' of a TimeSeries, absent in the input (an ImageSeries with external_file)",
         "absent -> an empty dataset (size 0)",
         "NWB 2.x requires TimeSeries data; pynwb writes an empty array for a series read without it",
         _series_data),
    Rule("help", "the 'help' attribute of a typed object (files of NWB 2.0b-2.0.2, pynwb 1.0)",
         "the schema's fixed help text -> absent",
         "the NWB 2.0 schemas gave types a constant 'help' text, later schemas dropped it; pynwb does not "
         "write it for a rebuilt object",
         _help_dropped),
    Rule("object_id", "a typed object without 'object_id' (files of NWB < 2.1, pynwb 1.0)",
         "absent -> the UUID pynwb gave the object when reading it",
         "HDMF gives every object an ID (NWB 2.1); the ID pynwb assigned on reading is written",
         _object_id_added),
)


def match(d: Difference) -> Migration | None:
    """The accepted migration this difference is, or None (a real difference)."""
    for rule in MIGRATIONS:
        if rule.applies(d):
            return Migration(d.path, "object" if d.key is None else f"attribute {d.key!r}", plain(d.before),
                             plain(d.after), rule.name)
    return None


def keep_user_metadata(nwbfile, src_io) -> list[str]:
    """Give back the descriptions pynwb's retyping drops; call before exporting ``nwbfile`` read by ``src_io``.

    pynwb's ``FrequencyBandsTable`` and ``ElectrodesTable`` set a fixed
    ``description`` when constructed, so an older file's own description of
    its bands or electrodes table would be replaced on export.  The value read
    from the file is put back (the attribute is free text in every NWB
    version).  Returns the paths of the tables restored.
    """
    restored = []
    for container in nwbfile.objects.values():
        if type(container).__name__ not in ("FrequencyBandsTable", "ElectrodesTable"):
            continue
        try:
            builder = src_io.manager.get_builder(container)
        except Exception:
            builder = None
        read = getattr(builder, "attributes", {}).get("description") if builder is not None else None
        if isinstance(read, bytes):
            read = read.decode()
        if read is not None and read != container.description:
            container.fields["description"] = read
            container.set_modified()
            restored.append(builder.path)
    return restored


def rebuild_incomplete(nwbfile, src_io) -> list[str]:
    """Mark for rebuilding the series an older schema let go without ``data`` (the "TimeSeries data" rule).

    An ImageSeries of an NWB 2.0-2.x file with only ``external_file`` has no
    ``data`` dataset; the output caches the installed schema, which requires
    one.  An export copies an unmodified container's builder as it was, so
    the output would declare a schema it does not meet (a validation error
    the input did not have); rebuilt, the series gets the empty ``data``
    pynwb writes for it.  Returns the paths marked.
    """
    from pynwb.base import TimeSeries

    marked = []
    for container in nwbfile.objects.values():
        if not isinstance(container, TimeSeries):
            continue
        try:
            builder = src_io.manager.get_builder(container)
        except Exception:
            continue
        if builder is not None and "data" not in getattr(builder, "datasets", {}):
            container.set_modified()
            marked.append(builder.path)
    return marked


# --------------------------------------------------------------------------- #
# backend-neutral comparison (convert: HDF5 <-> Zarr)                          #
# --------------------------------------------------------------------------- #
def plain(value: Any) -> Any:
    """A value as plain Python (lists, str, int, float), for comparing HDF5 attributes with Zarr's JSON ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value



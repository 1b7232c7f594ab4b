"""The codec registry: family name (and aliases) -> family, HDF5 filter id -> family.

As in zarr-python 3's ``codecs/registry.py``, adding a codec is one module
plus one registration::

    @register_codec
    class Bzip2(CodecFamily):
        name = "bzip2"
        filter_id = 307
        ...

nwb_dask's own families register themselves when :mod:`nwb_dask.codecs` is
imported.  A codec used on dask workers in other processes must be
registered there too (import the module that registers it).
"""

from __future__ import annotations

from typing import Any

from nwb_dask.codecs.base import CodecError, CodecFamily

__all__ = ["register_codec", "unregister_codec", "get_codec", "family_for_filter", "registered_codecs"]

_FAMILIES: dict[str, CodecFamily] = {}  # name -> family, in registration order
_ALIASES: dict[str, str] = {}  # alias -> name
_BY_FILTER: dict[int, str] = {}  # HDF5 filter id -> name


def register_codec(family: Any) -> Any:
    """Register a codec family (a :class:`~nwb_dask.codecs.CodecFamily` subclass or instance).

    Usable as a class decorator; returns its argument.

    Raises
    ------
    CodecError
        The family's name or an alias is taken (by a name or an alias), or
        another family already runs its HDF5 filter id; the message names both.
    TypeError
        ``family`` is not a CodecFamily.
    """
    instance = family() if isinstance(family, type) else family
    if not isinstance(instance, CodecFamily):
        raise TypeError(f"register_codec takes a CodecFamily subclass or instance, got {family!r}")
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name or name != name.lower():
        raise CodecError(f"codec family {family!r}: name must be a non-empty lower-case string, got {name!r}")
    for key in (name, *instance.aliases):
        owner = key if key in _FAMILIES else _ALIASES.get(key)
        if owner is not None:
            raise CodecError(
                f"cannot register codec {name!r}: the name {key!r} is already taken by codec {owner!r} "
                f"({_FAMILIES[owner]!r})"
            )
    fid = instance.filter_id
    if fid is not None:
        if fid in _BY_FILTER:
            raise CodecError(
                f"cannot register codec {name!r}: HDF5 filter {fid} is already run by codec {_BY_FILTER[fid]!r}"
            )
        _BY_FILTER[fid] = name
    _FAMILIES[name] = instance
    for alias in instance.aliases:
        _ALIASES[alias] = name
    return family


def unregister_codec(name: str) -> None:
    """Remove a registered family (its name, aliases and filter id); KeyError when it is not registered."""
    family = _FAMILIES.pop(name)
    for alias in family.aliases:
        _ALIASES.pop(alias, None)
    if family.filter_id is not None:
        _BY_FILTER.pop(family.filter_id, None)


def get_codec(name: str | None) -> CodecFamily:
    """The family registered under ``name`` or an alias of it (case-insensitive; None is ``"none"``).

    Raises
    ------
    CodecError
        No such codec; the message lists the known ones.
    """
    key = "none" if name is None else name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    try:
        return _FAMILIES[key]
    except (KeyError, TypeError):
        raise CodecError(f"unknown codec {name!r}; known codecs: {sorted(_FAMILIES)}") from None


def family_for_filter(filter_id: int) -> CodecFamily | None:
    """The family running HDF5 filter ``filter_id``, or None."""
    name = _BY_FILTER.get(int(filter_id))
    return None if name is None else _FAMILIES[name]


def registered_codecs() -> list[str]:
    """Names of the registered families, in registration order."""
    return list(_FAMILIES)

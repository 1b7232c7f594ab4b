"""What a codec family is: the base class a codec author subclasses, its options, its stages.

A *family* is one HDF5 compression filter as nwb_dask runs it outside HDF5
(``gzip`` over H5Z_FILTER_DEFLATE, ``zstd`` over filter 32015, ...).  One
module per family (``deflate.py``, ``zstd.py``, ...) subclasses
:class:`CodecFamily` and registers an instance with
:func:`nwb_dask.codecs.register_codec`; a :class:`~nwb_dask.codecs.Codec` is a
family plus validated options, run as a chain of :class:`Stage` objects
(HDF5's byte shuffle first when the family takes it).

Modelled on zarr-python 3's ``codecs/gzip.py`` (one small class per codec,
``parse_*`` validators that name the bad value) and on h5py's
``_hl/filters.py``, where ``fill_dcpl`` (keywords -> property list) sits beside
``get_filters`` (property list -> dict): here :meth:`CodecFamily.dataset_kwargs`
sits beside :meth:`CodecFamily.from_cd_values` in each family's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "CodecError",
    "CodecFamily",
    "Option",
    "Stage",
    "check_plugin",
    "parse_choice",
    "parse_int",
    "signed",
]


class CodecError(ValueError):
    """A codec spec is invalid, or a codec's library or HDF5 plugin is unavailable."""


# --------------------------------------------------------------------------- #
# Option validators                                                            #
# --------------------------------------------------------------------------- #
def parse_int(codec: str, key: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``, else a :class:`CodecError` naming the codec, option and value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise CodecError(f"codec {codec!r}: {key}={value!r} is invalid; expected an integer in [{lo}, {hi}]")
    return int(value)


def parse_choice(codec: str, key: str, value: Any, choices: Sequence[Any]) -> Any:
    """The canonical member of ``choices`` equal to ``value`` (``1`` -> ``True``, ``np.str_`` -> ``str``)."""
    choices = list(choices)
    if value not in choices:
        raise CodecError(f"codec {codec!r}: {key}={value!r} is invalid; expected one of {choices}")
    return choices[choices.index(value)]


@dataclass(frozen=True)
class Option:
    """One option of a family: its default and what it allows.

    ``allowed`` is a ``range`` (an integer option, checked with
    :func:`parse_int`) or a sequence of values (checked with
    :func:`parse_choice`).
    """

    default: Any
    allowed: Any

    def parse(self, codec: str, key: str, value: Any) -> Any:
        if isinstance(self.allowed, range):
            return parse_int(codec, key, value, self.allowed.start, self.allowed.stop - 1)
        return parse_choice(codec, key, value, self.allowed)


def signed(v: int) -> int:
    """cd_values are unsigned 32-bit ints; a negative option (zstd's level) comes back as its two's complement."""
    v = int(v)
    return v - (1 << 32) if v >= 1 << 31 else v


def check_plugin(name: str, filter_id: int) -> None:
    """Raise :class:`CodecError` unless hdf5plugin imports and HDF5 has filter ``filter_id``."""
    try:
        import hdf5plugin  # noqa: F401  (registers the filters with HDF5)
        import h5py
    except ImportError as exc:
        raise CodecError(f"codec {name!r} needs hdf5plugin (pip install hdf5plugin): {exc}") from exc
    if not h5py.h5z.filter_avail(filter_id):
        raise CodecError(f"codec {name!r}: HDF5 filter {filter_id} is not available from hdf5plugin on this system")


# --------------------------------------------------------------------------- #
# Stages and families                                                          #
# --------------------------------------------------------------------------- #
class Stage:
    """One HDF5 filter as bytes -> bytes: ``encode``/``decode`` produce what the C filter does."""

    filter_id: int

    def encode(self, buf: bytes | memoryview, itemsize: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, buf: bytes | memoryview, nbytes: int, itemsize: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


class CodecFamily:
    """One HDF5 compression filter as nwb_dask runs it: subclass this and register an instance.

    Class attributes
    ----------------
    name : str
        The codec's name in specs (``codec("gzip")``).
    aliases : tuple of str
        Other names for it (``"deflate"``).
    filter_id : int or None
        The HDF5 filter id (None only for ``"none"``).
    plugin : bool
        Whether the filter comes from hdf5plugin (checked when a codec is built).
    options : dict of str to :class:`Option`
        Every option, with its default and allowed values.
    shuffle_filter : bool
        Whether the boolean option ``shuffle`` puts HDF5's byte shuffle
        (filter 2) before this filter; ``codec_from_dataset`` then accepts a
        leading shuffle.
    levels : range
        Compression levels the live writer may re-encode a chunk at to get a
        copy of another size (empty: none).
    zarr : bool
        Whether :meth:`to_numcodecs` gives a numcodecs equivalent (NWB-Zarr).
    decode_options : tuple of str
        Options the file's decoder must have as they were encoded; a codec
        differing only in others writes bytes the declared filter decodes
        (any deflate level inflates the same way).

    Methods to write: :meth:`stages` (encode/decode), :meth:`dataset_kwargs`
    and :meth:`from_cd_values` (the two directions of the file's
    declaration), optionally :meth:`check`, :meth:`overhead_encodings`,
    :meth:`to_numcodecs` / :meth:`from_numcodecs`.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    filter_id: ClassVar[int | None] = None
    plugin: ClassVar[bool] = False
    options: ClassVar[Mapping[str, Option]] = {}
    shuffle_filter: ClassVar[bool] = False
    levels: ClassVar[range] = range(0)
    zarr: ClassVar[bool] = False
    decode_options: ClassVar[tuple[str, ...]] = ()

    # -- options -------------------------------------------------------------
    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """All options, defaults filled in and each value checked; unknown names are refused."""
        unknown = set(params) - set(self.options)
        if unknown:
            raise CodecError(
                f"codec {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"valid options: {sorted(self.options) or 'none'}"
            )
        return {key: opt.parse(self.name, key, params.get(key, opt.default)) for key, opt in self.options.items()}

    def check(self) -> None:
        """Raise :class:`CodecError` when the filter's library or HDF5 plugin is unavailable."""
        if self.plugin and self.filter_id is not None:
            check_plugin(self.name, self.filter_id)

    # -- encode / decode -------------------------------------------------------
    def stages(self, o: Mapping[str, Any]) -> tuple[Stage, ...]:  # pragma: no cover - abstract
        """The filter's stages for options ``o`` (the shuffle before it is added by the pipeline)."""
        raise NotImplementedError

    # -- the file's declaration: options -> h5py keywords, cd_values -> options --
    def dataset_kwargs(self, o: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        """``create_dataset`` keywords declaring the filter (without the shuffle, added by the pipeline)."""
        raise NotImplementedError

    def cd_values(self, o: Mapping[str, Any]) -> tuple[int, ...]:
        """The cd_values the filter is declared with (h5py's ``compression_opts``)."""
        return tuple(int(v) for v in self.dataset_kwargs(o).get("compression_opts", ()))

    def from_cd_values(self, cd: Sequence[int]) -> dict[str, Any] | None:  # pragma: no cover - abstract
        """The options recorded in a file's cd_values (as stored, after the filter's ``set_local``).

        None when the values do not describe a pipeline this family runs.
        Only options the file records are returned; the others take their
        defaults.
        """
        raise NotImplementedError

    # -- other encodings (live writer) -------------------------------------------
    def overhead_encodings(self, o: Mapping[str, Any], buf: Any, itemsize: int) -> Iterator[bytes]:
        """Encodings of ``buf`` (already through the stages before this filter) at the same level that
        the HDF5 filter decodes the same but whose size differs (other framing overheads)."""
        return iter(())

    # -- NWB-Zarr --------------------------------------------------------------
    def to_numcodecs(self, o: Mapping[str, Any]) -> Any:
        """The numcodecs compressor decoding what the filter stores (only when ``zarr`` is True)."""
        raise CodecError(f"codec {self.name!r} has no numcodecs equivalent")

    def from_numcodecs(self, compressor: Any) -> dict[str, Any] | None:
        """This family's options for a numcodecs compressor, or None when it is not this family's."""
        return None

    def __repr__(self) -> str:
        return f"<codec family {self.name!r} (HDF5 filter {self.filter_id})>"

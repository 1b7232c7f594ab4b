"""The :class:`Codec` object: a registered family plus validated options, run as a chain of filter stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from nwb_dask.codecs.base import CodecError, CodecFamily
from nwb_dask.codecs.registry import get_codec, registered_codecs
from nwb_dask.codecs.shuffle import Shuffle

__all__ = ["Codec", "CodecSpec", "available_codecs", "codec", "other_encodings", "pad_chunk"]

#: A codec spec: a name, ``(name, params)``, or a :class:`Codec`.
CodecSpec = Union[str, "Codec", tuple, None]

_LITTLE = np.little_endian


@dataclass(frozen=True)
class Codec:
    """A validated HDF5 filter pipeline that nwb_dask can run outside HDF5.

    Build one with :func:`codec`.  Codecs are immutable, hashable and
    picklable, so they travel to dask workers and MPI ranks (a codec
    registered from outside nwb_dask must be registered in the worker's
    process too).

    Attributes
    ----------
    name : str
        The family's name: ``"none"``, ``"gzip"``, ``"zstd"``, ``"blosc"``,
        ``"lz4"``, ``"bitshuffle"`` or a registered one.
    params : tuple of (str, value)
        Normalised parameters (level, shuffle, cname, engine, ...).
    """

    name: str
    params: tuple = ()
    _stages: tuple = field(default=(), repr=False, compare=False, hash=False)

    # -- construction ------------------------------------------------------
    def __reduce__(self):
        return (codec, ((self.name, dict(self.params)),))

    @property
    def family(self) -> CodecFamily:
        """The registered :class:`~nwb_dask.codecs.CodecFamily` this codec belongs to."""
        return get_codec(self.name)

    @property
    def options(self) -> dict[str, Any]:
        """The codec's parameters as a dict."""
        return dict(self.params)

    @property
    def spec(self) -> tuple[str, dict[str, Any]]:
        """A spec that :func:`codec` turns back into this codec."""
        return (self.name, dict(self.params))

    @property
    def label(self) -> str:
        """A short name with the main options, as reports show it: ``"gzip-4+shuffle"``, ``"zstd-3"``, ``"none"``."""
        if self.name == "none":
            return "none"
        o = self.options
        level = o.get("level")
        return self.name + (f"-{level}" if level is not None else "") + ("+shuffle" if o.get("shuffle") is True else "")

    @property
    def filter_ids(self) -> tuple[int, ...]:
        """HDF5 filter ids of the pipeline, in encoding order."""
        return tuple(s.filter_id for s in self._stages)

    # -- HDF5 declaration --------------------------------------------------
    def dataset_kwargs(self) -> dict[str, Any]:
        """Keywords for ``h5py.Group.create_dataset`` that declare this pipeline.

        Returns
        -------
        dict
            ``compression``, ``compression_opts`` and ``shuffle`` as h5py takes
            them (plugin filters through hdf5plugin's helpers).
        """
        family, o = self.family, self.options
        kw = dict(family.dataset_kwargs(o))
        if family.shuffle_filter and o.get("shuffle") is True:
            kw["shuffle"] = True
        return kw

    def h5dataio_kwargs(self) -> dict[str, Any]:
        """Keywords for ``hdmf.backends.hdf5.H5DataIO`` declaring this pipeline.

        Plugin filters need ``allow_plugin_filters=True`` in hdmf.
        """
        kw = self.dataset_kwargs()
        if kw.get("compression") not in (None, "gzip"):
            kw["allow_plugin_filters"] = True
        return kw

    # -- encode / decode ---------------------------------------------------
    def encode(self, chunk: np.ndarray) -> tuple[int, bytes]:
        """Encode one full chunk into the bytes HDF5 stores for it.

        Parameters
        ----------
        chunk : numpy.ndarray
            The chunk, already of the dataset's full chunk shape (see
            :func:`pad_chunk` for edge chunks) and dtype.

        Returns
        -------
        (int, bytes)
            Filter mask (always 0: every filter applied) and stored bytes,
            ready for ``dset.id.write_direct_chunk(offset, data, filter_mask)``.
        """
        arr = np.ascontiguousarray(chunk)
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
            raise CodecError(f"codec {self.name!r} encodes little-endian data only, got dtype {arr.dtype}")
        itemsize = arr.dtype.itemsize
        buf: bytes | memoryview = memoryview(arr).cast("B")
        if not self._stages:
            return 0, bytes(buf)
        for stage in self._stages:
            buf = stage.encode(buf, itemsize)
        return 0, buf if isinstance(buf, bytes) else bytes(buf)

    def decode(
        self,
        data: bytes,
        dtype: np.dtype | str,
        chunk_shape: Sequence[int],
        filter_mask: int = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode bytes from ``dset.id.read_direct_chunk`` into a chunk array.

        Parameters
        ----------
        data : bytes
            Stored bytes of one chunk.
        dtype : numpy dtype
            Dataset dtype.
        chunk_shape : sequence of int
            The dataset's chunk shape (edge chunks are stored full size).
        filter_mask : int
            Mask returned by ``read_direct_chunk``: bit *i* set means filter
            *i* of the pipeline was skipped when the chunk was written.
        out : numpy.ndarray, optional
            C-contiguous array of ``chunk_shape`` and ``dtype`` to decode
            into (e.g. the chunk's place in a larger block), saving a copy.

        Returns
        -------
        numpy.ndarray
            The chunk, of shape ``chunk_shape`` (``out`` when given).
        """
        dt = np.dtype(dtype)
        nbytes = int(np.prod(chunk_shape, dtype=np.int64)) * dt.itemsize
        if out is not None and (out.shape != tuple(chunk_shape) or out.dtype != dt or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous {dt} array of shape {tuple(chunk_shape)}")
        active = [i for i in reversed(range(len(self._stages))) if not (filter_mask >> i) & 1]
        buf: bytes | memoryview | np.ndarray = data
        for i in active:
            stage = self._stages[i]
            try:
                if i == active[-1] and out is not None and isinstance(stage, Shuffle) and len(buf) == nbytes:
                    stage.decode(buf, nbytes, dt.itemsize, dest=out.reshape(-1).view(np.uint8))
                    return out
                buf = stage.decode(buf, nbytes, dt.itemsize)
            except Exception as exc:
                raise CodecError(
                    f"codec {self.name!r}: cannot decode {len(buf)} bytes into chunk {tuple(chunk_shape)} {dt}: {exc}"
                ) from exc
        if len(buf) != nbytes:
            raise CodecError(
                f"codec {self.name!r}: decoded {len(buf)} bytes, expected {nbytes} for chunk {tuple(chunk_shape)} {dt}"
            )
        chunk = np.frombuffer(buf, dtype=dt).reshape(tuple(chunk_shape))
        if out is None:
            return chunk
        out[...] = chunk
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"Codec({self.name!r}{', ' if args else ''}{args})"


def codec(spec: CodecSpec = "gzip", **options: Any) -> Codec:
    """Build and validate a :class:`Codec` from a short spec.

    Parameters
    ----------
    spec : str, (str, dict), Codec or None
        ``"none"`` (or ``None``), ``"gzip"``, ``"zstd"``, ``"blosc"``,
        ``"lz4"``, ``"bitshuffle"`` or a registered name or alias; or
        ``(name, {option: value})``; or an existing codec (returned with
        ``options`` applied).
    **options
        Options merged over those in ``spec``:

        * gzip: ``level`` 0-9 (4), ``shuffle`` (True), ``engine``
          ``"auto"|"libdeflate"|"isal"|"zlib-ng"|"zlib"`` (auto: ISA-L for
          levels 1-6, libdeflate for 0 and 7-9);
        * zstd: ``level`` (3), ``shuffle`` (False);
        * blosc: ``cname`` (``"lz4"``), ``level`` 0-9 (5),
          ``shuffle`` ``"none"|"byte"|"bit"`` (``"byte"``);
        * lz4: ``block_bytes`` (0: the filter's 1 GiB default), ``shuffle`` (False);
        * bitshuffle: ``cname`` ``"none"|"lz4"|"zstd"`` (``"lz4"``),
          ``level`` (zstd only), ``block`` elements (0: automatic);
        * a registered family: its ``options``.

    Returns
    -------
    Codec

    Raises
    ------
    CodecError
        Unknown codec or option, value out of range, or a library/HDF5
        plugin that is not available; the message names the codec.

    Examples
    --------
    >>> codec("gzip").options["level"]
    4
    >>> codec(("zstd", {"level": 5})).filter_ids
    (32015,)
    """
    if isinstance(spec, Codec):
        if not options:
            return spec
        spec = spec.spec
    params: dict[str, Any] = {}
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[1], Mapping):
            raise CodecError(f"codec spec {spec!r} must be a name or (name, {{options}})")
        spec, given = spec
        params.update(given)
    if spec is not None and not isinstance(spec, str):
        raise CodecError(f"codec spec must be a string, (name, options) or Codec, got {type(spec).__name__}")
    family = get_codec(spec)
    params.update(options)
    o = family.validate(params)
    family.check()
    stages = ((Shuffle(),) if family.shuffle_filter and o.get("shuffle") is True else ()) + tuple(family.stages(o))
    return Codec(family.name, tuple(sorted(o.items())), stages)


def available_codecs() -> list[str]:
    """Names of the codecs usable here (registered, and their libraries and HDF5 plugins load)."""
    names = []
    for name in registered_codecs():
        try:
            codec(name)
        except CodecError:
            continue
        names.append(name)
    return names


def pad_chunk(block: np.ndarray, chunk_shape: Sequence[int], fill_value: Any = 0) -> np.ndarray:
    """Pad an edge chunk to the full chunk shape, as HDF5 stores edge chunks.

    HDF5 always stores whole chunks; the part of an edge chunk outside the
    dataset is never read back.  It is filled with ``fill_value`` (HDF5 uses
    the dataset's fill value).

    Parameters
    ----------
    block : numpy.ndarray
        The valid part of the chunk.
    chunk_shape : sequence of int
        The dataset's chunk shape.
    fill_value : scalar
        Value for the padding.

    Returns
    -------
    numpy.ndarray
        C-contiguous array of ``chunk_shape`` (``block`` itself when it is full).
    """
    shape = tuple(int(c) for c in chunk_shape)
    if block.shape == shape:
        return np.ascontiguousarray(block)
    if len(block.shape) != len(shape) or any(b > c for b, c in zip(block.shape, shape)):
        raise ValueError(f"block of shape {block.shape} does not fit in chunk shape {shape}")
    out = np.full(shape, fill_value, dtype=block.dtype)
    out[tuple(slice(0, b) for b in block.shape)] = block
    return out


def other_encodings(c: Codec, raw: np.ndarray) -> Iterator[bytes]:
    """Encodings of ``raw`` that HDF5's filters decode the same as ``c.encode``'s, but of other sizes.

    Other compression levels first (the family's ``levels``), then the same
    level with other overheads (:meth:`~nwb_dask.codecs.CodecFamily.overhead_encodings`).
    The live writer uses one whose size differs from a chunk's stored copy, so
    HDF5 writes the new copy elsewhere instead of over the durable one.
    """
    family = c.family
    for level in family.levels:
        if level != c.options.get("level"):
            yield codec(c, level=level).encode(raw)[1]
    buf: Any = memoryview(raw).cast("B")
    for stage in c._stages[:-1]:  # shuffle
        buf = stage.encode(buf, raw.dtype.itemsize)
    yield from family.overhead_encodings(c.options, buf, raw.dtype.itemsize)

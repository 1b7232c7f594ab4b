"""Which codec nwb_dask runs for a stored dataset, and the rules built on that.

* :func:`codec_from_dataset`: a dataset's filter pipeline read back as a
  :class:`~nwb_dask.codecs.Codec` (each family parses its own cd_values);
* :func:`chunk_codec`: **the gate**, "can nwb_dask encode/decode this
  dataset's chunks itself"; every reader and writer asks it;
* :func:`source_codec`: "the source's codec, else gzip", for the tools that
  rewrite data (repack, convert, consolidate, copied links);
* the NWB-Zarr side: :func:`numcodecs_pipeline`, :func:`codec_from_numcodecs`,
  :func:`zarr_codec`.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from nwb_dask.codecs.base import CodecError
from nwb_dask.codecs.pipeline import Codec, CodecSpec, codec
from nwb_dask.codecs.registry import family_for_filter, get_codec, registered_codecs
from nwb_dask.codecs.shuffle import FILTER_SHUFFLE

__all__ = [
    "chunk_codec",
    "codec_from_dataset",
    "codec_from_numcodecs",
    "numcodecs_pipeline",
    "runs_outside_hdf5",
    "same_pipeline",
    "source_codec",
    "zarr_codec",
    "zarr_codecs",
]


def codec_from_dataset(dset) -> Codec | None:
    """The codec matching an existing h5py dataset's filter pipeline.

    Parameters
    ----------
    dset : h5py.Dataset

    Returns
    -------
    Codec or None
        None when the dataset is contiguous, or uses a filter (or filter
        order) nwb_dask cannot run outside HDF5 (e.g. fletcher32, scaleoffset).
        Such datasets are read through HDF5 instead.
    """
    plist = dset.id.get_create_plist()
    if dset.chunks is None:
        return None
    filters = [plist.get_filter(i)[:3] for i in range(plist.get_nfilters())]
    ids = [f[0] for f in filters]
    shuffle = ids[:1] == [FILTER_SHUFFLE]
    rest = filters[1:] if shuffle else filters
    if not rest:
        return codec("none") if not shuffle else None
    if len(rest) != 1:
        return None
    fid, _flags, cd = rest[0]
    family = family_for_filter(fid)
    if family is None or (shuffle and not family.shuffle_filter):
        return None
    try:
        opts = family.from_cd_values(tuple(int(v) for v in cd))
        if opts is None:
            return None
        if family.shuffle_filter:
            opts = {**opts, "shuffle": shuffle}
        return codec(family.name, **opts)
    except (CodecError, KeyError, IndexError):
        return None


def same_pipeline(declared: Codec | None, given: Codec) -> bool:
    """Whether bytes ``given`` encodes decode with the pipeline ``declared`` (a dataset's, from :func:`codec_from_dataset`)."""
    if declared is None or declared.filter_ids != given.filter_ids:
        return False
    d, g = declared.options, given.options
    return all(d.get(k) == g.get(k) for k in given.family.decode_options)


def runs_outside_hdf5(dtype: np.dtype) -> bool:
    """Whether nwb_dask's codecs can encode/decode this dtype's chunks themselves (the dtype half of the gate).

    Big-endian and non-numeric types (strings, compounds, references) are
    converted and filtered by HDF5 only; writers and readers then go through
    h5py for those datasets.
    """
    dtype = np.dtype(dtype)
    return dtype.byteorder != ">" and dtype.kind in "biufc?"


def chunk_codec(dset, codec_spec: CodecSpec = None) -> Codec | None:
    """The gate: the codec nwb_dask encodes/decodes ``dset``'s chunks with, or None when HDF5 must.

    HDF5 does the work (None) for contiguous and virtual datasets, for dtypes
    :func:`runs_outside_hdf5` refuses, and for filter pipelines no
    registered family runs (:func:`codec_from_dataset` gives None).

    Parameters
    ----------
    dset : h5py.Dataset
    codec_spec : codec spec, optional
        The codec the caller means to use instead of the dataset's own (it
        must produce what the dataset's filters decode; the caller checks).
    """
    if dset.chunks is None or dset.is_virtual or not runs_outside_hdf5(dset.dtype):
        return None
    return codec(codec_spec) if codec_spec is not None else codec_from_dataset(dset)


def source_codec(source: Any, *, contiguous: CodecSpec = "gzip", allowed: Iterable[str] | None = None) -> Codec:
    """The source's codec, else gzip: what a tool rewriting ``source`` compresses it with by default.

    Parameters
    ----------
    source : h5py.Dataset or zarr.Array
        The dataset being rewritten.
    contiguous : codec spec
        The codec for a contiguous (unfiltered) HDF5 source: gzip for copies
        (links, consolidate), ``"none"`` where the source's layout is kept
        (repack, convert).
    allowed : names, optional
        Codecs the target can declare (NWB-Zarr: :func:`zarr_codecs`); any
        other source codec becomes gzip.

    Returns
    -------
    Codec
        The source's codec when nwb_dask runs it (:func:`chunk_codec`, or the
        numcodecs equivalent of a Zarr array's), else ``codec("gzip")``.
    """
    if hasattr(source, "compressor") and not hasattr(source, "id"):  # a zarr array (duck-typed: zarr is optional)
        found = codec_from_numcodecs(source.compressor, source.filters)
    elif source.chunks is None and not source.is_virtual:
        found = codec(contiguous)
    else:
        found = chunk_codec(source)
    if found is None or (allowed is not None and found.name not in tuple(allowed)):
        return codec("gzip")
    return found


# --------------------------------------------------------------------------- #
# NWB-Zarr                                                                      #
# --------------------------------------------------------------------------- #
def zarr_codecs() -> tuple[str, ...]:
    """Names of the registered codecs with a numcodecs equivalent (NWB-Zarr can store them)."""
    return tuple(n for n in registered_codecs() if get_codec(n).zarr)


def numcodecs_pipeline(c: Codec, itemsize: int) -> tuple[list, Any]:
    """The numcodecs ``(filters, compressor)`` that decode what ``c.encode`` produces.

    Raises
    ------
    CodecError
        For codecs whose HDF5 byte format has no numcodecs equivalent
        (``lz4``, ``bitshuffle``).
    """
    family = c.family
    if not family.zarr:
        raise CodecError(f"codec {c.name!r} has no NWB-Zarr equivalent; use one of {list(zarr_codecs())}")
    import numcodecs

    o = c.options
    compressor = family.to_numcodecs(o)
    if compressor is None:
        return [], None
    shuffled = family.shuffle_filter and o.get("shuffle") is True and itemsize > 1
    return ([numcodecs.Shuffle(elementsize=itemsize)] if shuffled else []), compressor


def codec_from_numcodecs(compressor: Any, filters: Any = None) -> Codec | None:
    """nwb_dask's codec equivalent of a numcodecs pipeline (a Zarr array's), or None when there is none."""
    filters = list(filters or [])
    shuffle = any(type(f).__name__ == "Shuffle" for f in filters)
    if compressor is None:
        return codec("none") if not filters else None
    for name in registered_codecs():
        family = get_codec(name)
        opts = family.from_numcodecs(compressor)
        if opts is not None:
            if family.shuffle_filter:
                opts = {**opts, "shuffle": shuffle}
            return codec(name, **opts)
    return None


def zarr_codec(c: Codec, itemsize: int) -> Codec:
    """The codec as stored: HDF5's shuffle of 1-byte items is a no-op numcodecs cannot declare."""
    if itemsize == 1 and c.options.get("shuffle") is True:
        return codec(c, shuffle=False)
    return c

"""HDF5-exact chunk codecs: encode chunks to the bytes HDF5 stores, decode them back.

A :class:`Codec` is an HDF5 filter pipeline (for example ``[shuffle, deflate]``)
that nwb_dask can run *outside* HDF5:

* :meth:`Codec.dataset_kwargs` gives the ``create_dataset`` keywords that
  declare the pipeline in the file, so any HDF5 reader decodes the data;
* :meth:`Codec.encode` turns one chunk (a numpy array of the full chunk shape)
  into the bytes the pipeline stores, for ``dset.id.write_direct_chunk``;
* :meth:`Codec.decode` turns ``dset.id.read_direct_chunk`` bytes (honouring the
  filter mask, which HDF5 sets when an optional filter was skipped) back into
  an array.

Encoding and decoding run in C libraries that release the GIL (isal,
libdeflate, zstd, blosc, lz4), so many chunks can be processed in threads or on
dask workers while one process stores the bytes.

Codecs are named by a short spec, as in ``codec("gzip")``,
``codec(("zstd", {"level": 5}))`` or ``codec("blosc", cname="lz4", shuffle="bit")``.

Layout: ``base`` (:class:`CodecFamily`, :class:`CodecError`, validators),
``registry`` (:func:`register_codec`, :func:`get_codec`), ``pipeline`` (the
:class:`Codec` object), ``gate`` (:func:`chunk_codec`, :func:`source_codec`,
``codec_from_dataset``, the numcodecs side) and one module per HDF5 filter
family: ``none``, ``deflate`` (gzip), ``shuffle``, ``zstd``, ``blosc``, ``lz4``,
``bitshuffle``.  docs/codecs.md shows how to add one.
"""

from __future__ import annotations

# The families register themselves on import, in this order (available_codecs' order).
from nwb_dask.codecs import none, deflate, zstd, blosc, lz4, bitshuffle  # noqa: F401  isort: skip
from nwb_dask.codecs.base import CodecError, CodecFamily, Option, Stage, parse_choice, parse_int
from nwb_dask.codecs.bitshuffle import FILTER_BITSHUFFLE
from nwb_dask.codecs.blosc import FILTER_BLOSC
from nwb_dask.codecs.deflate import DEFLATE_ENGINES, FILTER_DEFLATE
from nwb_dask.codecs.lz4 import FILTER_LZ4
from nwb_dask.codecs.zstd import FILTER_ZSTD
from nwb_dask.codecs.gate import (
    chunk_codec,
    codec_from_dataset,
    codec_from_numcodecs,
    numcodecs_pipeline,
    runs_outside_hdf5,
    same_pipeline,
    source_codec,
    zarr_codec,
    zarr_codecs,
)
from nwb_dask.codecs.pipeline import Codec, CodecSpec, available_codecs, codec, other_encodings, pad_chunk
from nwb_dask.codecs.registry import family_for_filter, get_codec, register_codec, unregister_codec
from nwb_dask.codecs.shuffle import FILTER_SHUFFLE

#: The built-in codecs NWB-Zarr can store (with a numcodecs equivalent); :func:`zarr_codecs` adds registered ones.
ZARR_CODECS = zarr_codecs()

__all__ = [
    "Codec",
    "CodecError",
    "CodecFamily",
    "CodecSpec",
    "Option",
    "Stage",
    "available_codecs",
    "chunk_codec",
    "codec",
    "codec_from_dataset",
    "codec_from_numcodecs",
    "family_for_filter",
    "get_codec",
    "numcodecs_pipeline",
    "other_encodings",
    "pad_chunk",
    "parse_choice",
    "parse_int",
    "register_codec",
    "runs_outside_hdf5",
    "same_pipeline",
    "source_codec",
    "unregister_codec",
    "zarr_codec",
    "zarr_codecs",
    "DEFLATE_ENGINES",
    "FILTER_BITSHUFFLE",
    "FILTER_BLOSC",
    "FILTER_DEFLATE",
    "FILTER_LZ4",
    "FILTER_SHUFFLE",
    "FILTER_ZSTD",
    "ZARR_CODECS",
]

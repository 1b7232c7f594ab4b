"""nwb_dask: a Dask-integrated, out-of-core, parallel-compressing I/O backend for NWB.

Public API
----------
codec, Codec, CodecError, available_codecs, codec_from_dataset
    HDF5-exact chunk codecs (:mod:`nwb_dask.codecs`).
guess_chunk_shape, resolve_chunk_shape, ChunkShapeError
    Chunk shapes (:mod:`nwb_dask.chunking`).
DaskDataChunkIterator
    Dask arrays as hdmf DataChunkIterators (:mod:`nwb_dask.iterators`).
NWBDaskIO, DaskDataIO, write_nwb
    Drop-in ``NWBHDF5IO`` with the parallel writer (:mod:`nwb_dask.io`).
find_partials, remove_partials
    Temporaries a killed writer left behind (:mod:`nwb_dask.atomic`: outputs
    that appear whole or not at all, appends undone when they fail).
write_dask_array, WriteStats, WriteError
    The parallel writer for any HDF5 dataset (:mod:`nwb_dask.writer`).
BlockDtypeError
    A block whose computed values its declared dtype cannot store exactly (:mod:`nwb_dask.blocks`).
read_dataset, read_nwb
    HDF5 datasets / NWB files as lazy, distributed-safe dask arrays (:mod:`nwb_dask.reader`).
external_data, LinkMismatchError, audit_links
    Link or copy a dataset of another file, checked; audit links (:mod:`nwb_dask.links`).
join_segments, join_timeseries, SegmentError
    Multi-file recordings as virtual datasets or copies (:mod:`nwb_dask.virtual`).
repack, info
    Recompress/rechunk NWB files in parallel, verified (:mod:`nwb_dask.repack`);
    describe a file's storage (:mod:`nwb_dask.info`).
write_nwb_zarr, convert
    NWB-Zarr stores written by every dask worker in parallel; HDF5 <-> Zarr
    conversion (:mod:`nwb_dask.zarr`).
consolidate
    Self-contained copies of files with external data (:mod:`nwb_dask.consolidate`).
StreamWriter, growing
    Live acquisition into growing NWB datasets, SWMR readers, crash-safe
    flushes (:mod:`nwb_dask.live`: also ``follow``, ``open_live``, ``recover``).
synthetic_ephys
    Synthetic ephys-like recordings as dask arrays (:mod:`nwb_dask.synthetic`).
"""

from .atomic import find_partials, remove_partials
from .blocks import BlockDtypeError
from .chunking import ChunkShapeError, guess_chunk_shape, resolve_chunk_shape
from .codecs import Codec, CodecError, available_codecs, codec, codec_from_dataset
from .io import DaskDataIO, NWBDaskIO, write_nwb
from .consolidate import consolidate
from .info import info
from .iterators import DaskDataChunkIterator
from .links import LinkMismatchError, audit_links, external_data
from .live import StreamWriter, growing
from .reader import read_dataset, read_nwb
from .repack import repack
from .writer import WriteError, WriteStats, write_dask_array
from .synthetic import synthetic_ephys
from .virtual import SegmentError, join_segments, join_timeseries
from .zarr import convert, write_nwb_zarr

__all__ = [
    "BlockDtypeError",
    "ChunkShapeError",
    "Codec",
    "CodecError",
    "DaskDataChunkIterator",
    "DaskDataIO",
    "LinkMismatchError",
    "NWBDaskIO",
    "SegmentError",
    "StreamWriter",
    "WriteError",
    "WriteStats",
    "audit_links",
    "available_codecs",
    "codec",
    "codec_from_dataset",
    "consolidate",
    "convert",
    "external_data",
    "find_partials",
    "growing",
    "guess_chunk_shape",
    "info",
    "join_segments",
    "join_timeseries",
    "read_dataset",
    "read_nwb",
    "remove_partials",
    "repack",
    "resolve_chunk_shape",
    "synthetic_ephys",
    "write_dask_array",
    "write_nwb",
    "write_nwb_zarr",
]
__version__ = "0.1.0"

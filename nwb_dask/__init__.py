"""nwb_dask: a Dask-integrated, out-of-core, parallel-compressing I/O backend for NWB.

The public API is what this module exports; everything else is reached
through its subpackage (see ``docs/architecture.md`` for the layers).

Read and write (HDF5 or Zarr, chosen by the path the same way both ways)
    read_nwb, write_nwb, read_dataset
Drop-in for ``NWBHDF5IO`` and the ``data=`` wrappers
    NWBDaskIO, DaskDataIO, DaskDataChunkIterator, write_dask_array, WriteStats
Codecs (HDF5-exact, registered: :mod:`nwb_dask.codecs`)
    codec, Codec, available_codecs, register_codec
Links, segments, live acquisition
    external_data, audit_links, join_segments, join_timeseries, StreamWriter, growing
Analysis (labelled, lazy arrays; the ``xarray`` extra)
    to_xarray
Tools (verified, atomic)
    repack, convert, consolidate, info, write_nwb_zarr
Errors
    BlockDtypeError, ChunkShapeError, CodecError, LinkMismatchError, SegmentError, WriteError

Elsewhere: chunk shapes in :mod:`nwb_dask.chunking`, leftovers of killed
writers in :mod:`nwb_dask.atomic` (``find_partials``), MPI in
:mod:`nwb_dask.mpi`, synthetic recordings and fixtures in
:mod:`nwb_dask.testing`.
"""

from nwb_dask.api import read_dataset, read_nwb, write_nwb
from nwb_dask.blocks import BlockDtypeError
from nwb_dask.chunking import ChunkShapeError
from nwb_dask.codecs import Codec, CodecError, available_codecs, codec, register_codec
from nwb_dask.hdf5.write import WriteError, WriteStats, write_dask_array
from nwb_dask.live import StreamWriter, growing
from nwb_dask.nwb.dataio import DaskDataIO
from nwb_dask.nwb.io import NWBDaskIO
from nwb_dask.nwb.iterators import DaskDataChunkIterator
from nwb_dask.nwb.labelled import to_xarray
from nwb_dask.nwb.links import LinkMismatchError, audit_links, external_data
from nwb_dask.nwb.virtual import SegmentError, join_segments, join_timeseries
from nwb_dask.tools.consolidate import consolidate
from nwb_dask.tools.convert import convert
from nwb_dask.tools.info import info
from nwb_dask.tools.repack import repack
from nwb_dask.zarr.io import write_nwb_zarr

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
    "consolidate",
    "convert",
    "external_data",
    "growing",
    "info",
    "join_segments",
    "join_timeseries",
    "read_dataset",
    "read_nwb",
    "register_codec",
    "repack",
    "to_xarray",
    "write_dask_array",
    "write_nwb",
    "write_nwb_zarr",
]
from nwb_dask.version import __version__ as __version__  # noqa: E402 - re-exported, outside __all__

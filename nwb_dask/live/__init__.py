"""Streaming writes for live acquisition: growing NWB datasets, SWMR readers, crash-safe flushes.

An acquisition loop calls :meth:`StreamWriter.append` with each block as it
arrives, for several streams at their own rates (say 384-channel ephys at
30 kHz, an analog channel at 1 kHz, and events with timestamps).  The writer

* copies the block into a staging row (the only work done in the caller's
  thread) and, as each row of whole chunks fills, hands it to a thread pool
  that encodes its HDF5 chunks with nwb_dask's codecs (which release the GIL);
* every ``flush_every`` seconds, or when ``flush_bytes`` are waiting, a writer
  thread makes everything appended so far durable: it grows the datasets,
  stores the encoded chunks (and the partial last chunk of each stream) with
  HDF5 direct chunk writes, flushes HDF5's metadata and ``fsync``\\ s;
* bounds the bytes not yet flushed by ``max_pending_bytes``: an ``append``
  beyond it waits (``on_overrun="block"``) or raises
  :class:`StreamOverrunError` (``"raise"``).  Data are never dropped.

The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, so
other processes can open it while it grows (:func:`open_live`,
:func:`follow`) and see every sample up to the last flush.  SWMR also orders
HDF5's metadata writes so that a writer killed at any moment (``SIGKILL``,
power loss after an ``fsync``) leaves a file holding every sample up to its
last completed flush.  A file whose writer died still carries HDF5's "open
for writing" mark: SWMR readers open it as it is, and :func:`recover` (the
``h5clear -s`` of HDF5's tools) clears the mark so that every HDF5 reader does.

HDF5's SWMR rules, which shape this package (see docs/live.md):

* every group, dataset and attribute exists before SWMR writing starts, so the
  whole NWB structure is written by pynwb first (under a temporary name, then
  renamed into place); afterwards only dataset extents and contents change;
* growing datasets are chunked with an unlimited time axis;
* chunk space superseded by a rewrite is never reused (a reader may still be
  reading it), so re-storing a partial last chunk at each flush costs its size
  once; automatic chunk shapes keep this to a few percent (``stats``).

The package, one job per module (docs/live.md, "Inside the live writer"):

* :mod:`nwb_dask.live.datasets`: :func:`growing` / :class:`GrowingData`, their
  chunk shapes, and finding them in an NWBFile;
* :mod:`nwb_dask.live.columns`: each growing dataset's staging row, the encoding
  of rows into chunks (the engine's ``encode_block``) and the storing of chunks;
* :mod:`nwb_dask.live.writer`: :class:`StreamWriter` (open, append, flush, close);
* :mod:`nwb_dask.live.readers`: SWMR readers, :func:`open_live` and :func:`follow`;
* :mod:`nwb_dask.live.recovery`: :func:`recover` and the writer's lock.
"""

from nwb_dask.live.datasets import GrowingData, growing
from nwb_dask.live.readers import follow, open_live
from nwb_dask.live.recovery import recover
from nwb_dask.live.writer import (
    DEFAULT_FLUSH_BYTES,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_PENDING_BYTES,
    LIBVER,
    FlushInfo,
    StreamError,
    StreamOverrunError,
    StreamStats,
    StreamWriter,
)

__all__ = [
    "DEFAULT_FLUSH_BYTES",
    "DEFAULT_FLUSH_SECONDS",
    "DEFAULT_MAX_PENDING_BYTES",
    "LIBVER",
    "FlushInfo",
    "GrowingData",
    "StreamError",
    "StreamOverrunError",
    "StreamStats",
    "StreamWriter",
    "follow",
    "growing",
    "open_live",
    "recover",
]

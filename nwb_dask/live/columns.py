"""Per-dataset state of a live writer: staging rows, encoding them into chunks, and what each flush stores.

A stream (one pynwb time series) has one or two :class:`Column` objects, its
growing ``data`` and ``timestamps``.  A column copies appended samples into a
staging row one chunk tall; a full row is encoded into HDF5 chunks by
:func:`encode_rows` (the engine's :func:`~nwb_dask.engine.encode_block`, in the
writer's thread pool); the partial last row is encoded again at each flush,
and :meth:`Column.store` writes chunks with HDF5 direct chunk writes, skipping
a partial chunk whose bytes did not change since the last flush.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from nwb_dask.blocks import checked_block
from nwb_dask.codecs import other_encodings
from nwb_dask.engine import encode_block
from nwb_dask.live.datasets import GrowingData

__all__ = ["Column", "Stream", "encode_rows", "index_streams", "make_streams", "resize_encoding"]


class Column:
    """One growing dataset of a stream: staging row, encoded rows waiting for a flush."""

    def __init__(self, stream: str, path: str, spec: GrowingData):
        self.stream, self.path = stream, path
        self.dtype = spec.dtype
        self.trailing = spec.trailing_shape
        self.codec = spec.codec
        self.chunk_shape = spec.chunk_shape
        self.rows = self.chunk_shape[0]
        self.fill = 0
        self.row_bytes = int(np.prod(self.trailing, dtype=np.int64)) * self.dtype.itemsize
        self.free: deque = deque(maxlen=8)  # encoded rows' buffers, reused (fresh pages are slow to touch)
        self.staged = self.new_buffer()
        self.filled = 0  # samples in ``staged``
        self.row_index = 0  # index of the row being staged
        self.tail_sizes: dict[tuple, tuple[int, bytes]] = {}  # chunk offset -> (size, digest) of a partial copy
        self.last_tail = (0, 0)  # (row, samples) of the partial row last flushed

    def new_buffer(self) -> np.ndarray:
        try:
            return self.free.pop()
        except IndexError:
            return np.empty((self.rows, *self.trailing), self.dtype)

    def selection(self, row: int, n: int) -> tuple[slice, ...]:
        start = row * self.rows
        return (slice(start, start + n), *(slice(0, s) for s in self.trailing))

    def stage(self, values: np.ndarray, encode: Callable[["Column", int, np.ndarray], None]) -> None:
        """Copy ``values`` into the staging row; call ``encode(self, row, block)`` on each row that fills.

        The writer calls it with its lock held; the full row's buffer then
        belongs to the encoder (:func:`encode_rows` with ``recycle=True`` gives it back).
        """
        i, n = 0, values.shape[0]
        while i < n:
            take = min(n - i, self.rows - self.filled)
            self.staged[self.filled:self.filled + take] = values[i:i + take]
            self.filled += take
            i += take
            if self.filled == self.rows:
                row, block = self.row_index, self.staged
                encode(self, row, block)
                self.staged, self.filled, self.row_index = self.new_buffer(), 0, row + 1

    def take_tail(self) -> tuple[int, np.ndarray] | None:
        """A copy of the partial row, if it changed since the last call (with the writer's lock held)."""
        if not self.filled or (self.row_index, self.filled) == self.last_tail:
            return None
        self.last_tail = (self.row_index, self.filled)
        return self.row_index, self.staged[:self.filled].copy()

    def store(self, dset, chunks: list, partial: bool, superseded: Callable[[int], None]) -> int:
        """Write encoded chunks into ``dset`` (direct chunk writes); returns the bytes stored.

        A chunk of a partial row rewritten with the same bytes is skipped; one
        replacing an older partial copy reports that copy's size to
        ``superseded`` (HDF5 in SWMR mode never reuses its space).
        """
        stored = 0
        for offset, mask, data in chunks:
            old = self.tail_sizes.pop(offset, None)
            if old is not None:
                if partial and hashlib.blake2b(data).digest() == old[1]:
                    self.tail_sizes[offset] = old  # the stored copy already holds these bytes
                    continue
                superseded(old[0])
                if len(data) == old[0] and self.codec.name != "none":
                    data = resize_encoding(self, offset, data)
            dset.id.write_direct_chunk(offset, data, mask)
            stored += len(data)
            if partial:
                self.tail_sizes[offset] = (len(data), hashlib.blake2b(data).digest())
        return stored


def encode_rows(column: Column, row: int, block: np.ndarray, recycle: bool = False):
    """Encode one row (full or partial) of a column into ``(offset, filter_mask, bytes)`` chunks."""
    chunks = encode_block(block, column.selection(row, block.shape[0]), column.chunk_shape, column.codec, column.fill)
    if recycle:  # Codec.encode returns new bytes, never views of the block
        column.free.append(block)
    return chunks


def resize_encoding(col: Column, offset: tuple, data: bytes) -> bytes:
    """Re-encode a chunk whose stored size equals its partial copy's.

    HDF5 rewrites a same-size chunk in place; a crash in the middle would tear
    the copy the last flush made durable.  Another compression level decodes
    the same and almost always changes the size, so the new copy goes elsewhere.
    """
    raw = col.codec.decode(data, col.dtype, col.chunk_shape)
    for other in other_encodings(col.codec, np.ascontiguousarray(raw)):
        if len(other) != len(data):
            return other
    print(f"nwb_dask.live: chunk {offset} of {col.path} is rewritten in place (same stored size); "
          "a crash during this write could damage it", file=sys.stderr)
    return data


@dataclass(eq=False)  # hashed by identity
class Stream:
    """One pynwb time series being appended to: its columns and sample counts."""

    name: str
    path: str
    data: Column
    timestamps: Column | None
    key: str = ""  # the name when unique in the file, else the path: keys of streams/flushed/stats
    samples: int = 0
    flushed: int = 0
    last_time: float = -math.inf

    @property
    def columns(self) -> list[Column]:
        return [self.data] + ([self.timestamps] if self.timestamps is not None else [])

    def checked(self, col: Column, values: Any, what: str) -> np.ndarray:
        """``values`` as samples of ``col`` (one sample or ``(n, *sample_shape)``) in its dtype, or an error."""
        arr = values if isinstance(values, np.ma.MaskedArray) else np.asarray(values)  # masks: refused below
        if arr.ndim == len(col.trailing):  # one sample
            arr = arr[np.newaxis]
        if arr.shape[1:] != col.trailing:
            raise ValueError(f"stream {self.name!r}: {what} of shape {arr.shape} do not match the sample shape "
                             f"{col.trailing} (expected (n, {', '.join(map(str, col.trailing))}))".replace(", )", ")"))
        # the rule of every write path (nwb_dask.blocks): converted when every value survives, else refused
        selection = (slice(self.samples, self.samples + arr.shape[0]), *(slice(0, t) for t in col.trailing))
        return checked_block(arr, col.dtype, label=f"stream {self.name!r}", what=what, selection=selection)

    def checked_timestamps(self, timestamps: Any, n: int) -> np.ndarray:
        """Timestamps for ``n`` samples: the right dtype and count, non-decreasing from the last appended."""
        timestamps = self.checked(self.timestamps, timestamps, "timestamps")
        if timestamps.shape[0] != n:
            raise ValueError(f"stream {self.name!r}: {n} samples but {timestamps.shape[0]} timestamps")
        if n and (np.any(np.diff(timestamps.astype(np.float64)) < 0) or float(timestamps[0]) < self.last_time):
            raise ValueError(f"stream {self.name!r}: timestamps go backwards "
                             f"(last appended {self.last_time}, got {timestamps[:3]}...)")
        return timestamps


def make_streams(found: list[tuple[Any, dict[str, GrowingData]]], paths: dict[int, str]) -> list[Stream]:
    """The streams of the growing fields ``found`` (:func:`~nwb_dask.live.datasets.growing_fields`) at ``paths``."""
    streams = []
    for container, fields in found:
        cols = {k: Column(container.name, paths[id(spec)], spec) for k, spec in fields.items()}
        group = paths[id(fields["data"])].rsplit("/", 1)[0]
        streams.append(Stream(container.name, group, cols["data"], cols.get("timestamps")))
    return streams


def index_streams(streams: list[Stream]) -> dict[str, Stream]:
    """Each stream by its path (with and without the leading ``/``) and by its name when that is unique.

    Also sets each stream's ``key``: its name when unique in the file, else its path.
    """
    index: dict[str, Stream] = {}
    names = [s.name for s in streams]
    for s in streams:
        index[s.path] = index[s.path.lstrip("/")] = s
        s.key = s.name if names.count(s.name) == 1 else s.path.lstrip("/")
        if names.count(s.name) == 1:
            index[s.name] = s
    return index

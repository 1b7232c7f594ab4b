"""The ``data=`` wrappers nwb_dask's writer recognises: dask arrays, links to other files, joined segments.

:class:`DaskDataIO` (a dask array with codec and chunk options),
:class:`LinkedData` (a dataset of another file, written as an external link)
and :class:`VirtualData` (segments joined as a virtual dataset) are all
``H5DataIO`` objects, so plain ``NWBHDF5IO`` writes them too.  They hold no
writing logic: :class:`nwb_dask.nwb.io.NWBDaskIO` does.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from hdmf.backends.hdf5 import H5DataIO

from nwb_dask.chunking import DEFAULT_BLOCK_BYTES, DEFAULT_CHUNK_BYTES, ChunksArg
from nwb_dask.compat import vds_escape
from nwb_dask.codecs import Codec, CodecSpec, codec as make_codec
from nwb_dask.nwb.iterators import DaskDataChunkIterator

__all__ = ["DaskDataIO", "LinkedData", "OnMismatch", "VirtualData"]


class DaskDataIO(H5DataIO):
    """A dask array with codec and chunk options, usable as ``data=`` in pynwb.

    Parameters
    ----------
    array : dask.array.Array
        The data.
    codec : codec spec
        Compression (default ``"gzip"``: level 4 + shuffle, readable by any
        HDF5 reader); see :func:`nwb_dask.codec`.
    chunks : "auto" or tuple of int
        HDF5 chunk shape (see :mod:`nwb_dask.chunking`).
    block_bytes : int
        Largest block computed at once (one dask task's output).
    chunk_bytes : int
        Target chunk size when ``chunks="auto"``.
    name : str, optional
        Dataset name for error messages (e.g. a chunk shape that does not fit
        the data: :class:`~nwb_dask.chunking.ChunkShapeError`).
    **h5dataio_kwargs
        Other ``H5DataIO`` options (e.g. ``fillvalue``).

    Notes
    -----
    A ``DaskDataIO`` is an ``H5DataIO`` wrapping a
    :class:`~nwb_dask.iterators.DaskDataChunkIterator`, so plain
    ``NWBHDF5IO`` writes it too (serially); :class:`NWBDaskIO` writes it in
    parallel.
    """

    def __init__(
        self,
        array,
        codec: CodecSpec = "gzip",
        chunks: ChunksArg = "auto",
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        name: str | None = None,
        **h5dataio_kwargs: Any,
    ):
        self.codec: Codec = make_codec(codec)
        iterator = DaskDataChunkIterator(array, chunks, block_bytes, chunk_bytes=chunk_bytes, name=name)
        kwargs = self.codec.h5dataio_kwargs()
        kwargs.update(h5dataio_kwargs)
        iterator.codec = self.codec  # encode with this codec (e.g. its deflate engine)
        super().__init__(data=iterator, chunks=iterator.chunk_shape, **kwargs)
        #: The chunk shape is nwb_dask's guess at the default target (NWBDaskIO(cloud=True) may re-choose it).
        self.default_chunks = (chunks is None or isinstance(chunks, str) or chunks is True) \
            and chunk_bytes == DEFAULT_CHUNK_BYTES

    def retarget_chunks(self, chunk_bytes: int) -> bool:
        """Re-choose a default ("auto", default ``chunk_bytes``) chunk shape for ``chunk_bytes``; False if it was given.

        Used by :class:`~nwb_dask.nwb.io.NWBDaskIO` with ``cloud=True`` before
        hdmf creates the dataset; a shape or ``chunk_bytes`` the user gave is kept.
        """
        if not self.default_chunks or isinstance(self, VirtualData):
            return False
        it = self.data
        it.__init__(it.source, "auto", it.block_bytes, chunk_bytes=chunk_bytes, name=it.name)  # same object: hdmf's
        it.codec = self.codec
        self.io_settings["chunks"] = it.chunk_shape
        self.default_chunks = False
        return True

    @property
    def array(self):
        """The dask array (as given)."""
        return self.data.source


OnMismatch = Literal["raise", "warn", "ignore"]


ON_MISMATCH = ("raise", "warn", "ignore")


class LinkedData(H5DataIO):
    """A dataset of another HDF5/NWB file, to be written as an external link.

    Usable as ``data=`` in pynwb containers.  Made by
    :func:`external_data` (``mode="link"``); keeps the source file open
    (read-only) until it is garbage collected.

    Attributes
    ----------
    on_mismatch : {"raise", "warn", "ignore"}
    shape : tuple or None
        Expected shape (``None`` entries match any extent).
    dtype : numpy.dtype or None
        Expected dtype.
    """

    def __init__(self, dataset, *, on_mismatch: OnMismatch = "raise", shape=None, dtype=None):
        super().__init__(data=dataset, link_data=True)
        self.on_mismatch = on_mismatch
        self.shape_expected = None if shape is None else tuple(shape)
        self.dtype_expected = None if dtype is None else np.dtype(dtype)


class VirtualData(DaskDataIO):
    """Segments joined along an axis, written by :class:`~nwb_dask.io.NWBDaskIO` as a virtual dataset.

    A :class:`~nwb_dask.io.DaskDataIO` over the lazily concatenated segments
    (so any writer that does not know virtual datasets writes a copy), plus
    the sources to lay out.

    Attributes
    ----------
    sources : list of (str, str, tuple)
        Absolute file path, dataset path and shape of each segment, in order.
    axis : int
        The axis the segments are joined along.
    fillvalue : scalar or None
        Fill value of the virtual dataset (default: the first source's).
    """

    def __init__(self, array, sources: list[tuple[str, str, tuple]], axis: int, fillvalue=None):
        super().__init__(array)
        self.sources = sources
        self.axis = axis
        self.fillvalue = fillvalue

    def create(self, parent, name: str):
        """Create the virtual dataset ``parent[name]``, sources relative to ``parent``'s file.

        Parameters
        ----------
        parent : h5py.Group
        name : str

        Returns
        -------
        h5py.Dataset
        """
        import h5py

        shape, dtype = self.array.shape, self.array.dtype
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        here = os.path.dirname(os.path.abspath(parent.file.filename))
        start = 0
        for path, dname, sshape in self.sources:
            stop = start + sshape[self.axis]
            index = tuple(slice(start, stop) if a == self.axis else slice(None) for a in range(len(shape)))
            relative = vds_escape(os.path.relpath(path, here))  # HDF5 reads "%" in source names like printf
            layout[index] = h5py.VirtualSource(relative, dname, shape=sshape, dtype=dtype)
            start = stop
        return parent.create_virtual_dataset(name, layout, fillvalue=self.fillvalue)

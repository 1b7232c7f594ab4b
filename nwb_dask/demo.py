"""``nwb-dask demo``: write a synthetic out-of-core recording to NWB, read it back, check it.

The recording is a lazy dask array (384-channel int16, ephys-like; about
23 MB per second of recording, 1.5 GB by default) that never exists in memory
as a whole.  It is written to an NWB file as an ElectricalSeries by the
parallel writer (:func:`~nwb_dask.nwb.io.write_nwb`: chunks computed and compressed
on the dask workers, stored with direct chunk writes); then the file is
reopened with plain pynwb and every block is compared with the regenerated
source.  For comparison, a slice of the same data is written the serial way
(plain ``pynwb.NWBHDF5IO`` through hdmf's ``H5DataIO``) and both throughputs
are printed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nwb_dask.atomic import partial_path
from nwb_dask.chunking import DEFAULT_BLOCK_BYTES
from nwb_dask.codecs import CodecSpec, codec
from nwb_dask.compat import vds_unescape
from nwb_dask.errors import VerificationError
from nwb_dask.engine import use_scheduler

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo measured."""

    path: str
    shape: tuple[int, int]
    logical_bytes: int
    stored_bytes: int
    file_bytes: int
    write_seconds: float
    verify_seconds: float
    chunk_shape: tuple[int, ...]
    codec: str
    scheduler: str
    serial_bytes: int = 0
    serial_seconds: float = 0.0
    #: Part files of a sharded write (``shards=``; 0: one self-contained file).
    parts: int = 0

    @property
    def ratio(self) -> float:
        """Compression ratio: logical bytes / stored bytes of the dataset."""
        return self.logical_bytes / max(1, self.stored_bytes)

    @property
    def write_mb_s(self) -> float:
        return self.logical_bytes / 1e6 / self.write_seconds

    @property
    def serial_mb_s(self) -> float:
        return self.serial_bytes / 1e6 / self.serial_seconds if self.serial_seconds else float("nan")

    def report(self) -> str:
        """A human-readable summary."""
        gb = self.logical_bytes / 1e9
        serial = []
        if self.serial_seconds:
            serial = [
                f"serial pynwb {self.serial_mb_s:.1f} MB/s on a {self.serial_bytes / 1e6:.0f} MB slice "
                f"(NWBHDF5IO + H5DataIO, same filters): nwb_dask is {self.write_mb_s / self.serial_mb_s:.1f}x faster"
            ]
        return "\n".join(
            [
                f"file         {self.path}",
                f"data         {self.shape[0]} samples x {self.shape[1]} channels int16 ({gb:.2f} GB)",
                f"codec        {self.codec}, chunks {self.chunk_shape}, scheduler {self.scheduler}",
                f"size         {self.file_bytes / 1e6:.1f} MB on disk (dataset {self.stored_bytes / 1e6:.1f} MB)"
                + (f", the dataset in {self.parts} part files in {self.path}.parts" if self.parts else ""),
                f"ratio        {self.ratio:.3f}",
                f"write        {self.write_seconds:.1f} s, {self.write_mb_s:.1f} MB/s",
                f"verify       {self.verify_seconds:.1f} s: read back with pynwb, identical to the source",
            ]
            + serial
        )


def run_demo(
    seconds: float = 65.0,
    path: str | os.PathLike | None = None,
    codec_spec: CodecSpec = "gzip",
    scheduler: str = "local",
    workers: int | None = None,
    progress: bool = True,
    serial_seconds: float = 5.0,
    overwrite: bool = False,
    scheduler_file: str | os.PathLike | None = None,
    shards: int | str | None = None,
) -> DemoResult:
    """Write with the parallel writer, reopen and verify a synthetic recording.

    Parameters
    ----------
    seconds : float
        Recording length (384 channels at 30 kHz: 23 MB per second).
    path : path, optional
        Output NWB file; a file in a temporary directory (deleted afterwards)
        when omitted.
    codec_spec : codec spec
        Compression, e.g. ``"gzip"`` or ``("zstd", {"level": 3})``.
    scheduler : {"local", "threads", "processes", "sync"} or an address
        ``"local"`` starts a ``distributed.LocalCluster`` of processes; an
        address (``tcp://HOST:PORT``) uses a running cluster
        (:func:`nwb_dask.engine.use_scheduler`).
    workers : int, optional
        Number of workers (default: all cores).
    progress : bool
        Show progress bars.
    serial_seconds : float
        Length of the slice written the serial pynwb way for comparison
        (0 to skip).
    overwrite : bool
        Replace ``path`` if it exists (otherwise a ``FileExistsError``).
    scheduler_file : path, optional
        Use the running cluster whose scheduler wrote this file.
    shards : "workers", int or None
        Write the recording sharded: each worker stores its share in its own
        part file under ``<path>.parts`` and the NWB file holds a virtual
        dataset over them (docs/cluster.md); pynwb reads the pair as one.

    Returns
    -------
    DemoResult

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    nwb_dask.errors.VerificationError
        The file read back differs from the source.
    """
    from pynwb import NWBHDF5IO

    from nwb_dask.nwb.dataio import DaskDataIO
    from nwb_dask.nwb.io import write_nwb
    from nwb_dask.nwb.shards import parts_dir
    from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

    c = codec(codec_spec)
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if path is not None and os.path.isdir(path):
        raise IsADirectoryError(f"{os.fspath(path)} is a directory; give the path of the NWB file to write")
    if path is not None and os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{os.fspath(path)} exists; pass overwrite=True (--overwrite) to replace it")
    with contextlib.ExitStack() as stack:
        if path is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="nwb_dask_demo_"))
            path = os.path.join(tmp, "demo.nwb")
        path = os.fspath(path)
        stack.enter_context(use_scheduler(scheduler, workers, scheduler_file=scheduler_file))
        arr = synthetic_ephys(seconds=seconds, seed=2026)
        data = DaskDataIO(arr, codec=c, block_bytes=DEFAULT_BLOCK_BYTES)
        stats = write_nwb(ephys_nwbfile(data), path, progress=progress, shards=shards)

        t0 = time.perf_counter()
        parts = parts_dir(path) if shards is not None else None
        try:
            with NWBHDF5IO(path, "r") as io:
                dset = io.read().acquisition["ElectricalSeries"].data
                stored, n_parts = _stored(dset, parts)
                _verify(dset, data.data.array, progress)
        except BaseException as exc:  # a file that failed (or did not finish) its check is not left behind
            dset = None
            if os.path.exists(path):
                os.remove(path)
            if parts is not None and parts.is_dir():
                shutil.rmtree(parts)
            if isinstance(exc, VerificationError):
                exc.add_note(f"nwb_dask: {path} was removed" + (f" with {parts}" if parts is not None else ""))
            raise
        verify_s = time.perf_counter() - t0

        serial_bytes, serial_s = 0, 0.0
        if serial_seconds > 0:
            serial_bytes, serial_s = _serial_write(arr, c, serial_seconds, os.path.dirname(path) or ".")
        return DemoResult(
            path=path,
            shape=tuple(arr.shape),
            logical_bytes=int(arr.nbytes),
            stored_bytes=int(stored),
            file_bytes=os.path.getsize(path) + (_tree_bytes(parts) if parts is not None else 0),
            write_seconds=stats.seconds,
            verify_seconds=verify_s,
            chunk_shape=tuple(data.data.chunk_shape),
            codec=c.label,
            scheduler=scheduler if scheduler_file is None else f"the cluster of {os.fspath(scheduler_file)}",
            serial_bytes=serial_bytes,
            serial_seconds=serial_s,
            parts=n_parts,
        )


def _stored(dset, parts: Path | None) -> tuple[int, int]:
    """Stored bytes of the recording and its number of part files (a virtual dataset stores nothing itself)."""
    import h5py

    if not dset.is_virtual:
        return int(dset.id.get_storage_size()), 0
    folder = os.path.dirname(os.path.abspath(dset.file.filename))
    sources = sorted({(os.path.join(folder, vds_unescape(m.file_name)), m.dset_name) for m in dset.virtual_sources()})
    stored = 0
    for name, inner in sources:
        with h5py.File(name, "r") as f:
            stored += f[inner].id.get_storage_size()
    return stored, len({name for name, _ in sources})


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _serial_write(arr, c, seconds: float, folder: str) -> tuple[int, float]:
    """Time plain pynwb (hdmf's serial filter pipeline) on the first ``seconds`` of ``arr``."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO

    from nwb_dask.nwb.iterators import DaskDataChunkIterator
    from nwb_dask.testing import ephys_nwbfile

    part = arr[: min(arr.shape[0], int(seconds * 30_000))]
    path = os.fspath(partial_path(Path(folder) / "serial.nwb"))  # a name `nwb-dask clean` finds after a SIGKILL
    try:
        nwbfile = ephys_nwbfile(H5DataIO(DaskDataChunkIterator(part), **c.h5dataio_kwargs()))
        t0 = time.perf_counter()
        with NWBHDF5IO(path, "w") as io:
            io.write(nwbfile)
        return int(part.nbytes), time.perf_counter() - t0
    finally:
        if os.path.exists(path):
            os.remove(path)


def _verify(dset, source, progress: bool) -> None:
    """Compare a stored dataset with a dask array block by block (bounded memory)."""
    from tqdm.auto import tqdm

    if tuple(dset.shape) != tuple(source.shape) or dset.dtype != source.dtype:
        raise VerificationError(f"{dset.file.filename}: stored {dset.shape} {dset.dtype} != source {source.shape} "
                                f"{source.dtype}")
    edges = np.cumsum((0,) + source.chunks[0])
    bar = tqdm(total=len(edges) - 1, desc="verify", leave=False, disable=not progress)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        expected = source.blocks[i].compute()
        if not np.array_equal(dset[a:b], expected):
            raise VerificationError(f"{dset.file.filename}: samples {a}:{b} differ between the file and the source")
        bar.update()
    bar.close()

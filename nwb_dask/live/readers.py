"""SWMR readers of a growing live file: :func:`open_live` and :func:`follow`.

Another process opens the file while its writer appends (HDF5's single-writer /
multiple-reader mode) and sees every sample up to the writer's last flush.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["follow", "open_live"]


def open_live(path: str | os.PathLike):
    """Open a growing (or crashed) live file read-only in SWMR mode; returns an ``h5py.File``.

    Call ``dset.refresh()`` before reading a dataset's new extent.  The file may
    also be handed to pynwb: ``NWBHDF5IO(file=open_live(path), mode="r")``.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise OSError(f"{path}: cannot open for SWMR reading ({exc}); it may not be a live (HDF5 1.10+) file") from exc


def follow(
    path: str | os.PathLike,
    dataset: str,
    *,
    start: int = 0,
    poll: float = 0.05,
    idle_timeout: float | None = 10.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Follow a growing dataset from another process: yield ``(first_index, new_samples)`` as they appear.

    Parameters
    ----------
    path : str or Path
        The live file.
    dataset : str
        HDF5 path, e.g. ``"acquisition/ephys/data"`` (``StreamWriter.dataset_path``).
    start : int
        First sample to yield.
    poll : float
        Seconds between looks at the file.
    idle_timeout : float or None
        Stop after this many seconds without new samples (``None``: never).
    """
    with open_live(path) as f:
        try:
            dset = f[dataset]
        except KeyError:
            raise KeyError(f"{path}: no dataset {dataset!r}") from None
        pos, last = start, time.monotonic()
        while True:
            dset.refresh()
            n = dset.shape[0]
            if n > pos:
                yield pos, dset[pos:n]
                pos, last = n, time.monotonic()
                continue
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
            time.sleep(poll)

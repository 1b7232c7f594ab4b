"""A job for tests/test_mpi.py, run under ``mpiexec -n N python tests/mpi_job.py KIND OUT [MODE]``.

KIND:
  nwb      an NWBFile with a DaskDataIO ElectricalSeries (synthetic, 2 s x 64 ch)
  mapping  two datasets from a mapping: a dask array and a numpy memmap
  fail     like mapping, but the ranks other than 0 raise while computing blocks
  stall    like mapping, but the ranks other than 0 never finish a block (timeout 5 s)
  dtype_exact, dtype_lossy
           one dataset /x declaring int16 whose blocks compute float64 (tests/test_block_dtype.py):
           integral values, or one value 0.5 at [7777, 2]
"""

from __future__ import annotations

import sys
import time

import dask.array as da
import numpy as np
from mpi4py import MPI

import nwb_dask
import nwb_dask.mpi
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys


def mapping_data(out: str) -> dict:
    """A dask array and a numpy memmap (rank 0 creates the memmap file, the others open it)."""
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        ramp = np.lib.format.open_memmap(out + ".ramp.npy", mode="w+", dtype="f4", shape=(50_000, 7))
        ramp[:] = np.arange(350_000, dtype="f4").reshape(50_000, 7)
        ramp.flush()
    comm.Barrier()
    ramp = np.lib.format.open_memmap(out + ".ramp.npy", mode="r")
    return {"/ephys/data": synthetic_ephys(seconds=2, n_channels=64, seed=5), "/other/ramp": ramp}


def sabotage(array, kind: str):
    """The array, except that every block misbehaves on the ranks other than 0.

    Blocks are handed out dynamically (funnel) or round-robin (collective), so
    which block a rank computes varies; every rank but 0 computes some.
    """
    rank = MPI.COMM_WORLD.rank

    def block(b):
        if rank != 0:
            if kind == "fail":
                raise ValueError(f"synthetic failure on rank {rank}")
            time.sleep(3600)
        return b

    return array.map_blocks(block, dtype=array.dtype)


def main() -> None:
    kind, out = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "auto"
    comm = MPI.COMM_WORLD
    if kind == "nwb":
        data = ephys_nwbfile(nwb_dask.DaskDataIO(synthetic_ephys(seconds=2, n_channels=64, seed=4), codec="gzip"))
        nwb_dask.mpi.write(data, out, mode=mode)
        if comm.rank == 0:  # the containers name the file written, never its temporary (as NWBHDF5IO)
            import os

            sources = {c.container_source for c in data.objects.values()}
            assert sources == {os.path.abspath(out)}, sources
        return
    if kind.startswith("dtype_"):
        values = (np.arange(40_000).reshape(10_000, 4) % 1000).astype("f8")
        if kind == "dtype_lossy":
            values[7777, 2] = 0.5
        x = da.from_array(values, chunks=(2000, 4)).map_blocks(lambda b: b.copy(), dtype="i2")
        nwb_dask.mpi.write({"/x": x}, out, mode=mode, codec="gzip", chunks=(1000, 4), block_bytes=16_000, timeout=60)
        return
    data = mapping_data(out)
    timeout = 600.0
    if kind in ("fail", "stall"):
        data["/ephys/data"] = sabotage(data["/ephys/data"], kind)
        timeout = 5.0
    nwb_dask.mpi.write(data, out, mode=mode, codec="gzip", timeout=timeout)


if __name__ == "__main__":
    main()

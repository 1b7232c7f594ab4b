"""Write a synthetic recording to NWB from MPI ranks, without a Dask cluster.

    mpiexec -n 4 python examples/mpi_write.py [--seconds 20] [--output mpi.nwb] [--mode auto]

Every rank builds the same lazy recording and NWBFile; nwb_dask.mpi.write deals
the chunk-aligned blocks over the ranks, each rank computes and compresses its
own, and rank 0 stores them (funnel mode), or all ranks write collectively
where h5py has parallel HDF5 (collective mode).  Rank 0 then checks the file
with plain pynwb.
"""

import argparse
import time

import numpy as np
from mpi4py import MPI

import nwb_dask
import nwb_dask.mpi
from nwb_dask.synthetic import ephys_nwbfile, synthetic_ephys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="recording length (23 MB per second)")
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--output", default="mpi.nwb")
    ap.add_argument("--mode", default="auto", choices=["auto", "funnel", "collective"])
    ap.add_argument("--codec", default="gzip")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD

    data = synthetic_ephys(seconds=args.seconds, n_channels=args.channels, seed=0)  # lazy, same on every rank
    nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(data, codec=args.codec))
    comm.Barrier()
    t0 = time.perf_counter()
    stats = nwb_dask.mpi.write(nwbfile, args.output, comm=comm, mode=args.mode)
    seconds = time.perf_counter() - t0
    if comm.rank == 0:
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(args.output, "r") as io:
            written = io.read().acquisition["ElectricalSeries"].data
            for start in range(0, data.shape[0], 300_000):
                stop = min(start + 300_000, data.shape[0])
                assert np.array_equal(written[start:stop], data[start:stop].compute()), f"samples {start}:{stop} differ"
        mode = args.mode if args.mode != "auto" else nwb_dask.mpi.available_modes()[-1]
        print(f"{comm.size} rank(s), {mode}: {data.nbytes / 1e6:.0f} MB in {seconds:.2f} s "
              f"({data.nbytes / 1e6 / seconds:.0f} MB/s), stored {stats.stored_bytes / 1e6:.0f} MB; "
              f"verified with pynwb")


if __name__ == "__main__":
    main()

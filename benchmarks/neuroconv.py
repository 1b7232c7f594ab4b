"""neuroconv conversion: NWBHDF5IO vs NWBDaskIO, in the same run.

A mock recording (SpikeInterface's noise generator, int16, 384 channels x 60 s
at 30 kHz: 1.38 GB) goes through neuroconv's own pipeline: the recording
interface builds the NWBFile, ``get_default_backend_configuration`` picks
chunks and gzip 4 (neuroconv's defaults), ``configure_backend`` wraps the
data in neuroconv's ``SpikeInterfaceRecordingDataChunkIterator``.  The same
configured file is then written by ``pynwb.NWBHDF5IO`` (hdmf: serial
``next()`` and HDF5's serial gzip) and by ``nwb_dask.NWBDaskIO``; the two files
are compared element by element, chunks and filters included.  The table
gives each write's peak resident memory (sampled, both writers run in this
process) beside the process's memory before it.

    python benchmarks/neuroconv.py            # 384 ch x 60 s
    python benchmarks/neuroconv.py --quick    # 64 ch x 4 s (tests)
    python benchmarks/neuroconv.py --engines  # deflate engines on this recording's chunks

Needs ``pip install "nwb-dask[neuroconv]"``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the neuroconv package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

SERIES = "acquisition/ElectricalSeries/data"


def mock_interface(channels: int = 384, seconds: float = 60.0, seed: int = 0):
    """neuroconv's MockRecordingInterface, its recording replaced by int16 noise (std 20 counts)."""
    from neuroconv.tools.testing.mock_interfaces import MockRecordingInterface
    from spikeinterface.generation import NoiseGeneratorRecording

    interface = MockRecordingInterface(num_channels=channels, durations=(seconds,), seed=seed)
    recording = NoiseGeneratorRecording(num_channels=channels, sampling_frequency=30000.0, durations=[seconds],
                                        noise_levels=20.0, dtype="float32", seed=seed).astype("int16")
    recording.set_channel_gains(1.0)
    recording.set_channel_offsets(0.0)
    interface.recording_extractor = recording
    return interface


def configured_nwbfile(interface, backend_configuration=None):
    """The interface's NWBFile with neuroconv's backend configuration applied (default: neuroconv's)."""
    from neuroconv.tools.nwb_helpers import configure_backend, get_default_backend_configuration

    metadata = interface.get_metadata()
    nwbfile = interface.create_nwbfile(metadata=metadata)
    config = backend_configuration or get_default_backend_configuration(nwbfile, backend="hdf5")
    configure_backend(nwbfile=nwbfile, backend_configuration=config)
    return nwbfile


def _rss() -> int:
    """This process's resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class PeakRSS:
    """The peak resident set size while a ``with`` block runs, sampled every 10 ms in a thread.

    Both writers run in this one process, so ``ru_maxrss`` (the process's
    lifetime peak) cannot tell them apart; sampling can (it may miss a peak
    shorter than 10 ms).
    """

    def __enter__(self):
        import threading

        self.before = self.peak = _rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, _rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def write(io_class, path: str, interface, **kwargs) -> tuple[float, PeakRSS]:
    """Seconds to write the configured file with ``io_class`` (the source iterated inside), and its peak RSS."""
    import gc

    nwbfile = configured_nwbfile(interface)
    gc.collect()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        with io_class(path, "w", **kwargs) as io:
            io.write(nwbfile)
        seconds = time.perf_counter() - t0
    return seconds, rss


def compare(a: str, b: str, name: str = SERIES) -> None:
    """Same values, chunks and filters in both files (raises AssertionError naming what differs)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        da, db = fa[name], fb[name]
        for prop in ("shape", "dtype", "chunks", "compression", "compression_opts", "shuffle", "fletcher32"):
            assert getattr(da, prop) == getattr(db, prop), f"{name}: {prop} {getattr(da, prop)} != {getattr(db, prop)}"
        step = da.chunks[0] if da.chunks else da.shape[0]
        for lo in range(0, da.shape[0], step):
            assert np.array_equal(da[lo:lo + step], db[lo:lo + step]), f"{name}: values differ in rows {lo}:{lo + step}"


def stored_bytes(path: str, name: str = SERIES) -> int:
    with h5py.File(path, "r") as f:
        return f[name].id.get_storage_size()


def engines(seconds: float = 6.0) -> None:
    """Size (vs zlib at the file's level 4) and one-thread speed of each deflate setting, on 78125 x 64 chunks."""
    import zlib

    import deflate
    from isal import isal_zlib
    from zlib_ng import zlib_ng

    x = mock_interface(384, seconds).recording_extractor.get_traces(start_frame=0, end_frame=156_250)
    chunks = [np.ascontiguousarray(x[i:i + 78_125, j:j + 64]).tobytes() for i in (0, 78_125) for j in range(0, 384, 64)]
    raw = sum(map(len, chunks))
    tries = {"zlib 4": lambda c: zlib.compress(c, 4), "isal 2 (gzip 4)": lambda c: isal_zlib.compress(c, 2),
             "libdeflate 1": lambda c: deflate.zlib_compress(c, 1), "libdeflate 4": lambda c: deflate.zlib_compress(c, 4),
             "zlib-ng 4": lambda c: zlib_ng.compress(c, 4)}
    ref = None
    for name, fn in tries.items():
        t0 = time.perf_counter()
        n = sum(len(fn(c)) for c in chunks)
        dt = time.perf_counter() - t0
        ref = ref or n
        print(f"{name:<16} size {n / ref:.4f}x zlib 4  {raw / dt / 1e6:6.0f} MB/s (one thread)")


def main(argv=None) -> list[dict]:
    import pynwb

    import nwb_dask

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 channels x 4 s")
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--engines", action="store_true", help="only the deflate engines' sizes and speeds")
    args = parser.parse_args(argv)
    if args.engines:
        engines()
        return []
    channels = args.channels or (64 if args.quick else 384)
    seconds = args.seconds or (4.0 if args.quick else 60.0)
    interface = mock_interface(channels, seconds)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        paths = {"NWBHDF5IO": os.path.join(tmp, "hdf5io.nwb"), "NWBDaskIO": os.path.join(tmp, "daskio.nwb")}
        t0 = time.perf_counter()
        it = configured_nwbfile(interface).acquisition["ElectricalSeries"].data.data
        for _ in it:  # the source alone: neuroconv's iterator, serial
            pass
        source = time.perf_counter() - t0
        runs = {"NWBHDF5IO": write(pynwb.NWBHDF5IO, paths["NWBHDF5IO"], interface),
                "NWBDaskIO": write(nwb_dask.NWBDaskIO, paths["NWBDaskIO"], interface)}
        times = {name: run[0] for name, run in runs.items()}
        compare(paths["NWBHDF5IO"], paths["NWBDaskIO"])
        base = times["NWBHDF5IO"]
        with h5py.File(paths["NWBHDF5IO"], "r") as f:
            d = f[SERIES]
            print(f"neuroconv mock recording {d.shape} {d.dtype} ({d.size * d.dtype.itemsize / 1e9:.2f} GB), "
                  f"chunks {d.chunks}, {d.compression} {d.compression_opts}, shuffle {d.shuffle}; "
                  f"{os.cpu_count()} cores; source alone (serial next()): {source:.1f} s")
        zsize = stored_bytes(paths["NWBHDF5IO"])
        print(f"{'writer':<10} {'seconds':>8} {'speed-up':>9} {'file MB':>9} {'data MB':>9} {'size vs zlib':>12} "
              f"{'RSS before MB':>13} {'peak RSS MB':>11}")
        for name, seconds_ in times.items():
            size = os.path.getsize(paths[name])
            data = stored_bytes(paths[name])
            rss = runs[name][1]
            row = {"writer": name, "seconds": seconds_, "speedup": base / seconds_, "file_bytes": size,
                   "data_bytes": data, "size_vs_zlib": data / zsize, "rss_before": rss.before, "peak_rss": rss.peak}
            rows.append(row)
            print(f"{name:<10} {seconds_:8.2f} {base / seconds_:8.2f}x {size / 1e6:9.1f} {data / 1e6:9.1f} "
                  f"{data / zsize:11.4f}x {rss.before / 1e6:13.0f} {rss.peak / 1e6:11.0f}")
        print("values, chunks and filters identical")
    return rows


if __name__ == "__main__":
    main()

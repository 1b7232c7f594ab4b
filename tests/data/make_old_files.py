"""Write the old-pynwb fixtures of tests/test_oldfiles.py (files as older pynwb releases wrote them).

Run this script once in each of these throwaway environments (Python 3.11); it
writes the files of the pynwb it runs under into this directory:

=========  =====  ======  =====  ======  ==================================================
pynwb      NWB    hdmf    numpy  h5py    files
=========  =====  ======  =====  ======  ==================================================
1.5.1      2.3.0  2.5.8   1.26.4 3.16.0  pynwb1.5.1_series.nwb
2.0.1      2.4.0  3.1.1   1.26.4 3.16.0  pynwb2.0.1_electrodes.nwb, pynwb2.0.1_experimental.nwb
2.8.3      2.7.0  3.14.6  2.0.2  3.16.0  pynwb2.8.3_electrodes.nwb
3.0.0      2.8.0  4.3.1   2.4.6  3.16.0  pynwb3.0.0_ecephys384.nwb, pynwb3.0.0_bands.nwb
=========  =====  ======  =====  ======  ==================================================

How the environments were made (the old releases pin numpy/h5py/pandas versions
that have no Python 3.11 wheels, so 1.5.1 and 2.0.1 were installed without their
dependency pins, on the newest versions that still run them)::

    python3 -m venv /tmp/pynwb300 && /tmp/pynwb300/bin/pip install "pynwb==3.0.0"
    python3 -m venv /tmp/pynwb28 && /tmp/pynwb28/bin/pip install "pynwb==2.8.3" "hdmf==3.14.6" "numpy<2.1"
    python3 -m venv /tmp/pynwb20 && /tmp/pynwb20/bin/pip install --no-deps "pynwb==2.0.1" "hdmf==3.1.1" \
        && /tmp/pynwb20/bin/pip install "numpy<2" h5py "pandas<2" scipy ruamel.yaml jsonschema python-dateutil setuptools
    python3 -m venv /tmp/pynwb15 && /tmp/pynwb15/bin/pip install --no-deps "pynwb==1.5.1" "hdmf==2.5.8" \
        && /tmp/pynwb15/bin/pip install "numpy<2" h5py "pandas<2" scipy ruamel.yaml jsonschema python-dateutil setuptools
    for v in 15 20 28 300; do /tmp/pynwb$v/bin/python tests/data/make_old_files.py; done

What each file holds that today's pynwb (4.x, NWB 2.9+) writes differently on export
(the migrations of nwb_dask/migrations.py):

* every file with an electrodes table: the table is an hdmf-common ``DynamicTable``
  (NWB < 2.9); pynwb exports an ``ElectrodesTable`` of ``core``;
* pynwb3.0.0_bands.nwb: a DecompositionSeries' ``bands`` ``DynamicTable`` with a
  description of its own; pynwb exports a ``FrequencyBandsTable``;
* pynwb1.5.1_series.nwb: TimeSeries ``data`` without ``offset`` (NWB < 2.4), an
  ImageSeries with ``external_file`` and no ``data``, an ImageSeries whose data has
  no ``unit``;
* pynwb2.0.1_electrodes.nwb: also a DynamicTable with an ``EnumData`` column
  (hdmf-experimental);
* pynwb2.0.1_experimental.nwb: that file with a ``VectorData`` column named through
  ``hdmf-experimental`` (set with h5py); pynwb exports it in ``hdmf-common``.

Data are small and seeded; the files are about 200-300 KB each, most of it the cached schema.

Two more fixtures are pynwb's own back-compatibility files, copied unchanged from
pynwb's repository (tests/back_compat at commit e938202b; pynwb's license in
PYNWB_LICENSE.txt): back_compat_1.0.2_nwbfile.nwb (NWB 2.0b: a ``help`` attribute,
no object IDs) and back_compat_1.5.1_timeseries_no_unit.nwb (TimeSeries data without
``unit``).
"""

import os
import sys
from datetime import datetime, timezone

import numpy as np
import pynwb
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = pynwb.__version__
rng = np.random.default_rng(15)


def nwbfile(ident: str) -> NWBFile:
    return NWBFile(session_description=f"written by pynwb {VERSION}", identifier=ident,
                   session_start_time=datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc))


def write(f: NWBFile, name: str) -> None:
    path = os.path.join(HERE, f"pynwb{VERSION}_{name}.nwb")
    with NWBHDF5IO(path, "w") as io:
        io.write(f)
    print(path, os.path.getsize(path))


def ecephys(f: NWBFile, channels: int, samples: int):
    """Electrodes (a DynamicTable in these versions) and an ElectricalSeries referring to them."""
    from pynwb.ecephys import ElectricalSeries

    dev = f.create_device(name="probe")
    groups = [f.create_electrode_group(name=f"shank{s}", description="shank", location="CA1", device=dev)
              for s in range(2)]
    for i in range(channels):
        f.add_electrode(x=float(i % 2), y=float(i // 2) * 20.0, z=0.0, imp=float("nan"), location="CA1",
                        filtering="none", group=groups[i * 2 // channels])
    region = f.create_electrode_table_region(list(range(channels)), "all channels")
    data = rng.integers(-2000, 2000, (samples, channels)).astype("int16")
    es = ElectricalSeries(name="ElectricalSeries", data=data, electrodes=region, rate=30000.0, conversion=0.195e-6)
    f.add_acquisition(es)
    return es


def v1():
    from pynwb.image import ImageSeries

    f = nwbfile("pynwb151-series")
    f.add_acquisition(TimeSeries(name="rate_series", data=rng.random((10, 2)), unit="V", rate=10.0))
    f.add_acquisition(TimeSeries(name="stamped_series", data=np.arange(5, dtype="int32"), unit="m",
                                 timestamps=np.linspace(0.0, 1.0, 5)))
    f.add_acquisition(ImageSeries(name="external_movie", external_file=["movie.avi"], starting_frame=[0],
                                  format="external", timestamps=np.linspace(0.0, 1.0, 4)))
    f.add_acquisition(ImageSeries(name="no_unit_movie", data=rng.integers(0, 255, (3, 4, 5)).astype("uint8"),
                                  unit=None, format="raw", rate=2.0))
    write(f, "series")


def v2_0():
    from hdmf.common import DynamicTable, VectorData
    from hdmf.common.table import EnumData

    f = nwbfile("pynwb201-electrodes")
    ecephys(f, 16, 40)
    values = VectorData(name="cell_type_elements", description="cell types", data=["pyramidal", "interneuron"])
    enum = EnumData(name="cell_type", description="cell type", data=np.array([0, 1, 1, 0], dtype="uint8"),
                    elements=values)
    table = DynamicTable(name="cells", description="cells with an enum column", columns=[enum, values],
                         id=list(range(4)))
    mod = f.create_processing_module(name="cells", description="cells")
    mod.add(table)
    write(f, "electrodes")
    experimental_vectordata()


def experimental_vectordata():
    """pynwb2.0.1_experimental.nwb: the electrodes file with its ``x`` column typed through ``hdmf-experimental``.

    Built directly (h5py, on the file pynwb 2.0.1 wrote): hdmf-experimental
    includes hdmf-common, so ``VectorData`` of ``hdmf-experimental`` is the same
    type, as files written through an extension of hdmf-experimental name it.
    """
    import shutil

    import h5py

    src = os.path.join(HERE, f"pynwb{VERSION}_electrodes.nwb")
    path = os.path.join(HERE, f"pynwb{VERSION}_experimental.nwb")
    shutil.copyfile(src, path)
    with h5py.File(path, "r+") as f:
        f["general/extracellular_ephys/electrodes/x"].attrs["namespace"] = "hdmf-experimental"
    print(path, os.path.getsize(path))


def v2_8():
    f = nwbfile("pynwb283-electrodes")
    ecephys(f, 32, 40)
    write(f, "electrodes")


def v3():
    from hdmf.common import DynamicTable
    from pynwb.misc import DecompositionSeries

    f = nwbfile("pynwb300-ecephys384")
    ecephys(f, 384, 30)  # a Neuropixels-like file, short in time
    write(f, "ecephys384")

    f = nwbfile("pynwb300-bands")
    es = ecephys(f, 4, 20)
    bands = DynamicTable(name="bands", description="theta and gamma, Hilbert transform")
    bands.add_column(name="band_name", description="name")
    bands.add_column(name="band_limits", description="limits in Hz")
    for name, limits in [("theta", [4.0, 8.0]), ("gamma", [30.0, 80.0])]:
        bands.add_row(band_name=name, band_limits=limits)
    decomp = DecompositionSeries(name="decomposition", description="band power", data=rng.random((10, 4, 2)),
                                 metric="power", rate=100.0, bands=bands, source_timeseries=es)
    f.create_processing_module(name="ecephys", description="processed").add(decomp)
    write(f, "bands")


if __name__ == "__main__":
    major_minor = tuple(int(v) for v in VERSION.split(".")[:2])
    {(1, 5): v1, (2, 0): v2_0, (2, 8): v2_8, (3, 0): v3}[major_minor]()
    sys.exit(0)

"""nwb_dask.compat against the installed hdmf / hdmf-zarr / pynwb / h5py.

Each function of :mod:`nwb_dask.compat` reaches into an internal of another
package; these tests run each one on real objects of the installed versions
and check its effect through the package's public API, so an internal that
moved or changed meaning fails here, naming the function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import h5py
import numpy as np
import pytest
from hdmf.build import DatasetBuilder, GroupBuilder
from hdmf_zarr.nwb import NWBZarrIO
from pynwb import NWBHDF5IO

from nwb_dask import compat
from nwb_dask.compat import CompatError
from nwb_dask.nwb.io import NWBDaskIO
from nwb_dask.nwb.queue import ParallelDataChunkIteratorQueue

PACKAGE = Path(compat.__file__).parent


def test_set_io_source_changes_what_hdmf_reports(tmp_path):
    path = tmp_path / "a.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        compat.set_io_source(io, "/somewhere/else.nwb")
        assert io.source == "/somewhere/else.nwb"


def test_set_io_source_is_what_containers_get(tmp_path):
    """The source set through compat is the written containers' container_source (hdmf reads it in write)."""
    temp, target = tmp_path / "temp.nwb", str(tmp_path / "target.nwb")
    nwbfile = _tiny_nwbfile()
    with NWBHDF5IO(str(temp), "w") as io:
        compat.set_io_source(io, target)
        io.write(nwbfile)
    assert nwbfile.container_source == target


def test_replace_dci_queue_receives_hdmf_iterators(tmp_path):
    """hdmf puts DataChunkIterator datasets into the queue compat installed, and exhausts that one."""
    from hdmf.data_utils import DataChunkIterator
    from pynwb import TimeSeries

    nwbfile = _tiny_nwbfile()
    nwbfile.add_acquisition(TimeSeries(name="ts", data=DataChunkIterator(data=np.arange(100.0), buffer_size=10),
                                       unit="m", rate=1.0))
    with NWBHDF5IO(str(tmp_path / "q.nwb"), "w") as io:
        queue = ParallelDataChunkIteratorQueue()
        compat.replace_dci_queue(io, queue)
        seen, append = [], queue.append
        queue.append = lambda dataset, data: (seen.append(dataset.name), append(dataset=dataset, data=data))
        io.write(nwbfile)
        assert seen == ["/acquisition/ts/data"]
        assert [d.name for d, _ in queue] == seen  # NWBDaskIO writes what is left in it


def test_mark_written_hdf5(tmp_path):
    with NWBHDF5IO(str(tmp_path / "w.nwb"), "w") as io:
        builder = DatasetBuilder("x", data=np.arange(3), parent=GroupBuilder("root"))
        assert not io.get_written(builder)
        compat.mark_written(io, builder)
        assert io.get_written(builder)


def test_mark_written_zarr(tmp_path):
    with NWBZarrIO(str(tmp_path / "w.nwb.zarr"), "w") as io:
        builder = DatasetBuilder("x", data=np.arange(3), parent=GroupBuilder("root"))
        assert not io.get_written(builder)
        compat.mark_written(io, builder)
        assert io.get_written(builder)


def test_h5io_file_is_the_open_file(tmp_path):
    path = tmp_path / "f.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        f = compat.h5io_file(io)
        assert isinstance(f, h5py.File) and Path(f.filename) == path and bool(f.id.valid)


def test_zarr_object_codec_round_trip(tmp_path):
    import numcodecs

    with NWBZarrIO(str(tmp_path / "c.nwb.zarr"), "w") as io:
        assert compat.zarr_object_codec(io) is numcodecs.pickles.Pickle  # hdmf-zarr's default
        compat.set_zarr_object_codec(io, numcodecs.JSON)
        assert compat.zarr_object_codec(io) is numcodecs.JSON
        assert io.object_codec_class is numcodecs.JSON


def test_dataset_filters_and_xfer_plist(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        d = f.create_dataset("a", data=np.arange(100), chunks=(10,), compression="gzip", compression_opts=5,
                             shuffle=True)
        assert list(compat.dataset_filters(d).items()) == [("shuffle", (8,)), ("gzip", 5)]  # pipeline order
        assert isinstance(compat.dataset_xfer_plist(d), h5py.h5p.PropDXID)
        assert compat.dataset_filters(f.create_dataset("b", data=np.arange(3))) == {}


def test_a_moved_internal_fails_loudly_naming_the_attribute():
    class NotAnIO:
        source = "x"

    with pytest.raises(CompatError, match=r"no '_HDMFIO__source' \(the IO's source\).*checked against hdmf"):
        compat.set_io_source(NotAnIO(), "y")
    with pytest.raises(CompatError, match="_HDF5IO__dci_queue"):
        compat.replace_dci_queue(NotAnIO(), object())
    with pytest.raises(CompatError, match="_ZarrIO__codec_cls"):
        compat.set_zarr_object_codec(NotAnIO(), object)


def test_nwbdaskio_goes_through_compat(tmp_path, monkeypatch):
    """NWBDaskIO's atomic write sets its source through compat (not on its own)."""
    calls = []
    real = compat.set_io_source
    monkeypatch.setattr("nwb_dask.nwb.io.set_io_source", lambda io, p: (calls.append(p), real(io, p)))
    with NWBDaskIO(tmp_path / "t.nwb", "w", progress=False) as io:
        assert io.source == str((tmp_path / "t.nwb").absolute())
    assert calls == [str((tmp_path / "t.nwb").absolute())]


MANGLED = ("_HDMFIO__", "_HDF5IO__", "_ZarrIO__", "_written_builders", "_dxpl", "_filters", "_dimension_separator")


@pytest.mark.parametrize("module", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")))
def test_no_internal_reach_outside_compat(module):
    """Only compat.py touches hdmf / hdmf-zarr / h5py / zarr internals (as attributes or through getattr)."""
    if module == "compat.py":
        pytest.skip("compat itself")
    tree = ast.parse((PACKAGE / module).read_text())
    bad = [f"line {n.lineno}: .{n.attr}" for n in ast.walk(tree)
           if isinstance(n, ast.Attribute) and n.attr.startswith(MANGLED)]
    bad += [f"line {n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith(MANGLED)]
    assert not bad, f"{module} reaches into hdmf/hdmf-zarr/h5py internals (use nwb_dask.compat): {bad}"


def _tiny_nwbfile():
    from datetime import datetime, timezone

    from pynwb import NWBFile

    return NWBFile(session_description="compat", identifier="compat", session_start_time=datetime(2020, 1, 1,
                                                                                                   tzinfo=timezone.utc))


def test_zarr_dimension_separator_is_what_zarr_writes(tmp_path):
    """The Zarr sink's chunk keys use the array's own separator, read through compat."""
    import zarr

    for sep in (".", "/"):
        z = zarr.open(str(tmp_path / f"a{sep == '/'}.zarr"), mode="w", shape=(4, 4), chunks=(2, 2), dtype="i2",
                      dimension_separator=sep)
        assert compat.zarr_dimension_separator(z) == sep
        z[:] = 1
        keys = sorted(k for k in z.store.keys() if not k.startswith("."))
        assert keys[0] == f"0{sep}0"


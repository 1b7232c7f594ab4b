"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from hypothesis import settings

# No wall-clock deadline for any property test (each settings() built later inherits it): CI machines are loaded,
# and a slow example is not a wrong one.
settings.register_profile("nwb_dask", deadline=None)
settings.load_profile("nwb_dask")
from hdmf.container import AbstractContainer, Data
from hdmf.query import HDMFDataset
from pynwb import NWBHDF5IO

_PLAIN_READER = textwrap.dedent(
    """
    import sys
    import hdf5plugin  # plugin filters, as a plain user would import them
    import numpy as np
    from pynwb import NWBHDF5IO, validate

    path, name, out = sys.argv[1:4]
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        data = nwbfile.acquisition[name].data[()]
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    errors = validate(path=path)
    if errors:
        raise SystemExit("validation errors: %r" % (errors,))
    np.save(out, data)
    """
)


def read_with_plain_pynwb(path: str | Path, name: str, tmp_path: Path) -> np.ndarray:
    """Read ``acquisition[name].data`` in a fresh interpreter with only pynwb (and hdf5plugin).

    Also runs pynwb's validator there; fails the test on validation errors.
    """
    out = tmp_path / f"{name}.npy"
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_READER, str(path), name, str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    if proc.returncode:
        pytest.fail(f"plain pynwb could not read {path}: {proc.stderr[-3000:]}")
    return np.load(out)


# --------------------------------------------------------------------------- #
# NWB files compared object by object (repack, convert), HDF5 or Zarr           #
# --------------------------------------------------------------------------- #
def open_nwb(path: Path):
    """pynwb's reader for an HDF5 file, hdmf-zarr's for a Zarr store (a directory)."""
    from hdmf_zarr.nwb import NWBZarrIO

    return NWBZarrIO(str(path), "r") if Path(path).is_dir() else NWBHDF5IO(str(path), "r")


def object_ids(path: Path) -> dict[str, str]:
    with open_nwb(path) as io:
        return {oid: type(obj).__name__ for oid, obj in io.read().objects.items()}


def nwb_value(value):
    """A comparable form of a pynwb field value (HDF5 or Zarr backed): containers by type and object_id."""
    if isinstance(value, AbstractContainer):
        return ("object", type(value).__name__, value.object_id)
    if isinstance(value, HDMFDataset):  # references / compounds resolved by hdmf or hdmf-zarr
        return nwb_value(value[:])
    if isinstance(value, (h5py.Dataset, zarr.Array)):
        return nwb_value(value[()])
    if isinstance(value, np.ndarray):
        if value.dtype.names:
            return ("records", value.shape, [tuple(nwb_value(row[n]) for n in value.dtype.names)
                                             for row in value.reshape(-1)])
        if value.dtype.kind in "OSU":
            return ("objects", value.shape, [nwb_value(v) for v in value.reshape(-1).tolist()])
        return value
    if isinstance(value, np.void):
        return tuple(nwb_value(value[n]) for n in value.dtype.names)
    if isinstance(value, dict):
        return {k: nwb_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nwb_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def same(a, b) -> bool:
    """Equality of normalized values; arrays element by element (np.array_equal), same dtype and shape."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and a == b


def nwb_fields(obj) -> dict:
    fields = dict(obj.fields)
    if isinstance(obj, Data):  # VectorData, Image, ...: their values are not among the fields
        fields["data"] = obj.data
    return fields


def assert_same_nwb(a: Path, b: Path) -> None:
    """Every object of ``a`` is in ``b`` (either HDF5 or Zarr): same ID, type, name, parent and field values."""
    with open_nwb(a) as ia, open_nwb(b) as ib:
        fa, fb = ia.read(), ib.read()
        assert sorted(fa.objects) == sorted(fb.objects)
        for oid, oa in fa.objects.items():
            ob = fb.objects[oid]
            where = f"{type(oa).__name__} {oa.name!r} ({oid})"
            assert type(ob) is type(oa), where
            assert ob.name == oa.name, where
            assert getattr(ob.parent, "object_id", None) == getattr(oa.parent, "object_id", None), where
            va, vb = nwb_fields(oa), nwb_fields(ob)
            assert sorted(va) == sorted(vb), f"{where}: fields {sorted(set(va) ^ set(vb))}"
            for key in va:
                assert same(nwb_value(va[key]), nwb_value(vb[key])), f"{where}.{key} differs"


@pytest.fixture(scope="module")
def local_cluster():
    """A module's one Client of a LocalCluster of 2 single-threaded worker processes (the default client meanwhile)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield client


@pytest.fixture(autouse=True)
def _own_metadata_cache(tmp_path_factory, monkeypatch):
    """Each test's remote opens get an empty metadata cache of their own (nwb_dask.sources.cache), never ~/.cache."""
    monkeypatch.setenv("NWB_DASK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "metadata-cache" / os.urandom(6).hex()))


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server of ``tmp_path`` (tests/http_server.py: request counts, faults), shut down after the test."""
    from http_server import Server

    with Server(tmp_path).running() as srv:
        yield srv

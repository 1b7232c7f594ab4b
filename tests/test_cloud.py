"""Cloud-optimized writes (issue 17, item 4): ``cloud=True`` on write_nwb / NWBDaskIO / repack / ``repack --cloud``.

A cloud-optimized file is a standard NWB file created with HDF5 paged
aggregation (pages of ``CLOUD_PAGE_BYTES``) and, for default chunks, chunks
near ``CLOUD_CHUNK_BYTES``.  Checked here: the file space strategy HDF5 reports,
element-by-element reads with plain pynwb in a fresh process and with
nwb_dask.read_dataset, repack's verifier, the atomic write and the refusals.
"""

from __future__ import annotations

from datetime import datetime, timezone
import re
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
from conftest import read_with_plain_pynwb
from pynwb import NWBFile, TimeSeries

import nwb_dask
from nwb_dask.chunking import CLOUD_CHUNK_BYTES, DEFAULT_CHUNK_BYTES
from nwb_dask.cli import main
from nwb_dask.nwb.io import CLOUD_PAGE_BYTES, NWBDaskIO, write_nwb
from nwb_dask.testing import write_rich_nwbfile

pytestmark = pytest.mark.filterwarnings("ignore:AnnotationSeries is deprecated:UserWarning")

ES = "/acquisition/ElectricalSeries/data"


def paging(path: Path) -> tuple[int, bool, int]:
    """(strategy, persist, page size) of an HDF5 file, as HDF5 reports them."""
    with h5py.File(path, "r") as f:
        plist = f.id.get_create_plist()
        strategy, persist, _threshold = plist.get_file_space_strategy()
        return strategy, bool(persist), plist.get_file_space_page_size()


def chunk_bytes(path: Path, name: str) -> int:
    with h5py.File(path, "r") as f:
        d = f[name]
        return int(np.prod(d.chunks)) * d.dtype.itemsize


def nwbfile_with(data, chunks="auto") -> NWBFile:
    nwb = NWBFile(session_description="cloud", identifier="cloud-1",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(TimeSeries(name="sig", data=nwb_dask.DaskDataIO(data, chunks=chunks), unit="V", rate=30000.0))
    return nwb


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return np.random.default_rng(17).integers(-2000, 2000, size=(120_000, 32), dtype=np.int16)  # 7.7 MB


def test_write_nwb_cloud_is_paged_standard_nwb(tmp_path, signal):
    path = tmp_path / "cloud.nwb"
    write_nwb(nwbfile_with(da.from_array(signal, chunks=(30_000, 32))), path, cloud=True, progress=False)
    assert paging(path) == (h5py.h5f.FSPACE_STRATEGY_PAGE, True, CLOUD_PAGE_BYTES)
    assert not [p for p in tmp_path.iterdir() if p.name != "cloud.nwb"]  # the temporary was renamed, nothing else
    # default chunks aimed at the cloud target: larger than the local default, within the target
    stored = chunk_bytes(path, "/acquisition/sig/data")
    assert DEFAULT_CHUNK_BYTES < stored <= CLOUD_CHUNK_BYTES
    np.testing.assert_array_equal(read_with_plain_pynwb(path, "sig", tmp_path), signal)
    np.testing.assert_array_equal(nwb_dask.read_dataset(path, "/acquisition/sig/data").compute(), signal)


def test_local_default_is_not_paged(tmp_path, signal):
    path = tmp_path / "local.nwb"
    write_nwb(nwbfile_with(da.from_array(signal, chunks=(30_000, 32))), path, progress=False)
    assert paging(path)[0] == h5py.h5f.FSPACE_STRATEGY_FSM_AGGR  # HDF5's default: cloud=True is what changes it
    assert chunk_bytes(path, "/acquisition/sig/data") <= DEFAULT_CHUNK_BYTES


def test_cloud_keeps_given_chunks(tmp_path, signal):
    path = tmp_path / "given.nwb"
    write_nwb(nwbfile_with(da.from_array(signal, chunks=(30_000, 32)), chunks=(10_000, 32)), path, cloud=True,
              progress=False)
    with h5py.File(path, "r") as f:
        assert f["/acquisition/sig/data"].chunks == (10_000, 32)
        np.testing.assert_array_equal(f["/acquisition/sig/data"][:], signal)
    assert paging(path)[0] == h5py.h5f.FSPACE_STRATEGY_PAGE


def test_cloud_not_atomic_in_place(tmp_path, signal):
    path = tmp_path / "inplace.nwb"
    with NWBDaskIO(path, "w", atomic=False, cloud=True, progress=False) as io:
        io.write(nwbfile_with(da.from_array(signal[:5000], chunks=(5000, 32))))
    assert paging(path)[0] == h5py.h5f.FSPACE_STRATEGY_PAGE
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["/acquisition/sig/data"][:], signal[:5000])


def test_failed_cloud_write_leaves_nothing(tmp_path, signal):
    def boom(block):
        raise RuntimeError("source block failed")

    bad = da.from_array(signal, chunks=(30_000, 32)).map_blocks(boom, dtype=signal.dtype)
    path = tmp_path / "failed.nwb"
    with pytest.raises(RuntimeError, match="source block failed"):
        write_nwb(nwbfile_with(bad), path, cloud=True, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary


@pytest.mark.parametrize("mode", ["a", "r+", "r"])
def test_cloud_refuses_existing_files(tmp_path, mode, signal):
    path = tmp_path / "old.nwb"
    write_nwb(nwbfile_with(da.from_array(signal[:1000], chunks=(1000, 32))), path, progress=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"cannot write .*old\.nwb with cloud=True: mode {re.escape(repr(mode))}.*repack --cloud"):
        NWBDaskIO(path, mode, cloud=True)
    assert path.read_bytes() == before


def test_cloud_refuses_zarr_and_open_files(tmp_path):
    with pytest.raises(ValueError, match=r"store\.zarr with cloud=True: a Zarr store"):
        NWBDaskIO(tmp_path / "store.zarr", "w", cloud=True)
    assert not (tmp_path / "store.zarr").exists()
    with h5py.File(tmp_path / "open.h5", "w") as f:
        with pytest.raises(ValueError, match=r"open\.h5 with cloud=True: file= is already created"):
            NWBDaskIO(file=f, mode="w", cloud=True)
    with pytest.raises(ValueError, match=r"with cloud=True: driver 'ros3'"):
        NWBDaskIO(tmp_path / "x.nwb", "w", driver="ros3", cloud=True)
    with pytest.raises(ValueError, match=r"write_nwb writes a new file"):
        write_nwb(None, tmp_path / "y.nwb", mode="a", cloud=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """A pynwb-written file (contiguous 2 s x 32 ch int16 ElectricalSeries, tables, strings, links)."""
    path = tmp_path_factory.mktemp("cloud") / "plain.nwb"
    write_rich_nwbfile(path, seconds=2.0, n_channels=32)
    return path


def test_repack_cloud_equals_input(tmp_path, plain):
    out = tmp_path / "cloud.nwb"
    result = nwb_dask.repack(plain, out, cloud=True, progress=False)
    assert result.verified  # repack's verifier: every object of the output equals the input's
    assert paging(out) == (h5py.h5f.FSPACE_STRATEGY_PAGE, True, CLOUD_PAGE_BYTES)
    assert paging(plain)[0] != h5py.h5f.FSPACE_STRATEGY_PAGE
    es = next(d for d in result.datasets if d.path == ES)
    assert DEFAULT_CHUNK_BYTES < int(np.prod(es.chunks_out)) * 2 <= CLOUD_CHUNK_BYTES
    with h5py.File(plain, "r") as f:
        expected = f[ES][:]
    np.testing.assert_array_equal(read_with_plain_pynwb(out, "ElectricalSeries", tmp_path), expected)
    np.testing.assert_array_equal(nwb_dask.read_dataset(out, ES).compute(), expected)


def test_repack_without_cloud_keeps_local_layout(tmp_path, plain):
    out = tmp_path / "local.nwb"
    result = nwb_dask.repack(plain, out, progress=False)
    assert paging(out)[0] == h5py.h5f.FSPACE_STRATEGY_FSM_AGGR
    es = next(d for d in result.datasets if d.path == ES)
    assert int(np.prod(es.chunks_out)) * 2 <= DEFAULT_CHUNK_BYTES


def test_cli_repack_cloud(tmp_path, plain, capsys):
    out = tmp_path / "cli.nwb"
    assert main(["repack", str(plain), str(out), "--cloud", "--quiet"]) == 0
    assert "every object compared" in capsys.readouterr().out
    assert paging(out)[0] == h5py.h5f.FSPACE_STRATEGY_PAGE
    with h5py.File(plain, "r") as a, h5py.File(out, "r") as b:
        np.testing.assert_array_equal(a[ES][:], b[ES][:])

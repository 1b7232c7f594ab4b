"""Cloud-optimized writes (issue 17, item 4): ``cloud=True`` on write_nwb / NWBDaskIO / repack / ``repack --cloud``.

A cloud-optimized file is a standard NWB file created with HDF5 paged
aggregation (pages of ``CLOUD_PAGE_BYTES``) and, for default chunks, chunks
near ``CLOUD_CHUNK_BYTES``.  Checked here: the file space strategy HDF5 reports,
element-by-element reads with plain pynwb in a fresh process and with
nwb_dask.read_dataset, repack's verifier, the atomic write and the refusals;
and, with hypothesis, any shape, dask chunking, dtype and codec through
``write_nwb(cloud=True)`` and ``repack(cloud=True)``, read back by plain h5py
in a fresh process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
from conftest import read_with_plain_pynwb
from hypothesis import given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from test_any_shape import CODECS, FAST, arrays, assert_chunks_within, ts_file, values

import nwb_dask
from nwb_dask.chunking import CLOUD_CHUNK_BYTES, DEFAULT_CHUNK_BYTES, guess_chunk_shape
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


@pytest.mark.parametrize("entry", ["nwb_dask.write_nwb", "write_nwb_zarr", "write_nwb_zarr URL", "NWBZarrDaskIO"])
def test_cloud_refused_for_zarr_outputs(tmp_path, signal, entry):
    """Every way of writing an NWB-Zarr store refuses cloud=True naming the option and the store, before
    anything is written; an existing store (overwrite=True) is left as it was."""
    from nwb_dask.zarr.io import NWBZarrDaskIO, write_nwb_zarr

    store = tmp_path / "session.nwb.zarr"
    nwb_dask.write_nwb(nwbfile_with(da.from_array(signal[:1000], chunks=(500, 32))), store, cloud=False,
                       progress=False)  # cloud=False is accepted for Zarr (the default)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    target = store if entry != "write_nwb_zarr URL" else "memory://bucket/session.nwb.zarr"
    nwbfile = nwbfile_with(da.from_array(signal, chunks=(30_000, 32)))
    write = {
        "nwb_dask.write_nwb": lambda: nwb_dask.write_nwb(nwbfile, target, cloud=True, overwrite=True, progress=False),
        "write_nwb_zarr": lambda: write_nwb_zarr(nwbfile, target, cloud=True, overwrite=True, progress=False),
        "write_nwb_zarr URL": lambda: write_nwb_zarr(nwbfile, target, cloud=True, progress=False),
        "NWBZarrDaskIO": lambda: NWBZarrDaskIO(target, "w", cloud=True),
    }[entry]
    with pytest.raises(ValueError, match=rf"cannot write {re.escape(str(target))} with cloud=True: a Zarr store: "
                                         r"cloud=True lays out an HDF5 file .*drop cloud=True"):
        write()
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb.zarr"]  # no temporary left either
    if entry == "write_nwb_zarr URL":
        import fsspec

        assert not fsspec.filesystem("memory").exists("/bucket/session.nwb.zarr")


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


# --------------------------------------------------------------------------- #
# any shape, dask chunking, dtype and codec (hypothesis)                       #
# --------------------------------------------------------------------------- #
#: Plain h5py (and hdf5plugin, for the plugin filters) in a fresh interpreter: for every file of a
#: manifest, the file space strategy and page size HDF5 reports, and every listed dataset read whole
#: and compared element by element with the values saved beside it.
_PLAIN_H5PY = textwrap.dedent(
    """
    import json, sys
    import h5py, hdf5plugin, numpy as np

    manifest, out = sys.argv[1:3]
    report = {}
    for item in json.load(open(manifest)):
        with h5py.File(item["path"], "r") as f:
            plist = f.id.get_create_plist()
            strategy, persist, _threshold = plist.get_file_space_strategy()
            datasets = {}
            for name, npy in item["datasets"].items():
                d, expected = f[name], np.load(npy)
                got = d[()]
                datasets[name] = dict(
                    shape=list(got.shape), dtype=got.dtype.newbyteorder("=").str,
                    expected_dtype=expected.dtype.newbyteorder("=").str,
                    equal=bool(got.shape == expected.shape and np.array_equal(got, expected)),
                    chunks=list(d.chunks) if d.chunks else None)
            report[item["path"]] = dict(paging=[int(strategy), bool(persist), int(plist.get_file_space_page_size())],
                                        datasets=datasets)
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    json.dump(report, open(out, "w"))
    """
)


class FreshReadBack:
    """Files written during one hypothesis run, checked together by plain h5py in one fresh process."""

    def __init__(self, root: Path):
        self.root, self.items = root, []

    def add(self, path: Path, datasets: dict[str, np.ndarray]) -> None:
        saved = {}
        for i, (name, x) in enumerate(datasets.items()):
            saved[name] = str(path.with_suffix(f".{i}.npy"))
            np.save(saved[name], x)
        self.items.append(dict(path=str(path), datasets=saved))

    def check(self, min_files: int) -> None:
        assert len(self.items) >= min_files, f"only {len(self.items)} files were written"
        manifest, out = self.root / "manifest.json", self.root / "report.json"
        manifest.write_text(json.dumps(self.items))
        proc = subprocess.run([sys.executable, "-c", _PLAIN_H5PY, str(manifest), str(out)], capture_output=True,
                              text=True, cwd=self.root, timeout=300)
        assert proc.returncode == 0, f"plain h5py could not read the files: {proc.stderr[-3000:]}"
        report = json.loads(out.read_text())
        for item in self.items:
            got = report[item["path"]]
            assert got["paging"] == [h5py.h5f.FSPACE_STRATEGY_PAGE, True, CLOUD_PAGE_BYTES], item["path"]
            for name, d in got["datasets"].items():
                assert d["equal"], f"{item['path']}:{name} differs from what was written ({d})"
                assert d["dtype"] == d["expected_dtype"], (item["path"], name, d)  # up to byte order (hdmf)
                if d["chunks"] is not None:  # (contiguous: an empty dataset repack exports as it is)
                    assert_chunks_within(tuple(d["chunks"]), tuple(d["shape"]))


@st.composite
def long_arrays(draw):
    """(numpy, dask) 2-D arrays larger than CLOUD_CHUNK_BYTES, in regular non-dividing or irregular blocks:
    where the cloud chunk target (2 MiB) and the local one (1 MiB) give different shapes."""
    channels = draw(st.sampled_from([1, 3, 4]))
    dtype = draw(st.sampled_from(["i2", "f4", "u1"]))
    row = channels * np.dtype(dtype).itemsize
    n = draw(st.integers(5 * CLOUD_CHUNK_BYTES // (4 * row), 2 * CLOUD_CHUNK_BYTES // row))  # 2.5-4 MiB
    block = draw(st.integers(20_000, n))
    rows = draw(st.one_of(
        st.just((block,) * (n // block) + ((n % block,) if n % block else ())),
        st.lists(st.integers(1, n - 1), min_size=1, max_size=4).map(
            lambda cuts: tuple(b - a for a, b in zip([0, *sorted(set(cuts))], [*sorted(set(cuts)), n])))))
    x = values((n, channels), dtype, draw(st.integers(0, 2**16)))
    return x, da.from_array(x, chunks=(rows, (channels,)))


def _cloud_chunk_shape(a, spec, chunks, chunk_bytes) -> tuple:
    """The documented chunk shape of a cloud=True write: a given shape or chunk_bytes kept, the default
    ("auto", default chunk_bytes) chosen as for chunk_bytes=CLOUD_CHUNK_BYTES (docs/writer.md)."""
    if chunks != "auto":
        return tuple(chunks)
    target = CLOUD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    return tuple(nwb_dask.DaskDataIO(a, codec=spec, chunk_bytes=target).data.chunk_shape)


def test_write_nwb_cloud_any_shape_dtype_codec():
    """write_nwb(cloud=True): any shape (0-length and 1 included), dask blocks (irregular, non-dividing,
    single-element, zero-length), dtype and codec; paged, chunks as documented, values read back by plain
    h5py in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = FreshReadBack(Path(tmp))

        @settings(FAST, max_examples=20)
        @given(st.one_of(arrays(), long_arrays()), st.sampled_from(CODECS), st.data())
        def write_one(arr, spec, data):
            x, a = arr
            user = tuple(data.draw(st.integers(1, max(1, s))) for s in x.shape)
            chunks = data.draw(st.sampled_from(["auto", "auto", user]))
            chunk_bytes = data.draw(st.sampled_from([None, None, 64, 2**20 // 2])) if chunks == "auto" else None
            kw = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
            path = Path(tmp) / f"w{len(fresh.items)}.nwb"
            write_nwb(ts_file(nwb_dask.DaskDataIO(a, codec=spec, chunks=chunks, **kw)), path, cloud=True,
                      progress=False)
            with h5py.File(path, "r") as f:
                d = f["acquisition/ts/data"]
                assert d.chunks == _cloud_chunk_shape(a, spec, chunks, chunk_bytes), (x.shape, a.chunks, chunks)
                if chunks == "auto" and chunk_bytes is None and x.nbytes > CLOUD_CHUNK_BYTES and x.ndim == 2:
                    # the cloud target, not the local one, decides the default shape
                    local = nwb_dask.DaskDataIO(a, codec=spec).data.chunk_shape
                    assert np.prod(d.chunks) >= np.prod(local), (d.chunks, local)
            fresh.add(path, {"acquisition/ts/data": x})

        write_one()
        fresh.check(min_files=10)


@st.composite
def repack_inputs(draw):
    """An input NWB file's data: (numpy, dask array, writer, codec of the input)."""
    x, a = draw(st.one_of(arrays(), long_arrays()))
    writer = draw(st.sampled_from(["nwb_dask", "nwb_dask", "pynwb contiguous"]))
    if writer == "pynwb contiguous" and x.dtype.kind == "c":  # plain pynwb cannot write complex data
        writer = "nwb_dask"
    return x, a, writer, draw(st.sampled_from(CODECS))


def test_repack_cloud_any_shape_dtype_codec():
    """repack(cloud=True) of nwb_dask- and pynwb-written inputs of any shape, dtype and codec, to any codec or
    the source's, chunks "auto" or "source": verified, paged, chunks as documented (docs/repack.md), values
    read back by plain h5py in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = FreshReadBack(Path(tmp))

        @settings(FAST, max_examples=15)
        @given(repack_inputs(), st.sampled_from(["source", *CODECS]), st.sampled_from(["auto", "source"]))
        def repack_one(given_input, out_codec, chunks):
            x, a, writer, in_codec = given_input
            i = len(fresh.items)
            src, out = Path(tmp) / f"in{i}.nwb", Path(tmp) / f"r{i}.nwb"
            if writer == "nwb_dask":
                write_nwb(ts_file(nwb_dask.DaskDataIO(a, codec=in_codec)), src, progress=False)
            else:
                with NWBHDF5IO(str(src), "w") as io:
                    io.write(ts_file(x))
            codec = out_codec if isinstance(out_codec, str) else nwb_dask.codec(out_codec[0], **out_codec[1])
            result = nwb_dask.repack(src, out, cloud=True, codec=codec, chunks=chunks, min_bytes=0, progress=False)
            assert result.verified
            with h5py.File(src, "r") as f:
                source_chunks = f["acquisition/ts/data"].chunks
            with h5py.File(out, "r") as f:
                stored = f["acquisition/ts/data"].chunks
            repacked = {d.path: d for d in result.datasets}
            if x.size == 0:  # nothing to recompress: exported as it is
                assert "/acquisition/ts/data" not in repacked and stored == source_chunks
            else:
                expected = (source_chunks if chunks == "source" and source_chunks
                            else guess_chunk_shape(x.shape, x.dtype, CLOUD_CHUNK_BYTES))
                assert repacked["/acquisition/ts/data"].chunks_out == stored == tuple(expected), (x.shape, chunks)
            src.unlink()
            fresh.add(out, {"acquisition/ts/data": x})

        repack_one()
        fresh.check(min_files=8)

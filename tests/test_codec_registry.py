"""The codec registry: a codec family registered from outside nwb_dask writes and reads real files.

The family below is the whole of what a codec author writes: one class over an
HDF5 filter nwb_dask does not ship (hdf5plugin's bzip2, filter 307, whose
chunks are plain bzip2 streams, so the standard library's ``bz2`` produces
them), plus one registration.  Files written with it are read back by
nwb_dask and by plain h5py + hdf5plugin in a fresh process, element by element.
"""

from __future__ import annotations

import bz2
import subprocess
import sys
import threading

import dask.array as da
import h5py
import hdf5plugin
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import nwb_dask
from nwb_dask.codecs import (
    CodecError,
    CodecFamily,
    Option,
    Stage,
    codec,
    codec_from_dataset,
    get_codec,
    register_codec,
    unregister_codec,
)
from nwb_dask.codecs.registry import family_for_filter, registered_codecs

BZIP2_FILTER = hdf5plugin.BZIP2_ID  # 307
DATA = "acquisition/ElectricalSeries/data"


# --------------------------------------------------------------------------- #
# The outside codec: one module's worth of code                                 #
# --------------------------------------------------------------------------- #
class Bzip2Stage(Stage):
    filter_id = BZIP2_FILTER
    calls = {"encode": 0, "decode": 0}
    _lock = threading.Lock()

    def __init__(self, level: int):
        self.level = level

    def encode(self, buf, itemsize):
        with self._lock:
            self.calls["encode"] += 1
        return bz2.compress(buf, self.level)

    def decode(self, buf, nbytes, itemsize):
        with self._lock:
            self.calls["decode"] += 1
        return bz2.decompress(buf)


class Bzip2(CodecFamily):
    """hdf5plugin's bzip2 filter (H5Zbzip2.c): cd_values = (block size 1-9,), each chunk one bzip2 stream."""

    name = "bzip2"
    aliases = ("bz2",)
    filter_id = BZIP2_FILTER
    plugin = True
    options = {"level": Option(9, range(1, 10))}
    levels = range(1, 10)

    def stages(self, o):
        return (Bzip2Stage(o["level"]),)

    def dataset_kwargs(self, o):
        return dict(hdf5plugin.BZip2(blocksize=o["level"]))

    def from_cd_values(self, cd):
        return {"level": int(cd[0])} if cd else {}


@pytest.fixture(scope="module", autouse=True)
def bzip2_registered():
    """Registered for this module only: the registry is process-wide, other test files see the built-ins."""
    register_codec(Bzip2)
    yield
    unregister_codec("bzip2")


def values(shape=(5_000, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(-20, 21, size=shape), axis=0) % 3000).astype("int16")


def read_in_fresh_process(path, name, tmp_path) -> np.ndarray:
    """Plain h5py + hdf5plugin (no nwb_dask) in a new interpreter; the values come back through a .npy."""
    out = tmp_path / "fresh.npy"
    code = (
        "import sys, h5py, hdf5plugin, numpy as np\n"
        "with h5py.File(sys.argv[1], 'r') as f:\n"
        "    d = f[sys.argv[2]]\n"
        "    plist = d.id.get_create_plist()\n"
        "    assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [307]\n"
        "    np.save(sys.argv[3], d[...])\n"
        "assert 'nwb_dask' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path), name, str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


# --------------------------------------------------------------------------- #
# Registration                                                                  #
# --------------------------------------------------------------------------- #
def test_registered_family_is_a_codec_like_the_built_ins():
    assert nwb_dask.register_codec is register_codec and "register_codec" in nwb_dask.__all__
    assert get_codec("bzip2") is get_codec("BZ2") is family_for_filter(BZIP2_FILTER)
    c = codec("bz2", level=3)
    assert c == codec(("bzip2", {"level": 3})) and c.name == "bzip2" and c.label == "bzip2-3"
    assert c.filter_ids == (BZIP2_FILTER,)
    assert c.h5dataio_kwargs() == {"compression": 307, "compression_opts": (3,), "allow_plugin_filters": True}
    assert "bzip2" in nwb_dask.available_codecs()
    with pytest.raises(CodecError, match=r"codec 'bzip2': level=0 is invalid; expected an integer in \[1, 9\]"):
        codec("bzip2", level=0)
    with pytest.raises(CodecError, match=r"codec 'bzip2' got unknown option\(s\) \['cname'\]"):
        codec("bzip2", cname="lz4")
    import pickle

    assert pickle.loads(pickle.dumps(c)) == c


class _Named(CodecFamily):
    def stages(self, o):
        return ()

    def dataset_kwargs(self, o):
        return {}

    def from_cd_values(self, cd):
        return {}


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"name": "gzip"}, r"cannot register codec 'gzip': the name 'gzip' is already taken by codec 'gzip'"),
        ({"name": "bzip2"}, r"cannot register codec 'bzip2': the name 'bzip2' is already taken by codec 'bzip2'"),
        ({"name": "zlib"}, r"cannot register codec 'zlib': the name 'zlib' is already taken by codec 'gzip'"),
        ({"name": "mine", "aliases": ("raw",)}, r"cannot register codec 'mine': the name 'raw' is already taken by codec 'none'"),
        ({"name": "mine", "filter_id": 1}, r"cannot register codec 'mine': HDF5 filter 1 is already run by codec 'gzip'"),
        ({"name": "mine", "filter_id": 307}, r"cannot register codec 'mine': HDF5 filter 307 is already run by codec 'bzip2'"),
        ({"name": "Mine"}, r"name must be a non-empty lower-case string, got 'Mine'"),
    ],
)
def test_duplicate_names_and_filter_ids_are_refused(attrs, message):
    before = (registered_codecs(), {n: get_codec(n) for n in registered_codecs()})
    family = type("Dup", (_Named,), dict(attrs))
    with pytest.raises(CodecError, match=message):
        register_codec(family)
    assert (registered_codecs(), {n: get_codec(n) for n in registered_codecs()}) == before  # nothing half-registered
    assert get_codec("gzip").filter_id == 1 and family_for_filter(1).name == "gzip"


def test_only_families_register():
    with pytest.raises(TypeError, match="CodecFamily"):
        register_codec(object)


def test_unknown_codec_lists_the_registered_ones():
    with pytest.raises(CodecError, match=r"unknown codec 'lzf'; known codecs: \[.*'bzip2'.*'gzip'"):
        codec("lzf")


# --------------------------------------------------------------------------- #
# Files written with the outside codec                                          #
# --------------------------------------------------------------------------- #
def test_write_dask_array_with_a_registered_codec(tmp_path):
    data = values()
    path = tmp_path / "bz.h5"
    c = codec("bzip2", level=5)
    Bzip2Stage.calls.update(encode=0, decode=0)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("d", shape=data.shape, dtype=data.dtype, chunks=(700, 6), **c.dataset_kwargs())
        stats = nwb_dask.write_dask_array(da.from_array(data, chunks=(1400, 6)), dset, progress=False)
    assert stats.chunks == 8 and stats.logical_bytes == data.nbytes
    assert Bzip2Stage.calls["encode"] == 8  # nwb_dask encoded every chunk itself (ceil(5000 / 700))
    with h5py.File(path, "r") as f:
        d = f["d"]
        assert codec_from_dataset(d) == c
        mask, raw = d.id.read_direct_chunk((0, 0))
        assert mask == 0 and raw == bz2.compress(data[:700].tobytes(), 5)  # the bytes HDF5's filter stores
        padded = np.zeros((700, 6), data.dtype)
        padded[: 5000 - 7 * 700] = data[7 * 700 :]
        assert d.id.read_direct_chunk((4900, 0))[1] == bz2.compress(padded.tobytes(), 5)  # edge chunk, padded
        np.testing.assert_array_equal(d[...], data)  # HDF5's own bzip2 decoder
    got = nwb_dask.read_dataset(path, "d")
    np.testing.assert_array_equal(got.compute(), data)
    assert Bzip2Stage.calls["decode"] >= 8  # ... and nwb_dask decoded them itself
    np.testing.assert_array_equal(read_in_fresh_process(path, "d", tmp_path), data)


def test_write_nwb_with_a_registered_codec(tmp_path):
    from nwb_dask.testing import ephys_nwbfile

    data = values((9_000, 8), seed=1)
    path = tmp_path / "bz.nwb"
    io = nwb_dask.DaskDataIO(da.from_array(data, chunks=(3000, 8)), codec=("bzip2", {"level": 2}), chunks=(1000, 8))
    Bzip2Stage.calls.update(encode=0, decode=0)
    nwb_dask.write_nwb(ephys_nwbfile(io), path, progress=False)
    assert Bzip2Stage.calls["encode"] == 9
    with h5py.File(path, "r") as f:
        d = f[DATA]
        assert d.chunks == (1000, 8)
        assert d.id.get_create_plist().get_filter(0)[:3] == (BZIP2_FILTER, 1, (2,))
        assert d.id.read_direct_chunk((1000, 0))[1] == bz2.compress(data[1000:2000].tobytes(), 2)
    back = nwb_dask.read_dataset(path, DATA)
    assert back.shape == data.shape and back.dtype == data.dtype
    np.testing.assert_array_equal(back.compute(), data)
    assert Bzip2Stage.calls["decode"] >= 9
    np.testing.assert_array_equal(read_in_fresh_process(path, DATA, tmp_path), data)


def test_unregistered_codec_is_unknown_again_and_files_still_read_through_hdf5(tmp_path):
    data = values((2_000, 3), seed=2)
    path = tmp_path / "bz.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, chunks=(500, 3), **codec("bzip2").dataset_kwargs())
    unregister_codec("bzip2")
    try:
        with pytest.raises(CodecError, match="unknown codec 'bzip2'"):
            codec("bzip2")
        with h5py.File(path, "r") as f:
            assert codec_from_dataset(f["d"]) is None  # no family runs filter 307: HDF5 does
        np.testing.assert_array_equal(nwb_dask.read_dataset(path, "d").compute(), data)
    finally:
        register_codec(Bzip2)


# --------------------------------------------------------------------------- #
# options <-> cd_values, through HDF5, for every registered family              #
# --------------------------------------------------------------------------- #
FAMILIES = list(dict.fromkeys([*registered_codecs(), "bzip2"]))


def _option_values(opt: Option):
    if isinstance(opt.allowed, range):
        return st.integers(opt.allowed.start, opt.allowed.stop - 1)
    return st.sampled_from(list(opt.allowed))


@pytest.mark.parametrize("name", FAMILIES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_options_cd_values_round_trip(name, data):
    """Options -> the file's declaration -> cd_values as HDF5 stores them -> options, for each family.

    What the file records comes back unchanged (the rest, e.g. gzip's engine,
    takes its default), and the codec parsed back decodes what the original
    encodes (and HDF5 reads it).
    """
    family = get_codec(name)
    opts = {k: data.draw(_option_values(o), label=k) for k, o in family.options.items()}
    try:
        c = codec(name, **opts)
    except CodecError:
        assume(False)  # e.g. a bitshuffle block that is not a multiple of 8
    chunk = (np.arange(64 * 3, dtype="<u2") * 7 % 251).reshape(64, 3)
    with h5py.File(f"mem-{name}.h5", "w", driver="core", backing_store=False) as f:
        d = f.create_dataset("d", shape=(64, 3), dtype="<u2", chunks=(64, 3), **c.dataset_kwargs())
        plist = d.id.get_create_plist()
        stored = [plist.get_filter(i)[:3] for i in range(plist.get_nfilters())]
        assert [fid for fid, _, _ in stored] == list(c.filter_ids)
        recorded = family.from_cd_values(tuple(stored[-1][2]) if stored else ())
        assert recorded is not None
        assert recorded == {k: c.options[k] for k in recorded}, (stored, c)
        if family.shuffle_filter:  # recorded by the shuffle filter before this one
            assert [fid for fid, _, _ in stored[:-1]] == ([2] if c.options["shuffle"] else [])
            recorded["shuffle"] = c.options["shuffle"]
        back = codec_from_dataset(d)
        assert back == codec(name, **recorded), (stored, c)  # recorded options kept, the others their defaults
        assert back.filter_ids == c.filter_ids
        d.id.write_direct_chunk((0, 0), c.encode(chunk)[1], 0)
        np.testing.assert_array_equal(d[...], chunk)  # HDF5's decoder reads our bytes
        mask, raw = d.id.read_direct_chunk((0, 0))
        np.testing.assert_array_equal(back.decode(raw, d.dtype, d.chunks, mask), chunk)


# --------------------------------------------------------------------------- #
# The gate and "the source's codec, else gzip"                                   #
# --------------------------------------------------------------------------- #
def test_gate_and_source_codec(tmp_path):
    from nwb_dask.codecs import chunk_codec, source_codec

    data = values((1_000, 4), seed=3)
    path = tmp_path / "sources.h5"
    with h5py.File(path, "w") as f:
        zs = f.create_dataset("zs", data=data, chunks=(250, 4), **codec("zstd", level=7).dataset_kwargs())
        bz = f.create_dataset("bz", data=data, chunks=(250, 4), **codec("bzip2", level=4).dataset_kwargs())
        lzf = f.create_dataset("lzf", data=data, chunks=(250, 4), compression="lzf")
        fl32 = f.create_dataset("fl32", data=data, chunks=(250, 4), compression="gzip", fletcher32=True)
        big = f.create_dataset("big", data=data.astype(">i2"), chunks=(250, 4), compression="gzip", compression_opts=6)
        text = f.create_dataset("text", data=np.array([b"a", b"b"] * 10), chunks=(5,), compression="gzip")
        flat = f.create_dataset("flat", data=data)
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[...] = h5py.VirtualSource(path, "zs", shape=data.shape)
        vds = f.create_virtual_dataset("vds", layout)

        assert chunk_codec(zs) == codec("zstd", level=7) and chunk_codec(bz) == codec("bzip2", level=4)
        assert chunk_codec(zs, "zstd") == codec("zstd")  # the caller's codec, once the dataset passes the gate
        for refused in (lzf, fl32, big, text, flat, vds):  # pipelines no family runs; HDF5-only dtypes and layouts
            assert chunk_codec(refused) is None, refused.name
        for refused in (big, text, flat, vds):  # whatever codec the caller asks for
            assert chunk_codec(refused, "gzip") is None, refused.name

        assert source_codec(zs) == codec("zstd", level=7) and source_codec(bz) == codec("bzip2", level=4)
        for fallback in (lzf, fl32, big, text, vds):  # filters nwb_dask cannot run, HDF5-only dtypes, virtual
            assert source_codec(fallback) == codec("gzip"), fallback.name
        assert source_codec(flat) == codec("gzip") and source_codec(flat, contiguous="none") == codec("none")
        assert source_codec(bz, allowed=("none", "gzip", "zstd", "blosc")) == codec("gzip")  # no NWB-Zarr equivalent
        assert source_codec(zs, allowed=("none", "gzip", "zstd", "blosc")) == codec("zstd", level=7)


def test_source_codec_of_zarr_arrays():
    import numcodecs
    import zarr

    from nwb_dask.codecs import codec_from_numcodecs, numcodecs_pipeline, source_codec

    root = zarr.group(zarr.MemoryStore())
    shuffled = root.create_dataset("z", shape=(100,), dtype="i2", compressor=numcodecs.Zlib(level=3),
                                   filters=[numcodecs.Shuffle(elementsize=2)])
    assert source_codec(shuffled) == codec("gzip", level=3, shuffle=True)
    plain = root.create_dataset("p", shape=(100,), dtype="i2", compressor=None)
    assert source_codec(plain) == codec("none")
    odd = root.create_dataset("o", shape=(100,), dtype="i2", compressor=numcodecs.LZMA())
    assert codec_from_numcodecs(odd.compressor) is None and source_codec(odd) == codec("gzip")
    for c in (codec("gzip", level=2), codec("zstd", level=9, shuffle=True), codec("blosc", cname="zstd"), codec("none")):
        filters, compressor = numcodecs_pipeline(c, 2)
        assert codec_from_numcodecs(compressor, filters) == c
    with pytest.raises(CodecError, match=r"codec 'bzip2' has no NWB-Zarr equivalent; use one of \['none', 'gzip', 'zstd', 'blosc'\]"):
        numcodecs_pipeline(codec("bzip2"), 2)

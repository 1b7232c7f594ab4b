"""Repack (nwb_dask.repack): recompress and rechunk any NWB file, atomically and verified.

Inputs come from :func:`nwb_dask.testing.write_rich_nwbfile`, written by plain
pynwb: many neurodata types, object references (DynamicTableRegions, a
reference dataset, a compound dataset with references), compound data, soft
links and an external link.  Outputs are checked independently of nwb_dask's
own ``compare_files``: object by object with plain pynwb (``NWBHDF5IO``), and
link by link, attribute by attribute and value by value with h5py.  Every
test checks that its input files are byte-for-byte unchanged (sha256).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)
import numpy as np
import pytest
from conftest import assert_same_nwb, read_with_plain_pynwb, same
from pynwb import NWBHDF5IO, validate

import nwb_dask
import nwb_dask.testing
import nwb_dask.hdf5.read
import nwb_dask.nwb.read
import nwb_dask.hdf5.write
from nwb_dask import ChunkShapeError
from nwb_dask.chunking import guess_chunk_shape
from nwb_dask.tools.repack import RepackError, repack
from nwb_dask.testing import write_rich_nwbfile

repack_module = importlib.import_module("nwb_dask.tools.repack")

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",  # hdmf on plugin filters
    "ignore:AnnotationSeries is deprecated:UserWarning",  # pynwb reading the rich file back
)

ES = "/acquisition/ElectricalSeries/data"
CAMERA = "/acquisition/camera/data"
LFP = "/processing/ecephys/LFP/LFP/data"
LFP_TS = "/processing/ecephys/LFP/LFP/timestamps"
POWER = "/processing/ecephys/LFP_power/data"
EXTERNAL = "/acquisition/external_ElectricalSeries/data"
#: min_bytes of most tests: the rich file's datasets of at least this size are LARGE.
MIN = 10_000
LARGE = {ES, CAMERA, LFP, LFP_TS, POWER}


# --------------------------------------------------------------------------- #
# Fixtures and helpers                                                         #
# --------------------------------------------------------------------------- #
def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Inputs:
    """Private copies of the input files in one directory, with their digests."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.rich = directory / "rich.nwb"  # uncompressed, external link to other.nwb
        self.other = directory / "other.nwb"
        self.compressed = directory / "compressed.nwb"  # gzip 4 + shuffle, chunked (h5py's filters)
        self.digests = {p.name: sha256(p) for p in directory.iterdir()}

    def check(self) -> None:
        """The inputs are byte-for-byte what they were."""
        for name, digest in self.digests.items():
            assert sha256(self.dir / name) == digest, f"input {name} was modified"


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("originals")
    write_rich_nwbfile(d / "other.nwb", seconds=1.0, n_channels=8, seed=3)
    write_rich_nwbfile(d / "rich.nwb", seconds=2.0, n_channels=32, seed=1,
                       external_target=(d / "other.nwb", "ElectricalSeries"))
    write_rich_nwbfile(d / "compressed.nwb", seconds=2.0, n_channels=32, seed=1, compressed=True)
    return d


@pytest.fixture
def inputs(originals, tmp_path):
    """Copies of the originals in tmp_path/in; checked unchanged at teardown too."""
    directory = tmp_path / "in"
    shutil.copytree(originals, directory)
    files = Inputs(directory)
    yield files
    files.check()


def partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name)


def walk(f: h5py.File) -> dict[str, tuple]:
    """Every link of the file, not followed: ``{path: (kind, ...)}``; /specifications left out.

    External links are given by the absolute file they resolve to (a relative
    link's text depends on where the linking file is).
    """
    out: dict[str, tuple] = {}
    base = os.path.dirname(os.path.abspath(f.filename))

    def visit(group: h5py.Group) -> None:
        for name in group:
            path = posixpath.join(group.name, name)
            if path == "/specifications":
                continue
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                out[path] = ("soft", link.path)
            elif isinstance(link, h5py.ExternalLink):
                out[path] = ("external", os.path.realpath(os.path.join(base, link.filename)), link.path)
            elif isinstance(group[name], h5py.Group):
                out[path] = ("group",)
                visit(group[name])
            else:
                out[path] = ("dataset",)

    visit(f)
    return out


def h5_value(value, f: h5py.File):
    """A comparable form of an attribute or dataset value: references by target name and object_id."""
    if isinstance(value, h5py.Reference):
        if not value:
            return ("ref", None)
        target = f[value]
        return ("ref", target.name, target.attrs.get("object_id"))
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.void):
        return tuple(h5_value(v, f) for v in value.tolist()) if not value.dtype.names else \
            tuple(h5_value(value[n], f) for n in value.dtype.names)
    if isinstance(value, np.ndarray):
        if value.dtype.names:
            return ("compound", value.shape, [h5_value(row, f) for row in value.reshape(-1)])
        if value.dtype.kind in "OS":
            return ("objects", value.shape, [h5_value(v, f) for v in value.reshape(-1).tolist()])
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same_h5(a: Path, b: Path) -> None:
    """Same links (by kind and target), attributes and dataset values, /specifications aside."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        la, lb = walk(fa), walk(fb)
        assert sorted(la) == sorted(lb), f"paths differ: {sorted(set(la) ^ set(lb))}"
        for path in la:
            assert la[path] == lb[path], f"{path}: {la[path]} vs {lb[path]}"
        for path in ["/"] + [p for p, k in la.items() if k[0] in ("group", "dataset")]:
            oa, ob = fa[path], fb[path]
            assert sorted(oa.attrs) == sorted(ob.attrs), f"{path}: attribute names differ"
            for key in oa.attrs:
                va, vb = h5_value(oa.attrs[key], fa), h5_value(ob.attrs[key], fb)
                assert same(va, vb), f"{path}: attribute {key!r} is {va!r} vs {vb!r}"
            if la.get(path, ("group",))[0] == "dataset":
                assert (oa.shape, oa.dtype) == (ob.shape, ob.dtype), path
                assert same(h5_value(oa[()], fa), h5_value(ob[()], fb)), f"{path}: values differ"


def numeric_datasets(path: Path, min_bytes: int) -> set[str]:
    """Hard-linked numeric datasets (no references, no compounds) of at least ``min_bytes``."""
    found = set()
    with h5py.File(path, "r") as f:
        for p, kind in walk(f).items():
            if kind[0] != "dataset":
                continue
            d = f[p]
            if d.dtype.kind in "iuf" and d.ndim and d.size * d.dtype.itemsize >= min_bytes:
                found.add(p)
    return found


def storage(d: h5py.Dataset) -> tuple:
    return d.chunks, d.compression, d.compression_opts, d.shuffle, d.maxshape, d.fillvalue


def filter_ids(d: h5py.Dataset) -> list[int]:
    plist = d.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def values(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][()]


# --------------------------------------------------------------------------- #
# 1. The output is the input, object by object                                 #
# --------------------------------------------------------------------------- #
def test_the_rich_file_fixture_has_what_the_tests_rely_on(inputs):
    """Guards the fixture: a link of each kind, references, compounds, the large datasets."""
    with h5py.File(inputs.rich, "r") as f:
        kinds = walk(f)
        assert kinds[EXTERNAL][0] == "external"
        assert kinds["/processing/ecephys/LFP_power/timestamps"] == ("soft", LFP_TS)
        assert kinds["/acquisition/shown_images/indexed_images"] == ("soft", "/acquisition/reference_images")
        assert h5py.check_dtype(ref=f["/acquisition/reference_images/order_of_images"].dtype) is h5py.Reference
        assert f["/intervals/trials/timeseries"].dtype.names == ("idx_start", "count", "timeseries")
        assert f["/processing/ophys/ImageSegmentation/PlaneSegmentation/pixel_mask"].dtype.names == ("x", "y", "weight")
        assert f[ES].chunks is None and f[ES].compression is None
    assert numeric_datasets(inputs.rich, MIN) == LARGE


def _edit_value(f):
    f["/units/spike_times"][3] = f["/units/spike_times"][3] + 1e-3


def _edit_reference(f):
    refs = f["/acquisition/reference_images/order_of_images"]
    refs[...] = refs[()][::-1]


def _edit_attribute(f):
    f["/acquisition/camera"].attrs["description"] = "changed"


def _edit_string(f):
    f["/intervals/trials/condition"][0] = "changed"


def _edit_soft_link(f):
    del f["/processing/ecephys/LFP_power/timestamps"]
    f["/processing/ecephys/LFP_power/timestamps"] = h5py.SoftLink("/processing/ecephys/LFP_power/data")


def _edit_external_link(f):
    shutil.copyfile(Path(f.filename).parent / "other.nwb", Path(f.filename).parent / "other_copy.nwb")
    del f[EXTERNAL]
    f[EXTERNAL] = h5py.ExternalLink("other_copy.nwb", ES)


@pytest.mark.parametrize("edit, nwb_level", [
    (_edit_value, True), (_edit_reference, True), (_edit_attribute, False), (_edit_string, False),
    (_edit_soft_link, False), (_edit_external_link, False),
])
def test_the_comparisons_of_these_tests_see_a_difference(inputs, edit, nwb_level):
    """The independent checks below fail on a copy that differs in one value, reference, attribute or link."""
    copy = inputs.dir / "copy.nwb"
    shutil.copyfile(inputs.rich, copy)
    assert_same_h5(inputs.rich, copy)
    with h5py.File(copy, "r+") as f:
        edit(f)
    with pytest.raises(AssertionError):
        assert_same_h5(inputs.rich, copy)
    if nwb_level:
        with pytest.raises(AssertionError):
            assert_same_nwb(inputs.rich, copy)
    inputs.check()


def test_repack_keeps_every_object_and_recompresses_the_large_datasets(inputs):
    out = inputs.dir / "out.nwb"
    chunks = {ES: (4096, 32), LFP.lstrip("/"): (500, 16)}  # keys with or without the leading slash
    result = repack(inputs.rich, out, min_bytes=MIN, chunks=chunks, progress=False)

    assert result.verified
    assert {d.path for d in result.datasets} == LARGE
    assert_same_h5(inputs.rich, out)
    assert_same_nwb(inputs.rich, out)
    with NWBHDF5IO(str(out), "r") as io:  # the external series still resolves to the other file
        linked = io.read().acquisition["external_ElectricalSeries"].data
        assert os.path.samefile(linked.file.filename, inputs.other)
        np.testing.assert_array_equal(linked[()], values(inputs.other, ES))
    with h5py.File(inputs.rich, "r") as fi, h5py.File(out, "r") as fo:
        asked = {ES: (4096, 32), LFP: (500, 16)}
        for path in LARGE:
            d = fo[path]
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True), path
            assert d.chunks == asked.get(path, guess_chunk_shape(d.shape, d.dtype)), path
        unchanged = 0
        for path, kind in walk(fi).items():
            if kind[0] != "dataset" or path in LARGE:
                continue
            di = fi[path]
            if di.dtype.names or h5py.check_dtype(ref=di.dtype):
                continue  # datasets holding references are rebuilt by HDMF's export (contiguous)
            assert storage(fo[path]) == storage(di), path
            unchanged += 1
        assert unchanged > 40
    inputs.check()
    assert partials(inputs.dir) == []


def test_small_compressed_datasets_keep_their_storage(inputs):
    """With the default min_bytes only the 3.8 MB series is rewritten; compressed small ones stay as they are."""
    out = inputs.dir / "out.nwb"
    result = repack(inputs.compressed, out, progress=False)
    assert [d.path for d in result.datasets] == [ES]
    with h5py.File(inputs.compressed, "r") as fi, h5py.File(out, "r") as fo:
        for path in (LFP, CAMERA):
            assert fi[path].compression == "gzip"
            assert storage(fo[path]) == storage(fi[path]), path
            np.testing.assert_array_equal(fo[path][()], fi[path][()])
    assert_same_h5(inputs.compressed, out)
    inputs.check()


def test_external_links_survive_repacking_into_another_directory(inputs, tmp_path):
    """The relative external link is rewritten relative to the output; it must resolve to the same file.

    Fails with repack.py as of b383aa3: compare_files compares the link text
    ('other.nwb' vs '../in/other.nwb'), so verification rejects a correct output.
    """
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "rich.nwb"
    repack(inputs.rich, out, min_bytes=MIN, progress=False)
    with h5py.File(out, "r") as f:
        link = f.get(EXTERNAL, getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert os.path.samefile(elsewhere / link.filename, inputs.other)
        np.testing.assert_array_equal(f[EXTERNAL][()], values(inputs.other, ES))
    assert_same_h5(inputs.rich, out)
    inputs.check()


def test_large_table_columns_and_images_are_recompressed(inputs):
    """Every numeric dataset of at least min_bytes is recompressed, table columns and images included.

    Fails with repack.py as of b383aa3: _large_fields only looks at
    ``container.fields``, and the values of hdmf ``Data`` objects (VectorData
    such as units/spike_times, VectorIndex, Image) are not fields, so large
    spike-time, waveform or image datasets are never recompressed.
    """
    out = inputs.dir / "out.nwb"
    expected = numeric_datasets(inputs.rich, 1_000)
    assert {"/units/spike_times", "/units/waveform_mean", "/acquisition/reference_images/mean_frame"} <= expected
    result = repack(inputs.rich, out, min_bytes=1_000, progress=False)
    assert {d.path for d in result.datasets} == expected
    with h5py.File(out, "r") as f:
        for path in expected:
            assert f[path].compression == "gzip", path
    assert_same_nwb(inputs.rich, out)
    inputs.check()


# --------------------------------------------------------------------------- #
# 2. Valid NWB, readable by plain pynwb                                        #
# --------------------------------------------------------------------------- #
def test_output_validates_and_plain_pynwb_reads_it(inputs, tmp_path):
    out = inputs.dir / "out.nwb"
    repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert validate(path=str(out)) == []
    data = read_with_plain_pynwb(out, "ElectricalSeries", tmp_path)  # a fresh interpreter; validates too
    np.testing.assert_array_equal(data, values(inputs.rich, ES))
    inputs.check()


# --------------------------------------------------------------------------- #
# 3. Codecs and chunk shapes                                                   #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("codec, filter_id, label", [
    ("zstd", 32015, "zstd-3"),
    ("blosc", 32001, "blosc-5"),
    ("none", None, "none"),
])
def test_codecs(inputs, codec, filter_id, label):
    if codec not in nwb_dask.available_codecs():
        pytest.skip(f"{codec} not available (hdf5plugin)")
    out = inputs.dir / "out.nwb"
    result = repack(inputs.rich, out, codec=codec, min_bytes=MIN, progress=False)
    assert {d.path: d.codec_out for d in result.datasets} == {p: label for p in LARGE}
    with h5py.File(inputs.rich, "r") as fi, h5py.File(out, "r") as fo:
        for path in LARGE:
            d = fo[path]
            assert d.chunks is not None, path
            assert filter_ids(d) == ([] if filter_id is None else [filter_id]), path
            np.testing.assert_array_equal(d[()], fi[path][()])
    inputs.check()


def test_codec_and_chunks_source_keep_a_compressed_input_as_it_is(inputs):
    out = inputs.dir / "out.nwb"
    result = repack(inputs.compressed, out, codec="source", chunks="source", min_bytes=MIN, progress=False)
    by_path = {d.path: d for d in result.datasets}
    with h5py.File(inputs.compressed, "r") as fi, h5py.File(out, "r") as fo:
        for path in (ES, LFP, CAMERA):  # the datasets the input stores compressed
            assert fi[path].compression == "gzip"
            assert by_path[path].codec_in == by_path[path].codec_out == "gzip-4+shuffle"
            assert (fo[path].compression, fo[path].compression_opts, fo[path].shuffle) == ("gzip", 4, True)
            assert fo[path].chunks == fi[path].chunks, path
        assert fi[CAMERA].chunks != guess_chunk_shape(fi[CAMERA].shape, fi[CAMERA].dtype)  # "source" != "auto"
    inputs.check()


def test_codec_and_chunks_source_keep_a_non_default_codec(inputs):
    """Repack with gzip 7 without shuffle and a tuple chunk shape, then again with "source": both kept."""
    mid = inputs.dir / "mid.nwb"
    first = repack(inputs.rich, mid, codec=("gzip", {"level": 7, "shuffle": False}), chunks=(1000,),
                   min_bytes=MIN, progress=False)
    assert {d.path: d.codec_out for d in first.datasets} == {p: "gzip-7" for p in LARGE}
    with h5py.File(mid, "r") as f:  # a tuple applies to the leading axes; the rest stay whole
        assert f[ES].chunks == (1000, 32)
        assert f[LFP].chunks == (1000, 16)
        assert f[LFP_TS].chunks == (1000,)
        assert f[CAMERA].chunks == (64, 64, 64)  # clipped to the shape
    out = inputs.dir / "out.nwb"
    before = sha256(mid)
    second = repack(mid, out, codec="source", chunks="source", min_bytes=MIN, progress=False)
    assert sha256(mid) == before
    assert {d.path: d.codec_out for d in second.datasets} == {p: "gzip-7" for p in LARGE}
    with h5py.File(mid, "r") as fm, h5py.File(out, "r") as fo:
        for path in LARGE:
            assert (fo[path].compression, fo[path].compression_opts, fo[path].shuffle) == ("gzip", 7, False)
            assert fo[path].chunks == fm[path].chunks, path
            np.testing.assert_array_equal(fo[path][()], values(inputs.rich, path))
    inputs.check()


def test_codec_source_keeps_uncompressed_datasets_uncompressed(inputs):
    """codec="source" keeps each dataset's own codec; for a contiguous dataset that is no compression.

    Fails with repack.py as of b383aa3: codec_from_dataset() returns None
    for contiguous datasets and repack falls back to gzip, while the same
    uncompressed data stored chunked keeps codec 'none'.
    """
    out = inputs.dir / "out.nwb"
    result = repack(inputs.rich, out, codec="source", min_bytes=MIN, progress=False)
    assert {d.path: (d.codec_in, d.codec_out) for d in result.datasets} == {p: ("none", "none") for p in LARGE}
    with h5py.File(out, "r") as f:
        for path in LARGE:
            assert filter_ids(f[path]) == [], path
    inputs.check()


def test_tuple_chunks_for_a_2d_dataset(inputs):
    out = inputs.dir / "out.nwb"
    result = repack(inputs.rich, out, chunks=(2048, 8), progress=False)  # default min_bytes: ES only
    assert [(d.path, d.chunks_out) for d in result.datasets] == [(ES, (2048, 8))]
    with h5py.File(out, "r") as f:
        assert f[ES].chunks == (2048, 8)
    inputs.check()


@pytest.mark.parametrize("chunks, min_bytes, match", [
    ({ES: (0, 32)}, MIN, re.escape(repr(ES)) + ".*invalid extent 0"),
    ({ES: (4096, 32, 2)}, MIN, re.escape(repr(ES)) + ".*too many axes"),
    ({LFP_TS: (2048, 8)}, MIN, re.escape(repr(LFP_TS)) + ".*too many axes"),
    ("bogus", MIN, "chunks must be 'auto', 'source', a shape or a mapping, got 'bogus'"),
    ({"/acquisition/ElectricalSerie/data": (4096, 32)}, MIN,
     re.escape("chunks given for ['/acquisition/ElectricalSerie/data'], which are not datasets repack recompresses")),
])
def test_bad_chunks_raise_chunk_shape_error(inputs, chunks, min_bytes, match):
    out = inputs.dir / "out.nwb"
    with pytest.raises(ChunkShapeError, match=match):
        repack(inputs.rich, out, chunks=chunks, min_bytes=min_bytes, progress=False)
    assert not out.exists()
    assert partials(inputs.dir) == []
    inputs.check()


# --------------------------------------------------------------------------- #
# 4. Safety                                                                    #
# --------------------------------------------------------------------------- #
def test_existing_output_needs_overwrite(inputs):
    out = inputs.dir / "out.nwb"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=re.escape(str(out)) + " exists; pass overwrite=True"):
        repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert out.read_bytes() == b"precious"
    result = repack(inputs.rich, out, min_bytes=MIN, overwrite=True, progress=False)
    assert result.verified
    np.testing.assert_array_equal(values(out, ES), values(inputs.rich, ES))
    assert partials(inputs.dir) == []
    inputs.check()


def test_output_that_is_the_input_is_refused(inputs):
    (inputs.dir / "sub").mkdir()
    symlink = inputs.dir / "symlink.nwb"
    symlink.symlink_to(inputs.rich)
    hardlink = inputs.dir / "hardlink.nwb"
    os.link(inputs.rich, hardlink)
    for target in (inputs.rich, str(inputs.rich), inputs.dir / "sub" / ".." / "rich.nwb", symlink, hardlink):
        with pytest.raises(RepackError, match="is the input file; repack writes a new file"):
            repack(inputs.rich, target, min_bytes=MIN, overwrite=True, progress=False)
    with pytest.raises(RepackError, match="is the input file"):
        repack(symlink, inputs.rich, overwrite=True, progress=False)
    assert partials(inputs.dir) == []
    inputs.check()


def test_missing_input_or_output_directory(inputs, tmp_path):
    out = inputs.dir / "out.nwb"
    missing = inputs.dir / "missing.nwb"
    with pytest.raises(FileNotFoundError, match="no such file: " + re.escape(str(missing))):
        repack(missing, out, progress=False)
    with pytest.raises(FileNotFoundError, match="output directory .* does not exist"):
        repack(inputs.rich, tmp_path / "nowhere" / "out.nwb", progress=False)
    assert not out.exists()
    assert partials(inputs.dir) == []
    inputs.check()


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(inputs, monkeypatch, exc_type):
    """The parallel writer fails after storing two blocks: no output, no temporary file."""
    original = nwb_dask.hdf5.write.run_block_tasks
    stored = []

    def failing(tasks, **kwargs):
        for done in original(tasks, **kwargs):
            yield done
            stored.append(done.key)
            if len(stored) == 2:
                raise exc_type("injected failure mid-write")

    monkeypatch.setattr(nwb_dask.hdf5.write, "run_block_tasks", failing)
    out = inputs.dir / "out.nwb"
    with pytest.raises(exc_type, match="injected failure mid-write"):
        repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert len(stored) == 2  # it did fail mid-way, with blocks already in the temporary file
    assert not out.exists()
    assert partials(inputs.dir) == []
    inputs.check()


def test_interrupted_verification_leaves_nothing(inputs, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("injected during verification")

    monkeypatch.setattr(repack_module, "compare_files", interrupted)
    out = inputs.dir / "out.nwb"
    with pytest.raises(KeyboardInterrupt, match="injected during verification"):
        repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert not out.exists()
    assert partials(inputs.dir) == []
    inputs.check()


_CHILD = textwrap.dedent(
    """
    import sys
    from nwb_dask.tools.repack import repack
    repack(sys.argv[1], sys.argv[2], codec=("gzip", {"level": 9}), min_bytes=10_000, progress=False)
    print("finished")
    """
)


def test_sigkill_during_repack_leaves_the_input_and_no_output(tmp_path):
    """A repack killed with SIGKILL mid-write: input intact, nothing at the output (a temp may remain)."""
    src = write_rich_nwbfile(tmp_path / "big.nwb", seconds=10.0, n_channels=64, seed=2)  # 38 MB
    digest = sha256(src)
    out = tmp_path / "out.nwb"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(src), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not partials(tmp_path):  # the export has started writing the temporary file
            assert proc.poll() is None, f"repack ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "repack never started writing"
            time.sleep(0.02)
        time.sleep(0.5)
        assert proc.poll() is None, "repack finished within 0.5 s; the test needs a bigger file"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "finished" not in proc.stdout.read()
    assert not out.exists()
    assert sha256(src) == digest
    assert all(re.fullmatch(r"\.out\.[0-9a-f]{8}\.partial\.nwb", name) for name in partials(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial" not in p.name) == ["big.nwb"]


# --------------------------------------------------------------------------- #
# 5. Verification catches corruption                                           #
# --------------------------------------------------------------------------- #
def test_verification_catches_a_dataset_written_wrong(inputs, monkeypatch):
    """The writer's lazy read of one dataset is off by one: RepackError naming it, and no output."""
    original = nwb_dask.nwb.read.read_dataset
    corrupted = []

    def off_by_one(path, name, *args, **kwargs):
        array = original(path, name, *args, **kwargs)
        if name == ES and not corrupted:  # the first read feeds the writer; verification reads again
            corrupted.append(name)
            return array + np.int16(1)
        return array

    monkeypatch.setattr(nwb_dask.nwb.read, "read_dataset", off_by_one)
    out = inputs.dir / "out.nwb"
    with pytest.raises(RepackError, match=r"(?s)verification failed.*" + re.escape(ES) + ": values differ") as info:
        repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert corrupted == [ES]
    assert CAMERA not in str(info.value)  # only the corrupted dataset is named
    assert not out.exists()
    assert partials(inputs.dir) == []
    inputs.check()


# --------------------------------------------------------------------------- #
# 6. RepackResult                                                              #
# --------------------------------------------------------------------------- #
def test_repack_result(inputs):
    out = inputs.dir / "out.nwb"
    result = repack(inputs.rich, out, min_bytes=MIN, progress=False)
    assert result.input == inputs.rich.resolve()
    assert result.output == out.absolute()
    assert result.input_bytes == os.path.getsize(inputs.rich)
    assert result.output_bytes == os.path.getsize(out) < result.input_bytes
    assert result.verified and 0 < result.verify_seconds < result.seconds
    by_path = {d.path: d for d in result.datasets}
    assert set(by_path) == LARGE
    with h5py.File(inputs.rich, "r") as fi, h5py.File(out, "r") as fo:
        for path, d in by_path.items():
            assert d.shape == fi[path].shape
            assert d.dtype == str(fi[path].dtype)
            assert d.logical_bytes == fi[path].size * fi[path].dtype.itemsize
            assert d.chunks_in is None  # contiguous in the uncompressed input
            assert d.chunks_out == fo[path].chunks
            assert (d.codec_in, d.codec_out) == ("none", "gzip-4+shuffle")
            assert d.stored_in == fi[path].id.get_storage_size() == d.logical_bytes
            assert d.stored_out == fo[path].id.get_storage_size()
            assert d.ratio_in == 1.0
            assert d.ratio_out > 1.0, path
    assert by_path[ES].ratio_out > 1.5
    assert result.stats.logical_bytes == sum(d.logical_bytes for d in result.datasets)
    assert sorted(result.stats.datasets) == sorted(LARGE)
    report = result.report()
    for path in LARGE:
        assert path in report
    assert str(out) in report and "every object compared" in report

    unverified = repack(inputs.rich, inputs.dir / "unverified.nwb", min_bytes=MIN, verify=False, progress=False)
    assert not unverified.verified and unverified.verify_seconds == 0.0
    assert "(not verified)" in unverified.report()
    inputs.check()


# --------------------------------------------------------------------------- #
# 7. A process-based dask scheduler                                            #
# --------------------------------------------------------------------------- #
def test_processes_scheduler(inputs):
    out = inputs.dir / "out.nwb"
    result = repack(inputs.rich, out, min_bytes=MIN, scheduler="processes", progress=False)
    assert result.verified
    assert {d.path for d in result.datasets} == LARGE
    with h5py.File(inputs.rich, "r") as fi, h5py.File(out, "r") as fo:
        for path in LARGE:
            assert fo[path].compression == "gzip"
            np.testing.assert_array_equal(fo[path][()], fi[path][()])
    inputs.check()

"""Files written by older pynwb releases (issue 15.2): repack, convert and consolidate them, migrations reported.

The fixtures in tests/data were written by pynwb 1.5.1, 2.0.1, 2.8.3 and 3.0.0
(tests/data/make_old_files.py says how).  pynwb 4's export changes their
schema in a few documented ways (nwb_dask.tools.migrations.MIGRATIONS); the
verifiers must accept exactly those, report them, and refuse anything else.
Each output is opened and validated by plain pynwb in a fresh interpreter,
compared with the input object by object through pynwb (every object ID, type
and field value, element by element) and through h5py (every attribute and
dataset value, bar the listed migrations).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest
from conftest import assert_same_nwb

import nwb_dask.cli
import nwb_dask.tools.migrations
import nwb_dask.hdf5.read
from nwb_dask import consolidate, convert
from nwb_dask.tools.migrations import Difference, match
from nwb_dask.tools.repack import RepackVerificationError, repack
from nwb_dask.tools.verify import compare_files

pytestmark = pytest.mark.filterwarnings(
    "ignore:EnumData is experimental:UserWarning",
    "ignore:.*compression may not be available:UserWarning",
)

DATA = Path(__file__).parent / "data"
ELECTRODES = "/general/extracellular_ephys/electrodes"
BANDS = "/processing/ecephys/decomposition/bands"
RETYPED = {(ELECTRODES, "attribute 'neurodata_type'", "ElectrodesTable"),
           (ELECTRODES, "attribute 'namespace'", "ElectrodesTable")}
OFFSET = "attribute 'offset'", "schema default"

#: fixture -> (migrations of a default repack, of a repack that rewrites every numeric dataset, of a
#: conversion to Zarr; the last defaults to the second).  A migration is (object path, what changed, rule).
#: An HDF5 export rebuilds only what it rewrites: tables are retyped on read, the defaults of series
#: appear where a series is rebuilt; an export to Zarr rebuilds everything.
TS_NO_UNIT = "/acquisition/test_timeseries/data"
EXPECTED = {
    "pynwb1.5.1_series.nwb": ({("/acquisition/external_movie/data", "object", "TimeSeries data")}, {
        ("/acquisition/external_movie/data", "object", "TimeSeries data"),
        ("/acquisition/no_unit_movie/data", "attribute 'unit'", "TimeSeries unit"),
        ("/acquisition/no_unit_movie/data", *OFFSET),
        ("/acquisition/rate_series/data", *OFFSET),
        ("/acquisition/stamped_series/data", *OFFSET)}),
    "pynwb2.0.1_electrodes.nwb": (RETYPED, RETYPED | {("/acquisition/ElectricalSeries/data", *OFFSET)}),
    "pynwb2.0.1_experimental.nwb": (RETYPED, RETYPED | {
        ("/acquisition/ElectricalSeries/data", *OFFSET),
        (ELECTRODES + "/x", "attribute 'namespace'", "namespace")}),
    "pynwb2.8.3_electrodes.nwb": (RETYPED, RETYPED),
    "pynwb3.0.0_ecephys384.nwb": (RETYPED, RETYPED),
    "pynwb3.0.0_bands.nwb": (RETYPED | {(BANDS, "attribute 'neurodata_type'", "FrequencyBandsTable"),
                                        (BANDS, "attribute 'namespace'", "FrequencyBandsTable")},) * 2,
    # two of pynwb's own back-compatibility files (tests/data/PYNWB_LICENSE.txt)
    "back_compat_1.0.2_nwbfile.nwb": (set(), set(), {("/", "attribute 'help'", "help"),
                                                     ("/", "attribute 'object_id'", "object_id")}),
    "back_compat_1.5.1_timeseries_no_unit.nwb": (set(), {(TS_NO_UNIT, "attribute 'unit'", "TimeSeries unit"),
                                                         (TS_NO_UNIT, *OFFSET)}),
}
FIXTURES = sorted(EXPECTED)

_PLAIN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pynwb import NWBHDF5IO, validate
    from hdmf_zarr.nwb import NWBZarrIO
    path, is_zarr = sys.argv[1], sys.argv[2] == "1"
    io = NWBZarrIO(path, "r") if is_zarr else NWBHDF5IO(path, "r")
    with io:
        nwbfile = io.read()
        n = 0
        for obj in nwbfile.objects.values():  # every dataset read in full
            for value in list(obj.fields.values()) + [getattr(obj, "data", None)]:
                if hasattr(value, "shape") and hasattr(value, "dtype"):
                    np.asarray(value[()]); n += 1
        errors = [str(e) for e in validate(io=io)]
    # as `python -m pynwb.validate FILE` does it: against the schema the file caches
    cached = [] if is_zarr else [str(e) for e in validate(path=path)]
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    print(json.dumps({"errors": errors, "cached_errors": cached, "datasets": n, "electrodes": type(nwbfile.electrodes).__name__}))
    """
)


def plain_pynwb(path: Path) -> dict:
    """Open ``path`` with plain pynwb (or hdmf-zarr) in a fresh interpreter, read every dataset, validate."""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _PLAIN, str(path), "1" if path.is_dir() else "0"],
                          capture_output=True, text=True, cwd=path.parent)
    if proc.returncode:
        pytest.fail(f"plain pynwb could not read {path}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def validated_inputs() -> dict:
    return {name: plain_pynwb(DATA / name) for name in FIXTURES}


def as_set(migrations) -> set:
    return {(m.path, m.what, m.rule) for m in migrations}


def check_output(src: Path, out: Path, validated_inputs: dict, expected: set) -> None:
    """``out`` opens in plain pynwb, validates as well as ``src`` (its errors among the input's), equals it."""
    got = plain_pynwb(out)
    assert set(got["errors"]) <= set(validated_inputs[src.name]["errors"]), got["errors"]
    assert set(got["cached_errors"]) <= set(validated_inputs[src.name]["cached_errors"]), got["cached_errors"]
    if not out.is_dir():
        # Through pynwb: every object, ID, type, field value element by element.  (A Zarr store is
        # compared through its conversion back to HDF5: hdmf-zarr reads array attributes such as
        # external_file's starting_frame as lists, which conftest's strict comparison tells from arrays.)
        # A file of NWB < 2.1 has no object IDs: pynwb draws new ones at every read, so objects cannot be
        # matched by ID; compare_files below compares it object by object by path.
        with h5py.File(src, "r") as f:
            has_ids = "object_id" in f.attrs
        if has_ids:
            assert_same_nwb(src, out)
        found: list = []
        assert compare_files(src, out, migrations=found) == []  # through h5py: every attribute and value
        assert as_set(found) == expected


# --------------------------------------------------------------------------- #
# repack, convert, consolidate of each fixture                                #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("min_bytes", [2**20, 0], ids=["default", "min-mb-0"])
def test_repack_old_file(tmp_path, name, min_bytes, validated_inputs):
    src = DATA / name
    result = repack(src, tmp_path / "out.nwb", min_bytes=min_bytes, progress=False)
    expected = EXPECTED[name][min_bytes == 0]
    assert as_set(result.migrations) == expected
    report = result.report()
    for m in result.migrations:
        assert str(m) in report
    check_output(src, tmp_path / "out.nwb", validated_inputs, expected)


@pytest.mark.parametrize("name", FIXTURES)
def test_convert_old_file_to_zarr_and_back(tmp_path, name, validated_inputs):
    src = DATA / name
    store, back = tmp_path / "out.nwb.zarr", tmp_path / "back.nwb"
    to_zarr = convert(src, store, min_bytes=0, progress=False)
    expected = EXPECTED[name][-1]
    assert as_set(to_zarr.migrations) == expected
    assert all(str(m) in to_zarr.report() for m in to_zarr.migrations)
    check_output(src, store, validated_inputs, expected)
    back_result = convert(store, back, min_bytes=0, progress=False)
    assert back_result.migrations == []  # the store already has today's schema
    check_output(src, back, validated_inputs, expected)


@pytest.mark.parametrize("name", FIXTURES)
def test_consolidate_old_file(tmp_path, name, validated_inputs):
    """consolidate copies the objects as they are (HDF5's copy, no pynwb export): no migration, the old schema kept."""
    src = DATA / name
    linked = {"pynwb1.5.1_series.nwb": "/acquisition/rate_series/data", "back_compat_1.0.2_nwbfile.nwb": "/identifier",
              "back_compat_1.5.1_timeseries_no_unit.nwb": TS_NO_UNIT}.get(name, "/acquisition/ElectricalSeries/data")
    shutil.copyfile(src, tmp_path / "data.nwb")
    parent = tmp_path / "parent.nwb"
    shutil.copyfile(src, parent)
    with h5py.File(parent, "r+") as f:
        del f[linked]
        f[linked] = h5py.ExternalLink("data.nwb", linked)
    result = consolidate(parent, tmp_path / "out.nwb", progress=False)
    assert result.datasets == [linked] and result.verified
    check_output(src, tmp_path / "out.nwb", validated_inputs, set())
    with h5py.File(tmp_path / "out.nwb", "r") as f:
        assert isinstance(f.get(linked, getlink=True), h5py.HardLink)
        if "ElectricalSeries" in linked:
            assert f[ELECTRODES].attrs["neurodata_type"] == "DynamicTable"


def test_fixtures_are_old_and_small():
    """What the fixtures are made to cover: versions, electrodes type, 384 channels, missing attributes."""
    versions = {}
    for name in FIXTURES:
        assert (DATA / name).stat().st_size < 400_000, name
        with h5py.File(DATA / name, "r") as f:
            versions[name] = f.attrs["nwb_version"]
            if "electrodes" in f.get("general/extracellular_ephys", {}):
                assert f[ELECTRODES].attrs["neurodata_type"] == "DynamicTable"
                assert f[ELECTRODES].attrs["namespace"] == "hdmf-common"
    assert versions["pynwb1.5.1_series.nwb"] == "2.3.0"
    assert versions["pynwb2.0.1_electrodes.nwb"] == "2.4.0"
    assert versions["pynwb2.8.3_electrodes.nwb"] == "2.7.0"
    assert versions["pynwb3.0.0_ecephys384.nwb"] == versions["pynwb3.0.0_bands.nwb"] == "2.8.0"
    with h5py.File(DATA / "pynwb3.0.0_ecephys384.nwb", "r") as f:
        assert f["acquisition/ElectricalSeries/data"].shape[1] == 384
    with h5py.File(DATA / "pynwb1.5.1_series.nwb", "r") as f:
        assert "offset" not in f["acquisition/rate_series/data"].attrs
        assert "unit" not in f["acquisition/no_unit_movie/data"].attrs
        assert "data" not in f["acquisition/external_movie"] and "external_file" in f["acquisition/external_movie"]
    with h5py.File(DATA / "pynwb3.0.0_bands.nwb", "r") as f:
        assert f[BANDS].attrs["neurodata_type"] == "DynamicTable"
    with h5py.File(DATA / "pynwb2.0.1_experimental.nwb", "r") as f:
        assert f[ELECTRODES + "/x"].attrs["namespace"] == "hdmf-experimental"


# --------------------------------------------------------------------------- #
# the CLI prints them, --json has them                                         #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("tool", ["repack", "convert"])
def test_cli_reports_migrations(tmp_path, capsys, tool):
    src = DATA / "pynwb3.0.0_bands.nwb"
    out = tmp_path / ("out.nwb" if tool == "repack" else "out.nwb.zarr")
    assert nwb_dask.cli.main([tool, str(src), str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "4 schema migration(s)" in text
    assert f"{BANDS}: attribute 'neurodata_type' 'DynamicTable' -> 'FrequencyBandsTable' (FrequencyBandsTable)" in text
    assert nwb_dask.cli.main([tool, str(src), str(out), "-q", "--overwrite", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {(m["path"], m["what"], m["before"], m["after"], m["rule"]) for m in data["migrations"]} >= {
        (ELECTRODES, "attribute 'neurodata_type'", "DynamicTable", "ElectrodesTable", "ElectrodesTable"),
        (BANDS, "attribute 'namespace'", "hdmf-common", "core", "FrequencyBandsTable")}


# --------------------------------------------------------------------------- #
# anything else is still refused                                               #
# --------------------------------------------------------------------------- #
def test_bands_description_kept(tmp_path):
    """pynwb's FrequencyBandsTable forces its own description: the file's is put back, not lost."""
    src = DATA / "pynwb3.0.0_bands.nwb"
    repack(src, tmp_path / "out.nwb", min_bytes=0, progress=False)
    convert(src, tmp_path / "out.nwb.zarr", progress=False)
    with h5py.File(tmp_path / "out.nwb", "r") as f:
        assert f[BANDS].attrs["description"] == "theta and gamma, Hilbert transform"
    import zarr

    assert zarr.open_group(str(tmp_path / "out.nwb.zarr"), "r")[BANDS.lstrip("/")].attrs["description"] == \
        "theta and gamma, Hilbert transform"


@pytest.mark.parametrize("tool", ["repack", "convert"])
def test_lost_description_refused(tmp_path, monkeypatch, tool):
    """Without the fix above pynwb's export loses the description: a metadata change, refused with the object named."""
    monkeypatch.setattr(nwb_dask.tools.migrations, "keep_user_metadata", lambda nwbfile, src_io: [])
    src = DATA / "pynwb3.0.0_bands.nwb"
    out = tmp_path / ("out.nwb" if tool == "repack" else "out.nwb.zarr")
    run = repack if tool == "repack" else convert
    with pytest.raises(RepackVerificationError, match=f"{BANDS}: attribute 'description' is 'theta and gamma"):
        run(src, out, min_bytes=0, progress=False)  # the bands rebuilt (a repack copies an untouched table as it is)
    assert not out.exists()


def _migrated(tmp_path) -> tuple[Path, Path]:
    src = DATA / "pynwb2.0.1_experimental.nwb"
    out = tmp_path / "out.nwb"
    repack(src, out, min_bytes=0, progress=False)  # the verifier's read handles are released: "r+" works at once
    return src, out


@pytest.mark.parametrize("change, message", [
    (lambda f: f["acquisition/ElectricalSeries/data"].__setitem__((0, 0), 7), "ElectricalSeries/data: values differ"),
    (lambda f: f["acquisition/ElectricalSeries/data"].attrs.__setitem__("offset", 0.5),
     "attributes \\['offset'\\] differ in presence"),
    (lambda f: f["acquisition/ElectricalSeries/data"].attrs.__setitem__("conversion", 1.0), "attribute 'conversion'"),
    # half a migration: the type back, the namespace not
    (lambda f: f[ELECTRODES].attrs.__setitem__("neurodata_type", "DynamicTable"), "electrodes: attribute 'namespace'"),
    (lambda f: f[ELECTRODES].attrs.__setitem__("description", "other"), "electrodes: attribute 'description'"),
    (lambda f: f[ELECTRODES + "/x"].attrs.__setitem__("namespace", "core"), "x: attribute 'namespace'"),
    (lambda f: f[ELECTRODES + "/y"].attrs.__setitem__("neurodata_type", "VectorIndex"), "y: attribute 'neurodata_type'"),
    (lambda f: f["acquisition/ElectricalSeries"].attrs.__setitem__("unit", "unknown"),
     "ElectricalSeries: attributes \\['unit'\\]"),
    (lambda f: f.create_dataset("acquisition/ElectricalSeries/extra", data=[1]), "extra: only in"),
])
def test_real_changes_refused(tmp_path, change, message):
    """A migrated output with one more change of data or metadata: that change is a difference, named."""
    src, out = _migrated(tmp_path)
    with h5py.File(out, "r+") as f:
        change(f)
    found: list = []
    diffs = compare_files(src, out, migrations=found)
    assert len(diffs) == 1, diffs
    assert re.search(message, diffs[0]), diffs


@pytest.mark.parametrize("change, message", [
    (lambda g: g[ELECTRODES.lstrip("/")].attrs.__setitem__("description", "other"), "attribute 'description'"),
    (lambda g: g["acquisition/ElectricalSeries/data"].attrs.__setitem__("offset", 2.0), "\\['offset'\\] differ"),
    (lambda g: g[ELECTRODES.lstrip("/") + "/x"].attrs.__setitem__("namespace", "core"), "attribute 'namespace'"),
    (lambda g: g["acquisition/ElectricalSeries/data"].__setitem__((0, 0), 7), "ElectricalSeries/data: values differ"),
    (lambda g: g.create_group("acquisition/extra"), "extra: only in"),
    (lambda g: g["acquisition/ElectricalSeries/starting_time"].__setitem__(0, 1.5), "starting_time: values differ"),
])
def test_real_changes_refused_zarr(tmp_path, change, message):
    """The same rule in convert's verifier, on a Zarr output."""
    import re

    import zarr
    from pynwb import NWBHDF5IO

    from nwb_dask.tools.verify import compare_conversion, object_ids

    src = DATA / "pynwb2.0.1_experimental.nwb"
    store = tmp_path / "out.nwb.zarr"
    result = convert(src, store, min_bytes=0, progress=False)
    with NWBHDF5IO(str(src), "r") as io:
        ids = object_ids(io.read())
    assert compare_conversion(src, store, result.datasets, ids, True, None, []) == []
    change(zarr.open_group(str(store), "r+"))
    found: list = []
    diffs = compare_conversion(src, store, result.datasets, ids, True, None, found)
    assert diffs and any(re.search(message, d) for d in diffs), diffs


def test_rules_are_narrow():
    """Each rule matches its own change only: other values, places or types are no migration."""
    es = {"neurodata_type": "ElectricalSeries", "namespace": "core"}
    table = {"neurodata_type": "DynamicTable", "namespace": "hdmf-common"}
    retyped = {"neurodata_type": "ElectrodesTable", "namespace": "core"}
    image = {"neurodata_type": "ImageSeries", "namespace": "core"}
    nwbfile = {"neurodata_type": "NWBFile", "namespace": "core"}
    ok = [
        Difference(ELECTRODES, "neurodata_type", "DynamicTable", "ElectrodesTable", table, retyped, {}),
        Difference("/acquisition/es/data", "offset", "(absent)", 0.0, {}, {}, es),
        Difference("/acquisition/m/data", "unit", "(absent)", "unknown", {}, {}, image),
        Difference("/acquisition/es/data", "unit", "(absent)", "unknown", {}, {}, es),
        Difference("/acquisition/m/data", None, "(absent)", "dataset", {}, {}, image, 0, {"external_file"}),
        Difference("/", "help", "an NWB:N file", "(absent)", nwbfile, nwbfile, {}),
        Difference("/", "object_id", "(absent)", "0d8ab2b2-1d6c-4a41-9e0a-5c44e1d0e0a4", nwbfile, nwbfile, {}),
    ]
    assert [match(d) is not None for d in ok] == [True] * len(ok)
    refused = [
        Difference("/processing/x/electrodes", "neurodata_type", "DynamicTable", "ElectrodesTable", table, retyped, {}),
        Difference(ELECTRODES, "neurodata_type", "DynamicTable", "Units", table, retyped, {}),
        Difference("/acquisition/es/data", "offset", "(absent)", 1.0, {}, {}, es),
        Difference("/acquisition/es/data", "offset", 0.5, 0.0, {}, {}, es),
        Difference("/acquisition/es/data", "offset", 0.0, "(absent)", {}, {}, es),
        Difference("/acquisition/es/data", "unit", "(absent)", "volts", {}, {}, es),
        Difference(ELECTRODES + "/data", "unit", "(absent)", "unknown", {}, {}, table),
        Difference("/acquisition/m/data", None, "(absent)", "dataset", {}, {}, image, 3, {"external_file"}),
        Difference(ELECTRODES + "/data", None, "(absent)", "dataset", {}, {}, table, 0),
        Difference("/acquisition/es/data", "offset", "(absent)", None, {}, {}, es),
        Difference("/", "description", "text", "(absent)", nwbfile, nwbfile, {}),
        Difference("/acquisition/es/data", "help", "text", "(absent)", {}, {}, es),  # an untyped dataset's
        Difference("/", "object_id", "(absent)", "not-a-uuid", nwbfile, nwbfile, {}),
        Difference("/", "object_id", "0d8ab2b2-1d6c-4a41-9e0a-5c44e1d0e0a4", "1d8ab2b2-1d6c-4a41-9e0a-5c44e1d0e0a4",
                   nwbfile, nwbfile, {}),
    ]
    assert [match(d) for d in refused] == [None] * len(refused)


def test_electrodes_description_kept(tmp_path, monkeypatch):
    """pynwb's ElectrodesTable forces its description too: an older file's own one survives repack and convert."""
    src = tmp_path / "own.nwb"
    shutil.copyfile(DATA / "pynwb2.8.3_electrodes.nwb", src)
    with h5py.File(src, "r+") as f:
        f[ELECTRODES].attrs["description"] = "Neuropixels 1.0, bank 0"
    repack(src, tmp_path / "out.nwb", min_bytes=0, progress=False)
    back = tmp_path / "back.nwb"
    convert(src, tmp_path / "out.nwb.zarr", progress=False)
    convert(tmp_path / "out.nwb.zarr", back, progress=False)
    for out in (tmp_path / "out.nwb", back):
        with h5py.File(out, "r") as f:
            assert f[ELECTRODES].attrs["description"] == "Neuropixels 1.0, bank 0"
    monkeypatch.setattr(nwb_dask.tools.migrations, "keep_user_metadata", lambda nwbfile, src_io: [])
    with pytest.raises(RepackVerificationError, match="electrodes: attribute 'description' is 'Neuropixels"):
        repack(src, tmp_path / "lost.nwb", min_bytes=0, progress=False)


@pytest.mark.parametrize("tool", ["repack", "convert", "consolidate"])
def test_outputs_open_for_writing_right_after(tool, tmp_path):
    """The verifiers read through nwb_dask.hdf5.read's handle cache; it must not keep input or output open."""
    src = tmp_path / "in.nwb"
    shutil.copy(DATA / "pynwb3.0.0_ecephys384.nwb", src)
    out = tmp_path / "out.nwb"
    if tool == "convert":
        store = tmp_path / "mid.nwb.zarr"
        convert(src, store, min_bytes=0, progress=False)
        convert(store, out, min_bytes=0, progress=False)
    elif tool == "repack":
        repack(src, out, min_bytes=0, progress=False)
    else:  # a dataset of another file, linked: consolidate copies and verifies it
        shutil.copy(DATA / "pynwb3.0.0_ecephys384.nwb", tmp_path / "other.nwb")
        with h5py.File(src, "r+") as f:
            data = f["acquisition/ElectricalSeries/data"]
            f.create_group("scratch")["linked"] = h5py.ExternalLink("other.nwb", data.name)
        consolidate(src, out, progress=False)
    for path in (src, out):
        with h5py.File(path, "r+") as f:
            f.attrs["touched"] = 1

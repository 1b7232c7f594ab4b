"""The same scripts with ``NWBHDF5IO`` and with ``NWBDaskIO``: the same outcomes (issue 15.1).

Each script runs once per IO class, in a directory of its own, and returns
what a user would observe: values read back, ``container_source``, object ID
relations, link kinds and targets, directory listings, warnings and errors
(type and message, with the directory replaced by ``<dir>``).  The outcomes
must be equal; each test also checks some of them outright (e.g. that
``container_source`` is the path written), so that the two classes cannot
agree on a wrong answer.
"""

from __future__ import annotations

import os
import gc
import warnings
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from dateutil.tz import tzutc
from hdmf.backends.errors import UnsupportedOperation
from hdmf.backends.warnings import BrokenLinkWarning
from pynwb import NWBHDF5IO, NWBFile, TimeSeries, get_manager, validate

from nwb_dask import NWBDaskIO
from pynwb.testing.mock.file import mock_NWBFile

START = datetime(2024, 1, 2, 3, 4, 5, tzinfo=tzutc())


def _nwbfile(n: int = 20) -> NWBFile:
    nwbfile = NWBFile(session_description="drop-in", identifier="same-id", session_start_time=START,
                      file_create_date=START)
    nwbfile.add_acquisition(TimeSeries(name="ts", data=np.arange(n, dtype="int16"), unit="mV", rate=10.0))
    return nwbfile


def _comm():
    """MPI's world communicator (one rank here)."""
    try:
        from mpi4py import MPI
    except ImportError:
        pytest.skip("mpi4py is not installed")
    return MPI.COMM_WORLD


def _attempt(fn):
    """``fn()``, or ``("raises", type, message)``."""
    try:
        return fn()
    except Exception as exc:  # the outcome being compared
        return ("raises", type(exc).__name__, str(exc))


def _write(io_class, nwbfile, path, **kwargs) -> None:
    with io_class(path, "w", **kwargs) as io:
        io.write(nwbfile)


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _outcomes(script, tmp_path) -> dict:
    """``{class name: outcome}``: the script run with each IO class, warnings included."""
    results = {}
    for io_class in (NWBHDF5IO, NWBDaskIO):
        d = tmp_path / io_class.__name__
        d.mkdir()
        here = os.getcwd()
        os.chdir(d)
        try:
            # Garbage an earlier test left (an unclosed NWBHDF5IO of another test warns when it is
            # collected) is collected here, not inside the script's record of warnings.
            gc.collect()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outcome = script(io_class, d)
        finally:
            os.chdir(here)
        outcome = {"outcome": outcome, "files": _listing(d),
                   "warnings": sorted((w.category.__name__, str(w.message)) for w in caught)}
        results[io_class.__name__] = _normalise(outcome, str(d))
    return results


def _normalise(value, root: str):
    if isinstance(value, str):
        return value.replace(root, "<dir>")
    if isinstance(value, (list, tuple)):
        return type(value)(_normalise(v, root) for v in value)
    if isinstance(value, dict):
        return {k: _normalise(v, root) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _same(tmp_path, script) -> dict:
    results = _outcomes(script, tmp_path)
    assert results["NWBDaskIO"] == results["NWBHDF5IO"]
    return results["NWBDaskIO"]


# --------------------------------------------------------------------------- #
def test_second_write_of_the_same_nwbfile_and_container_source(tmp_path):
    """Writing one NWBFile twice to the same path works; to another path it is hdmf's ValueError."""

    def script(io_class, d):
        nwbfile = _nwbfile()
        _write(io_class, nwbfile, "session.nwb")  # a relative path, resolved like hdmf does
        first = nwbfile.container_source
        _write(io_class, nwbfile, d / "session.nwb")  # again, as a Path: the same file
        other = _attempt(lambda: _write(io_class, nwbfile, d / "other.nwb"))
        with io_class(d / "session.nwb", "r") as io:
            read = io.read()
            out = dict(first=first, second=nwbfile.container_source, series=nwbfile.acquisition["ts"].container_source,
                       other=other, read=read.container_source, source=io.source,
                       read_series=read.acquisition["ts"].container_source,
                       same_ids=set(read.objects) == set(nwbfile.objects), root_id=read.object_id == nwbfile.object_id,
                       data=read.acquisition["ts"].data[:].tolist())
        return out

    results = _outcomes(script, tmp_path)
    # the write to other.nwb fails in hdmf's build: NWBHDF5IO leaves the file it had created, NWBDaskIO nothing
    assert results["NWBHDF5IO"].pop("files") == ["other.nwb", "session.nwb"]
    assert results["NWBDaskIO"].pop("files") == ["session.nwb"]
    assert results["NWBDaskIO"] == results["NWBHDF5IO"]
    got = results["NWBDaskIO"]["outcome"]
    assert got["first"] == got["second"] == got["series"] == got["read"] == got["source"] == "<dir>/session.nwb"
    assert got["other"][:2] == ("raises", "ValueError") and "Cannot change container_source once set" in got["other"][2]
    assert got["same_ids"] and got["root_id"] and got["data"] == list(range(20))


def test_every_constructor_form(tmp_path):
    """path, file= (with and without path), positional arguments, driver, manager, load_namespaces, read_nwb."""

    def script(io_class, d):
        _write(io_class, _nwbfile(), "a.nwb")
        out = {}

        def read_with(**kwargs):
            with io_class(**kwargs) as io:
                read = io.read()
                return [read.container_source, io.source, read.acquisition["ts"].data[:].tolist()]

        with h5py.File("a.nwb", "r") as f:
            out["file"] = read_with(file=f, mode="r")
        with h5py.File("a.nwb", "r") as f:
            out["path+file"] = read_with(path=str(d / "a.nwb"), file=f, mode="r")
        with h5py.File("a.nwb", "r") as f:
            out["path+other file"] = _attempt(lambda: read_with(path="b.nwb", file=f, mode="r"))
        out["no path"] = _attempt(lambda: io_class(mode="r"))
        out["positional"] = _attempt(lambda: read_with(path="a.nwb"))
        with io_class("a.nwb", "r", False, get_manager()) as io:  # path, mode, load_namespaces, manager
            out["positional manager"] = io.read().acquisition["ts"].data[:].tolist()
        out["driver core"] = _attempt(lambda: (_write(io_class, _nwbfile(), "core.nwb", driver="core"),
                                               read_with(path="core.nwb", mode="r", driver="core"))[1])
        out["driver family"] = _attempt(lambda: _write(io_class, _nwbfile(), "fam%d.nwb", driver="family"))  # in place
        out["comm"] = _attempt(lambda: _write(io_class, _nwbfile(), "mpi.nwb", comm=_comm()))  # in place, collective
        out["manager"] = _attempt(lambda: (_write(io_class, _nwbfile(), "m.nwb", manager=get_manager()),
                                           read_with(path="m.nwb", manager=get_manager()))[1])
        with h5py.File("given.nwb", "w") as f:  # an open file to write into: written in place by both
            with io_class(file=f, mode="w") as io:
                io.write(_nwbfile())
                out["write into file="] = io.source
        out["given"] = read_with(path="given.nwb")
        with h5py.File("a.nwb", "r") as f:
            read = io_class.read_nwb(file=f)
            out["read_nwb file"] = [read.container_source, read.acquisition["ts"].data[:].tolist(),
                                    type(read.read_io).__name__]
            read.read_io.close()
        read = io_class.read_nwb(path=d / "a.nwb")
        out["read_nwb path"] = [read.container_source, read.acquisition["ts"].data[:].tolist()]
        read.read_io.close()
        out["read_nwb nothing"] = _attempt(lambda: io_class.read_nwb())
        return out

    results = _outcomes(script, tmp_path)
    dask_io, plain = results["NWBDaskIO"], results["NWBHDF5IO"]
    assert dask_io["outcome"]["read_nwb file"][2] == "NWBDaskIO" and plain["outcome"]["read_nwb file"][2] == "NWBHDF5IO"
    for r in (dask_io, plain):
        del r["outcome"]["read_nwb file"][2]
    assert dask_io == plain
    got = dask_io["outcome"]
    data = list(range(20))
    assert got["file"] == ["<dir>/a.nwb", None, data]  # hdmf: no source without a path
    assert got["path+file"] == ["<dir>/a.nwb", "<dir>/a.nwb", data]
    assert got["path+other file"][:2] == ("raises", "ValueError") and "You argued 'b.nwb'" in got["path+other file"][2]
    assert got["no path"] == ("raises", "ValueError", "Either the 'path' or 'file' argument must be supplied.")
    assert got["driver core"] == ["<dir>/core.nwb", "<dir>/core.nwb", data]
    assert got["manager"] == ["<dir>/m.nwb", "<dir>/m.nwb", data]
    assert got["write into file="] is None and got["given"][2] == data
    assert got["read_nwb file"] == ["<dir>/a.nwb", data] and got["read_nwb path"] == ["<dir>/a.nwb", data]
    assert got["read_nwb nothing"][:2] == ("raises", "ValueError")
    assert got["driver family"] is None
    # every file where NWBHDF5IO puts it (family members, the MPI file) and no temporary left
    no_mpi = ("raises", "ValueError", "h5py was built without MPI support, can't use mpio driver")
    assert got["comm"] in (None, no_mpi)
    assert dask_io["files"] == ["a.nwb", "core.nwb", "fam0.nwb", "given.nwb", "m.nwb"] + (
        [] if got["comm"] == no_mpi else ["mpi.nwb"])


def test_misuse_raises_the_same_errors_naming_the_file(tmp_path):
    def script(io_class, d):
        _write(io_class, _nwbfile(), "a.nwb")
        out = {}
        with io_class("a.nwb", "r") as io:
            out["write in r"] = _attempt(lambda: io.write(_nwbfile()))
        with io_class("new.nwb", "w") as io:
            out["read in w"] = _attempt(io.read)
            out["export in w from nothing"] = _attempt(lambda: io.export(src_io=None))
            io.write(_nwbfile())
        with io_class("a.nwb", "r") as src, io_class("new.nwb", "a") as io:
            out["export in a"] = _attempt(lambda: io.export(src_io=src))
        out["r missing"] = _attempt(lambda: io_class("missing.nwb", "r"))
        out["r+ missing"] = _attempt(lambda: io_class("missing.nwb", "r+", load_namespaces=False))
        io = io_class("a.nwb", "r")
        io.close()
        out["read closed"] = _attempt(io.read)
        io.close()  # twice is fine
        _write(io_class, _nwbfile(), "not-nwb.h5")  # pynwb's warning about the suffix, naming the path
        for mode in ("w-", "x"):
            err = _attempt(lambda: io_class("a.nwb", mode))
            out[mode] = [err[0], isinstance(err, tuple)]
            try:
                io_class("a.nwb", mode)
            except UnsupportedOperation:  # hdmf's error type (NWBDaskIO words it differently)
                out[mode].append(True)
        return out

    got = _same(tmp_path, script)
    o = got["outcome"]
    assert o["write in r"] == ("raises", "UnsupportedOperation",
                               "Cannot write to file <dir>/a.nwb in mode 'r'. Please use mode 'r+', 'w', 'w-', 'x', "
                               "or 'a'")
    assert o["read in w"] == ("raises", "TypeError", "Missing NWB version in file. The file is not a valid NWB file.")
    assert o["export in w from nothing"][:2] == ("raises", "TypeError") and "src_io" in o["export in w from nothing"][2]
    assert o["export in a"] == ("raises", "UnsupportedOperation",
                                "Cannot export to file <dir>/new.nwb in mode 'a'. Please use mode 'w'.")
    assert o["r missing"][:2] == ("raises", "FileNotFoundError") and "missing.nwb" in o["r missing"][2]
    assert o["r+ missing"][:2] == ("raises", "UnsupportedOperation") and "missing.nwb" in o["r+ missing"][2]
    assert o["read closed"][:2] == ("raises", "TypeError")  # pynwb's version check fails on the closed file first
    assert o["w-"] == o["x"] == ["raises", True, True]
    assert ("UserWarning", "The file path provided: not-nwb.h5 does not end in '.nwb'. It is recommended that NWB "
            "files using the HDF5 backend use the '.nwb' extension.") in got["warnings"]
    assert not any(".partial" in w[1] for w in got["warnings"])
    assert got["files"] == ["a.nwb", "new.nwb", "not-nwb.h5"]


def _links(io_class, d):
    """A file in a subdirectory linking to datasets of a file above it."""
    base = _nwbfile()
    base.add_acquisition(TimeSeries(name="clock", data=[1.0, 2.0, 3.0], unit="V", timestamps=[0.0, 0.5, 2.0]))
    _write(io_class, base, "base.nwb")
    (d / "sub").mkdir()
    with io_class("base.nwb", "r") as base_io:
        read_base = base_io.read()
        linking = NWBFile(session_description="links", identifier="links", session_start_time=START)
        linking.add_acquisition(TimeSeries(name="data_link", data=read_base.acquisition["ts"].data, unit="mV",
                                           rate=10.0))  # an h5py.Dataset of another file: an external link
        linking.add_acquisition(TimeSeries(name="ts_link", data=[7.0, 8.0, 9.0], unit="V",
                                           timestamps=read_base.acquisition["clock"].timestamps))  # a link too
        _write(io_class, linking, d / "sub" / "linking.nwb")
        written = sorted((c.name, c.container_source) for c in linking.objects.values())
    with h5py.File(d / "sub" / "linking.nwb", "r") as f:
        links = {}
        for series, field in (("data_link", "data"), ("ts_link", "timestamps"), ("ts_link", "data")):
            link = f["acquisition"][series].get(field, getlink=True)
            links[f"{series}/{field}"] = ((type(link).__name__, link.filename, link.path)
                                          if isinstance(link, h5py.ExternalLink) else type(link).__name__)
    with io_class(d / "sub" / "linking.nwb", "r") as io:
        read = io.read()
        values = {name: [read.acquisition[name].data[:].tolist(),
                         None if read.acquisition[name].timestamps is None
                         else read.acquisition[name].timestamps[:].tolist()] for name in read.acquisition}
        sources = sorted((name, read.acquisition[name].container_source) for name in read.acquisition)
    return dict(links=links, values=values, sources=sources, written=written)


def test_external_links_are_relative_to_the_target(tmp_path):
    got = _same(tmp_path, _links)
    o = got["outcome"]
    assert o["links"] == {"data_link/data": ("ExternalLink", "../base.nwb", "/acquisition/ts/data"),
                          "ts_link/timestamps": ("ExternalLink", "../base.nwb", "/acquisition/clock/timestamps"),
                          "ts_link/data": "HardLink"}
    assert o["values"] == {"data_link": [list(range(20)), None], "ts_link": [[7.0, 8.0, 9.0], [0.0, 0.5, 2.0]]}
    assert o["sources"] == [("data_link", "<dir>/sub/linking.nwb"), ("ts_link", "<dir>/sub/linking.nwb")]
    assert {source for _, source in o["written"]} == {"<dir>/sub/linking.nwb"}
    assert not any(w[0] == BrokenLinkWarning.__name__ for w in got["warnings"])
    assert got["files"] == ["base.nwb", "sub", "sub/linking.nwb"]


def test_append_keeps_objects_and_container_source(tmp_path):
    def script(io_class, d):
        written = _nwbfile()
        _write(io_class, written, "a.nwb")
        for name in ("added", "again"):
            with io_class("a.nwb", "a") as io:
                nwbfile = io.read()
                nwbfile.add_acquisition(TimeSeries(name=name, data=[1.0, 2.0, 3.0], unit="V", rate=1.0))
                io.write(nwbfile)
                added = nwbfile.acquisition[name].container_source
        with io_class("a.nwb", "r") as io:
            read = io.read()
            return dict(names=sorted(read.acquisition), added=added, source=read.container_source,
                        kept=set(written.objects) <= set(read.objects), root=read.object_id == written.object_id,
                        values=read.acquisition["again"].data[:].tolist(), errors=validate(path="a.nwb"))

    o = _same(tmp_path, script)["outcome"]
    assert o["names"] == ["added", "again", "ts"] and o["added"] == o["source"] == "<dir>/a.nwb"
    assert o["kept"] and o["root"] and o["values"] == [1.0, 2.0, 3.0] and o["errors"] == []


def test_export_keeps_object_ids_and_names_the_export(tmp_path):
    def script(io_class, d):
        _write(io_class, _nwbfile(), "a.nwb")
        out = {}
        with io_class("a.nwb", "r") as src:
            nwbfile = src.read()
            ids = set(nwbfile.objects)
            nwbfile.add_acquisition(TimeSeries(name="new", data=[5, 6], unit="V", rate=1.0))
            with io_class("exported.nwb", "w") as io:
                io.export(src_io=src, nwbfile=nwbfile)
            with io_class("copied.nwb", "w") as io:
                io.export(src_io=src, nwbfile=nwbfile, write_args={"link_data": False})
        with io_class("a.nwb", "r") as src:
            io_class.export_io(path="export_io.nwb", src_io=src)
        for name in ("exported.nwb", "copied.nwb", "export_io.nwb"):
            with io_class(name, "r") as io:
                read = io.read()
                out[name] = dict(names=sorted(read.acquisition), kept=ids <= set(read.objects),
                                 source=read.container_source, errors=validate(path=name),
                                 data=read.acquisition["ts"].data[:].tolist())
            with h5py.File(name, "r") as f:
                out[name]["spec"] = sorted(f["specifications"])
                out[name]["link"] = type(f["acquisition/ts"].get("data", getlink=True)).__name__
        return out

    o = _same(tmp_path, script)["outcome"]
    for name in ("exported.nwb", "copied.nwb", "export_io.nwb"):
        assert o[name]["kept"] and o[name]["source"] == f"<dir>/{name}" and o[name]["errors"] == []
        assert o[name]["data"] == list(range(20)) and o[name]["link"] == "HardLink"
    assert o["exported.nwb"]["names"] == ["new", "ts"] and o["export_io.nwb"]["names"] == ["ts"]


def _layout(path) -> list:
    """Every object of a file: path, kind, shape, dtype and attribute names (object IDs and dates differ)."""
    rows = []

    def visit(name, obj):
        kind = "group" if isinstance(obj, h5py.Group) else "dataset"
        shape = None if kind == "group" else (obj.shape, str(obj.dtype), obj.chunks, obj.compression)
        rows.append((name, kind, shape, sorted(obj.attrs)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        rows.append(("/", "root", None, sorted(f.attrs)))
    return sorted(rows, key=repr)


def test_same_file_layout_and_cached_spec(tmp_path):
    """The same NWBFile content written by each class: the same HDF5 objects, cached specifications included."""

    def script(io_class, d):
        _write(io_class, _nwbfile(), "a.nwb")
        with h5py.File("a.nwb", "r") as f:
            spec = {ns: sorted(f["specifications"][ns]) for ns in f["specifications"]}
        return dict(layout=_layout("a.nwb"), spec=spec, errors=validate(path="a.nwb"))  # cached namespaces

    o = _same(tmp_path, script)["outcome"]
    assert o["errors"] == [] and "core" in o["spec"] and any(r[0] == "acquisition/ts/data" for r in o["layout"])


def test_herd_path_is_passed_through(tmp_path):
    def script(io_class, d):
        with io_class("a.nwb", "w", herd_path="herd.zip") as io:
            io.write(_nwbfile())
        with io_class("a.nwb", "r", herd_path="herd.zip") as io:
            read = io.read()
            return [type(io.herd).__name__, read.container_source]

    got = _same(tmp_path, script)
    assert got["outcome"] == ["HERD", "<dir>/a.nwb"] and got["files"] == ["a.nwb", "herd.zip"]


@pytest.mark.parametrize("mode", ["w", "w-", "x", "a"])
def test_a_failed_new_file_leaves_nothing_where_nwbhdf5io_leaves_a_partial_file(tmp_path, mode):
    """The documented difference: a write that fails leaves no file (NWBHDF5IO leaves what it had written)."""

    class Boom(RuntimeError):
        pass

    def script(io_class, d):
        nwbfile = _nwbfile()
        try:
            with io_class("a.nwb", mode, load_namespaces=False) as io:
                io.write(nwbfile)
                raise Boom("after the write")
        except Boom:
            pass
        return nwbfile.container_source

    results = _outcomes(script, tmp_path)
    assert results["NWBHDF5IO"]["files"] == ["a.nwb"]
    assert results["NWBDaskIO"]["files"] == []
    assert results["NWBDaskIO"]["outcome"] == results["NWBHDF5IO"]["outcome"] == "<dir>/a.nwb"


def test_exclusive_modes_raise_hdmfs_error_type_and_file_exists_error(tmp_path):
    """``"w-"``/``"x"`` on an existing file: caught by ``except UnsupportedOperation`` as with NWBHDF5IO."""
    target = tmp_path / "a.nwb"
    _write(NWBDaskIO, _nwbfile(), target)
    for mode in ("w-", "x"):
        with pytest.raises(UnsupportedOperation, match=f"a.nwb exists \\(mode '{mode}'\\)") as err:
            NWBDaskIO(target, mode)
        assert isinstance(err.value, FileExistsError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nwb"]


def test_a_refused_call_inside_the_block_keeps_the_file(tmp_path):
    """Only a write that had started changing the file discards it; a refused call (caught) does not."""
    with NWBDaskIO(tmp_path / "a.nwb", "w") as io:
        with pytest.raises(TypeError, match="src_io"):
            io.export(src_io=None)
        with pytest.raises(TypeError, match="Missing NWB version"):  # pynwb's check comes before hdmf's mode check
            io.read()
        io.write(_nwbfile())
    with NWBHDF5IO(tmp_path / "a.nwb", "r") as io:
        assert io.read().acquisition["ts"].data[:].tolist() == list(range(20))


def test_replacing_a_file_still_open_is_refused(tmp_path):
    """Mode "w" on a file open for reading (its datasets to be linked): HDF5's refusal, and the file kept.

    Built under a temporary name, the new file's links to the old one would point into itself after the rename.
    """

    def script(io_class, d):
        before = _open_count()  # files other tests left open in this process
        _write(io_class, _nwbfile(), "a.nwb")
        with io_class("a.nwb", "r") as old:
            series = old.read().acquisition["ts"]
            linking = NWBFile(session_description="n", identifier="n", session_start_time=START)
            linking.add_acquisition(TimeSeries(name="copy", data=series.data, unit="V", rate=1.0))
            err = _attempt(lambda: _write(io_class, linking, d / "a.nwb"))
        with io_class("a.nwb", "r") as io:
            return [err[:2], "unable to truncate a file which is already open" in err[2],
                    sorted(io.read().acquisition), _open_count() - before]

    got = _same(tmp_path, script)
    assert got["outcome"] == [("raises", "OSError"), True, ["ts"], 1] and got["files"] == ["a.nwb"]


def _open_count() -> int:
    return len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


def test_a_relative_path_is_where_it_was_when_opened(tmp_path):
    """Changing the working directory before close: the file is where the relative path pointed at open."""

    def script(io_class, d):
        (d / "elsewhere").mkdir()
        nwbfile = _nwbfile()
        with io_class("a.nwb", "w") as io:
            io.write(nwbfile)
            os.chdir(d / "elsewhere")
        os.chdir(d)
        return nwbfile.container_source

    got = _same(tmp_path, script)
    assert got["outcome"] == "<dir>/a.nwb" and got["files"] == ["a.nwb", "elsewhere"]


def test_warnings_turned_into_errors_name_the_path(tmp_path):
    def script(io_class, d):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return _attempt(lambda: io_class("x.h5", "w"))

    got = _same(tmp_path, script)
    assert got["outcome"][:2] == ("raises", "UserWarning") and "The file path provided: x.h5 does" in got["outcome"][2]
    assert got["files"] == []


@pytest.mark.parametrize("cls", [NWBHDF5IO, NWBDaskIO], ids=["NWBHDF5IO", "NWBDaskIO"])
def test_read_compute_close_then_append(cls, tmp_path):
    """A dataset read (and computed) through a closed IO does not keep the file from being appended to."""
    import dask.array as da

    from nwb_dask import DaskDataIO, write_nwb

    path = tmp_path / "handles.nwb"
    nwb = mock_NWBFile()
    nwb.add_acquisition(TimeSeries(name="big", data=DaskDataIO(da.ones((3000, 1000), "f8", chunks=(500, 1000))),
                                   unit="V", rate=1.0))
    write_nwb(nwb, path, progress=False)
    with cls(str(path), "r") as io:
        data = io.read().acquisition["big"].data
        total = data[:2].sum()
        assert float(total.compute() if hasattr(total, "compute") else total) == 2000.0
    with cls(str(path), "a") as io:
        nwb = io.read()
        nwb.add_acquisition(TimeSeries(name="more", data=np.arange(3.0), unit="V", rate=1.0))
        io.write(nwb)
    with h5py.File(path, "r+") as f:  # and plain h5py may write it too
        assert list(f["acquisition/more/data"][()]) == [0.0, 1.0, 2.0]
    if cls is NWBDaskIO:
        assert float(data[:2].sum().compute()) == 2000.0  # the lazy array reopens the file on its own

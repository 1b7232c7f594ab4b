"""Zarr 3 users can install nwb_dask (issue 18 item 5): NWB-Zarr is the ``[zarr]`` extra, the HDF5 core is not.

* :func:`nwb_dask.compat.require_zarr` is the one gate of every Zarr entry
  point: zarr missing, zarr 3 installed, or hdmf-zarr / lindi missing give a
  :class:`nwb_dask.compat.MissingExtraError` (an ``ImportError``) naming the
  feature, the missing piece and ``pip install "nwb-dask[zarr]"`` (``[index]``
  for LINDI indexes);
* without zarr importable (``sys.modules["zarr"] = None`` in a subprocess)
  every Zarr entry point (Python API and ``nwb-dask`` commands) refuses that
  way, writes nothing, and the HDF5 paths (NWBDaskIO with gzip, zstd and
  blosc read back with plain h5py, read_nwb and read_dataset of the file and
  of its URL on a loopback HTTP server, ``nwb-dask demo``) work;
* in a fresh venv with ``pip install <this checkout> "zarr>=3"
  "numcodecs>=0.16"`` the same holds (zarr 3 is refused by name), and a set of
  core test files passes (test_writer, test_codecs, test_dropin, test_reader).

The NWB-Zarr tests themselves (test_zarr*, test_index, ...) need zarr 2,
which the test extra installs.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import types
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import nwb_dask
from nwb_dask.compat import MissingExtraError, require_zarr, zarr_problem
from nwb_dask.testing import ephys_nwbfile

ROOT = Path(__file__).resolve().parents[1]
ES = "acquisition/ElectricalSeries/data"
ZARR_INSTALL = 'pip install "nwb-dask[zarr]"'
INDEX_INSTALL = 'pip install "nwb-dask[index]"'
#: Core test files run in the zarr 3 venv (about 2 min there on 2 busy cores).
CORE_TESTS = ["tests/test_writer.py", "tests/test_codecs.py", "tests/test_dropin.py", "tests/test_reader.py"]


# --------------------------------------------------------------------------- #
# require_zarr / zarr_problem, in process                                      #
# --------------------------------------------------------------------------- #
def test_require_zarr_returns_zarr_2_when_the_extra_is_installed():
    import zarr

    assert require_zarr("x") is zarr and zarr_problem("x") is None
    assert zarr_problem("x", extra="index") is None  # lindi (test extra) and zarr 2


@pytest.mark.parametrize("blocked, missing", [("zarr", "zarr is not installed"),
                                              ("hdmf_zarr", "hdmf-zarr is not installed")])
def test_require_zarr_names_the_missing_module_and_the_extra(monkeypatch, blocked, missing):
    monkeypatch.setitem(sys.modules, blocked, None)  # import raises ModuleNotFoundError
    with pytest.raises(MissingExtraError) as err:
        require_zarr("write_nwb_zarr('x.nwb.zarr')")
    text = str(err.value)
    assert isinstance(err.value, ImportError)
    assert text.startswith("write_nwb_zarr('x.nwb.zarr') needs NWB-Zarr support (zarr 2 and hdmf-zarr)"), text
    assert missing in text and text.endswith(ZARR_INSTALL), text
    assert (err.value.extra, err.value.feature) == ("zarr", "write_nwb_zarr('x.nwb.zarr')")
    back = pickle.loads(pickle.dumps(err.value))  # raised on a worker, re-raised by the client
    assert type(back) is MissingExtraError and str(back) == text and back.extra == "zarr"


def test_require_zarr_refuses_zarr_3(monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", types.SimpleNamespace(__version__="3.1.6"))
    for extra, install in (("zarr", ZARR_INSTALL), ("index", INDEX_INSTALL)):
        with pytest.raises(MissingExtraError, match="zarr 3.1.6 is installed") as err:
            require_zarr("read_nwb('s.nwb.zarr')", extra=extra)
        text = str(err.value)
        assert text.startswith("read_nwb('s.nwb.zarr') needs ") and install in text, text
        assert "until hdmf-zarr supports zarr 3" in text and "HDF5 reading and writing work beside zarr 3" in text


def test_require_zarr_index_names_lindi(monkeypatch):
    monkeypatch.setitem(sys.modules, "lindi", None)
    assert zarr_problem("x") is None  # NWB-Zarr does not need lindi
    with pytest.raises(MissingExtraError, match="lindi is not installed") as err:
        require_zarr("reading an index", extra="index")
    assert str(err.value).startswith("reading an index needs LINDI / kerchunk index support (lindi and zarr 2)")
    assert str(err.value).endswith(INDEX_INSTALL)


def test_a_module_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch):
    """hdmf-zarr installed but broken (e.g. against zarr 3 with --no-deps): its own error is in the message."""
    (tmp_path / "hdmf_zarr.py").write_text("raise ImportError(\"cannot import name 'FSStore' from 'zarr.storage'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hdmf_zarr", raising=False)
    with pytest.raises(MissingExtraError, match=r"hdmf-zarr cannot be imported \(ImportError: cannot import name "
                                                r"'FSStore' from 'zarr.storage'\): pip install \"nwb-dask\[zarr\]\""):
        require_zarr("convert")


def test_import_nwb_dask_does_not_import_hdmf_zarr():
    """The IO class of hdmf-zarr is made on first use, so ``import nwb_dask`` needs neither hdmf-zarr nor lindi."""
    code = ("import sys, nwb_dask, nwb_dask.cli, nwb_dask.tools.verify, nwb_dask.tools.index\n"
            "print(sorted(m for m in ('hdmf_zarr', 'lindi') if m in sys.modules))\n"
            "from nwb_dask.zarr.io import NWBZarrDaskIO\n"
            "import hdmf_zarr.nwb\n"
            "print(issubclass(NWBZarrDaskIO, hdmf_zarr.nwb.NWBZarrIO), NWBZarrDaskIO.__qualname__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["[]", "True NWBZarrDaskIO"], out.stdout


# --------------------------------------------------------------------------- #
# the script run without zarr 2 (no zarr, or zarr 3)                          #
# --------------------------------------------------------------------------- #
#: Run as ``python -c PRELUDE+SCRIPT OUT STORE INDEX TESTS``: checks the HDF5 paths (local and over HTTP) itself, tries
#: every Zarr entry point and prints a JSON report {entry: null | [type, is ImportError, message]}.
SCRIPT = r'''
import json, subprocess, sys
from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401 - plain h5py reads zstd / blosc through it
import numpy as np
from pynwb import TimeSeries

import nwb_dask
from nwb_dask.testing import ephys_nwbfile

out, store, index = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
sys.path.insert(0, sys.argv[4])  # tests/: the loopback HTTP server of the remote-read tests
from http_server import Server  # noqa: E402
ES = "acquisition/ElectricalSeries/data"
FILTER_IDS = {"gzip": 1, "zstd": 32015, "blosc": 32001}
values = {c: np.random.default_rng(i).integers(-3000, 3000, size=(6000, 8), dtype="int16")
          for i, c in enumerate(FILTER_IDS)}
names = {"gzip": ES, "zstd": "acquisition/zstd/data", "blosc": "acquisition/blosc/data"}


def nwbfile():
    f = ephys_nwbfile(nwb_dask.DaskDataIO(da.from_array(values["gzip"], chunks=(1500, 8)), codec="gzip"),
                      rate=1000.0)
    for c in ("zstd", "blosc"):
        f.add_acquisition(TimeSeries(name=c, data=nwb_dask.DaskDataIO(da.from_array(values[c], chunks=(1500, 8)),
                                                                     codec=c), unit="uV", rate=1000.0))
    return f


# HDF5: written by NWBDaskIO, read back with plain h5py, read_nwb and read_dataset
path = out / "core.nwb"
with nwb_dask.NWBDaskIO(str(path), "w", scheduler="threads", progress=False) as io:
    io.write(nwbfile())
with h5py.File(path, "r") as f:
    for c, name in names.items():
        plist = f[name].id.get_create_plist()
        ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        assert FILTER_IDS[c] in ids, (c, ids)
        np.testing.assert_array_equal(f[name][()], values[c])
nwb = nwb_dask.read_nwb(path, min_bytes=0)  # these small datasets as dask arrays too
for c in names:
    data = (nwb.acquisition["ElectricalSeries"] if c == "gzip" else nwb.acquisition[c]).data
    assert isinstance(data, da.Array), type(data)
    np.testing.assert_array_equal(data.compute(scheduler="threads"), values[c])
nwb.read_io.close()
for c, name in names.items():
    np.testing.assert_array_equal(nwb_dask.read_dataset(path, name).compute(scheduler="sync"), values[c])
with Server(out).running() as srv:  # the same file over HTTP
    url, options = srv.url("core.nwb"), {"metadata_cache": False}
    nwb = nwb_dask.read_nwb(url, min_bytes=0, remote_options=options)
    for c, name in names.items():
        data = (nwb.acquisition["ElectricalSeries"] if c == "gzip" else nwb.acquisition[c]).data
        assert isinstance(data, da.Array), type(data)
        np.testing.assert_array_equal(data.compute(scheduler="threads"), values[c])
        np.testing.assert_array_equal(nwb_dask.read_dataset(url, name, remote_options=options).compute(), values[c])
    nwb.read_io.close()
    assert any(p.endswith("core.nwb") for p in srv.paths)
report = {"hdf5": "ok"}


def attempt(label, fn):
    try:
        fn()
    except Exception as exc:
        report[label] = [type(exc).__name__, isinstance(exc, ImportError), str(exc)]
    else:
        report[label] = None


def zarr_io():
    from nwb_dask.zarr.io import NWBZarrDaskIO  # noqa: F401


def verify_conversion():
    from nwb_dask.tools.verify import compare_conversion

    compare_conversion(path, store, [ES], {}, True, "sync", [])


def write_index():
    from nwb_dask.tools.index import write_index

    write_index(path, out / "new.lindi.json")


attempt("write_nwb(.nwb.zarr)", lambda: nwb_dask.write_nwb(nwbfile(), out / "w.nwb.zarr", progress=False))
attempt("write_nwb_zarr", lambda: nwb_dask.write_nwb_zarr(nwbfile(), out / "w2.nwb.zarr", progress=False))
attempt("NWBZarrDaskIO", zarr_io)
attempt("read_nwb(store)", lambda: nwb_dask.read_nwb(store))
attempt("read_dataset(store)", lambda: nwb_dask.read_dataset(store, ES))
attempt("convert(hdf5->zarr)", lambda: nwb_dask.convert(path, out / "c.nwb.zarr", progress=False))
attempt("convert(zarr->hdf5)", lambda: nwb_dask.convert(store, out / "c.nwb", progress=False))
attempt("verify", verify_conversion)
attempt("read_nwb(index)", lambda: nwb_dask.read_nwb(index))
attempt("read_dataset(index)", lambda: nwb_dask.read_dataset(index, ES))
attempt("read_nwb(index=)", lambda: nwb_dask.read_nwb(path, index=index))
attempt("write_index", write_index)
report["left"] = sorted(p.name for p in out.iterdir())

# the command line, in this same setup
cli = [sys.executable, "-c", PRELUDE + "from nwb_dask.cli import main; sys.exit(main(sys.argv[1:]))"]
for label, args in {"cli convert": ["convert", str(path), str(out / "c2.nwb.zarr"), "--quiet"],
                    "cli convert back": ["convert", str(store), str(out / "c2.nwb"), "--quiet"],
                    "cli info": ["info", str(store)],
                    "cli index": ["index", str(path), "-o", str(out / "c2.lindi.json")],
                    "cli demo": ["demo", "--seconds", "0.5", "--json", "--scheduler", "threads"]}.items():
    proc = subprocess.run(cli + args, capture_output=True, text=True)
    report[label] = [proc.returncode, proc.stderr, proc.stdout]
print("REPORT " + json.dumps(report))
'''
#: Makes zarr unimportable (``import zarr`` raises ModuleNotFoundError), as when the extra is not installed.
NO_ZARR = "import sys\nsys.modules['zarr'] = None\n"

#: entry -> (extra, the words naming the feature in the message)
ENTRIES = {
    "write_nwb(.nwb.zarr)": ("zarr", "write_nwb_zarr("),
    "write_nwb_zarr": ("zarr", "write_nwb_zarr("),
    "NWBZarrDaskIO": ("zarr", "NWBZarrDaskIO"),
    "read_nwb(store)": ("zarr", "read_nwb("),
    "read_dataset(store)": ("zarr", "read_dataset("),
    "convert(hdf5->zarr)": ("zarr", "convert "),
    "convert(zarr->hdf5)": ("zarr", "convert "),
    "verify": ("zarr", "verifying the conversion"),
    "read_nwb(index)": ("index", "read_nwb("),
    "read_dataset(index)": ("index", "read_dataset("),
    "read_nwb(index=)": ("index", "read_nwb("),
    "write_index": ("index", "writing a LINDI index of /"),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An NWB-Zarr store and a LINDI index, made here with zarr 2 (the test extra), for the runs without it."""
    from nwb_dask.tools.index import write_index

    d = tmp_path_factory.mktemp("zarr3_inputs")
    values = np.arange(6000 * 8, dtype="int16").reshape(6000, 8)
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(da.from_array(values, chunks=(1500, 8)))),
                       d / "s.nwb.zarr", progress=False, scheduler="sync")
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(da.from_array(values, chunks=(1500, 8)))),
                       d / "i.nwb", progress=False, scheduler="sync")
    write_index(d / "i.nwb", d / "i.nwb.lindi.json")
    return d / "s.nwb.zarr", d / "i.nwb.lindi.json"


def _run_script(python, prelude: str, out: Path, made) -> dict:
    out.mkdir()
    store, index = made
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), "-c", prelude + f"PRELUDE = {prelude!r}\n" + SCRIPT, str(out), str(store),
                           str(index), str(ROOT / "tests")], capture_output=True, text=True, cwd=out, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def _check_report(report: dict, reason: str) -> None:
    """Every Zarr entry refused with MissingExtraError naming feature, reason and extra; HDF5 worked."""
    assert report["hdf5"] == "ok"
    for entry, (extra, feature) in ENTRIES.items():
        got = report[entry]
        assert got is not None, f"{entry} ran without zarr 2"
        kind, is_import_error, message = got
        assert (kind, is_import_error) == ("MissingExtraError", True), (entry, got)
        assert feature in message and reason in message, (entry, message)
        assert f'pip install "nwb-dask[{extra}]"' in message, (entry, message)
    assert report["left"] == ["core.nwb"], report["left"]  # nothing written by a refused entry
    for label in ("cli convert", "cli convert back", "cli info", "cli index"):
        status, stderr, _ = report[label]
        assert status == 2, (label, status, stderr)
        assert "Traceback" not in stderr and reason in stderr, (label, stderr)
        assert stderr.startswith(f"nwb-dask {label.split()[1]}: error: "), (label, stderr)
        assert ('pip install "nwb-dask[index]"' if label == "cli index" else ZARR_INSTALL) in stderr, (label, stderr)
    assert "needs NWB-Zarr support" in report["cli info"][1]  # info reads stores: without zarr 2, the extra named
    status, stderr, stdout = report["cli demo"]
    assert status == 0, stderr
    demo = json.loads(stdout)  # the demo verifies what it wrote (status 1 if not)
    assert demo["shape"] == [15000, 384] and demo["file_bytes"] > 0 and demo["codec"].startswith("gzip"), demo


def test_without_zarr_every_zarr_entry_names_the_extra_and_hdf5_works(tmp_path, made):
    report = _run_script(sys.executable, NO_ZARR, tmp_path / "out", made)
    _check_report(report, "zarr is not installed")


# --------------------------------------------------------------------------- #
# a fresh venv with zarr 3 and numcodecs 0.16                                  #
# --------------------------------------------------------------------------- #
def _registry_unreachable(stderr: str) -> bool:
    words = ("Could not find a version", "No matching distribution", "connection", "Temporary failure in name")
    return any(w.lower() in stderr.lower() for w in words) and "ResolutionImpossible" not in stderr


@pytest.fixture(scope="module")
def zarr3_python(tmp_path_factory):
    """A brand-new venv: ``pip install <checkout> "zarr>=3" "numcodecs>=0.16"`` plus the test tools."""
    venv = tmp_path_factory.mktemp("zarr3_venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    t0 = time.perf_counter()
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(ROOT),
                           "zarr>=3", "numcodecs>=0.16", "pytest>=8", "hypothesis>=6.100", "pyyaml>=6"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and _registry_unreachable(proc.stderr):
        pytest.skip(f"package registry not reachable: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "looking at multiple versions" not in proc.stderr, proc.stderr[-2000:]  # resolved without backtracking
    versions = subprocess.run([str(python), "-c", "import zarr, numcodecs; print(zarr.__version__, numcodecs.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert int(versions[0].split(".")[0]) >= 3 and tuple(map(int, versions[1].split(".")[:2])) >= (0, 16), versions
    print(f"zarr {versions[0]}, numcodecs {versions[1]}: venv installed in {time.perf_counter() - t0:.0f} s")
    return python, versions[0]


@pytest.mark.slow
def test_zarr3_venv_hdf5_works_and_zarr_entries_name_the_extra(zarr3_python, tmp_path, made):
    python, version = zarr3_python
    report = _run_script(python, "import sys\n", tmp_path / "out", made)
    _check_report(report, f"but zarr {version} is installed")


@pytest.mark.slow
def test_zarr3_venv_core_tests_pass(zarr3_python):
    """The core test files pass with zarr 3 and numcodecs 0.16 installed (and no hdmf-zarr, no lindi)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(zarr3_python[0]), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *CORE_TESTS],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " failed" not in summary and " error" not in summary, proc.stdout[-500:]
    print(f"zarr 3 venv, {' '.join(CORE_TESTS)}: {summary}")

"""Clear errors and one CLI convention (issue 14, finding 5, and ``demo -o EXISTING``).

Each case runs ``nwb-dask`` as a user does, in a subprocess, and checks the exit
status (0 ok, 1 check failed, 2 bad input, 3 a bug), that stderr is one
``nwb-dask CMD: error:`` line naming the path, URL, dataset or option at fault,
and that no traceback is printed for an expected error.  The corrupt-chunk
errors are also checked through the API (``read_dataset(...).compute()``).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import nwb_dask
import nwb_dask.testing
from nwb_dask.cli import SCHEDULERS, build_parser, main
from nwb_dask.codecs import CodecError
from nwb_dask.demo import run_demo
from nwb_dask.errors import NotHDF5Error
from nwb_dask.sources import DEFAULT_TIMEOUT, HTTPByteSource, RemoteReadError
from nwb_dask.testing import ephys_nwbfile, write_rich_nwbfile

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*compression may not be available:UserWarning",
    "ignore:AnnotationSeries is deprecated:UserWarning",
)

NWB_DASK = str(Path(sys.executable).with_name("nwb-dask"))
ES = "/acquisition/ElectricalSeries/data"


def run(*args: str, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([NWB_DASK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def bad_input(out: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit status 2, nothing on stdout, one ``nwb-dask CMD: error:`` line naming every needle, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith(f"nwb-dask {command}: error: "), out.stderr
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# --------------------------------------------------------------------------- #
# files                                                                        #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small gzip NWB file, a plain HDF5 file, a text file, a directory and a Zarr store."""
    d = tmp_path_factory.mktemp("errors")
    data = nwb_dask.testing.synthetic_ephys(seconds=1, n_channels=24)  # 30000 x 24 int16: 1.4 MB, over the 1 MiB default
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(data, codec="gzip", chunks=(1000, 24))), d / "ok.nwb",
                       progress=False, scheduler="sync")
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = np.arange(10)
    (d / "text.nwb").write_text("plain text, not HDF5\n")
    (d / "folder").mkdir()
    (d / "store.nwb.zarr").mkdir()
    (d / "store.nwb.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    return d


def corrupt_chunk(path: Path, name: str, offset: tuple) -> int:
    """Flip bytes in the middle of one stored chunk on disk; returns its byte offset in the file."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info_by_coord(offset)
    assert info.byte_offset is not None and info.size > 16
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2 - 4)
        chunk = bytearray(fh.read(8))
        fh.seek(info.byte_offset + info.size // 2 - 4)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    return info.byte_offset


# --------------------------------------------------------------------------- #
# a corrupt gzip chunk names the file, the dataset and the chunk               #
# --------------------------------------------------------------------------- #
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 130), chunk_rows=st.integers(1, 40), pick=st.floats(0, 1), shuffle=st.booleans())
def test_corrupt_gzip_chunk_names_file_dataset_and_offset(tmp_path_factory, n, chunk_rows, pick, shuffle):
    """Any chunk (edge chunks of non-dividing shapes too) that fails to inflate names file, dataset and offset."""
    starts = list(range(0, n, chunk_rows))
    row = starts[min(int(pick * len(starts)), len(starts) - 1)]
    assume(min(chunk_rows, n - row) >= 3)  # enough stored bytes to corrupt in the middle
    path = tmp_path_factory.mktemp("corrupt") / "c.h5"
    values = np.random.default_rng(n).integers(0, 2**15, (n, 3), dtype="int16")  # incompressible: big chunks
    with h5py.File(path, "w") as f:
        f.create_dataset("grp/x", data=values, chunks=(chunk_rows, 3), maxshape=(None, 3), compression="gzip",
                         shuffle=shuffle)  # resizable: a chunk may be longer than the data
    byte_offset = corrupt_chunk(path, "grp/x", (row, 0))
    with pytest.raises(CodecError) as err:
        nwb_dask.read_dataset(path, "grp/x").compute(scheduler="sync")
    text = str(err.value)
    assert text.startswith(f"{path}: dataset /grp/x: chunk at offset ({row}, 0) (byte offset {byte_offset}, ")
    assert "does not decode" in text and "codec 'gzip'" in text
    clean = [r for r in starts if r != row]
    for r in clean:  # every other chunk still reads
        np.testing.assert_array_equal(nwb_dask.read_dataset(path, "grp/x")[r : r + 1].compute(), values[r : r + 1])
    # through HDF5's own filters (direct=False; also the path of filters nwb_dask cannot run): the same names
    with pytest.raises(OSError, match=re.escape(f"{path}: dataset /grp/x: cannot read [")):
        nwb_dask.read_dataset(path, "grp/x", direct=False).compute(scheduler="sync")


def test_corrupt_chunk_cli_repack_names_file_dataset_and_offset(files, tmp_path):
    path = tmp_path / "corrupt.nwb"
    path.write_bytes((files / "ok.nwb").read_bytes())
    byte_offset = corrupt_chunk(path, ES, (3000, 0))
    out = run("repack", path, tmp_path / "out.nwb", "--quiet", "--min-mb", "0")
    bad_input(out, "repack", str(path), f"dataset {ES}", "chunk at offset (3000, 0)", f"byte offset {byte_offset}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.nwb"]  # no output, no temporary left


def test_corrupt_chunk_over_http_names_the_url(files, tmp_path):
    from test_remote import _Server  # the loopback server of the HTTP tests

    path = tmp_path / "corrupt.nwb"
    path.write_bytes((files / "ok.nwb").read_bytes())
    byte_offset = corrupt_chunk(path, ES, (1000, 0))
    with _Server(tmp_path).running() as srv:
        url = srv.url("corrupt.nwb")
        with pytest.raises(CodecError, match=re.escape(f"{url}: dataset {ES}: chunk at offset (1000, 0) "
                                                       f"(byte offset {byte_offset}, ")):
            nwb_dask.read_dataset(url, ES).compute(scheduler="sync")


# --------------------------------------------------------------------------- #
# not an HDF5 file: the path, and what was expected                            #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("command, extra", [
    ("links", []), ("info", []), ("repack", ["OUT.nwb"]), ("consolidate", ["OUT.nwb"]), ("convert", ["OUT.nwb.zarr"]),
])
def test_not_hdf5_names_the_path_and_what_was_expected(files, tmp_path, command, extra):
    src = files / "text.nwb"
    out = run(command, src, *[tmp_path / e for e in extra])
    bad_input(out, command, f"{src}: cannot open as HDF5/NWB: file signature not found", "b'plain text, not HDF5",
              "expected an NWB (HDF5) file")
    assert list(tmp_path.iterdir()) == []


def test_not_hdf5_through_the_api(files):
    for call in (lambda p: nwb_dask.read_dataset(p, "x"), nwb_dask.read_nwb, nwb_dask.audit_links, nwb_dask.info):
        with pytest.raises(NotHDF5Error, match=re.escape(f"{files / 'text.nwb'}: cannot open")):
            call(files / "text.nwb")
    page = files / "page.nwb"
    page.write_bytes(_HTMLHandler.page)
    with pytest.raises(NotHDF5Error, match=re.escape(f"{page}: cannot open as HDF5/NWB: the file is an HTML page")):
        nwb_dask.info(page)
    empty = files / "empty.nwb"
    empty.write_bytes(b"")
    with pytest.raises(OSError, match=re.escape(f"{empty}: cannot open as HDF5/NWB: the file is empty")):
        nwb_dask.info(empty)


class _HTMLHandler(BaseHTTPRequestHandler):
    """Answers every request with a login page, as a misconfigured or protected server does."""

    protocol_version = "HTTP/1.1"
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    do_HEAD = do_GET


@pytest.fixture
def html_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _HTMLHandler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/session.nwb"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_html_page_from_a_server_is_named(html_server):
    out = run("info", html_server)
    bad_input(out, "info", f"{html_server}: cannot open as HDF5/NWB: the server returned an HTML page",
              "<!DOCTYPE html>", "expected an NWB (HDF5) file")
    with pytest.raises(NotHDF5Error, match="returned an HTML page"):
        nwb_dask.read_dataset(html_server, "acquisition/x/data")


# --------------------------------------------------------------------------- #
# demo / write_nwb: the target, never the temporary name                       #
# --------------------------------------------------------------------------- #
def test_demo_refuses_an_existing_output_without_overwrite(tmp_path):
    out = tmp_path / "keep.nwb"
    out.write_bytes(b"the user's file")
    res = run("demo", "-o", out, "--seconds", "0.1", "--serial-seconds", "0", "--scheduler", "sync", "--quiet")
    bad_input(res, "demo", f"{out} exists", "--overwrite")
    assert out.read_bytes() == b"the user's file"
    res = run("demo", "-o", out, "--seconds", "0.1", "--serial-seconds", "0", "--scheduler", "sync", "--quiet",
              "--overwrite", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["path"] == str(out) and report["kept"] is True and report["shape"] == [3000, 384]
    assert report["ratio"] > 1 and report["verify_seconds"] >= 0
    with h5py.File(out, "r") as f:
        assert f[ES].shape == (3000, 384)
    with pytest.raises(FileExistsError, match=re.escape(f"{out} exists")):
        run_demo(seconds=0.1, path=out, scheduler="sync", progress=False, serial_seconds=0)


def test_demo_errors_name_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "missing" / "demo.nwb"
    res = run("demo", "-o", target, "--seconds", "0.1", "--serial-seconds", "0", "--scheduler", "sync", "--quiet")
    err = bad_input(res, "demo", f"cannot write {target}", "does not exist")
    assert "partial" not in err
    res = run("demo", "-o", tmp_path, "--seconds", "0.1", "--serial-seconds", "0", "--scheduler", "sync", "--quiet")
    bad_input(res, "demo", f"{tmp_path} is a directory")


def test_write_nwb_errors_name_the_target_not_the_temporary(tmp_path):
    """A name HDF5 cannot create (its temporary is longer than NAME_MAX): the error names the target."""
    target = tmp_path / ("n" * 245 + ".nwb")
    nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(nwb_dask.testing.synthetic_ephys(seconds=0.01, n_channels=4)))
    with pytest.raises(OSError) as err:
        nwb_dask.write_nwb(nwbfile, target, progress=False, scheduler="sync")
    text = str(err.value)
    assert text.startswith(f"cannot write {target}: ") and "partial" not in text, text
    assert err.value.errno is not None
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "taken.nwb"  # the target is a directory: the rename fails; no temporary is left
    folder.mkdir()
    nwbfile = ephys_nwbfile(nwb_dask.DaskDataIO(nwb_dask.testing.synthetic_ephys(seconds=0.01, n_channels=4)))
    with pytest.raises(IsADirectoryError) as err:
        nwb_dask.write_nwb(nwbfile, folder, progress=False, scheduler="sync")
    assert str(err.value).startswith(f"cannot write {folder}: ") and "partial" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.nwb"] and list(folder.iterdir()) == []


# --------------------------------------------------------------------------- #
# plain HDF5, directories, Zarr stores                                         #
# --------------------------------------------------------------------------- #
def test_repack_plain_hdf5_is_one_line(files, tmp_path):
    for command in ("repack", "convert"):
        out = run(command, files / "plain.h5", tmp_path / ("out.nwb" if command == "repack" else "out.nwb.zarr"))
        bad_input(out, command, f"{files / 'plain.h5'} is an HDF5 file without NWB content", f"{command} needs an NWB")
    assert list(tmp_path.iterdir()) == []


def test_directories_and_zarr_stores(files, tmp_path):
    folder, store = files / "folder", files / "store.nwb.zarr"
    for command in ("repack", "consolidate"):
        bad_input(run(command, folder, tmp_path / "o.nwb"), command, f"{folder} is a directory, not an HDF5/NWB file")
        bad_input(run(command, store, tmp_path / "o.nwb"), command, f"{store} is a directory",
                  "looks like a Zarr store", f"nwb-dask convert {store} OUT.nwb")
    err = bad_input(run("info", folder), "info", f"{folder} is a directory, not an HDF5/NWB file")
    assert "Errno" not in err and "errno" not in err
    res = run("info", store)  # info reads a store (docs/zarr.md); repack and consolidate, HDF5 tools, point to convert
    assert res.returncode == 0 and res.stdout.startswith(f"{store}: ") and "Traceback" not in res.stderr, res.stderr
    bad_input(run("links", folder), "links", f"{folder} is a directory")
    bad_input(run("convert", folder, tmp_path / "o.nwb"), "convert", f"{folder} is a directory without Zarr metadata")
    assert list(tmp_path.iterdir()) == []


def test_file_of_a_killed_live_writer_is_named_with_the_way_out(tmp_path):
    """HDF5's 'file is already open for write' (a killed SWMR writer) names the file and points to recover."""
    path = tmp_path / "killed.h5"
    script = (f"import os, h5py, numpy as np\n"
              f"f = h5py.File({str(path)!r}, 'w', libver='latest')\n"
              "f.create_dataset('x', data=np.arange(10), chunks=(5,), maxshape=(None,))\n"
              "f.swmr_mode = True\nf.flush()\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    for command in ("info", "links"):
        bad_input(run(command, path), command, f"{path}: cannot open as HDF5/NWB: ", "already open for write",
                  "nwb-dask recover")


# --------------------------------------------------------------------------- #
# | head                                                                       #
# --------------------------------------------------------------------------- #
def test_info_into_a_closed_pipe_ends_quietly(files):
    """``nwb-dask info ... | head``: the reader went away; no 'Broken pipe', exit status 0."""
    many = files / "many.h5"
    with h5py.File(many, "w") as f:
        for i in range(2000):  # a report far larger than a pipe's buffer
            f[f"dataset_{i:05d}"] = np.arange(3)
    for extra in ([], ["--json"]):
        proc = subprocess.Popen([NWB_DASK, "info", str(many), "--all", *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        first = proc.stdout.readline()  # what `head -1` reads, then it exits
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 0, err
        assert err == "" and first
    shell = subprocess.run(f"set -o pipefail; {NWB_DASK} info {many} --all | head -n 1", shell=True,
                           executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0 and shell.stderr == "" and shell.stdout.startswith(str(many))


# --------------------------------------------------------------------------- #
# a server that never answers                                                  #
# --------------------------------------------------------------------------- #
@pytest.fixture
def silent_server():
    """Accepts connections (the kernel's backlog) and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/session.nwb"
    sock.close()


def test_silent_server_fails_fast_naming_the_url(silent_server):
    t0 = time.monotonic()
    out = run("info", silent_server, "--timeout", "0.5")
    elapsed = time.monotonic() - t0
    bad_input(out, "info", silent_server, "after 2 attempt(s)", "Read timed out", "--timeout")
    assert elapsed < 30  # 2 x 0.5 s of waiting, plus the interpreter's start
    t0 = time.monotonic()
    with pytest.raises(RemoteReadError, match=re.escape(silent_server)) as err:
        HTTPByteSource(silent_server, timeout=0.3).open()
    assert time.monotonic() - t0 < 0.3 * 2 + 2 and err.value.attempts == 2  # not retries + 1 = 6
    with pytest.raises(RemoteReadError) as err:
        HTTPByteSource(silent_server, timeout=0.2, retries=0).open()
    assert err.value.attempts == 1
    with pytest.raises(RemoteReadError) as err:
        HTTPByteSource(silent_server, timeout=0.2, timeout_retries=3).open()
    assert err.value.attempts == 4


def test_remote_default_timeouts_are_documented_and_bounded():
    src = HTTPByteSource("http://example.invalid/x.nwb")
    assert src.timeout == DEFAULT_TIMEOUT == (5.0, 10.0)
    assert src.retries == 5 and src.timeout_retries == 1
    assert src.silent_server_seconds == pytest.approx(2 * 10.0 + 0.05)
    assert src.silent_server_seconds <= 30
    doc = (Path(__file__).parents[1] / "docs" / "reader.md").read_text()
    assert "5 s to connect, 10 s to read" in doc and "about 20 s" in doc
    assert HTTPByteSource("http://example.invalid/x", timeout=3).timeout == (3.0, 3.0)
    with pytest.raises(ValueError, match="timeout must be"):
        HTTPByteSource("http://example.invalid/x", timeout=(1, 2, 3))


# --------------------------------------------------------------------------- #
# options                                                                      #
# --------------------------------------------------------------------------- #
def test_level_with_codec_source_and_negative_min_mb(files, tmp_path):
    src, out = files / "ok.nwb", tmp_path / "o.nwb"
    bad_input(run("repack", src, out, "--codec", "source", "--level", "3"), "repack", "--level 3", "--codec source")
    bad_input(run("convert", src, tmp_path / "o.nwb.zarr", "--level", "3"), "convert", "--level 3", "--codec source")
    bad_input(run("consolidate", src, out, "--level", "3"), "consolidate", "--level 3", "no --codec")
    res = run("repack", src, out, "--min-mb", "-1")
    assert res.returncode == 2 and "argument --min-mb: must be a number >= 0, got '-1'" in res.stderr
    assert "Traceback" not in res.stderr
    res = run("repack", src, out, "--workers", "0")
    assert res.returncode == 2 and "argument --workers: must be a positive integer" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_computing_command_has_the_same_scheduler_options():
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps its subparsers there
    for command in ("demo", "repack", "convert", "consolidate"):
        actions = {a.dest: a for a in commands[command]._actions}
        assert SCHEDULERS == ("local", "threads", "processes", "sync")
        assert [actions["scheduler"].type(k) for k in SCHEDULERS] == list(SCHEDULERS)
        assert actions["scheduler"].type("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"  # a running cluster
        assert actions["scheduler"].type("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
        with pytest.raises(argparse.ArgumentTypeError, match="tcp://HOST:8786, got 'lokal'"):
            actions["scheduler"].type("lokal")
        assert "scheduler_file" in actions
        assert actions["workers"].type("2") == 2
        assert "json" in actions, command
    for command in ("info", "links"):
        assert "json" in {a.dest for a in commands[command]._actions}


def test_json_reports_of_repack_convert_consolidate(files, tmp_path):
    src = files / "ok.nwb"
    res = run("repack", src, tmp_path / "r.nwb", "--json", "--quiet", "--scheduler", "sync",
              "--workers", "1")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["input"] == str(src) and rep["output"] == str(tmp_path / "r.nwb") and rep["verified"] is True
    es = next(d for d in rep["datasets"] if d["path"] == ES)
    assert es["shape"] == [30000, 24] and es["codec_in"].startswith("gzip") and es["stored_out"] > 0
    assert rep["stats"]["logical_bytes"] >= 30000 * 24 * 2

    res = run("convert", src, tmp_path / "c.nwb.zarr", "--json", "--quiet", "--scheduler", "threads", "--workers", "2")
    assert res.returncode == 0, res.stderr
    conv = json.loads(res.stdout)
    assert conv["direction"] == "hdf5->zarr" and ES in conv["datasets"] and conv["verified"] is True

    res = run("consolidate", src, tmp_path / "s.nwb", "--json", "--quiet", "--scheduler", "sync", "--workers", "1")
    assert res.returncode == 0, res.stderr
    cons = json.loads(res.stdout)
    assert cons["output"] == str(tmp_path / "s.nwb") and cons["datasets"] == [] and cons["verified"] is True
    with h5py.File(tmp_path / "s.nwb", "r") as f, h5py.File(src, "r") as g:
        np.testing.assert_array_equal(f[ES][()], g[ES][()])


# --------------------------------------------------------------------------- #
# exit status: 1 check failed, 3 a bug                                         #
# --------------------------------------------------------------------------- #
def test_verification_failure_is_exit_status_1(tmp_path, monkeypatch, capsys):
    write_rich_nwbfile(tmp_path / "rich.nwb", seconds=0.5, n_channels=4)
    monkeypatch.setattr(sys.modules["nwb_dask.tools.repack"], "compare_files", lambda *a, **k: [f"{ES}: values differ"])
    assert main(["repack", str(tmp_path / "rich.nwb"), str(tmp_path / "o.nwb"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("nwb-dask repack: check failed: verification failed") and ES in captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "o.nwb").exists()


def test_unexpected_error_keeps_its_traceback_with_status_3(files, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("something nwb_dask did not expect")

    monkeypatch.setattr(sys.modules["nwb_dask.tools.info"], "info", boom)
    assert main(["info", str(files / "ok.nwb")]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: something nwb_dask did not expect" in err
    assert "nwb-dask info: internal error" in err and "bug" in err


@pytest.mark.parametrize("argv, flags", [
    (["info", "{f}", "--timeout", "5"], "--timeout, --retries and --no-cache"),
    (["info", "{f}", "--no-cache"], "--timeout, --retries and --no-cache"),
    (["index", "{f}", "--retries", "2"], "--timeout and --retries"),
])
def test_remote_only_flags_on_a_local_path_are_a_usage_error(files, capsys, argv, flags):
    path = str(files / "ok.nwb")
    assert main([a.replace("{f}", path) for a in argv]) == 2
    assert f"{flags} apply to URLs; {path} is a local path" in capsys.readouterr().err

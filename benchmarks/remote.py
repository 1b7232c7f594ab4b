"""Remote (HTTP) open + read of NWB files: nwb_dask vs remfile vs fsspec.

In one run:

1. writes two files with plain pynwb (as an archive's files are written) into a
   temporary directory, and repacks each with ``nwb-dask repack --cloud`` (in a
   process of its own, as a user runs it) into a cloud-optimized copy:

   * ``objects.nwb``: ``--objects`` (200) float64 TimeSeries of ``--object-mb``
     (1 MB) each, contiguous; ``objects-cloud.nwb``, the same repacked;
   * ``ephys.nwb``: a 384-channel int16 ElectricalSeries of ``--seconds`` (60 s),
     gzip, chunks (10000, 64); ``ephys-cloud.nwb``, the same repacked (gzip,
     ~2 MiB chunks, 8 MiB HDF5 pages);

   and prints what the cloud layout cost locally: the ``repack --cloud`` time and
   file size against the original and against a plain ``repack`` (not served);
2. serves that directory with a real nginx (Debian package; installed with
   ``apt-get`` when missing and running as root, unless ``--no-install``)
   on a free 127.0.0.1 port, with its own minimal config (``daemon off;``);
3. for each of ``--latency-ms`` (``30,100``) puts an in-process proxy in front of
   nginx: every HTTP request waits the latency before being forwarded (keep-alive
   supported), every client connection's response bodies are paced as they are
   sent by a token bucket of ``--bandwidth-mbps`` (50 MB/s; object stores serve
   roughly 50-100 MB/s per connection), and it counts requests and body bytes;
4. times the cases (``CASES``; ``--cases`` picks some), each client fresh:

   * **objects**: open the many-object file with pynwb and read one series completely
     (``nwb_dask.read_nwb(url)`` and the series' data for nwb_dask);
   * **slice**: open + read samples ``0:n`` of all channels (``n = --read-seconds * 30000``;
     ``nwb_dask.read_dataset(url, name)[0:n].compute(scheduler="threads")``);
   * **objects-cloud**, **slice-cloud**: the same on the cloud-optimized copies;
   * **objects-warm**: objects again as a second open: before each timed run an
     untimed nwb_dask open fills a metadata cache directory that the timed run (a new
     client: no handle of the first kept) uses; remfile and fsspec keep nothing
     between clients, so theirs is a first open again;

   with ``remfile`` (``h5py.File(remfile.File(url))`` + ``pynwb.NWBHDF5IO(file=...)``)
   and ``fsspec`` (``fsspec.filesystem("http").open(url, "rb", cache_type="blockcache")``
   + ``h5py`` + ``pynwb``), both as in PyNWB's streaming tutorial;

   checks every result is byte-identical to a local read of the original file, and
   prints one table (case x latency x client: median of ``--repeat`` rounds, client
   order rotating; request count, requests until the file was open, MB sent) with
   nwb_dask's speed-up over the faster of remfile / fsspec and issue 17's targets
   (objects: >= 5x remfile in <= ~15 requests; slice: >= 3x; a cloud-optimized
   file: open in <= 3 requests, and each client's speed-up over the original file;
   a warm open: <= 1 request).
   All imports happen before timing.

Usage::

    python benchmarks/remote.py [--latency-ms 30,100] [--bandwidth-mbps 50] [--objects 200]
        [--seconds 60] [--read-seconds 10] [--repeat 3]
        [--cases objects,slice,objects-cloud,slice-cloud,objects-warm] [--no-install]
    python benchmarks/remote.py --quick --no-install     # small files, 1 round, 10 ms (tests)

A case is a function ``files, args -> Case`` listed in ``CASES`` (``Case.warmup``
runs untimed before each timed call, as objects-warm's first open does).

Missing ``remfile`` / ``aiohttp`` (for fsspec's http filesystem) are
``pip install``-ed unless ``--no-install``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

import h5py
import numpy as np

import nwb_dask
from nwb_dask.testing import ephys_nwbfile, synthetic_ephys

NAME = "acquisition/ElectricalSeries/data"
RATE = 30_000

# --------------------------------------------------------------------------- #
# dependencies
# --------------------------------------------------------------------------- #
def _fail(msg: str) -> None:
    sys.exit(f"benchmarks/remote.py: {msg}")


def ensure_module(module: str, package: str, install: bool):
    try:
        return importlib.import_module(module)
    except ImportError:
        if not install:
            _fail(f"Python package {package!r} is missing; `pip install {package}` "
                  "(or run without --no-install)")
    print(f"# pip install {package}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
    importlib.invalidate_caches()
    return importlib.import_module(module)


def find_nginx() -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which("nginx", path=path)


def ensure_nginx(install: bool) -> str:
    exe = find_nginx()
    if exe:
        return exe
    if not install:
        _fail("nginx not found; `apt-get install -y nginx` (or run without --no-install)")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _fail("nginx not found and cannot be installed here (needs root and apt-get); "
              "run `sudo apt-get update && sudo apt-get install -y nginx` first")
    print("# apt-get install -y nginx", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=env)
    exe = find_nginx()
    if not exe:
        _fail("apt-get installed nginx but no nginx executable was found")
    return exe


# --------------------------------------------------------------------------- #
# nginx
# --------------------------------------------------------------------------- #
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def start_nginx(exe: str, root: str, workdir: str) -> tuple[subprocess.Popen, int]:
    """nginx in the foreground serving ``root`` on a free 127.0.0.1 port."""
    port = free_port()
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(workdir, d), exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the 0700 temp dir
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{user}daemon off;
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    types {{ application/x-hdf5 nwb; }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
""")
    cmd = [exe, "-p", workdir, "-c", conf, "-e", os.path.join(workdir, "error.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
    except RuntimeError as e:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"nginx failed to start: {e}\n{err}") from None
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: fast shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- #
# latency + bandwidth proxy
# --------------------------------------------------------------------------- #
class TokenBucket:
    """Pacing of one connection: ``rate`` bytes/s, at most ``burst`` bytes ahead.

    :meth:`take` is awaited before each piece of a body is written, so a
    response is paced as it is sent (not delayed as a whole after the fact).
    Tokens may go negative: the caller then sleeps until the debt is paid.
    """

    def __init__(self, rate: float, burst: int = 64 << 10):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self.t = time.monotonic()

    async def take(self, n: int) -> None:
        import asyncio

        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


def _proxy_process(upstream_port, latency, bandwidth, verbose, shared, conn) -> None:
    """An asyncio HTTP/1.1 proxy: forwards requests verbatim after ``latency``, streams bodies.

    Every client connection has its own :class:`TokenBucket` of ``bandwidth``
    bytes/s (0: no cap), like an object store that serves each connection at
    a fixed rate.  asyncio streams bodies without a thread per connection,
    and in a process of its own the proxy shares no GIL with the client
    being measured.
    """
    import asyncio

    t0 = time.perf_counter()
    piece = 64 << 10 if bandwidth else 4 << 20  # paced bodies go out in small pieces

    async def handle(reader, writer):
        up_r = up_w = None
        bucket = TokenBucket(bandwidth) if bandwidth else None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].upper()
                # Counted before anything is answered (bytes before each piece is written), so
                # the counters are complete as soon as the client has its response.
                with shared[0].get_lock():
                    shared[0].value += 1
                await asyncio.sleep(latency)
                if up_w is None:
                    up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
                up_w.write(head)
                await up_w.drain()
                rhead = await up_r.readuntil(b"\r\n\r\n")
                length = 0
                for line in rhead.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                writer.write(rhead)
                remaining = 0 if method == b"HEAD" else length
                sent = remaining
                while remaining:
                    data = await up_r.read(min(remaining, piece))
                    if not data:
                        raise ConnectionError("upstream closed")
                    if bucket is not None:
                        await bucket.take(len(data))
                    with shared[1].get_lock():
                        shared[1].value += len(data)
                    writer.write(data)
                    await writer.drain()
                    remaining -= len(data)
                if not sent:
                    await writer.drain()
                if verbose:
                    rng = next((ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"range:")), b"-")
                    print(f"#     {time.perf_counter() - t0:7.3f} s  {method.decode()} {rng.decode()}  {sent} B sent",
                          flush=True)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if up_w is not None:
                up_w.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()

        def quiet(loop, context):  # handlers cancelled at shutdown are not errors
            if not isinstance(context.get("exception"), asyncio.CancelledError):
                loop.default_exception_handler(context)

        loop.set_exception_handler(quiet)
        await loop.run_in_executor(None, conn.recv)  # until the parent says stop
        server.close()

    asyncio.run(main())


class ProcessProxy:
    """The latency + bandwidth proxy (asyncio) in a process of its own.

    In the benchmark's own process its Python threads would share the GIL
    with the client being measured (nwb_dask's decoding threads, fsspec's
    event loop), which caps the proxy's bandwidth and penalises parallel
    clients; a separate process measures the clients, not the proxy.
    ``bandwidth`` is bytes/s per client connection (0: uncapped).
    """

    def __init__(self, upstream_port: int, latency: float, verbose: bool = False, bandwidth: float = 0.0):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._shared = (ctx.Value("q", 0), ctx.Value("q", 0))
        self._parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_proxy_process,
            args=(upstream_port, latency, bandwidth, verbose, self._shared, child),
            daemon=True,
        )

    def __enter__(self):
        self._proc.start()
        self.port = self._parent.recv()
        return self

    def __exit__(self, *exc):
        self._parent.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    @property
    def requests(self) -> int:
        return self._shared[0].value

    @property
    def bytes(self) -> int:
        return self._shared[1].value

    def reset(self) -> None:
        for v in self._shared:
            with v.get_lock():
                v.value = 0


# --------------------------------------------------------------------------- #
# the three clients                                                            #
# --------------------------------------------------------------------------- #
# Every client is ``fn(url, arg, mark)``: it opens ``url`` from scratch, calls
# ``mark()`` once the file is open (pynwb has read the NWBFile; nwb_dask has
# its lazy array or NWBFile) and returns what it read, so the table can show
# how many requests opening took apart from the whole read.
@contextlib.contextmanager
def cold_nwb_dask():
    """A first open by nwb_dask (cold), as a new user's: yields its ``remote_options``.

    Forgets this process's remote handles, views and byte sources, and gives the
    run an empty on-disk metadata cache (removed afterwards), so nothing an
    earlier run read is reused; the run still stores its entry, as a first open
    does.  A warm-open case would keep one directory across its runs instead.
    """
    forget_nwb_dask_handles()
    directory = tempfile.mkdtemp(prefix="nwb_dask_cold_cache_")
    try:
        yield {"metadata_cache": {"directory": directory}}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def slice_nwb_dask(url: str, n: int, mark) -> np.ndarray:
    with cold_nwb_dask() as options:
        x = nwb_dask.read_dataset(url, NAME, remote_options=options)
        mark()
        return x[0:n].compute(scheduler="threads")


def _pynwb_slice(f, n: int, mark) -> np.ndarray:
    import pynwb

    with pynwb.NWBHDF5IO(file=f, mode="r") as io:
        nwb = io.read()
        mark()
        return nwb.acquisition["ElectricalSeries"].data[0:n]


@contextlib.contextmanager
def remfile_h5(url: str):
    """``url`` opened as PyNWB's streaming tutorial does with remfile."""
    import remfile

    with h5py.File(remfile.File(url), "r") as f:
        yield f


@contextlib.contextmanager
def fsspec_h5(url: str):
    """``url`` opened as PyNWB's streaming tutorial does with fsspec (a fresh filesystem, block cache)."""
    import fsspec

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    with fs.open(url, "rb", cache_type="blockcache") as raw, h5py.File(raw, "r") as f:
        yield f


def slice_remfile(url: str, n: int, mark) -> np.ndarray:
    with remfile_h5(url) as f:
        return _pynwb_slice(f, n, mark)


def slice_fsspec(url: str, n: int, mark) -> np.ndarray:
    with fsspec_h5(url) as f:
        return _pynwb_slice(f, n, mark)


def series_nwb_dask(url: str, name: str, mark) -> np.ndarray:
    with cold_nwb_dask() as options:
        return _series_nwb_dask(url, name, mark, options)


def _series_nwb_dask(url: str, name: str, mark, options: dict) -> np.ndarray:
    nwb = nwb_dask.read_nwb(url, remote_options=options)
    try:
        mark()
        data = nwb.acquisition[name].data
        return data.compute(scheduler="threads") if hasattr(data, "compute") else np.asarray(data[()])
    finally:
        nwb.read_io.close()


#: The on-disk metadata cache a warm-open case keeps across its runs (set by ``case_objects_warm``).
WARM_CACHE: dict = {}


def forget_nwb_dask_handles() -> None:
    """This process's remote handles, views and byte sources dropped: the next open starts from scratch."""
    from nwb_dask.hdf5.read import release_remote_handles

    release_remote_handles()


def series_nwb_dask_warm(url: str, name: str, mark) -> np.ndarray:
    """A second open by a new nwb_dask client (no handle of this process kept), with the metadata cache of the first."""
    forget_nwb_dask_handles()
    return _series_nwb_dask(url, name, mark, {"metadata_cache": {"directory": WARM_CACHE["directory"]}})


def warm_up(label: str, url: str, name) -> None:
    """Before each timed warm run: nwb_dask opens the file once (filling the cache); the others have no such cache."""
    if label == "nwb_dask":
        series_nwb_dask_warm(url, name, lambda: None)


def _pynwb_series(f, name: str, mark) -> np.ndarray:
    import pynwb

    with pynwb.NWBHDF5IO(file=f, mode="r") as io:
        nwb = io.read()
        mark()
        return nwb.acquisition[name].data[()]


def series_remfile(url: str, name: str, mark) -> np.ndarray:
    with remfile_h5(url) as f:
        return _pynwb_series(f, name, mark)


def series_fsspec(url: str, name: str, mark) -> np.ndarray:
    with fsspec_h5(url) as f:
        return _pynwb_series(f, name, mark)


SERIES_CLIENTS = (("nwb_dask", series_nwb_dask), ("remfile", series_remfile), ("fsspec", series_fsspec))
SLICE_CLIENTS = (("nwb_dask", slice_nwb_dask), ("remfile", slice_remfile), ("fsspec", slice_fsspec))


# --------------------------------------------------------------------------- #
# the files (written by plain pynwb, as an archive's files are; then repacked) #
# --------------------------------------------------------------------------- #
SLICE_CHUNKS = (10_000, 64)  # the pynwb-written gzip file


def write_slice_file(path: str, seconds: float) -> None:
    """A pynwb-written ElectricalSeries, gzip, chunks (10000, 64), streamed from a lazy array."""
    import pynwb
    from hdmf.data_utils import GenericDataChunkIterator
    from pynwb import H5DataIO

    arr = synthetic_ephys(seconds=seconds, seed=7)

    class DaskChunks(GenericDataChunkIterator):  # hdmf's iterator over any sliceable source
        def __init__(self, array, **kwargs):
            self._array = array
            super().__init__(**kwargs)

        def _get_data(self, selection):
            return np.asarray(self._array[selection])

        def _get_maxshape(self):
            return self._array.shape

        def _get_dtype(self):
            return self._array.dtype

    rows = min(arr.shape[0], 3 * SLICE_CHUNKS[0])
    it = DaskChunks(arr, chunk_shape=SLICE_CHUNKS, buffer_shape=(rows, arr.shape[1]), display_progress=False)
    with pynwb.NWBHDF5IO(path, "w") as io:
        io.write(ephys_nwbfile(H5DataIO(it, compression="gzip", chunks=SLICE_CHUNKS)))


def write_objects_file(path: str, objects: int, object_mb: float) -> None:
    """A pynwb-written file with ``objects`` float64 TimeSeries of ``object_mb`` MB each."""
    from datetime import datetime, timezone

    import pynwb

    nwb = pynwb.NWBFile(session_description="many-object benchmark file", identifier="nwb_dask-objects",
                        session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    samples = max(1, int(object_mb * 1e6 / 8))
    rng = np.random.default_rng(11)
    for i in range(objects):
        nwb.add_acquisition(pynwb.TimeSeries(name=f"ts{i:04d}", data=rng.standard_normal(samples),
                                             unit="a.u.", rate=1000.0))
    with pynwb.NWBHDF5IO(path, "w") as io:
        io.write(nwb)


def repack_cli(src: str, out: str, cloud: bool) -> dict:
    """``nwb-dask repack SRC OUT [--cloud]`` in a process of its own (as a user runs it); its ``--json`` report."""
    cmd = [sys.executable, "-m", "nwb_dask.cli", "repack", src, out, "--quiet", "--json", "--overwrite"]
    proc = subprocess.run(cmd + (["--cloud"] if cloud else []), capture_output=True, text=True)
    if proc.returncode:
        _fail(f"`nwb-dask repack {os.path.basename(src)} {os.path.basename(out)}{' --cloud' if cloud else ''}` "
              f"failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


class Files:
    """The served directory: each file written (or repacked) once per run, whichever cases ask for it.

    ``cost`` collects, for each cloud file, what the cloud layout cost locally:
    the ``repack --cloud`` time and size against the original and against a plain
    ``repack`` of the same file (the same codec and verification, no cloud layout).
    """

    def __init__(self, www: str, args: argparse.Namespace):
        self.www, self.args = www, args
        self.cost: list[str] = []
        self._done: dict[str, str] = {}

    def path(self, fname: str) -> str:
        return os.path.join(self.www, fname)

    def _once(self, fname: str, make) -> str:
        if fname not in self._done:
            make(self.path(fname))
            self._done[fname] = self.path(fname)
        return self._done[fname]

    def objects(self) -> str:
        def make(path):
            t0 = time.perf_counter()
            write_objects_file(path, self.args.objects, self.args.object_mb)
            print(f"# wrote {self.args.objects} TimeSeries x {self.args.object_mb:g} MB (pynwb): "
                  f"objects.nwb, {os.path.getsize(path) / 1e6:.1f} MB, in {time.perf_counter() - t0:.1f} s", flush=True)
        return self._once("objects.nwb", make)

    def ephys(self) -> str:
        def make(path):
            t0 = time.perf_counter()
            write_slice_file(path, self.args.seconds)
            print(f"# wrote {self.args.seconds:g} s x 384 ch int16 gzip, chunks {SLICE_CHUNKS} (pynwb): ephys.nwb, "
                  f"{os.path.getsize(path) / 1e6:.1f} MB, in {time.perf_counter() - t0:.1f} s", flush=True)
        return self._once("ephys.nwb", make)

    def cloud(self, src: str) -> str:
        """``src`` repacked with ``nwb-dask repack --cloud`` into ``<name>-cloud.nwb``."""
        stem = os.path.splitext(os.path.basename(src))[0]

        def make(path):
            plain = self.path(f"{stem}-plain.nwb")  # not served: the baseline of the local cost
            base = repack_cli(src, plain, cloud=False)
            os.remove(plain)
            cloud = repack_cli(src, path, cloud=True)
            size_in, size_out, size_plain = cloud["input_bytes"], cloud["output_bytes"], base["output_bytes"]
            line = (f"{stem}-cloud.nwb: repack --cloud {cloud['seconds']:.1f} s (plain repack {base['seconds']:.1f} s), "
                    f"{size_out / 1e6:.1f} MB = {size_out / size_in:.2f}x {stem}.nwb ({size_in / 1e6:.1f} MB) "
                    f"and {size_out / size_plain:.2f}x the plain repack ({size_plain / 1e6:.1f} MB)")
            print(f"# {line}", flush=True)
            self.cost.append(line)
        return self._once(f"{stem}-cloud.nwb", make)


# --------------------------------------------------------------------------- #
# the cases                                                                    #
# --------------------------------------------------------------------------- #
class Case(NamedTuple):  # (not a dataclass: tests load this script without registering it in sys.modules)
    """One row group of the table: a served file, the clients timed on it and what they must return.

    ``clients`` are ``(label, fn(url, arg, mark))``, nwb_dask first; every result
    must equal ``ref`` byte for byte.  ``warmup(label, url, arg)``, if given, runs
    untimed (and uncounted) before each timed call, e.g. a warm-open case opens the
    file once there.  ``target(rows, others)`` returns the summary line's verdict,
    ``others`` being the rows of the other cases at the same latency.
    """

    name: str
    fname: str
    clients: tuple
    arg: Any
    ref: np.ndarray
    desc: str
    target: Callable[[list, dict], str]
    warmup: Callable[[str, str, Any], None] | None = None


def _local(path: str, name: str, sel=()) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][sel]


def _check_same_local(case: str, path: str, original: str, name: str, sel=()) -> np.ndarray:
    """The local read of ``path``, which must equal that of ``original`` (a repacked file holds the same bytes)."""
    ref = _local(original, name, sel)
    if not same_bytes(_local(path, name, sel), ref):
        _fail(f"{case}: {os.path.basename(path)}:{name} differs from {os.path.basename(original)} read locally")
    return ref


def _speedup(rows) -> tuple[float, str]:
    best = min(rows[1:], key=lambda r: r[1])
    return best[1] / rows[0][1], best[0]


def _objects_target(rows, others) -> str:
    vs_remfile = rows[1][1] / rows[0][1]
    ok = vs_remfile >= 5 and rows[0][2] <= 15
    return f"target >= 5x remfile ({vs_remfile:.1f}x) and <= ~15 requests ({rows[0][2]}): {'met' if ok else 'NOT met'}"


def _slice_target(rows, others) -> str:
    return f"target >= 3x: {'met' if _speedup(rows)[0] >= 3 else 'NOT met'}"


def _cloud_target(original: str):
    """A cloud-optimized file opens in <= 3 requests (issue 17); and how much faster each client got."""

    def target(rows, others) -> str:
        opened = rows[0][3]
        text = f"target: open in <= 3 requests ({opened}): {'met' if opened <= 3 else 'NOT met'}"
        if original in others:
            before = {r[0]: r[1] for r in others[original]}
            gains = ", ".join(f"{label} {before[label] / dt:.1f}x" for label, dt, *_ in rows if label in before)
            text += f"; speed-up over {original} (its seconds / these): {gains}"
        return text

    return target


def case_objects(files: Files, args) -> Case:
    path = files.objects()
    series = f"ts{args.objects // 2:04d}"
    ref = _local(path, f"acquisition/{series}/data")
    return Case("objects", "objects.nwb", SERIES_CLIENTS, series, ref,
                f"open + read {series} ({ref.nbytes / 1e6:.2f} MB) of {args.objects}, objects.nwb "
                f"({os.path.getsize(path) / 1e6:.1f} MB, pynwb)", _objects_target)


def case_slice(files: Files, args) -> Case:
    path, n = files.ephys(), read_samples(args)
    ref = _local(path, NAME, np.s_[0:n])
    return Case("slice", "ephys.nwb", SLICE_CLIENTS, n, ref,
                f"open + read [0:{n}, :] ({ref.nbytes / 1e6:.1f} MB decoded), ephys.nwb "
                f"({os.path.getsize(path) / 1e6:.1f} MB, pynwb, gzip chunks {SLICE_CHUNKS})", _slice_target)


def case_objects_cloud(files: Files, args) -> Case:
    original = files.objects()
    path = files.cloud(original)
    series = f"ts{args.objects // 2:04d}"
    ref = _check_same_local("objects-cloud", path, original, f"acquisition/{series}/data")
    return Case("objects-cloud", os.path.basename(path), SERIES_CLIENTS, series, ref,
                f"as objects, on {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.1f} MB, "
                f"objects.nwb after nwb-dask repack --cloud)", _cloud_target("objects"))


def case_slice_cloud(files: Files, args) -> Case:
    original = files.ephys()
    path, n = files.cloud(original), read_samples(args)
    ref = _check_same_local("slice-cloud", path, original, NAME, np.s_[0:n])
    with h5py.File(path, "r") as f:
        chunks = f[NAME].chunks
    return Case("slice-cloud", os.path.basename(path), SLICE_CLIENTS, n, ref,
                f"as slice, on {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.1f} MB, ephys.nwb after "
                f"nwb-dask repack --cloud: gzip chunks {chunks})", _cloud_target("slice"))


def _warm_target(rows, others) -> str:
    opened = rows[0][3]
    return f"target: a warm open in <= 1 request ({opened}): {'met' if opened <= 1 else 'NOT met'}"


def case_objects_warm(files: Files, args) -> Case:
    """objects.nwb opened a second time: nwb_dask with the metadata cache its first open filled (remfile and
    fsspec keep nothing between clients, so theirs is a first open again)."""
    path = files.objects()
    WARM_CACHE.setdefault("directory", tempfile.mkdtemp(prefix="nwb_dask_warm_cache_"))
    series = f"ts{args.objects // 2:04d}"
    ref = _local(path, f"acquisition/{series}/data")
    clients = (("nwb_dask", series_nwb_dask_warm), ("remfile", series_remfile), ("fsspec", series_fsspec))
    return Case("objects-warm", "objects.nwb", clients, series, ref,
                "as objects, a second open: nwb_dask's metadata cache filled by an untimed first open",
                _warm_target, warmup=warm_up)


#: The cases in the order they run and are reported; ``--cases`` picks a subset (default: all).
#: To add one (a warm open, say), write a ``files, args -> Case`` function and list it here.
CASES: dict[str, Callable[[Files, argparse.Namespace], Case]] = {
    "objects": case_objects,
    "slice": case_slice,
    "objects-cloud": case_objects_cloud,
    "slice-cloud": case_slice_cloud,
    "objects-warm": case_objects_warm,
}


def read_samples(args) -> int:
    return int(round(args.read_seconds * RATE))


def same_bytes(out, ref) -> bool:
    out = np.ascontiguousarray(np.asarray(out))
    ref = np.ascontiguousarray(ref)
    return out.shape == ref.shape and out.dtype == ref.dtype and out.tobytes() == ref.tobytes()


def run_case(proxy, url, case: Case, repeat: int, label_case: str):
    """Time ``case.clients`` on ``url``: rows ``(label, median seconds, requests, open requests, bytes sent)``.

    Every result must equal ``case.ref`` byte for byte.  Counts are those of the last round.
    """
    times = {label: [] for label, _ in case.clients}
    counts = {}
    for r in range(repeat):
        # Rotate the order each round: on these VMs memory freed by one client is
        # returned to the host within seconds, and the next client to touch it pays.
        order = case.clients[r % len(case.clients):] + case.clients[: r % len(case.clients)]
        for label, fn in order:
            if case.warmup is not None:
                case.warmup(label, url, case.arg)
            proxy.reset()
            opened = []
            t0 = time.perf_counter()
            out = fn(url, case.arg, lambda: opened.append(proxy.requests))
            dt = time.perf_counter() - t0
            if not same_bytes(out, case.ref):
                _fail(f"{label_case}: {label} read of {url} differs from the local read "
                      f"(shape {np.shape(out)} {np.asarray(out).dtype} vs {case.ref.shape} {case.ref.dtype})")
            if len(opened) != 1:
                _fail(f"{label_case}: {label} called mark() {len(opened)} times (once, when the file is open)")
            del out
            times[label].append(dt)
            counts[label] = (proxy.requests, opened[0], proxy.bytes)
            print(f"#   {label_case} round {r + 1}: {label}: {dt:.2f} s, {proxy.requests} requests "
                  f"({opened[0]} to open)", flush=True)
    return [(label, float(np.median(times[label])), *counts[label]) for label, _ in case.clients]


def parse_latencies(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail(f"--latency-ms {text!r}: expected comma-separated milliseconds, e.g. 30,100")
    if not values or any(v < 0 for v in values):
        _fail(f"--latency-ms {text!r}: expected non-negative milliseconds, e.g. 30,100")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic recording (s)")
    ap.add_argument("--read-seconds", type=float, default=10.0, help="length of the slice read (s)")
    ap.add_argument("--latency-ms", default=None,
                    help="delay added to every HTTP request; comma-separated for several runs (default 30,100)")
    ap.add_argument("--bandwidth-mbps", type=float, default=50.0,
                    help="cap per client connection, MB/s (1 MB = 1e6 bytes; 0: no cap)")
    ap.add_argument("--objects", type=int, default=200, help="TimeSeries in the many-object file")
    ap.add_argument("--object-mb", type=float, default=1.0, help="size of each of those TimeSeries (MB)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"which cases to run (default: {','.join(CASES)})")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (client order rotates; the median is reported)")
    ap.add_argument("--quick", action="store_true",
                    help="small files and 1 round (2 s recording, 1 s slice, 20 x 0.1 MB objects, 10 ms)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every proxied request")
    ap.add_argument("--no-install", action="store_true",
                    help="never call apt-get / pip; fail with a message when something is missing")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.read_seconds, args.repeat = 2.0, 1.0, 1
        args.objects, args.object_mb = 20, 0.1
        args.latency_ms = args.latency_ms or "10"
    latencies = parse_latencies(args.latency_ms or "30,100")
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        _fail(f"--cases {args.cases!r}: expected a comma-separated subset of {','.join(CASES)}")
    names = [c for c in CASES if c in names]  # the table's order
    if args.objects < 1:
        _fail(f"--objects {args.objects}: need at least one TimeSeries")
    if args.read_seconds > args.seconds:
        _fail(f"--read-seconds {args.read_seconds:g} is longer than the recording (--seconds {args.seconds:g})")
    install = not args.no_install
    bandwidth = args.bandwidth_mbps * 1e6

    nginx = ensure_nginx(install)
    ensure_module("remfile", "remfile", install)
    ensure_module("aiohttp", "aiohttp", install)  # fsspec's http filesystem
    ensure_module("fsspec", "fsspec", install)
    # Import everything the clients use before timing anything (dask imports
    # distributed on first compute; pynwb, fsspec and aiohttp are slow to import).
    import aiohttp  # noqa: F401
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
    import fsspec.implementations.http  # noqa: F401
    import pynwb  # noqa: F401
    import remfile  # noqa: F401
    import requests  # noqa: F401

    results = []  # (case, latency_ms, rows)
    by_latency: dict[float, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="nwb_dask_remote_") as tmp:
        www, work = os.path.join(tmp, "www"), os.path.join(tmp, "nginx")
        os.makedirs(www)
        os.makedirs(work)
        files = Files(www, args)
        cases = [CASES[name](files, args) for name in names]

        proc, nginx_port = start_nginx(nginx, www, work)
        try:
            for latency_ms in latencies:
                with ProcessProxy(nginx_port, latency_ms / 1e3, args.verbose, bandwidth) as proxy:
                    cap = f"{args.bandwidth_mbps:g} MB/s per connection" if bandwidth else "no bandwidth cap"
                    print(f"# nginx {nginx} on :{nginx_port}, proxy (+{latency_ms:g} ms/request, {cap}) "
                          f"on :{proxy.port}; {os.cpu_count()} cpus", flush=True)
                    for case in cases:
                        url = f"http://127.0.0.1:{proxy.port}/{case.fname}"
                        rows = run_case(proxy, url, case, args.repeat, f"{case.name} {latency_ms:g} ms")
                        results.append((case, latency_ms, rows))
                        by_latency.setdefault(latency_ms, {})[case.name] = rows
        finally:
            stop(proc)
            if "directory" in WARM_CACHE:
                shutil.rmtree(WARM_CACHE.pop("directory"), ignore_errors=True)

    cap = f"{args.bandwidth_mbps:g} MB/s per connection" if bandwidth else "no bandwidth cap"
    print()
    print(f"median of {args.repeat} round(s); proxy adds the latency to every request, {cap}; "
          "'open' = requests until the file was open (pynwb's NWBFile read, or nwb_dask's lazy array)")
    print()
    for case in cases:
        print(f"{case.name}: {case.desc}")
    if files.cost:
        print("\nlocal cost of the cloud layout (nwb-dask repack, verification included):")
        print("\n".join(f"  {line}" for line in files.cost))
    print()
    print(f"{'case':<14}{'latency':>8}  {'method':<10}{'seconds':>9}{'requests':>10}{'open':>6}{'MB sent':>9}")
    summary = []
    for case, latency_ms, rows in results:
        for label, dt, nreq, nopen, nbytes in rows:
            print(f"{case.name:<14}{latency_ms:>6g}ms  {label:<10}{dt:>9.2f}{nreq:>10d}{nopen:>6d}{nbytes / 1e6:>9.1f}")
        speedup, best = _speedup(rows)
        others = {k: v for k, v in by_latency[latency_ms].items() if k != case.name}
        summary.append(f"{case.name:<14}{latency_ms:>6g}ms  nwb_dask {speedup:.1f}x the faster other ({best}); "
                       f"{case.target(rows, others)}")
    print()
    print("\n".join(summary))
    print("(all results equal the local read, bytes identical)")


if __name__ == "__main__":
    main()

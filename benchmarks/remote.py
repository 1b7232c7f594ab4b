"""Remote (HTTP) open + read of an NWB recording: nwb_dask vs remfile vs fsspec.

In one run:

1. writes a synthetic NWB file (384-channel int16 ElectricalSeries, gzip,
   default 60 s) into a temporary directory;
2. serves that directory with a real nginx (Debian package; installed with
   ``apt-get`` when missing and running as root, unless ``--no-install``)
   on a free 127.0.0.1 port, with its own minimal config (``daemon off;``);
3. puts an in-process latency proxy in front of nginx (every HTTP request
   waits ``--latency-ms`` before being forwarded, keep-alive supported) and
   counts the requests it sees;
4. times "open the file + read samples ``0:n`` of all channels"
   (``n = --read-seconds * 30000``) through the proxy, each with a fresh client:

   * ``nwb_dask``: ``nwb_dask.read_dataset(url, name)[0:n].compute(scheduler="threads")``;
   * ``remfile``: ``h5py.File(remfile.File(url))`` + ``pynwb.NWBHDF5IO(file=...)``
     (PyNWB's streaming tutorial);
   * ``fsspec``: ``fsspec.filesystem("http").open(url, "rb", cache_type="blockcache")``
     + ``h5py`` + ``pynwb`` (PyNWB's streaming tutorial);

   checks every result against a local read, and prints a table (median
   of ``--repeat`` rounds, client order rotating) with the speed-up of
   nwb_dask over the faster of remfile / fsspec.  All imports happen before
   timing.

Usage::

    python benchmarks/remote.py [--seconds 60] [--read-seconds 10] [--latency-ms 30] [--repeat 3] [--no-install]

Missing ``remfile`` / ``aiohttp`` (for fsspec's http filesystem) are
``pip install``-ed unless ``--no-install``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

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
# latency proxy
# --------------------------------------------------------------------------- #
def _proxy_process(upstream_port, latency, verbose, shared, conn) -> None:
    """An asyncio HTTP/1.1 proxy: forwards requests verbatim after ``latency``, streams bodies.

    asyncio streams bodies without a thread per connection, and in a process
    of its own the proxy shares no GIL with the client being measured.
    """
    import asyncio

    t0 = time.perf_counter()

    async def handle(reader, writer):
        up_r = up_w = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].upper()
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
                    data = await up_r.read(min(remaining, 4 << 20))
                    if not data:
                        raise ConnectionError("upstream closed")
                    writer.write(data)
                    await writer.drain()
                    remaining -= len(data)
                with shared[0].get_lock():
                    shared[0].value += 1
                    shared[1].value += sent
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
    """The latency proxy (asyncio) in a process of its own.

    In the benchmark's own process its Python threads would share the GIL
    with the client being measured (nwb_dask's decoding threads, fsspec's
    event loop), which caps the proxy's bandwidth and penalises parallel
    clients; a separate process measures the clients, not the proxy.
    """

    def __init__(self, upstream_port: int, latency: float, verbose: bool = False):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._shared = (ctx.Value("q", 0), ctx.Value("q", 0))
        self._parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_proxy_process, args=(upstream_port, latency, verbose, self._shared, child), daemon=True
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
# the three clients
# --------------------------------------------------------------------------- #
def read_nwb_dask(url: str, n: int) -> np.ndarray:
    from nwb_dask.hdf5 import read as reader

    # a fresh client: no handle or byte source reused from a previous run
    reader.open_remote.cache_clear()
    reader._source.cache_clear()
    return nwb_dask.read_dataset(url, NAME)[0:n].compute(scheduler="threads")


def read_remfile(url: str, n: int) -> np.ndarray:
    import pynwb
    import remfile

    rf = remfile.File(url)
    with h5py.File(rf, "r") as f, pynwb.NWBHDF5IO(file=f, mode="r") as io:
        nwb = io.read()
        return nwb.acquisition["ElectricalSeries"].data[0:n]


def read_fsspec(url: str, n: int) -> np.ndarray:
    import fsspec
    import pynwb

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    with fs.open(url, "rb", cache_type="blockcache") as raw, h5py.File(raw, "r") as f, \
            pynwb.NWBHDF5IO(file=f, mode="r") as io:
        nwb = io.read()
        return nwb.acquisition["ElectricalSeries"].data[0:n]


# --------------------------------------------------------------------------- #
def write_file(path: str, seconds: float) -> None:
    arr = synthetic_ephys(seconds=seconds, seed=7)
    nwb_dask.write_nwb(ephys_nwbfile(nwb_dask.DaskDataIO(arr, codec="gzip")), path, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic recording (s)")
    ap.add_argument("--read-seconds", type=float, default=10.0, help="length of the slice read (s)")
    ap.add_argument("--latency-ms", type=float, default=30.0, help="delay added to every HTTP request")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (client order rotates; the median is reported)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every proxied request")
    ap.add_argument("--no-install", action="store_true",
                    help="never call apt-get / pip; fail with a message when something is missing")
    args = ap.parse_args()
    install = not args.no_install
    n = int(round(args.read_seconds * RATE))

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

    with tempfile.TemporaryDirectory(prefix="nwb_dask_remote_") as tmp:
        www, work = os.path.join(tmp, "www"), os.path.join(tmp, "nginx")
        os.makedirs(www)
        os.makedirs(work)
        path = os.path.join(www, "ephys.nwb")
        t0 = time.perf_counter()
        write_file(path, args.seconds)
        with h5py.File(path, "r") as f:
            d = f[NAME]
            shape, chunks = d.shape, d.chunks
            ref = d[0:n]
        if ref.shape[0] < n:
            _fail(f"--read-seconds {args.read_seconds} is longer than the recording ({shape[0] / RATE:.1f} s)")
        print(f"# wrote {shape} {ref.dtype} gzip, chunks {chunks}, "
              f"{os.path.getsize(path) / 1e6:.1f} MB file in {time.perf_counter() - t0:.1f} s")

        proc, nginx_port = start_nginx(nginx, www, work)
        try:
            with ProcessProxy(nginx_port, args.latency_ms / 1e3, args.verbose) as proxy:
                url = f"http://127.0.0.1:{proxy.port}/ephys.nwb"
                print(f"# nginx {nginx} on :{nginx_port}, latency proxy (+{args.latency_ms:g} ms/request) "
                      f"on :{proxy.port}; {os.cpu_count()} cpus")
                print(f"# task: open + read [0:{n}, :] ({args.read_seconds:g} s x {shape[1]} ch, "
                      f"{ref.nbytes / 1e6:.1f} MB decoded) via {url}")
                clients = (("nwb_dask", read_nwb_dask), ("remfile", read_remfile),
                           ("fsspec blockcache", read_fsspec))
                times: dict[str, list[float]] = {label: [] for label, _ in clients}
                counts: dict[str, tuple[int, int]] = {}
                for r in range(args.repeat):
                    # Rotate the order each round: on these VMs memory freed by one client is
                    # returned to the host within seconds, and the next client to touch it pays.
                    order = clients[r % len(clients):] + clients[: r % len(clients)]
                    for label, fn in order:
                        proxy.reset()
                        t0 = time.perf_counter()
                        out = fn(url, n)
                        dt = time.perf_counter() - t0
                        out = np.asarray(out)
                        assert out.shape == ref.shape and out.dtype == ref.dtype, (label, out.shape, out.dtype)
                        assert np.array_equal(out, ref), f"{label}: data differ from the local read"
                        del out
                        times[label].append(dt)
                        counts[label] = (proxy.requests, proxy.bytes)
                        print(f"#   round {r + 1}: {label}: {dt:.2f} s, {proxy.requests} requests", flush=True)
                rows = [(label, float(np.median(times[label])), *counts[label]) for label, _ in clients]
        finally:
            stop(proc)

    print()
    print(f"median of {args.repeat} rounds")
    print(f"{'method':<20}{'seconds':>9}{'MB/s':>9}{'requests':>10}{'MB sent':>9}")
    for label, dt, nreq, nbytes in rows:
        print(f"{label:<20}{dt:>9.2f}{ref.nbytes / 1e6 / dt:>9.1f}{nreq:>10d}{nbytes / 1e6:>9.1f}")
    best = min(rows[1:], key=lambda r: r[1])
    speedup = best[1] / rows[0][1]
    print(f"\nnwb_dask speed-up over the faster of remfile/fsspec ({best[0]}): {speedup:.1f}x "
          f"(target >= 5x: {'met' if speedup >= 5 else 'NOT met'})")
    print("(MB/s = decoded MB of the slice / wall time; all results equal the local read)")


if __name__ == "__main__":
    main()

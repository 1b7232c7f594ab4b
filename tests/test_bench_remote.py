"""benchmarks/remote.py: its bandwidth-capping proxy, and its quick mode end to end."""

from __future__ import annotations

import http.client
import importlib.util
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "remote.py"
BODY = bytes(range(256)) * (5_000_000 // 256) + b"x" * (5_000_000 % 256)  # 5 MB, not all one byte


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_remote", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Body(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


@pytest.fixture
def capped_proxy():
    """An upstream serving a 5 MB body, behind the benchmark's proxy capped at 20 MB/s per connection."""
    bench = _load_bench()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    t = threading.Thread(target=upstream.serve_forever, daemon=True)
    t.start()
    try:
        with bench.ProcessProxy(upstream.server_address[1], 0.0, bandwidth=20e6) as proxy:
            yield proxy
    finally:
        upstream.shutdown()
        upstream.server_close()


def _fetch(port: int) -> tuple[float, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.perf_counter()
        conn.request("GET", "/body")
        resp = conn.getresponse()
        data = resp.read()
        return time.perf_counter() - t0, data
    finally:
        conn.close()


def test_bandwidth_cap_paces_one_connection(capped_proxy):
    dt, data = _fetch(capped_proxy.port)
    assert data == BODY
    # 5 MB at 20 MB/s is 0.25 s; the bucket's 64 KiB burst takes off at most 3 ms
    assert dt >= 0.2, f"5 MB through a 20 MB/s cap took only {dt:.3f} s"
    assert capped_proxy.requests == 1 and capped_proxy.bytes == len(BODY)


def test_bandwidth_cap_is_per_connection(capped_proxy):
    n = 4
    results: list = [None] * n

    def run(i):
        results[i] = _fetch(capped_proxy.port)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for dt, data in results:
        assert data == BODY
        assert dt >= 0.2, f"one of {n} parallel connections got 5 MB in {dt:.3f} s through a 20 MB/s cap"
    # one cap shared by all connections needs >= (4 x 5 MB - 64 KiB burst) / 20 MB/s = 0.997 s however idle the
    # machine; per-connection caps took 0.27 s idle, 0.37 s with 2 busy loops on 2 cores
    assert wall < 0.9, f"{n} connections x 5 MB at 20 MB/s each took {wall:.2f} s: the cap looks shared"
    assert capped_proxy.requests == n


def _missing() -> str | None:
    bench = _load_bench()
    if bench.find_nginx() is None:
        return "nginx is not installed (apt-get install nginx)"
    if importlib.util.find_spec("remfile") is None:
        return "remfile is not installed (pip install remfile)"
    for mod in ("fsspec", "aiohttp"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (fsspec's http filesystem needs fsspec and aiohttp)"
    return None


class _CountingProxy:
    """What run_case needs of the proxy: counters the fake clients below advance, and reset()."""

    def __init__(self):
        self.requests = self.bytes = 0

    def reset(self):
        self.requests = self.bytes = 0


def _client(opens: int, reads: int, result):
    def fn(url, arg, mark, proxy):
        proxy.requests += opens
        mark()
        proxy.requests += reads
        proxy.bytes += 1000 * (opens + reads)
        return result
    return fn


def test_run_case_counts_open_and_total_requests_and_runs_the_warmup_uncounted():
    bench = _load_bench()
    proxy, ref, warmed = _CountingProxy(), np.arange(6, dtype="i2"), []

    def warmup(label, url, arg):  # the hook a warm-open case uses: runs before each timed call, not counted
        warmed.append(label)
        proxy.requests += 50

    clients = tuple((label, lambda url, arg, mark, f=_client(o, r, ref): f(url, arg, mark, proxy))
                    for label, o, r in (("nwb_dask", 1, 2), ("remfile", 5, 4), ("fsspec", 3, 1)))
    case = bench.Case("c", "c.nwb", clients, None, ref, "desc", lambda rows, others: "", warmup=warmup)
    rows = bench.run_case(proxy, "http://x/c.nwb", case, repeat=2, label_case="c 0 ms")
    assert [(label, nreq, nopen, nbytes) for label, _, nreq, nopen, nbytes in rows] == [
        ("nwb_dask", 3, 1, 3000), ("remfile", 9, 5, 9000), ("fsspec", 4, 3, 4000)]
    assert sorted(warmed) == sorted(["nwb_dask", "remfile", "fsspec"] * 2)
    wrong = case._replace(ref=ref + 1, warmup=None)
    with pytest.raises(SystemExit, match="c 0 ms: nwb_dask read of http://x/c.nwb differs from the local read"):
        bench.run_case(proxy, "http://x/c.nwb", wrong, repeat=1, label_case="c 0 ms")


def test_cases_are_checked_before_anything_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "objects,warm", "--no-install"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert ("--cases 'objects,warm': expected a comma-separated subset of "
            "objects,slice,objects-cloud,slice-cloud,objects-warm") in proc.stderr


def test_quick_benchmark_runs_and_results_match():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-install"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    lines = out.splitlines()
    assert "case           latency  method      seconds  requests  open  MB sent" in out
    for case in ("objects", "slice", "objects-cloud", "slice-cloud", "objects-warm"):  # every default case
        for method in ("nwb_dask", "remfile", "fsspec"):
            row = [line.split() for line in lines if line.split()[:3] == [case, "10ms", method]
                   and "the faster other" not in line]  # the table's row, not the verdict below it
            assert len(row) == 1, (case, method, out)
            seconds, requests, opened, mb = float(row[0][3]), int(row[0][4]), int(row[0][5]), float(row[0][6])
            assert seconds > 0 and 1 <= opened <= requests and mb > 0, row
        assert any(line.startswith(case + " ") and "the faster other" in line and "target" in line
                   for line in lines), out
    for case, original in (("objects-cloud", "objects"), ("slice-cloud", "slice")):
        verdict = next(line for line in lines if line.startswith(case + " ") and "the faster other" in line)
        assert "open in <= 3 requests" in verdict and f"speed-up over {original}" in verdict, verdict
    warm = next(line for line in lines if line.startswith("objects-warm ") and "the faster other" in line)
    assert "a warm open in <= 1 request (1): met" in warm, warm  # the metadata cache of the untimed first open
    # the local cost of the cloud layout, measured in the same run
    for stem in ("objects", "ephys"):
        cost = [line for line in lines if line.strip().startswith(f"{stem}-cloud.nwb: repack --cloud")]
        assert cost and f"x {stem}.nwb (" in cost[-1] and "the plain repack" in cost[-1], out
    assert "(all results equal the local read, bytes identical)" in out

"""The loopback HTTP server of the remote-read tests: request counting, fault injection, validators.

Moved here from tests/test_remote.py so that tests/test_index.py (and others)
serve files the same way; the fixture ``server`` is in tests/conftest.py.
``server.requests`` lists ``(method, Range)`` of every request and
``server.paths`` their paths (``server.count(name)``: requests for one file);
``set_faults`` injects 5xx replies, connection resets, truncated bodies and
wrong ``Content-Range`` headers; ``validators`` adds ``ETag`` and/or
``Last-Modified`` headers; ``multirange`` picks how multi-range requests are
answered.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULT_KINDS = ("error", "reset", "truncate", "badrange")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end by themselves

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _send(self, status: int, headers: dict, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        srv: Server = self.server  # type: ignore[assignment]
        fault = srv.record(self.command, self.headers.get("Range"), urllib.parse.urlsplit(self.path).path)
        if fault == "error":
            self._send(srv.pick_error(), {"Content-Length": 5}, b"" if head else b"fault")
            return
        if fault == "reset":  # no response: RST the connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        path = srv.root / urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if not path.is_file():
            self._send(404, {"Content-Length": 0})
            return
        data = srv.file_bytes(path)
        size = len(data)
        rng_header = self.headers.get("Range") or ""
        many = re.fullmatch(r"bytes=\d+-\d+(,\d+-\d+)+", rng_header)
        if many and not srv.ignore_range and srv.multirange != "ignore":
            pairs = [tuple(int(v) for v in p.split("-")) for p in rng_header[6:].split(",")]
            if srv.multirange == "first":
                rng_header = f"bytes={pairs[0][0]}-{pairs[0][1]}"
            else:
                self._multipart(srv, data, pairs, fault, head)
                return
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng_header)
        if m is None or srv.ignore_range:
            status, start, body, headers = 200, 0, data, {}
        else:
            start = int(m.group(1))
            stop = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": 0})
                return
            body = data[start : stop + 1]
            shown = start + 1 if fault == "badrange" else start
            status, headers = 206, {"Content-Range": f"bytes {shown}-{shown + len(body) - 1}/{size}"}
        headers["Content-Length"] = len(body)
        headers["Accept-Ranges"] = "bytes"
        headers.update(srv.validator_headers(path, data))
        if head:
            self._send(status, headers)
        elif fault == "truncate" and len(body) > 0:
            self._send(status, headers, body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(status, headers, body)


    def _multipart(self, srv, data: bytes, pairs: list, fault: str | None, head: bool) -> None:
        """A ``multipart/byteranges`` reply, as nginx sends for a multi-range request."""
        size = len(data)
        if any(a >= size for a, _ in pairs):
            self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": 0})
            return
        srv.multipart_replies += 1
        boundary = "00000000001"
        chunks = []
        for k, (a, b) in enumerate(pairs):
            b = min(b, size - 1)
            shown = a + 1 if fault == "badrange" and k == 0 else a
            chunks.append(f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Range: bytes {shown}-{shown + b - a}/{size}\r\n\r\n".encode() + data[a : b + 1])
        chunks.append(f"\r\n--{boundary}--\r\n".encode())
        body = b"".join(chunks)
        headers = {"Content-Type": f"multipart/byteranges; boundary={boundary}", "Content-Length": len(body)}
        if head:
            self._send(206, headers)
        elif fault == "truncate":
            self._send(206, headers, body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(206, headers, body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.lock = threading.Lock()
        self.rng = random.Random(1234)
        self.faults: dict[str, float] = {}
        self.ignore_range = False
        self.multirange = "multipart"  # or "ignore" (200, whole body: S3) or "first" (206, first range only)
        self.multipart_replies = 0
        self.requests: list[tuple[str, str | None]] = []
        self.paths: list[str] = []
        self.faulted: dict[str, int] = {}
        self._cache: dict[Path, tuple[tuple, bytes]] = {}
        #: Validators sent with every reply: "etag" and/or "last-modified" (none by default).
        self.validators: tuple[str, ...] = ()

    @contextlib.contextmanager
    def running(self):
        """Serve in a daemon thread; shut down, close and join on exit."""
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            self.server_close()
            thread.join(5)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def set_faults(self, p: float = 0.0, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 1234) -> None:
        with self.lock:
            self.faults = {k: p for k in kinds}
            self.rng = random.Random(seed)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.paths.clear()

    def count(self, name: str) -> int:
        """Requests made so far for the file ``name``."""
        with self.lock:
            return sum(1 for p in self.paths if p.lstrip("/") == name)

    def record(self, method: str, rng: str | None, path: str = "") -> str | None:
        """Count the request and draw its fault (independent draws per kind)."""
        with self.lock:
            self.requests.append((method, rng))
            self.paths.append(path)
            for kind, p in self.faults.items():
                if self.rng.random() < p:
                    self.faulted[kind] = self.faulted.get(kind, 0) + 1
                    return kind
        return None

    def pick_error(self) -> int:
        with self.lock:
            return self.rng.choice((500, 503))

    def file_bytes(self, path: Path) -> bytes:
        """The file's bytes, read again when the file was rewritten (new mtime or size)."""
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            if path not in self._cache or self._cache[path][0] != stamp:
                self._cache[path] = (stamp, path.read_bytes())
            return self._cache[path][1]

    def validator_headers(self, path: Path, data: bytes) -> dict:
        """``ETag`` (a hash of the bytes) and ``Last-Modified`` (the file's mtime), as ``validators`` asks."""
        import email.utils
        import hashlib

        out = {}
        if "etag" in self.validators:
            out["ETag"] = '"' + hashlib.sha1(data).hexdigest()[:20] + '"'
        if "last-modified" in self.validators:
            out["Last-Modified"] = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        return out

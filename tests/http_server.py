"""The loopback HTTP server of the remote-read tests: request counting, fault injection, validators.

Moved here from tests/test_remote.py so that tests/test_index.py (and others)
serve files the same way.  ``server.requests`` lists ``(method, Range)`` of
every request, ``server.paths`` their paths; ``set_faults`` injects 5xx
replies, connection resets, truncated bodies and wrong ``Content-Range``
headers; ``validators = True`` adds ``ETag`` and ``Last-Modified`` headers
(from the served file's size and modification time).
"""

from __future__ import annotations

import email.utils
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
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
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
        headers.update(srv.validator_headers(path))
        if head:
            self._send(status, headers)
        elif fault == "truncate" and len(body) > 0:
            self._send(status, headers, body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(status, headers, body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.lock = threading.Lock()
        self.rng = random.Random(1234)
        self.faults: dict[str, float] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.paths: list[str] = []
        self.validators = False
        self.faulted: dict[str, int] = {}
        self._cache: dict[tuple, bytes] = {}

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
        """The file's bytes (cached until it changes)."""
        st = path.stat()
        key = (path, st.st_mtime_ns, st.st_size)
        with self.lock:
            if key not in self._cache:
                self._cache[key] = path.read_bytes()
            return self._cache[key]

    def validator_headers(self, path: Path) -> dict:
        """``ETag`` and ``Last-Modified`` of a served file, when ``validators`` is on."""
        if not self.validators:
            return {}
        st = path.stat()
        return {"ETag": f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}

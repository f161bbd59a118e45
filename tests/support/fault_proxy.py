"""A flaky bucket: an HTTP proxy between storage clients and the GCS emulator that fails on purpose.

Clients are pointed at the proxy (``STORAGE_EMULATOR_HOST=http://127.0.0.1:PROXY``); it forwards each
request to the emulator and, for a seeded random share of them, instead answers 503 or 429, sends the
headers and then only half the body before closing, or waits before answering. The emulator's JSON
bodies name its own host:port (``mediaLink``, ``selfLink``): those are rewritten to the proxy's, or
downloads would go around it. Runs in a thread of the test process; counts what it injected.
"""

from __future__ import annotations

import collections
import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("503", "429", "cut_body", "slow")


class FaultProxy:
    def __init__(self, upstream: str, fault_rate: float, seed: int = 0, slow_s: float = 0.5,
                 only: str | None = None, kinds: tuple[str, ...] = FAULTS):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.fault_rate = fault_rate
        self.slow_s = slow_s
        self.only = only  # fault only requests whose path holds this (one object's name)
        self.kinds = kinds
        self.injected: collections.Counter = collections.Counter()
        self.requests = 0
        self.paths: list[str] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client hanging up is expected here
                pass

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _pick_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            self.paths.append(f"{method} {path}")
            if (self.only is not None and self.only not in path) or self._random.random() >= self.fault_rate:
                return None
            # A body can only be cut on a download; an upload fails before it reaches the emulator.
            choices = [k for k in self.kinds if method == "GET" or k != "cut_body"] or ["503"]
            fault = self._random.choice(choices)
            self.injected[fault] += 1
            return fault

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(handler)
        fault = self._pick_fault(handler.command, handler.path)
        if fault in ("503", "429"):
            payload = b'{"error": {"code": %s, "message": "injected"}}' % fault.encode()
            handler.send_response(int(fault))
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if fault == "slow":
            time.sleep(self.slow_s)
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")}
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            status, reason, upstream_headers = response.status, response.reason, response.getheaders()
        finally:
            connection.close()
        emulator = f"{self.upstream[0]}:{self.upstream[1]}".encode()
        data = data.replace(emulator, self.endpoint.removeprefix("http://").encode())
        handler.send_response(status, reason)
        for key, value in upstream_headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        if fault == "cut_body":
            handler.send_header("Connection", "close")
        handler.end_headers()
        if fault == "cut_body" and len(data) > 1:
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(data)


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    body = b""
    while True:
        size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            handler.rfile.readline()
            return body
        body += handler.rfile.read(size)
        handler.rfile.readline()

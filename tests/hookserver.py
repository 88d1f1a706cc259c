"""A webhook receiver for tests: ``http.server`` on 127.0.0.1 in a thread, recording
every request and answering with statuses queued per path (then 200)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HookServer:
    """Records requests; ``fail(path, 500, 500)`` makes the next two to ``path`` fail."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._statuses: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = server._record(Request(self.command, self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the test reads self.requests

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, path: str, *statuses: int) -> None:
        with self._lock:
            self._statuses.setdefault(path, []).extend(statuses)

    def received(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def _record(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
            queued = self._statuses.get(request.path.split("?")[0])
            return queued.pop(0) if queued else 200


@contextmanager
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(5)

"""``/healthz`` and ``/metrics`` over HTTP, on a thread beside the reconcile loop.

``/healthz`` fails when the loop has not finished an iteration for a while (a hung NVML call or a
dead loop), so a liveness probe restarts the agent; a loop that keeps failing but keeps going
is healthy here and Degraded on the MigNode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from jupyter_mig.api.httpserver import MAX_CONNECTIONS, TIMEOUT, BoundedHTTPServer


class Heartbeat:
    """When the reconcile loop last finished an iteration."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def alive(self) -> bool:
        with self._lock:
            return time.monotonic() - self._last < self.stale_after


def serve_health(
    host: str,
    port: int,
    heartbeat: Heartbeat,
    metrics: Callable[[], bytes],
    max_connections: int = MAX_CONNECTIONS,
    timeout: float = TIMEOUT,
) -> BoundedHTTPServer:
    """Start serving; ``shutdown()`` stops it.  ``port`` 0 picks a free port (``server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = heartbeat.alive()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"reconcile loop stalled\n")
            elif self.path == "/metrics":
                self._reply(200, metrics(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would drown the agent's log."""

    server = BoundedHTTPServer((host, port), Handler, max_connections, timeout)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server

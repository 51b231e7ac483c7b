"""The HTTP endpoints every replica serves: probes, Prometheus metrics, the capacity API."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from jupyter_mig.api.httpserver import MAX_CONNECTIONS, TIMEOUT, BoundedHTTPServer

log = logging.getLogger("jupyter_mig.controller")

Probe = Callable[[], tuple[bool, str]]


class Endpoints:
    """What the handler serves; each callable is cheap and thread-safe."""

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Probe,
        ready: Probe,
        capacity: Callable[[], dict[str, Any]],
    ) -> None:
        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        self.capacity = capacity


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        endpoints = self.server.endpoints
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                self._probe(endpoints.healthy)
            elif path == "/readyz":
                self._probe(endpoints.ready)
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(endpoints.registry))
            elif path == "/api/v1/capacity":
                ok, why = endpoints.ready()
                if not ok:
                    self._json(503, {"error": f"not ready: {why}"})
                else:
                    self._json(200, endpoints.capacity())
            else:
                self._json(404, {"error": f"no such endpoint: {path}"})
        except Exception:  # a broken request must not take the server down
            log.exception("HTTP %s failed", path)
            self._json(500, {"error": "internal error; see the controller log"})

    def _probe(self, probe: Probe) -> None:
        ok, why = probe()
        self._send(200 if ok else 503, "text/plain; charset=utf-8", (why or "ok").encode() + b"\n")

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _Server(BoundedHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        endpoints: Endpoints,
        max_connections: int,
        timeout: float,
    ) -> None:
        self.endpoints = endpoints
        super().__init__(address, _Handler, max_connections, timeout)


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        endpoints: Endpoints,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = TIMEOUT,
    ) -> None:
        self._server = _Server((host, port), endpoints, max_connections, timeout)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

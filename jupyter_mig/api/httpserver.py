"""The one HTTP server the controller and the agent run (probes, metrics, the capacity API).

``http.server``'s ``ThreadingHTTPServer`` starts a thread for every connection and waits on it
forever: a thousand half-sent requests hold a thousand threads.  This one closes a connection
at once when ``max_connections`` are already being served, and each socket times out after
``timeout`` seconds without data, so a silent or half-sent request is dropped.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Defaults (docs/security.md): probes and scrapes need a handful of connections at a time.
MAX_CONNECTIONS = 32
TIMEOUT = 10.0


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = TIMEOUT,
    ) -> None:
        self.connection_timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed, no thread
            return
        if isinstance(request, socket.socket):
            request.settimeout(self.connection_timeout)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

"""The controller's and the agent's HTTP servers: bounded connections, dropped silent requests.

Many clients open connections and send half a request.  Beyond the cap a connection is closed
at once; the ones being served are closed once they stay silent past the timeout; afterwards
the server answers a whole request as usual.
"""

from __future__ import annotations

import select
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from jupyter_mig.agent.health import Heartbeat, serve_health
from jupyter_mig.controller.http import Endpoints, HttpServer

CAP = 4
TIMEOUT = 0.5
CLIENTS = 24
WAIT_S = 10.0  # how long a client waits to see its connection closed


Serve = Callable[[float], Iterator[int]]


def controller_server(timeout: float) -> Iterator[int]:
    ok = lambda: (True, "ok")  # noqa: E731
    server = HttpServer("127.0.0.1", 0, Endpoints(CollectorRegistry(), ok, ok, dict), CAP, timeout)
    server.start()
    yield server.port
    server.stop()


def agent_server(timeout: float) -> Iterator[int]:
    server = serve_health("127.0.0.1", 0, Heartbeat(60.0), lambda: b"m 1\n", CAP, timeout)
    yield server.server_port
    server.shutdown()
    server.server_close()


def half_sent_requests(port: int) -> list[socket.socket]:
    clients = []
    for _ in range(CLIENTS):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        clients.append(conn)
    return clients


def closed_by_server(conn: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset) within WAIT_S."""
    conn.settimeout(WAIT_S)
    try:
        return conn.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


SERVERS = pytest.mark.parametrize(
    "serve", [controller_server, agent_server], ids=["controller", "agent"]
)


@SERVERS
def test_connections_beyond_the_cap_are_closed_at_once(serve: Serve) -> None:
    servers = serve(300.0)
    clients = half_sent_requests(next(servers))
    try:
        closed = 0
        deadline = time.monotonic() + WAIT_S
        while closed < CLIENTS - CAP and time.monotonic() < deadline:
            readable, _, _ = select.select(clients, [], [], 0.2)
            for conn in readable:
                clients.remove(conn)
                conn.close()
                closed += 1
        assert closed == CLIENTS - CAP
        assert select.select(clients, [], [], 0.5)[0] == [], "the ones being served stay open"
    finally:
        for conn in clients:
            conn.close()
        next(servers, None)


@SERVERS
def test_half_sent_requests_are_dropped_after_the_timeout(serve: Serve) -> None:
    servers = serve(TIMEOUT)
    port = next(servers)
    clients = half_sent_requests(port)
    try:
        closed = [closed_by_server(conn) for conn in clients]
        assert all(closed), f"{closed.count(False)} of {CLIENTS} half-sent requests still held"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        for conn in clients:
            conn.close()
        next(servers, None)

"""The restart service under abuse by callers who are allowed in.

The HTTP tests run the service's tornado application on a real socket; the hub's token check is
a stand-in (the real hub is in tests/integration/test_hub_restart.py).  The Restarter tests use a
stand-in for the hub's REST API whose every call yields to the event loop, as a real request
does, which is what let concurrent requests all pass the "already under way" check before.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slice_support import Controller
from tornado.httpserver import HTTPServer

from jupyter_mig.hub.limits import RateLimiter
from jupyter_mig.hub.service import (
    MAX_BODY,
    SERVER_LIMITS,
    HubApi,
    Restarter,
    RestartRefused,
    make_app,
)
from jupyter_mig.hub.settings import SliceSettings

WAIT_S = 10.0


ACCESS = "access:services!service=jupyter-mig"
#: Tokens the stand-in hub knows: what a server token has, and one without servers!server.
SCOPES = {
    "server-token": [ACCESS, "access:servers!server=alice/", "servers!server=alice/"],
    "access-only": [ACCESS, "access:servers!server=alice/"],
}


class TokenCheck:
    """Stands in for HubAuth: counts how often a token is looked up."""

    def __init__(self) -> None:
        self.access_scopes = {ACCESS}
        self.lookups = 0

    async def user_for_token(self, token: str, use_cache: bool, sync: bool) -> Any:
        self.lookups += 1
        if token not in SCOPES:
            return None
        return {"kind": "user", "name": "alice", "scopes": SCOPES[token]}

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> set[str]:
        return required & set(model["scopes"])


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[tuple[int, TokenCheck]]:
    """The service's app on a socket in its own thread; ``request.param`` overrides limits."""
    limits = {**SERVER_LIMITS, **getattr(request, "param", {})}
    auth = TokenCheck()
    settings = SliceSettings(controller_url="http://127.0.0.1:9", slice_changes_per_period=1)
    restarts = Restarter(HubApi("http://127.0.0.1:9", "t"), settings)
    restarts.changes.take("alice")  # alice has used her one change of the hour
    app = make_app("/services/jupyter-mig/", restarts, auth)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def listen() -> None:
            server = HTTPServer(app, **limits)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            sock.setblocking(False)
            server.add_sockets([sock])
            holder["server"], holder["port"] = server, sock.getsockname()[1]
            started.set()

        loop.run_until_complete(listen())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(WAIT_S)
    yield holder["port"], auth
    loop.call_soon_threadsafe(holder["server"].stop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)


def post(port: int, token: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/services/jupyter-mig/api/restart",
        data=json.dumps({"server_name": "", "gpu_slice": "10gb"}).encode(),
        headers={"Authorization": f"token {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def read_until_closed(conn: socket.socket) -> bytes:
    conn.settimeout(WAIT_S)
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def post_headers(length: int, token: str | None = None) -> bytes:
    lines = [
        "POST /services/jupyter-mig/api/restart HTTP/1.1",
        "Host: hub",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token:
        lines.append(f"Authorization: token {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("length", [MAX_BODY // 2, 90 * 1024 * 1024])
def test_a_body_without_a_valid_token_is_refused_before_it_is_sent(
    service: tuple[int, TokenCheck], length: int
) -> None:
    port, _ = service
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        conn.sendall(post_headers(length))  # the body never comes
        answer = read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"Authorization header" in answer


def test_an_unknown_token_is_refused_before_the_body_too(service: tuple[int, TokenCheck]) -> None:
    port, auth = service
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        conn.sendall(post_headers(MAX_BODY // 2, token="stolen"))
        answer = read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert auth.lookups == 1


@pytest.mark.parametrize("service", [{"max_body_size": 100 * 1024 * 1024}], indirect=True)
def test_a_body_over_the_limit_is_refused_even_with_a_valid_token(
    service: tuple[int, TokenCheck],
) -> None:
    port, _ = service
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        body = json.dumps({"server_name": "", "gpu_slice": "10gb", "pad": "x" * MAX_BODY})
        conn.sendall(post_headers(len(body), token="server-token"))
        conn.sendall(body.encode())
        answer = read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_restarting_takes_servers_not_only_access(service: tuple[int, TokenCheck]) -> None:
    port, _ = service
    status, _, body = post(port, "access-only")
    assert status == 403 and "servers!server=alice/" in body


def test_a_rate_limited_caller_is_told_when_to_come_back(service: tuple[int, TokenCheck]) -> None:
    port, _ = service
    status, headers, body = post(port, "server-token")
    assert status == 429, body
    assert 0 < int(headers["Retry-After"]) <= 3600
    assert "try again in" in body


@pytest.mark.parametrize(
    "service", [{"idle_connection_timeout": 0.5, "body_timeout": 0.5}], indirect=True
)
def test_half_sent_requests_are_dropped(service: tuple[int, TokenCheck]) -> None:
    port, _ = service
    conns = [socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) for _ in range(20)]
    try:
        for conn in conns:
            conn.sendall(b"POST /services/jupyter-mig/api/restart HTTP/1.1\r\nHost: hub\r\n")
        assert all(read_until_closed(conn) == b"" for conn in conns)
    finally:
        for conn in conns:
            conn.close()


# -- the Restarter: one restart per server, a global cap, a rate per user, a total per user ------


class Hub(HubApi):
    """The hub's answers about users; every call yields to the loop, as a real request does."""

    def __init__(self, servers: dict[str, dict[str, Any]]) -> None:
        super().__init__("http://127.0.0.1:9", "t")
        self.servers = servers

    async def user(self, name: str) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"name": name, "groups": [], "servers": self.servers}


def running(size: str = "none") -> dict[str, Any]:
    return {"ready": True, "user_options": {"gpu_slice": size}}


@pytest.fixture
def controller() -> Iterator[Controller]:
    with Controller() as ctl:
        yield ctl


def restarter(controller: Controller, hub: Hub, **limits: Any) -> Restarter:
    settings = SliceSettings(controller_url=controller.url, capacity_ttl=60, **limits)
    return Restarter(hub, settings, grace=3600)  # accepted restarts wait; nothing is stopped


async def outcomes(restarter: Restarter, requests: list[tuple[str, str]]) -> list[int]:
    async def one(user: str, server: str) -> int:
        try:
            await restarter.request(user, server, "10gb", 60)
        except RestartRefused as err:
            return err.status
        return 202

    try:
        return list(await asyncio.gather(*(one(u, s) for u, s in requests)))
    finally:
        for task in list(restarter._tasks):
            task.cancel()


def test_of_parallel_restarts_of_one_server_exactly_one_goes_ahead(
    controller: Controller,
) -> None:
    service = restarter(controller, Hub({"": running()}))
    statuses = asyncio.run(outcomes(service, [("alice", "")] * 40))
    assert statuses.count(202) == 1
    assert set(statuses) == {202, 409}


def test_the_hub_runs_at_most_so_many_restarts_at_once(controller: Controller) -> None:
    service = restarter(controller, Hub({"": running()}), max_concurrent_restarts=3)
    statuses = asyncio.run(outcomes(service, [(f"user{i}", "") for i in range(5)]))
    assert sorted(statuses) == [202, 202, 202, 503, 503]


def test_a_user_changes_slices_at_most_so_often(controller: Controller) -> None:
    servers = {name: running() for name in ("a", "b", "c")}
    service = restarter(controller, Hub(servers), slice_changes_per_period=2)
    statuses = asyncio.run(outcomes(service, [("alice", "a"), ("alice", "b"), ("alice", "c")]))
    assert sorted(statuses) == [202, 202, 429]
    assert asyncio.run(outcomes(service, [("bob", "a")])) == [202]  # per user


def test_refused_requests_do_not_use_up_the_rate(controller: Controller) -> None:
    service = restarter(controller, Hub({"": {"ready": False}}), slice_changes_per_period=1)
    assert asyncio.run(outcomes(service, [("alice", "")] * 3)) == [409, 409, 409]
    assert service.changes.take("alice") == 0.0


def test_a_users_servers_together_stay_under_the_total(controller: Controller) -> None:
    hub = Hub({"": running(), "big": running("40gb")})
    service = restarter(controller, hub, max_total_size="40gb")
    statuses = asyncio.run(outcomes(service, [("alice", "")]))
    assert statuses == [403]
    hub.servers["big"] = running("20gb")
    assert asyncio.run(outcomes(service, [("alice", "")])) == [202]


def test_the_rate_limiter_slides_and_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])
    assert limiter.take("alice") == limiter.take("alice") == 0.0
    now[0] = 10.0
    assert limiter.take("alice") == pytest.approx(50.0)
    assert limiter.take("bob") == 0.0
    now[0] = 60.0
    assert limiter.take("alice") == 0.0
    assert RateLimiter(0, 60.0).take("alice") == 0.0  # off

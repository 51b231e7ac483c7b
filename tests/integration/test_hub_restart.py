"""Restart with another slice through a real JupyterHub, its REST API and real single-user servers.

The hub (``python -m jupyterhub``) runs the jupyter-mig restart service as a managed service,
spawns ``jupyterhub.singleuser`` servers with the jupyter-mig server extension, and applies the
``apply_user_options`` hook; a LocalProcessSpawner subclass records every start's user_options.
Only two things stand in for Kubernetes: the spawner (local processes, no pods) and the proxy
(a route table: the test talks to servers at the addresses the hub registered).  The capacity
API is the controller's own HTTP server with a fixed capacity.  The jupyter-mig part of the hub's
configuration is the documented Zero to JupyterHub values (hub_values), and every test runs on
both JupyterHub lines: the one in this environment (6.x) and 5.4 (Zero to JupyterHub 4.x), from
``.venv-hub5`` (scripts/setup.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyterhub")
pytest.importorskip("jupyter_server")
from hub_values import hub_config, load_values
from prometheus_client import CollectorRegistry

from jupyter_mig.controller.capacity import capacity, render_capacity
from jupyter_mig.controller.http import Endpoints, HttpServer
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

WAIT_S = 120.0
ADMIN_TOKEN = "jupyter-mig-test-admin-token-0123456789"
A100 = MODELS.get("A100-80GB")

HUB_CONFIG = """
import json
import sys

from jupyterhub.proxy import Proxy
from jupyterhub.spawner import SimpleLocalProcessSpawner

RECORD = {record!r}


class RouteTableProxy(Proxy):
    '''Keeps the routes; the test reaches servers at the addresses registered here.'''

    should_start = False
    routes = {{}}

    async def add_route(self, routespec, target, data):
        self.routes[routespec] = {{"routespec": routespec, "target": target, "data": data}}

    async def delete_route(self, routespec):
        self.routes.pop(routespec, None)

    async def get_all_routes(self):
        return dict(self.routes)


class RecordingSpawner(SimpleLocalProcessSpawner):
    '''Records each start; "unstartable" in user_options plays a server that never comes up.'''

    async def start(self):
        entry = {{
            "server": self.name,
            "user_options": self.user_options,
            "slice": self.environment.get("JUPYTER_MIG_SLICE"),
        }}
        if self.user_options.get("gpu_slice") == {unstartable!r}:
            entry["failed"] = True
            with open(RECORD, "a") as record:
                record.write(json.dumps(entry) + "\\n")
            raise RuntimeError("this test's node never comes up")
        url = await super().start()
        entry["pid"] = self.pid
        with open(RECORD, "a") as record:
            record.write(json.dumps(entry) + "\\n")
        return url


c.JupyterHub.proxy_class = RouteTableProxy
c.JupyterHub.spawner_class = RecordingSpawner
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "proxy"],
        "services": ["test-admin"],
    }}
]
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]  # harmless as another user; needed where tests run as root
c.Spawner.environment = {{"JUPYTER_CONFIG_DIR": "{tmp}/jupyter-config"}}
c.Spawner.start_timeout = 60
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
"""

REPO = Path(__file__).resolve().parents[2]
#: The Python of each JupyterHub line the hub tests run on.
HUB_LINES = {"hub6": Path(sys.executable), "hub5": REPO / ".venv-hub5" / "bin" / "python"}
#: A size the documented values allow but this test's spawner never brings up.
UNSTARTABLE = "20gb"


def hub_python(line: str) -> Path:
    python = HUB_LINES[line]
    if not python.exists():
        pytest.skip(f"no {python}: scripts/setup.sh installs the JupyterHub 5.4 line there")
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            last = check()
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def call(url: str, token: str | None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, data = err.code, err.read()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data.decode("utf-8", "replace")


@dataclass
class Hub:
    api: str
    service: str
    tmp: Path
    process: subprocess.Popen[bytes]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call(f"{self.api}/{path}", ADMIN_TOKEN, method, body)

    def records(self) -> list[dict[str, Any]]:
        path = self.tmp / "starts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def server_url(self, user: str) -> str:
        status, routes = self.admin("GET", "proxy")
        assert status == 200, routes
        route = routes.get(f"/user/{user}/")
        assert route is not None, f"no route for {user}: {sorted(routes)}"
        return f"{route['target'].rstrip('/')}/user/{user}/"

    def ready(self, user: str) -> bool:
        status, model = self.admin("GET", f"users/{user}")
        server = (model or {}).get("servers", {}).get("") if status == 200 else None
        return bool(server and server.get("ready"))

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        status, data = self.admin("POST", f"users/{user}/tokens", body)
        assert status == 201, data
        return str(data["token"])


def snapshot_document() -> dict[str, Any]:
    small = A100.profile("1g.10gb").nvml_id
    gpu = GpuSnapshot(0, A100, (ObservedInstance(small, 0, True),))
    return render_capacity(capacity([NodeSnapshot("gpu-node-1", (gpu,))]), datetime.now(UTC))


@pytest.fixture(scope="module")
def controller_url() -> Iterator[str]:
    document = snapshot_document()
    server = HttpServer(
        "127.0.0.1",
        0,
        Endpoints(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""), lambda: document),
    )
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def stop_process(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module", params=sorted(HUB_LINES))
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, controller_url: str
) -> Iterator[Hub]:
    python = hub_python(request.param)
    tmp = tmp_path_factory.mktemp("hub")
    (tmp / "jupyter-config").mkdir()
    (tmp / "jupyter-config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_mig": True}}})
    )
    hub_port, service_port = free_port(), free_port()
    config = tmp / "jupyterhub_config.py"
    values = load_values(
        controllerUrl=controller_url,
        serviceUrl=f"http://127.0.0.1:{service_port}",
        serverServiceUrl="",
        listen=f"127.0.0.1:{service_port}",
        restartTimeout=60,
    )
    config.write_text(
        HUB_CONFIG.format(
            record=str(tmp / "starts.jsonl"),
            unstartable=UNSTARTABLE,
            public_port=free_port(),
            hub_port=hub_port,
            tmp=tmp,
            admin_token=ADMIN_TOKEN,
        )
        + hub_config(values, tmp)
    )
    log = (tmp / "hub.log").open("wb")
    process = subprocess.Popen(
        [str(python), "-m", "jupyterhub", "-f", str(config)],
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    hub = Hub(
        f"http://127.0.0.1:{hub_port}/hub/api",
        f"http://127.0.0.1:{service_port}/services/jupyter-mig/",
        tmp,
        process,
    )
    try:
        wait_for("the hub", lambda: process.poll() is None and call(hub.api + "/", None)[0] == 200)
        wait_for("the restart service", lambda: call(hub.service + "api/health", None)[0] == 200)
        yield hub
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the hub stops its servers and its service
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for entry in hub.records():
            if "pid" in entry:
                stop_process(int(entry["pid"]))
        log.close()
        print((tmp / "hub.log").read_text(errors="replace")[-4000:])


def start_server(hub: Hub, user: str) -> str:
    assert hub.admin("POST", f"users/{user}")[0] in (201, 409)
    status, data = hub.admin("POST", f"users/{user}/server")
    assert status in (201, 202), data
    wait_for(f"{user}'s server", lambda: hub.ready(user))
    return hub.server_url(user)


def started(hub: Hub) -> list[dict[str, Any]]:
    return [r for r in hub.records() if not r.get("failed")]


def restarted(hub: Hub, user: str, starts_before: int) -> dict[str, Any]:
    """Wait for the next start to be recorded and the server to be ready; the new start."""
    wait_for("the restarted server", lambda: len(started(hub)) > starts_before and hub.ready(user))
    return started(hub)[-1]


def test_a_server_restarts_itself_with_a_new_slice_through_the_hub(hub: Hub) -> None:
    server = start_server(hub, "alice")
    alice = hub.token("alice")
    status, doc = call(server + "jupyter-mig/api/slice", alice)
    assert status == 200, doc
    assert doc["slice"] is None and doc["restartable"] is True

    # Another user's credentials get nowhere near alice's server.
    start_server(hub, "bob")
    bob = hub.token("bob")
    assert call(server + "jupyter-mig/api/slice", bob)[0] == 403
    assert call(server + "jupyter-mig/api/slice", None)[0] in (302, 401, 403)

    # Refusals leave the server running.
    status, doc = call(
        server + "jupyter-mig/api/slice", alice, "POST", {"size": "500gb", "saved": True}
    )
    assert status == 400 and "sizes you can ask for" in doc["message"]
    # The documented cap (maxSize 20gb, for users outside the gpu-power group).
    status, doc = call(
        server + "jupyter-mig/api/slice", alice, "POST", {"size": "40gb", "saved": True}
    )
    assert status == 403 and "above your maximum of 20gb" in doc["message"], doc
    status, doc = call(server + "jupyter-mig/api/slice", alice, "POST", {"size": "10gb"})
    assert status == 409
    assert hub.ready("alice")

    starts = len(started(hub))
    status, doc = call(
        server + "jupyter-mig/api/slice",
        alice,
        "POST",
        {"size": "10gb", "saved": True, "timeout": 60},
    )
    assert status == 202, doc
    assert doc["stage"] == "queued" and doc["size"] == "10gb"
    assert doc["spawn_pending_url"] == "/hub/spawn-pending/alice"

    start = restarted(hub, "alice", starts)
    assert start["user_options"]["gpu_slice"] == "10gb"
    assert start["slice"] == "1g.10gb"

    server = hub.server_url("alice")
    alice = hub.token("alice")
    status, doc = call(server + "jupyter-mig/api/slice", alice)
    assert status == 200
    assert doc["slice"]["profile"] == "1g.10gb" and doc["slice"]["size"] == "10gb"
    status, progress = call(server + "jupyter-mig/api/slice/progress", alice)
    assert status == 200, progress
    assert progress["state"] == "ready" and progress["stage"] == "ready"
    stages = [s["stage"] for s in progress["stages"]]
    assert stages[0] == "queued" and stages[-1] == "ready"

    # Back to no GPU.
    starts = len(started(hub))
    status, doc = call(server + "jupyter-mig/api/slice?saved=true", alice, "DELETE")
    assert status == 202, doc
    start = restarted(hub, "alice", starts)
    assert start["user_options"]["gpu_slice"] == "none"
    assert start["slice"] is None


def test_a_server_that_never_comes_up_is_rolled_back_to_the_previous_slice(hub: Hub) -> None:
    server = start_server(hub, "carol")
    carol = hub.token("carol")
    starts = len(started(hub))
    status, doc = call(
        server + "jupyter-mig/api/slice",
        carol,
        "POST",
        {"size": UNSTARTABLE, "saved": True, "timeout": 60},
    )
    assert status == 202, doc
    start = restarted(hub, "carol", starts)
    assert start["user_options"]["gpu_slice"] == "none"  # the previous options, again
    assert any(
        r.get("failed") and r["user_options"]["gpu_slice"] == UNSTARTABLE for r in hub.records()
    )
    server = hub.server_url("carol")
    carol = hub.token("carol")
    status, progress = wait_for(
        "the rollback to be recorded",
        lambda: (
            (r := call(server + "jupyter-mig/api/slice/progress", carol))[1].get("state")
            == "rolled-back"
            and r
        ),
    )
    assert status == 200
    assert "going back to the previous slice (none)" in " ".join(progress["events"])


def test_the_service_refuses_tokens_without_its_access_scope(hub: Hub) -> None:
    start_server(hub, "dave")
    narrow = hub.token("dave", ["read:users:name!user=dave"])
    status, doc = call(hub.service + "api/restart", narrow, "POST", {"gpu_slice": "10gb"})
    assert status == 403 and "may not use the jupyter-mig service" in doc["message"]
    status, _ = call(hub.service + "api/restart", None, "POST", {"gpu_slice": "10gb"})
    assert status == 401
    # A user's full token only ever restarts that user's own servers (erin has none running).
    assert hub.admin("POST", "users/erin")[0] in (201, 409)
    erin = hub.token("erin")
    status, doc = call(hub.service + "api/restart", erin, "POST", {"gpu_slice": "10gb"})
    assert status == 409 and "not running" in doc["message"]
    assert hub.ready("dave")

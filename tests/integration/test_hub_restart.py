"""Restart with another slice through a real JupyterHub, its REST API and real single-user servers.

The hub (``python -m jupyterhub``) runs the jupyter-mig restart service as a managed service,
spawns ``jupyterhub.singleuser`` servers with the jupyter-mig server extension, and applies the
``apply_user_options`` hook; a LocalProcessSpawner subclass records every start's user_options.
Only two things stand in for Kubernetes: the spawner (local processes, no pods) and the proxy
(a route table: the test talks to servers at the addresses the hub registered).  The capacity
API is the controller's own HTTP server with a fixed capacity.  The jupyter-mig part of the
hub's configuration is the documented Zero to JupyterHub values (support.hub_values), and every
test runs on both JupyterHub lines: the one in this environment (6.x) and 5.4 (Zero to
JupyterHub 4.x), from ``.venv-hub5`` (scripts/setup.sh).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyterhub")
pytest.importorskip("jupyter_server")
from prometheus_client import CollectorRegistry
from support.hub import ADMIN_TOKEN, HUB_LINES, call, hub_files, hub_python, write_hub_config
from support.hub_values import load_values
from support.processes import stop_process, terminate_pid
from support.waiting import wait_for

from jupyter_mig.controller.capacity import capacity, render_capacity
from jupyter_mig.controller.http import Endpoints, HttpServer
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

WAIT_S = 120.0
A100 = MODELS.get("A100-80GB")

SPAWNER_CONFIG = """
from jupyterhub.spawner import SimpleLocalProcessSpawner

RECORD = {record!r}


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


c.JupyterHub.spawner_class = RecordingSpawner
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]  # harmless as another user; needed where tests run as root
c.Spawner.environment = {{"JUPYTER_CONFIG_DIR": "{tmp}/jupyter-config"}}
c.Spawner.start_timeout = 60
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
"""

#: A size the documented values allow but this test's spawner never brings up.
UNSTARTABLE = "20gb"


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


@pytest.fixture(scope="module", params=sorted(HUB_LINES))
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, controller_url: str
) -> Iterator[Hub]:
    python = hub_python(request.param)
    tmp = tmp_path_factory.mktemp("hub")
    files = hub_files(tmp)
    values = load_values(
        controllerUrl=controller_url,
        serviceUrl=f"http://127.0.0.1:{files.service_port}",
        serverServiceUrl="",
        listen=f"127.0.0.1:{files.service_port}",
        restartTimeout=60,
    )
    write_hub_config(
        files, SPAWNER_CONFIG, values, record=str(tmp / "starts.jsonl"), unstartable=UNSTARTABLE
    )
    log = (tmp / "hub.log").open("wb")
    process = subprocess.Popen(
        [str(python), "-m", "jupyterhub", "-f", str(files.config)],
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    hub = Hub(
        files.api,
        f"http://127.0.0.1:{files.service_port}/services/jupyter-mig/",
        tmp,
        process,
    )
    try:
        wait_for(
            "the hub",
            lambda: process.poll() is None and call(hub.api + "/", None)[0] == 200,
            WAIT_S,
        )
        wait_for(
            "the restart service", lambda: call(hub.service + "api/health", None)[0] == 200, WAIT_S
        )
        yield hub
    finally:
        stop_process(process, timeout=30)  # the hub stops its servers and its service
        for entry in hub.records():
            if "pid" in entry:
                terminate_pid(int(entry["pid"]))
        log.close()
        print((tmp / "hub.log").read_text(errors="replace")[-4000:])


def start_server(hub: Hub, user: str) -> str:
    assert hub.admin("POST", f"users/{user}")[0] in (201, 409)
    status, data = hub.admin("POST", f"users/{user}/server")
    assert status in (201, 202), data
    wait_for(f"{user}'s server", lambda: hub.ready(user), WAIT_S)
    return hub.server_url(user)


def started(hub: Hub) -> list[dict[str, Any]]:
    return [r for r in hub.records() if not r.get("failed")]


def restarted(hub: Hub, user: str, starts_before: int) -> dict[str, Any]:
    """Wait for the next start to be recorded and the server to be ready; the new start."""
    wait_for(
        "the restarted server",
        lambda: len(started(hub)) > starts_before and hub.ready(user),
        WAIT_S,
    )
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
        WAIT_S,
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


def test_of_forty_parallel_restarts_of_one_server_exactly_one_goes_ahead(hub: Hub) -> None:
    start_server(hub, "frank")
    frank = hub.token("frank")
    starts = len(started(hub))
    body = {"gpu_slice": "10gb", "timeout": 60}
    with ThreadPoolExecutor(40) as pool:
        results = list(
            pool.map(lambda _: call(hub.service + "api/restart", frank, "POST", body), range(40))
        )
    statuses = [status for status, _ in results]
    assert statuses.count(202) == 1, statuses
    refused = [doc["message"] for status, doc in results if status != 202]
    assert all("already under way" in message for message in refused), refused
    start = restarted(hub, "frank", starts)
    assert start["user_options"]["gpu_slice"] == "10gb"
    assert len(started(hub)) == starts + 1, "one start, no rollback"


def test_restarting_takes_the_servers_scope_not_only_access(hub: Hub) -> None:
    start_server(hub, "gina")
    narrow = hub.token("gina", ["access:servers!user=gina", "access:services!service=jupyter-mig"])
    status, doc = call(hub.service + "api/restart", narrow, "POST", {"gpu_slice": "10gb"})
    assert status == 403 and "servers!server=gina/" in doc["message"], doc
    assert hub.ready("gina")

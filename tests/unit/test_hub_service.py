"""The restart service's pieces that need no hub: stages from events, records, settings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_mig.hub.service import (
    STAGES,
    HubApi,
    Restart,
    RestartRefused,
    make_app,
    stage_for_event,
)
from jupyter_mig.hub.settings import SliceSettings


def kube_event(reason: str, message: str = "") -> dict[str, object]:
    """A progress event as KubeSpawner relays a pod Event."""
    return {"progress": 50, "message": message, "raw_event": {"reason": reason}}


@pytest.mark.parametrize(
    ("reason", "stage"),
    [
        ("WaitingForMigCapacity", "queued"),
        ("FailedScheduling", "queued"),
        ("MigRepartitioning", "repartitioning"),
        ("Scheduled", "scheduled"),
        ("Pulling", "starting"),
        ("Started", "starting"),
        ("SomethingElse", None),
    ],
)
def test_pod_events_map_to_stages(reason: str, stage: str | None) -> None:
    assert stage_for_event(kube_event(reason)) == stage


def test_ready_and_plain_messages() -> None:
    assert stage_for_event({"progress": 100, "ready": True, "url": "/user/a/"}) == "ready"
    assert stage_for_event({"progress": 0, "message": "Server requested"}) is None


def test_a_restart_only_moves_forward_through_the_stages() -> None:
    restart = Restart("alice", "", "10gb", {"gpu_slice": "none"}, 60.0)
    assert restart.stage == "queued"
    restart.advance("scheduled", "assigned to gpu-node-1")
    restart.advance("repartitioning", "a late event")  # never back
    restart.advance("starting", "Started container")
    restart.finish("ready", "the server is running with the new slice")
    record = restart.to_json()
    assert [s["stage"] for s in record["stages"]] == ["queued", "scheduled", "starting", "ready"]
    assert record["state"] == "ready" and record["finished"]
    assert record["previous"] == "none" and record["size"] == "10gb"
    assert set(s["stage"] for s in record["stages"]) <= set(STAGES)


def test_a_rolled_back_restart_stays_at_the_stage_it_reached() -> None:
    restart = Restart("alice", "gpu", "80gb", {}, 60.0)
    restart.note("no server after 60 s; going back to the previous slice (none)")
    restart.finish("rolled-back", "no server after 60 s; the server runs again with none")
    record = restart.to_json()
    assert record["stage"] == "queued" and record["state"] == "rolled-back"
    assert record["events"] == ["no server after 60 s; going back to the previous slice (none)"]


@pytest.mark.parametrize(
    ("user", "server", "path"),
    [
        ("alice", "", "users/alice/server"),
        ("alice", "gpu 2", "users/alice/servers/gpu%202"),
        ("a/b@c", "", "users/a%2Fb%40c/server"),
    ],
)
def test_server_paths_are_escaped(user: str, server: str, path: str) -> None:
    assert HubApi.server_path(user, server) == path


def test_settings_travel_to_the_service_as_json() -> None:
    settings = SliceSettings(
        controller_url="http://controller:8080",
        sizes=("10gb", "40gb"),
        max_size="10gb",
        max_size_by_group={"staff": "40gb", "power": "80gb"},
        service_url="http://hub:10101",
    )
    assert SliceSettings.from_json(settings.to_json()) == settings
    assert settings.url_for_servers == "http://hub:10101/services/jupyter-mig/"


def test_group_caps_replace_the_default_cap() -> None:
    settings = SliceSettings(
        controller_url="x", max_size="10gb", max_size_by_group={"staff": "40gb", "power": "80gb"}
    )
    assert settings.policy_for([]).maximum == ("10gb",)
    assert settings.policy_for(["staff", "other"]).maximum == ("40gb",)
    assert set(settings.policy_for(["staff", "power"]).maximum) == {"40gb", "80gb"}
    assert SliceSettings(controller_url="x").policy_for(["staff"]).maximum == ()


@pytest.mark.parametrize("bad", [{"restart_timeout": 0}, {"max_size": "lots"}])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SliceSettings(controller_url="x", **bad)  # type: ignore[arg-type]


class TokenAuth:
    """Stands in for HubAuth: every token belongs to alice, with access to her server."""

    access_scopes: frozenset[str] = frozenset()

    async def user_for_token(self, token: str, use_cache: bool, sync: bool) -> dict[str, Any]:
        return {
            "name": "alice",
            "kind": "user",
            "scopes": ["access:servers!server=alice/", "servers!server=alice/"],
        }

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> bool:
        return True


class RecordingRestarter:
    """Records what got through the request checks, and refuses it (so nothing restarts)."""

    def __init__(self) -> None:
        self.settings = SliceSettings(controller_url="http://controller:8080")
        self.requests: list[tuple[str, str, str | None, float]] = []
        self.restarts: dict[tuple[str, str], Restart] = {}

    async def request(self, user: str, server: str, size: str | None, timeout: float) -> Restart:
        self.requests.append((user, server, size, timeout))
        raise RestartRefused(409, "recorded")


def post_to_service(body: bytes, path: str = "api/restart") -> tuple[int, Any, RecordingRestarter]:
    restarter = RecordingRestarter()

    async def main() -> tuple[int, bytes]:
        app = make_app("/services/jupyter-mig/", restarter, TokenAuth())  # type: ignore[arg-type]
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            response = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/services/jupyter-mig/{path}",
                method="POST",
                body=body,
                headers={"Authorization": "token t"},
                raise_error=False,
            )
        finally:
            server.stop()
        return response.code, response.body

    status, raw = asyncio.run(main())
    return status, json.loads(raw), restarter


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"gpu_slice": 10}, 400, "gpu_slice must be a string such as 10gb or null, not a number"),
        ({"gpu_slice": "10gb", "timeout": "60"}, 400, "timeout must be a number, not the string"),
        ({"gpu_slice": "10gb", "timeout": True}, 400, "timeout must be a number, not a boolean"),
        ({"gpu_slice": "10gb", "server_name": None}, 400, "server_name must be a string"),
        ({"gpu_slice": "10gb", "user": "bob"}, 400, 'unknown field "user"'),
        ([], 400, "the body must be a JSON object, not an array"),
        ({"gpu_slice": "x" * 70_000}, 413, "larger than 16 KiB"),
    ],
)
def test_restart_requests_are_checked_field_by_field(body: Any, status: int, words: str) -> None:
    code, doc, restarter = post_to_service(json.dumps(body).encode())
    assert code == status and words in doc["message"], doc
    assert restarter.requests == []


def test_a_well_formed_restart_request_gets_through_the_checks() -> None:
    body = {"server_name": "", "gpu_slice": None, "timeout": 60}
    code, doc, restarter = post_to_service(json.dumps(body).encode())
    assert (code, doc) == (409, {"message": "recorded"})
    assert restarter.requests == [("alice", "", None, 60.0)]


def test_unknown_service_paths_are_json_404s() -> None:
    code, doc, _ = post_to_service(b"{}", path="api/nope")
    assert code == 404 and "no such endpoint" in doc["message"]

"""The restart service's pieces that need no hub: stages from events, records, settings."""

from __future__ import annotations

import pytest

from jupyter_mig.hub.service import STAGES, HubApi, Restart, stage_for_event
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

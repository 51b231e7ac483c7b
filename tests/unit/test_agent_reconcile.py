"""One reconcile pass of the agent on a simulated GPU, with the kubelet's pod-resources API served
over a real unix-socket gRPC server.  The Kubernetes side is the caller's; here the pass's
returned status and Events are checked directly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jupyter_mig.agent.devices import PodResourcesView
from jupyter_mig.agent.metrics import AgentMetrics
from jupyter_mig.agent.reconcile import (
    EVENT_APPLIED,
    EVENT_REFRESHED,
    REASON_POD_RESOURCES,
    Outcome,
    Reconciler,
)
from jupyter_mig.agent.runner import LazyNvml
from jupyter_mig.api import constants as c
from jupyter_mig.api.conditions import get_condition
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import NvmlBackend, open_simulated
from jupyter_mig.nvml.simgpu import (
    STATE_FILE,
    init_state,
    inject_fault,
    read_devices,
    reboot,
    reload_driver,
    set_busy,
    set_mig_mode,
)
from jupyter_mig.podresources import server as podresources_server
from jupyter_mig.podresources.client import DeviceAssignment

A100 = MODELS.get("A100-80GB")
ONE_G = A100.profile("1g.10gb").nvml_id
THREE_G = A100.profile("3g.40gb").nvml_id
SEVEN_G = A100.profile("7g.80gb").nvml_id


@dataclass
class Kubelet:
    """What the sim kubelet would serve: pods' device assignments and the plugin's devices."""

    state_dir: Path
    assignments: list[DeviceAssignment] = field(default_factory=list)
    allocatable: dict[str, list[str]] = field(default_factory=dict)
    refreshes: int = 0
    plugin_stuck: bool = False

    def refresh(self, timeout: float) -> None:
        """The device plugin re-reads NVML (unless a test makes it stuck)."""
        self.refreshes += 1
        if self.plugin_stuck:
            return
        table: dict[str, list[str]] = {}
        gpus, _ = read_devices(self.state_dir)
        for gpu in gpus:
            model = MODELS.get(gpu["model"])
            for raw in gpu["instances"]:
                if raw["mig_uuid"]:
                    name = model.by_id[raw["profile_id"]].resource_name
                    table.setdefault(f"{c.MIG_RESOURCE_PREFIX}{name}", []).append(raw["mig_uuid"])
        self.allocatable = table

    def hold(self, pod: str, mig_uuid: str) -> None:
        namespace, name = pod.split("/")
        self.assignments.append(
            DeviceAssignment(namespace, name, "main", "nvidia.com/mig-1g.10gb", mig_uuid)
        )


@dataclass
class Node:
    state_dir: Path
    kubelet: Kubelet
    reconciler: Reconciler
    nvml: NvmlBackend
    announced: list[dict[str, Any]] = field(default_factory=list)
    obj: dict[str, Any] = field(default_factory=dict)

    def set_spec(self, gpus: dict[int, list[Instance]]) -> None:
        """A new spec generation, as the API server would number it."""
        generation = self.obj.get("metadata", {}).get("generation", 0) + 1
        self.obj = {
            "metadata": {"name": "node-a", "generation": generation},
            "spec": {
                "gpus": [
                    {
                        "index": index,
                        "instances": [
                            {"profileId": i.profile_id, "start": i.start} for i in instances
                        ],
                    }
                    for index, instances in gpus.items()
                ]
            },
            "status": self.obj.get("status", {}),
        }

    def reconcile(self) -> Outcome:
        """One pass; its status becomes the stored status, as the agent's loop writes it."""
        outcome = self.reconciler.reconcile(self.obj, self.announced.append)
        self.obj["status"] = json.loads(json.dumps(outcome.status))
        return outcome

    def layout(self, index: int = 0) -> set[Instance]:
        return {Instance(gi.start, gi.profile_id) for gi in self.nvml.instances(index)}

    def condition(self, type_: str) -> tuple[str, str]:
        cond = get_condition(self.obj["status"]["conditions"], type_)
        assert cond is not None
        return str(cond["status"]), str(cond["reason"])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    init_state(tmp_path, "A100-80GB", gpus=2)
    kubelet = Kubelet(tmp_path)
    socket = tmp_path / "pr.sock"
    server = podresources_server.serve(
        socket, lambda: list(kubelet.assignments), lambda: dict(kubelet.allocatable)
    )
    reconciler = Reconciler(
        LazyNvml(lambda: open_simulated(tmp_path)),
        PodResourcesView(str(socket)),
        kubelet,
        AgentMetrics(),
        refresh_timeout=1.0,
        poll_interval=0.05,
    )
    nvml = open_simulated(tmp_path)
    yield Node(tmp_path, kubelet, reconciler, nvml)
    server.stop(grace=None)
    nvml.close()
    reconciler.nvml.close()


def test_applies_a_spec_and_reports_it(node: Node) -> None:
    desired = [Instance(0, ONE_G), Instance(1, ONE_G), Instance(4, THREE_G)]
    node.set_spec({0: desired})
    outcome = node.reconcile()
    assert node.layout(0) == set(desired)
    assert node.layout(1) == set()  # not in the spec: untouched
    status = outcome.status
    assert status["observedGeneration"] == 1
    gpu0 = next(g for g in status["gpus"] if g["index"] == 0)
    assert {(i["start"], i["profileId"]) for i in gpu0["instances"]} == {
        (i.start, i.profile_id) for i in desired
    }
    assert all(i["uuid"].startswith("MIG-") and "pod" not in i for i in gpu0["instances"])
    assert gpu0["profiles"]["model"] == "A100-80GB"
    assert node.condition(c.CONDITION_READY) == ("True", c.REASON_APPLIED)
    assert node.condition(c.CONDITION_APPLYING) == ("False", c.REASON_IDLE)
    assert node.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)
    assert [e.reason for e in outcome.events] == [EVENT_APPLIED, EVENT_REFRESHED]
    assert not outcome.retry
    # Applying=True was announced before the first NVML change, for the old generation.
    assert len(node.announced) == 1
    applying = get_condition(node.announced[0]["conditions"], c.CONDITION_APPLYING)
    assert applying is not None and applying["status"] == "True"
    assert "observedGeneration" not in node.announced[0]
    # The device plugin now advertises exactly the new devices.
    advertised = {d for ids in node.kubelet.allocatable.values() for d in ids}
    assert advertised == {i["uuid"] for i in gpu0["instances"]}


def test_a_second_pass_changes_nothing(node: Node) -> None:
    node.set_spec({0: [Instance(0, THREE_G), Instance(4, THREE_G)], 1: [Instance(0, SEVEN_G)]})
    node.reconcile()
    before = json.loads(json.dumps(node.obj["status"]))
    uuids = {gi.mig_uuid for gi in node.nvml.instances(0)}
    outcome = node.reconcile()
    assert outcome.status == before
    assert outcome.events == []
    assert node.kubelet.refreshes == 1
    assert {gi.mig_uuid for gi in node.nvml.instances(0)} == uuids


def test_moves_only_what_the_new_spec_changes(node: Node) -> None:
    node.set_spec({0: [Instance(0, THREE_G), Instance(4, ONE_G), Instance(5, ONE_G)]})
    node.reconcile()
    kept = {gi.mig_uuid for gi in node.nvml.instances(0) if gi.profile_id == THREE_G}
    node.set_spec({0: [Instance(0, THREE_G), Instance(4, THREE_G)]})
    outcome = node.reconcile()
    assert node.layout(0) == {Instance(0, THREE_G), Instance(4, THREE_G)}
    assert kept <= {gi.mig_uuid for gi in node.nvml.instances(0)}
    applied = next(e for e in outcome.events if e.reason == EVENT_APPLIED)
    assert applied.message.count("destroyed") == 2 and applied.message.count("created") == 1
    assert outcome.status["observedGeneration"] == 2


def test_never_destroys_an_instance_a_pod_holds(node: Node) -> None:
    node.set_spec({0: [Instance(0, ONE_G), Instance(5, ONE_G)]})
    node.reconcile()
    held = next(gi for gi in node.nvml.instances(0) if gi.start == 0)
    assert held.mig_uuid is not None
    node.kubelet.hold("demo/pod-a", held.mig_uuid)
    node.set_spec({0: [Instance(0, THREE_G), Instance(4, THREE_G)]})
    outcome = node.reconcile()
    assert node.layout(0) == {Instance(0, ONE_G), Instance(4, THREE_G)}
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_IN_USE_IN_THE_WAY)
    assert node.condition(c.CONDITION_READY)[0] == "False"
    assert outcome.status["observedGeneration"] == 2
    warning = next(e for e in outcome.events if e.type == "Warning")
    assert warning.reason == c.REASON_IN_USE_IN_THE_WAY and "demo/pod-a" in warning.message
    gpu0 = next(g for g in outcome.status["gpus"] if g["index"] == 0)
    assert {i["uuid"]: i.get("pod") for i in gpu0["instances"]}[held.mig_uuid] == "demo/pod-a"
    # Once said, the warning is not repeated by every resync.
    assert node.reconcile().events == []
    # The pod ends: the next pass finishes the layout.
    node.kubelet.assignments.clear()
    node.reconcile()
    assert node.layout(0) == {Instance(0, THREE_G), Instance(4, THREE_G)}
    assert node.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)
    assert node.condition(c.CONDITION_READY) == ("True", c.REASON_APPLIED)


def test_a_device_busy_outside_kubernetes_is_kept(node: Node) -> None:
    node.set_spec({0: [Instance(0, ONE_G)]})
    node.reconcile()
    (busy,) = node.nvml.instances(0)
    assert busy.mig_uuid is not None
    set_busy(node.state_dir, [busy.mig_uuid])
    node.set_spec({0: [Instance(0, SEVEN_G)]})
    outcome = node.reconcile()
    assert node.layout(0) == {Instance(0, ONE_G)}
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_IN_USE_IN_THE_WAY)
    degraded = get_condition(node.obj["status"]["conditions"], c.CONDITION_DEGRADED)
    assert degraded is not None and "outside Kubernetes" in degraded["message"]
    assert not outcome.retry


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({0: [Instance(0, THREE_G), Instance(2, ONE_G)]}, c.REASON_INVALID_SPEC),
        ({0: [Instance(1, THREE_G)]}, c.REASON_INVALID_SPEC),
        ({0: [Instance(0, ONE_G)], 1: [Instance(0, 77)]}, c.REASON_PROFILE_UNKNOWN),
        ({5: [Instance(0, ONE_G)]}, c.REASON_INVALID_SPEC),
    ],
)
def test_refuses_a_bad_spec_without_touching_anything(
    node: Node, spec: dict[int, list[Instance]], reason: str
) -> None:
    node.set_spec({0: [Instance(6, ONE_G)]})
    node.reconcile()
    node.set_spec(spec)
    outcome = node.reconcile()
    assert node.layout(0) == {Instance(6, ONE_G)}
    assert node.layout(1) == set()
    assert node.condition(c.CONDITION_DEGRADED) == ("True", reason)
    assert outcome.status["observedGeneration"] == 2
    assert [e.reason for e in outcome.events] == [reason]
    assert node.reconcile().events == []  # said once


def test_a_spec_that_cannot_be_read_is_refused(node: Node) -> None:
    node.set_spec({0: [Instance(0, ONE_G)]})
    node.obj["spec"]["gpus"].append({"index": 0, "instances": []})  # GPU 0 twice
    outcome = node.reconcile()
    assert node.layout(0) == set()
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_INVALID_SPEC)
    assert "appears twice" in outcome.events[0].message


def test_a_gpu_with_mig_off_is_reported_and_refused_as_a_target(node: Node) -> None:
    set_mig_mode(node.state_dir, 1, current=False, pending=False)
    node.set_spec({1: [Instance(0, ONE_G)]})
    outcome = node.reconcile()
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_INVALID_SPEC)
    assert "MIG mode is off on GPU 1" in outcome.events[0].message
    gpu1 = next(g for g in outcome.status["gpus"] if g["index"] == 1)
    assert gpu1["migEnabled"] is False and gpu1["instances"] == []
    assert "profiles" not in gpu1


def test_nvml_failure_is_retried_and_then_converges(node: Node) -> None:
    node.set_spec({0: [Instance(0, ONE_G), Instance(1, ONE_G)]})
    inject_fault(node.state_dir, "nvmlDeviceCreateGpuInstanceWithPlacement", nth=2)
    failed = node.reconcile()
    assert failed.retry
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_NVML_ERROR)
    assert "observedGeneration" not in failed.status
    assert len(node.layout(0)) == 1  # the first create went through
    done = node.reconcile()
    assert not done.retry
    assert node.layout(0) == {Instance(0, ONE_G), Instance(1, ONE_G)}
    assert done.status["observedGeneration"] == 1
    assert node.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)


def test_restores_the_layout_after_a_reboot(node: Node) -> None:
    desired = [Instance(0, THREE_G), Instance(4, ONE_G)]
    node.set_spec({0: desired})
    node.reconcile()
    reboot(node.state_dir)
    assert node.layout(0) == set()
    outcome = node.reconcile()
    assert node.layout(0) == set(desired)
    assert node.kubelet.refreshes == 2
    assert any(e.reason == EVENT_APPLIED for e in outcome.events)


def test_finishes_a_create_that_a_kill_cut_short(node: Node) -> None:
    node.set_spec({0: [Instance(0, THREE_G)]})
    node.reconcile()
    # A GPU instance without its compute instance: the agent died between the two NVML calls.
    state_file = node.state_dir / STATE_FILE
    lines = state_file.read_text().splitlines(keepends=True)
    state_file.write_text("".join(line for line in lines if not line.startswith("ci 0 ")))
    node.reconcile()
    (gi,) = node.nvml.instances(0)
    assert (gi.start, gi.profile_id, gi.compute_instances) == (0, THREE_G, 1)
    assert gi.mig_uuid is not None


def test_refreshes_a_stale_device_plugin_even_without_changes(node: Node) -> None:
    node.set_spec({0: [Instance(0, ONE_G)]})
    node.reconcile()
    node.kubelet.allocatable = {}  # e.g. the agent was killed before it refreshed
    outcome = node.reconcile()
    assert [e.reason for e in outcome.events] == [EVENT_REFRESHED]
    assert node.kubelet.refreshes == 2


def test_a_device_plugin_that_does_not_come_back_is_degraded(node: Node) -> None:
    node.kubelet.plugin_stuck = True
    node.set_spec({0: [Instance(0, ONE_G)]})
    outcome = node.reconcile()
    assert outcome.retry
    assert node.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_DEVICE_PLUGIN)
    assert "observedGeneration" not in outcome.status
    node.kubelet.plugin_stuck = False
    assert not node.reconcile().retry
    assert node.obj["status"]["observedGeneration"] == 1


def test_nothing_is_applied_without_the_kubelet(node: Node, tmp_path: Path) -> None:
    node.reconciler.devices = PodResourcesView(str(tmp_path / "missing.sock"), timeout=0.5)
    node.set_spec({0: [Instance(0, ONE_G)]})
    outcome = node.reconcile()
    assert outcome.retry
    assert node.layout(0) == set()
    assert node.condition(c.CONDITION_DEGRADED) == ("True", REASON_POD_RESOURCES)


def test_a_driver_reload_between_passes_fails_no_pass(node: Node) -> None:
    """NVML is open only during a pass, so a reload between passes is no error."""
    node.set_spec({0: [Instance(0, ONE_G)]})
    node.reconcile()
    reload_driver(node.state_dir)
    node.set_spec({0: [Instance(0, ONE_G), Instance(1, ONE_G)]})
    outcome = node.reconcile()
    assert not outcome.retry
    assert node.layout(0) == {Instance(0, ONE_G), Instance(1, ONE_G)}

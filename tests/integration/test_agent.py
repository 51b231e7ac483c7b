"""The agent process against the real local control plane and a simulated GPU node.

Each test runs its own ``jupyter-mig sim-node`` (simulated NVML, device plugin, kubelet part)
and ``jupyter-mig agent`` as separate processes and plays the controller's part by writing the
MigNode spec.  What the agent did is read back from the API server (status, Events, the Node's
advertised MIG capacity) and from the simulated NVML state.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.net import free_port, http_get, local_url, metric
from support.processes import stop_process
from support.waiting import wait_for

from jupyter_mig.agent.devices import PodRefresher
from jupyter_mig.agent.reconcile import RefreshError
from jupyter_mig.api import constants as c
from jupyter_mig.api.conditions import get_condition
from jupyter_mig.api.mignode import new_mignode
from jupyter_mig.devcluster import DevCluster
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import open_simulated
from jupyter_mig.nvml.simgpu import inject_fault, reboot

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

pytestmark = pytest.mark.cluster

A100 = MODELS.get("A100-80GB")
ONE_G = A100.profile("1g.10gb").nvml_id
THREE_G = A100.profile("3g.40gb").nvml_id
WAIT_S = 60.0


@dataclass
class SimNode:
    """A sim node, its MigNode (the test plays the controller) and its agent."""

    cluster: DevCluster
    name: str
    state: Path
    logs: Path
    custom: Any
    core: Any
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health_port: int = 0

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{role}.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_mig.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[role] = process
        return process

    def start_sim_node(self, *latency: str) -> None:
        args = [
            "sim-node", "--kubeconfig", str(self.cluster.kubeconfig), "--name", self.name,
            "--gpu", A100.name, "--gpus", "1", "--state", str(self.state),
            "--refresh-delay", "0.2", "--heartbeat", "5",
        ]  # fmt: skip
        for item in latency:
            args += ["--nvml-latency", item]
        self._spawn("sim-node", args)
        wait_for("the sim node's Node and pod-resources socket", self._sim_node_up, WAIT_S)

    def _sim_node_up(self) -> bool:
        process = self.processes["sim-node"]
        assert process.poll() is None, f"sim-node exited: {self.log('sim-node')}"
        if not (self.state / "pod-resources.sock").exists():
            return False
        try:
            self.core.read_node(self.name)
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def start_agent(self) -> None:
        self.health_port = free_port()
        self._spawn(
            "agent",
            [
                "agent", "--kubeconfig", str(self.cluster.kubeconfig), "--node", self.name,
                "--nvml", f"sim:{self.state}", "--resync", "1", "--max-backoff", "2",
                "--device-plugin-timeout", "20", "--health-port", str(self.health_port),
                "--health-host", "127.0.0.1", "--log-level", "DEBUG",
            ],
        )  # fmt: skip

    def kill_agent(self) -> None:
        stop_process(self.processes.pop("agent"), signal.SIGKILL)

    def log(self, role: str) -> str:
        path = self.logs / f"{role}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- the controller's part ----------------------------------------------------------------

    def create_mignode(self, instances: list[Instance]) -> None:
        node = self.core.read_node(self.name)
        obj = new_mignode(self.name, node.metadata.uid, _spec(instances))
        self.custom.create_cluster_custom_object(c.GROUP, c.VERSION, c.PLURAL, obj)

    def set_spec(self, instances: list[Instance]) -> int:
        """Replace the spec; returns the new generation."""
        updated = self.custom.patch_cluster_custom_object(
            c.GROUP, c.VERSION, c.PLURAL, self.name, {"spec": _spec(instances)}
        )
        return int(updated["metadata"]["generation"])

    def mignode(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_cluster_custom_object(
            c.GROUP, c.VERSION, c.PLURAL, self.name
        )
        return obj

    # -- reading back -------------------------------------------------------------------------

    def nvml_layout(self) -> set[Instance]:
        return {Instance(gi.start, gi.profile_id) for gi in open_simulated(self.state).instances(0)}

    def reported_layout(self) -> set[Instance]:
        gpus = (self.mignode().get("status") or {}).get("gpus") or []
        return {Instance(i["start"], i["profileId"]) for g in gpus for i in g["instances"]}

    def condition(self, type_: str) -> tuple[str, str]:
        conditions = (self.mignode().get("status") or {}).get("conditions") or []
        cond = get_condition(conditions, type_)
        return (str(cond["status"]), str(cond["reason"])) if cond else ("", "")

    def applied(self, generation: int, layout: set[Instance]) -> Callable[[], bool]:
        """The agent reports ``generation`` done and both NVML and the status show ``layout``."""

        def check() -> bool:
            assert "agent" not in self.processes or self.processes["agent"].poll() is None, (
                f"agent exited: {self.log('agent')}"
            )
            status = self.mignode().get("status") or {}
            return (
                status.get("observedGeneration") == generation
                and self.nvml_layout() == layout
                and self.reported_layout() == layout
            )

        return check

    def advertised(self) -> dict[str, str]:
        """The Node's non-zero MIG capacity (a kubelet keeps resources it saw once, at 0)."""
        capacity = self.core.read_node(self.name).status.capacity or {}
        return {
            k: v for k, v in capacity.items() if k.startswith(c.MIG_RESOURCE_PREFIX) and v != "0"
        }

    def events(self) -> list[Any]:
        listed = self.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={self.name}"
        )
        return [e for e in listed.items if e.involved_object.kind == c.KIND]


def _spec(instances: list[Instance]) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "index": 0,
                "instances": [
                    {
                        "profile": A100.by_id[i.profile_id].name,
                        "profileId": i.profile_id,
                        "start": i.start,
                    }
                    for i in instances
                ],
            }
        ]
    }


def _reconciles(port: int) -> float:
    """Successful reconcile passes so far, from the agent's /metrics."""
    return metric(port, "jupyter_mig_agent_reconciles_total", 'result="ok"') or 0.0


@pytest.fixture
def sim(cluster: DevCluster, crds: None, tmp_path: Path) -> Iterator[SimNode]:
    name = f"agent-{uuid.uuid4().hex[:8]}"
    # A short directory: unix socket paths are limited to 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="jm-agent-"))
    with cluster.api_client() as api:
        node = SimNode(
            cluster, name, state, tmp_path, client.CustomObjectsApi(api), client.CoreV1Api(api)
        )
        try:
            yield node
        finally:
            for process in reversed(node.processes.values()):  # the agent before its node
                stop_process(process)
            shutil.rmtree(state, ignore_errors=True)
            # Best effort: a cluster that died under the test has nothing left to clean.
            with contextlib.suppress(Exception):
                node.custom.delete_cluster_custom_object(c.GROUP, c.VERSION, c.PLURAL, name)
            with contextlib.suppress(Exception):
                node.core.delete_node(name)


def test_applies_a_spec_and_reports_it(sim: SimNode) -> None:
    sim.start_sim_node()
    sim.start_agent()  # before its MigNode exists: it waits, then picks it up from the watch
    wait_for(
        "the agent to serve /healthz",
        lambda: http_get(local_url(sim.health_port, "/healthz"))[0] == 200,
        WAIT_S,
    )
    layout = {Instance(0, ONE_G), Instance(1, ONE_G), Instance(4, THREE_G)}
    sim.create_mignode(sorted(layout))
    wait_for("the spec to be applied", sim.applied(1, layout), WAIT_S)
    assert sim.condition(c.CONDITION_READY) == ("True", c.REASON_APPLIED)
    assert sim.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)
    status = sim.mignode()["status"]
    assert status["gpus"][0]["profiles"]["model"] == A100.name
    assert all(i["uuid"].startswith("MIG-") for i in status["gpus"][0]["instances"])
    # The device plugin was refreshed: the Node advertises the new devices.
    want = {"nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-3g.40gb": "1"}
    wait_for("the Node to advertise the new devices", lambda: sim.advertised() == want, WAIT_S)
    assert any(e.reason == "LayoutApplied" for e in sim.events())
    # Resyncs that find nothing to do write nothing.
    version = sim.mignode()["metadata"]["resourceVersion"]
    passes = _reconciles(sim.health_port)
    wait_for("three more resyncs", lambda: _reconciles(sim.health_port) >= passes + 3, WAIT_S)
    assert sim.mignode()["metadata"]["resourceVersion"] == version
    # A new generation moves only what changed.
    kept = {
        gi.mig_uuid for gi in open_simulated(sim.state).instances(0) if gi.profile_id == THREE_G
    }
    generation = sim.set_spec([Instance(0, THREE_G), Instance(4, THREE_G)])
    wait_for(
        "the second spec", sim.applied(generation, {Instance(0, THREE_G), Instance(4, THREE_G)})
    )
    assert kept <= {gi.mig_uuid for gi in open_simulated(sim.state).instances(0)}
    metrics = http_get(local_url(sim.health_port, "/metrics"))[1].decode()
    assert 'jupyter_mig_agent_nvml_operations_total{operation="create",result="ok"}' in metrics


def test_keeps_an_in_use_instance_the_spec_drops(sim: SimNode, namespace: str) -> None:
    sim.start_sim_node()
    sim.start_agent()
    sim.create_mignode([Instance(0, ONE_G)])
    wait_for("the first spec", sim.applied(1, {Instance(0, ONE_G)}), WAIT_S)
    wait_for("the 1g device", lambda: sim.advertised() == {"nvidia.com/mig-1g.10gb": "1"})
    pod = {
        "metadata": {"name": "holder"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": sim.name},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/none",
                    "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}},
                }
            ],
        },
    }
    sim.core.create_namespaced_pod(namespace, pod)

    def holder_reported() -> bool:
        gpus = (sim.mignode().get("status") or {}).get("gpus") or []
        return any(i.get("pod") == f"{namespace}/holder" for g in gpus for i in g["instances"])

    wait_for("the agent to report the pod holding the 1g device", holder_reported, WAIT_S)
    generation = sim.set_spec([Instance(0, THREE_G), Instance(4, THREE_G)])
    wait_for(
        "the part of the spec that fits",
        sim.applied(generation, {Instance(0, ONE_G), Instance(4, THREE_G)}),
        WAIT_S,
    )
    assert sim.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_IN_USE_IN_THE_WAY)
    assert sim.condition(c.CONDITION_READY)[0] == "False"
    warnings = [e for e in sim.events() if e.reason == c.REASON_IN_USE_IN_THE_WAY]
    assert warnings and f"{namespace}/holder" in warnings[0].message
    assert warnings[0].type == "Warning"
    # The pod goes: the next resync finishes the layout.
    sim.core.delete_namespaced_pod("holder", namespace, grace_period_seconds=0)
    wait_for(
        "the layout to be finished once the pod is gone",
        lambda: (
            sim.nvml_layout() == {Instance(0, THREE_G), Instance(4, THREE_G)}
            and sim.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)
        ),
        WAIT_S,
    )


def test_converges_after_being_killed_mid_apply(sim: SimNode) -> None:
    sim.start_sim_node("nvmlDeviceCreateGpuInstanceWithPlacement=0.4", "nvmlGpuInstanceDestroy=0.2")
    sim.create_mignode([Instance(0, THREE_G), Instance(4, THREE_G)])
    sim.start_agent()
    wait_for("the first spec", sim.applied(1, {Instance(0, THREE_G), Instance(4, THREE_G)}))
    seven = {Instance(i, ONE_G) for i in range(7)}
    generation = sim.set_spec(sorted(seven))
    # Kill it once it has started on the new layout, but before it is done.
    wait_for(
        "the agent to start applying",
        lambda: Instance(0, THREE_G) not in sim.nvml_layout() or len(sim.nvml_layout()) > 2,
        WAIT_S,
        interval=0.05,
    )
    sim.kill_agent()
    assert sim.nvml_layout() != seven
    assert (sim.mignode().get("status") or {}).get("observedGeneration") != generation
    sim.start_agent()
    wait_for("the restarted agent to converge", sim.applied(generation, seven), WAIT_S)
    assert sim.condition(c.CONDITION_READY) == ("True", c.REASON_APPLIED)
    wait_for(
        "the Node to advertise seven 1g devices",
        lambda: sim.advertised() == {"nvidia.com/mig-1g.10gb": "7"},
        WAIT_S,
    )


def test_retries_nvml_failures_until_it_converges(sim: SimNode) -> None:
    sim.start_sim_node()
    inject_fault(sim.state, "nvmlDeviceCreateGpuInstanceWithPlacement", nth=1, times=3)
    sim.create_mignode([Instance(0, THREE_G)])
    sim.start_agent()
    wait_for("the spec despite NVML failures", sim.applied(1, {Instance(0, THREE_G)}), WAIT_S)
    assert sim.condition(c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)
    assert any(e.reason == c.REASON_NVML_ERROR and e.type == "Warning" for e in sim.events())


def test_restores_the_layout_after_a_reboot(sim: SimNode) -> None:
    sim.start_sim_node()
    layout = {Instance(0, THREE_G), Instance(4, ONE_G), Instance(5, ONE_G)}
    sim.create_mignode(sorted(layout))
    sim.start_agent()
    wait_for("the spec", sim.applied(1, layout), WAIT_S)
    before = {gi.mig_uuid for gi in open_simulated(sim.state).instances(0)}
    reboot(sim.state)  # MIG instances do not survive a reboot
    wait_for(
        "the layout to be restored",
        lambda: (
            sim.nvml_layout() == layout
            and {gi.mig_uuid for gi in open_simulated(sim.state).instances(0)}.isdisjoint(before)
        ),
        WAIT_S,
    )
    wait_for(
        "the status to show the restored devices",
        lambda: {i["uuid"] for i in sim.mignode()["status"]["gpus"][0]["instances"]}.isdisjoint(
            before
        ),
        WAIT_S,
    )


def test_refuses_an_invalid_spec(sim: SimNode) -> None:
    sim.start_sim_node()
    sim.create_mignode([Instance(6, ONE_G)])
    sim.start_agent()
    wait_for("the spec", sim.applied(1, {Instance(6, ONE_G)}), WAIT_S)
    generation = sim.set_spec([Instance(0, THREE_G), Instance(2, ONE_G)])  # overlapping

    def refused() -> bool:
        status = sim.mignode().get("status") or {}
        return status.get("observedGeneration") == generation

    wait_for("the invalid spec to be settled", refused, WAIT_S)
    assert sim.condition(c.CONDITION_DEGRADED) == ("True", c.REASON_INVALID_SPEC)
    assert sim.nvml_layout() == {Instance(6, ONE_G)}


def test_pod_refresher_replaces_the_device_plugin_pod(sim: SimNode, namespace: str) -> None:
    """The real-node refresh: delete the plugin pod on this node, wait for a Ready successor
    (made by a real DaemonSet controller, run by the sim node)."""
    sim.start_sim_node()
    labels = {"app": "nvidia-device-plugin-daemonset"}
    daemonset = {
        "metadata": {"name": "device-plugin"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": sim.name},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "plugin", "image": "registry.invalid/none"}],
                },
            },
        },
    }
    with sim.cluster.api_client() as api:
        client.AppsV1Api(api).create_namespaced_daemon_set(namespace, daemonset)
    refresher = PodRefresher(
        sim.core, sim.name, namespace, "app=nvidia-device-plugin-daemonset", poll_interval=0.2
    )

    def ready_pods() -> list[str]:
        return [p.metadata.uid for p in refresher.pods() if _pod_ready(p)]

    first = wait_for("the device-plugin pod to be Ready", ready_pods, WAIT_S)
    refresher.refresh(timeout=WAIT_S)
    after = ready_pods()
    assert after and not set(after) & set(first)
    # No plugin pod on the node: a clear error, not a hang.
    other = PodRefresher(sim.core, sim.name, namespace, "app=absent", poll_interval=0.2)
    with pytest.raises(RefreshError, match="no device-plugin pod found"):
        other.refresh(timeout=5)


def _pod_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(cond.type == "Ready" and cond.status == "True" for cond in conditions)

"""``jupyter-mig sim-node`` against the real local control plane: registration, heartbeats,
device advertising, scheduling of MIG pods, the kubelet's pod work, pod-resources, and resuming
after kill -9."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support.net import http_text
from support.processes import stop_process
from support.waiting import wait_for

from jupyter_mig.devcluster import DevCluster
from jupyter_mig.nvml import open_simulated
from jupyter_mig.nvml.base import InUse
from jupyter_mig.podresources import client as podresources
from jupyter_mig.simnode.node import reboot_state

pytestmark = pytest.mark.cluster

MIG_1G = "nvidia.com/mig-1g.10gb"
ONE_G = 19  # NVML profile id of 1g.10gb on A100-80GB
THREE_G = 9  # 3g.40gb


class SimNodeProcess:
    """One ``jupyter-mig sim-node`` process (possibly several nodes) run by a test."""

    def __init__(self, cluster: DevCluster, name: str, state: Path, *extra: str) -> None:
        self.name = name
        self.state = state
        self.argv = [
            sys.executable,
            "-m",
            "jupyter_mig.cli",
            "sim-node",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--name",
            name,
            "--gpu",
            "A100-80GB",
            "--gpus",
            "2",
            "--state",
            str(state),
            "--refresh-delay",
            "0.5",
            "--heartbeat",
            "1",
            "--label",
            "jupyter-mig.io/partitioning=dynamic",
            *extra,
        ]
        self.log = state.parent / f"{state.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def core(cluster: DevCluster) -> Iterator[Any]:
    with cluster.api_client() as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes: keep the state directory short
    with tempfile.TemporaryDirectory(prefix="jm-sn-") as directory:
        yield Path(directory)


@pytest.fixture
def sim_nodes(cluster: DevCluster, core: Any, workdir: Path) -> Iterator[list[SimNodeProcess]]:
    """Started sim-node processes; afterwards: stopped, their pods' processes killed, their
    pods and Nodes removed from the API server."""
    started: list[SimNodeProcess] = []
    yield started
    for sim in started:
        sim.stop()
    for state in [p.parent for p in workdir.rglob("nvml.state")]:
        reboot_state(state)  # kills container processes the sim nodes left running
    for sim in started:
        for node in core.list_node().items:
            if node.metadata.name == sim.name or node.metadata.name.startswith(f"{sim.name}-"):
                pods = core.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node.metadata.name}"
                ).items
                for pod in pods:
                    with contextlib.suppress(client.ApiException):
                        core.delete_namespaced_pod(
                            pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                        )
                with contextlib.suppress(client.ApiException):
                    core.delete_node(node.metadata.name)


def start_node(
    cluster: DevCluster, sims: list[SimNodeProcess], workdir: Path, *extra: str
) -> SimNodeProcess:
    name = f"sim-{uuid.uuid4().hex[:8]}"
    sim = SimNodeProcess(cluster, name, workdir / name, *extra)
    sims.append(sim)
    sim.start()
    return sim


def node_ready(core: Any, name: str) -> Any:
    try:
        node = core.read_node(name)
    except client.ApiException:
        return None
    conditions = {c.type: c.status for c in node.status.conditions or []}
    return node if conditions.get("Ready") == "True" else None


def wait_ready(core: Any, sim: SimNodeProcess, timeout: float = 60) -> Any:
    try:
        return wait_for(f"node {sim.name} Ready", lambda: node_ready(core, sim.name), timeout)
    except TimeoutError:
        pytest.fail(f"node never became Ready; sim-node log:\n{sim.logs()}")


def create_instances(sim: SimNodeProcess, *layout: tuple[int, int, int]) -> list[str]:
    """Create (gpu, profile id, start) instances as the agent would, then ask for a refresh."""
    nvml = open_simulated(sim.state)
    made = [
        nvml.create_instance(gpu, profile, start).mig_uuid or "" for gpu, profile, start in layout
    ]
    (sim.state / "device-plugin.refresh").write_text(str(time.time()))
    return made


def mig_pod(name: str, node_selector: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "registry.invalid/none",
        "resources": {"limits": {MIG_1G: str(count)}},
        **extra.pop("container", {}),
    }
    return {
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node_selector},
            "containers": [container],
            **extra,
        },
    }


def wait_phase(
    core: Any, sim: SimNodeProcess, namespace: str, name: str, wanted: str, timeout: float = 60
) -> None:
    """Wait for a pod phase; on timeout fail with what the pod, the node and the sim node say."""
    try:
        wait_for(f"{name} {wanted}", lambda: phase(core, namespace, name) == wanted, timeout)
    except TimeoutError:
        pod = core.read_namespaced_pod(name, namespace)
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        pytest.fail(
            f"{name} is {pod.status.phase}, not {wanted}: conditions "
            f"{[(c.type, c.status, c.message) for c in pod.status.conditions or []]}, events "
            f"{[e.message for e in events.items]}, node allocatable "
            f"{core.read_node(sim.name).status.allocatable}; sim-node log:\n{sim.logs()}"
        )


def phase(core: Any, namespace: str, name: str) -> str | None:
    try:
        return str(core.read_namespaced_pod(name, namespace).status.phase)
    except client.ApiException:
        return None


def pod_gone(core: Any, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except client.ApiException as err:
        return err.status == 404
    return False


def test_node_registers_with_labels_capacity_and_heartbeats(
    cluster: DevCluster, core: Any, sim_nodes: list[SimNodeProcess], workdir: Path
) -> None:
    sim = start_node(cluster, sim_nodes, workdir)
    node = wait_ready(core, sim)
    labels = node.metadata.labels
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/mig.capable"] == "true"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["jupyter-mig.io/partitioning"] == "dynamic"
    assert node.status.allocatable["pods"] == "110"
    leases = client.CoordinationV1Api(core.api_client)
    first = wait_for(
        "the node Lease",
        lambda: _lease_renewed(leases, sim.name, None),
        timeout=30,
    )
    wait_for("a Lease renewal", lambda: _lease_renewed(leases, sim.name, first), timeout=30)
    beat = node.status.conditions[0].last_heartbeat_time
    wait_for(
        "a fresh Ready heartbeat",
        lambda: core.read_node(sim.name).status.conditions[0].last_heartbeat_time > beat,
        timeout=30,
    )

    create_instances(sim, (0, ONE_G, 0), (0, ONE_G, 1), (1, THREE_G, 4))
    wait_for(
        "MIG capacity",
        lambda: (core.read_node(sim.name).status.allocatable or {}).get(MIG_1G) == "2",
        timeout=30,
    )
    assert core.read_node(sim.name).status.capacity["nvidia.com/mig-3g.40gb"] == "1"
    socket = str(sim.state / "pod-resources.sock")
    assert sorted(podresources.allocatable(socket)) == [MIG_1G, "nvidia.com/mig-3g.40gb"]


def _lease_renewed(leases: Any, name: str, previous: Any) -> Any:
    try:
        renew = leases.read_namespaced_lease(name, "kube-node-lease").spec.renew_time
    except client.ApiException:
        return None
    return renew if previous is None or renew > previous else None


def test_mig_pod_waits_for_instances_then_runs_with_its_device(
    cluster: DevCluster,
    core: Any,
    sim_nodes: list[SimNodeProcess],
    workdir: Path,
    namespace: str,
) -> None:
    sim = start_node(cluster, sim_nodes, workdir)
    wait_ready(core, sim)
    core.create_namespaced_pod(namespace, mig_pod("gpu-pod", sim.name))
    time.sleep(2)  # no MIG device exists: the scheduler must leave the pod Pending
    pod = core.read_namespaced_pod("gpu-pod", namespace)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None

    made = create_instances(sim, (0, ONE_G, 3))
    wait_phase(core, sim, namespace, "gpu-pod", "Running")
    pod = core.read_namespaced_pod("gpu-pod", namespace)
    assert pod.spec.node_name == sim.name
    assert pod.status.pod_ip.startswith("127.")
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert {conditions[t] for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")} == {
        "True"
    }
    socket = str(sim.state / "pod-resources.sock")
    assert podresources.list_devices(socket) == {f"{namespace}/gpu-pod": [(MIG_1G, made[0])]}
    assert podresources.pod_devices(socket, namespace, "gpu-pod") == [(MIG_1G, made[0])]

    nvml = open_simulated(sim.state)
    (held,) = nvml.instances(0)
    with pytest.raises(InUse):
        nvml.destroy_instance(0, held.id)

    core.delete_namespaced_pod("gpu-pod", namespace)
    wait_for("the pod deleted", lambda: pod_gone(core, namespace, "gpu-pod"), 30)
    assert podresources.list_devices(socket) == {}
    nvml.destroy_instance(0, held.id)  # released: no longer in use


def test_sim_exec_runs_the_command_on_the_pod_ip(
    cluster: DevCluster,
    core: Any,
    sim_nodes: list[SimNodeProcess],
    workdir: Path,
    namespace: str,
) -> None:
    sim = start_node(cluster, sim_nodes, workdir)
    wait_ready(core, sim)
    (device,) = create_instances(sim, (1, ONE_G, 0))
    script = (
        'echo "$NVIDIA_VISIBLE_DEVICES $GREETING" > visible.txt && '
        "exec python -m http.server --bind $JUPYTER_MIG_POD_IP 8000"
    )
    body = mig_pod(
        "web",
        sim.name,
        metadata={"annotations": {"jupyter-mig.io/sim-exec": "true"}},
        container={
            "command": ["sh", "-c", script],
            "env": [{"name": "GREETING", "value": "hello"}],
        },
    )
    core.create_namespaced_pod(namespace, body)
    wait_phase(core, sim, namespace, "web", "Running")
    ip = core.read_namespaced_pod("web", namespace).status.pod_ip
    served = wait_for("the server", lambda: http_text(f"http://{ip}:8000/visible.txt", 2), 30)
    assert served.split() == [device, "hello"]

    sim.kill()  # kill -9: the container keeps running, like a kubelet restart
    assert http_text(f"http://{ip}:8000/visible.txt", 2)
    sim.start()
    socket = str(sim.state / "pod-resources.sock")
    wait_for(
        "pod-resources back",
        lambda: _quiet(lambda: podresources.list_devices(socket)),
        30,
    )
    assert podresources.list_devices(socket) == {f"{namespace}/web": [(MIG_1G, device)]}
    assert phase(core, namespace, "web") == "Running"

    core.delete_namespaced_pod("web", namespace)
    wait_for("the pod deleted", lambda: pod_gone(core, namespace, "web"), 30)
    wait_for("the server stopped", lambda: http_text(f"http://{ip}:8000/", 2) is None, 30)


def _quiet(call: Any) -> Any:
    try:
        return call() is not None
    except podresources.PodResourcesError:
        return False


def test_container_exit_ends_the_pod_with_its_code(
    cluster: DevCluster,
    core: Any,
    sim_nodes: list[SimNodeProcess],
    workdir: Path,
    namespace: str,
) -> None:
    sim = start_node(cluster, sim_nodes, workdir)
    wait_ready(core, sim)
    body = {
        "metadata": {"name": "job", "annotations": {"jupyter-mig.io/sim-exec": "true"}},
        "spec": {
            "nodeName": sim.name,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/none",
                    "command": ["python", "-c", "raise SystemExit(3)"],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, body)
    wait_phase(core, sim, namespace, "job", "Failed")
    status = core.read_namespaced_pod("job", namespace).status.container_statuses[0]
    assert status.state.terminated.exit_code == 3


def test_vanished_device_fails_admission(
    cluster: DevCluster,
    core: Any,
    sim_nodes: list[SimNodeProcess],
    workdir: Path,
    namespace: str,
) -> None:
    sim = start_node(cluster, sim_nodes, workdir)
    wait_ready(core, sim)
    create_instances(sim, (0, ONE_G, 0))
    wait_for(
        "capacity", lambda: (core.read_node(sim.name).status.allocatable or {}).get(MIG_1G) == "1"
    )
    nvml = open_simulated(sim.state)
    nvml.destroy_instance(0, nvml.instances(0)[0].id)  # no refresh: the plugin's list is stale
    core.create_namespaced_pod(namespace, mig_pod("late", sim.name))
    wait_phase(core, sim, namespace, "late", "Failed")
    pod = core.read_namespaced_pod("late", namespace)
    assert pod.status.reason == "UnexpectedAdmissionError"


def test_count_runs_several_nodes_in_one_process(
    cluster: DevCluster, core: Any, sim_nodes: list[SimNodeProcess], workdir: Path
) -> None:
    sim = start_node(cluster, sim_nodes, workdir, "--count", "3")
    names = [f"{sim.name}-{i}" for i in range(3)]
    for name in names:
        wait_for(f"{name} Ready", lambda name=name: node_ready(core, name), 60)
        assert (sim.state / name / "pod-resources.sock").exists()

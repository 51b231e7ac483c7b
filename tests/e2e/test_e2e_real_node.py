"""The seed scenario on a real GPU node: a real kubelet, its containerd and runc, a bridge CNI
network, and NVIDIA's device plugin on our simulated NVML (``devcluster`` ``node.py``).

The controller and the agent run as host processes with the chart's accounts (as in the other
e2e tests); the agent reads the real kubelet's pod-resources socket and restarts NVIDIA's plugin
with SIGHUP.  Each replica is a busybox container (the image built here) that prints its
``NVIDIA_VISIBLE_DEVICES``, read back through the API server's log endpoint from the kubelet.
The last test stops a node that ran a pod and checks that nothing is left on the machine.
Needs root, Debian's containerd, runc, CNI plugins and busybox-static, and NVIDIA's plugin
(``scripts/setup.sh``); skipped otherwise.  The kubelet is built on first use (~3 min after
the control plane's build, whose Go build cache it shares).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import WAIT_S, System, layout_problems
from support.waiting import wait_for

from jupyter_mig.devcluster import DevCluster, host
from jupyter_mig.devcluster import node as gpu_nodes
from jupyter_mig.devcluster.images import BUSYBOX_BINARY, BUSYBOX_IMAGE
from jupyter_mig.deviceplugin import nvidia
from jupyter_mig.nvml.simgpu import set_latency

_TOOLS = ("containerd", "ctr", "runc", "ip", "unshare", "nsenter")
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.geteuid() != 0
        or not nvidia.BINARY.is_file()
        or not BUSYBOX_BINARY.is_file()
        or not all(shutil.which(t) for t in _TOOLS)
        or not any(Path(d, "bridge").is_file() for d in gpu_nodes.CNI_BIN_DIRS),
        reason="needs root, containerd, runc, the CNI plugins, busybox-static and NVIDIA's "
        "plugin (scripts/setup.sh)",
    ),
]

REPLICAS = 5
PROFILE = "1g.10gb"
#: The container prints what the device plugin's Allocate put into its environment.
PRINT_DEVICES = 'echo "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"; exec sleep 86400'


def _log(message: str) -> None:
    print(f"devcluster: {message}")


@pytest.fixture(scope="module")
def gpu_node(cluster: DevCluster) -> Iterator[gpu_nodes.GpuNode]:
    """Node gpu-1 (A100-80GB), stopped afterwards unless it ran before (a reused cluster)."""
    before = {n.name for n in gpu_nodes.recorded_nodes(cluster.dir) if gpu_nodes.node_running(n)}
    [node] = gpu_nodes.ensure_nodes(cluster, 1, "A100-80GB", 1, _log)
    try:
        yield node
    finally:
        if node.name not in before:
            gpu_nodes.stop_node(cluster, node)


def _deployment(system: System) -> dict[str, object]:
    labels = {"app": "seed"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "seed"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:latest",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", PRINT_DEVICES],
                            "resources": {"limits": {f"nvidia.com/mig-{PROFILE}": "1"}},
                        }
                    ],
                    "nodeSelector": system.label,
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


def _visible_devices(system: System, pod: str) -> str | None:
    """``NVIDIA_VISIBLE_DEVICES`` as the container printed it (API server → kubelet logs)."""
    from kubernetes import client

    text = client.CoreV1Api(system.api_client).read_namespaced_pod_log(pod, system.namespace)
    found = re.search(r"^NVIDIA_VISIBLE_DEVICES=(\S*)$", text, re.MULTILINE)
    return found[1] if found else None


def test_seed_deployment_on_a_real_kubelet(system: System, gpu_node: gpu_nodes.GpuNode) -> None:
    node = system.add_real_node(gpu_node)
    system.start_controller("controller-0")
    system.kube.request(
        "POST", f"/apis/apps/v1/namespaces/{system.namespace}/deployments", body=_deployment(system)
    )

    def all_running() -> list[str] | None:
        pods = [p for p in system.pods() if p["metadata"].get("labels", {}).get("app") == "seed"]
        running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        return running if len(running) == REPLICAS else None

    names = system.wait("all 5 replicas to run on the real kubelet", all_running, 2 * WAIT_S)
    system.wait("the system to settle", system.settled)

    visible = {
        name: system.wait(
            f"{name} to print its devices", lambda n=name: _visible_devices(system, n)
        )
        for name in names
    }
    assert all(v.startswith("MIG-") for v in visible.values()), visible
    assert len(set(visible.values())) == REPLICAS, visible

    # What each container sees is the slice the kubelet assigned (pod-resources), the one the
    # agent reports the pod holds, and a MIG device that exists in NVML.
    held = {pod.split("/")[1]: uuid for uuid, (_node, pod) in system.held_devices().items()}
    assert {n: held.get(n) for n in names} == visible
    obj = system.mignode(node.name)
    assert obj is not None
    assert layout_problems(obj) == []
    [gpu] = obj["status"]["gpus"]
    assert {i["pod"].split("/")[1]: i["uuid"] for i in gpu["instances"]} == visible
    assert set(visible.values()) <= set(node.nvml_devices())


def _busybox_pod(system: System, name: str, profile: str) -> dict[str, object]:
    body = system.pod_body(name, profile, interactive=True)
    body["spec"]["containers"][0].update(
        image=BUSYBOX_IMAGE, imagePullPolicy="Never", command=["sh", "-c", PRINT_DEVICES]
    )
    return body


def _restarts(system: System, name: str) -> int:
    pod = system.pod(name) or {}
    return sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or [])


def _changing(system: System, node: str) -> bool:
    """The controller wrote a new spec that the agent has not finished applying."""
    obj = system.mignode(node) or {}
    observed = (obj.get("status") or {}).get("observedGeneration")
    return bool(observed is not None and observed != obj["metadata"].get("generation"))


#: Each case asks for a size no earlier test of the module leaves free, so it needs carving.
@pytest.mark.parametrize(("part", "profile"), [("kubelet", "2g.20gb"), ("containerd", "3g.40gb")])
def test_a_node_process_crashing_mid_change_converges(
    system: System, gpu_node: gpu_nodes.GpuNode, cluster: DevCluster, part: str, profile: str
) -> None:
    """SIGKILL the kubelet (or containerd) while the agent carves a new slice: a pod already
    running keeps its container and its slice, the new pod runs, the system settles."""
    node = system.add_real_node(gpu_node)
    system.start_controller("controller-0")
    path = f"/api/v1/namespaces/{system.namespace}/pods"
    system.kube.request("POST", path, body=_busybox_pod(system, "first", PROFILE))
    system.wait("the first pod to run", lambda: system.running(["first"]))
    system.wait("the system to settle", system.settled)
    [device] = [u for u, (_n, pod) in system.held_devices().items() if pod.endswith("/first")]

    # Slow creates widen the window in which the node process dies.
    set_latency(node.state, {"nvmlDeviceCreateGpuInstanceWithPlacement": 2.0})
    system.kube.request("POST", path, body=_busybox_pod(system, "second", profile))
    system.wait("the agent to apply a new layout", lambda: _changing(system, node.name))
    pid = gpu_nodes.crash_and_restart(cluster, gpu_node, part)
    system.note(f"{part} killed mid-change; restarted as pid {pid}")

    system.wait("both pods to run", lambda: system.running(["first", "second"]), 2 * WAIT_S)
    system.wait("the system to settle", system.settled)
    held = {pod: uuid for uuid, (_n, pod) in system.held_devices().items()}
    assert held[f"{system.namespace}/first"] == device
    assert _restarts(system, "first") == 0, f"the first pod's container restarted ({part})"
    assert _visible_devices(system, "second") == held[f"{system.namespace}/second"]
    set_latency(node.state, {})


def test_stopping_a_node_leaves_nothing_behind(cluster: DevCluster) -> None:
    """A node that ran a pod (sandbox, network namespace, veth, projected-token volume) is
    stopped: no process, mount, network device or cgroup of it is left."""
    veths_before = _veths()
    node = gpu_nodes.start_node(cluster, "gpu-stop", 9, "A100-80GB", 1, _log)
    try:
        with cluster.api_client() as api:
            from jupyter_mig.kube.client import Kube

            kube = Kube(api, "jupyter-mig-e2e")
            kube.request(
                "POST",
                "/api/v1/namespaces/default/pods",
                body={
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "stop-check"},
                    "spec": {
                        "nodeName": node.name,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {
                                "name": "main",
                                "image": BUSYBOX_IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["sleep", "86400"],
                            }
                        ],
                    },
                },
            )

            def running() -> bool:
                pod = kube.request("GET", "/api/v1/namespaces/default/pods/stop-check")
                return bool((pod.get("status") or {}).get("phase") == "Running")

            wait_for("the pod to run on the node", running, WAIT_S)
        assert gpu_nodes.node_processes(node)["containers"], "the pod's processes are in the cgroup"
        assert host.link_exists(node.bridge)
    finally:
        gpu_nodes.stop_node(cluster, node)

    assert not any(gpu_nodes.node_processes(node).values())
    assert host.mounts_under(node.run_dir, node.dir) == []
    assert not host.link_exists(node.bridge)
    assert not host.cgroup_pids(node.cgroup)
    assert not any((h / node.cgroup.strip("/")).exists() for h in host.cgroup_hierarchies())
    assert not node.run_dir.exists() and not node.dir.exists()
    assert _veths() <= veths_before  # the pod's veth went with its network namespace
    assert gpu_nodes.node_absent(cluster, node.name)


def _veths() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("veth")}

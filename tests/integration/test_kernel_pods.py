"""Kernel pods on the real local control plane: the hub service creates them, the controller
carves their slices, a simulated A100-80GB node (with the real agent) runs them.

The hub service's kernel API runs with the real Kubernetes layer, controller and capacity
client; the JupyterHub it asks about users and servers, and the token check, are stand-ins
(two users, each with a running server), since the pods are what is under test here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from support.hub import call  # noqa: E402
from support.kernels import Hub, serving  # noqa: E402
from support.net import free_port  # noqa: E402
from support.processes import stop_process  # noqa: E402
from support.waiting import wait_for  # noqa: E402

from jupyter_mig.api import constants as c  # noqa: E402
from jupyter_mig.devcluster import DevCluster  # noqa: E402
from jupyter_mig.hub.kernels import KernelPods  # noqa: E402
from jupyter_mig.hub.service import Restarter  # noqa: E402
from jupyter_mig.hub.settings import SliceSettings  # noqa: E402
from jupyter_mig.kernels import contract as k  # noqa: E402
from jupyter_mig.kernels.provisioner import KernelPodError, KernelService  # noqa: E402
from jupyter_mig.kernels.template import KernelPodTemplate  # noqa: E402
from jupyter_mig.kube.client import Kube  # noqa: E402
from jupyter_mig.slices.client import CapacityClient  # noqa: E402

pytestmark = pytest.mark.cluster

WAIT_S = 120.0


class Node:
    """A simulated A100-80GB node with its agent, and the controller."""

    def __init__(self, cluster: DevCluster, namespace: str, logs: Path) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.name = f"kernel-sim-{self.suffix}"
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.state = Path(tempfile.mkdtemp(prefix="jm-kern-"))  # short: unix socket paths
        kubeconfig = str(cluster.kubeconfig)
        self.run(
            "sim-node", "--kubeconfig", kubeconfig, "--name", self.name, "--gpu", "A100-80GB",
            "--gpus", "1", "--state", str(self.state), "--label", c.OPT_IN_SELECTOR,
            "--label", f"jupyter-mig.io/test={self.suffix}", "--refresh-delay", "0.2",
        )  # fmt: skip
        wait_for("the sim node", lambda: (self.state / "pod-resources.sock").exists(), 60)
        self.run(
            "agent", "--kubeconfig", kubeconfig, "--node", self.name, "--nvml",
            f"sim:{self.state}", "--resync", "2", "--max-backoff", "2",
        )  # fmt: skip
        self.controller_url = f"http://127.0.0.1:{free_port()}"
        self.run(
            "controller", "--kubeconfig", kubeconfig, "--listen",
            self.controller_url.removeprefix("http://"), "--batch-idle", "300ms",
            "--batch-max", "2s", "--interactive-namespaces", namespace,
        )  # fmt: skip
        wait_for(
            "the controller to see the GPU",
            lambda: any(
                m["model"] == "A100-80GB"
                for m in (call(f"{self.controller_url}/api/v1/capacity", None)[1] or {}).get(
                    "models", []
                )
            ),
            90,
        )

    def run(self, *args: str) -> None:
        with open(self.logs / f"{args[0]}.log", "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jupyter_mig.cli", *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=dict(os.environ),
                    cwd=self.logs,
                )
            )

    def close(self) -> None:
        for process in reversed(self.processes):
            stop_process(process, timeout=30)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def node(cluster: DevCluster, crds: None, namespace: str, tmp_path: Path) -> Iterator[Node]:
    started = Node(cluster, namespace, tmp_path)
    try:
        yield started
    finally:
        started.close()
        with cluster.api_client() as api, contextlib.suppress(kubernetes.client.ApiException):
            kubernetes.client.CoreV1Api(api).delete_node(started.name)


def service_parts(
    cluster: DevCluster, namespace: str, node: Node
) -> tuple[Kube, KernelPodTemplate, Hub, KernelPods, Restarter]:
    """The hub service's kernel API on the real Kubernetes layer and controller."""
    kube = Kube(cluster.api_client(), field_manager="jupyter-mig-hub")
    settings = SliceSettings(controller_url=node.controller_url, sizes=["10gb", "20gb"])
    template = KernelPodTemplate(
        namespace=namespace,
        image="none",
        node_selector={"jupyter-mig.io/test": node.suffix},
        security_context={},
    )
    hub = Hub()
    kernels = KernelPods(template, settings, hub, CapacityClient(node.controller_url, 0), kube)
    return kube, template, hub, kernels, Restarter(hub, settings)


def test_kernels_get_pods_with_their_own_slices_and_nothing_outlives_them(
    cluster: DevCluster, namespace: str, node: Node
) -> None:
    kube, template, hub, kernels, restarter = service_parts(cluster, namespace, node)
    base = f"/api/v1/namespaces/{namespace}"

    def objects(kernel_id: str) -> list[str]:
        name = k.kernel_object_name(kernel_id)
        return [kind for kind in ("pods", "secrets") if kube.get(f"{base}/{kind}/{name}")]

    async def scenario(url: str) -> None:
        alice = KernelService(url, "alice-token", "")
        bob = KernelService(url, "bob-token", "")
        small, large, bad = (str(uuid.uuid4()) for _ in range(3))
        await alice.create(small, "10gb", "key-small", "hmac-sha256")
        await alice.create(large, "20gb", "key-large", "hmac-sha256")
        for kernel_id in (small, large):
            for _ in range(int(WAIT_S)):
                state = await alice.state(kernel_id)
                if state and state["phase"] == "Running":
                    break
                await asyncio.sleep(1)
            assert state and state["phase"] == "Running" and state["ip"], state
        pods = {i: kube.get(f"{base}/pods/{k.kernel_object_name(i)}") for i in (small, large)}
        limits = {i: p["spec"]["containers"][0]["resources"]["limits"] for i, p in pods.items()}  # type: ignore[index]
        assert limits[small] == {"nvidia.com/mig-1g.10gb": "1"}
        assert limits[large] == {"nvidia.com/mig-1g.20gb": "1"}  # least waste on A100-80GB
        for kernel_id, pod in pods.items():
            assert pod is not None and "key-" not in json.dumps(pod["spec"])
            assert pod["metadata"]["labels"][k.USER_LABEL] == "alice"
            secret = kube.get(f"{base}/secrets/{k.kernel_object_name(kernel_id)}")
            assert secret is not None
            assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [
                pod["metadata"]["uid"]
            ]

        # Another user's token: 403, and nothing changes.
        with pytest.raises(KernelPodError, match="belongs to another server"):
            await bob.state(small)
        with pytest.raises(KernelPodError, match="belongs to another server"):
            await bob.delete(small)
        assert objects(small) == ["pods", "secrets"]

        # The user's limits count kernel pods: the total of slices, and the number of kernels.
        kernels.settings.max_total_size = "30gb"
        with pytest.raises(KernelPodError, match=r"would bring the GPU slices .* to 40 GB"):
            await alice.create(bad, "10gb", "key", "hmac-sha256")
        kernels.settings.max_total_size = None
        template.max_kernels_per_user = 2
        with pytest.raises(KernelPodError, match="you have 2 kernels with GPU slices"):
            await alice.create(bad, "10gb", "key", "hmac-sha256")
        template.max_kernels_per_user = 4

        # A bad size: one clear message, nothing created.
        with pytest.raises(KernelPodError, match="cannot read 'lots' as a GPU slice size"):
            await alice.create(bad, "lots", "key", "hmac-sha256")
        with pytest.raises(KernelPodError, match="40gb is not on this hub's list of sizes"):
            await alice.create(bad, "40gb", "key", "hmac-sha256")
        template.volumes = [{"name": "home", "emptyDir": {"medium": "{nope}"}}]
        with pytest.raises(KernelPodError, match="volumes cannot be rendered"):
            await alice.create(bad, "10gb", "key", "hmac-sha256")
        template.volumes = []
        template.namespace = f"{namespace}-missing"
        with pytest.raises(KernelPodError, match="cannot be created in namespace"):
            await alice.create(bad, "10gb", "key", "hmac-sha256")
        template.namespace = namespace
        assert objects(bad) == []

        # Shutting a kernel down takes its pod and Secret.
        await alice.delete(small, grace=0)
        for _ in range(int(WAIT_S)):
            if not objects(small):
                break
            await asyncio.sleep(1)
        assert objects(small) == []

        # The sweep leaves a running server's kernel alone, and takes a dead server's.
        template.stale_after = 0.001
        assert await kernels.sweep() == []
        hub.running["alice"] = False
        assert await kernels.sweep() == [f"{namespace}/{k.kernel_object_name(large)}"]
        for _ in range(int(WAIT_S)):
            if not objects(large):
                break
            await asyncio.sleep(1)
        assert objects(large) == []

    try:
        asyncio.run(serving(kernels, restarter, scenario))
    finally:
        kube.api_client.close()


def test_a_kernel_manager_launches_restarts_with_another_size_and_shuts_down(
    cluster: DevCluster,
    namespace: str,
    node: Node,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """jupyter_client's kernel manager, through the entry point and the provisioner's own HTTP
    client: the sim node's pods only pretend to run a kernel, so no message is exchanged."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    from jupyter_mig.kernels.specs import write_specs

    kube, _, _, kernels, restarter = service_parts(cluster, namespace, node)
    write_specs(["10gb"], tmp_path, "GPU {size}")
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "share/jupyter/kernels")])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")

    def limits(kernel_id: str) -> tuple[str, Any]:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{k.kernel_object_name(kernel_id)}")
        if pod is None:
            return "", None
        return pod["metadata"]["uid"], pod["spec"]["containers"][0]["resources"]["limits"]

    async def scenario(url: str) -> None:
        monkeypatch.setenv("JUPYTER_MIG_SERVICE_URL", url)
        managers = []
        for _ in range(2):
            km = AsyncKernelManager(
                kernel_name="gpu-10gb",
                kernel_spec_manager=specs,
                connection_file=str(tmp_path / f"kernel-{len(managers)}.json"),
            )
            await km.start_kernel(kernel_id=str(uuid.uuid4()))
            managers.append(km)
        a, b = managers
        assert a.ip.startswith("127.") and a.ip != b.ip
        uid_b, limits_b = limits(b.kernel_id)
        assert limits_b == {"nvidia.com/mig-1g.10gb": "1"}
        before = (a.ip, a.shell_port)
        await a.restart_kernel(now=True, gpu_slice="20gb")
        assert a.ip != before[0] and a.shell_port != before[1], "a new pod, new ports"
        assert limits(a.kernel_id)[1] == {"nvidia.com/mig-1g.20gb": "1"}
        assert limits(b.kernel_id) == (uid_b, limits_b), "the other kernel is untouched"
        for km in managers:
            await km.shutdown_kernel(now=True)
            assert limits(km.kernel_id) == ("", None)

    try:
        asyncio.run(serving(kernels, restarter, scenario))
    finally:
        kube.api_client.close()

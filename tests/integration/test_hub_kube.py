"""End to end on the real local control plane: JupyterHub + KubeSpawner + controller + sim node.

A JupyterHub with KubeSpawner and ``configure_hub`` spawns single-user pods in the devcluster.
A simulated A100-80GB node (with the real agent) runs them as local processes
(``jupyter-mig.io/sim-exec``), the real controller carves the slice each pod asks for, and the
server extension in the pod answers for its slice.  Then the server asks for another size and
the hub's restart service replaces the pod, with the stages read from the pod's real Events.
The jupyter-mig part of the hub's configuration is the documented Zero to JupyterHub values
(support.hub_values), the PriorityClass they ask for included, on both JupyterHub lines.
"""

from __future__ import annotations

import contextlib
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

pytest.importorskip("kubespawner")
kubernetes = pytest.importorskip("kubernetes")

from support.hub import ADMIN_TOKEN, HUB_LINES, call, hub_files, hub_python, write_hub_config  # noqa: E402
from support.hub_values import PRIORITY_CLASS, default_priority, load_values  # noqa: E402
from support.net import free_port  # noqa: E402
from support.processes import stop_process  # noqa: E402
from support.waiting import wait_for  # noqa: E402

from jupyter_mig.api import constants as c  # noqa: E402
from jupyter_mig.devcluster import DevCluster  # noqa: E402
from jupyter_mig.hub.service import STAGES  # noqa: E402
from jupyter_mig.kernels.contract import kernel_object_name  # noqa: E402
from jupyter_mig.kernels.specs import write_specs  # noqa: E402

pytestmark = pytest.mark.cluster

WAIT_S = 180.0

SPAWNER_CONFIG = """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = {namespace!r}
c.KubeSpawner.image = "none"
# The sim node runs a container's command as a local process on the pod's own 127.x address.
c.KubeSpawner.extra_container_config = {{"command": [sys.executable]}}
c.KubeSpawner.cmd = ["-m", "jupyterhub.singleuser"]
# The user's files live outside the pod (as on a persistent volume), so they outlive a restart.
c.KubeSpawner.args = [
    "--allow-root", "--ServerApp.ip=$(JUPYTER_MIG_POD_IP)", "--ServerApp.root_dir={tmp}/home"
]
c.KubeSpawner.extra_annotations = {{"jupyter-mig.io/sim-exec": "true"}}
c.KubeSpawner.node_selector = {{"jupyter-mig.io/test": {suffix!r}}}
c.KubeSpawner.environment = {{
    "HOME": "{tmp}/home",
    "JUPYTER_CONFIG_DIR": "{tmp}/jupyter-config",
    "JUPYTER_RUNTIME_DIR": "{tmp}/home/runtime",
    "JUPYTER_PATH": "{tmp}/jupyter-data",
}}
# Per-kernel slices: kernel pods on the sim node, which only pretends to run them.
c.KernelPodTemplate.namespace = {namespace!r}
c.KernelPodTemplate.image = "none"
c.KernelPodTemplate.node_selector = {{"jupyter-mig.io/test": {suffix!r}}}
c.KernelPodTemplate.security_context = {{}}
c.KubeSpawner.start_timeout = 150
c.KubeSpawner.http_timeout = 60
c.KubeSpawner.delete_grace_period = 1
"""


class Stack:
    """The processes of one test: sim node, agent, controller, hub."""

    def __init__(self, cluster: DevCluster, namespace: str, logs: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.logs = logs
        self.suffix = uuid.uuid4().hex[:6]
        self.node = f"hub-sim-{self.suffix}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.priority: int | None = None
        self.line = ""
        self.service_url = ""
        self.api = kubernetes.client.CoreV1Api(cluster.api_client())

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=self.logs,
            )
        self.processes.append(process)
        return process

    def jupyter_mig(self, name: str, *args: str) -> Any:
        return self.spawn(name, [sys.executable, "-m", "jupyter_mig.cli", *args])

    def pods(self) -> list[Any]:
        return list(self.api.list_namespaced_pod(self.namespace).items)

    def mignode(self) -> dict[str, Any]:
        custom = kubernetes.client.CustomObjectsApi(self.api.api_client)
        node: dict[str, Any] = custom.get_cluster_custom_object(
            c.GROUP, c.VERSION, c.PLURAL, self.node
        )
        return node

    def close(self) -> None:
        # The hub (started last) stops its servers first: KubeSpawner deletes their pods, and
        # the sim node must still be there to end their processes.
        for process in reversed(self.processes):
            stop_process(process, timeout=30)
            if process is self.processes[-1]:
                with contextlib.suppress(TimeoutError):
                    wait_for("the pods to go", lambda: not self.pods(), 60)
        with contextlib.suppress(kubernetes.client.ApiException):
            self.api.delete_node(self.node)
        self.api.api_client.close()


def ensure_priority_class(cluster: DevCluster, value: int) -> None:
    """The PriorityClass the chart creates for user pods when the values enable pod priority."""
    with cluster.api_client() as api:
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": PRIORITY_CLASS},
            "value": value,
            "globalDefault": False,
        }
        try:
            kubernetes.client.SchedulingV1Api(api).create_priority_class(body)
        except kubernetes.client.ApiException as err:
            if err.status != 409:
                raise


@pytest.fixture(params=sorted(HUB_LINES))
def stack(
    request: pytest.FixtureRequest,
    cluster: DevCluster,
    crds: None,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    python = hub_python(request.param)
    s = Stack(cluster, namespace, tmp_path)
    s.line = request.param
    kubeconfig = str(cluster.kubeconfig)
    state = Path(tempfile.mkdtemp(prefix="jm-hub-"))  # short: unix socket path limit
    try:
        s.jupyter_mig(
            "sim-node",
            "sim-node", "--kubeconfig", kubeconfig, "--name", s.node, "--gpu", "A100-80GB",
            "--gpus", "1", "--state", str(state), "--label", c.OPT_IN_SELECTOR,
            "--label", f"jupyter-mig.io/test={s.suffix}", "--refresh-delay", "0.2",
        )  # fmt: skip
        wait_for("the sim node", lambda: (state / "pod-resources.sock").exists(), 60)
        s.jupyter_mig(
            "agent",
            "agent", "--kubeconfig", kubeconfig, "--node", s.node, "--nvml", f"sim:{state}",
            "--resync", "2", "--max-backoff", "2",
        )  # fmt: skip
        controller_port = free_port()
        s.jupyter_mig(
            "controller",
            "controller", "--kubeconfig", kubeconfig, "--listen", f"127.0.0.1:{controller_port}",
            "--batch-idle", "300ms", "--batch-max", "2s", "--interactive-namespaces", namespace,
        )  # fmt: skip
        wait_for(
            "the controller to see the GPU",
            lambda: any(
                m["model"] == "A100-80GB"
                for m in (
                    call(f"http://127.0.0.1:{controller_port}/api/v1/capacity", None)[1] or {}
                ).get("models", [])
            ),
            90,
        )
        (tmp_path / "home").mkdir()
        files = hub_files(tmp_path)
        values = load_values(
            controllerUrl=f"http://127.0.0.1:{controller_port}",
            serviceUrl=f"http://127.0.0.1:{files.service_port}",
            serverServiceUrl="",
            listen=f"127.0.0.1:{files.service_port}",
            restartTimeout=150,
            capacityTtl=0,
        )
        priority = default_priority(values)
        if priority is not None:
            ensure_priority_class(cluster, priority)
        s.priority = priority
        write_hub_config(files, SPAWNER_CONFIG, values, namespace=namespace, suffix=s.suffix)
        with files.config.open("a") as config:  # the hub service creates kernel pods
            config.write(
                f'\nc.JupyterHub.services[-1]["environment"]["KUBECONFIG"] = {kubeconfig!r}\n'
            )
        write_specs(["10gb"], tmp_path / "prefix", "GPU {size}")
        shutil.copytree(tmp_path / "prefix/share/jupyter", tmp_path / "jupyter-data")
        s.service_url = f"http://127.0.0.1:{files.service_port}/services/jupyter-mig/"
        s.hub_api = files.api
        s.spawn(
            "hub",
            [str(python), "-m", "jupyterhub", "-f", str(files.config)],
            env={"KUBECONFIG": kubeconfig},
        )
        wait_for("the hub", lambda: call(s.hub_api + "/", None)[0] == 200, 90)
        service = f"http://127.0.0.1:{files.service_port}/services/jupyter-mig/api/health"
        wait_for("the restart service", lambda: call(service, None)[0] == 200, 60)
        yield s
    finally:
        s.close()
        shutil.rmtree(state, ignore_errors=True)


def admin(s: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return call(f"{s.hub_api}/{path}", ADMIN_TOKEN, method, body)


def ready(s: Stack, user: str) -> bool:
    status, model = admin(s, "GET", f"users/{user}")
    server = (model or {}).get("servers", {}).get("") if status == 200 else None
    return bool(server and server.get("ready"))


def running_pod(s: Stack, resource: str) -> Any:
    """The single-user pod holding ``resource``, once it runs."""
    for pod in s.pods():
        limits = pod.spec.containers[0].resources.limits or {}
        if (
            resource in limits
            and pod.status.phase == "Running"
            and not pod.metadata.deletion_timestamp
        ):
            return pod
    return None


def test_a_kube_spawned_server_gets_its_slice_and_changes_it(stack: Stack) -> None:
    s = stack
    assert admin(s, "POST", "users/alice")[0] == 201
    options = {"gpu_slice": "10gb"}
    # The start request's body: user_options itself before JupyterHub 6, wrapped since.
    body = options if s.line == "hub5" else {"user_options": options}
    status, data = admin(s, "POST", "users/alice/server", body)
    assert status in (201, 202), data
    wait_for("alice's server on a 1g.10gb slice", lambda: ready(s, "alice"), WAIT_S)

    pod = running_pod(s, "nvidia.com/mig-1g.10gb")
    assert pod is not None
    assert pod.metadata.annotations[c.INTERACTIVE_ANNOTATION] == "true"
    assert pod.metadata.labels["component"] == "singleuser-server"
    assert pod.spec.node_name == s.node
    # The documented pod priority: above batch pods, so the scheduler agrees with the planner.
    assert s.priority is not None and s.priority > 0
    assert pod.spec.priority_class_name == PRIORITY_CLASS and pod.spec.priority == s.priority
    term = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    [expression] = term.node_selector_terms[0].match_expressions
    assert expression.key == c.GPU_PRODUCT_LABEL and "NVIDIA-A100-SXM4-80GB" in expression.values
    reasons = [e.reason for e in s.api.list_namespaced_event(s.namespace).items
               if e.involved_object.name == pod.metadata.name]  # fmt: skip
    assert "MigRepartitioning" in reasons

    status, routes = admin(s, "GET", "proxy")
    server = routes["/user/alice/"]["target"].rstrip("/") + "/user/alice/"
    status, token = admin(s, "POST", "users/alice/tokens", {"note": "test"})
    alice = token["token"]
    status, doc = call(server + "jupyter-mig/api/slice", alice)
    assert status == 200, doc
    assert doc["slice"]["profile"] == "1g.10gb"
    assert doc["devices"] and all(d.startswith("MIG-") for d in doc["devices"])
    status, capacity = call(server + "jupyter-mig/api/capacity", alice)
    assert status == 200 and any(r["size"] == "20gb" for r in capacity["sizes"])

    notebook = {
        "type": "notebook",
        "format": "json",
        "content": {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": None,
                 "outputs": [], "source": "%gpu_slice 20gb --yes --saved"},
            ],
        },
    }  # fmt: skip
    status, saved = call(server + "api/contents/work.ipynb", alice, "PUT", notebook)
    assert status in (200, 201), saved
    old_uid = pod.metadata.uid

    status, doc = call(
        server + "jupyter-mig/api/slice", alice, "POST", {"size": "20gb", "saved": True}
    )
    assert status == 202, doc
    wait_for(
        "the server on a 1g.20gb slice",
        lambda: running_pod(s, "nvidia.com/mig-1g.20gb") is not None and ready(s, "alice"),
        WAIT_S,
    )
    status, routes = admin(s, "GET", "proxy")
    server = routes["/user/alice/"]["target"].rstrip("/") + "/user/alice/"
    status, token = admin(s, "POST", "users/alice/tokens", {"note": "test"})
    alice = token["token"]
    status, doc = call(server + "jupyter-mig/api/slice", alice)
    assert status == 200 and doc["slice"]["profile"] == "1g.20gb", doc
    status, reopened = call(server + "api/contents/work.ipynb", alice)
    assert status == 200, reopened
    assert reopened["content"]["cells"][0]["source"] == "%gpu_slice 20gb --yes --saved"
    # The old pod is gone (the new one has the same name, not the same uid) and no 1g.10gb
    # instance is held any more.
    seen: dict[str, Any] = {}

    def released() -> bool:
        seen["uids"] = sorted(p.metadata.uid for p in s.pods())
        seen["holders"] = [
            (i["profile"], i.get("pod"))
            for g in s.mignode().get("status", {}).get("gpus", [])
            for i in g.get("instances", [])
            if i.get("pod")
        ]
        return old_uid not in seen["uids"] and all(p != "1g.10gb" for p, _ in seen["holders"])

    try:
        wait_for("the old slice to be released", released, WAIT_S)
    except TimeoutError as err:
        raise AssertionError(f"{err}; seen {seen}") from None
    status, progress = call(server + "jupyter-mig/api/slice/progress", alice)
    assert status == 200, progress
    assert progress["state"] == "ready"
    stages = [x["stage"] for x in progress["stages"]]
    assert stages[0] == "queued" and stages[-1] == "ready"
    # The controller's MigRepartitioning Event comes long before the pod can run; the
    # scheduler's Scheduled Event may reach KubeSpawner only after the server is ready (the sim
    # node starts it at once), and a stage whose Event comes late is not shown.
    assert "repartitioning" in stages, progress
    assert stages == sorted(stages, key=STAGES.index)


def test_a_server_without_a_gpu_runs_a_gpu_kernel_in_its_own_pod(stack: Stack) -> None:
    """Per-kernel slices with the real hub: the server (no GPU) starts a "GPU 10gb" kernel; its
    provisioner asks the hub service with the server's own token; another user's token gets
    403; shutting the kernel down deletes its pod."""
    s = stack
    for user in ("alice", "bob"):
        assert admin(s, "POST", f"users/{user}")[0] == 201
    options = {"gpu_slice": "none"}
    body = options if s.line == "hub5" else {"user_options": options}
    status, data = admin(s, "POST", "users/alice/server", body)
    assert status in (201, 202), data
    wait_for("alice's server", lambda: ready(s, "alice"), WAIT_S)
    status, routes = admin(s, "GET", "proxy")
    server = routes["/user/alice/"]["target"].rstrip("/") + "/user/alice/"
    alice = admin(s, "POST", "users/alice/tokens", {"note": "test"})[1]["token"]
    bob = admin(s, "POST", "users/bob/tokens", {"note": "test"})[1]["token"]
    assert not any(
        k.startswith(c.MIG_RESOURCE_PREFIX)
        for p in s.pods()
        for k in (p.spec.containers[0].resources.limits or {})
    ), "the server holds no GPU"

    status, kernel = call(server + "api/kernels", alice, "POST", {"name": "gpu-10gb"})
    assert status == 201, kernel
    name = kernel_object_name(kernel["id"])
    pod = s.api.read_namespaced_pod(name, s.namespace)
    assert pod.status.phase == "Running"
    assert pod.spec.containers[0].resources.limits == {"nvidia.com/mig-1g.10gb": "1"}
    assert pod.spec.node_name == s.node

    status, doc = call(s.service_url + f"api/kernels/{kernel['id']}?server_name=", bob)
    assert status == 403 and "belongs to another server" in doc["message"], doc
    status, doc = call(s.service_url + f"api/kernels/{kernel['id']}?server_name=", bob, "DELETE")
    assert status == 403, doc
    assert s.api.read_namespaced_pod(name, s.namespace).metadata.deletion_timestamp is None

    status, _ = call(server + f"api/kernels/{kernel['id']}", alice, "DELETE")
    assert status == 204

    def gone() -> bool:
        return all(p.metadata.name != name for p in s.pods())

    wait_for("the kernel pod to go", gone, WAIT_S)
    with pytest.raises(kubernetes.client.ApiException):
        s.api.read_namespaced_secret(name, s.namespace)

    # A server whose token was revoked cannot create more kernel pods.
    status, tokens = admin(s, "GET", "users/alice/tokens")
    revoked = [t["id"] for t in tokens["api_tokens"] if (t.get("note") or "").startswith("Server")]
    assert revoked, tokens
    for token_id in revoked:
        assert admin(s, "DELETE", f"users/alice/tokens/{token_id}")[0] == 204
    status, doc = call(server + "api/kernels", alice, "POST", {"name": "gpu-10gb"})
    assert status == 502 and "the hub does not know this token" in doc["message"], doc
    assert not [p for p in s.pods() if p.metadata.name.startswith("kernel-")]

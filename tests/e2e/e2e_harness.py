"""The whole system as separate processes on the real devcluster, for end-to-end tests and the
end-to-end benchmark.

What runs, each as its own process:

- ``jupyter-mig sim-node`` per node, with a **kubelet's identity** (client certificate
  ``system:node:NAME`` in ``system:nodes``, so the Node authorizer and NodeRestriction apply);
- ``jupyter-mig agent`` per node, with a token of the chart's agent ServiceAccount **bound to a
  pod on that node** (the API server puts the node name into it, which the chart's admission
  policy checks);
- ``jupyter-mig controller`` (one or more replicas), with a token of the chart's controller
  ServiceAccount.

The chart's RBAC and admission policies are applied for real (:func:`install_release`); the
command lines of the controller and the agent are the chart's own container arguments, with only
what is local to a process on this machine replaced (listen address, kubeconfig, NVML backend,
pod-resources socket).

:class:`System` also watches the invariants while a test runs (:class:`Monitor`): an in-use MIG
device never disappears while its pod holds it, no pod fails, every layout written or reported is
valid.  Every wait has a timeout and fails with a dump of the cluster state and process logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from chart_render import Chart
from support.kube import events_about
from support.net import free_port, http_get, local_url
from support.processes import STOP_S, stop_process
from support.waiting import wait_for

from jupyter_mig.api import constants as c
from jupyter_mig.api.crd import crd_manifests
from jupyter_mig.devcluster import DevCluster, port_free
from jupyter_mig.devcluster.images import BUSYBOX_IMAGE
from jupyter_mig.devcluster.node import GpuNode
from jupyter_mig.kube.client import Kube, KubeError
from jupyter_mig.mig.contract import parse_input
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import plan_round
from jupyter_mig.nvml.simgpu import read_devices
from jupyter_mig.podresources.client import assignments

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CHART = Chart(ROOT / "controller" / "chart")
MIGNODES = f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}"
#: Generous: the machine has 2 shared cores and a Python process needs seconds to start.
WAIT_S = 120.0
PR_SET_PDEATHSIG = 1
FIELD_MANAGER = "jupyter-mig-e2e"
#: builtin or nvidia: which device plugin sim nodes run unless a test names one (docs/e2e.md).
DEVICE_PLUGIN_ENV = "JUPYTER_MIG_E2E_DEVICE_PLUGIN"
E2E_LABEL = "jupyter-mig.io/e2e"

#: Chart values for the tests: leases are short so that a failover takes seconds.
#: Every test creates its pods in its own namespace, so the interactive mark is trusted everywhere.
#: No spare slices: the tests count the slices their pods ask for (spares: test_controller.py).
E2E_VALUES: dict[str, Any] = {
    "agent": {"devicePlugin": {"readyTimeout": 30}},
    "controller": {
        "spares": 0,
        "leaderElection": {"leaseDuration": 4, "renewDeadline": 3},
        "interactiveNamespaces": ["*"],
    },
}

#: Where each kind the chart renders lives in the API (workloads are not applied: the
#: processes below stand in for their pods).
_RESOURCES = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ValidatingAdmissionPolicy": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicies",
        False,
    ),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicybindings",
        False,
    ),
}
_WORKLOADS = ("Deployment", "DaemonSet", "Service")


class E2EFailure(AssertionError):
    """A wait that timed out or an invariant that broke; the message carries the dump."""


# --------------------------------------------------------------------------------------------
# The chart's RBAC in the cluster
# --------------------------------------------------------------------------------------------


@dataclass
class Release:
    """A rendered and applied chart release (RBAC and admission policies; no workloads)."""

    name: str
    namespace: str
    plugin_namespace: str
    manifests: list[dict[str, Any]]

    @property
    def controller_account(self) -> str:
        return f"{self.name}-controller"

    @property
    def agent_account(self) -> str:
        return f"{self.name}-agent"

    def container_args(self, kind: str) -> list[str]:
        """The first container's ``args`` of the chart's ``kind`` workload."""
        workload = next(m for m in self.manifests if m["kind"] == kind)
        return list(workload["spec"]["template"]["spec"]["containers"][0]["args"])

    def lease_name(self) -> str:
        return str(_flag(self.container_args("Deployment"), "--lease-name"))


def _path(manifest: Mapping[str, Any]) -> str:
    prefix, plural, namespaced = _RESOURCES[manifest["kind"]]
    meta = manifest["metadata"]
    where = f"{prefix}/namespaces/{meta['namespace']}" if namespaced else prefix
    return f"{where}/{plural}/{meta['name']}"


def _crd_established(kube: Kube) -> bool:
    crd = kube.request(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c.CRD_NAME}"
    )
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(x["type"] == "Established" and x["status"] == "True" for x in conditions)


def install_release(cluster: DevCluster, values: Mapping[str, Any] = E2E_VALUES) -> Release:
    """The CRD (kept installed, other tests share it) and a fresh release's RBAC and admission
    policies, applied server-side as the admin."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace, plugin_namespace = f"e2e-{suffix}", f"e2e-{suffix}", f"e2e-dp-{suffix}"
    merged = json.loads(json.dumps(values))
    merged.setdefault("agent", {}).setdefault("devicePlugin", {})["namespace"] = plugin_namespace
    release = Release(name, namespace, plugin_namespace, CHART.render(merged, name, namespace))
    with cluster.api_client() as api:
        kube = Kube(api, FIELD_MANAGER)
        for crd in crd_manifests():
            with contextlib.suppress(KubeError):  # 409: already there
                kube.request(
                    "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd
                )
        wait_for("the MigNode CRD to be established", lambda: _crd_established(kube), WAIT_S)
        for ns in (namespace, plugin_namespace):
            cluster.create_namespace(ns)
        for manifest in release.manifests:
            if manifest["kind"] in _WORKLOADS:
                continue
            kube.request(
                "PATCH",
                _path(manifest),
                body=json.dumps(manifest),
                query={"force": "true"},
                content_type="application/apply-patch+yaml",
            )
        for manifest in release.manifests:
            if manifest["kind"] == "ValidatingAdmissionPolicy":
                path = _path(manifest)

                def checked(path: str = path) -> bool:
                    status = kube.request("GET", path).get("status") or {}
                    return bool(status.get("observedGeneration"))

                wait_for(f"type checking of {manifest['metadata']['name']}", checked, WAIT_S)
    return release


def uninstall_release(cluster: DevCluster, release: Release) -> None:
    with cluster.api_client() as api:
        kube = Kube(api, FIELD_MANAGER)
        for manifest in release.manifests:
            if manifest["kind"] in _WORKLOADS or manifest["kind"] not in _RESOURCES:
                continue
            if manifest["metadata"].get("namespace") in (
                release.namespace,
                release.plugin_namespace,
            ):
                continue  # goes with the namespace
            with contextlib.suppress(KubeError):
                kube.request("DELETE", _path(manifest))
        for ns in (release.namespace, release.plugin_namespace):
            with contextlib.suppress(KubeError):
                kube.request(
                    "DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": "0"}
                )
            with contextlib.suppress(KubeError):
                kube.request("DELETE", f"/api/v1/namespaces/{ns}")


def _flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def with_flags(args: list[str], overrides: Mapping[str, str]) -> list[str]:
    """``args`` with each ``--flag=value`` in ``overrides`` replaced (or added)."""
    out = [a for a in args if a.split("=", 1)[0] not in overrides]
    return out + [f"{flag}={value}" for flag, value in overrides.items()]


def expand_env(args: list[str], env: Mapping[str, str]) -> list[str]:
    """``$(VAR)`` references, expanded as the kubelet expands container arguments."""
    out = []
    for arg in args:
        for key, value in env.items():
            arg = arg.replace(f"$({key})", value)
        out.append(arg)
    return out


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Proc:
    role: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    stopped: bool = False  # by the test, on purpose

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, how: int = signal.SIGTERM) -> None:
        self.stopped = True
        stop_process(self.popen, how, STOP_S)


def stop_all(procs: Iterable[Proc]) -> None:
    """SIGTERM to all at once, then SIGKILL to whatever still runs after ``STOP_S``."""
    live = [p for p in procs if p.alive()]
    for proc in live:
        proc.popen.terminate()
    deadline = time.monotonic() + STOP_S
    for proc in live:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(STOP_S)


#: Resolved here, so the child does little between fork and exec; None where there is no
#: ``prctl`` (not Linux).
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL, so a killed test run
    leaves no sim node, agent or controller behind."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def spawn(role: str, args: list[str], logs: Path) -> Proc:
    """``jupyter-mig ARGS`` in a session of its own, output appended to ``logs/ROLE.log``."""
    argv = [sys.executable, "-m", "jupyter_mig.cli", *args]
    log = logs / f"{role}.log"
    with open(log, "ab") as out:
        out.write(f"$ jupyter-mig {' '.join(args)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Proc(role, argv, log, popen)


def restart_apiserver(cluster: DevCluster) -> subprocess.Popen[bytes]:
    """Kill kube-apiserver (SIGKILL: a crash; a SIGTERM'd one stops listening at once but keeps
    serving its open watches for a minute) and start it again with the same command line, port,
    certificates and etcd.  Clients keep their URLs and tokens; their open watches break.  The
    new pid goes into the devcluster's state file, so ``devcluster env`` and later runs still
    see a healthy cluster."""
    pid = cluster.pids["kube-apiserver"]
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    argv = [part.decode() for part in raw.split(b"\0") if part]
    workdir = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGKILL)
    port = cluster.ports["kube-apiserver"]
    # The pid turns zombie before its last thread has closed the listener: wait for the port.
    wait_for(
        "the old kube-apiserver to exit", lambda: not _running(pid) and port_free(port), STOP_S, 0.1
    )
    with open(cluster.logs / "kube-apiserver.log", "ab") as out:
        out.write(b"$ (restarted by the e2e harness)\n")
        out.flush()
        popen = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    cluster.pids["kube-apiserver"] = popen.pid

    def ready() -> bool:
        if popen.poll() is not None:
            raise E2EFailure(
                f"kube-apiserver did not restart: see {cluster.logs / 'kube-apiserver.log'}"
            )
        return cluster.readyz(timeout=2.0)

    wait_for("the restarted kube-apiserver to be ready", ready, WAIT_S, 0.2)
    (cluster.dir / "state.json").write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    return popen


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


# --------------------------------------------------------------------------------------------
# Nodes, controllers and pods
# --------------------------------------------------------------------------------------------


@dataclass
class SimNode:
    short: str  # the name's own part, in process roles
    name: str
    model: str
    gpus: int
    state: Path
    labels: dict[str, str]
    latency: dict[str, float]
    agent_kubeconfig: Path | None = None
    agent_port: int = 0

    def allocations(self) -> dict[str, dict[str, Any]]:
        """The sim kubelet's device assignments: pod uid → record (``devices``: container,
        resource, MIG UUID)."""
        try:
            data = json.loads((self.state / "allocations.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return dict(data.get("pods", {}))

    def nvml_devices(self) -> dict[str, tuple[int, Instance]]:
        """MIG UUID → (GPU index, instance) as the simulated NVML has them now."""
        gpus, _busy = read_devices(self.state)
        return {
            i["mig_uuid"]: (g["index"], Instance(i["start"], i["profile_id"]))
            for g in gpus
            for i in g["instances"]
            if i["mig_uuid"]
        }


@dataclass
class RealNode(SimNode):
    """A real GPU node of the devcluster (kubelet, containerd, NVIDIA's plugin on simulated
    GPUs): the device assignments are the kubelet's, read from its pod-resources API."""

    pod_resources_socket: Path = Path()

    def allocations(self) -> dict[str, dict[str, Any]]:
        """``namespace/pod`` → record (``devices``: container, resource, MIG UUID)."""
        records: dict[str, dict[str, Any]] = {}
        for held in assignments(str(self.pod_resources_socket)):
            record = records.setdefault(
                held.pod_key, {"namespace": held.namespace, "name": held.pod, "devices": []}
            )
            record["devices"].append([held.container, held.resource, held.device_id])
        return records


@dataclass
class Controller:
    identity: str
    port: int
    proc: Proc


class Monitor(threading.Thread):
    """Checks the invariants twice a second while a test runs; collects violations.

    - An in-use MIG device never disappears: a device the sim kubelet assigned to a pod (read
      before and after NVML, so a release in between is not mistaken for a loss) must exist in
      the simulated NVML.
    - Every ``MigNode`` spec (the controller's) and status (the agent's) layout is valid.
    - No pod of the test fails (``UnexpectedAdmissionError`` would mean a slice vanished
      between the scheduler's decision and the kubelet's admission).
    """

    def __init__(self, system: System) -> None:
        super().__init__(name="e2e-monitor", daemon=True)
        self.system = system
        self.violations: list[str] = []
        self.checks = 0  # completed rounds: a test can tell the monitor really looked
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                self.check()
            except Exception as err:  # e.g. the API server restarting: a test step, not a failure
                self.system.note(f"monitor: {type(err).__name__}: {err}")

    def check(self) -> None:
        for node in list(self.system.nodes.values()):
            if not (node.state / "nvml.state").exists():
                continue  # the sim node is still starting
            before = node.allocations()
            present = node.nvml_devices()
            after = node.allocations()
            for uid, record in before.items():
                if uid not in after:
                    continue
                for _container, _resource, device in record.get("devices", []):
                    holder = f"{record['namespace']}/{record['name']}"
                    still = [_container, _resource, device] in after[uid].get("devices", [])
                    if device not in present and still:
                        self._violate(f"{node.name}: {device} destroyed while {holder} holds it")
        for obj in self.system.mignodes():
            name = obj["metadata"]["name"]
            for problem in layout_problems(obj):
                self._violate(f"MigNode {name}: {problem}")
        for pod in self.system.pods():
            status = pod.get("status") or {}
            if status.get("phase") == "Failed":
                meta = pod["metadata"]
                self._violate(
                    f"pod {meta['namespace']}/{meta['name']} failed: {status.get('reason')} "
                    f"{status.get('message', '')}"
                )
        self.checks += 1

    def _violate(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)


def layout_problems(obj: Mapping[str, Any]) -> list[str]:
    """Invalid layouts in a MigNode's spec and status, judged by the pure layout rules."""
    problems = []
    status_gpus = {g.get("index"): g for g in (obj.get("status") or {}).get("gpus") or []}
    for where, gpus in (
        ("spec", (obj.get("spec") or {}).get("gpus") or []),
        ("status", list(status_gpus.values())),
    ):
        for gpu in gpus:
            reported = status_gpus.get(gpu.get("index")) or {}
            model_name = reported.get("model")
            if not model_name:
                continue
            model = MODELS.get(model_name)
            layout = [Instance(i["start"], i["profileId"]) for i in gpu.get("instances") or []]
            errors = layout_errors(model, layout)
            if errors:
                problems.append(f"{where} GPU {gpu.get('index')}: {errors[0]}")
    return problems


def mig_limits(pod: Mapping[str, Any]) -> dict[str, int]:
    """``nvidia.com/mig-*`` limits of all containers, by profile resource name."""
    wanted: dict[str, int] = {}
    for container in pod["spec"].get("containers") or []:
        for resource, value in ((container.get("resources") or {}).get("limits") or {}).items():
            if resource.startswith(c.MIG_RESOURCE_PREFIX):
                profile = resource.removeprefix(c.MIG_RESOURCE_PREFIX)
                wanted[profile] = wanted.get(profile, 0) + int(value)
    return wanted


class System:
    """Nodes, agents and controllers of one test, in ``namespace``; :meth:`close` removes all."""

    def __init__(
        self,
        cluster: DevCluster,
        release: Release,
        namespace: str,
        workdir: Path,
        *,
        refresh_delay: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.release = release
        self.namespace = namespace
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.refresh_delay = refresh_delay
        self.api_client = cluster.api_client()
        self.kube = Kube(self.api_client, FIELD_MANAGER)
        self.suffix = uuid.uuid4().hex[:6]
        # Pods of this test select this label, so nodes of other tests never serve them.
        self.label = {E2E_LABEL: self.suffix}
        self.procs: dict[str, Proc] = {}  # by role: the latest process of each
        self.started: list[Proc] = []  # every process, for the clean-up
        self.nodes: dict[str, SimNode] = {}
        self.notes: list[str] = []
        self.monitor = Monitor(self)
        self.monitor.start()

    # -- bookkeeping --------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')} {message}")

    def close(self) -> None:
        self.monitor.stop_event.set()
        self.monitor.join(5)
        with contextlib.suppress(KubeError):
            self.kube.request(
                "DELETE",
                f"/api/v1/namespaces/{self.namespace}/pods",
                query={"gracePeriodSeconds": "0"},
            )
        stop_all(self.started)
        for node in self.nodes.values():
            paths = [
                f"/api/v1/namespaces/{self.release.namespace}/pods/{self._agent_pod(node.name)}",
                f"{MIGNODES}/{node.name}",
            ]
            if not isinstance(node, RealNode):  # a real node's kubelet owns its Node and GPUs
                shutil.rmtree(node.state, ignore_errors=True)
                paths.append(f"/api/v1/nodes/{node.name}")
            for path in paths:
                with contextlib.suppress(KubeError):
                    self.kube.request("DELETE", path, query={"gracePeriodSeconds": "0"})
        self.api_client.close()

    def check(self) -> None:
        """Fail at once on a broken invariant or a process that died by itself."""
        if self.monitor.violations:
            raise E2EFailure(
                "invariant broken:\n  " + "\n  ".join(self.monitor.violations) + self.dump()
            )
        died = [p.role for p in self.procs.values() if not p.stopped and not p.alive()]
        if died:
            raise E2EFailure(f"exited unasked: {', '.join(died)}{self.dump()}")

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
        """Poll ``probe`` (checking the invariants too); on timeout fail with a full dump."""

        def checked() -> T | None:
            self.check()
            return probe()

        try:
            result = wait_for(what, checked, timeout)
        except TimeoutError as err:
            raise E2EFailure(f"{err}{self.dump()}") from None
        assert result is not None  # wait_for returns only a truthy result
        return result

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, role: str, args: list[str]) -> Proc:
        proc = spawn(role, args, self.logs)
        self.procs[role] = proc
        self.started.append(proc)
        return proc

    def add_node(
        self,
        short: str,
        model: str,
        *,
        gpus: int = 1,
        labels: Mapping[str, str] | None = None,
        latency: Mapping[str, float] | None = None,
        refresh_delay: float | None = None,
        device_plugin: str | None = None,
    ) -> SimNode:
        """A sim node (kubelet identity) and its agent (the chart's agent account, token bound
        to a pod on the node); returns once both run."""
        name = f"e2e-{self.suffix}-{short}"
        state = Path(tempfile.mkdtemp(prefix="jm-e2e-"))  # short: the socket path limit
        node = SimNode(
            short, name, model, gpus, state, {**self.label, **(labels or {})}, dict(latency or {})
        )
        self.nodes[name] = node
        kubelet = self.cluster.kubeconfig_for_user(f"system:node:{name}", ["system:nodes"])
        args = [
            "sim-node", "--kubeconfig", str(kubelet), "--name", name, "--gpu", model,
            "--gpus", str(gpus), "--state", str(state), "--label", c.OPT_IN_SELECTOR,
            "--refresh-delay", str(self.refresh_delay if refresh_delay is None else refresh_delay),
            "--device-plugin", device_plugin or os.environ.get(DEVICE_PLUGIN_ENV, "builtin"),
        ]  # fmt: skip
        for key, value in node.labels.items():
            args += ["--label", f"{key}={value}"]
        for operation, seconds in node.latency.items():
            args += ["--nvml-latency", f"{operation}={seconds}"]
        proc = self._spawn(f"sim-node-{short}", args)

        def registered() -> bool:
            if not proc.alive():
                raise E2EFailure(f"sim-node {name} exited:\n{proc.tail()}")
            if not (state / "pod-resources.sock").exists():
                return False
            try:
                self.kube.request("GET", f"/api/v1/nodes/{name}")
            except KubeError as err:
                if err.status == 404:
                    return False
                raise
            return True

        self.wait(f"sim node {name} to register", registered)
        node.agent_kubeconfig = self._agent_kubeconfig(name)
        self.start_agent(node)
        return node

    def add_real_node(self, gpu_node: GpuNode) -> RealNode:
        """A real GPU node of the devcluster, labelled for this test's pods, and its agent (a
        host process with the chart's agent account; its pod on the node is a placeholder)."""
        node = RealNode(
            gpu_node.name, gpu_node.name, gpu_node.model, gpu_node.gpus, gpu_node.gpu_state,
            dict(self.label), {}, pod_resources_socket=gpu_node.pod_resources_socket,
        )  # fmt: skip
        self.nodes[node.name] = node
        self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{node.name}",
            body={"metadata": {"labels": self.label}},
            content_type="application/merge-patch+json",
        )
        placeholder = {
            "name": "agent",
            "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sleep", "86400"],
        }
        node.agent_kubeconfig = self._agent_kubeconfig(node.name, placeholder)
        self.start_agent(node)
        return node

    def _agent_pod(self, node: str) -> str:
        return f"agent-{node}"

    def _agent_kubeconfig(self, node: str, container: Mapping[str, Any] | None = None) -> Path:
        """A token of the chart's agent account bound to a pod on ``node`` (as the DaemonSet's
        projected token is); the node's kubelet runs that pod (``container``)."""
        ns = self.release.namespace
        pod = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            body={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": self._agent_pod(node),
                    "labels": {"app.kubernetes.io/component": "agent"},
                },
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": self.release.agent_account,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [dict(container or {"name": "agent", "image": "jupyter-mig"})],
                },
            },
        )
        token = self._token(
            self.release.agent_account,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        )
        return self.cluster.kubeconfig_for_token(token, self.workdir / f"agent-{node}.kubeconfig")

    def _token(self, account: str, bound: Mapping[str, str] | None = None) -> str:
        spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 3600}
        if bound is not None:
            spec["boundObjectRef"] = dict(bound)
        answer = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.release.namespace}/serviceaccounts/{account}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(answer["status"]["token"])

    def whoami(self, kubeconfig: Path) -> dict[str, Any]:
        """The user a kubeconfig authenticates as (SelfSubjectReview)."""
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        try:
            review = Kube(api, FIELD_MANAGER).request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        finally:
            api.close()
        return dict(review["status"]["userInfo"])

    def start_agent(self, node: SimNode) -> Proc:
        assert node.agent_kubeconfig is not None
        node.agent_port = free_port()
        args = expand_env(self.release.container_args("DaemonSet"), {"NODE_NAME": node.name})
        real = isinstance(node, RealNode)
        args = with_flags(
            args,
            {
                "--nvml": f"sim:{node.state}",
                # A real node: its kubelet's socket, and NVIDIA's plugin restarted by SIGHUP.
                "--pod-resources-socket": str(
                    node.pod_resources_socket if real else node.state / "pod-resources.sock"
                ),
                "--device-plugin-refresh": "signal" if real else "sim",
                "--health-port": str(node.agent_port),
                "--health-host": "127.0.0.1",
                "--kubeconfig": str(node.agent_kubeconfig),
            },
        )
        return self._spawn(f"agent-{node.short}", args)

    def agent(self, node: SimNode) -> Proc:
        return self.procs[f"agent-{node.short}"]

    def start_controller(self, identity: str, flags: Mapping[str, str] | None = None) -> Controller:
        """A controller replica with the chart's arguments (``flags`` replace some) and the
        controller account's token."""
        port = free_port()
        kubeconfig = self.workdir / f"controller-{identity}.kubeconfig"
        if not kubeconfig.exists():
            token = self._token(self.release.controller_account)
            self.cluster.kubeconfig_for_token(token, kubeconfig)
        args = expand_env(
            self.release.container_args("Deployment"),
            {"POD_NAME": identity, "POD_NAMESPACE": self.release.namespace},
        )
        local = {"--listen": f"127.0.0.1:{port}", "--kubeconfig": str(kubeconfig)}
        args = with_flags(args, {**(flags or {}), **local})
        proc = self._spawn(f"controller-{identity}", args)
        controller = Controller(identity, port, proc)

        def ready() -> bool:
            if not proc.alive():
                raise E2EFailure(f"controller {identity} exited:\n{proc.tail()}")
            return http_get(local_url(port, "/readyz"))[0] == 200

        self.wait(f"controller {identity} to be ready", ready)
        return controller

    def kubeconfig_of(self, role: str) -> Path:
        return Path(str(_flag(self.procs[role].argv, "--kubeconfig")))

    def lease_holder(self) -> str:
        path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{self.release.namespace}/leases/"
            f"{self.release.lease_name()}"
        )
        try:
            lease = self.kube.request("GET", path)
        except KubeError as err:
            if err.status == 404:
                return ""
            raise
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    # -- pods ---------------------------------------------------------------------------------

    def pod_body(
        self,
        name: str,
        profile: str,
        *,
        count: int = 1,
        interactive: bool = False,
        priority_class: str | None = None,
        node_selector: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "resources": {"limits": {f"{c.MIG_RESOURCE_PREFIX}{profile}": str(count)}},
                }
            ],
            "nodeSelector": {**self.label, **(node_selector or {})},
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        }
        if priority_class:
            spec["priorityClassName"] = priority_class
        annotations = {c.INTERACTIVE_ANNOTATION: "true"} if interactive else {}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }

    def create_pod(self, name: str, profile: str, **options: Any) -> dict[str, Any]:
        return self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/pods",
            body=self.pod_body(name, profile, **options),
        )

    def delete_pod(self, name: str) -> None:
        self.kube.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}")

    def pods(self) -> list[dict[str, Any]]:
        listed = self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        return list(listed.get("items") or [])

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods/{name}")

    def mignodes(self) -> list[dict[str, Any]]:
        listed = self.kube.request("GET", MIGNODES)
        return [m for m in listed.get("items") or [] if m["metadata"]["name"] in self.nodes]

    def mignode(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.mignodes() if m["metadata"]["name"] == name), None)

    def events(self, pod: str, component: str = c.CONTROLLER_FIELD_MANAGER) -> list[dict[str, Any]]:
        return events_about(self.kube, self.namespace, pod, component)

    def running(self, names: Iterable[str]) -> bool:
        wanted = set(names)
        phases = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in self.pods()}
        return all(phases.get(n) == "Running" for n in wanted)

    def held_devices(self) -> dict[str, tuple[str, str]]:
        """MIG UUID → (node, ``namespace/pod``) for every device the sim kubelets assigned."""
        held = {}
        for node in self.nodes.values():
            for record in node.allocations().values():
                for _container, _resource, device in record.get("devices", []):
                    held[device] = (node.name, f"{record['namespace']}/{record['name']}")
        return held

    def reported_holders(self) -> dict[str, str]:
        """MIG UUID → ``namespace/pod`` as the agents report them in MigNode status."""
        return {
            i["uuid"]: i["pod"]
            for m in self.mignodes()
            for g in (m.get("status") or {}).get("gpus") or []
            for i in g.get("instances") or []
            if i.get("pod") and i.get("uuid")
        }

    # -- convergence --------------------------------------------------------------------------

    def settled(self) -> bool:
        """Nothing left to do: every node applied its spec and reports exactly the devices pods
        hold, every bound pod runs, and the planner — run here on what the agents report —
        could place none of the pending pods."""
        mignodes = self.mignodes()
        if len(mignodes) != len(self.nodes):
            return False
        for obj in mignodes:
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"].get("generation"):
                return False
            if not status.get("gpus") or len((obj.get("spec") or {}).get("gpus") or []) != len(
                status["gpus"]
            ):
                return False
            ready: dict[str, Any] = next(
                (x for x in status.get("conditions") or [] if x["type"] == c.CONDITION_READY), {}
            )
            if ready.get("status") != "True":
                return False
        pods = self.pods()
        live = {f"{self.namespace}/{p['metadata']['name']}" for p in pods}
        for p in pods:
            if p["spec"].get("nodeName") and (p.get("status") or {}).get("phase") != "Running":
                return False
        held = {uuid_: pod for uuid_, (_node, pod) in self.held_devices().items() if pod in live}
        reported = {
            u: p for u, p in self.reported_holders().items() if p.split("/")[0] == self.namespace
        }
        if held != reported:
            return False
        return not self.placeable(mignodes, pods)

    def placeable(self, mignodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[str]:
        """Pending pods the pure planner would place on what the agents report now."""
        pending = [
            p
            for p in pods
            if not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")
        ]
        if not pending:
            return []
        node_labels = {
            n: dict(self.kube.request("GET", f"/api/v1/nodes/{n}")["metadata"].get("labels") or {})
            for n in self.nodes
        }
        document = {
            "nodes": [
                {
                    "name": m["metadata"]["name"],
                    "labels": node_labels[m["metadata"]["name"]],
                    "gpus": [
                        {
                            "index": g["index"],
                            "model": g["model"],
                            "instances": [
                                {
                                    "profile": i["profileId"],
                                    "start": i["start"],
                                    "used": bool(i.get("pod")),
                                }
                                for i in g.get("instances") or []
                            ],
                        }
                        for g in (m.get("status") or {}).get("gpus") or []
                    ],
                }
                for m in mignodes
            ],
            "pending": [
                {
                    "name": p["metadata"]["name"],
                    "requests": mig_limits(p),
                    "nodes": [
                        n
                        for n, labels in node_labels.items()
                        if all(
                            labels.get(k) == v
                            for k, v in (p["spec"].get("nodeSelector") or {}).items()
                        )
                    ],
                    "priority": int(p["spec"].get("priority") or 0),
                }
                for p in pending
            ],
        }
        nodes, demands = parse_input(document)
        return sorted(plan_round(nodes, demands).placements)

    # -- diagnostics --------------------------------------------------------------------------

    def dump(self) -> str:
        """MigNode specs and statuses, pods with conditions and Events, process log tails."""
        out = ["", "=" * 30 + " e2e diagnostic dump " + "=" * 30]
        out.append(f"violations: {self.monitor.violations or 'none'}")
        try:
            for m in self.mignodes():
                meta = m["metadata"]
                out.append(
                    f"--- MigNode {meta['name']} generation {meta.get('generation')} "
                    f"placements {meta.get('annotations', {}).get('jupyter-mig.io/placements')}"
                )
                out.append(f"spec: {json.dumps(m.get('spec'))}")
                status = dict(m.get("status") or {})
                for gpu in status.get("gpus") or []:
                    gpu.pop("profiles", None)
                out.append(f"status: {json.dumps(status)}")
            for p in self.pods():
                meta, status = p["metadata"], p.get("status") or {}
                conditions = [
                    f"{x['type']}={x['status']}({x.get('reason', '')}: {x.get('message', '')})"
                    for x in status.get("conditions") or []
                ]
                out.append(
                    f"--- pod {meta['name']} phase={status.get('phase')} "
                    f"node={p['spec'].get('nodeName')} limits={mig_limits(p)} {conditions}"
                )
                for e in self.events(meta["name"]):
                    out.append(f"    event {e['type']} {e['reason']}: {e['message']}")
            out.append(f"placeable now: {self.placeable(self.mignodes(), self.pods())}")
        except (KubeError, OSError, ValueError) as err:
            out.append(f"(cluster state unavailable: {err})")
        out.append(f"held devices: {self.held_devices()}")
        out.append(f"notes: {self.notes[-20:]}")
        for proc in self.procs.values():
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            out.append(f"--- {proc.role} ({state}), {proc.log}:\n{proc.tail(25)}")
        return "\n".join(out)

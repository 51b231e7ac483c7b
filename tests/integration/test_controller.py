"""The controller process against the real local control plane.

Two kinds of node: bare Node objects whose MigNode status the test writes itself (playing the
agent, so every step of the generation handshake is under the test's control), and simulated
GPU nodes with a real agent, where pending pods end up running on slices carved for them.
Everything is read back from the API server: MigNode specs, Events, the Lease, and the
controller's own HTTP endpoints.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.kube import events_about
from support.net import free_port, http_get, local_url, metric
from support.processes import STOP_S, stop_process
from support.waiting import wait_for

from jupyter_mig.api import constants as c
from jupyter_mig.devcluster import DevCluster
from jupyter_mig.mig.models import MODELS

kubernetes = pytest.importorskip("kubernetes")
from jupyter_mig.kube.client import Kube, KubeError  # noqa: E402

pytestmark = pytest.mark.cluster

A100 = MODELS.get("A100-80GB")
MIGNODES = f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}"
WAIT_S = 60.0
TOLERATE_ALL = [{"operator": "Exists"}]  # bare Node objects get not-ready taints


@dataclass
class ControllerProcess:
    identity: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        assert self.process.poll() is None, f"controller {self.identity} exited: {self.log()}"


class Harness:
    """Processes and cluster objects of one test; everything is removed at the end."""

    def __init__(self, cluster: DevCluster, logs: Path, namespace: str) -> None:
        self.cluster = cluster
        self.logs = logs
        self.namespace = namespace
        self.api_client = cluster.api_client()
        self.kube = Kube(self.api_client, "integration-test")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nodes: list[str] = []
        self.state_dirs: list[Path] = []
        self.suffix = uuid.uuid4().hex[:6]
        # This test's nodes carry this label and its pods select it, so nodes left by other
        # tests in the shared cluster never serve them.
        self.label = {"jupyter-mig.io/test": self.suffix}

    def close(self) -> None:
        for process in self.processes:
            stop_process(process)
        for name in self.nodes:
            for path in (f"{MIGNODES}/{name}", f"/api/v1/nodes/{name}"):
                with contextlib.suppress(KubeError):
                    self.kube.request("DELETE", path)
        for state in self.state_dirs:
            shutil.rmtree(state, ignore_errors=True)
        self.api_client.close()

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        path = self.logs / f"{role}.log"
        with open(path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_mig.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def controller(self, identity: str, *extra: str) -> ControllerProcess:
        port = free_port()
        args = [
            "controller", "--kubeconfig", str(self.cluster.kubeconfig),
            "--listen", f"127.0.0.1:{port}", "--identity", identity,
            "--batch-idle", "300ms", "--batch-max", "2s", "--log-level", "debug",
            "--spares", "0", *extra,  # the tests count the slices pods ask for; spares: below
        ]  # fmt: skip
        process = self.spawn(f"controller-{identity}", args)
        started = ControllerProcess(
            identity, port, process, self.logs / f"controller-{identity}.log"
        )

        def ready() -> bool:
            started.alive()
            return http_get(local_url(port, "/readyz"))[0] == 200

        wait_for(f"controller {identity} to be ready", ready, WAIT_S)
        return started

    def sim_node(self, name: str, gpus: int = 1) -> None:
        state = Path(tempfile.mkdtemp(prefix="jm-ctl-"))  # short: unix socket path limit
        self.state_dirs.append(state)
        self.nodes.append(name)
        self.spawn(
            f"sim-node-{name}",
            [
                "sim-node", "--kubeconfig", str(self.cluster.kubeconfig), "--name", name,
                "--gpu", A100.name, "--gpus", str(gpus), "--state", str(state),
                "--label", c.OPT_IN_SELECTOR, "--label", f"jupyter-mig.io/test={self.suffix}",
                "--refresh-delay", "0.2", "--heartbeat", "5",
            ],
        )  # fmt: skip
        wait_for(f"sim node {name}", lambda: (state / "pod-resources.sock").exists(), WAIT_S)
        self.spawn(
            f"agent-{name}",
            [
                "agent", "--kubeconfig", str(self.cluster.kubeconfig), "--node", name,
                "--nvml", f"sim:{state}", "--resync", "2", "--max-backoff", "2",
            ],
        )  # fmt: skip

    # -- cluster objects ---------------------------------------------------------------------

    def bare_node(self, name: str) -> None:
        """A Node object with no kubelet: the test writes its MigNode status itself."""
        self.nodes.append(name)
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {c.PARTITIONING_LABEL: c.PARTITIONING_DYNAMIC, **self.label},
            },
        }
        self.kube.request("POST", "/api/v1/nodes", body=body)

    def pod(
        self,
        name: str,
        limits: dict[str, str],
        *,
        labels: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "containers": containers
                or [{"name": "main", "image": "none", "resources": {"limits": limits}}],
                "tolerations": tolerations or [],
                "nodeSelector": self.label,
                "terminationGracePeriodSeconds": 1,
            },
        }
        return self.kube.request("POST", f"/api/v1/namespaces/{self.namespace}/pods", body=body)

    def read_pod(self, name: str) -> dict[str, Any]:
        return self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/pods/{name}")

    def mignode(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(f"{MIGNODES}/{name}")

    def report(
        self,
        name: str,
        instances: list[tuple[str, int, str | None]],
        generation: int | None = None,
    ) -> int:
        """Play the agent: publish one A100 with ``instances``; ack ``generation`` (default:
        the current one)."""
        if generation is None:
            generation = _generation(self.mignode(name))
        status = {
            "observedGeneration": generation,
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-test",
                    "model": A100.name,
                    "product": A100.products[0],
                    "migEnabled": True,
                    "profiles": A100.to_json(),
                    "instances": [
                        {
                            "profile": profile,
                            "profileId": A100.profile(profile).nvml_id,
                            "start": start,
                            "uuid": f"MIG-{start}",
                            **({"pod": holder} if holder else {}),
                        }
                        for profile, start, holder in instances
                    ],
                }
            ],
        }
        self.kube.request(
            "PATCH",
            f"{MIGNODES}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        return generation

    def apply(self, obj: dict[str, Any]) -> int:
        """Play a responsive agent: the layout of this MigNode's spec exists now, all free."""
        spec = [(i["profile"], i["start"], None) for i in _spec_instances(obj)]
        return self.report(obj["metadata"]["name"], spec, _generation(obj))

    def settled(self, name: str) -> dict[str, Any] | None:
        """The MigNode once its spec lists the GPU and the agent has acked it (else ack)."""
        obj = self.mignode(name)
        if obj is None:
            return None
        status = obj.get("status") or {}
        if _spec_gpus(obj) == 1 and status.get("observedGeneration") == _generation(obj):
            return obj
        self.apply(obj)
        return None

    def events(self, pod: str) -> list[dict[str, Any]]:
        return events_about(self.kube, self.namespace, pod)

    def lease(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{name}"
        )


@pytest.fixture
def harness(cluster: DevCluster, crds: None, namespace: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(cluster, tmp_path, namespace)
    try:
        yield h
    finally:
        h.close()


def _spec_instances(obj: dict[str, Any]) -> list[dict[str, Any]]:
    gpus = (obj.get("spec") or {}).get("gpus") or []
    return [i for g in gpus for i in g.get("instances") or ()]


def _spec_gpus(obj: dict[str, Any] | None) -> int:
    return len(((obj or {}).get("spec") or {}).get("gpus") or [])


def _generation(obj: dict[str, Any] | None) -> int:
    return int((obj or {}).get("metadata", {}).get("generation", 0))


def _reasons(h: Harness, pod: str) -> list[str]:
    return sorted(e["reason"] for e in h.events(pod))


# --------------------------------------------------------------------------------------------
# The handshake, step by step, with the test playing the agent
# --------------------------------------------------------------------------------------------


def _carved(h: Harness, node: str) -> dict[str, Any] | None:
    """The MigNode once its spec carves something, acking empty layouts meanwhile (the agent's
    first report, then the spec's)."""
    obj = h.mignode(node)
    if obj is not None and _spec_instances(obj):
        return obj
    if obj is not None:
        h.apply(obj)
    return None


def test_pending_pods_get_slices_written_and_are_told_once(harness: Harness) -> None:
    h = harness
    node = f"ctl-{h.suffix}"
    h.bare_node(node)
    ctl = h.controller("solo")

    # The controller creates the MigNode of an opted-in node, owned by the Node.
    obj = wait_for("the MigNode to be created", lambda: h.mignode(node), WAIT_S)
    assert obj["spec"] == {"gpus": []}
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "Node"

    # Until the agent has reported, nothing is planned there.
    h.pod("early", {"nvidia.com/mig-1g.10gb": "1"}, tolerations=TOLERATE_ALL)
    wait_for(
        "the controller to see the pod",
        lambda: metric(ctl.port, "jupyter_mig_pending_demand") == 1,
        WAIT_S,
    )
    assert _generation(h.mignode(node)) == 1 and _spec_gpus(h.mignode(node)) == 0
    # Once it has, the pod gets a slice (after the spec has taken the current layout).
    carved = wait_for("a slice for the pod", lambda: _carved(h, node), WAIT_S)
    [instance] = _spec_instances(carved)
    assert instance["profile"] == "1g.10gb"
    placements = json.loads(carved["metadata"]["annotations"]["jupyter-mig.io/placements"])
    assert list(placements["pods"]) == [f"{h.namespace}/early"]
    wait_for("the Event on the pod", lambda: h.events("early"), WAIT_S)
    [event] = h.events("early")
    assert event["type"] == "Normal" and event["reason"] == "MigRepartitioning"
    assert event["message"] == f"creating 1g.10gb on {node} GPU 0"

    # While that generation is in flight, a second pod waits.
    h.pod("second", {"nvidia.com/mig-1g.10gb": "1"}, tolerations=TOLERATE_ALL)
    wait_for(
        "the controller to see both pods",
        lambda: metric(ctl.port, "jupyter_mig_pending_demand") == 2,
        WAIT_S,
    )
    # The agent applies it (the new instance stays free: no kubelet binds the pod here).  The
    # first pod reuses it, the second gets a slice of its own: one more write, not two.
    acked = h.apply(carved)
    wait_for(
        "a slice for the second pod",
        lambda: len(_spec_instances(h.mignode(node) or {})) == 2,
        WAIT_S,
    )
    assert acked == _generation(carved)  # nothing was written while the node was applying
    assert _generation(h.mignode(node)) == acked + 1
    wait_for("the Event on the second pod", lambda: h.events("second"), WAIT_S)
    assert _reasons(h, "early") == ["MigRepartitioning"]  # told once
    assert _reasons(h, "second") == ["MigRepartitioning"]
    ctl.alive()


def test_a_round_keeps_a_spare_slice_of_the_size_in_demand(harness: Harness) -> None:
    h = harness
    node = f"ctl-{h.suffix}"
    h.bare_node(node)
    h.controller("spares", "--spares", "1")  # the later flag wins: the shipped default
    h.pod("one", {"nvidia.com/mig-1g.10gb": "1"}, tolerations=TOLERATE_ALL)
    carved = wait_for("the pod's slice and a spare", lambda: _carved(h, node), WAIT_S)
    assert [i["profile"] for i in _spec_instances(carved)] == ["1g.10gb", "1g.10gb"]
    placements = json.loads(carved["metadata"]["annotations"]["jupyter-mig.io/placements"])
    assert list(placements["pods"]) == [f"{h.namespace}/one"]  # the spare is nobody's


def test_bad_requests_get_one_warning_each_and_no_planning(harness: Harness) -> None:
    h = harness
    node = f"ctl-{h.suffix}"
    h.bare_node(node)
    ctl = h.controller("warner")
    settled = _generation(wait_for("the node to settle", lambda: h.settled(node), WAIT_S))
    h.pod("huge", {"nvidia.com/mig-9g.500gb": "1"}, tolerations=TOLERATE_ALL)
    h.pod("unknown", {"nvidia.com/mig-2g.15gb": "1"}, tolerations=TOLERATE_ALL)
    h.pod(
        "two",
        {},
        tolerations=TOLERATE_ALL,
        containers=[
            {
                "name": "main",
                "image": "none",
                "resources": {
                    "limits": {"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-3g.40gb": "1"}
                },
            }
        ],
    )
    expected = {
        "huge": "MigSliceTooLarge",
        "unknown": "UnknownMigProfile",
        "two": "MultipleMigProfiles",
    }
    for pod, reason in expected.items():
        wait_for(f"a Warning on {pod}", lambda pod=pod: h.events(pod), WAIT_S)
        [event] = h.events(pod)
        assert (event["type"], event["reason"]) == ("Warning", reason), event
    # More rounds (a fourth pod triggers one) neither repeat the Warnings nor touch the spec.
    h.pod("fine", {"nvidia.com/mig-1g.10gb": "1"}, tolerations=TOLERATE_ALL)
    wait_for("the good pod's Event", lambda: h.events("fine"), WAIT_S)
    for pod in expected:
        assert len(h.events(pod)) == 1
        assert h.events(pod)[0].get("count", 1) == 1
    assert [i["profile"] for i in _spec_instances(h.mignode(node) or {})] == ["1g.10gb"]
    assert _generation(h.mignode(node)) == settled + 1  # the only write
    ctl.alive()


def test_capacity_api_answers_from_the_reported_status(harness: Harness) -> None:
    h = harness
    node = f"ctl-{h.suffix}"
    h.bare_node(node)
    ctl = h.controller("capacity")
    wait_for("the MigNode", lambda: h.mignode(node), WAIT_S)
    h.report(node, [("3g.40gb", 0, "x/busy"), ("1g.10gb", 4, None)])

    def profiles() -> dict[str, dict[str, Any]] | None:
        status, body = http_get(local_url(ctl.port, "/api/v1/capacity"))
        assert status == 200
        models = {m["model"]: m for m in json.loads(body)["models"]}
        if A100.name not in models:
            return None
        return {p["profile"]: p for p in models[A100.name]["profiles"]}

    table = wait_for("the A100 in the capacity API", profiles, WAIT_S)
    assert table["3g.40gb"]["in_use"] == 1 and table["3g.40gb"]["free"] == 0
    assert (
        table["1g.10gb"]["free"] == 1 and table["1g.10gb"]["resource"] == "nvidia.com/mig-1g.10gb"
    )
    assert table["1g.10gb"]["creatable"] == 2  # slices 5 and 6 beside the busy half
    assert table["7g.80gb"]["creatable"] == 0  # the busy 3g.40gb is never counted as room
    assert http_get(local_url(ctl.port, "/healthz"))[0] == 200
    assert http_get(local_url(ctl.port, "/nowhere"))[0] == 404


# --------------------------------------------------------------------------------------------
# Leader election: two replicas, one plans
# --------------------------------------------------------------------------------------------


def test_the_follower_takes_over_when_the_leader_dies(harness: Harness) -> None:
    h = harness
    node = f"ctl-{h.suffix}"
    h.bare_node(node)
    lease = f"ctl-{h.suffix}"
    election = [
        "--leader-elect", "--lease-name", lease, "--lease-namespace", h.namespace,
        "--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "300ms",
    ]  # fmt: skip
    first = h.controller("first", *election)
    wait_for(
        "the first replica to lead",
        lambda: (h.lease(lease) or {}).get("spec", {}).get("holderIdentity") == "first",
        WAIT_S,
    )
    second = h.controller("second", *election)
    wait_for("the leader to plan the node", lambda: h.settled(node), WAIT_S)
    assert metric(first.port, "jupyter_mig_leader") == 1
    assert metric(second.port, "jupyter_mig_leader") in (0, None)
    assert http_get(local_url(second.port, "/api/v1/capacity"))[0] == 200  # followers serve reads
    assert metric(second.port, "jupyter_mig_spec_writes_total") is None

    first.process.kill()  # no chance to hand the lease back
    first.process.wait(STOP_S)
    wait_for(
        "the second replica to take over",
        lambda: (
            (h.lease(lease) or {}).get("spec", {}).get("holderIdentity") == "second"
            and metric(second.port, "jupyter_mig_leader") == 1
        ),
        WAIT_S,
    )
    assert h.lease(lease)["spec"]["leaseTransitions"] >= 1  # type: ignore[index]
    h.pod("after", {"nvidia.com/mig-1g.10gb": "1"}, tolerations=TOLERATE_ALL)
    wait_for("the new leader to plan", lambda: h.events("after"), WAIT_S)
    assert len(_spec_instances(h.mignode(node) or {})) == 1

    # A clean shutdown hands the lease back at once.
    stop_process(second.process)
    assert (h.lease(lease) or {}).get("spec", {}).get("holderIdentity") in ("", None)


# --------------------------------------------------------------------------------------------
# With simulated GPU nodes and real agents: pods end up running
# --------------------------------------------------------------------------------------------


def _node_ready(h: Harness, name: str) -> bool:
    node = h.kube.request("GET", f"/api/v1/nodes/{name}")
    conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True" and not node.get("spec", {}).get("taints")


def _running(h: Harness, pod: str) -> Callable[[], bool]:
    def check() -> bool:
        status = h.read_pod(pod).get("status") or {}
        assert status.get("phase") != "Failed", f"{pod} failed: {status.get('message')}"
        return status.get("phase") == "Running"

    return check


def test_pods_run_on_slices_carved_by_controller_and_agent(harness: Harness) -> None:
    h = harness
    node = f"ctl-sim-{h.suffix}"
    h.sim_node(node, gpus=2)
    ctl = h.controller("sim")
    # A brand-new node carries the not-ready taint for a moment, and a pod that no node can take
    # then rightly gets a NoEligibleMigNode Warning; this test is about the happy path.
    wait_for("the node to be ready and untainted", lambda: _node_ready(h, node), WAIT_S)
    h.pod("notebook", {"nvidia.com/mig-1g.10gb": "1"}, labels={"component": "singleuser-server"})
    wait_for("the notebook pod to run", _running(h, "notebook"), WAIT_S)
    assert _reasons(h, "notebook") == ["MigRepartitioning"]
    for name in ("job-a", "job-b"):
        h.pod(name, {"nvidia.com/mig-3g.40gb": "1"})
    for name in ("job-a", "job-b"):
        wait_for(f"{name} to run", _running(h, name), WAIT_S)
    wait_for(
        "the agent to report the pods holding their slices",
        lambda: (
            {
                i.get("pod")
                for g in (h.mignode(node) or {}).get("status", {}).get("gpus", [])
                for i in g["instances"]
            }
            >= {f"{h.namespace}/{p}" for p in ("notebook", "job-a", "job-b")}
        ),
        WAIT_S,
    )
    assert (metric(ctl.port, "jupyter_mig_pending_to_bound_seconds_count") or 0) >= 3
    ctl.alive()

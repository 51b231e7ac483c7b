"""The seed article's scenario, end to end, with the chart's service accounts.

One A100-80GB node opted in; a Deployment of 5 replicas, each limiting
``nvidia.com/mig-1g.10gb: 1``.  Nothing is partitioned beforehand: the controller plans five
1g.10gb slices, the agent creates them through (simulated) NVML, the device plugin advertises
them, the scheduler binds the pods and the sim kubelet runs them.
"""

from __future__ import annotations

from collections import Counter

import pytest
from e2e_harness import System, layout_problems

from jupyter_mig.api import constants as c
from jupyter_mig.mig.layout import Instance

pytestmark = pytest.mark.cluster

REPLICAS = 5
PROFILE = "1g.10gb"


def _deployment(system: System) -> dict[str, object]:
    labels = {"app": "seed"}
    pod = system.pod_body("unused", PROFILE)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "seed"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


def test_five_replicas_of_a_1g_slice_all_run_on_a_fresh_a100(system: System) -> None:
    node = system.add_node("a100", "A100-80GB")
    controller = system.start_controller("controller-0")

    # The processes act as the chart's service accounts, not as an admin.
    ns = system.release.namespace
    controller_user = system.whoami(system.kubeconfig_of(controller.proc.role))
    assert (
        controller_user["username"]
        == f"system:serviceaccount:{ns}:{system.release.controller_account}"
    )
    assert "system:masters" not in controller_user.get("groups", [])
    agent_user = system.whoami(system.kubeconfig_of(system.agent(node).role))
    assert agent_user["username"] == f"system:serviceaccount:{ns}:{system.release.agent_account}"
    assert agent_user["extra"][c.NODE_NAME_EXTRA] == [node.name]

    system.kube.request(
        "POST", f"/apis/apps/v1/namespaces/{system.namespace}/deployments", body=_deployment(system)
    )

    def all_running() -> list[dict[str, object]] | None:
        pods = [p for p in system.pods() if (p.get("status") or {}).get("phase") == "Running"]
        return pods if len(pods) == REPLICAS else None

    pods = system.wait("all 5 replicas to run", all_running)
    system.wait("the system to settle", system.settled)

    # The node reports five 1g.10gb instances, each held by one replica, with the very MIG
    # devices the kubelet assigned; the layout is valid and the same in spec, status and NVML.
    obj = system.mignode(node.name)
    assert obj is not None
    assert layout_problems(obj) == []
    [gpu] = obj["status"]["gpus"]
    assert gpu["model"] == "A100-80GB"
    assert Counter(i["profile"] for i in gpu["instances"]) == {PROFILE: REPLICAS}
    names = {f"{system.namespace}/{p['metadata']['name']}" for p in pods}  # type: ignore[index]
    assert {i["pod"] for i in gpu["instances"]} == names
    held = system.held_devices()
    assert {i["uuid"]: i["pod"] for i in gpu["instances"]} == {u: p for u, (_n, p) in held.items()}
    spec = {Instance(i["start"], i["profileId"]) for i in obj["spec"]["gpus"][0]["instances"]}
    reported = {Instance(i["start"], i["profileId"]) for i in gpu["instances"]}
    assert spec == reported == {inst for _gpu, inst in node.nvml_devices().values()}
    conditions = {x["type"]: (x["status"], x["reason"]) for x in obj["status"]["conditions"]}
    assert conditions[c.CONDITION_DEGRADED] == ("False", c.REASON_AS_EXPECTED)

    # Each replica was told why it waited.
    for pod in pods:
        reasons = [e["reason"] for e in system.events(pod["metadata"]["name"])]  # type: ignore[index]
        assert reasons == ["MigRepartitioning"], reasons

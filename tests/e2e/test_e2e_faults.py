"""Faults, end to end: each converges, no pod is lost, no slice in use is destroyed.

- the agent killed (SIGKILL) in the middle of applying a spec, twice: between NVML creates, and
  after the creates but before the device plugin advertised them;
- simulated NVML operations failing (a create, then a destroy);
- the leading controller killed: the second replica takes over through the Lease;
- kube-apiserver restarted under the open watches of every process.

The monitor (see e2e_harness) checks the invariants throughout; each test also checks that the
devices of pods that ran before the fault are the same devices afterwards.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from e2e_harness import System, restart_apiserver
from support.net import metric

from jupyter_mig.api import constants as c
from jupyter_mig.nvml.simgpu import inject_fault, state_lines

pytestmark = pytest.mark.cluster


def _condition(system: System, node: str, type_: str) -> tuple[str, str]:
    obj = system.mignode(node) or {}
    found: dict[str, object] = next(
        (x for x in (obj.get("status") or {}).get("conditions") or [] if x["type"] == type_), {}
    )
    return str(found.get("status", "")), str(found.get("reason", ""))


def _mignode_warnings(system: System, node: str) -> list[str]:
    listed = system.kube.request(
        "GET",
        "/api/v1/namespaces/default/events",
        query={"fieldSelector": f"involvedObject.name={node}"},
    )
    return [e["reason"] for e in listed.get("items") or [] if e.get("type") == "Warning"]


def _acked(system: System, node: str) -> bool:
    obj = system.mignode(node) or {}
    observed = (obj.get("status") or {}).get("observedGeneration")
    return bool(observed == obj.get("metadata", {}).get("generation"))


def test_agent_killed_mid_apply_is_finished_by_its_successor(system: System) -> None:
    # Slow creates and a slow device plugin widen the two windows the agent is killed in.
    node = system.add_node(
        "a100",
        "A100-80GB",
        latency={"nvmlDeviceCreateGpuInstanceWithPlacement": 1.0},
        refresh_delay=3.0,
    )
    system.start_controller("controller-0")
    system.create_pod("trio", "1g.10gb", count=3, interactive=True)

    system.wait("the agent to be between NVML creates", lambda: 0 < len(node.nvml_devices()) < 3)
    system.agent(node).stop(signal.SIGKILL)
    system.note(f"agent killed with {len(node.nvml_devices())} of 3 instances created")
    system.start_agent(node)

    def created_not_advertised() -> bool:
        return len(node.nvml_devices()) == 3 and not _acked(system, node.name)

    system.wait("the successor to create the rest", created_not_advertised)
    system.agent(node).stop(signal.SIGKILL)
    system.note("agent killed after the creates, before the status was acknowledged")
    system.start_agent(node)

    system.wait("the pod to run", lambda: system.running(["trio"]))
    system.wait("the system to settle", system.settled)
    obj = system.mignode(node.name) or {}
    [spec] = obj["spec"]["gpus"]
    assert len(spec["instances"]) == 3
    assert len(node.nvml_devices()) == 3, "a killed agent left an extra or a missing instance"
    assert _condition(system, node.name, c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)


def test_failing_nvml_operations_are_retried(system: System) -> None:
    node = system.add_node("a100", "A100-80GB")
    system.start_controller("controller-0")

    inject_fault(node.state, "nvmlDeviceCreateGpuInstanceWithPlacement", times=2)
    system.create_pod("two-g", "2g.20gb", interactive=True)
    system.wait(
        "the agent to report the NVML error",
        lambda: "NvmlError" in _mignode_warnings(system, node.name),
    )
    system.wait("the pod to run once a create succeeds", lambda: system.running(["two-g"]))
    system.wait("the system to settle", system.settled)
    assert _condition(system, node.name, c.CONDITION_DEGRADED) == ("False", c.REASON_AS_EXPECTED)

    # A destroy fails next: a whole-GPU pod needs the free 2g.20gb out of the way.
    system.delete_pod("two-g")
    system.wait("the 2g.20gb to be reported free", lambda: not system.reported_holders())
    inject_fault(node.state, "nvmlGpuInstanceDestroy", times=1)
    system.create_pod("seven-g", "7g.80gb", interactive=True)
    system.wait("the whole-GPU pod to run", lambda: system.running(["seven-g"]))
    system.wait("the system to settle", system.settled)
    assert _faults_left(node.state) == [], "the injected destroy fault was never hit"


def _faults_left(state: Path) -> list[list[str]]:
    return [line for line in state_lines(state) if line[0] == "fault"]


def test_a_second_controller_takes_over_when_the_leader_is_killed(system: System) -> None:
    system.add_node("a100", "A100-80GB")
    first = system.start_controller("controller-0")
    system.wait("controller-0 to lead", lambda: system.lease_holder() == "controller-0")
    second = system.start_controller("controller-1")
    system.create_pod("before", "1g.10gb", interactive=True)
    system.wait("the first pod to run", lambda: system.running(["before"]))
    held = system.held_devices()

    first.proc.stop(signal.SIGKILL)  # no chance to hand the Lease back
    system.create_pod("interactive", "3g.40gb", interactive=True)
    system.create_pod("batch", "2g.20gb")
    system.wait("controller-1 to take over", lambda: system.lease_holder() == "controller-1")
    system.wait("both new pods to run", lambda: system.running(["interactive", "batch"]))
    system.wait("the system to settle", system.settled)
    assert metric(second.port, "jupyter_mig_leader") == 1
    for pod in ("interactive", "batch"):
        planners = {
            e.get("reportingInstance")
            for e in system.events(pod)
            if e["reason"] == "MigRepartitioning"
        }
        assert planners == {"controller-1"}, (pod, planners)
    assert all(system.held_devices().get(device) == owner for device, owner in held.items())

    # The old leader comes back as a follower.
    again = system.start_controller("controller-0")
    system.wait(
        "the restarted replica to follow", lambda: metric(again.port, "jupyter_mig_leader") == 0
    )
    assert system.lease_holder() == "controller-1"


def test_apiserver_restart_under_open_watches(system: System) -> None:
    node = system.add_node("a100", "A100-80GB", gpus=2)
    system.start_controller("controller-0")
    system.start_controller("controller-1")
    system.create_pod("nb", "3g.40gb", interactive=True)
    system.create_pod("job", "1g.10gb")
    system.wait("the first pods to run", lambda: system.running(["nb", "job"]))
    system.wait("the system to settle", system.settled)
    held = system.held_devices()

    popen = restart_apiserver(system.cluster)
    system.note(f"kube-apiserver restarted as pid {popen.pid}")

    # Every process resumes its watches: new work is planned, applied, advertised and run.
    system.create_pod("nb-after", "2g.20gb", interactive=True)
    system.create_pod("job-after", "1g.20gb")
    system.delete_pod("job")
    system.wait("the new pods to run", lambda: system.running(["nb-after", "job-after"]))
    system.wait("the system to settle", system.settled)
    assert all(p.alive() for p in system.procs.values()), "a process died with the API server"
    assert system.held_devices().get(
        next(d for d, (_n, p) in held.items() if p.endswith("/nb"))
    ) == (
        node.name,
        f"{system.namespace}/nb",
    )

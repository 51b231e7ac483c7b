"""Nodes of mixed GPU models, node selectors, priority and interactive-first ordering, end to end.

One A100-40GB node and one H100-80GB node, each with its own sim kubelet and agent; one
controller.  The controller runs with a long batch window (``--batch-idle=60s``) so that batch
pods wait for a round that an interactive pod starts: that makes "which pods share a round"
deterministic, and shows that interactive pods do not wait for the window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from e2e_harness import System

from jupyter_mig.api import constants as c
from jupyter_mig.kube.client import KubeError
from jupyter_mig.mig.models import MODELS

pytestmark = pytest.mark.cluster

A100_40 = MODELS.get("A100-40GB")
H100 = MODELS.get("H100-80GB")
PRODUCT = c.GPU_PRODUCT_LABEL


def _product(model_name: str) -> dict[str, str]:
    return {PRODUCT: MODELS.get(model_name).products[0]}


@pytest.fixture
def priority_classes(system: System) -> Iterator[tuple[str, str]]:
    names = (f"e2e-{system.suffix}-high", f"e2e-{system.suffix}-low")
    for name, value in zip(names, (1000, 10), strict=True):
        system.kube.request(
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            body={
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            },
        )
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(KubeError):
                system.kube.request("DELETE", f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")


def _node_of(system: System, pod: str) -> str:
    found = system.pod(pod)
    assert found is not None, f"{pod} is gone"
    return str(found["spec"].get("nodeName") or "")


def _reasons(system: System, pod: str) -> list[str]:
    return [e["reason"] for e in system.events(pod)]


def _unschedulable(system: System, pod: str) -> bool:
    found = system.pod(pod) or {}
    return any(
        x["type"] == "PodScheduled" and x.get("reason") == "Unschedulable"
        for x in (found.get("status") or {}).get("conditions") or []
    )


def _empty(system: System) -> None:
    """Delete every pod of the test and wait until the agents report all slices free."""
    for pod in system.pods():
        system.delete_pod(pod["metadata"]["name"])
    system.wait(
        "all pods gone and all slices free",
        lambda: not system.pods() and not system.reported_holders(),
    )
    system.wait("the system to settle", system.settled)


def test_models_selectors_priority_and_interactive_first(
    system: System, priority_classes: tuple[str, str]
) -> None:
    a100 = system.add_node("a100-40", "A100-40GB")
    h100 = system.add_node("h100", "H100-80GB")
    # The chart's arguments with a long batch window (see the module docstring).
    system.start_controller("controller-0", {"--batch-idle": "60s", "--batch-max": "120s"})

    # -- node selectors and per-model profiles (interactive pods: planned at once) ------------
    system.create_pod("sel-a100", "1g.10gb", interactive=True, node_selector=_product("A100-40GB"))
    system.create_pod("sel-h100", "1g.10gb", interactive=True, node_selector=_product("H100-80GB"))
    system.create_pod("only-a100", "1g.5gb", interactive=True)  # an A100-40GB profile only
    system.create_pod("only-h100", "2g.20gb", interactive=True)  # an H100-80GB profile only
    placed = {
        "sel-a100": a100.name,
        "sel-h100": h100.name,
        "only-a100": a100.name,
        "only-h100": h100.name,
    }
    system.wait("the four pods to run", lambda: system.running(placed))
    assert {pod: _node_of(system, pod) for pod in placed} == placed
    system.wait("the system to settle", system.settled)
    models = {m["metadata"]["name"]: m["status"]["gpus"][0]["model"] for m in system.mignodes()}
    assert models == {a100.name: A100_40.name, h100.name: H100.name}
    _empty(system)

    # -- priority: two batch pods want the whole A100-40GB; the higher priority gets it --------
    high, low = priority_classes
    on_a100 = _product("A100-40GB")
    system.create_pod("low", "7g.40gb", priority_class=low, node_selector=on_a100)
    system.create_pod("high", "7g.40gb", priority_class=high, node_selector=on_a100)
    system.wait(
        "both to be unschedulable",
        lambda: _unschedulable(system, "low") and _unschedulable(system, "high"),
    )
    # An interactive pod elsewhere starts a round at once and takes both batch pods along (a
    # profile not carved on the H100 yet, so that it waits for the controller too).
    system.create_pod("trigger", "1g.20gb", interactive=True, node_selector=_product("H100-80GB"))
    system.wait(
        "the high-priority pod and the trigger to run", lambda: system.running(["high", "trigger"])
    )
    system.wait(
        "the low-priority pod to be told it waits",
        lambda: "WaitingForMigCapacity" in _reasons(system, "low"),
    )
    assert _node_of(system, "low") == ""
    assert _reasons(system, "high") == ["MigRepartitioning"]
    _empty(system)

    # -- interactive first: a batch pod and a notebook want the whole H100 ---------------------
    on_h100 = _product("H100-80GB")
    system.create_pod("batch", "7g.80gb", node_selector=on_h100)
    system.wait("the batch pod to be unschedulable", lambda: _unschedulable(system, "batch"))
    system.create_pod("notebook", "7g.80gb", interactive=True, node_selector=on_h100)
    # The notebook starts a round at once, the batch pod comes along, and the slice is carved
    # for the notebook.
    system.wait(
        "the notebook's slice to be carved",
        lambda: "MigRepartitioning" in _reasons(system, "notebook"),
    )
    system.wait(
        "the batch pod to be told it waits",
        lambda: "WaitingForMigCapacity" in _reasons(system, "batch"),
    )
    assert "MigRepartitioning" not in _reasons(system, "batch")
    # Which of the two the scheduler binds to that slice is the scheduler's choice: its queue
    # orders by priority, then by age, and knows nothing of the carving (see docs/e2e.md).
    # Either way exactly one runs, and the other is not lost: it runs when the first ends.
    first = system.wait(
        "one of the two to run", lambda: _one_running(system, ("notebook", "batch"))
    )
    second = "batch" if first == "notebook" else "notebook"
    system.note(f"the scheduler bound {first} to the slice carved for the notebook")
    assert _node_of(system, first) == h100.name and _node_of(system, second) == ""
    system.delete_pod(first)
    system.wait(f"{second} to run once {first} is gone", lambda: system.running([second]))
    system.wait("the system to settle", system.settled)


def _one_running(system: System, names: tuple[str, ...]) -> str | None:
    running = [n for n in names if system.running([n])]
    assert len(running) <= 1, f"both {names} run on one GPU"
    return running[0] if running else None

"""One planning round as pure functions: pending pods + node views → spec writes and Events.

:func:`assess` turns pending pods into planner demands (or into a Warning that says why a pod
cannot be served, and the pod is left out); :func:`decide` runs the planner on the nodes that
have nothing in flight and renders the MigNode specs that change.  The shell performs the writes
and posts the Events; nothing here talks to the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.api.mignode import render_spec
from jupyter_mig.controller import events as ev
from jupyter_mig.controller.selection import (
    PendingPod,
    RequestError,
    mig_requests,
    node_eligible,
    placement_key,
)
from jupyter_mig.controller.snapshot import NodeState, NodeView, render_reservation
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import GpuModel, ModelRegistry
from jupyter_mig.mig.planner import (
    Assignment,
    Demand,
    GpuSnapshot,
    NodeSnapshot,
    Plan,
    plan_round,
)
from jupyter_mig.mig.sizes import SizeError, SizeRequest, nominal_gb, parse_size

_PROFILE_NAME = re.compile(r"^(?P<compute>\d+)g\.(?P<gb>\d+)gb")


@dataclass
class Assessment:
    """The pending pods of one round, sorted into demands and pods that cannot be served."""

    demands: list[Demand] = field(default_factory=list)
    warnings: list[ev.PodEvent] = field(default_factory=list)
    pods: dict[str, PendingPod] = field(default_factory=dict)  # key → pod, for the Events
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # key → profile → count
    demand_by_profile: dict[str, int] = field(default_factory=dict)  # every readable request


@dataclass(frozen=True)
class SpecWrite:
    """A MigNode spec to write (only if its resourceVersion still holds)."""

    node: str
    resource_version: str
    spec: dict[str, Any]
    placements: str | None  # the placements annotation; None removes it
    events: tuple[ev.PodEvent, ...]  # posted once the write has landed
    creates: int
    destroys: int


@dataclass
class Decision:
    plan: Plan
    writes: list[SpecWrite]
    waiting: list[ev.PodEvent]


def registry_for(views: Mapping[str, NodeView]) -> ModelRegistry:
    """The built-in tables, replaced by every table an agent has published (one per round)."""
    registry = ModelRegistry()
    for view in views.values():
        for model in view.models.values():
            registry.register(model)
    return registry


@dataclass(frozen=True)
class _Reach:
    """The nodes pods with one placement key may use, and what those nodes offer."""

    eligible: frozenset[str]
    reported: tuple[NodeView, ...]
    ready: tuple[str, ...]
    models: frozenset[GpuModel]
    shapes: frozenset[tuple[GpuModel, ...]]


def _reach(pod: PendingPod, schedulable: Sequence[NodeView]) -> _Reach:
    eligible = [v for v in schedulable if node_eligible(pod.pod, v.node)]
    reported = tuple(v for v in eligible if v.snapshot is not None and v.snapshot.gpus)
    return _Reach(
        eligible=frozenset(v.name for v in eligible),
        reported=reported,
        ready=tuple(sorted(v.name for v in reported if v.state is NodeState.READY)),
        models=frozenset(m for v in reported for m in v.models.values()),
        shapes=frozenset(_shape(v) for v in reported),
    )


def assess(
    views: Mapping[str, NodeView],
    pending: Sequence[PendingPod],
    plannable: Set[str],
    now: datetime,
    inflight_timeout: timedelta,
) -> Assessment:
    """Demands for the pods this round may plan; Warnings for the pods no round could serve.

    A pod is left out without a word while the nodes it may use are not ready (agent not
    reported, a generation in flight, or its own slice being carved there).
    """
    known_models = list(registry_for(views))
    schedulable = [v for _, v in sorted(views.items()) if v.schedulable]
    reaches: dict[str, _Reach] = {}  # pods with equal placement rules share the node search
    reserved = _reserved_pods(views, now, inflight_timeout)
    everywhere = tuple(v.name for v in planned_nodes(views))
    result = Assessment()
    for pod in pending:

        def warn(reason: str, message: str, pod: PendingPod = pod) -> None:
            result.warnings.append(
                ev.PodEvent(pod.namespace, pod.name, pod.uid, ev.WARNING, reason, message)
            )

        try:
            requests = mig_requests(pod.pod)
        except RequestError as err:
            warn(err.reason, str(err))
            continue
        if not requests:
            continue
        for profile, count in requests.items():
            result.demand_by_profile[profile] = result.demand_by_profile.get(profile, 0) + count
        unknown = _unknown_profile(requests, known_models, views)
        if unknown is not None:
            warn(*unknown)
            continue
        key = placement_key(pod.pod)
        reach = reaches.get(key)
        if reach is None:
            reach = reaches[key] = _reach(pod, schedulable)
        if not reach.eligible:
            warn(ev.NO_ELIGIBLE_NODE, ev.no_node_message())
            continue
        if not reach.reported:
            continue  # the agents there have not published their GPUs yet
        items = tuple(parse_size(p) for p, n in requests.items() for _ in range(n))
        missing = _not_offered(requests, reach.models)
        if missing is not None:
            warn(ev.PROFILE_NOT_OFFERED, missing)
            continue
        if not any(_fits_when_empty(shape, items) for shape in reach.shapes):
            warn(ev.REQUEST_TOO_LARGE, ev.too_large_for_node_message(requests))
            continue
        if pod.key not in plannable or reserved.get(pod.key, frozenset()) & reach.eligible:
            continue
        if not reach.ready:
            continue
        result.pods[pod.key] = pod
        result.requests[pod.key] = requests
        result.demands.append(
            Demand(
                name=pod.key,
                items=items,
                nodes=None if reach.ready == everywhere else reach.ready,
                priority=pod.priority,
                interactive=pod.interactive,
            )
        )
    return result


def planned_nodes(views: Mapping[str, NodeView]) -> list[NodeView]:
    """The nodes a round may change: reported, nothing in flight, not cordoned."""
    return [
        v
        for _, v in sorted(views.items())
        if v.state is NodeState.READY and v.schedulable and v.snapshot is not None
    ]


def decide(
    views: Mapping[str, NodeView], assessment: Assessment, now: datetime, spares: int
) -> Decision:
    """Plan the round and render every spec that changes, with the Events it earns.  Spare
    instances are topped up only in rounds that serve pending pods, so an idle cluster is left
    alone."""
    nodes = planned_nodes(views)
    plan = plan_round(
        [v.snapshot for v in nodes if v.snapshot is not None],
        assessment.demands,
        spares=spares if assessment.demands else 0,
    )
    models = {(v.name, i): m for v in nodes for i, m in v.models.items()}
    by_node: dict[str, dict[str, list[Assignment]]] = {}
    for key, assignments in plan.placements.items():
        for a in assignments:
            by_node.setdefault(a.node, {}).setdefault(key, []).append(a)
    writes = []
    for view in nodes:
        write = _spec_write(view, plan, by_node.get(view.name, {}), assessment, models, now)
        if write is not None:
            writes.append(write)
    gpus_per_node = {v.name: len(v.snapshot.gpus) for v in nodes if v.snapshot is not None}
    demand_nodes = {d.name: d.nodes or tuple(gpus_per_node) for d in assessment.demands}
    waiting = []
    for key in plan.unplaced:
        pod = assessment.pods[key]
        gpus = sum(gpus_per_node.get(n, 0) for n in demand_nodes[key])
        waiting.append(
            ev.PodEvent(
                pod.namespace,
                pod.name,
                pod.uid,
                ev.NORMAL,
                ev.WAITING,
                ev.waiting_message(assessment.requests[key], gpus),
            )
        )
    return Decision(plan, writes, waiting)


def _spec_write(
    view: NodeView,
    plan: Plan,
    placed_here: Mapping[str, Sequence[Assignment]],
    assessment: Assessment,
    models: dict[tuple[str, int], GpuModel],
    now: datetime,
) -> SpecWrite | None:
    assert view.snapshot is not None
    layouts = {g.index: plan.layouts[(view.name, g.index)] for g in view.snapshot.gpus}
    desired = view.desired
    if desired is not None and all(desired.get(i) == layout for i, layout in layouts.items()):
        return None
    spec = render_spec(layouts, view.models)
    if desired is not None:
        # GPUs the round does not plan (MIG off, unknown table) keep what the spec says.
        kept = [
            gpu
            for gpu in ((view.mignode or {}).get("spec") or {}).get("gpus") or ()
            if gpu.get("index") not in layouts
        ]
        spec["gpus"] = sorted([*spec["gpus"], *kept], key=lambda g: int(g["index"]))
    created = {
        key: set(instances) for key, instances in plan.created.items() if key[0] == view.name
    }
    carved: dict[str, tuple[Assignment, ...]] = {}
    for key, assignments in placed_here.items():
        new = tuple(
            a
            for a in assignments
            if Instance(a.start, a.profile_id) in created.get((a.node, a.gpu), set())
        )
        if new:
            carved[key] = new
    events = []
    for key, assignments in sorted(carved.items()):
        pod = assessment.pods[key]
        destroys = sum(
            len(plan.destroyed.get((view.name, g), ())) for g in {a.gpu for a in assignments}
        )
        events.append(
            ev.PodEvent(
                pod.namespace,
                pod.name,
                pod.uid,
                ev.NORMAL,
                ev.REPARTITIONING,
                ev.creating_message(assignments, models, destroys),
            )
        )
    return SpecWrite(
        node=view.name,
        resource_version=view.resource_version,
        spec=spec,
        # Every pod placed here waits for this generation, also those reusing a free instance:
        # while the node applies, its free instances are out of sight, and a later round must
        # not carve those pods a second slice elsewhere.
        placements=render_reservation(now, placed_here) if placed_here else None,
        events=tuple(events),
        creates=sum(len(v) for v in created.values()),
        destroys=sum(len(v) for k, v in plan.destroyed.items() if k[0] == view.name),
    )


# --------------------------------------------------------------------------------------------
# Why a pod cannot be served
# --------------------------------------------------------------------------------------------


def _unknown_profile(
    requests: Mapping[str, int], models: Sequence[GpuModel], views: Mapping[str, NodeView]
) -> tuple[str, str] | None:
    """(reason, message) for a profile no GPU model has; None when every profile is known."""
    for profile in requests:
        resource = f"{c.MIG_RESOURCE_PREFIX}{profile}"
        try:
            parse_size(profile)
        except SizeError:
            return ev.UNKNOWN_PROFILE, f"{resource} is not a MIG profile name (e.g. 1g.10gb)"
        if any(m.find_profile(profile) is not None for m in models):
            continue
        match = _PROFILE_NAME.match(profile)
        largest_model = max(models, key=lambda m: (m.full_profile.memory_mib, m.name))
        largest = largest_model.full_profile
        most_compute = max(m.compute_budget for m in models)
        if match and (
            int(match["gb"]) > max(nominal_gb(m.full_profile) for m in models)
            or int(match["compute"]) > most_compute
        ):
            return ev.SLICE_TOO_LARGE, (
                f"{resource} is larger than any GPU can offer; the largest MIG slice is "
                f"{largest.name} on {largest_model.name}"
            )
        cluster = sorted(
            {p.name for v in views.values() for m in v.models.values() for p in m.profiles}
        )
        offered = ", ".join(cluster) if cluster else "none reported yet"
        return ev.UNKNOWN_PROFILE, (
            f"no GPU model has the MIG profile {profile}; the GPUs here offer {offered}"
        )
    return None


def _not_offered(requests: Mapping[str, int], models: Iterable[GpuModel]) -> str | None:
    tables = list(models)
    for profile in requests:
        if not any(m.find_profile(profile) is not None for m in tables):
            return ev.not_offered_message(profile, (p.name for m in tables for p in m.profiles))
    return None


def _shape(view: NodeView) -> tuple[GpuModel, ...]:
    assert view.snapshot is not None
    return tuple(g.model for g in view.snapshot.gpus)


@lru_cache(maxsize=4096)
def _fits_when_empty(shape: tuple[GpuModel, ...], items: tuple[SizeRequest, ...]) -> bool:
    """Whether all of a pod's slices fit on one node of this shape with nothing on it."""
    node = NodeSnapshot("probe", tuple(GpuSnapshot(i, m) for i, m in enumerate(shape)))
    return not plan_round([node], [Demand("probe", items)]).unplaced


def _reserved_pods(
    views: Mapping[str, NodeView], now: datetime, inflight_timeout: timedelta
) -> dict[str, frozenset[str]]:
    """Pod → nodes still applying a generation that carves a slice for it (and not too long)."""
    reserved: dict[str, set[str]] = {}
    for view in views.values():
        written = view.reservation.written_at
        if view.state is not NodeState.APPLYING or written is None:
            continue
        if now - written >= inflight_timeout:
            continue
        for key in view.reservation.pods:
            reserved.setdefault(key, set()).add(view.name)
    return {key: frozenset(nodes) for key, nodes in reserved.items()}

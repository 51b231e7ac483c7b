"""From Node and MigNode objects to what the planner sees: one view per opted-in node.

The agent's status is the truth about a node's GPUs: their instances, which pods hold them and
the profile table NVML reported.  Two corrections make the snapshot safe to plan on:

- a pod already bound to the node whose devices the status does not show yet (the kubelet has
  not allocated them, or the agent has not reported) pins as many free instances of its profiles,
  so a round never destroys a slice the scheduler has just handed out;
- a node whose spec generation is still being applied is not planned, and the pods the
  controller carved room for there (the placements annotation) wait for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from jupyter_mig.api.mignode import (
    GpuStatus,
    MigNodeError,
    NodeStatus,
    desired_layouts,
    parse_status,
    spec_observed,
)
from jupyter_mig.controller.selection import (
    Obj,
    RequestError,
    holds_devices,
    meta,
    mig_requests,
    node_schedulable,
    pod_key,
)
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.planner import Assignment, GpuSnapshot, NodeSnapshot, ObservedInstance

#: Controller-owned MigNode annotation: the pods the current spec generation makes room for.
PLACEMENTS_ANNOTATION = "jupyter-mig.io/placements"


class NodeState(StrEnum):
    MISSING = "missing"  # opted in, no MigNode yet: the controller creates it
    UNREPORTED = "unreported"  # the agent has not published the GPUs yet
    APPLYING = "applying"  # a spec generation is in flight
    READY = "ready"  # observedGeneration == generation: plannable
    INVALID = "invalid"  # status unreadable: left alone, never a crash


@dataclass(frozen=True)
class Reservation:
    """The placements annotation: pods → the slices a spec write carved for them."""

    written_at: datetime | None = None
    pods: Mapping[str, tuple[Assignment, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeView:
    name: str
    node: Obj
    state: NodeState
    mignode: Obj | None = None
    snapshot: NodeSnapshot | None = None  # the GPUs that can be planned (MIG on, table known)
    models: Mapping[int, GpuModel] = field(default_factory=dict)  # GPU index → table
    desired: Mapping[int, tuple[Instance, ...]] | None = None  # None: spec unreadable
    reservation: Reservation = Reservation()
    problems: tuple[str, ...] = ()

    @property
    def schedulable(self) -> bool:
        return node_schedulable(self.node)

    @property
    def resource_version(self) -> str:
        return str(meta(self.mignode or {}).get("resourceVersion", ""))


def build_views(
    nodes: Iterable[Obj], mignodes: Iterable[Obj], pods: Iterable[Obj]
) -> dict[str, NodeView]:
    """One view per opted-in node (the caller passes opted-in nodes only)."""
    by_name = {str(meta(m).get("name", "")): m for m in mignodes}
    bound: dict[str, list[Obj]] = {}
    for pod in pods:
        if holds_devices(pod):
            bound.setdefault(str(pod["spec"]["nodeName"]), []).append(pod)
    views = {}
    for node in nodes:
        name = str(meta(node).get("name", ""))
        views[name] = node_view(node, by_name.get(name), bound.get(name, ()))
    return views


def node_view(node: Obj, mignode: Obj | None, bound_pods: Iterable[Obj]) -> NodeView:
    name = str(meta(node).get("name", ""))
    if mignode is None:
        return NodeView(name, node, NodeState.MISSING)
    try:
        status = _parsed_status(name, mignode)
    except MigNodeError as err:
        return NodeView(name, node, NodeState.INVALID, mignode, problems=(str(err),))
    try:
        desired: Mapping[int, tuple[Instance, ...]] | None = desired_layouts(mignode)
    except MigNodeError:
        desired = None  # a hand-edited spec the controller will replace
    reservation = parse_reservation(mignode)
    if not status.gpus:
        return NodeView(
            name, node, NodeState.UNREPORTED, mignode, desired=desired, reservation=reservation
        )
    gpus, models, problems = _plannable_gpus(status.gpus, bound_pods)
    return NodeView(
        name,
        node,
        NodeState.READY if spec_observed(mignode) else NodeState.APPLYING,
        mignode,
        snapshot=NodeSnapshot(
            name=name,
            gpus=gpus,
            labels=tuple(sorted((meta(node).get("labels") or {}).items())),
        ),
        models=models,
        desired=desired,
        reservation=reservation,
        problems=problems,
    )


#: node name → (the status dict parsed, its parse).  A cache object stays the same dict until
#: it changes, so an identity check tells whether the parse still holds; parsing the profile
#: tables of every GPU again each round would dominate a round's time.
_STATUS_MEMO: dict[str, tuple[object, NodeStatus]] = {}


def _parsed_status(name: str, mignode: Obj) -> NodeStatus:
    raw = mignode.get("status")
    memo = _STATUS_MEMO.get(name)
    if memo is not None and raw is not None and memo[0] is raw:
        return memo[1]
    status = parse_status(mignode)
    if raw is not None:
        if len(_STATUS_MEMO) > 100_000:
            _STATUS_MEMO.clear()
        _STATUS_MEMO[name] = (raw, status)
    return status


def _plannable_gpus(
    statuses: Iterable[GpuStatus], bound_pods: Iterable[Obj]
) -> tuple[tuple[GpuSnapshot, ...], dict[int, GpuModel], tuple[str, ...]]:
    problems: list[str] = []
    usable: list[tuple[GpuStatus, GpuModel]] = []
    for gpu in sorted(statuses, key=lambda g: g.index):
        if not gpu.mig_enabled:
            continue
        if gpu.model is None:
            problems.append(f"GPU {gpu.index}: unknown model {gpu.model_name or gpu.product!r}")
            continue
        error = _layout_error(gpu.model, gpu.layout)
        if error:
            problems.append(f"GPU {gpu.index}: reported layout is invalid: {error}")
            continue
        usable.append((gpu, gpu.model))
    pinned = _pinned_by_bound_pods(usable, bound_pods)
    snapshots = tuple(
        GpuSnapshot(
            index=gpu.index,
            model=model,
            instances=tuple(
                ObservedInstance(
                    i.profile_id, i.start, used=i.in_use or (gpu.index, i.instance) in pinned
                )
                for i in sorted(gpu.instances, key=lambda i: (i.start, i.profile_id))
            ),
        )
        for gpu, model in usable
    )
    return snapshots, {gpu.index: model for gpu, model in usable}, tuple(problems)


@lru_cache(maxsize=65536)
def _layout_error(model: GpuModel, layout: tuple[Instance, ...]) -> str:
    errors = layout_errors(model, layout)
    return errors[0] if errors else ""


def _pinned_by_bound_pods(
    gpus: list[tuple[GpuStatus, GpuModel]], bound_pods: Iterable[Obj]
) -> set[tuple[int, Instance]]:
    """Free instances that bound pods the status does not list yet are about to take."""
    reported = {i.pod for gpu, _ in gpus for i in gpu.instances if i.pod}
    wanted: dict[str, int] = {}
    for pod in bound_pods:
        if pod_key(pod) in reported:
            continue
        try:
            requests = mig_requests(pod)
        except RequestError:
            continue
        for profile, count in requests.items():
            wanted[profile] = wanted.get(profile, 0) + count
    pinned: set[tuple[int, Instance]] = set()
    for profile_name, count in sorted(wanted.items()):
        for gpu, model in gpus:
            match = model.find_profile(profile_name)
            if match is None:
                continue
            for inst in sorted(gpu.instances, key=lambda i: i.start):
                if count and not inst.in_use and inst.profile_id == match.nvml_id:
                    pinned.add((gpu.index, inst.instance))
                    count -= 1
    return pinned


# --------------------------------------------------------------------------------------------
# The placements annotation
# --------------------------------------------------------------------------------------------


def parse_reservation(mignode: Obj) -> Reservation:
    """The annotation as written by :func:`render_reservation`; anything unreadable is empty."""
    raw = (meta(mignode).get("annotations") or {}).get(PLACEMENTS_ANNOTATION)
    if not raw:
        return Reservation()
    try:
        data = json.loads(raw)
        written = datetime.fromisoformat(str(data["writtenAt"]).replace("Z", "+00:00"))
        name = str(meta(mignode).get("name", ""))
        pods = {
            str(pod): tuple(
                Assignment(name, int(a["gpu"]), int(a["profileId"]), int(a["start"]))
                for a in slices
            )
            for pod, slices in data["pods"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return Reservation()
    return Reservation(written, pods)


def render_reservation(written_at: datetime, pods: Mapping[str, Iterable[Assignment]]) -> str:
    data: dict[str, Any] = {
        "writtenAt": written_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pods": {
            pod: [{"gpu": a.gpu, "profileId": a.profile_id, "start": a.start} for a in slices]
            for pod, slices in sorted(pods.items())
        },
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True)

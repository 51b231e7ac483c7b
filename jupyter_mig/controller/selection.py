"""Which pending pods the controller serves, what they ask for, and which nodes may run them.

Pods and nodes are plain dicts as the API server sends them.  Everything here is pure, so the
rules the scheduler applies (node selector, required node affinity, taints and tolerations) can
be checked case by case without a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.api.mignode import is_interactive
from jupyter_mig.mig.models import normalize_profile_name

Obj = Mapping[str, Any]

#: In ``interactive_namespaces``: trust the interactive mark in every namespace.
ANY_NAMESPACE = "*"

#: Taint effects that keep a pod off a node (PreferNoSchedule only lowers its score).
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


class RequestError(ValueError):
    """A pod's MIG request that cannot be served as written; ``reason`` is the Event reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PendingPod:
    """A pending pod the controller may serve, with what it asks for."""

    key: str  # namespace/name, as MigNode status names pods
    uid: str
    namespace: str
    name: str
    interactive: bool
    priority: int
    pod: Obj


def meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def pod_key(pod: Obj) -> str:
    m = meta(pod)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def trusts_interactive_mark(namespace: str, interactive_namespaces: Collection[str]) -> bool:
    """Whether pods in ``namespace`` may jump the batch wait with the interactive mark.

    Anyone who may create a pod may set a label or an annotation, so the mark counts only in
    the namespaces the admin names (the hub's, where only the hub creates pods).
    """
    return ANY_NAMESPACE in interactive_namespaces or namespace in interactive_namespaces


def pending_pod(pod: Obj, interactive_namespaces: Collection[str] = ()) -> PendingPod:
    """``interactive_namespaces``: where the interactive mark is honoured (elsewhere ignored)."""
    m = meta(pod)
    namespace = str(m.get("namespace", ""))
    spec = pod.get("spec") or {}
    priority = spec.get("priority")
    return PendingPod(
        key=pod_key(pod),
        uid=str(m.get("uid", "")),
        namespace=namespace,
        name=str(m.get("name", "")),
        interactive=trusts_interactive_mark(namespace, interactive_namespaces)
        and is_interactive(m.get("labels"), m.get("annotations")),
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        pod=pod,
    )


# --------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------


def asks_for_mig(pod: Obj) -> bool:
    """Whether any container's limits or requests name an ``nvidia.com/mig-*`` resource."""
    spec = pod.get("spec") or {}
    for container in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ())):
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            if any(str(k).startswith(c.MIG_RESOURCE_PREFIX) for k in resources.get(section) or {}):
                return True
    return False


def is_candidate(pod: Obj) -> bool:
    """A pod that more MIG capacity could help: the same test the scheduler's failure implies.

    Pending, not bound, marked unschedulable by the scheduler, not nominated for a node after a
    preemption (capacity is being freed for it there), not a DaemonSet or mirror pod, not being
    deleted, and asking for a MIG device.
    """
    m = meta(pod)
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if m.get("deletionTimestamp") or spec.get("nodeName"):
        return False
    if status.get("phase", "Pending") != "Pending" or status.get("nominatedNodeName"):
        return False
    if any(ref.get("kind") in ("DaemonSet", "Node") for ref in m.get("ownerReferences") or ()):
        return False
    scheduled = next(
        (x for x in status.get("conditions") or () if x.get("type") == "PodScheduled"), None
    )
    if scheduled is None or scheduled.get("status") != "False":
        return False
    if scheduled.get("reason") != "Unschedulable":
        return False
    return asks_for_mig(pod)


def holds_devices(pod: Obj) -> bool:
    """A pod bound to a node that has or will get its devices (not finished, not gone)."""
    status = pod.get("status") or {}
    return bool((pod.get("spec") or {}).get("nodeName")) and status.get("phase") not in (
        "Succeeded",
        "Failed",
    )


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def _container_mig(container: Obj, where: str) -> dict[str, int]:
    resources = container.get("resources") or {}
    # Extended resources cannot be overcommitted: limits are required and requests equal them.
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    found: dict[str, int] = {}
    for resource, raw in amounts.items():
        name = str(resource)
        if not name.startswith(c.MIG_RESOURCE_PREFIX):
            continue
        count = _quantity(raw)
        if count is None:
            raise RequestError(
                "InvalidMigRequest",
                f"{where} asks for {raw!r} of {name}; MIG devices are counted in whole numbers",
            )
        if count:
            found[normalize_profile_name(name)] = count
    if len(found) > 1:
        names = " and ".join(f"{c.MIG_RESOURCE_PREFIX}{p}" for p in sorted(found))
        raise RequestError(
            "MultipleMigProfiles",
            f"{where} asks for {names}; a container can use MIG devices of one profile only, "
            "so split the request over several containers",
        )
    return found


def _quantity(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw >= 0 else None
    text = str(raw).strip()
    return int(text) if text.isdigit() else None


def mig_requests(pod: Obj) -> dict[str, int]:
    """Profile name (as in the resource name, e.g. ``1g.10gb``) → devices the pod needs.

    As the scheduler counts them: app containers and restartable init containers (sidecars)
    add up; an ordinary init container runs alone, so it needs only its own devices.
    """
    spec = pod.get("spec") or {}
    running: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for i, container in enumerate(spec.get("initContainers") or ()):
        where = f"init container {container.get('name', i)!r}"
        found = _container_mig(container, where)
        if container.get("restartPolicy") == "Always":
            for profile, count in found.items():
                running[profile] = running.get(profile, 0) + count
        else:
            for profile, count in found.items():
                init_peak[profile] = max(init_peak.get(profile, 0), count)
    for i, container in enumerate(spec.get("containers") or ()):
        where = f"container {container.get('name', i)!r}"
        for profile, count in _container_mig(container, where).items():
            running[profile] = running.get(profile, 0) + count
    total = dict(running)
    for profile, count in init_peak.items():
        total[profile] = max(total.get(profile, 0), count)
    return {p: n for p, n in sorted(total.items()) if n}


# --------------------------------------------------------------------------------------------
# Node eligibility: nodeSelector, required node affinity, taints and tolerations, cordons
# --------------------------------------------------------------------------------------------


def placement_key(pod: Obj) -> str:
    """What decides the nodes a pod may use; pods with equal keys may use the same nodes."""
    spec = pod.get("spec") or {}
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    rules = [spec.get("nodeSelector") or {}, required, spec.get("tolerations") or []]
    return json.dumps(rules, sort_keys=True, separators=(",", ":"))


def node_schedulable(node: Obj) -> bool:
    """Not cordoned.  (The scheduler's unschedulable taint mirrors this flag.)"""
    return not (node.get("spec") or {}).get("unschedulable", False)


def node_eligible(pod: Obj, node: Obj) -> bool:
    """Whether the scheduler could place ``pod`` on ``node`` as far as placement rules go."""
    spec = pod.get("spec") or {}
    labels = meta(node).get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if affinity is not None:
        terms = affinity.get("nodeSelectorTerms") or ()
        if not any(_term_matches(t, node) for t in terms):
            return False
    return tolerates(spec.get("tolerations") or (), (node.get("spec") or {}).get("taints") or ())


def _term_matches(term: Obj, node: Obj) -> bool:
    """A node selector term: every expression holds; an empty term matches no node."""
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False
    labels = meta(node).get("labels") or {}
    field_values = {"metadata.name": str(meta(node).get("name", ""))}
    return all(_requirement(e, labels) for e in expressions) and all(
        _requirement(f, field_values) for f in fields
    )


def _requirement(expr: Obj, values: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    operator = expr.get("operator", "")
    wanted: Sequence[str] = expr.get("values") or ()
    present = key in values
    value = values.get(key)
    if operator == "In":
        return present and value in wanted
    if operator == "NotIn":
        return not present or value not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(wanted) != 1:
            return False
        try:
            have, bound = int(str(value)), int(wanted[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False  # an operator the API server would have refused


def tolerates(tolerations: Sequence[Obj], taints: Sequence[Obj]) -> bool:
    """Every NoSchedule/NoExecute taint is tolerated by some toleration."""
    return all(
        any(_tolerates(t, taint) for t in tolerations)
        for taint in taints
        if taint.get("effect") in _BLOCKING_EFFECTS
    )


def _tolerates(toleration: Obj, taint: Obj) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")

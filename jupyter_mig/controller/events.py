"""What the controller tells the owners of the pods it works for, and how it avoids repeating it.

Rounds run often; a pod that cannot be served would otherwise collect one identical Event per
round.  The ledger remembers what has been said to each pod (by uid) while the pod is pending and
drops it when the pod is gone, so each distinct message is posted once.  (A restarted controller
says it once more; the API server folds repeated Events anyway.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.planner import Assignment

NORMAL = "Normal"
WARNING = "Warning"

# Reasons (CamelCase, as Event reasons are).
REPARTITIONING = "MigRepartitioning"
WAITING = "WaitingForMigCapacity"
UNKNOWN_PROFILE = "UnknownMigProfile"
SLICE_TOO_LARGE = "MigSliceTooLarge"
PROFILE_NOT_OFFERED = "MigProfileNotOffered"
REQUEST_TOO_LARGE = "MigRequestTooLarge"
NO_ELIGIBLE_NODE = "NoEligibleMigNode"


@dataclass(frozen=True, slots=True)
class PodEvent:
    namespace: str
    name: str
    uid: str
    type: str
    reason: str
    message: str


def creating_message(
    assignments: Sequence[Assignment], models: dict[tuple[str, int], GpuModel], destroys: int
) -> str:
    """``creating 1g.10gb on gpu-node-1 GPU 0`` (and what is removed for it)."""
    parts = [
        f"{models[(a.node, a.gpu)].by_id[a.profile_id].name} on {a.node} GPU {a.gpu}"
        for a in assignments
    ]
    message = "creating " + ", ".join(parts)
    if destroys:
        plural = "s" if destroys > 1 else ""
        message += f" (removing {destroys} free instance{plural} in the way)"
    return message


def waiting_message(requests: dict[str, int], gpus: int) -> str:
    wanted = ", ".join(f"{n} x {p}" if n > 1 else p for p, n in requests.items())
    plural = "s" if gpus != 1 else ""
    return (
        f"no room for {wanted} on the {gpus} eligible GPU{plural} without touching slices in "
        "use; waiting for slices to be released"
    )


def not_offered_message(profile: str, offered: Iterable[str]) -> str:
    names = ", ".join(sorted(set(offered))) or "none"
    return (
        f"no GPU on the nodes this pod may use offers the MIG profile {profile}; they offer {names}"
    )


def too_large_for_node_message(requests: dict[str, int]) -> str:
    wanted = ", ".join(f"{n} x {p}" for p, n in requests.items())
    return (
        f"asks for {wanted}, more than any node this pod may use can hold even when empty; "
        "all MIG devices of a pod must come from one node"
    )


def no_node_message() -> str:
    return (
        "no node labelled jupyter-mig.io/partitioning=dynamic matches this pod's node selector, "
        "node affinity and tolerations (or all of them are cordoned)"
    )


class EventLedger:
    """Which (reason, message) each pending pod has been told already."""

    def __init__(self) -> None:
        self._told: dict[str, set[tuple[str, str]]] = {}

    def fresh(self, events: Iterable[PodEvent]) -> list[PodEvent]:
        """The events not told yet (recording them as told)."""
        new = []
        for event in events:
            told = self._told.setdefault(event.uid, set())
            key = (event.reason, event.message)
            if key not in told:
                told.add(key)
                new.append(event)
        return new

    def untell(self, event: PodEvent) -> None:
        """Posting failed: say it again next time."""
        self._told.get(event.uid, set()).discard((event.reason, event.message))

    def keep_only(self, uids: Iterable[str]) -> None:
        """Forget pods that are no longer pending."""
        alive = set(uids)
        for uid in [u for u in self._told if u not in alive]:
            del self._told[uid]

    def clear(self) -> None:
        self._told.clear()

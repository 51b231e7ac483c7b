"""Conditions in the metav1.Condition shape, kept as plain dicts.

``lastTransitionTime`` changes only when a condition's status changes, so it tells when the
state flipped rather than when the agent last looked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server stores metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """A new condition list with ``type_`` set; the others are kept as they are, in order."""
    previous = get_condition(conditions, type_)
    if previous is not None and previous.get("status") == status:
        transition = previous.get("lastTransitionTime") or format_time(now or datetime.now(UTC))
    else:
        transition = format_time(now or datetime.now(UTC))
    updated: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        updated["observedGeneration"] = observed_generation
    result = [dict(cond) for cond in conditions if cond.get("type") != type_]
    position = next((i for i, cond in enumerate(conditions) if cond.get("type") == type_), None)
    result.insert(len(result) if position is None else position, updated)
    return result


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((cond for cond in conditions if cond.get("type") == type_), None)


def condition_is(conditions: Sequence[Mapping[str, Any]], type_: str, status: str) -> bool:
    """Whether condition ``type_`` exists with ``status`` ("True", "False", "Unknown")."""
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == status

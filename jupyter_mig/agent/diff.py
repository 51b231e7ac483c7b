"""The agent's apply step as a pure function: observed GPU instances + desired layout → operations.

Kept free of I/O so the hard rules can be checked exhaustively (tests/unit/test_agent_diff.py):
an in-use instance is never destroyed, the result is a valid layout, instances both sides agree on
are left alone (no churn), and the diff of a layout against itself is empty.  Instances are matched
by ``(start, profile_id)``; profile names are for people and drift between drivers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import GpuModel


@dataclass(frozen=True, slots=True)
class GpuDiff:
    """What to do on one GPU.  Apply ``destroy`` first, then ``create`` in order.

    ``blocked``: in-use instances the spec drops (kept; the agent reports them).
    ``deferred``: desired instances that cannot be created while ``blocked`` ones stand.
    ``invalid``: why the desired layout is refused; when non-empty every list is empty.
    """

    destroy: tuple[Instance, ...] = ()
    create: tuple[Instance, ...] = ()
    blocked: tuple[Instance, ...] = ()
    deferred: tuple[Instance, ...] = ()
    invalid: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.destroy or self.create)

    @property
    def complete(self) -> bool:
        """Whether applying this diff reaches the desired layout exactly."""
        return not (self.blocked or self.deferred or self.invalid)


def diff_gpu(
    model: GpuModel,
    observed: Iterable[Instance],
    in_use: Collection[Instance],
    desired: Iterable[Instance],
) -> GpuDiff:
    """The minimal operations that move ``observed`` towards ``desired`` without touching the
    ``in_use`` instances (those a pod or a process holds).

    An invalid desired layout yields no operations at all (never half-apply a bad spec).  When an
    in-use instance the spec drops is in the way, the desired instances that still fit are created
    (in placement order) and the others are reported as ``deferred``.
    """
    wanted = sorted(set(desired))
    errors = layout_errors(model, wanted)
    if errors:
        return GpuDiff(invalid=tuple(errors))
    wanted_set = set(wanted)
    present = set(observed)
    destroy = tuple(sorted(i for i in present if i not in wanted_set and i not in in_use))
    blocked = tuple(sorted(i for i in present if i not in wanted_set and i in in_use))
    remaining = [i for i in present if i in wanted_set or i in in_use]
    create: list[Instance] = []
    deferred: list[Instance] = []
    for candidate in wanted:
        if candidate in present:
            continue
        if layout_errors(model, (*remaining, *create, candidate)):
            deferred.append(candidate)
        else:
            create.append(candidate)
    return GpuDiff(destroy=destroy, create=tuple(create), blocked=blocked, deferred=tuple(deferred))

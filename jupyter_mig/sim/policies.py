"""The policies the simulator compares: ``dynamic`` (the real planner), ``static:<layout>`` and
the nos baselines ``nos-greedy``, ``nos-greedy-ordered`` and ``nos-shipped`` (in
:mod:`jupyter_mig.sim.nos`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, enumerate_layouts
from jupyter_mig.mig.models import GpuModel, Profile
from jupyter_mig.mig.planner import (
    DEFAULT_SPARES,
    Demand,
    GpuSnapshot,
    NodeSnapshot,
    ObservedInstance,
    plan_round,
)
from jupyter_mig.mig.sizes import SizeError, parse_size, resolve_for_model
from jupyter_mig.sim.engine import Batching, Decision, GpuChange, GpuView, PodView, Policy, Slot
from jupyter_mig.sim.nos import NosGreedyPolicy, whole_gpu

#: Defaults for ``dynamic``: plan 2 s after the last pending pod showed up, at most 10 s after the
#: first, so a burst of notebook starts is planned together without making anyone wait long.
DYNAMIC_BATCHING = Batching(idle=2.0, max_wait=10.0)

#: Named static layouts, as size requests per GPU.  ``all-*`` fills the GPU with one profile.
STATIC_LAYOUTS = ("all-1g", "balanced", "all-3g")


@dataclass(frozen=True)
class DynamicPolicy:
    """Every round calls :func:`jupyter_mig.mig.planner.plan_round` and applies its plan."""

    batching: Batching | None = DYNAMIC_BATCHING
    name: str = "dynamic"
    start_whole: bool = False  # start like nos: one whole-GPU instance per GPU
    spares: int = DEFAULT_SPARES  # free instances kept per profile in use, as the controller

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]:
        # By default MIG mode is on and nothing carved: only demanded instances are created.
        return whole_gpu(model) if self.start_whole else ()

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        by_node: dict[str, list[GpuSnapshot]] = {}
        for gpu in gpus:
            if gpu.busy:
                continue  # its next layout is being applied; plan it once it is observed
            instances = tuple(
                ObservedInstance(i.profile_id, i.start, used=True) for i in gpu.used
            ) + tuple(ObservedInstance(i.profile_id, i.start) for i in gpu.free)
            by_node.setdefault(gpu.node, []).append(GpuSnapshot(gpu.index, gpu.model, instances))
        nodes = [NodeSnapshot(name, tuple(snaps)) for name, snaps in by_node.items()]
        demands = [
            Demand(p.name, p.items, priority=p.priority, interactive=p.interactive) for p in waiting
        ]
        plan = plan_round(nodes, demands, spares=self.spares)
        changes = {
            key: GpuChange(plan.destroyed.get(key, ()), plan.created.get(key, ()))
            for key in sorted(set(plan.created) | set(plan.destroyed))
        }
        placements: dict[str, tuple[Slot, ...]] = {
            name: tuple((a.node, a.gpu, Instance(a.start, a.profile_id)) for a in assignments)
            for name, assignments in plan.placements.items()
            if assignments
        }
        return Decision(changes, placements)


@dataclass(frozen=True)
class StaticPolicy:
    """A fixed layout on every GPU, carved before the run and never changed."""

    name: str
    layout: tuple[Instance, ...]
    batching: Batching | None = None

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]:
        return self.layout

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        return Decision()


def static_sizes(layout: str, model: GpuModel) -> list[str] | None:
    """The size requests of a named layout on ``model``; None for a custom ``2x1g+2g+3g``."""
    if layout == "balanced":
        # 2 x 1g + 2g + 3g on 7-compute parts; 2 x 1g + 2g on the 4-compute ones (A30, RTX PRO).
        return ["1g", "1g", "2g", "3g"] if model.compute_budget >= 7 else ["1g", "1g", "2g"]
    return None


_ITEM = re.compile(r"^(?:(\d+)\s*[x*]\s*)?(\S+?)(?:\s*[x*]\s*(\d+))?$")


def static_layout(layout: str, model: GpuModel) -> tuple[Instance, ...]:
    """A concrete layout (with placements) for ``static:<layout>`` on ``model``.

    ``all-<size>`` fills the GPU with the profile ``<size>`` resolves to; ``balanced`` is named
    above; anything else is a ``+``-separated list of sizes with optional counts (``2x1g+2g+3g``).
    """
    where = f"policy static:{layout}"
    if layout.startswith("all-"):
        profile = _resolve(layout[4:], model, where)
        options = list(enumerate_layouts(model, profiles=[profile], maximal_only=True))
        return max(options, key=lambda lay: (len(lay), [-i.start for i in lay]))
    sizes = static_sizes(layout, model)
    if sizes is None:
        sizes = []
        for part in layout.split("+"):
            match = _ITEM.match(part.strip())
            if not part.strip() or match is None:
                raise UserError(f"{where}: cannot read {part!r}; use e.g. static:2x1g+2g+3g")
            count = int(match.group(1) or match.group(3) or 1)
            if not 1 <= count <= model.grid:
                raise UserError(f"{where}: count {count} must be between 1 and {model.grid}")
            sizes.extend([match.group(2)] * count)
    wanted = Counter(_resolve(size, model, where).nvml_id for size in sizes)
    profiles = [model.by_id[pid] for pid in wanted]
    for candidate in enumerate_layouts(model, profiles=profiles):
        if Counter(i.profile_id for i in candidate) == wanted:
            return candidate
    names = " + ".join(f"{n} x {model.by_id[p].name}" for p, n in sorted(wanted.items()))
    raise UserError(f"{where}: {names} does not fit on one {model.name}")


def _resolve(size: str, model: GpuModel, where: str) -> Profile:
    try:
        profile = resolve_for_model(parse_size(size), model)
    except SizeError as err:
        raise UserError(f"{where}: {err}") from None
    if profile is None:
        raise UserError(f"{where}: {model.name} has no profile for {size!r}")
    return profile


#: The nos baselines by name: (faithful to nos's random choices and quirks, nos's shipped tables).
NOS_POLICIES = {
    "nos-greedy": (True, False),
    "nos-greedy-ordered": (False, False),
    "nos-shipped": (True, True),
}


def make_policy(
    spec: str,
    model: GpuModel,
    dynamic_batching: Batching = DYNAMIC_BATCHING,
    seed: int = 0,
    dynamic_start_whole: bool = False,
    dynamic_spares: int = DEFAULT_SPARES,
) -> Policy:
    """``dynamic``, a nos baseline or ``static:<layout>``; a user error names the choices.
    ``seed`` drives the random choices nos makes (``nos-greedy``, ``nos-shipped``);
    ``dynamic_start_whole`` starts ``dynamic`` from one whole-GPU instance per GPU, as nos;
    ``dynamic_spares`` is the controller's ``--spares``."""
    text = spec.strip()
    if text == "dynamic":
        return DynamicPolicy(
            batching=dynamic_batching, start_whole=dynamic_start_whole, spares=dynamic_spares
        )
    if text in NOS_POLICIES:
        faithful, shipped = NOS_POLICIES[text]
        policy = NosGreedyPolicy(name=text, seed=seed, faithful=faithful, shipped=shipped)
        policy.geometries(model)  # nos-shipped: a model nos has no table for is a user error
        return policy
    if text.startswith("static:") and text[7:].strip():
        layout = text[7:].strip()
        return StaticPolicy(name=f"static:{layout}", layout=static_layout(layout, model))
    choices = ", ".join(["dynamic", *NOS_POLICIES, *(f"static:{s}" for s in STATIC_LAYOUTS)])
    raise UserError(f"--policy {spec!r}: unknown policy; use one of {choices} or static:2x1g+2g+3g")

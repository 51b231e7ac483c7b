"""Shared test helpers: random planning rounds (as JSON contract documents) and a plan checker.

One generator serves two drivers: :class:`RandomChooser` (a seeded ``random.Random``, for the
reproducible quality comparison) and :class:`DrawChooser` (hypothesis draws, so failures shrink).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

from jupyter_mig.mig.layout import Instance, is_valid, layout_errors
from jupyter_mig.mig.models import BUILTIN_MODELS, GpuModel
from jupyter_mig.mig.planner import Demand, NodeSnapshot, Plan
from jupyter_mig.mig.sizes import SizeRequest, resolve_for_model

T = TypeVar("T")

#: Multiplies every property test's example count (e.g. 20 for a long bug hunt).
SCALE = float(os.environ.get("JUPYTER_MIG_TEST_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, round(count * SCALE))


MODEL_NAMES = tuple(m.name for m in BUILTIN_MODELS)
MODELS_BY_NAME = {m.name: m for m in BUILTIN_MODELS}
SIZE_WORDS = (
    "5gb",
    "6gb",
    "10gb",
    "10GB",
    "12gb",
    "18gb",
    "20gb",
    "24gb",
    "35gb",
    "40gb",
    "48gb",
    "10G",
    "10GiB",
    "20GiB",
    "1g",
    "2g",
    "3g",
    "4g",
)
PREFIXES = ("", "", "", "mig-", "nvidia.com/mig-")


class Chooser(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def chance(self, percent: int) -> bool: ...


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent


class DrawChooser:
    """Hypothesis draws; everything shrinks towards the first option, small numbers and False."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return int(self.draw(st.integers(lo, hi)))

    def pick(self, options: Sequence[T]) -> T:
        return options[self.draw(st.integers(0, len(options) - 1))]

    def chance(self, percent: int) -> bool:
        return bool(self.draw(st.integers(0, 99)) >= 100 - percent)


def random_layout(c: Chooser, model: GpuModel, attempts: int) -> list[Instance]:
    """A random valid layout: up to ``attempts`` tries to add an instance at a legal start."""
    plain = [p for p in model.profiles if p.media == "none"]
    layout: list[Instance] = []
    for _ in range(attempts):
        profile = c.pick(plain) if c.chance(85) else c.pick(model.profiles)
        candidate = Instance(c.pick(profile.starts), profile.nvml_id)
        if candidate not in layout and is_valid(model, [*layout, candidate]):
            layout.append(candidate)
    return layout


def random_round(
    c: Chooser,
    *,
    max_nodes: int = 3,
    max_gpus: int = 2,
    min_pods: int = 2,
    max_pods: int = 10,
    max_existing: int = 4,
) -> dict[str, Any]:
    """A random planning round as a contract input document."""
    nodes: list[dict[str, Any]] = []
    round_models: list[GpuModel] = []
    for n in range(c.integer(1, max_nodes)):
        node_model = MODELS_BY_NAME[c.pick(MODEL_NAMES)]
        gpus = []
        for g in range(c.integer(1, max_gpus)):
            model = MODELS_BY_NAME[c.pick(MODEL_NAMES)] if c.chance(20) else node_model
            round_models.append(model)
            instances = []
            for inst in random_layout(c, model, c.integer(0, max_existing)):
                profile = model.by_id[inst.profile_id]
                entry: dict[str, Any] = {
                    "profile": profile.nvml_id if c.chance(15) else profile.name,
                    "start": inst.start,
                }
                if c.chance(50):
                    entry["used"] = True
                elif c.chance(50):
                    entry["used"] = False
                instances.append(entry)
            gpus.append({"index": g, "model": model.name, "instances": instances})
        nodes.append({"name": f"node-{n}", "gpus": gpus})
    node_names = [n["name"] for n in nodes]
    pending: list[dict[str, Any]] = []
    for i in range(c.integer(min_pods, max_pods)):
        requests: dict[str, int] = {}
        for _ in range(2 if c.chance(25) else 1):
            if c.chance(50):
                text = c.pick(SIZE_WORDS)
            else:
                model = c.pick(round_models)
                plain = [p for p in model.profiles if p.media == "none"]
                profile = c.pick(plain) if c.chance(90) else c.pick(model.profiles)
                text = c.pick(PREFIXES) + (profile.resource_name if c.chance(20) else profile.name)
            requests[text] = 1 + (c.integer(1, 2) if c.chance(25) else 0)
        pod: dict[str, Any] = {"name": f"pod-{i}", "requests": requests}
        if c.chance(30):
            chosen = [n for n in node_names if c.chance(50)] or [c.pick(node_names)]
            if c.chance(5):
                chosen.append("ghost-node")
            pod["nodes"] = chosen
        if c.chance(25):
            pod["priority"] = 1
        if c.chance(25):
            pod["interactive"] = True
        pending.append(pod)
    return {"nodes": nodes, "pending": pending}


@st.composite
def rounds(draw: Any, **limits: int) -> dict[str, Any]:
    """Hypothesis strategy: contract input documents of small random rounds."""
    return random_round(DrawChooser(draw), **limits)


# --------------------------------------------------------------------------------------------
# The checker: every hard rule of the planner, as a list of human-readable violations.
# --------------------------------------------------------------------------------------------


def _matches(items: Sequence[SizeRequest], got: Sequence[int], models: Sequence[GpuModel]) -> bool:
    """Whether each item can be paired with one assignment whose profile it resolves to."""
    wanted = [
        [j for j, pid in enumerate(got) if _resolved(item, models[j]) == pid] for item in items
    ]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in wanted[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return len(items) == len(got) and all(augment(i, set()) for i in range(len(items)))


def _resolved(item: SizeRequest, model: GpuModel) -> int | None:
    p = resolve_for_model(item, model)
    return None if p is None else p.nvml_id


def plan_violations(
    nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], plan: Plan, spares: int = 0
) -> list[str]:
    """Every broken hard rule of ``plan`` for this round; empty when the plan is sound.  With
    ``spares``, instances no pod is placed on may be created: at most that many per profile
    and model."""
    bad: list[str] = []
    gpus = {(n.name, g.index): g for n in nodes for g in n.gpus}
    if set(plan.layouts) != set(gpus):
        bad.append(f"layouts cover {sorted(plan.layouts)}, input GPUs are {sorted(gpus)}")
    creates = destroys = 0
    created_all: set[tuple[str, int, Instance]] = set()
    for key, gpu in gpus.items():
        target = plan.layouts.get(key, ())
        errors = layout_errors(gpu.model, target)
        if errors:
            bad.append(f"{key}: invalid target layout: {errors}")
        if len(set(target)) != len(target):
            bad.append(f"{key}: duplicate instances in the target layout")
        before = {Instance(i.start, i.profile_id) for i in gpu.instances}
        in_use = {Instance(i.start, i.profile_id) for i in gpu.instances if i.used}
        lost = in_use - set(target)
        if lost:
            bad.append(f"{key}: in-use instances destroyed or moved: {sorted(lost)}")
        created = set(target) - before
        destroyed = before - set(target)
        creates += len(created)
        destroys += len(destroyed)
        if set(plan.created.get(key, ())) != created:
            bad.append(f"{key}: plan.created {plan.created.get(key)} != diff {sorted(created)}")
        if set(plan.destroyed.get(key, ())) != destroyed:
            bad.append(
                f"{key}: plan.destroyed {plan.destroyed.get(key)} != diff {sorted(destroyed)}"
            )
        created_all |= {(key[0], key[1], i) for i in created}
    if (plan.creates, plan.destroys) != (creates, destroys):
        bad.append(
            f"ops (create {plan.creates}, destroy {plan.destroys}) != layout diff "
            f"(create {creates}, destroy {destroys})"
        )
    names = {d.name for d in demands}
    if set(plan.placements) | set(plan.unplaced) != names:
        bad.append("placements + unplaced do not cover exactly the pending pods")
    if set(plan.placements) & set(plan.unplaced):
        bad.append(f"pods both placed and unplaced: {set(plan.placements) & set(plan.unplaced)}")
    if len(set(plan.unplaced)) != len(plan.unplaced):
        bad.append("a pod is listed twice in unplaced")
    served: dict[tuple[str, int, Instance], str] = {}
    for demand in demands:
        got = plan.placements.get(demand.name)
        if got is None:
            continue
        where = {a.node for a in got}
        if len(where) > 1:
            bad.append(f"{demand.name}: instances on several nodes {sorted(where)}")
        if demand.nodes is not None and not where <= set(demand.nodes):
            bad.append(f"{demand.name}: placed on {sorted(where)} outside {list(demand.nodes)}")
        models: list[GpuModel] = []
        for a in got:
            key = (a.node, a.gpu)
            inst = Instance(a.start, a.profile_id)
            if key not in gpus:
                bad.append(f"{demand.name}: placed on unknown GPU {key}")
                continue
            models.append(gpus[key].model)
            if inst not in plan.layouts.get(key, ()):
                bad.append(f"{demand.name}: {inst} is not in the target layout of {key}")
            if any(i.used and Instance(i.start, i.profile_id) == inst for i in gpus[key].instances):
                bad.append(f"{demand.name}: given {inst} on {key}, which another pod uses")
            slot = (a.node, a.gpu, inst)
            if slot in served:
                bad.append(f"{demand.name} and {served[slot]} share {inst} on {key}")
            served[slot] = demand.name
        if len(models) == len(got) and not _matches(
            demand.items, [a.profile_id for a in got], models
        ):
            bad.append(f"{demand.name}: placements {got} do not match requests {demand.items}")
    orphans = created_all - set(served)
    extra: dict[tuple[str, int], int] = {}
    for node, index, inst in orphans:
        key = (gpus[(node, index)].model.name, inst.profile_id)
        extra[key] = extra.get(key, 0) + 1
    too_many = {key: n for key, n in extra.items() if n > spares}
    if too_many:
        bad.append(f"created instances that no pod is placed on: {sorted(orphans)}")
    return bad

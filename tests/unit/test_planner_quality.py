"""Planner quality against an exact MILP optimum (issue 2, item 4).

The exact solver (``exact_solver.py``) is itself checked first: its layouts are valid, its
placements consistent, and on one-node rounds it agrees with a brute force over
``enumerate_layouts``.  Then the planner must place at least 99% of the pods the optimum places
over a fixed set of random small rounds.

The optimum is lexicographic by tier (higher priority, then interactive, first) and the ratio
counts pods over all rounds.  Where the planner serves the optimal pods, the test also reports how
often it used more destroy+create operations than the minimum (reported, not asserted).

A second distribution, of the size clusters see (``realistic_round``: up to 5 nodes x 4 GPUs,
about half the instances in use, up to 30 pods, pinned and multi-instance pods), must reach
99.9 % of the optimum; its operations are reported beside it.

Run ``python tests/unit/test_planner_quality.py [--wide] [ROUNDS]`` to print, one JSON line each,
every round where the planner serves less than the optimum or spends more operations, shrunk, with
its contract input (``jupyter-mig plan`` reads the ``input`` field).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from exact_solver import ExactResult, served_per_tier, solve_exact, tiers_of
from strategies import (
    MODEL_NAMES,
    MODELS_BY_NAME,
    RandomChooser,
    plan_violations,
    random_layout,
    random_round,
)

from jupyter_mig.mig.contract import parse_input
from jupyter_mig.mig.layout import Instance, enumerate_layouts, layout_errors
from jupyter_mig.mig.planner import Demand, NodeSnapshot, plan_round
from jupyter_mig.mig.sizes import resolve_for_model

ROUNDS = 300
QUALITY = 0.99


def _doc(nodes: list[dict[str, Any]], pending: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodes": nodes, "pending": pending}


def realistic_round(c: RandomChooser) -> dict[str, Any]:
    """A round of the size clusters see (issue 12): 1-5 nodes x 1-4 GPUs of 1-3 models, random
    valid layouts with about half the instances in use, up to 30 pending pods asking for single
    profiles or sizes, a fifth of them pinned to one node, one in ten asking for 2-3 instances,
    some of higher priority or interactive."""
    models = [MODELS_BY_NAME[c.pick(MODEL_NAMES)] for _ in range(c.integer(1, 3))]
    nodes: list[dict[str, Any]] = []
    for n in range(c.integer(1, 5)):
        model = c.pick(models)
        gpus = []
        for g in range(c.integer(1, 4)):
            instances = [
                {
                    "profile": model.by_id[inst.profile_id].name,
                    "start": inst.start,
                    "used": c.chance(50),
                }
                for inst in random_layout(c, model, c.integer(0, 6))
            ]
            gpus.append({"index": g, "model": model.name, "instances": instances})
        nodes.append({"name": f"node-{n}", "gpus": gpus})
    used_models = sorted({gpu["model"] for node in nodes for gpu in node["gpus"]})
    pending: list[dict[str, Any]] = []
    for i in range(c.integer(5, 30)):
        model = MODELS_BY_NAME[c.pick(used_models)]
        plain = [p for p in model.profiles if p.media == "none"]
        text = (
            c.pick(("1g", "2g", "3g", "4g", "10gb", "20gb")) if c.chance(30) else c.pick(plain).name
        )
        count = c.integer(2, 3) if c.chance(10) else 1
        pod: dict[str, Any] = {"name": f"pod-{i}", "requests": {text: count}}
        if c.chance(20):
            pod["nodes"] = [c.pick(nodes)["name"]]
        if c.chance(20):
            pod["priority"] = 1
        if c.chance(20):
            pod["interactive"] = True
        pending.append(pod)
    return {"nodes": nodes, "pending": pending}


# --------------------------------------------------------------------------------------------
# The exact solver is right
# --------------------------------------------------------------------------------------------


def check_exact(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], ex: ExactResult) -> None:
    gpus = {(n.name, g.index): g for n in nodes for g in n.gpus}
    assert set(ex.layouts) == set(gpus)
    for key, layout in ex.layouts.items():
        gpu = gpus[key]
        assert layout_errors(gpu.model, layout) == [], (key, layout)
        used = {Instance(i.start, i.profile_id) for i in gpu.instances if i.used}
        assert used <= set(layout)
    handed: Counter[tuple[str, int, int]] = Counter()
    by_name = {d.name: d for d in demands}
    for pod, got in ex.placements.items():
        demand = by_name[pod]
        assert len(got) == len(demand.items)
        assert len({node for node, _, _ in got}) <= 1
        if demand.nodes is not None:
            assert {node for node, _, _ in got} <= set(demand.nodes)
        handed.update(got)
    for (node, index, pid), count in handed.items():
        gpu = gpus[(node, index)]
        used = Counter(i.profile_id for i in gpu.instances if i.used)
        free = Counter(i.profile_id for i in ex.layouts[(node, index)])[pid] - used[pid]
        assert count <= free, (node, index, pid)
    assert ex.served == served_per_tier(demands, ex.placed)


def brute_force_served(node: NodeSnapshot, demands: Sequence[Demand]) -> tuple[int, ...]:
    """Best pods-per-tier on one node whose GPUs share one model, by exhaustive search."""
    model = node.gpus[0].model
    assert all(g.model is model for g in node.gpus)
    supplies_per_gpu = []
    for gpu in node.gpus:
        used = [Instance(i.start, i.profile_id) for i in gpu.instances if i.used]
        supplies = set()
        for layout in enumerate_layouts(model, base=used, maximal_only=True):
            free = Counter(i.profile_id for i in layout) - Counter(i.profile_id for i in used)
            supplies.add(frozenset(free.items()))
        supplies_per_gpu.append([Counter(dict(s)) for s in supplies])
    totals = {
        frozenset(sum(combo, Counter()).items()) for combo in itertools.product(*supplies_per_gpu)
    }
    needs = []
    for d in demands:
        pids = [resolve_for_model(item, model) for item in d.items]
        ok = all(p is not None for p in pids) and (d.nodes is None or node.name in d.nodes)
        needs.append(Counter(p.nvml_id for p in pids if p is not None) if ok else None)
    best: tuple[int, ...] = tuple(0 for _ in tiers_of(demands))
    for mask in range(1 << len(demands)):
        chosen = [i for i in range(len(demands)) if mask >> i & 1]
        if any(needs[i] is None for i in chosen):
            continue
        need = sum((needs[i] for i in chosen), Counter())  # type: ignore[misc]
        if any(all(need[p] <= dict(t).get(p, 0) for p in need) for t in totals):
            served = served_per_tier(demands, {demands[i].name for i in chosen})
            best = max(best, served)
    return best


def test_exact_solver_on_a_known_round() -> None:
    # An empty A100-40GB and pods of 4g, 3g, 3g: at most two of them fit (4g+3g or 3g+3g); the
    # high-priority 3g pod must be one of them, and the optimum creates exactly two instances.
    doc = _doc(
        [{"name": "n", "gpus": [{"index": 0, "model": "A100-40GB"}]}],
        [
            {"name": "a", "requests": {"4g.20gb": 1}},
            {"name": "b", "requests": {"3g.20gb": 1}, "priority": 5},
            {"name": "c", "requests": {"3g.20gb": 1}},
        ],
    )
    nodes, demands = parse_input(doc)
    ex = solve_exact(nodes, demands)
    check_exact(nodes, demands, ex)
    assert ex.served == (1, 1)
    assert "b" in ex.placed and ex.total == 2
    assert ex.operations == 2


def test_exact_solver_counts_operations() -> None:
    # A free 7g must be destroyed to carve two 1g instances: 1 destroy + 2 creates.
    doc = _doc(
        [
            {
                "name": "n",
                "gpus": [
                    {
                        "index": 0,
                        "model": "H100-80GB",
                        "instances": [{"profile": "7g.80gb", "start": 0}],
                    }
                ],
            }
        ],
        [{"name": "p", "requests": {"1g.10gb": 2}}],
    )
    nodes, demands = parse_input(doc)
    ex = solve_exact(nodes, demands)
    check_exact(nodes, demands, ex)
    assert ex.placed == {"p"}
    assert ex.operations == 3


@pytest.mark.parametrize("seed", range(40))
def test_exact_solver_matches_brute_force_on_one_node(seed: int) -> None:
    chooser = RandomChooser(10_000 + seed)
    doc = random_round(chooser, max_nodes=1, max_pods=6)
    node = doc["nodes"][0]
    for gpu in node["gpus"]:  # one model per node, so the brute force can pool supply
        if gpu["model"] != node["gpus"][0]["model"]:
            gpu["model"], gpu["instances"] = node["gpus"][0]["model"], []
    nodes, demands = parse_input(doc)
    ex = solve_exact(nodes, demands)
    check_exact(nodes, demands, ex)
    assert ex.served == brute_force_served(nodes[0], demands)


# --------------------------------------------------------------------------------------------
# The planner against the optimum
# --------------------------------------------------------------------------------------------


def compare(doc: dict[str, Any]) -> tuple[tuple[int, ...], ExactResult, int]:
    """(planner's pods per tier, the exact result, planner operations); checks both are sound."""
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert plan_violations(nodes, demands, plan) == []
    ex = solve_exact(nodes, demands)
    check_exact(nodes, demands, ex)
    served = served_per_tier(demands, set(plan.placements))
    # Nothing can beat the optimum: if this fails, the planner broke a rule or the MILP is wrong.
    assert served <= ex.served, (json.dumps(doc), served, ex.served)
    return served, ex, plan.operations


def serves_less(doc: dict[str, Any]) -> bool:
    served, ex, _ = compare(doc)
    return served < ex.served


def costs_more(doc: dict[str, Any]) -> bool:
    served, ex, ops = compare(doc)
    return served == ex.served and ops > ex.operations


def shrink(doc: dict[str, Any], still: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """A smaller round for which ``still`` holds (greedy deletion of pods, GPUs, instances)."""

    def worse(candidate: dict[str, Any]) -> bool:
        try:
            return still(candidate)
        except (ValueError, AssertionError):
            return False

    current = json.loads(json.dumps(doc))
    changed = True
    while changed:
        changed = False
        paths: list[tuple[str, ...]] = [("pending", str(i)) for i in range(len(current["pending"]))]
        for n, node in enumerate(current["nodes"]):
            paths.append(("nodes", str(n)))
            for g, gpu in enumerate(node["gpus"]):
                paths.append(("nodes", str(n), "gpus", str(g)))
                paths += [
                    ("nodes", str(n), "gpus", str(g), "instances", str(k))
                    for k in range(len(gpu.get("instances", [])))
                ]
        for path in reversed(paths):
            candidate = json.loads(json.dumps(current))
            parent: Any = candidate
            for step in path[:-1]:
                parent = parent[int(step)] if isinstance(parent, list) else parent[step]
            del parent[int(path[-1])]
            if worse(candidate):
                current, changed = candidate, True
                break
    return current


@dataclass
class Quality:
    planner: int = 0  # pods placed by the planner, over all rounds
    exact: int = 0  # pods placed by the optimum
    planner_ops: int = 0  # operations, over the rounds where the planner serves the optimal pods
    exact_ops: int = 0  # ... and the optimum's minimum there
    short: list[dict[str, Any]] = field(default_factory=list)  # rounds below the optimum
    crashed: list[tuple[int, str]] = field(default_factory=list)  # (seed, error)
    same_served: int = 0  # rounds where the planner serves the optimal pods per tier ...
    more_ops: list[dict[str, Any]] = field(default_factory=list)  # ... and uses more operations

    @property
    def ratio(self) -> float:
        return self.planner / self.exact


def measure(
    rounds: int, generate: Callable[[RandomChooser], dict[str, Any]] = random_round
) -> Quality:
    result = Quality()
    for seed in range(rounds):
        doc = generate(RandomChooser(seed))
        try:
            served, ex, ops = compare(doc)
        except AssertionError:
            raise
        except Exception as err:  # a planner crash serves nobody; reported below
            nodes, demands = parse_input(doc)
            result.exact += solve_exact(nodes, demands).total
            result.crashed.append((seed, f"{type(err).__name__}: {err}"))
            continue
        result.planner += sum(served)
        result.exact += ex.total
        if served < ex.served:
            result.short.append({"seed": seed, "planner": served, "exact": ex.served, "input": doc})
        else:
            result.same_served += 1
            result.planner_ops += ops
            result.exact_ops += ex.operations
            if ops > ex.operations:
                result.more_ops.append(
                    {"seed": seed, "planner_ops": ops, "exact_ops": ex.operations, "input": doc}
                )
    return result


def test_planner_places_at_least_99_percent_of_the_optimum() -> None:
    q = measure(ROUNDS)
    print(
        f"\nplanner quality: {q.planner}/{q.exact} pods = {q.ratio:.4f} of the exact optimum over "
        f"{ROUNDS} rounds; below the optimum in {len(q.short)} rounds "
        f"(seeds {[s['seed'] for s in q.short]}); crashed in {len(q.crashed)} rounds "
        f"{q.crashed}; where it serves the optimum ({q.same_served} rounds) it uses more "
        f"operations than the minimum in {len(q.more_ops)} rounds "
        f"({sum(r['planner_ops'] - r['exact_ops'] for r in q.more_ops)} extra in all)"
    )
    assert q.exact > ROUNDS  # the rounds are not trivial
    assert q.crashed == []
    ratio = q.ratio
    assert ratio >= QUALITY, (
        f"planner placed {ratio:.4f} of the optimum; below-optimum seeds: "
        f"{[s['seed'] for s in q.short]} (python tests/unit/test_planner_quality.py prints them)"
    )


WIDE_ROUNDS = 40
WIDE_QUALITY = 0.999


def test_planner_places_at_least_99_9_percent_of_the_optimum_on_realistic_rounds() -> None:
    q = measure(WIDE_ROUNDS, realistic_round)
    print(
        f"\nplanner quality on realistic rounds: {q.planner}/{q.exact} pods = {q.ratio:.4f} of "
        f"the exact optimum over {WIDE_ROUNDS} rounds; below it in {len(q.short)} rounds "
        f"(seeds {[s['seed'] for s in q.short]}); operations where it serves the optimal pods "
        f"({q.same_served} rounds): {q.planner_ops} against a minimum of {q.exact_ops}"
    )
    assert q.exact > 5 * WIDE_ROUNDS  # the rounds are not trivial
    assert q.crashed == []
    assert q.ratio >= WIDE_QUALITY, (
        f"planner placed {q.ratio:.4f} of the optimum; below-optimum seeds: "
        f"{[s['seed'] for s in q.short]} (python tests/unit/test_planner_quality.py --wide)"
    )


if __name__ == "__main__":
    wide = "--wide" in sys.argv
    numbers = [a for a in sys.argv[1:] if a != "--wide"]
    count = int(numbers[0]) if numbers else (WIDE_ROUNDS if wide else ROUNDS)
    q = measure(count, realistic_round if wide else random_round)
    print(
        f"# operations where it serves the optimal pods ({q.same_served} rounds): "
        f"{q.planner_ops} against a minimum of {q.exact_ops}",
        file=sys.stderr,
    )
    print(f"# planner {q.planner} / exact {q.exact} = {q.ratio:.4f}", file=sys.stderr)
    for seed, error in q.crashed:
        print(f"# seed {seed} crashed: {error}", file=sys.stderr)
    for item in q.short:
        small = shrink(item["input"], serves_less)
        served, ex, _ = compare(small)
        row = {"seed": item["seed"], "planner": served, "exact": ex.served, "input": small}
        print(json.dumps({"kind": "serves-less", **row}))
    for item in q.more_ops:
        small = shrink(item["input"], costs_more)
        _, ex, ops = compare(small)
        row = {"seed": item["seed"], "planner_ops": ops, "exact_ops": ex.operations}
        print(json.dumps({"kind": "more-operations", **row, "input": small}))


def test_realistic_rounds_are_planned_validly_and_deterministically() -> None:
    # Rounds where the greedy passes fall short and the exact step (HiGHS, a node budget rather
    # than a time) decides: the same input must give the same plan, and every hard rule holds.
    for seed in (8, 12):
        nodes, demands = parse_input(realistic_round(RandomChooser(seed)))
        first, second = plan_round(nodes, demands), plan_round(nodes, demands)
        assert plan_violations(nodes, demands, first) == []
        assert first == second

"""Exact re-planning of a small round with HiGHS, for the rounds the greedy planner leaves short.

The greedy pass of :mod:`jupyter_mig.mig.planner` serves pods one at a time; on crowded rounds it
can miss a packing that serves one or two more.  When it leaves demand unserved and the round is
small enough, the round is solved again as a mixed-integer program:

- per GPU, one binary per *configuration*: a valid layout that keeps every in-use instance,
  enumerated with the planner's own layout rules (:class:`~jupyter_mig.mig.planner._Memo`), and
  reduced to the cheapest layout (fewest create + destroy operations) per distinct supply of the
  demanded profiles (counts capped at what is demanded);
- per pod, a binary per node it may use, and per (pod, request, GPU of that node) an integer count:
  a pod on a node gets all its instances there;
- per GPU and profile, the instances handed out never exceed those of the chosen configuration.

The objective is the planner's: pods served per priority tier (lexicographic, through weights),
then fewest operations.  The budget is a number of branch-and-bound nodes, not a time, so the
answer is deterministic; the caller keeps whichever of the greedy and the exact plan scores better,
so a round is never worse than the greedy's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import highspy
import numpy as np
from highspy._core import _Highs  # highspy.Highs prints a banner to stdout when created

from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.sizes import SizeRequest, resolve_for_model

if TYPE_CHECKING:
    from jupyter_mig.mig.planner import Demand, NodeSnapshot, Plan, Signature, Slot, _Memo

#: Rounds with more GPUs that could change, or more pending pods, are left to the greedy plan.
GPU_LIMIT = 48
POD_LIMIT = 96
#: Layouts enumerated per GPU; a GPU with more gives up the exact solve (never hit by the models
#: built in: an empty 7-slice GPU with every profile has 2,319).
LAYOUT_LIMIT = 5000
#: The solver's budget: branch-and-bound nodes, and columns of the program (above ~2,500 a solve
#: can take seconds).  Counts, not times, so the same round always gets the same answer.
NODE_LIMIT = 200
COLUMN_LIMIT = 2500

# One configuration: (supply per demanded profile, operations, the layout's instances not in use)
Config = tuple[tuple[int, ...], int, tuple["Slot", ...]]


def _configs(
    memo: _Memo, fixed: Sequence[Slot], free: tuple[Slot, ...], wanted: tuple[tuple[int, int], ...]
) -> list[Config] | None:
    """The cheapest layout per supply of ``wanted`` (profile id, cap) pairs on one GPU."""
    pids = [pid for pid, _ in wanted]
    caps = [cap for _, cap in wanted]
    options = sorted({(start, pid) for pid in pids for start in memo.by_id[pid].starts} | set(free))
    existing = set(free)
    best: dict[tuple[int, ...], tuple[int, tuple[Slot, ...]]] = {}
    seen = 0
    chosen: list[Slot] = []

    def visit(sig: Signature, first: int) -> bool:
        nonlocal seen
        seen += 1
        if seen > LAYOUT_LIMIT:
            return False
        counts = Counter(pid for _, pid in chosen)
        supply = tuple(min(counts[pid], cap) for pid, cap in zip(pids, caps, strict=True))
        kept = sum(1 for s in chosen if s in existing)
        ops = (len(chosen) - kept) + (len(existing) - kept)
        found = best.get(supply)
        if found is None or ops < found[0]:
            best[supply] = (ops, tuple(chosen))
        for i in range(first, len(options)):
            start, pid = options[i]
            profile = memo.by_id[pid]
            if memo.fits(sig, profile, start):
                chosen.append((start, pid))
                ok = visit(memo.signature([(start, pid)], sig), i + 1)
                chosen.pop()
                if not ok:
                    return False
        return True

    if not visit(memo.signature(fixed), 0):
        return None
    return [(supply, ops, layout) for supply, (ops, layout) in sorted(best.items())]


class _Program:
    """A minimisation MILP, built column by column for HiGHS."""

    def __init__(self) -> None:
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.rows: list[tuple[float, float, dict[int, float]]] = []

    def var(self, upper: float, cost: float = 0.0) -> int:
        self.upper.append(upper)
        self.cost.append(cost)
        return len(self.upper) - 1

    def row(self, lower: float, upper: float, terms: dict[int, float]) -> None:
        if terms:
            self.rows.append((lower, upper, terms))

    def solve(self, cutoff: float) -> list[float] | None:
        """The best solution found with an objective below ``cutoff``, within the node budget."""
        h = _Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_max_nodes", NODE_LIMIT)
        h.setOptionValue("objective_bound", cutoff)
        n = len(self.upper)
        h.addVars(n, np.zeros(n), np.array(self.upper, dtype=np.float64))
        index = np.arange(n, dtype=np.int32)
        h.changeColsCost(n, index, np.array(self.cost, dtype=np.float64))
        h.changeColsIntegrality(
            n, index, np.full(n, int(highspy.HighsVarType.kInteger), dtype=np.uint8)
        )
        for lower, upper, terms in self.rows:
            cols = np.array(list(terms), dtype=np.int32)
            h.addRow(
                lower, upper, len(cols), cols, np.array(list(terms.values()), dtype=np.float64)
            )
        h.run()
        info = h.getInfo()
        if info.primal_solution_status != 2 or info.objective_function_value >= cutoff:
            return None  # nothing better than the cutoff within the budget
        return list(h.getSolution().col_value)


def solve_round(
    nodes: Sequence[NodeSnapshot],
    demands: Sequence[Demand],
    memos: dict[str, _Memo],
    tiers: Sequence[tuple[int, bool]],
    served: Sequence[int],
) -> Plan | None:
    """A plan serving more pods per tier (lexicographically) than ``served``, the greedy's count
    per tier, found within the node budget; None when there is none or the round has too many
    GPUs with a choice.  The caller keeps rounds of more than POD_LIMIT pods away."""
    from jupyter_mig.mig.planner import Assignment, Plan

    # Columns in a canonical order (pods by name, requests by text): the order of the input must
    # not decide between equally good solutions.
    demands = sorted(demands, key=lambda d: d.name)
    resolved: dict[tuple[SizeRequest, str], int | None] = {}

    def pid_for(item: SizeRequest, model: GpuModel) -> int | None:
        key = (item, model.name)
        if key not in resolved:
            p = resolve_for_model(item, model)
            resolved[key] = None if p is None else p.nvml_id
        return resolved[key]

    node_names = {n.name for n in nodes}
    # Demand per (model, profile): how many instances could be asked of one GPU of the model.
    wanted: dict[str, Counter[int]] = {}
    for d in demands:
        allowed = node_names if d.nodes is None else node_names & set(d.nodes)
        if not allowed:
            continue
        for name, memo in memos.items():
            for item, count in Counter(d.items).items():
                pid = pid_for(item, memo.model)
                if pid is not None:
                    wanted.setdefault(name, Counter())[pid] += count
    gpus: list[tuple[str, int, _Memo, list[Slot], tuple[Slot, ...], list[Config]]] = []
    cache: dict[tuple[object, ...], list[Config] | None] = {}
    open_gpus = 0
    for node in sorted(nodes, key=lambda n: n.name):
        for snap in sorted(node.gpus, key=lambda g: g.index):
            memo = memos[snap.model.name]
            fixed = sorted((i.start, i.profile_id) for i in snap.instances if i.used)
            free = tuple(sorted((i.start, i.profile_id) for i in snap.instances if not i.used))
            caps = tuple(sorted(wanted.get(snap.model.name, Counter()).items()))
            key = (snap.model.name, tuple(fixed), free, caps)
            if key not in cache:
                cache[key] = _configs(memo, fixed, free, caps)
            configs = cache[key]
            if configs is None:
                return None
            open_gpus += len(configs) > 1
            gpus.append((node.name, snap.index, memo, fixed, free, configs))
    if open_gpus > GPU_LIMIT:
        return None

    m = _Program()
    unit = float(sum(max(c[1] for c in g[5]) for g in gpus) + 1)  # a pod outweighs every op
    weights = {t: unit * float(len(demands) + 1) ** rank for rank, t in enumerate(reversed(tiers))}
    chosen_config: list[list[int]] = []
    supply_rows: dict[tuple[int, int], dict[int, float]] = {}
    for g, (_, _, memo, _, _, configs) in enumerate(gpus):
        cols = [m.var(1, float(ops)) for _, ops, _ in configs]
        chosen_config.append(cols)
        m.row(1, 1, dict.fromkeys(cols, 1.0))
        caps = tuple(sorted(wanted.get(memo.model.name, Counter()).items()))
        for k, (pid, _) in enumerate(caps):
            terms = {col: -float(c[0][k]) for col, c in zip(cols, configs, strict=True) if c[0][k]}
            supply_rows[(g, pid)] = terms
    by_node: dict[str, list[int]] = {}
    for g, entry in enumerate(gpus):
        by_node.setdefault(entry[0], []).append(g)
    counts: dict[tuple[str, SizeRequest, int], int] = {}  # (pod, request, gpu) -> column
    pod_cols: dict[str, list[int]] = {}
    for d in demands:
        if not d.items:
            continue
        grouped = dict(sorted(Counter(d.items).items(), key=lambda e: (e[0].kind, e[0].text)))
        choice: dict[int, float] = {}
        for name in sorted(node_names if d.nodes is None else node_names & set(d.nodes)):
            options = {
                item: [
                    (g, pid)
                    for g in by_node.get(name, [])
                    if (pid := pid_for(item, gpus[g][2].model)) is not None
                ]
                for item in grouped
            }
            if any(not o for o in options.values()):
                continue
            x = m.var(1, -weights[(d.priority, d.interactive)])
            choice[x] = 1.0
            for item, count in grouped.items():
                link = {x: -float(count)}
                for g, pid in options[item]:
                    y = m.var(count)
                    counts[(d.name, item, g)] = y
                    link[y] = 1.0
                    supply_rows[(g, pid)][y] = 1.0
                m.row(0, 0, link)
        m.row(-np.inf, 1, choice)
        pod_cols[d.name] = list(choice)
    for terms in supply_rows.values():
        m.row(-np.inf, 0, terms)
    if len(m.upper) > COLUMN_LIMIT:
        return None
    # Only plans that serve more than the greedy's are worth finding: one more pod in some tier
    # gains at least ``unit`` however the lower tiers fare, and operations cost less than that.
    values = m.solve(-sum(weights[t] * n for t, n in zip(tiers, served, strict=True)) - 0.5)
    if values is None:
        return None

    # Back to a plan: layouts, then concrete instances for each pod's items, in demand order.
    plan = Plan(layouts={}, placements={}, unplaced=[])
    slots_left: list[dict[int, list[int]]] = []
    for g, (node_name, index, _, fixed, free, configs) in enumerate(gpus):
        pick = next(
            c for c, col in zip(configs, chosen_config[g], strict=True) if values[col] > 0.5
        )
        layout = pick[2]
        gpu_key = (node_name, index)
        plan.layouts[gpu_key] = tuple(Instance(s, p) for s, p in sorted([*fixed, *layout]))
        created = sorted(set(layout) - set(free))
        destroyed = sorted(set(free) - set(layout))
        if created:
            plan.created[gpu_key] = tuple(Instance(s, p) for s, p in created)
        if destroyed:
            plan.destroyed[gpu_key] = tuple(Instance(s, p) for s, p in destroyed)
        plan.creates += len(created)
        plan.destroys += len(destroyed)
        per_pid: dict[int, list[int]] = {}
        for start, pid in sorted(layout):
            per_pid.setdefault(pid, []).append(start)
        slots_left.append(per_pid)
    for d in demands:
        if not d.items:
            plan.placements[d.name] = ()
            continue
        if not any(values[x] > 0.5 for x in pod_cols.get(d.name, [])):
            plan.unplaced.append(d.name)
            continue
        remaining = {
            (item, g): round(values[col])
            for (pod, item, g), col in counts.items()
            if pod == d.name and values[col] > 0.5
        }
        assignments = []
        for item in d.items:
            g = next(
                g
                for (it, g), n in sorted(remaining.items(), key=lambda e: e[0][1])
                if it == item and n > 0
            )
            remaining[(item, g)] -= 1
            node_name, index, memo = gpus[g][0], gpus[g][1], gpus[g][2]
            pid = pid_for(item, memo.model)
            assert pid is not None
            start = slots_left[g][pid].pop(0)
            assignments.append(Assignment(node_name, index, pid, start))
        plan.placements[d.name] = tuple(assignments)
    plan.unplaced.sort()
    return plan

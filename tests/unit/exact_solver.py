"""An exact (MILP) planner used only by the tests, to measure the real planner's quality.

It solves the same round as :func:`jupyter_mig.mig.planner.plan_round` to optimality with HiGHS:

- per GPU, one binary per candidate instance (profile x legal start) that is not in use; in-use
  instances are constants.  The hardware rules are written as linear constraints directly from the
  profile table (one instance per memory slice, compute budget, max count per profile, at most one
  ``+me``/``+me.all``, ``+me.all`` only beside ``-me``), independently of ``layout.py``;
- per pod, a binary per allowed node, and per (pod, request, GPU on that node) an integer count;
  a pod on a node gets every one of its instances there, each request served by the profile it
  resolves to on that GPU's model;
- per GPU and profile, the instances handed to pods never exceed the free instances of the target.

Objective, lexicographic through weights: pods served per priority tier (higher priority, then
interactive, first), then fewest destroy+create operations.  The product never imports this.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from jupyter_mig.mig.layout import Instance, span_mask
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.planner import Demand, NodeSnapshot
from jupyter_mig.mig.sizes import SizeRequest, resolve_for_model

GpuKey = tuple[str, int]


@dataclass(frozen=True)
class ExactResult:
    tiers: tuple[tuple[int, bool], ...]  # (priority, interactive), best tier first
    served: tuple[int, ...]  # pods served per tier, same order as ``tiers``
    placed: frozenset[str]
    operations: int
    layouts: dict[GpuKey, tuple[Instance, ...]]
    # pod -> one (node, gpu, profile id) per instance it receives
    placements: dict[str, tuple[tuple[str, int, int], ...]]

    @property
    def total(self) -> int:
        return len(self.placed)


def tiers_of(demands: Sequence[Demand]) -> tuple[tuple[int, bool], ...]:
    """Priority tiers as the issue orders them: higher priority first, interactive before batch."""
    return tuple(sorted({(d.priority, d.interactive) for d in demands}, reverse=True))


def served_per_tier(
    demands: Sequence[Demand], placed: set[str] | frozenset[str]
) -> tuple[int, ...]:
    tiers = tiers_of(demands)
    counts = Counter((d.priority, d.interactive) for d in demands if d.name in placed)
    return tuple(counts[t] for t in tiers)


class _Model:
    """A tiny column/row builder over the HiGHS low-level API."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[tuple[float, float, list[int], list[float]]] = []

    def var(self, lower: float, upper: float, cost: float = 0.0, integer: bool = True) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        self.integer.append(integer)
        return len(self.lower) - 1

    def row(self, lower: float, upper: float, terms: dict[int, float]) -> None:
        if terms:
            self.rows.append((lower, upper, list(terms), list(terms.values())))

    def solve(self) -> list[float]:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 1e-6)
        h.setOptionValue("threads", 1)
        n = len(self.lower)
        h.addVars(n, np.array(self.lower, dtype=np.float64), np.array(self.upper, dtype=np.float64))
        idx = np.arange(n, dtype=np.int32)
        h.changeColsCost(n, idx, np.array(self.cost, dtype=np.float64))
        kinds = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
            for i in self.integer
        ]
        h.changeColsIntegrality(n, idx, np.array([int(k) for k in kinds], dtype=np.uint8))
        for lower, upper, cols, vals in self.rows:
            h.addRow(
                lower,
                upper,
                len(cols),
                np.array(cols, dtype=np.int32),
                np.array(vals, dtype=np.float64),
            )
        h.changeObjectiveSense(highspy.ObjSense.kMinimize)
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"exact solver: HiGHS ended with {h.modelStatusToString(status)}")
        return list(h.getSolution().col_value)


def solve_exact(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand]) -> ExactResult:
    """The optimal round: most pods per tier (lexicographically), then fewest operations."""
    tiers = tiers_of(demands)
    m = _Model()
    # per GPU: candidate instance -> column; plus the constant in-use and existing sets
    columns: dict[GpuKey, dict[Instance, int]] = {}
    used: dict[GpuKey, set[Instance]] = {}
    existing: dict[GpuKey, set[Instance]] = {}
    node_gpus: dict[str, list[GpuKey]] = defaultdict(list)
    models: dict[GpuKey, GpuModel] = {}
    resolved: dict[tuple[SizeRequest, str], int | None] = {}

    def profile_for(req: SizeRequest, model: GpuModel) -> int | None:
        key = (req, model.name)
        if key not in resolved:
            p = resolve_for_model(req, model)
            resolved[key] = None if p is None else p.nvml_id
        return resolved[key]

    # Which profiles can matter per GPU: those some request resolves to, and existing ones.
    all_items = {item for d in demands for item in d.items}
    op_terms: list[tuple[int, float]] = []  # (column, cost per unit) for the ops objective
    constant_ops = 0
    for node in nodes:
        for gpu in node.gpus:
            key = (node.name, gpu.index)
            model = gpu.model
            models[key] = model
            node_gpus[node.name].append(key)
            in_use = {Instance(i.start, i.profile_id) for i in gpu.instances if i.used}
            free = {Instance(i.start, i.profile_id) for i in gpu.instances if not i.used}
            used[key] = in_use
            existing[key] = free
            wanted = {profile_for(r, model) for r in all_items} - {None}
            wanted |= {i.profile_id for i in free}
            taken = 0
            used_compute = 0
            used_counts: Counter[int] = Counter()
            used_media: list[str] = []
            for inst in in_use:
                p = model.by_id[inst.profile_id]
                taken |= span_mask(inst.start, p.size)
                used_compute += p.compute
                used_counts[p.nvml_id] += 1
                used_media.append(p.media)
            used_extended = sum(1 for x in used_media if x in ("me", "all_me"))
            used_all_me = "all_me" in used_media
            used_excludes_all_me = any(x not in ("all_me", "no_me") for x in used_media)
            cols: dict[Instance, int] = {}
            for p in model.profiles:
                if p.nvml_id not in wanted:
                    continue
                for start in p.starts:
                    inst = Instance(start, p.nvml_id)
                    if taken & span_mask(start, p.size):
                        continue
                    if used_all_me and p.media not in ("all_me", "no_me"):
                        continue
                    if p.media == "all_me" and used_excludes_all_me:
                        continue
                    if p.media in ("me", "all_me") and used_extended:
                        continue
                    if inst in free:
                        # keeping it costs nothing, dropping it is one destroy
                        col = m.var(0, 1)
                        op_terms.append((col, -1.0))
                        constant_ops += 1
                    else:
                        col = m.var(0, 1)
                        op_terms.append((col, 1.0))
                    cols[inst] = col
            # an existing free instance that cannot be kept at all (cannot happen for a valid
            # input layout, but keep the accounting honest)
            for inst in free:
                if inst not in cols:
                    constant_ops += 1
            columns[key] = cols
            # one instance per memory slice
            for s in range(model.grid):
                if taken >> s & 1:
                    continue
                terms = {
                    c: 1.0
                    for inst, c in cols.items()
                    if span_mask(inst.start, model.by_id[inst.profile_id].size) >> s & 1
                }
                if len(terms) > 1:
                    m.row(-np.inf, 1, terms)
            # compute budget
            m.row(
                -np.inf,
                model.compute_budget - used_compute,
                {c: float(model.by_id[i.profile_id].compute) for i, c in cols.items()},
            )
            # max count per profile
            for p in model.profiles:
                terms = {c: 1.0 for i, c in cols.items() if i.profile_id == p.nvml_id}
                m.row(-np.inf, p.max_count - used_counts[p.nvml_id], terms)
            # at most one media-extension instance
            ext = {
                c: 1.0
                for i, c in cols.items()
                if model.by_id[i.profile_id].media in ("me", "all_me")
            }
            m.row(-np.inf, 1 - used_extended, ext)
            # +me.all only beside -me (and other +me.all, which the rule above already limits)
            others = [
                c
                for i, c in cols.items()
                if model.by_id[i.profile_id].media not in ("all_me", "no_me")
            ]
            for i, c in cols.items():
                if model.by_id[i.profile_id].media == "all_me" and others:
                    terms = {o: 1.0 for o in others}
                    terms[c] = float(len(others))
                    m.row(-np.inf, len(others), terms)

    # Pods.
    n_pods = len(demands)
    total_candidates = sum(len(c) for c in columns.values())
    unit = float(total_candidates + constant_ops + 1)  # one pod outweighs every operation
    weights = {}
    for rank, tier in enumerate(reversed(tiers)):
        weights[tier] = unit * float(n_pods + 1) ** rank
    pod_node: dict[tuple[str, str], int] = {}
    # (pod, request, gpu) -> column
    pod_gpu: dict[tuple[str, SizeRequest, GpuKey], int] = {}
    supply_terms: dict[tuple[GpuKey, int], dict[int, float]] = defaultdict(dict)
    node_names = [n.name for n in nodes]
    always_placed: set[str] = set()
    for d in demands:
        grouped = Counter(d.items)
        allowed = node_names if d.nodes is None else [n for n in node_names if n in d.nodes]
        choice: dict[int, float] = {}
        if not d.items:
            always_placed.add(d.name)  # nothing to give: served wherever it runs
            continue
        for node_name in allowed:
            per_request: dict[SizeRequest, list[tuple[GpuKey, int]]] = {}
            for req in grouped:
                options = []
                for key in node_gpus[node_name]:
                    pid = profile_for(req, models[key])
                    if pid is not None:
                        options.append((key, pid))
                per_request[req] = options
            if any(not opts for opts in per_request.values()):
                continue
            x = m.var(0, 1, cost=-weights[(d.priority, d.interactive)])
            pod_node[(d.name, node_name)] = x
            choice[x] = 1.0
            for req, count in grouped.items():
                link = {x: -float(count)}
                for key, pid in per_request[req]:
                    y = m.var(0, count)
                    pod_gpu[(d.name, req, key)] = y
                    link[y] = 1.0
                    supply_terms[(key, pid)][y] = 1.0
                m.row(0, 0, link)
        m.row(-np.inf, 1, choice)
    for (key, pid), terms in supply_terms.items():
        row = dict(terms)
        for inst, c in columns[key].items():
            if inst.profile_id == pid:
                row[c] = row.get(c, 0.0) - 1.0
        m.row(-np.inf, 0, row)
    for col, cost in op_terms:
        m.cost[col] += cost

    values = m.solve() if m.lower else []

    def on(col: int) -> bool:
        return values[col] > 0.5

    placed = frozenset(pod for (pod, _), x in pod_node.items() if on(x)) | always_placed
    layouts: dict[GpuKey, tuple[Instance, ...]] = {}
    operations = 0
    for key, cols in columns.items():
        chosen = {inst for inst, c in cols.items() if on(c)}
        layouts[key] = tuple(sorted(chosen | used[key]))
        operations += len(chosen - existing[key]) + len(existing[key] - chosen)
    placements: dict[str, tuple[tuple[str, int, int], ...]] = {}
    for d in demands:
        if d.name not in placed:
            continue
        got: list[tuple[str, int, int]] = []
        for (pod, req, key), y in pod_gpu.items():
            if pod == d.name:
                pid = profile_for(req, models[key])
                assert pid is not None
                got.extend([(key[0], key[1], pid)] * round(values[y]))
        placements[d.name] = tuple(sorted(got))
    return ExactResult(
        tiers=tiers,
        served=served_per_tier(demands, placed),
        placed=placed,
        operations=operations,
        layouts=layouts,
        placements=placements,
    )

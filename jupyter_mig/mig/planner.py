"""The planner: one round of MIG repartitioning as a pure function.

Input: a snapshot of GPUs (instances with placements, and which are in use) and the pending demands.
Output: a target layout per GPU, the expected placement of every pending pod that can be served,
and the operation counts.

Hard rules: an in-use instance is never destroyed or moved; every target layout is valid; the
result is deterministic.  Objectives, in order: serve the most pending demand (higher priority
first, interactive before batch within a priority), with the fewest destroy/create operations,
leaving free space the least fragmented.  Only demanded instances are created.

How: pods are served one at a time in priority order; each takes the cheapest option on the best
GPU — reuse an existing free instance (0 ops), carve free space (1 op), or destroy free instances
that are in the way (1 + n ops) — where "best" is the placement that loses the least future
capacity (a weighted count of what could still be carved).  GPUs are bucketed by an exact state
key, and each (state, profile) choice is memoised, so a round over 8,000 GPUs and 10,000 pods is
a few hash lookups per pod.  When a pass leaves demand unserved, the round is planned again with
the largest pods first and the better result is kept.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from jupyter_mig.mig.layout import Instance, span_mask
from jupyter_mig.mig.models import GpuModel, Profile
from jupyter_mig.mig.sizes import SizeRequest, resolve_for_model

# --------------------------------------------------------------------------------------------
# Input and output structures (the JSON contract of ARCHITECTURE.md, as Python objects)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    profile_id: int
    start: int
    used: bool = False


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    index: int
    model: GpuModel
    instances: tuple[ObservedInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    name: str
    gpus: tuple[GpuSnapshot, ...]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Demand:
    """A pending pod: the slices it needs (one entry per instance), all on one node."""

    name: str
    items: tuple[SizeRequest, ...]
    nodes: tuple[str, ...] | None = None  # hard restriction; None = any node
    priority: int = 0
    interactive: bool = False


@dataclass(frozen=True, slots=True)
class Assignment:
    node: str
    gpu: int
    profile_id: int
    start: int


@dataclass
class Plan:
    layouts: dict[tuple[str, int], tuple[Instance, ...]]
    placements: dict[str, tuple[Assignment, ...]]
    unplaced: list[str]
    creates: int = 0
    destroys: int = 0
    created: dict[tuple[str, int], tuple[Instance, ...]] = field(default_factory=dict)
    destroyed: dict[tuple[str, int], tuple[Instance, ...]] = field(default_factory=dict)

    @property
    def operations(self) -> int:
        return self.creates + self.destroys


# --------------------------------------------------------------------------------------------
# Per-GPU state keys and memoised choices
# --------------------------------------------------------------------------------------------

# A fixed-part signature: (occupied mask, compute used, sorted (profile id, count) pairs,
# media-extension count, has a +me.all, has an instance that +me.all excludes).
Signature = tuple[int, int, tuple[tuple[int, int], ...], int, bool, bool]
StateKey = tuple[Signature, tuple[Instance, ...]]
# An option: (ops, loss, free compute after, start, reused instance or None, destroyed instances)
Option = tuple[int, int, int, int, Instance | None, tuple[Instance, ...]]


def _signature(model: GpuModel, instances: Iterable[Instance]) -> Signature:
    mask = compute = extended = 0
    counts: dict[int, int] = {}
    all_me = excluded = False
    for inst in instances:
        p = model.by_id[inst.profile_id]
        mask |= span_mask(inst.start, p.size)
        compute += p.compute
        counts[p.nvml_id] = counts.get(p.nvml_id, 0) + 1
        if p.media in ("me", "all_me"):
            extended += 1
        all_me = all_me or p.media == "all_me"
        excluded = excluded or p.media not in ("all_me", "no_me")
    return (mask, compute, tuple(sorted(counts.items())), extended, all_me, excluded)


def _fits(model: GpuModel, sig: Signature, p: Profile, start: int) -> bool:
    mask, compute, counts, extended, all_me, excluded = sig
    if mask & span_mask(start, p.size) or compute + p.compute > model.compute_budget:
        return False
    if dict(counts).get(p.nvml_id, 0) >= p.max_count:
        return False
    if p.media in ("me", "all_me") and extended:
        return False
    if p.media == "all_me" and excluded:
        return False
    return not (all_me and p.media not in ("all_me", "no_me"))


@lru_cache(maxsize=65536)
def _capacity(model: GpuModel, mask: int, compute: int) -> int:
    """Weighted count of plain instances that could still be carved: the fragmentation measure."""
    total = 0
    left = model.compute_budget - compute
    for p in model.profiles:
        if p.media != "none":
            continue
        taken = mask
        count = 0
        for start in p.starts:
            span = span_mask(start, p.size)
            if not taken & span:
                taken |= span
                count += 1
        count = min(count, left // p.compute, p.max_count)
        total += count * (p.compute + p.size)
    return total


@lru_cache(maxsize=262144)
def _best_option(model: GpuModel, key: StateKey, profile_id: int) -> Option | None:
    """The cheapest way to get one ``profile_id`` instance on a GPU in state ``key``."""
    sig, free = key
    for inst in free:
        if inst.profile_id == profile_id:
            return (0, 0, model.compute_budget - sig[1], inst.start, inst, ())
    p = model.by_id[profile_id]
    best: Option | None = None
    whole = _signature_with(model, sig, free)
    before = _capacity(model, whole[0], whole[1])
    for start in p.starts:
        if _fits(model, whole, p, start):
            option = _option(model, whole, before, p, start, ())
            if best is None or option < best:
                best = option
    if best is not None or not free:
        return best
    # Make room: destroy free instances in the way (fewest first).
    span = span_mask(start=0, size=0)
    for start in p.starts:
        span = span_mask(start, p.size)
        in_way = [i for i in free if span & span_mask(i.start, model.by_id[i.profile_id].size)]
        rest = [i for i in free if i not in in_way]
        # Compute budget or +me limits may need more room: drop the largest others next.
        rest.sort(key=lambda i: (-model.by_id[i.profile_id].compute, i))
        while True:
            kept = _signature_with(model, sig, tuple(rest))
            if _fits(model, kept, p, start):
                break
            if not rest:
                kept = None  # type: ignore[assignment]
                break
            in_way.append(rest.pop(0))
        if kept is None:
            continue
        option = _option(model, kept, before, p, start, tuple(sorted(in_way)))
        if best is None or option < best:
            best = option
    return best


def _option(
    model: GpuModel,
    sig: Signature,
    before: int,
    p: Profile,
    start: int,
    destroyed: tuple[Instance, ...],
) -> Option:
    mask = sig[0] | span_mask(start, p.size)
    compute = sig[1] + p.compute
    loss = before - _capacity(model, mask, compute)
    return (1 + len(destroyed), loss, model.compute_budget - compute, start, None, destroyed)


def _signature_with(model: GpuModel, sig: Signature, extra: tuple[Instance, ...]) -> Signature:
    if not extra:
        return sig
    mask, compute, counts, extended, all_me, excluded = sig
    merged = dict(counts)
    for inst in extra:
        p = model.by_id[inst.profile_id]
        mask |= span_mask(inst.start, p.size)
        compute += p.compute
        merged[p.nvml_id] = merged.get(p.nvml_id, 0) + 1
        if p.media in ("me", "all_me"):
            extended += 1
        all_me = all_me or p.media == "all_me"
        excluded = excluded or p.media not in ("all_me", "no_me")
    return (mask, compute, tuple(sorted(merged.items())), extended, all_me, excluded)


# --------------------------------------------------------------------------------------------
# Mutable planning state
# --------------------------------------------------------------------------------------------


class _Gpu:
    __slots__ = ("created", "destroyed", "fixed", "free", "gid", "index", "key", "model", "node")

    def __init__(self, gid: int, node: str, snap: GpuSnapshot) -> None:
        self.gid = gid
        self.node = node
        self.index = snap.index
        self.model = snap.model
        self.fixed = [Instance(i.start, i.profile_id) for i in snap.instances if i.used]
        self.free = tuple(
            sorted(Instance(i.start, i.profile_id) for i in snap.instances if not i.used)
        )
        self.created: list[Instance] = []
        self.destroyed: list[Instance] = []
        self.key: StateKey = (_signature(self.model, self.fixed), self.free)

    def apply(self, option: Option, profile_id: int) -> Instance:
        _, _, _, start, reused, destroyed = option
        inst = Instance(start, profile_id)
        if reused is not None:
            self.free = tuple(i for i in self.free if i != reused)
        else:
            self.created.append(inst)
            if destroyed:
                self.destroyed.extend(destroyed)
                self.free = tuple(i for i in self.free if i not in destroyed)
        self.fixed.append(inst)
        self.key = (_signature(self.model, self.fixed), self.free)
        return inst


class _Index:
    """GPUs bucketed by state key, with per-profile bucket orders by option score."""

    def __init__(self, gpus: Sequence[_Gpu]) -> None:
        self.buckets: dict[tuple[GpuModel, StateKey], list[int]] = {}
        self.orders: dict[tuple[GpuModel, int], list[tuple[tuple[int, int, int], StateKey]]] = {}
        self.models: set[GpuModel] = set()
        for gpu in gpus:
            self.push(gpu)

    def push(self, gpu: _Gpu) -> None:
        bucket_key = (gpu.model, gpu.key)
        bucket = self.buckets.get(bucket_key)
        if bucket is None:
            self.buckets[bucket_key] = [gpu.gid]
            self.models.add(gpu.model)
            for (model, pid), order in self.orders.items():
                if model is gpu.model:
                    self._insert(order, model, gpu.key, pid)
        else:
            heapq.heappush(bucket, gpu.gid)

    @staticmethod
    def _insert(
        order: list[tuple[tuple[int, int, int], StateKey]], model: GpuModel, key: StateKey, pid: int
    ) -> None:
        option = _best_option(model, key, pid)
        if option is not None:
            bisect.insort(order, ((option[0], option[1], option[2]), key))

    def best(self, model: GpuModel, pid: int, gpus: Sequence[_Gpu]) -> _Gpu | None:
        order = self.orders.get((model, pid))
        if order is None:
            order = []
            for m, key in self.buckets:
                if m is model:
                    self._insert(order, model, key, pid)
            self.orders[(model, pid)] = order
        for _, key in order:
            bucket = self.buckets[(model, key)]
            while bucket:
                gpu = gpus[bucket[0]]
                if gpu.key == key:
                    return gpu
                heapq.heappop(bucket)
        return None


_SCAN_LIMIT = 64  # restricted pods with at most this many GPUs scan them instead of an index


class _Round:
    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.gpus: list[_Gpu] = []
        self.node_gpus: dict[str, list[_Gpu]] = {}
        for node in sorted(nodes, key=lambda n: n.name):
            members = self.node_gpus.setdefault(node.name, [])
            for snap in sorted(node.gpus, key=lambda g: g.index):
                gpu = _Gpu(len(self.gpus), node.name, snap)
                self.gpus.append(gpu)
                members.append(gpu)
        self.indexes: dict[frozenset[str] | None, _Index] = {None: _Index(self.gpus)}
        self.memberships: dict[int, list[_Index]] = {g.gid: [self.indexes[None]] for g in self.gpus}

    def index_for(self, nodes: frozenset[str]) -> _Index:
        index = self.indexes.get(nodes)
        if index is None:
            members = [g for n in sorted(nodes) for g in self.node_gpus.get(n, ())]
            index = _Index(members)
            self.indexes[nodes] = index
            for g in members:
                self.memberships[g.gid].append(index)
        return index

    def take(self, gpu: _Gpu, option: Option, pid: int) -> Assignment:
        inst = gpu.apply(option, pid)
        for index in self.memberships[gpu.gid]:
            index.push(gpu)
        return Assignment(gpu.node, gpu.index, pid, inst.start)

    # -- single-instance pods ----------------------------------------------------------------

    def place_single(self, item: SizeRequest, nodes: frozenset[str] | None) -> Assignment | None:
        best: tuple[tuple[int, int, int, int], _Gpu, Option, int] | None = None
        if nodes is not None and len(nodes) * 8 <= _SCAN_LIMIT:
            for name in sorted(nodes):
                for gpu in self.node_gpus.get(name, ()):
                    pid = _profile_for(item, gpu.model)
                    if pid is None:
                        continue
                    option = _best_option(gpu.model, gpu.key, pid)
                    if option is not None:
                        score = (option[0], option[1], option[2], gpu.gid)
                        if best is None or score < best[0]:
                            best = (score, gpu, option, pid)
        else:
            index = self.indexes[None] if nodes is None else self.index_for(nodes)
            for model in sorted(index.models, key=lambda m: m.name):
                pid = _profile_for(item, model)
                if pid is None:
                    continue
                found = index.best(model, pid, self.gpus)
                if found is None:
                    continue
                option = _best_option(model, found.key, pid)
                assert option is not None
                score = (option[0], option[1], option[2], found.gid)
                if best is None or score < best[0]:
                    best = (score, found, option, pid)
        if best is None:
            return None
        _, gpu, option, pid = best
        return self.take(gpu, option, pid)

    # -- pods with several instances: all on one node ---------------------------------------

    def place_multi(
        self, items: tuple[SizeRequest, ...], nodes: frozenset[str] | None, sizes: dict[str, float]
    ) -> list[Assignment] | None:
        names = sorted(nodes) if nodes is not None else list(self.node_gpus)
        ordered = sorted(items, key=lambda r: -sizes.get(r.text, 0.0))
        best: tuple[tuple[int, int], str, list[tuple[_Gpu, Option, int]]] | None = None
        feasible = 0
        for name in names:
            trial = self._try_node(name, ordered)
            if trial is None:
                continue
            ops = sum(o[0] for _, o, _ in trial)
            loss = sum(o[1] for _, o, _ in trial)
            if best is None or (ops, loss) < best[0]:
                best = ((ops, loss), name, trial)
            feasible += 1
            if feasible >= 16:
                break
        if best is None:
            return None
        return [self.take(gpu, option, pid) for gpu, option, pid in best[2]]

    def _try_node(
        self, name: str, items: list[SizeRequest]
    ) -> list[tuple[_Gpu, Option, int]] | None:
        """Plan every item on one node without committing; None when they do not all fit."""
        gpus = self.node_gpus.get(name, [])
        keys = {g.gid: g.key for g in gpus}
        fixed = {g.gid: list(g.fixed) for g in gpus}
        chosen: list[tuple[_Gpu, Option, int]] = []
        for item in items:
            pick: tuple[tuple[int, int, int, int], _Gpu, Option, int] | None = None
            for gpu in gpus:
                pid = _profile_for(item, gpu.model)
                if pid is None:
                    continue
                option = _best_option(gpu.model, keys[gpu.gid], pid)
                if option is not None:
                    score = (option[0], option[1], option[2], gpu.gid)
                    if pick is None or score < pick[0]:
                        pick = (score, gpu, option, pid)
            if pick is None:
                return None
            _, gpu, option, pid = pick
            chosen.append((gpu, option, pid))
            # Advance the trial state of that GPU.
            free = keys[gpu.gid][1]
            _, _, _, start, reused, destroyed = option
            gone = {reused} if reused is not None else set(destroyed)
            fixed[gpu.gid].append(Instance(start, pid))
            free = tuple(i for i in free if i not in gone)
            keys[gpu.gid] = (_signature(gpu.model, fixed[gpu.gid]), free)
        return chosen


@lru_cache(maxsize=65536)
def _profile_for(item: SizeRequest, model: GpuModel) -> int | None:
    profile = resolve_for_model(item, model)
    return None if profile is None else profile.nvml_id


def _pod_size(demand: Demand, models: Sequence[GpuModel], sizes: dict[str, float]) -> float:
    total = 0.0
    for item in demand.items:
        if item.text not in sizes:
            best = None
            for model in models:
                pid = _profile_for(item, model)
                if pid is not None:
                    p = model.by_id[pid]
                    value = p.size / model.grid + p.compute / model.compute_budget
                    best = value if best is None else min(best, value)
            sizes[item.text] = 3.0 if best is None else best
        total += sizes[item.text]
    return total


def _run(
    nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], largest_first: bool
) -> tuple[Plan, tuple[int, ...]]:
    state = _Round(nodes)
    models = sorted({g.model for g in state.gpus}, key=lambda m: m.name)
    sizes: dict[str, float] = {}
    tiers = sorted({(d.priority, d.interactive) for d in demands}, reverse=True)
    tier_of = {t: i for i, t in enumerate(tiers)}
    served = [0] * len(tiers)

    def order(d: Demand) -> tuple[int, float, str]:
        size = _pod_size(d, models, sizes)
        return (tier_of[(d.priority, d.interactive)], -size if largest_first else size, d.name)

    placements: dict[str, tuple[Assignment, ...]] = {}
    unplaced: list[str] = []
    for demand in sorted(demands, key=order):
        nodes_set = frozenset(demand.nodes) if demand.nodes is not None else None
        if not demand.items:
            placements[demand.name] = ()
            continue
        if len(demand.items) == 1:
            single = state.place_single(demand.items[0], nodes_set)
            result = [single] if single is not None else None
        else:
            result = state.place_multi(demand.items, nodes_set, sizes)
        if result is None:
            unplaced.append(demand.name)
        else:
            placements[demand.name] = tuple(result)
            served[tier_of[(demand.priority, demand.interactive)]] += 1
    plan = Plan(layouts={}, placements=placements, unplaced=sorted(unplaced))
    fragmentation = 0
    for gpu in state.gpus:
        key = (gpu.node, gpu.index)
        plan.layouts[key] = tuple(sorted((*gpu.fixed, *gpu.free)))
        if gpu.created:
            plan.created[key] = tuple(sorted(gpu.created))
        if gpu.destroyed:
            plan.destroyed[key] = tuple(sorted(gpu.destroyed))
        plan.creates += len(gpu.created)
        plan.destroys += len(gpu.destroyed)
        sig = _signature(gpu.model, plan.layouts[key])
        fragmentation -= _capacity(gpu.model, sig[0], sig[1])
    return plan, (*(-s for s in served), plan.operations, fragmentation)


def plan_round(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand]) -> Plan:
    """Plan one round.  Pure and deterministic; see the module docstring."""
    names = [d.name for d in demands]
    if len(set(names)) != len(names):
        raise ValueError("pending pod names must be unique")
    best, score = _run(nodes, demands, largest_first=False)
    if best.unplaced:
        other, other_score = _run(nodes, demands, largest_first=True)
        if other_score < score:
            best = other
    return best

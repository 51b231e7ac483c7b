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
the largest pods first and the better result is kept (on rounds of up to SECOND_PASS_LIMIT pods,
so that cluster-scale rounds stay within their time budget).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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

Slot = tuple[int, int]  # (start, NVML profile id): an instance, as a cheap hashable tuple
# A fixed-part signature: (occupied mask, compute used, sorted (profile id, count) pairs of the
# profiles whose max count binds (fewer than their placements), media-extension count, has a
# +me.all, has an instance that +me.all excludes).
Signature = tuple[int, int, tuple[tuple[int, int], ...], int, bool, bool]
# A GPU's state: the signature of what must stay (in use, or promised to a pod this round) and
# the existing free instances that could be reused or destroyed.
StateKey = tuple[Signature, tuple[Slot, ...]]
# An option: (ops, loss, free compute after, start, reused slot or None, destroyed slots)
Option = tuple[int, int, int, int, Slot | None, tuple[Slot, ...]]


class _Memo:
    """Per-model, per-round memo: state keys are interned to ints, choices cached per key."""

    def __init__(self, model: GpuModel) -> None:
        self.model = model
        self.budget = model.compute_budget
        self.by_id = model.by_id
        self.key_ids: dict[StateKey, int] = {}
        self.options: dict[int, Option | None] = {}
        self.capacities: dict[tuple[int, int], int] = {}
        self.plain = [p for p in model.profiles if p.media == "none"]
        # Per profile: (size, compute, max count binds, is +me or +me.all, is +me.all, excludable)
        self.traits = {
            p.nvml_id: (
                p.size,
                p.compute,
                p.max_count < len(p.starts),
                p.media in ("me", "all_me"),
                p.media == "all_me",
                p.media not in ("all_me", "no_me"),
            )
            for p in model.profiles
        }

    def intern(self, key: StateKey) -> int:
        kid = self.key_ids.get(key)
        if kid is None:
            kid = self.key_ids[key] = len(self.key_ids)
        return kid

    def signature(self, slots: Iterable[Slot], base: Signature | None = None) -> Signature:
        if base is None:
            mask = compute = extended = 0
            counts: dict[int, int] = {}
            all_me = excluded = False
        else:
            mask, compute, pairs, extended, all_me, excluded = base
            counts = dict(pairs)
        for start, pid in slots:
            size, cost, binds, extends, is_all_me, excludable = self.traits[pid]
            mask |= ((1 << size) - 1) << start
            compute += cost
            if binds:
                counts[pid] = counts.get(pid, 0) + 1
            if extends:
                extended += 1
            all_me = all_me or is_all_me
            excluded = excluded or excludable
        return (mask, compute, tuple(sorted(counts.items())), extended, all_me, excluded)

    def fits(self, sig: Signature, p: Profile, start: int) -> bool:
        mask, compute, counts, extended, all_me, excluded = sig
        if mask & span_mask(start, p.size) or compute + p.compute > self.budget:
            return False
        if counts and dict(counts).get(p.nvml_id, 0) >= p.max_count:
            return False
        if p.media in ("me", "all_me") and extended:
            return False
        if p.media == "all_me" and excluded:
            return False
        return not (all_me and p.media not in ("all_me", "no_me"))

    def capacity(self, mask: int, compute: int) -> int:
        """Weighted count of plain instances still carvable: the fragmentation measure."""
        found = self.capacities.get((mask, compute))
        if found is not None:
            return found
        total = 0
        left = self.budget - compute
        for p in self.plain:
            taken = mask
            count = 0
            for start in p.starts:
                span = span_mask(start, p.size)
                if not taken & span:
                    taken |= span
                    count += 1
            total += min(count, left // p.compute, p.max_count) * (p.compute + p.size)
        self.capacities[(mask, compute)] = total
        return total

    def option(self, kid: int, key: StateKey, pid: int) -> Option | None:
        memo_key = kid * 1024 + pid
        if memo_key in self.options:
            return self.options[memo_key]
        found = self._best_option(key, pid)
        self.options[memo_key] = found
        return found

    def _best_option(self, key: StateKey, pid: int) -> Option | None:
        """The cheapest way to get one ``pid`` instance on a GPU in state ``key``."""
        sig, free = key
        for slot in free:
            if slot[1] == pid:
                return (0, 0, self.budget - sig[1], slot[0], slot, ())
        p = self.by_id[pid]
        whole = self.signature(free, sig) if free else sig
        before = self.capacity(whole[0], whole[1])
        best: Option | None = None
        for start in p.starts:
            if self.fits(whole, p, start):
                option = self._option(whole, before, p, start, ())
                if best is None or option < best:
                    best = option
        if best is not None or not free:
            return best
        # Make room: destroy the free instances in the way, then (for the compute budget or the
        # +me rule) the largest other free ones, until the new instance fits.
        for start in p.starts:
            span = span_mask(start, p.size)
            in_way = [s for s in free if span & span_mask(s[0], self.by_id[s[1]].size)]
            rest = sorted(
                (s for s in free if s not in in_way), key=lambda s: (-self.by_id[s[1]].compute, s)
            )
            kept = self.signature(rest, sig)
            while not self.fits(kept, p, start) and rest:
                in_way.append(rest.pop(0))
                kept = self.signature(rest, sig)
            if self.fits(kept, p, start):
                option = self._option(kept, before, p, start, tuple(sorted(in_way)))
                if best is None or option < best:
                    best = option
        return best

    def _option(
        self, sig: Signature, before: int, p: Profile, start: int, destroyed: tuple[Slot, ...]
    ) -> Option:
        compute = sig[1] + p.compute
        loss = before - self.capacity(sig[0] | span_mask(start, p.size), compute)
        return (1 + len(destroyed), loss, self.budget - compute, start, None, destroyed)


# --------------------------------------------------------------------------------------------
# Mutable planning state
# --------------------------------------------------------------------------------------------


class _Gpu:
    __slots__ = (
        "created",
        "destroyed",
        "fixed",
        "free",
        "gid",
        "index",
        "key",
        "kid",
        "memo",
        "node",
    )

    def __init__(self, gid: int, node: str, snap: GpuSnapshot, memo: _Memo) -> None:
        self.gid = gid
        self.node = node
        self.index = snap.index
        self.memo = memo
        self.fixed: list[Slot] = [(i.start, i.profile_id) for i in snap.instances if i.used]
        self.free: tuple[Slot, ...] = tuple(
            sorted((i.start, i.profile_id) for i in snap.instances if not i.used)
        )
        self.created: list[Slot] = []
        self.destroyed: list[Slot] = []
        self.key: StateKey = (memo.signature(self.fixed), self.free)
        self.kid = memo.intern(self.key)

    def option(self, pid: int) -> Option | None:
        return self.memo.option(self.kid, self.key, pid)

    def apply(self, option: Option, pid: int) -> Slot:
        _, _, _, start, reused, destroyed = option
        slot = (start, pid)
        if reused is not None:
            self.free = tuple(s for s in self.free if s != reused)
        else:
            self.created.append(slot)
            if destroyed:
                self.destroyed.extend(destroyed)
                self.free = tuple(s for s in self.free if s not in destroyed)
        self.fixed.append(slot)
        self.key = (self.memo.signature(self.fixed), self.free)
        self.kid = self.memo.intern(self.key)
        return slot


# Heap entry: (ops, loss, free compute after, gpu id, state id the entry was computed for)
_Entry = tuple[int, int, int, int, int]


class _Index:
    """A set of GPUs with, per (model, profile), a heap of each GPU's best option.

    Entries are pushed when a GPU changes and dropped lazily when their state id is stale, so
    finding the best GPU for a profile is a heap peek.
    """

    def __init__(self, gpus: Sequence[_Gpu]) -> None:
        self.members = gpus
        self.models = sorted({g.memo.model.name for g in gpus})
        self.heaps: dict[tuple[str, int], list[_Entry]] = {}

    def push(self, gpu: _Gpu) -> None:
        model = gpu.memo.model.name
        for (name, pid), heap in self.heaps.items():
            if name == model:
                option = gpu.option(pid)
                if option is not None:
                    heapq.heappush(heap, (option[0], option[1], option[2], gpu.gid, gpu.kid))

    def best(self, model: str, pid: int, gpus: Sequence[_Gpu]) -> _Gpu | None:
        heap = self.heaps.get((model, pid))
        if heap is None:
            heap = []
            for gpu in self.members:
                if gpu.memo.model.name == model:
                    option = gpu.option(pid)
                    if option is not None:
                        heap.append((option[0], option[1], option[2], gpu.gid, gpu.kid))
            heapq.heapify(heap)
            self.heaps[(model, pid)] = heap
        while heap:
            top = heap[0]
            gpu = gpus[top[3]]
            if gpu.kid == top[4]:
                return gpu
            heapq.heappop(heap)
        return None


SECOND_PASS_LIMIT = 2000  # rounds up to this many pods also try largest-first when short
_SCAN_LIMIT = 64  # restricted pods with at most this many GPUs scan them instead of an index

_Pick = tuple[tuple[int, int, int, int], "_Gpu", Option, int]


class _Round:
    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.memos: dict[str, _Memo] = {}
        self.gpus: list[_Gpu] = []
        self.node_gpus: dict[str, list[_Gpu]] = {}
        for node in sorted(nodes, key=lambda n: n.name):
            members = self.node_gpus.setdefault(node.name, [])
            for snap in sorted(node.gpus, key=lambda g: g.index):
                memo = self.memos.get(snap.model.name)
                if memo is None:
                    memo = self.memos[snap.model.name] = _Memo(snap.model)
                gpu = _Gpu(len(self.gpus), node.name, snap, memo)
                self.gpus.append(gpu)
                members.append(gpu)
        everywhere = _Index(self.gpus)
        self.indexes: dict[frozenset[str] | None, _Index] = {None: everywhere}
        self.memberships: dict[int, list[_Index]] = {g.gid: [everywhere] for g in self.gpus}
        self.resolved: dict[SizeRequest, dict[str, int]] = {}

    def profiles_for(self, item: SizeRequest) -> dict[str, int]:
        """The profile id the request resolves to, per model name (models that cannot serve it
        are absent)."""
        found = self.resolved.get(item)
        if found is None:
            found = {}
            for name, memo in self.memos.items():
                profile = resolve_for_model(item, memo.model)
                if profile is not None:
                    found[name] = profile.nvml_id
            self.resolved[item] = found
        return found

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
        start, _ = gpu.apply(option, pid)
        for index in self.memberships[gpu.gid]:
            index.push(gpu)
        return Assignment(gpu.node, gpu.index, pid, start)

    @staticmethod
    def _consider(best: _Pick | None, gpu: _Gpu, pids: dict[str, int]) -> _Pick | None:
        pid = pids.get(gpu.memo.model.name)
        if pid is None:
            return best
        option = gpu.option(pid)
        if option is None:
            return best
        score = (option[0], option[1], option[2], gpu.gid)
        return (score, gpu, option, pid) if best is None or score < best[0] else best

    # -- single-instance pods ----------------------------------------------------------------

    def place_single(self, item: SizeRequest, nodes: frozenset[str] | None) -> Assignment | None:
        best: _Pick | None = None
        pids = self.profiles_for(item)
        if nodes is not None and sum(len(self.node_gpus.get(n, ())) for n in nodes) <= _SCAN_LIMIT:
            for name in sorted(nodes):
                for gpu in self.node_gpus.get(name, ()):
                    best = self._consider(best, gpu, pids)
        else:
            index = self.indexes[None] if nodes is None else self.index_for(nodes)
            for model in index.models:
                pid = pids.get(model)
                if pid is not None:
                    found = index.best(model, pid, self.gpus)
                    if found is not None:
                        best = self._consider(best, found, pids)
        if best is None:
            return None
        _, gpu, option, pid = best
        return self.take(gpu, option, pid)

    # -- pods with several instances: all on one node ---------------------------------------

    def place_multi(
        self,
        items: tuple[SizeRequest, ...],
        nodes: frozenset[str] | None,
        sizes: dict[SizeRequest, float],
    ) -> list[Assignment] | None:
        names = sorted(nodes) if nodes is not None else list(self.node_gpus)
        ordered = [self.profiles_for(r) for r in sorted(items, key=lambda r: -sizes.get(r, 0.0))]
        need = sum(
            min(self.memos[model].by_id[pid].compute for model, pid in pids.items())
            for pids in ordered
        )
        best: tuple[tuple[int, int], list[tuple[_Gpu, Option, int]]] | None = None
        feasible = 0
        for name in names:
            gpus = self.node_gpus.get(name, [])
            if sum(g.memo.budget - g.key[0][1] for g in gpus) < need:
                continue  # not enough compute left on the node, whatever is destroyed
            trial = self._try_node(gpus, ordered)
            if trial is None:
                continue
            cost = (sum(o[0] for _, o, _ in trial), sum(o[1] for _, o, _ in trial))
            if best is None or cost < best[0]:
                best = (cost, trial)
            feasible += 1
            if feasible >= 16:  # enough choice; keeps wide multi-instance rounds fast
                break
        if best is None:
            return None
        return [self.take(gpu, option, pid) for gpu, option, pid in best[1]]

    @staticmethod
    def _try_node(
        gpus: list[_Gpu], items: list[dict[str, int]]
    ) -> list[tuple[_Gpu, Option, int]] | None:
        """Plan every item on one node without committing; None when they do not all fit."""
        states = {g.gid: (g.kid, g.key, g.fixed) for g in gpus}
        chosen: list[tuple[_Gpu, Option, int]] = []
        for pids in items:
            pick: _Pick | None = None
            for gpu in gpus:
                pid = pids.get(gpu.memo.model.name)
                if pid is None:
                    continue
                kid, key, _ = states[gpu.gid]
                option = gpu.memo.option(kid, key, pid)
                if option is not None:
                    score = (option[0], option[1], option[2], gpu.gid)
                    if pick is None or score < pick[0]:
                        pick = (score, gpu, option, pid)
            if pick is None:
                return None
            _, gpu, option, pid = pick
            chosen.append((gpu, option, pid))
            _, key, fixed = states[gpu.gid]
            _, _, _, start, reused, destroyed = option
            gone = {reused} if reused is not None else set(destroyed)
            fixed = [*fixed, (start, pid)]
            next_key = (gpu.memo.signature(fixed), tuple(s for s in key[1] if s not in gone))
            states[gpu.gid] = (gpu.memo.intern(next_key), next_key, fixed)
        return chosen


def _pod_size(demand: Demand, state: _Round, sizes: dict[SizeRequest, float]) -> float:
    """A model-neutral size for ordering: the smallest share of a GPU any model gives it."""
    total = 0.0
    for item in demand.items:
        if item not in sizes:
            shares = []
            for name, pid in state.profiles_for(item).items():
                memo = state.memos[name]
                p = memo.by_id[pid]
                shares.append(p.size / memo.model.grid + p.compute / memo.budget)
            sizes[item] = min(shares, default=3.0)
        total += sizes[item]
    return total


def _run(
    nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], largest_first: bool
) -> tuple[Plan, tuple[int, ...]]:
    state = _Round(nodes)
    sizes: dict[SizeRequest, float] = {}
    tiers = sorted({(d.priority, d.interactive) for d in demands}, reverse=True)
    tier_of = {t: i for i, t in enumerate(tiers)}
    served = [0] * len(tiers)

    def order(d: Demand) -> tuple[int, float, str]:
        size = _pod_size(d, state, sizes)
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
        layout = sorted((*gpu.fixed, *gpu.free))
        plan.layouts[key] = tuple(Instance(start, pid) for start, pid in layout)
        if gpu.created:
            plan.created[key] = tuple(Instance(start, pid) for start, pid in sorted(gpu.created))
        if gpu.destroyed:
            plan.destroyed[key] = tuple(
                Instance(start, pid) for start, pid in sorted(gpu.destroyed)
            )
        plan.creates += len(gpu.created)
        plan.destroys += len(gpu.destroyed)
        sig = gpu.memo.signature(layout)
        fragmentation -= gpu.memo.capacity(sig[0], sig[1])
    return plan, (*(-s for s in served), plan.operations, fragmentation)


def plan_round(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand]) -> Plan:
    """Plan one round.  Pure and deterministic; see the module docstring."""
    names = [d.name for d in demands]
    if len(set(names)) != len(names):
        raise ValueError("pending pod names must be unique")
    best, score = _run(nodes, demands, largest_first=False)
    if best.unplaced and len(demands) <= SECOND_PASS_LIMIT:
        other, other_score = _run(nodes, demands, largest_first=True)
        if other_score < score:
            best = other
    return best

"""The planner: one round of MIG repartitioning as a pure function.

Input: a snapshot of GPUs (instances with placements, and which are in use) and the pending demands.
Output: a target layout per GPU, the expected placement of every pending pod that can be served,
and the operation counts.

Hard rules: an in-use instance is never destroyed or moved; every target layout is valid; the
result is deterministic.  Objectives, in order: serve the most pending demand (higher priority
first, interactive before batch within a priority), with the fewest destroy/create operations,
leaving free space the least fragmented.  Only demanded instances are created, and, when asked
for (``spares``), a few free instances of the profiles in use, so the next pod of a size that is
in demand binds at once instead of waiting for a round.

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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from jupyter_mig.mig.layout import Instance, span_mask
from jupyter_mig.mig.models import GpuModel, Profile
from jupyter_mig.mig.sizes import SizeRequest, parse_size, resolve_for_model

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


class Option(NamedTuple):
    """One way to get an instance on a GPU; options compare as tuples, cheapest first."""

    ops: int  # destroy + create operations it costs
    loss: int  # future capacity it spoils (the fragmentation measure)
    free_after: int  # compute left free on the GPU afterwards (less: a tighter fit)
    start: int  # where the instance goes
    reused: Slot | None  # the existing free instance it takes, if any
    destroyed: tuple[Slot, ...]  # the free instances it destroys to make room


class _Memo:
    """Per-model, per-round memo: state keys are interned to ints, choices cached per key."""

    def __init__(self, model: GpuModel) -> None:
        self.model = model
        self.budget = model.compute_budget
        self.by_id = model.by_id
        self.key_ids: dict[StateKey, int] = {}
        self.options: dict[int, Option | None] = {}
        self.destroys: dict[int, Option | None] = {}
        self.capacities: dict[tuple[int, int], int] = {}
        self.carves: dict[tuple[Signature, Signature, int], Option | None] = {}
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
            pairs: tuple[tuple[int, int], ...] = ()
            all_me = excluded = False
        else:
            mask, compute, pairs, extended, all_me, excluded = base
        counts: dict[int, int] | None = None
        for start, pid in slots:
            size, cost, binds, extends, is_all_me, excludable = self.traits[pid]
            mask |= ((1 << size) - 1) << start
            compute += cost
            if binds:
                if counts is None:
                    counts = dict(pairs)
                counts[pid] = counts.get(pid, 0) + 1
            if extends:
                extended += 1
            all_me = all_me or is_all_me
            excluded = excluded or excludable
        if counts is not None:
            pairs = tuple(sorted(counts.items()))
        return (mask, compute, pairs, extended, all_me, excluded)

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
        """The cheapest way to get one ``pid`` instance on a GPU in state ``key``."""
        found = self.cheap_option(kid, key, pid)
        return found if found is not None else self.destroy_option(kid, key, pid)

    def cheap_option(self, kid: int, key: StateKey, pid: int) -> Option | None:
        """Reuse a free instance (0 ops) or carve free space (1 op); None when neither can."""
        memo_key = kid * 1024 + pid
        if memo_key in self.options:
            return self.options[memo_key]
        sig, free = key
        found: Option | None = None
        for slot in free:
            if slot[1] == pid:
                found = Option(0, 0, self.budget - sig[1], slot[0], slot, ())
                break
        else:
            found = self._carve(self.signature(free, sig) if free else sig, sig, pid)
        self.options[memo_key] = found
        return found

    def destroy_option(self, kid: int, key: StateKey, pid: int) -> Option | None:
        """Destroy free instances to make room (1 + n ops), when nothing cheaper exists."""
        memo_key = kid * 1024 + pid
        if memo_key in self.destroys:
            return self.destroys[memo_key]
        found = self._destroy(key, pid) if key[1] else None
        self.destroys[memo_key] = found
        return found

    def _destroy(self, key: StateKey, pid: int) -> Option | None:
        sig, free = key
        p = self.by_id[pid]
        whole = self.signature(free, sig)
        best: Option | None = None
        # Make room: destroy the free instances in the way, then (for the compute budget or the
        # +me rule) the largest other free ones, until the new instance fits.
        before = self.capacity(whole[0], whole[1])
        held = self.capacity(sig[0], sig[1])
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
                option = self._option(kept, sig, before, held, p, start, tuple(sorted(in_way)))
                if best is None or option < best:
                    best = option
        return best

    def _carve(self, whole: Signature, fixed: Signature, pid: int) -> Option | None:
        """The best placement of ``pid`` in the free space of ``whole`` (memoised: many GPU
        states share their occupied space)."""
        memo_key = (whole, fixed, pid)
        if memo_key in self.carves:
            return self.carves[memo_key]
        p = self.by_id[pid]
        before = self.capacity(whole[0], whole[1])
        # Free instances may be destroyed later, so what a placement spoils of the space that is
        # not held counts too.
        held = self.capacity(fixed[0], fixed[1])
        best: Option | None = None
        for start in p.starts:
            if self.fits(whole, p, start):
                option = self._option(whole, fixed, before, held, p, start, ())
                if best is None or option < best:
                    best = option
        self.carves[memo_key] = best
        return best

    def _option(
        self,
        sig: Signature,
        fixed: Signature,
        before: int,
        held: int,
        p: Profile,
        start: int,
        destroyed: tuple[Slot, ...],
    ) -> Option:
        span = span_mask(start, p.size)
        compute = sig[1] + p.compute
        loss = before - self.capacity(sig[0] | span, compute)
        loss += held - self.capacity(fixed[0] | span, fixed[1] + p.compute)
        return Option(1 + len(destroyed), loss, self.budget - compute, start, None, destroyed)


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
    """A set of GPUs with, per (model, profile), heaps of each GPU's options.

    One heap holds the cheap options (reuse, carve); a second, built only when the first runs
    dry, holds the options that destroy free instances.  Entries are pushed when a GPU changes and
    dropped lazily when their state id is stale, so finding the best GPU is a heap peek.
    """

    def __init__(self, gpus: Sequence[_Gpu]) -> None:
        self.members = gpus
        self.models = sorted({g.memo.model.name for g in gpus})
        self.heaps: dict[tuple[str, int, bool], list[_Entry]] = {}

    @staticmethod
    def _entry(gpu: _Gpu, pid: int, destroying: bool) -> _Entry | None:
        memo = gpu.memo
        if destroying:
            option = memo.destroy_option(gpu.kid, gpu.key, pid)
        else:
            option = memo.cheap_option(gpu.kid, gpu.key, pid)
        if option is None:
            return None
        return (option.ops, option.loss, option.free_after, gpu.gid, gpu.kid)

    def push(self, gpu: _Gpu) -> None:
        model = gpu.memo.model.name
        for (name, pid, destroying), heap in self.heaps.items():
            if name == model:
                entry = self._entry(gpu, pid, destroying)
                if entry is not None:
                    heapq.heappush(heap, entry)

    def best(self, model: str, pid: int, gpus: Sequence[_Gpu]) -> _Gpu | None:
        for destroying in (False, True):
            heap = self.heaps.get((model, pid, destroying))
            if heap is None:
                heap = []
                for gpu in self.members:
                    if gpu.memo.model.name == model:
                        entry = self._entry(gpu, pid, destroying)
                        if entry is not None:
                            heap.append(entry)
                heapq.heapify(heap)
                self.heaps[(model, pid, destroying)] = heap
            while heap:
                top = heap[0]
                gpu = gpus[top[3]]
                if gpu.kid == top[4]:
                    return gpu
                heapq.heappop(heap)
        return None


#: Free instances kept per profile in use, in rounds that serve pending pods (the controller's and
#: the simulator's default; ``jupyter-mig plan --spares``).  One measured best: see docs/planner.md.
DEFAULT_SPARES = 1
MAX_SPARES = 7  # a GPU holds at most 7 instances
SPARE_CANDIDATES = 256  # GPUs with room that the spare pass considers, fullest first
SECOND_PASS_LIMIT = 2000  # rounds up to this many pods also try largest-first when short
PROMOTION_LIMIT = 200  # rounds up to this many pods get PROMOTION_PASSES re-orderings
PROMOTION_PASSES = 8
_REPACK_LIMIT = 256  # a pod that fits nowhere tries re-packing at most this many GPUs
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
        self.gpu_counts: dict[frozenset[str], int] = {}
        # Multi-instance requests known not to fit a node, with the node's version at the time.
        self.node_versions: dict[str, int] = {}
        self.misfits: dict[tuple[str, tuple[tuple[tuple[str, int], ...], ...]], int] = {}
        self.assigned: dict[str, list[Assignment]] = {}
        self.owners: dict[tuple[int, int], tuple[str, int]] = {}  # (gpu, start) -> (pod, item)

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

    def _gpu_count(self, nodes: frozenset[str]) -> int:
        count = self.gpu_counts.get(nodes)
        if count is None:
            count = self.gpu_counts[nodes] = sum(len(self.node_gpus.get(n, ())) for n in nodes)
        return count

    def index_for(self, nodes: frozenset[str]) -> _Index:
        index = self.indexes.get(nodes)
        if index is None:
            members = [g for n in sorted(nodes) for g in self.node_gpus.get(n, ())]
            index = _Index(members)
            self.indexes[nodes] = index
            for g in members:
                self.memberships[g.gid].append(index)
        return index

    def take(self, gpu: _Gpu, option: Option, pid: int, pod: str, item: int) -> None:
        start, _ = gpu.apply(option, pid)
        self._assign(gpu, start, pid, pod, item)
        self._changed(gpu)

    def _assign(self, gpu: _Gpu, start: int, pid: int, pod: str, item: int) -> None:
        self.owners[(gpu.gid, start)] = (pod, item)
        slots = self.assigned.setdefault(pod, [])
        while len(slots) <= item:
            slots.append(Assignment(gpu.node, gpu.index, pid, start))
        slots[item] = Assignment(gpu.node, gpu.index, pid, start)

    def _changed(self, gpu: _Gpu) -> None:
        self.node_versions[gpu.node] = self.node_versions.get(gpu.node, 0) + 1
        for index in self.memberships[gpu.gid]:
            index.push(gpu)

    @staticmethod
    def _consider(best: _Pick | None, gpu: _Gpu, pids: dict[str, int]) -> _Pick | None:
        pid = pids.get(gpu.memo.model.name)
        if pid is None:
            return best
        option = gpu.option(pid)
        if option is None:
            return best
        score = (option.ops, option.loss, option.free_after, gpu.gid)
        return (score, gpu, option, pid) if best is None or score < best[0] else best

    # -- single-instance pods ----------------------------------------------------------------

    def place_single(self, pod: str, item: SizeRequest, nodes: frozenset[str] | None) -> bool:
        best: _Pick | None = None
        pids = self.profiles_for(item)
        if (
            nodes is not None
            and nodes not in self.indexes
            and self._gpu_count(nodes) <= _SCAN_LIMIT
        ):
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
            return self._repack_somewhere(pod, pids, nodes)
        _, gpu, option, pid = best
        self.take(gpu, option, pid, pod, 0)
        return True

    def _repack_somewhere(
        self, pod: str, pids: dict[str, int], nodes: frozenset[str] | None
    ) -> bool:
        """Last resort for a pod that fits nowhere as the GPUs stand: instances created earlier
        in this round have no position yet, so re-place them together with the new one."""
        names = sorted(nodes) if nodes is not None else list(self.node_gpus)
        candidates = [
            g
            for n in names
            for g in self.node_gpus.get(n, ())
            if g.created and g.memo.model.name in pids
        ]
        if len(candidates) > _REPACK_LIMIT:
            return False
        return any(self._repack(gpu, pids[gpu.memo.model.name], pod, 0) for gpu in candidates)

    def _repack(self, gpu: _Gpu, pid: int, pod: str, item: int) -> bool:
        memo = gpu.memo
        created = set(gpu.created)
        immovable = [s for s in gpu.fixed if s not in created]
        movable = [p for _, p in gpu.created] + [pid]
        for kept in (gpu.free, ()):
            starts = _pack(memo, memo.signature([*immovable, *kept]), movable)
            if starts is not None:
                break
        else:
            return False
        placed = [(start, p) for start, p in zip(starts, movable, strict=True)]
        sig = memo.signature([*immovable, *placed])
        keep: list[Slot] = []
        for slot in gpu.free:  # keep every other free instance that still fits
            if memo.fits(sig, memo.by_id[slot[1]], slot[0]):
                keep.append(slot)
                sig = memo.signature([slot], sig)
        owners = [self.owners.pop((gpu.gid, start)) for start, _ in gpu.created]
        gpu.destroyed.extend(s for s in gpu.free if s not in keep)
        gpu.free = tuple(keep)
        gpu.created = placed
        gpu.fixed = [*immovable, *placed]
        gpu.key = (memo.signature(gpu.fixed), gpu.free)
        gpu.kid = memo.intern(gpu.key)
        for (start, p), (owner, position) in zip(placed, [*owners, (pod, item)], strict=True):
            self._assign(gpu, start, p, owner, position)
        self._changed(gpu)
        return True

    # -- pods with several instances: all on one node ---------------------------------------

    def place_multi(
        self,
        pod: str,
        items: tuple[SizeRequest, ...],
        nodes: frozenset[str] | None,
        sizes: dict[SizeRequest, float],
    ) -> bool:
        names = sorted(nodes) if nodes is not None else list(self.node_gpus)
        positions = sorted(  # largest first; the order the requests were written in is no input
            range(len(items)),
            key=lambda i: (-sizes.get(items[i], 0.0), items[i].kind, items[i].text, i),
        )
        ordered = [self.profiles_for(items[i]) for i in positions]
        if not all(ordered):
            return False  # some instance resolves on no model of this round
        need = sum(
            min(self.memos[model].by_id[pid].compute for model, pid in pids.items())
            for pids in ordered
        )
        wanted = tuple(tuple(sorted(pids.items())) for pids in ordered)
        best: tuple[tuple[int, int], list[tuple[_Gpu, Option, int]]] | None = None
        feasible = 0
        for name in names:
            version = self.node_versions.get(name, 0)
            if self.misfits.get((name, wanted)) == version:
                continue  # the same request did not fit and the node has not changed since
            gpus = self.node_gpus.get(name, [])
            if sum(g.memo.budget - g.key[0][1] for g in gpus) < need:
                continue  # not enough compute left on the node, whatever is destroyed
            trial = self._try_node(gpus, ordered)
            if trial is None:
                self.misfits[(name, wanted)] = version
                continue
            cost = (sum(o.ops for _, o, _ in trial), sum(o.loss for _, o, _ in trial))
            if best is None or cost < best[0]:
                best = (cost, trial)
            feasible += 1
            if feasible >= 16:  # enough choice; keeps wide multi-instance rounds fast
                break
        if best is None:
            return False
        for position, (gpu, option, pid) in zip(positions, best[1], strict=True):
            self.take(gpu, option, pid, pod, position)
        return True

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
                    score = (option.ops, option.loss, option.free_after, gpu.gid)
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


def _pod_size(demand: Demand, models: Sequence[GpuModel], sizes: dict[SizeRequest, float]) -> float:
    """A model-neutral size for ordering: the smallest share of a GPU any model gives it."""
    total = 0.0
    for item in demand.items:
        if item not in sizes:
            shares = []
            for model in models:
                p = resolve_for_model(item, model)
                if p is not None:
                    shares.append(p.size / model.grid + p.compute / model.compute_budget)
            sizes[item] = min(shares, default=3.0)
        total += sizes[item]
    return total


def _tier(demand: Demand) -> tuple[int, bool]:
    return (demand.priority, demand.interactive)


def _run(
    nodes: Sequence[NodeSnapshot],
    ordered: Sequence[Demand],
    tiers: list[tuple[int, bool]],
    sizes: dict[SizeRequest, float],
) -> tuple[Plan, tuple[int, ...]]:
    """Serve ``ordered`` one pod at a time; score = (unserved per tier, ops, fragmentation)."""
    state = _Round(nodes)
    tier_of = {t: i for i, t in enumerate(tiers)}
    served = [0] * len(tiers)
    placements: dict[str, tuple[Assignment, ...]] = {}
    unplaced: list[str] = []
    for demand in ordered:
        nodes_set = frozenset(demand.nodes) if demand.nodes is not None else None
        if not demand.items:
            placements[demand.name] = ()
            continue
        if len(demand.items) == 1:
            done = state.place_single(demand.name, demand.items[0], nodes_set)
        else:
            done = state.place_multi(demand.name, demand.items, nodes_set, sizes)
        if done:
            served[tier_of[_tier(demand)]] += 1
        else:
            unplaced.append(demand.name)
    for pod, slots in state.assigned.items():
        placements[pod] = tuple(slots)
    plan = Plan(layouts={}, placements=placements, unplaced=sorted(unplaced))
    fragmentation = 0
    for gpu in state.gpus:
        # A free instance destroyed to make room and later carved again at the same place was
        # simply kept: neither operation happens.
        twins = set(gpu.created) & set(gpu.destroyed)
        gpu.created = [s for s in gpu.created if s not in twins]
        gpu.destroyed = [s for s in gpu.destroyed if s not in twins]
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


def plan_round(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], spares: int = 0) -> Plan:
    """Plan one round.  Pure and deterministic; see the module docstring.  With ``spares`` > 0,
    after the pending pods are served, every profile in use on a model is topped up to that many
    free instances (see :func:`_add_spares`)."""
    plan = _plan_demands(nodes, demands)
    return _add_spares(nodes, plan, spares) if spares > 0 else plan


def _plan_demands(nodes: Sequence[NodeSnapshot], demands: Sequence[Demand]) -> Plan:
    names = [d.name for d in demands]
    if len(set(names)) != len(names):
        raise ValueError("pending pod names must be unique")
    models = sorted({g.model for n in nodes for g in n.gpus}, key=lambda m: m.name)
    tiers = sorted({_tier(d) for d in demands}, reverse=True)
    rank = {t: i for i, t in enumerate(tiers)}
    sizes: dict[SizeRequest, float] = {}
    for d in demands:
        _pod_size(d, models, sizes)

    def by_tier(largest_first: bool) -> list[Demand]:
        sign = -1 if largest_first else 1
        return sorted(
            demands, key=lambda d: (rank[_tier(d)], sign * _pod_size(d, models, sizes), d.name)
        )

    order = by_tier(largest_first=False)
    best, score = _run(nodes, order, tiers, sizes)
    if not best.unplaced or len(demands) > SECOND_PASS_LIMIT:
        return best
    best, score = _reorder(nodes, demands, tiers, sizes, order, best, score, by_tier)
    from jupyter_mig.mig.exact import POD_LIMIT, solve_round  # only short rounds get here

    memos = {m.name: _Memo(m) for m in models}
    if len(demands) > POD_LIMIT or not _could_serve_more(nodes, demands, best, memos):
        return best
    served = [-n for n in score[: len(tiers)]]
    exact = solve_round(nodes, demands, memos, tiers, served)
    if exact is not None and _score(exact, demands, tiers, nodes, memos) < score:
        return exact
    return best


def _add_spares(nodes: Sequence[NodeSnapshot], plan: Plan, spares: int) -> Plan:
    """Carve up to ``spares`` free instances of every profile in use (held, or placed by ``plan``)
    on each model, where they cost nothing the plan relies on.

    Why: a pod whose size has a free instance binds as soon as it is scheduled; one without waits
    a whole round (batch window, create, device-plugin refresh), and a short-lived pod may be gone
    before then.  What a spare may use: free space, and free instances of a profile beyond its own
    target (``spares`` for a profile in use, none for one that is not).  Everything the plan
    keeps, places or creates stays, so the pods served and every in-use instance are untouched.
    One greedy pass, smallest first; a spare that fits nowhere is simply not made.
    """
    held: dict[str, set[int]] = {}  # model -> profiles in use or placed
    free: Counter[tuple[str, int]] = Counter()
    placed = {(a.node, a.gpu, a.start) for slots in plan.placements.values() for a in slots}
    # Per GPU: its layout after the plan, and which of those instances are free ones that
    # existed before (only those may be given up for a spare).
    gpus: list[tuple[str, GpuSnapshot, tuple[Instance, ...], set[Slot]]] = []
    for node in nodes:
        for snap in node.gpus:
            layout = plan.layouts[(node.name, snap.index)]
            in_use: set[Slot] = set()
            before: set[Slot] = set()
            for i in snap.instances:
                (in_use if i.used else before).add((i.start, i.profile_id))
            existing: set[Slot] = set()
            for inst in layout:
                slot = (inst.start, inst.profile_id)
                if slot in in_use or (node.name, snap.index, inst.start) in placed:
                    held.setdefault(snap.model.name, set()).add(inst.profile_id)
                else:
                    free[(snap.model.name, inst.profile_id)] += 1
                    if slot in before:
                        existing.add(slot)
            gpus.append((node.name, snap, layout, existing))
    wanted: list[Demand] = []
    for model_name, profiles in sorted(held.items()):
        where = tuple(n.name for n in nodes if any(g.model.name == model_name for g in n.gpus))
        restrict = None if len(where) == len(nodes) else where
        model = next(g.model for n in nodes for g in n.gpus if g.model.name == model_name)
        for pid in sorted(profiles):
            request = parse_size(model.by_id[pid].name)
            for k in range(spares - free[(model_name, pid)]):
                wanted.append(Demand(f"spare {model_name} {pid} {k}", (request,), restrict))
    if not wanted:
        return plan
    kept: Counter[tuple[str, int]] = Counter()
    rooms: list[tuple[int, int, str, GpuSnapshot]] = []  # (-taken, order, node, GPU with room)
    for name, snap, layout, existing in gpus:
        instances = []
        taken = 0
        for inst in layout:
            loose = (inst.start, inst.profile_id) in existing
            if loose and inst.profile_id in held.get(snap.model.name, ()):
                key = (snap.model.name, inst.profile_id)
                if kept[key] < spares:  # this profile's own spares stay
                    kept[key] += 1
                    loose = False
            instances.append(ObservedInstance(inst.profile_id, inst.start, used=not loose))
            taken += 0 if loose else snap.model.by_id[inst.profile_id].size
        if taken < snap.model.grid:  # only GPUs with room for a spare take part
            spare_gpu = GpuSnapshot(snap.index, snap.model, tuple(instances))
            rooms.append((-taken, len(rooms), name, spare_gpu))
    # The fullest GPUs first (spares there spoil the least), and only as many as a few spares
    # can use, so that a round over thousands of GPUs stays fast.
    by_node: dict[str, list[GpuSnapshot]] = {}
    for _, _, name, spare_gpu in sorted(rooms)[:SPARE_CANDIDATES]:
        by_node.setdefault(name, []).append(spare_gpu)
    after = [NodeSnapshot(n.name, tuple(by_node.get(n.name, ())), n.labels) for n in nodes]
    sizes: dict[SizeRequest, float] = {}
    models = sorted({g.model for n in nodes for g in n.gpus}, key=lambda m: m.name)
    ordered = sorted(wanted, key=lambda d: (_pod_size(d, models, sizes), d.name))
    extra, _ = _run(after, ordered, [(0, False)], sizes)
    for key, made in extra.created.items():
        undone = set(plan.destroyed.get(key, ())) & set(made)  # re-carved where it was: kept
        rest = tuple(i for i in plan.destroyed.get(key, ()) if i not in undone)
        if rest:
            plan.destroyed[key] = rest
        else:
            plan.destroyed.pop(key, None)
        new = tuple(i for i in made if i not in undone)
        if new:
            plan.created[key] = tuple(sorted((*plan.created.get(key, ()), *new)))
    for key, gone in extra.destroyed.items():
        plan.destroyed[key] = tuple(sorted((*plan.destroyed.get(key, ()), *gone)))
    plan.layouts.update(extra.layouts)
    plan.creates = sum(len(c) for c in plan.created.values())
    plan.destroys = sum(len(d) for d in plan.destroyed.values())
    return plan


def _could_serve_more(
    nodes: Sequence[NodeSnapshot], demands: Sequence[Demand], plan: Plan, memos: dict[str, _Memo]
) -> bool:
    """Whether some unserved pod could get all its instances on one of its nodes if everything
    not in use were re-carved: if none could, no plan serves more than ``plan``."""
    left = set(plan.unplaced)
    held: dict[str, list[tuple[_Memo, Signature]]] = {}
    for node in nodes:
        for snap in node.gpus:
            memo = memos[snap.model.name]
            sig = memo.signature((i.start, i.profile_id) for i in snap.instances if i.used)
            held.setdefault(node.name, []).append((memo, sig))
    fitting: dict[tuple[str, SizeRequest], bool] = {}

    def fits_node(name: str, item: SizeRequest) -> bool:
        found = fitting.get((name, item))
        if found is None:
            found = fitting[(name, item)] = any(
                (p := resolve_for_model(item, memo.model)) is not None
                and any(memo.fits(sig, p, start) for start in p.starts)
                for memo, sig in held[name]
            )
        return found

    for d in demands:
        if d.name not in left:
            continue
        for name in held if d.nodes is None else (n for n in d.nodes if n in held):
            if all(fits_node(name, item) for item in d.items):
                return True
    return False


def _score(
    plan: Plan,
    demands: Sequence[Demand],
    tiers: list[tuple[int, bool]],
    nodes: Sequence[NodeSnapshot],
    memos: dict[str, _Memo],
) -> tuple[int, ...]:
    """(served per tier, negated; operations; fragmentation): lower is better."""
    served = Counter(_tier(d) for d in demands if d.items and d.name in plan.placements)
    fragmentation = 0
    for node in nodes:
        for snap in node.gpus:
            memo = memos[snap.model.name]
            sig = memo.signature(
                (i.start, i.profile_id) for i in plan.layouts[(node.name, snap.index)]
            )
            fragmentation -= memo.capacity(sig[0], sig[1])
    return (*(-served[t] for t in tiers), plan.operations, fragmentation)


def _reorder(
    nodes: Sequence[NodeSnapshot],
    demands: Sequence[Demand],
    tiers: list[tuple[int, bool]],
    sizes: dict[SizeRequest, float],
    order: list[Demand],
    best: Plan,
    score: tuple[int, ...],
    by_tier: Callable[[bool], list[Demand]],
) -> tuple[Plan, tuple[int, ...]]:
    """Plan again largest first, then with what stayed unserved promoted to the front."""
    queued = [by_tier(True)]  # largest first
    passes = PROMOTION_PASSES if len(demands) <= PROMOTION_LIMIT else 1
    tried = {tuple(d.name for d in order)}
    last_order, last = order, best
    runs = 0
    while runs < passes and best.unplaced:
        if queued:
            order = queued.pop()
        else:
            # Promote what the last pass left unserved to the front, whatever its tier: serving
            # it first may let the higher tiers fit around it (the score still ranks tiers).
            left = set(last.unplaced)
            order = [d for d in last_order if d.name in left]
            order += [d for d in last_order if d.name not in left]
        signature = tuple(d.name for d in order)
        if signature in tried:
            if queued:
                continue
            break
        tried.add(signature)
        plan, plan_score = _run(nodes, order, tiers, sizes)
        runs += 1
        last_order, last = order, plan
        if plan_score < score:
            best, score = plan, plan_score
    return best, score


def _pack(memo: _Memo, base: Signature, pids: list[int]) -> list[int] | None:
    """Placement starts for ``pids`` on top of ``base`` (exhaustive, largest first), or None."""
    order = sorted(range(len(pids)), key=lambda i: (-memo.by_id[pids[i]].size, pids[i], i))
    starts = [0] * len(pids)

    def place(k: int, sig: Signature, floor: int) -> bool:
        if k == len(order):
            return True
        i = order[k]
        p = memo.by_id[pids[i]]
        same_as_before = k > 0 and pids[order[k - 1]] == pids[i]
        for start in p.starts:
            if same_as_before and start < floor:
                continue  # identical instances: only increasing starts, no permutations
            if memo.fits(sig, p, start):
                starts[i] = start
                if place(k + 1, memo.signature([(start, p.nvml_id)], sig), start):
                    return True
        return False

    return starts if place(0, base, -1) else None

"""``nos-greedy``: our re-implementation of the MIG partitioner of nebuly-ai/nos, as a baseline.

What it does, after the project's notes on nos (``reference/nos.md`` §2):

- Batching: a batch is ready 10 s after its last pending pod or 60 s after its first; only one
  plan is in flight — while any GPU still reconfigures, the batch is dropped and retried 10 s
  later.
- Planning: pods sorted by priority, then smaller profile first.  "Lacking" slices are counted
  cluster-wide (each pod's request minus the free devices of the whole cluster).  Candidate nodes
  (a free device, or a GPU whose geometry is not an allowed one) are visited in name order; on
  each, every GPU in index order switches to the allowed whole-GPU geometry that provides the most
  lacking profiles without dropping a used device (first in list order on ties; nos breaks them
  by Go map order); then pods are added where a single GPU has all their devices.  A node that
  takes no pod keeps its old geometry.  No placements, no backtracking, no search across nodes.
- Geometries: the distinct multisets of the model's maximal layouts built from one plain profile
  per compute size (1g, 2g, 3g, 4g, 7g), derived from the layout rules rather than nos's
  hand-written tables (which name profiles that do not exist, e.g. ``7g.79gb``).
- Applying (the mig-agent): on a GPU that gets a create, every free device is destroyed and
  created again; devices are created without a placement, which we model as the driver taking
  the lowest free legal start, trying up to 20 distinct creation orders (largest first, then the
  next permutations) and creating nothing on that GPU when none fits.  Pods are then bound by the
  scheduler like any other pod: nos does not bind them itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from jupyter_mig.mig.layout import Instance, can_add, enumerate_layouts
from jupyter_mig.mig.models import GpuModel, Profile
from jupyter_mig.sim.engine import Batching, Decision, GpuChange, GpuView, PodView

NOS_BATCHING = Batching(idle=10.0, max_wait=60.0, barrier=True, requeue=10.0)
MAX_CREATE_ATTEMPTS = 20  # creation orders the mig-agent tries per GPU

Geometry = tuple[tuple[int, int], ...]  # sorted (profile id, count)


def nos_profiles(model: GpuModel) -> tuple[Profile, ...]:
    """Per compute size, the plain profile with the least memory: the ones nos's tables use."""
    best: dict[int, Profile] = {}
    for p in model.profiles:
        if p.media != "none":
            continue
        current = best.get(p.compute)
        if current is None or (p.memory_mib, p.nvml_id) < (current.memory_mib, current.nvml_id):
            best[p.compute] = p
    return tuple(sorted(best.values(), key=lambda p: p.compute))


@lru_cache(maxsize=32)
def nos_geometries(model: GpuModel) -> tuple[Geometry, ...]:
    """The allowed whole-GPU geometries, most instances first (as nos's tables are ordered)."""
    shapes = {
        tuple(sorted(Counter(i.profile_id for i in layout).items()))
        for layout in enumerate_layouts(model, profiles=nos_profiles(model), maximal_only=True)
    }

    def order(g: Geometry) -> tuple[int, list[tuple[int, int]]]:
        return (-sum(c for _, c in g), sorted((model.by_id[p].compute, -c) for p, c in g))

    return tuple(sorted(shapes, key=order))


class _Gpu:
    """nos's view of one GPU: counts of used and free devices per profile, no placements."""

    __slots__ = ("free", "model", "used", "view")

    def __init__(self, view: GpuView, used: Counter[int], free: Counter[int]) -> None:
        self.view = view
        self.model = view.model
        self.used = used
        self.free = free

    @staticmethod
    def of(view: GpuView) -> _Gpu:
        used = Counter(i.profile_id for i in view.used)
        return _Gpu(view, used, Counter(i.profile_id for i in view.free))

    def clone(self) -> _Gpu:
        return _Gpu(self.view, Counter(self.used), Counter(self.free))

    def geometry(self) -> Counter[int]:
        return self.used + self.free

    def in_allowed_geometry(self) -> bool:
        return tuple(sorted(self.geometry().items())) in nos_geometries(self.model)

    def update_geometry_for(self, required: dict[int, int]) -> None:
        """Switch to the allowed geometry that provides the most required profiles, if any."""
        best: Geometry | None = None
        best_score = 0
        for candidate in nos_geometries(self.model):
            counts = dict(candidate)
            if any(counts.get(p, 0) < n for p, n in self.used.items()):
                continue  # it would delete a used device
            score = 0
            for p, need in required.items():
                if self.free[p] >= need:
                    continue
                score += max(0, min(counts.get(p, 0) - self.used[p], need))
            if score > best_score:
                best, best_score = candidate, score
        if best is not None:
            self.free = Counter({p: c - self.used[p] for p, c in best if c > self.used[p]})


@dataclass(frozen=True)
class NosGreedyPolicy:
    batching: Batching | None = NOS_BATCHING
    name: str = "nos-greedy"

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]:
        return ()

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        nodes: dict[str, list[_Gpu]] = {}
        for view in sorted(gpus, key=lambda g: (g.node, g.index)):
            nodes.setdefault(view.node, []).append(_Gpu.of(view))
        if not waiting or not nodes:
            return Decision()
        model = gpus[0].model
        requests = {p.name: Counter(p.profiles) for p in waiting}

        def size(pod: PodView) -> tuple[int, int, int, float, str]:
            largest = max(
                (model.by_id[pid] for pid in pod.profiles), key=lambda p: (p.memory_mib, p.compute)
            )
            return (-pod.priority, largest.memory_mib, largest.compute, pod.arrival, pod.name)

        order = sorted(waiting, key=size)
        free_total: Counter[int] = sum((g.free for gs in nodes.values() for g in gs), Counter())
        lacking_by_pod: dict[str, Counter[int]] = {}
        lacking: Counter[int] = Counter()
        for pod in order:
            lack = Counter(
                {p: n - free_total[p] for p, n in requests[pod.name].items() if n > free_total[p]}
            )
            lacking_by_pod[pod.name] = lack
            lacking.update(lack)
        if not lacking:
            return Decision()
        candidates = [
            name
            for name, members in sorted(nodes.items())
            if any(g.free or not g.in_allowed_geometry() for g in members)
        ]
        added_anywhere: set[str] = set()
        for name in candidates:
            lacking = +lacking
            if not lacking:
                break
            fork = [g.clone() for g in nodes[name]]
            required = dict(lacking)
            for gpu in fork:
                gpu.update_geometry_for(required)
                for p, q in gpu.free.items():
                    if p in required:
                        required[p] -= q
                        if required[p] <= 0:
                            del required[p]
            free_now = free_total.copy()
            for old, new in zip(nodes[name], fork, strict=True):
                free_now.subtract(old.free)
                free_now.update(new.free)
            added = []
            for pod in order:
                request = requests[pod.name]
                if pod.name in added_anywhere or any(free_now[p] < n for p, n in request.items()):
                    continue
                fits = (g for g in fork if all(g.free[p] >= n for p, n in request.items()))
                host = next(fits, None)
                if host is None:
                    continue  # nos adds a pod to a single GPU only
                host.free.subtract(request)
                host.free = +host.free
                host.used.update(request)
                free_now.subtract(request)
                added.append(pod.name)
            if added:
                nodes[name] = fork
                free_total = free_now
                added_anywhere.update(added)
                for pod_name in added:
                    lacking.subtract(lacking_by_pod[pod_name])
        changes = {}
        for members in nodes.values():
            for gpu in members:
                change = apply_geometry(gpu.view, gpu.geometry())
                if change.destroy or change.create:
                    changes[(gpu.view.node, gpu.view.index)] = change
        return Decision(changes)


def apply_geometry(view: GpuView, desired: Counter[int]) -> GpuChange:
    """What nos's mig-agent does to reach ``desired`` (counts per profile) on one GPU."""
    actual = Counter(i.profile_id for i in (*view.used, *view.free))
    if +actual == +desired:
        return GpuChange()
    destroy: list[Instance] = []
    for pid in sorted(actual):
        excess = actual[pid] - desired[pid]
        if excess > 0:
            spare = sorted((i for i in view.free if i.profile_id == pid), key=lambda i: -i.start)
            destroy.extend(spare[:excess])  # used devices are never destroyed
    create = [pid for pid in sorted(desired) for _ in range(desired[pid] - actual[pid])]
    if create:
        rest = [i for i in view.free if i not in destroy]
        destroy.extend(rest)
        create.extend(i.profile_id for i in rest)
    return GpuChange(tuple(sorted(destroy)), _create_unplaced(view.model, view.used, create))


def _create_unplaced(
    model: GpuModel, kept: tuple[Instance, ...], profiles: list[int]
) -> tuple[Instance, ...]:
    """Create ``profiles`` without placements: all of them, or nothing when no order fits."""
    ordered = sorted(profiles, key=lambda p: (-model.by_id[p].size, -model.by_id[p].compute, p))
    for attempt in _orders(ordered, MAX_CREATE_ATTEMPTS):
        layout = kept
        for pid in attempt:
            start = next(
                (s for s in model.by_id[pid].starts if can_add(model, layout, Instance(s, pid))),
                None,
            )
            if start is None:
                break
            layout = (*layout, Instance(start, pid))
        else:
            return tuple(sorted(layout[len(kept) :]))
    return ()


def _orders(items: list[int], limit: int) -> Iterator[list[int]]:
    """``items`` as given, then its next distinct permutations, ``limit`` in all."""
    rank: dict[int, int] = {}
    for item in items:
        rank.setdefault(item, len(rank))
    by_rank = {r: item for item, r in rank.items()}
    seq = [rank[item] for item in items]
    for _ in range(limit):
        yield [by_rank[r] for r in seq]
        i = len(seq) - 2
        while i >= 0 and seq[i] >= seq[i + 1]:
            i -= 1
        if i < 0:
            return
        j = len(seq) - 1
        while seq[j] <= seq[i]:
            j -= 1
        seq[i], seq[j] = seq[j], seq[i]
        seq[i + 1 :] = reversed(seq[i + 1 :])

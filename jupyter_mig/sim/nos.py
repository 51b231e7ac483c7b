"""nos's MIG partitioner (nebuly-ai/nos) re-implemented as a baseline, in three variants.

``nos-greedy`` is nos as people run it, after nos's source (its partitioner and mig-agent) and a
side-by-side run of its own Go planner (issue 12):

- Batching: a batch is ready 10 s after its last pending pod or 60 s after its first; only one
  plan is in flight — while any GPU still reconfigures, the batch is dropped and retried 10 s
  later.
- Every GPU starts with one whole-GPU instance (7g on an A100), as in the measurements of nos.
- Planning: pods sorted by priority, then smaller profile first.  The *lacking* slices are counted
  per pod against the free devices of the whole cluster and summed; a pod added somewhere stops
  counting.  Candidate nodes (a free device, or a GPU whose profile counts are not an allowed
  geometry) are visited in name order while anything is lacking.  On each, the node's GPUs — in
  random order, as nos reads them from a map — switch to the allowed geometry that provides the
  most lacking profiles without dropping a used device (ties broken at random, as Go's map order
  does).  Then **every** pending pod is tried on the node, also those already added on an earlier
  node: such a pod is added again and makes nos carve here too (over-carving).  A pod is added
  when one GPU of the node has all its devices.  A node that takes no pod keeps its old geometry.
  (Until a node is kept, nos leaves a rejected node's new geometry in its snapshot; the only check
  that reads it is the cluster-wide "lacks nothing" test, which a pod that fits one GPU of the
  node passes anyway, so no plan changes and it is not modelled.)  The random choices come from
  the simulation's seed, so a run is reproducible.
- ``nos-greedy-ordered``: the same planner made deterministic and tidy — first geometry in list
  order on ties, GPUs in index order, each pod added at most once, no leak, GPUs start uncarved.
- ``nos-shipped``: ``nos-greedy`` with the geometry tables nos ships (Helm defaults), which name
  profiles that do not exist on 80 GB cards (``7g.79gb``, ``3g.20gb``): a geometry holding one of
  them can never be created, so nos never creates a ``7g.80gb``: once a GPU's starting 7g is
  re-carved, it never comes back.
- Geometries of ``nos-greedy`` and ``nos-greedy-ordered``: the distinct multisets of the model's
  maximal layouts built from one plain profile per compute size (1g, 2g, 3g, 4g, 7g), derived from
  the layout rules rather than nos's hand-written tables.
- Applying (the mig-agent): on a GPU that gets a create, every free device is destroyed and
  created again; devices are created without a placement, which we model as the driver taking
  the lowest free legal start, trying up to 20 distinct creation orders (largest first, then the
  next permutations) and creating nothing on that GPU when none fits (always so for a profile that
  does not exist).  Pods are then bound by the scheduler like any other pod: nos does not bind
  them itself.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, can_add, enumerate_layouts
from jupyter_mig.mig.models import GpuModel, Profile
from jupyter_mig.sim.engine import Batching, Decision, GpuChange, GpuView, PodView

NOS_BATCHING = Batching(idle=10.0, max_wait=60.0, barrier=True, requeue=10.0)
MAX_CREATE_ATTEMPTS = 20  # creation orders the mig-agent tries per GPU

# Sorted (profile id, count).  A profile a table names but the model lacks gets a negative id.
Geometry = tuple[tuple[int, int], ...]

#: nos's shipped tables (Helm ``knownMigGeometries``), in list order, for the models it knows.
SHIPPED_TABLES: dict[str, tuple[dict[str, int], ...]] = {
    "A30-24GB": (
        {"1g.6gb": 4},
        {"1g.6gb": 2, "2g.12gb": 1},
        {"2g.12gb": 2},
        {"4g.24gb": 1},
    ),
    "A100-40GB": (
        {"1g.5gb": 7},
        {"1g.5gb": 5, "2g.10gb": 1},
        {"1g.5gb": 3, "2g.10gb": 2},
        {"1g.5gb": 1, "2g.10gb": 3},
        {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
        {"2g.10gb": 2, "3g.20gb": 1},
        {"1g.5gb": 3, "3g.20gb": 1},
        {"1g.5gb": 1, "2g.10gb": 1, "3g.20gb": 1},
        {"3g.20gb": 2},
        {"1g.5gb": 3, "4g.20gb": 1},
        {"1g.5gb": 1, "2g.10gb": 1, "4g.20gb": 1},
        {"7g.40gb": 1},
    ),
    "A100-80GB": (
        {"1g.10gb": 7},
        {"1g.10gb": 5, "2g.20gb": 1},
        {"1g.10gb": 3, "2g.20gb": 2},
        {"1g.10gb": 1, "2g.20gb": 3},
        {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        {"2g.20gb": 2, "3g.20gb": 1},
        {"1g.10gb": 3, "3g.40gb": 1},
        {"1g.10gb": 1, "2g.20gb": 1, "3g.40gb": 1},
        {"3g.40gb": 2},
        {"1g.10gb": 3, "4g.40gb": 1},
        {"1g.10gb": 1, "2g.20gb": 1, "4g.40gb": 1},
        {"7g.79gb": 1},
    ),
}


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


@lru_cache(maxsize=32)
def shipped_geometries(model: GpuModel) -> tuple[Geometry, ...]:
    """nos's shipped table for ``model``, names it lacks as negative ids; a user error when nos
    ships none (H100, H200, B200, ...: nos then plans for no node at all)."""
    table = SHIPPED_TABLES.get(model.name)
    if table is None:
        known = ", ".join(SHIPPED_TABLES)
        raise UserError(f"policy nos-shipped: nos ships no table for {model.name}; use {known}")
    phantoms: dict[str, int] = {}
    geometries = []
    for entry in table:
        counts: dict[int, int] = {}
        for name, count in entry.items():
            found = model.find_profile(name)
            key = (
                found.nvml_id
                if found is not None
                else phantoms.setdefault(name, -1 - len(phantoms))
            )
            counts[key] = count
        geometries.append(tuple(sorted(counts.items())))
    return tuple(geometries)


def whole_gpu(model: GpuModel) -> tuple[Instance, ...]:
    """One instance of the whole-GPU profile: how nos initializes a MIG GPU."""
    return (Instance(model.full_profile.starts[0], model.full_profile.nvml_id),)


class _Gpu:
    """nos's view of one GPU: counts of used and free devices per profile, no placements."""

    __slots__ = ("free", "geometries", "used", "view")

    def __init__(
        self,
        view: GpuView,
        geometries: tuple[Geometry, ...],
        used: Counter[int],
        free: Counter[int],
    ) -> None:
        self.view = view
        self.geometries = geometries
        self.used = used
        self.free = free

    @staticmethod
    def of(view: GpuView, geometries: tuple[Geometry, ...]) -> _Gpu:
        used = Counter(i.profile_id for i in view.used)
        return _Gpu(view, geometries, used, Counter(i.profile_id for i in view.free))

    def clone(self) -> _Gpu:
        return _Gpu(self.view, self.geometries, Counter(self.used), Counter(self.free))

    def geometry(self) -> Counter[int]:
        return self.used + self.free

    def in_allowed_geometry(self) -> bool:
        return tuple(sorted(self.geometry().items())) in self.geometries

    def update_geometry_for(self, required: dict[int, int], rng: random.Random | None) -> None:
        """Switch to the allowed geometry that provides the most required profiles, if any;
        ties go to a random one (``rng``) or to the first in list order (no ``rng``)."""
        best: list[Geometry] = []
        best_score = 0
        for candidate in self.geometries:
            counts = dict(candidate)
            if any(counts.get(p, 0) < n for p, n in self.used.items()):
                continue  # it would delete a used device
            score = 0
            for p, need in required.items():
                if self.free[p] >= need:
                    continue
                score += max(0, min(counts.get(p, 0) - self.used[p], need))
            if score > best_score:
                best, best_score = [candidate], score
            elif score == best_score and best:
                best.append(candidate)
        if best:
            chosen = best[0] if rng is None else rng.choice(best)
            self.free = Counter({p: c - self.used[p] for p, c in chosen if c > self.used[p]})

    def add(self, request: Counter[int]) -> bool:
        """Take a pod's devices, all from this GPU; False when it lacks any."""
        if any(self.free[p] < n for p, n in request.items()):
            return False
        self.free.subtract(request)
        self.free = +self.free
        self.used.update(request)
        return True


def _update_node(gpus: list[_Gpu], lacking: Counter[int], rng: random.Random | None) -> None:
    """nos's node geometry update: GPU by GPU, for what the GPUs before it do not provide."""
    required = dict(+lacking)
    for gpu in gpus:
        if not required:
            break
        gpu.update_geometry_for(required, rng)
        for p, q in gpu.free.items():
            if p in required:
                required[p] -= q
                if required[p] <= 0:
                    del required[p]


def _free(gpus: Sequence[_Gpu]) -> Counter[int]:
    return sum((g.free for g in gpus), Counter())


@dataclass
class NosGreedyPolicy:
    """nos's planner; ``faithful`` for nos as it runs, else the tidy deterministic variant."""

    name: str = "nos-greedy"
    seed: int = 0
    faithful: bool = True
    shipped: bool = False
    batching: Batching | None = NOS_BATCHING
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def geometries(self, model: GpuModel) -> tuple[Geometry, ...]:
        return shipped_geometries(model) if self.shipped else nos_geometries(model)

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]:
        # A run starts here: re-seed, so that the same policy object replays the same run.
        self._rng = random.Random(self.seed)
        return whole_gpu(model) if self.faithful else ()

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        if not waiting or not gpus:
            return Decision()
        model = gpus[0].model
        geometries = self.geometries(model)
        rng = self._rng if self.faithful else None
        data: dict[str, list[_Gpu]] = {}
        for view in sorted(gpus, key=lambda g: (g.node, g.index)):
            data.setdefault(view.node, []).append(_Gpu.of(view, geometries))
        if rng is not None:
            for members in data.values():
                # nos reads a node's GPUs from a map: the ones it has devices for in random
                # order, then the empty ones
                carved = [g for g in members if g.used or g.free]
                rng.shuffle(carved)
                members[:] = carved + [g for g in members if not (g.used or g.free)]
        requests = {p.name: Counter(p.profiles) for p in waiting}

        def size(pod: PodView) -> tuple[int, int, int, float, str]:
            largest = max(
                (model.by_id[pid] for pid in pod.profiles), key=lambda p: (p.memory_mib, p.compute)
            )
            return (-pod.priority, largest.memory_mib, largest.compute, pod.arrival, pod.name)

        order = sorted(waiting, key=size)
        free_total = sum((_free(gs) for gs in data.values()), Counter())
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
            for name, members in sorted(data.items())
            if any(g.free or not g.in_allowed_geometry() for g in members)
        ]
        kept: set[str] = set()  # nodes that took a pod: their new geometry goes into the plan
        added_anywhere: set[str] = set()
        for name in candidates:
            lacking = +lacking
            if not lacking:
                break
            work = [g.clone() for g in data[name]]
            _update_node(work, lacking, rng)
            added = []
            for pod in order:
                request = requests[pod.name]
                if pod.name in added_anywhere and not self.faithful:
                    continue
                if not any(g.add(request) for g in work):
                    continue  # nos adds a pod to a single GPU only
                added.append(pod.name)
            if added:
                data[name] = work
                kept.add(name)
                added_anywhere.update(added)
                for pod_name in added:
                    lacking.subtract(lacking_by_pod[pod_name])
                    lacking_by_pod[pod_name] = Counter()
        changes = {}
        for name in sorted(kept):
            for gpu in data[name]:
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
    """Create ``profiles`` without placements: all of them, or nothing when no order fits (or
    one of them does not exist on the model)."""
    if any(p not in model.by_id for p in profiles):
        return ()
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

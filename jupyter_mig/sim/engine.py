"""Event-driven replay of a MIG cluster: pods arrive, wait, bind to GPU instances and leave.

Pure: a cluster, a workload and a policy go in; metrics come out.  The engine plays the parts
that are the same for every policy — kube-scheduler binding pods to free instances (first fit in
node-name order), the node agent taking ``ops x op_latency`` to reconfigure a GPU, the device
plugin advertising new instances ``refresh_delay`` later — and enforces the hard rules on every
decision a policy makes: an instance a pod holds (or is promised) is never destroyed, every layout
stays valid, no instance goes to two pods.

A pod lives from ``arrival`` to ``arrival + duration`` whether or not it gets its slices (a user
still waiting gives up then; a trace's deletion time is when the job was deleted).  It counts as
placed when it was bound before it left.  Its wait is ``bind - arrival`` when placed, else its
whole lifetime.  Utilization is the time-averaged share of compute slices held by pods from the
first arrival to the last (the drain after it would dilute every policy alike).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.sizes import SizeError, SizeRequest, parse_size, resolve_for_model


class SimulationError(RuntimeError):
    """A policy broke a hard rule; always a bug in the policy, never bad user input."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodSpec:
    """One pod of a workload: its size requests (one per instance, all on one node)."""

    name: str
    arrival: float
    duration: float
    requests: tuple[str, ...]
    priority: int = 0
    interactive: bool = False


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """``nodes`` identical nodes of ``gpus_per_node`` GPUs of one model."""

    model: GpuModel
    nodes: int
    gpus_per_node: int

    def node_names(self) -> list[str]:
        width = max(2, len(str(self.nodes)))
        return [f"node-{i:0{width}d}" for i in range(1, self.nodes + 1)]

    @property
    def compute_slices(self) -> int:
        return self.nodes * self.gpus_per_node * self.model.compute_budget


@dataclass(frozen=True, slots=True)
class Timing:
    """Costs every policy pays: seconds per destroy/create, and the device-plugin refresh."""

    op_latency: float = 1.0
    refresh_delay: float = 5.0


@dataclass(frozen=True, slots=True)
class Batching:
    """When a policy plans: ``idle`` seconds after the last trigger, at most ``max_wait`` after
    the first.  With ``barrier`` no round starts while a reconfiguration is in flight; the blocked
    batch is dropped and retried ``requeue`` seconds later (nos's behaviour)."""

    idle: float
    max_wait: float
    barrier: bool = False
    requeue: float = 10.0


# --------------------------------------------------------------------------------------------
# The policy interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuView:
    """A GPU as a policy sees it: instances held or promised (``used``) and free ones."""

    node: str
    index: int
    model: GpuModel
    used: tuple[Instance, ...]
    free: tuple[Instance, ...]
    busy: bool  # a reconfiguration is in flight; nothing on it may change


@dataclass(frozen=True, slots=True)
class PodView:
    """A waiting pod: its requests and the profile each resolves to on the cluster's model."""

    name: str
    items: tuple[SizeRequest, ...]
    profiles: tuple[int, ...]
    priority: int
    interactive: bool
    arrival: float


@dataclass(frozen=True, slots=True)
class GpuChange:
    destroy: tuple[Instance, ...] = ()
    create: tuple[Instance, ...] = ()


Slot = tuple[str, int, Instance]  # (node, gpu index, instance)


@dataclass
class Decision:
    """What a round does: per-GPU changes, and (optionally) which instances which pod gets."""

    changes: dict[tuple[str, int], GpuChange] = field(default_factory=dict)
    placements: dict[str, tuple[Slot, ...]] = field(default_factory=dict)


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def batching(self) -> Batching | None:
        """None: the policy never repartitions."""

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]: ...

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision: ...


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Time-averaged utilization (fraction) and pending pods per equal-width time bucket."""

    times: tuple[float, ...]  # bucket midpoints, seconds
    utilization: tuple[float, ...]
    pending: tuple[float, ...]


@dataclass(frozen=True)
class RunResult:
    policy: str
    pods: int
    placed: int
    unplaced: int
    waits: tuple[float, ...]  # sorted
    bind_times: dict[str, float]  # pod name -> when it got its slices, for placed pods
    utilization: float
    creates: int
    destroys: int
    rounds: int
    end: float
    timeline: Timeline

    def wait_percentile(self, q: float) -> float:
        return percentile(self.waits, q)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no data."""
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --------------------------------------------------------------------------------------------
# Engine state
# --------------------------------------------------------------------------------------------

_NEW, _WAITING, _PLANNED, _RUNNING, _GONE = range(5)
# Event kinds, in the order they are handled at equal times.
_LEAVE, _READY, _ARRIVE, _BATCH, _REQUEUE = range(5)
GroupKey = tuple[int, tuple[tuple[int, int], ...]]  # (priority, sorted (profile id, count))


class _Gpu:
    __slots__ = ("busy_until", "free", "gid", "held", "incoming", "index", "model", "node")

    def __init__(self, gid: int, node: str, index: int, model: GpuModel) -> None:
        self.gid = gid
        self.node = node
        self.index = index
        self.model = model
        self.held: dict[Instance, str] = {}  # bound to a running pod, or promised to a planned one
        self.free: set[Instance] = set()
        self.incoming: list[Instance] = []  # being created; exist once the GPU is ready
        self.busy_until: float | None = None

    def layout(self) -> list[Instance]:
        return [*self.held, *self.free, *self.incoming]


class _Pod:
    __slots__ = (
        "awaiting",
        "bound_at",
        "compute",
        "counts",
        "left_at",
        "slots",
        "spec",
        "state",
        "view",
    )

    def __init__(self, spec: PodSpec, view: PodView, compute: int) -> None:
        self.spec = spec
        self.view = view
        self.compute = compute
        self.counts: tuple[tuple[int, int], ...] = tuple(sorted(Counter(view.profiles).items()))
        self.state = _NEW
        self.slots: list[tuple[_Gpu, Instance]] = []
        self.awaiting: set[int] = set()  # gids whose reconfiguration must finish before binding
        self.bound_at: float | None = None
        self.left_at: float | None = None


def resolve_pods(pods: Sequence[PodSpec], model: GpuModel) -> list[PodView]:
    """Parse every pod's requests for ``model``; a request it cannot serve is a user error."""
    views = []
    cache: dict[str, tuple[SizeRequest, int]] = {}
    seen: set[str] = set()
    for pod in pods:
        if pod.name in seen:
            raise UserError(f"pod {pod.name!r}: duplicate pod name")
        seen.add(pod.name)
        if not pod.requests:
            raise UserError(f"pod {pod.name!r}: requests no GPU slice")
        if pod.arrival < 0 or pod.duration < 0:
            raise UserError(f"pod {pod.name!r}: arrival and duration must be >= 0")
        items = []
        profiles = []
        for text in pod.requests:
            if text not in cache:
                try:
                    request = parse_size(text)
                except SizeError as err:
                    raise UserError(f"pod {pod.name!r}: {err}") from None
                profile = resolve_for_model(request, model)
                if profile is None:
                    raise UserError(
                        f"pod {pod.name!r}: {request.describe()} does not exist on {model.name}"
                    )
                cache[text] = (request, profile.nvml_id)
            request, pid = cache[text]
            items.append(request)
            profiles.append(pid)
        views.append(
            PodView(
                pod.name, tuple(items), tuple(profiles), pod.priority, pod.interactive, pod.arrival
            )
        )
    return views


class _Engine:
    def __init__(
        self,
        cluster: ClusterSpec,
        pods: Sequence[PodSpec],
        policy: Policy,
        timing: Timing,
        buckets: int,
        audit: bool,
    ) -> None:
        self.cluster = cluster
        self.model = cluster.model
        self.policy = policy
        self.batching = policy.batching
        self.timing = timing
        self.audit = audit
        self.gpus: list[_Gpu] = []
        self.node_gpus: dict[str, list[_Gpu]] = {}
        initial = policy.initial_layout(self.model)
        errors = layout_errors(self.model, initial)
        if errors:
            raise SimulationError(f"{policy.name}: invalid initial layout: {errors[0]}")
        for node in cluster.node_names():
            members = self.node_gpus.setdefault(node, [])
            for index in range(cluster.gpus_per_node):
                gpu = _Gpu(len(self.gpus), node, index, self.model)
                gpu.free.update(initial)
                self.gpus.append(gpu)
                members.append(gpu)
        # Advertised free instances (free, on a GPU that is not reconfiguring), counted.
        self.free_total: Counter[int] = Counter()
        self.free_node: dict[str, Counter[int]] = {n: Counter() for n in self.node_gpus}
        for gpu in self.gpus:
            self._advertise(gpu, gpu.free, +1)
        self.pods: dict[str, _Pod] = {}
        for spec, view in zip(pods, resolve_pods(pods, self.model), strict=True):
            compute = sum(self.model.by_id[p].compute for p in view.profiles)
            self.pods[spec.name] = _Pod(spec, view, compute)
        self.groups: dict[GroupKey, dict[str, None]] = {}  # waiting pods, FIFO per request
        self.awaiting_on: dict[int, set[str]] = {}
        self.events: list[tuple[float, int, int, str]] = []
        self.seq = 0
        self.now = 0.0
        self.end = max((p.arrival + p.duration for p in pods), default=0.0)
        arrivals = [p.arrival for p in pods] or [0.0]
        self.window = (min(arrivals), max(arrivals))  # utilization is averaged over this
        self.window_area = 0.0
        for spec in pods:
            self._push(spec.arrival, _ARRIVE, spec.name)
            self._push(spec.arrival + spec.duration, _LEAVE, spec.name)
        self.batch_first: float | None = None
        self.batch_last = 0.0
        self.held_compute = 0
        self.pending = 0
        self.creates = 0
        self.destroys = 0
        self.rounds = 0
        self.buckets = buckets
        self.width = self.end / buckets if self.end > 0 else 1.0
        self.util_area = [0.0] * buckets
        self.pending_area = [0.0] * buckets

    # -- bookkeeping ----------------------------------------------------------------------

    def _push(self, time: float, kind: int, name: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.events, (time, kind, self.seq, name))

    def _advertise(self, gpu: _Gpu, instances: set[Instance] | list[Instance], sign: int) -> None:
        if gpu.busy_until is not None:
            return
        node_free = self.free_node[gpu.node]
        for inst in instances:
            self.free_total[inst.profile_id] += sign
            node_free[inst.profile_id] += sign

    def _add_free(self, gpu: _Gpu, inst: Instance) -> None:
        gpu.free.add(inst)
        self._advertise(gpu, [inst], +1)

    def _take_free(self, gpu: _Gpu, inst: Instance) -> None:
        gpu.free.remove(inst)
        self._advertise(gpu, [inst], -1)

    def _advance(self, time: float) -> None:
        """Integrate held compute and pending pods over [now, time) into the buckets."""
        start = self.now
        if time > start:
            capacity = self.cluster.compute_slices
            overlap = min(time, self.window[1]) - max(start, self.window[0])
            if overlap > 0:
                self.window_area += self.held_compute / capacity * overlap
            while start < time:
                b = min(int(start / self.width), self.buckets - 1)
                stop = time if b == self.buckets - 1 else min(time, (b + 1) * self.width)
                if stop <= start:  # float rounding at a bucket edge: move on to the next one
                    b = min(b + 1, self.buckets - 1)
                    stop = time if b == self.buckets - 1 else min(time, (b + 2) * self.width)
                self.util_area[b] += self.held_compute / capacity * (stop - start)
                self.pending_area[b] += self.pending * (stop - start)
                start = stop
        self.now = time

    # -- binding (the kube-scheduler part) ------------------------------------------------

    def _try_bind(self, pod: _Pod) -> bool:
        """Bind a waiting pod to advertised free instances on the first node that has them all."""
        for pid, count in pod.counts:
            if self.free_total[pid] < count:
                return False
        for node, gpus in self.node_gpus.items():
            node_free = self.free_node[node]
            if any(node_free[pid] < count for pid, count in pod.counts):
                continue
            chosen: list[tuple[_Gpu, Instance]] = []
            for pid, count in pod.counts:
                need = count
                for gpu in gpus:
                    if gpu.busy_until is not None:
                        continue
                    for inst in sorted(i for i in gpu.free if i.profile_id == pid):
                        chosen.append((gpu, inst))
                        need -= 1
                        if not need:
                            break
                    if not need:
                        break
            for gpu, inst in chosen:
                self._take_free(gpu, inst)
                gpu.held[inst] = pod.spec.name
            pod.slots = chosen
            self._start(pod)
            return True
        return False

    def _start(self, pod: _Pod) -> None:
        pod.state = _RUNNING
        pod.bound_at = self.now
        self.held_compute += pod.compute
        self.pending -= 1

    def _group(self, pod: _Pod) -> GroupKey:
        return (pod.spec.priority, pod.counts)

    def _bind_waiting(self) -> None:
        """Give advertised free instances to waiting pods: higher priority first, then FIFO."""
        for key in sorted(self.groups, key=lambda k: -k[0]):
            members = self.groups[key]
            while members:
                name = next(iter(members))
                if not self._try_bind(self.pods[name]):
                    break  # every pod of this group asks for the same thing
                del members[name]
            if not members:
                del self.groups[key]

    def _has_waiting(self) -> bool:
        return bool(self.groups)

    # -- batching --------------------------------------------------------------------------

    def _trigger(self) -> None:
        if self.batching is None:
            return
        if self.batch_first is None:
            self.batch_first = self.now
        self.batch_last = self.now
        self._push(self._batch_due(), _BATCH)

    def _batch_due(self) -> float:
        assert self.batching is not None and self.batch_first is not None
        return min(self.batch_first + self.batching.max_wait, self.batch_last + self.batching.idle)

    def _on_batch(self) -> None:
        if self.batch_first is None or self.now < self._batch_due():
            return  # stale check: the batch is gone or its window was extended
        assert self.batching is not None
        self.batch_first = None
        if not self._has_waiting():
            return
        if self.batching.barrier and any(g.busy_until is not None for g in self.gpus):
            self._push(self.now + self.batching.requeue, _REQUEUE)
            return
        self._round()

    def _round(self) -> None:
        self.rounds += 1
        views = [
            GpuView(
                gpu.node,
                gpu.index,
                gpu.model,
                tuple(sorted(gpu.held)),
                tuple(sorted(gpu.free)),
                gpu.busy_until is not None,
            )
            for gpu in self.gpus
        ]
        waiting = sorted(
            (self.pods[name].view for members in self.groups.values() for name in members),
            key=lambda v: (v.arrival, v.name),
        )
        self._apply(self.policy.plan(views, waiting))

    # -- applying a decision (the node-agent part) -----------------------------------------

    def _apply(self, decision: Decision) -> None:
        by_key = {(g.node, g.index): g for g in self.gpus}
        name = self.policy.name
        targets: dict[int, set[Instance]] = {}
        for key, change in sorted(decision.changes.items()):
            gpu = by_key.get(key)
            if gpu is None:
                raise SimulationError(f"{name}: change for unknown GPU {key}")
            if not change.destroy and not change.create:
                continue
            if gpu.busy_until is not None:
                raise SimulationError(f"{name}: changes GPU {key} while it reconfigures")
            for inst in change.destroy:
                if inst in gpu.held:
                    raise SimulationError(
                        f"{name}: destroys {inst.describe(self.model)} on {key}, which is in use"
                    )
                if inst not in gpu.free:
                    raise SimulationError(f"{name}: destroys a missing instance on {key}")
            kept = gpu.free - set(change.destroy)
            layout = [*gpu.held, *kept, *change.create]
            errors = layout_errors(self.model, layout)
            if errors or len(set(layout)) != len(layout):
                reason = errors[0] if errors else "an instance created twice"
                raise SimulationError(f"{name}: invalid layout on {key}: {reason}")
            targets[gpu.gid] = kept | set(change.create)
        claimed: set[tuple[int, Instance]] = set()
        plans: list[tuple[_Pod, list[tuple[_Gpu, Instance]]]] = []
        for pod_name, slots in sorted(decision.placements.items()):
            pod = self.pods.get(pod_name)
            if pod is None or pod.state != _WAITING:
                raise SimulationError(f"{name}: places {pod_name!r}, which is not waiting")
            chosen = []
            for node, index, inst in slots:
                gpu = by_key.get((node, index))
                if gpu is None:
                    raise SimulationError(f"{name}: places {pod_name!r} on unknown GPU")
                available = targets.get(gpu.gid, gpu.free if gpu.busy_until is None else set())
                if inst not in available or (gpu.gid, inst) in claimed:
                    raise SimulationError(
                        f"{name}: places {pod_name!r} on {inst.describe(self.model)} of "
                        f"{(node, index)}, which is not free"
                    )
                claimed.add((gpu.gid, inst))
                chosen.append((gpu, inst))
            if sorted(Counter(i.profile_id for _, i in chosen).items()) != list(pod.counts):
                raise SimulationError(f"{name}: places {pod_name!r} on the wrong profiles")
            if len({gpu.node for gpu, _ in chosen}) > 1:
                raise SimulationError(f"{name}: spreads {pod_name!r} over several nodes")
            plans.append((pod, chosen))
        # Everything checked: apply.
        for key, change in sorted(decision.changes.items()):
            if not change.destroy and not change.create:
                continue
            gpu = by_key[key]
            for inst in change.destroy:
                self._take_free(gpu, inst)
            self.destroys += len(change.destroy)
            self.creates += len(change.create)
            ops = len(change.destroy) + len(change.create)
            self._advertise(gpu, gpu.free, -1)
            gpu.busy_until = self.now + ops * self.timing.op_latency + self.timing.refresh_delay
            gpu.incoming = list(change.create)
            self._push(gpu.busy_until, _READY, str(gpu.gid))
        for pod, chosen in plans:
            self.groups[self._group(pod)].pop(pod.spec.name)
            if not self.groups[self._group(pod)]:
                del self.groups[self._group(pod)]
            pod.state = _PLANNED
            pod.slots = chosen
            for gpu, inst in chosen:
                if inst in gpu.free:
                    self._take_free(gpu, inst)
                gpu.held[inst] = pod.spec.name  # promised; created ones are filtered out at ready
                if gpu.busy_until is not None:
                    pod.awaiting.add(gpu.gid)
                    self.awaiting_on.setdefault(gpu.gid, set()).add(pod.spec.name)
            if not pod.awaiting:
                self._start(pod)

    # -- event handlers --------------------------------------------------------------------

    def _on_arrive(self, pod: _Pod) -> None:
        if pod.state == _GONE:
            return  # a zero-length lifetime: it left at the instant it came
        pod.state = _WAITING
        self.pending += 1
        if self._try_bind(pod):
            return
        self.groups.setdefault(self._group(pod), {})[pod.spec.name] = None
        self._trigger()

    def _on_leave(self, pod: _Pod) -> None:
        pod.left_at = self.now
        if pod.state == _WAITING:
            key = self._group(pod)
            del self.groups[key][pod.spec.name]
            if not self.groups[key]:
                del self.groups[key]
            self.pending -= 1
        elif pod.state == _PLANNED:
            self.pending -= 1
            for gid in pod.awaiting:
                self.awaiting_on[gid].discard(pod.spec.name)
            self._release(pod)
        elif pod.state == _RUNNING:
            self.held_compute -= pod.compute
            self._release(pod)
        pod.state = _GONE
        if pod.slots:
            self._bind_waiting()
            if self._has_waiting():
                self._trigger()

    def _release(self, pod: _Pod) -> None:
        for gpu, inst in pod.slots:
            del gpu.held[inst]
            if inst not in gpu.incoming:
                self._add_free(gpu, inst)

    def _on_ready(self, gpu: _Gpu) -> None:
        gpu.busy_until = None
        for inst in gpu.incoming:
            if inst not in gpu.held:
                gpu.free.add(inst)
        gpu.incoming = []
        self._advertise(gpu, gpu.free, +1)
        for name in sorted(self.awaiting_on.pop(gpu.gid, set())):
            pod = self.pods[name]
            pod.awaiting.discard(gpu.gid)
            if not pod.awaiting:
                self._start(pod)
        self._bind_waiting()
        if self._has_waiting():
            self._trigger()

    # -- the loop --------------------------------------------------------------------------

    def run(self, progress: Callable[[int], object] | None) -> RunResult:
        arrived = 0
        while self.events:
            time, kind, _, name = heapq.heappop(self.events)
            self._advance(time)
            if kind == _ARRIVE:
                self._on_arrive(self.pods[name])
                arrived += 1
                if progress is not None and arrived % 256 == 0:
                    progress(256)
            elif kind == _LEAVE:
                self._on_leave(self.pods[name])
            elif kind == _READY:
                self._on_ready(self.gpus[int(name)])
            elif kind == _BATCH:
                self._on_batch()
            elif self._has_waiting():  # _REQUEUE
                self._trigger()
            if self.audit:
                self._check()
        if progress is not None and arrived % 256:
            progress(arrived % 256)
        return self._result()

    def _check(self) -> None:
        """Audit mode (tests): re-derive the invariants from scratch after every event."""
        owners: dict[tuple[int, Instance], str] = {}
        for pod in self.pods.values():
            if pod.state in (_PLANNED, _RUNNING):
                for gpu, inst in pod.slots:
                    if (gpu.gid, inst) in owners:
                        raise SimulationError(f"{inst} on GPU {gpu.gid} given to two pods")
                    owners[(gpu.gid, inst)] = pod.spec.name
                    if gpu.held.get(inst) != pod.spec.name:
                        raise SimulationError(f"{pod.spec.name} holds an instance not marked held")
        free_total: Counter[int] = Counter()
        for gpu in self.gpus:
            if len(gpu.held) != sum(1 for k in owners if k[0] == gpu.gid):
                raise SimulationError(f"GPU {gpu.gid} marks instances held by no pod")
            layout = gpu.layout()
            in_held_and_incoming = set(gpu.incoming) & set(gpu.held)
            if len(layout) - len(in_held_and_incoming) != len(set(layout)):
                raise SimulationError(f"GPU {gpu.gid}: an instance is both free and held")
            errors = layout_errors(self.model, set(layout))
            if errors:
                raise SimulationError(f"GPU {gpu.gid}: invalid layout: {errors[0]}")
            if gpu.busy_until is None:
                free_total.update(i.profile_id for i in gpu.free)
        if +free_total != +self.free_total:
            raise SimulationError("advertised free counts drifted")

    def _result(self) -> RunResult:
        waits = []
        bind_times = {}
        for pod in self.pods.values():
            if pod.bound_at is not None:
                bind_times[pod.spec.name] = pod.bound_at
                waits.append(pod.bound_at - pod.spec.arrival)
            else:
                left = pod.left_at if pod.left_at is not None else self.end
                waits.append(left - pod.spec.arrival)
        span = self.window[1] - self.window[0]
        return RunResult(
            policy=self.policy.name,
            pods=len(self.pods),
            placed=len(bind_times),
            unplaced=len(self.pods) - len(bind_times),
            waits=tuple(sorted(waits)),
            bind_times=bind_times,
            utilization=self.window_area / span if span > 0 else 0.0,
            creates=self.creates,
            destroys=self.destroys,
            rounds=self.rounds,
            end=self.end,
            timeline=Timeline(
                times=tuple((b + 0.5) * self.width for b in range(self.buckets)),
                utilization=tuple(a / self.width for a in self.util_area),
                pending=tuple(a / self.width for a in self.pending_area),
            ),
        )


def simulate(
    cluster: ClusterSpec,
    pods: Sequence[PodSpec],
    policy: Policy,
    timing: Timing = Timing(),
    *,
    buckets: int = 200,
    progress: Callable[[int], object] | None = None,
    audit: bool = False,
) -> RunResult:
    """Replay ``pods`` on ``cluster`` under ``policy``.  ``progress`` gets counts of arrivals."""
    return _Engine(cluster, pods, policy, timing, buckets, audit).run(progress)

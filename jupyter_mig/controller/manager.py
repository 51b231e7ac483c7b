"""The controller process: caches, leader election, the planning loop, writes and Events.

Level-triggered: every change in the caches wakes the loop, which reads the whole state again,
decides (pure, :mod:`.planning`) and acts.  A round whose input equals the last successful one is
skipped, so a quiet cluster costs nothing and nothing is rewritten needlessly.  The only memory
kept between rounds is the batch window, which Events were posted, and the lease — never what
the cluster already says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.api.mignode import new_mignode
from jupyter_mig.controller import events as ev
from jupyter_mig.controller.batching import Batcher
from jupyter_mig.controller.capacity import capacity, gpu_layouts, render_capacity
from jupyter_mig.controller.informer import Informer
from jupyter_mig.controller.leader import LeaderElection
from jupyter_mig.controller.lease import LeaseKeeper
from jupyter_mig.controller.metrics import Metrics
from jupyter_mig.controller.planning import SpecWrite, assess, decide, planned_nodes
from jupyter_mig.controller.selection import PendingPod, is_candidate, meta, pending_pod
from jupyter_mig.controller.settings import Settings
from jupyter_mig.controller.snapshot import (
    PLACEMENTS_ANNOTATION,
    NodeState,
    NodeView,
    build_views,
)
from jupyter_mig.kube.client import Kube, KubeError
from jupyter_mig.kube.events import event_object, post_event

log = logging.getLogger("jupyter_mig.controller")

MIGNODES = f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}"
_STALL = 60.0  # /healthz fails when the loop has not turned for this long
_WRITERS = 8  # concurrent spec writes in a round


def pod_paths(namespaces: Iterable[str]) -> list[str]:
    """What to list and watch for pods: the chosen namespaces, or the whole cluster."""
    chosen = sorted(set(namespaces))
    return [f"/api/v1/namespaces/{ns}/pods" for ns in chosen] or ["/api/v1/pods"]


class Controller:
    def __init__(self, kube: Kube, settings: Settings, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop_event = threading.Event()
        self._dirty = threading.Event()
        self.batcher = Batcher(settings.batch_idle, settings.batch_max)
        self.ledger = ev.EventLedger()
        self.lease = (
            LeaseKeeper(
                kube,
                LeaderElection(settings.identity, settings.lease_duration, settings.renew_deadline),
                settings.lease_name,
                settings.lease_namespace,
            )
            if settings.leader_elect
            else None
        )
        self._leading = False
        self._last_input: Any = None
        self._pending_since: dict[str, str] = {}  # pod uid → creationTimestamp
        self._heartbeat = time.monotonic()
        self._capacity_cache: tuple[float, dict[str, Any]] | None = None

        def informer(path: str, query: dict[str, str] | None = None) -> Informer:
            return Informer(
                kube,
                path,
                query=query,
                on_change=self._dirty.set,
                resync=settings.resync,
                stop=self.stop_event,
            )

        live = {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"}
        self.pod_informers = tuple(
            informer(path, live) for path in pod_paths(settings.watch_namespaces)
        )
        self.nodes = informer("/api/v1/nodes", {"labelSelector": c.OPT_IN_SELECTOR})
        self.mignodes = informer(MIGNODES)
        self.informers = (*self.pod_informers, self.nodes, self.mignodes)
        self._threads: list[threading.Thread] = []

    def pods(self) -> list[dict[str, Any]]:
        return [pod for informer in self.pod_informers for pod in informer.items()]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for inf in self.informers:
            inf.start()
        self._spawn(self._loop, "planner")
        if self.lease is not None:
            self._spawn(self._elect, "leader-election")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._dirty.set()
        for thread in self._threads:
            thread.join(timeout)

    # -- probes and the capacity API ----------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        threads = [*self._threads, *(i.thread for i in self.informers)]
        dead = [t.name for t in threads if not t.is_alive()]
        if dead and not self.stop_event.is_set():
            return False, f"threads stopped: {', '.join(dead)}"
        stalled = time.monotonic() - self._heartbeat
        if stalled > _STALL:
            return False, f"the planning loop has not turned for {stalled:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        waiting = [i.path for i in self.informers if not i.synced.is_set()]
        if waiting:
            return False, f"caches not synced yet: {', '.join(waiting)}"
        return True, "ok"

    def capacity_document(self) -> dict[str, Any]:
        """Computed from the caches at most once a second (every replica serves it)."""
        now = time.monotonic()
        if self._capacity_cache is not None and now - self._capacity_cache[0] < 1.0:
            return self._capacity_cache[1]
        views = build_views(self.nodes.items(), self.mignodes.items(), self.pods())
        usable = [v for v in views.values() if v.schedulable and v.snapshot is not None]
        snapshots = [v.snapshot for v in usable if v.snapshot is not None]
        layouts = (
            [row for v in usable if v.snapshot for row in gpu_layouts(v.snapshot, v.desired)]
            if self.settings.capacity_detail
            else None
        )
        document = render_capacity(capacity(snapshots), datetime.now(UTC), layouts)
        self._capacity_cache = (now, document)
        return document

    # -- leadership ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.lease is None or self.lease.is_leader()

    def _elect(self) -> None:
        assert self.lease is not None
        elected = False
        while not self.stop_event.is_set():
            self.lease.renew()
            leading = self.is_leader()
            if leading != elected:
                elected = leading
                log.info(
                    "%s the lease %s/%s",
                    "acquired" if leading else "lost",
                    self.settings.lease_namespace,
                    self.settings.lease_name,
                )
                self._dirty.set()
            self.stop_event.wait(self.settings.retry_period)
        self.lease.release()

    # -- the planning loop ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self._dirty.wait(self._sleep_for())
            self._dirty.clear()
            if self.stop_event.is_set():
                break
            try:
                self.tick()
            except Exception:  # one bad round must not stop the controller
                log.exception("planning round failed; trying again")
                self._last_input = None
                self.stop_event.wait(1.0)
            self._heartbeat = time.monotonic()

    def _sleep_for(self) -> float:
        deadline = self.batcher.deadline()
        wait = 5.0 if deadline is None else deadline - time.monotonic()
        return min(max(wait, 0.05), 5.0)

    def tick(self) -> None:
        """Read the caches, plan if anything changed, write what differs."""
        if not all(i.synced.is_set() for i in self.informers):
            return
        leading = self.is_leader()
        if leading != self._leading:
            self._leading = leading
            self.metrics.leader.set(1 if leading else 0)
            self.batcher.reset()
            self.ledger.clear()
            self._last_input = None
            self._pending_since.clear()
        if not leading:
            return
        pods = self.pods()
        views = build_views(self.nodes.items(), self.mignodes.items(), pods)
        self.metrics.set_node_states(
            {s: sum(1 for v in views.values() if v.state is s) for s in NodeState},
            tuple(NodeState),
        )
        self._create_missing(views)
        pending = [
            pending_pod(p, self.settings.interactive_namespaces) for p in pods if is_candidate(p)
        ]
        self._observe_bindings(pods, pending)
        self.ledger.keep_only(p.uid for p in pending)
        now = time.monotonic()
        self.batcher.update(now, {p.key: p.interactive for p in pending})
        if self.batcher.due(now):
            self.batcher.release()
        wall = datetime.now(UTC)
        timeout = timedelta(seconds=self.settings.inflight_timeout)
        assessment = assess(views, pending, self.batcher.released(), wall, timeout)
        self.metrics.set_pending_demand(assessment.demand_by_profile)
        self._post(assessment.warnings)
        planned = planned_nodes(views)
        round_input = (
            [(v.snapshot, v.desired) for v in planned],
            assessment.demands,
        )
        if round_input == self._last_input:
            return
        started = time.perf_counter()
        decision = decide(views, assessment, wall, self.settings.spares)
        planned_in = time.perf_counter() - started
        self.metrics.plan_duration.observe(planned_in)
        landed = self._write_all(decision.writes)
        self._post(decision.waiting)
        self.metrics.rounds.inc()
        self.metrics.round_duration.observe(time.perf_counter() - started)
        if decision.writes or decision.waiting:
            log.info(
                "round: %d pods planned in %.0f ms: %d placed, %d waiting; %d specs to write",
                len(assessment.demands),
                planned_in * 1000,
                len(decision.plan.placements),
                len(decision.plan.unplaced),
                len(decision.writes),
            )
        self._last_input = round_input if landed else None

    def _create_missing(self, views: Mapping[str, NodeView]) -> None:
        for view in views.values():
            if view.state is not NodeState.MISSING or not self.is_leader():
                continue
            body = new_mignode(view.name, str(meta(view.node).get("uid") or "") or None)
            try:
                self.kube.request("POST", MIGNODES, body=body)
                log.info("created MigNode %s", view.name)
            except KubeError as err:
                if err.status != 409:  # the agent or another replica was first: fine
                    log.warning("cannot create MigNode %s: %s", view.name, err)

    def _write_all(self, writes: list[SpecWrite]) -> bool:
        """Write specs side by side (each its own node's), so a big round lands quickly."""
        if len(writes) <= 1:
            return all([self._write(w) for w in writes])
        with ThreadPoolExecutor(min(_WRITERS, len(writes)), "spec-writer") as pool:
            return all(list(pool.map(self._write, writes)))

    def _write(self, write: SpecWrite) -> bool:
        """One spec write, conditional on the resourceVersion the round planned from."""
        if not self.is_leader():
            return False
        patch = {
            "metadata": {
                "resourceVersion": write.resource_version,
                "annotations": {PLACEMENTS_ANNOTATION: write.placements},
            },
            "spec": write.spec,
        }
        try:
            self.kube.request(
                "PATCH",
                f"{MIGNODES}/{write.node}",
                body=patch,
                content_type="application/merge-patch+json",
            )
        except KubeError as err:
            result = "conflict" if err.status == 409 else "error"
            self.metrics.spec_writes.labels(result).inc()
            log.info("MigNode %s not written (%s); planning again next round", write.node, err)
            return False
        self.metrics.spec_writes.labels("written").inc()
        self.metrics.operations.labels("create").inc(write.creates)
        self.metrics.operations.labels("destroy").inc(write.destroys)
        log.info(
            "MigNode %s: spec written (%d to create, %d to destroy)",
            write.node,
            write.creates,
            write.destroys,
        )
        self._post(write.events)
        return True

    def _post(self, events: Iterable[ev.PodEvent]) -> None:
        for event in self.ledger.fresh(events):
            if not self.is_leader():
                self.ledger.untell(event)
                continue
            try:
                post_event(self.kube, event_body(event, self.settings.identity, datetime.now(UTC)))
                self.metrics.events.labels(event.reason).inc()
            except KubeError as err:
                self.ledger.untell(event)
                log.info("Event for %s/%s not posted: %s", event.namespace, event.name, err)

    def _observe_bindings(self, pods: list[dict[str, Any]], pending: list[PendingPod]) -> None:
        """Pending→bound time of the pods this controller has seen waiting."""
        for p in pending:
            created = str(meta(p.pod).get("creationTimestamp") or "")
            if created:
                self._pending_since.setdefault(p.uid, created)
        by_uid = {str(meta(p).get("uid")): p for p in pods}
        for uid in list(self._pending_since):
            pod = by_uid.get(uid)
            if pod is None:
                del self._pending_since[uid]
                continue
            if not (pod.get("spec") or {}).get("nodeName"):
                continue
            scheduled = next(
                (
                    x.get("lastTransitionTime")
                    for x in (pod.get("status") or {}).get("conditions") or ()
                    if x.get("type") == "PodScheduled" and x.get("status") == "True"
                ),
                None,
            )
            if scheduled:
                seconds = _seconds_between(self._pending_since[uid], str(scheduled))
                if seconds is not None:
                    self.metrics.pending_to_bound.observe(seconds)
            del self._pending_since[uid]

    def run_until_stopped(self) -> None:
        self.start()
        while not self.stop_event.wait(1.0):
            pass


def _seconds_between(start: str, end: str) -> float | None:
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def event_body(event: ev.PodEvent, identity: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about a pod (what ``kubectl describe pod`` shows)."""
    return event_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": event.namespace,
            "name": event.name,
            "uid": event.uid,
        },
        type=event.type,
        reason=event.reason,
        message=event.message,
        component=f"{c.GROUP}/controller",
        source_component=c.CONTROLLER_FIELD_MANAGER,
        instance=identity,
        action="Plan",
        now=now,
    )

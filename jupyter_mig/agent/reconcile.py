"""One reconcile pass of the node agent: read spec and NVML, diff, act, and say what to report.

Level-triggered: every pass starts from what NVML and the kubelet say now, so a pass that was
killed half-way is simply finished by the next one.  The pass never writes to Kubernetes itself;
it returns the status and Events for the caller to write (and announces ``Applying`` through a
callback before the first NVML change), which keeps it testable on a simulated GPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from jupyter_mig.agent.diff import GpuDiff, diff_gpu
from jupyter_mig.agent.metrics import AgentMetrics
from jupyter_mig.agent.observe import GpuObservation, mig_uuids, observe
from jupyter_mig.api import constants as c
from jupyter_mig.api.conditions import ConditionStatus, set_condition
from jupyter_mig.api.mignode import MigNodeError, desired_layouts, render_status
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.nvml import InUse, NotFound, NvmlBackend, NvmlError

log = logging.getLogger(__name__)

#: Degraded reason when the kubelet cannot say which devices pods hold (nothing is applied).
REASON_POD_RESOURCES = "PodResourcesUnavailable"
#: Event reasons for what the agent did.
EVENT_APPLIED = "LayoutApplied"
EVENT_REFRESHED = "DevicePluginRefreshed"

#: Observe → diff → act rounds per pass; more than two means the GPU keeps changing under us.
MAX_ROUNDS = 4


class DeviceView(Protocol):
    """The kubelet's view of devices (the pod-resources API)."""

    def holders(self) -> dict[str, str]:
        """MIG UUID → ``namespace/pod`` for every MIG device a pod holds."""

    def advertised(self) -> frozenset[str] | None:
        """MIG UUIDs the kubelet has from the device plugin; ``None`` when it cannot say."""


class DevicePluginRefresher(Protocol):
    """Makes the NVIDIA device plugin re-read its devices (raises :class:`RefreshError`)."""

    def refresh(self, timeout: float) -> None: ...


class RefreshError(Exception):
    """The device plugin did not come back with the new devices in time."""


class PodResourcesUnavailable(Exception):
    """The kubelet's pod-resources API did not answer: in-use devices are unknown."""


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    """What a pass wants reported, and whether to retry with backoff instead of resyncing."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    retry: bool = False


@dataclass
class _Pass:
    """The bookkeeping of one pass: the object, its previous status, and what was done."""

    obj: Mapping[str, Any]
    generation: int | None
    previous: Mapping[str, Any]
    done: list[str] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return [dict(cond) for cond in self.previous.get("conditions") or []]

    @property
    def previous_generation(self) -> int | None:
        value = self.previous.get("observedGeneration")
        return value if isinstance(value, int) else None

    def previous_degraded(self) -> tuple[str, str] | None:
        for cond in self.previous.get("conditions") or []:
            if cond.get("type") == c.CONDITION_DEGRADED and cond.get("status") == "True":
                return str(cond.get("reason")), str(cond.get("message"))
        return None


def _conditions(
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    ready: tuple[ConditionStatus, str, str],
    applying: tuple[ConditionStatus, str, str],
    degraded: tuple[ConditionStatus, str, str],
) -> list[dict[str, Any]]:
    conditions = [dict(cond) for cond in previous]
    for type_, (status, reason, message) in (
        (c.CONDITION_READY, ready),
        (c.CONDITION_APPLYING, applying),
        (c.CONDITION_DEGRADED, degraded),
    ):
        conditions = set_condition(conditions, type_, status, reason, message, generation)
    return conditions


class Reconciler:
    """Applies a MigNode spec to this node's GPUs, one level-triggered pass at a time."""

    def __init__(
        self,
        nvml: NvmlBackend,
        devices: DeviceView,
        refresher: DevicePluginRefresher,
        metrics: AgentMetrics,
        *,
        refresh_timeout: float = 120.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.nvml = nvml
        self.devices = devices
        self.refresher = refresher
        self.metrics = metrics
        self.refresh_timeout = refresh_timeout
        self.poll_interval = poll_interval

    def reconcile(
        self, obj: Mapping[str, Any], announce: Callable[[dict[str, Any]], None]
    ) -> Outcome:
        """One pass over ``obj`` (a MigNode dict).  ``announce`` writes an interim status."""
        metadata = obj.get("metadata") or {}
        generation = metadata.get("generation")
        run = _Pass(
            obj, generation if isinstance(generation, int) else None, obj.get("status") or {}
        )
        try:
            return self._apply(run, announce)
        except PodResourcesUnavailable as err:
            return self._failed(run, REASON_POD_RESOURCES, str(err))
        except NvmlError as err:
            where = f" in {err.operation}" if err.operation else ""
            return self._failed(run, c.REASON_NVML_ERROR, f"NVML failed{where}: {err}")
        finally:
            # NVML is open only during a pass (``nvml`` opens on use): between passes no client
            # holds the GPUs through a driver reload, and each pass starts a fresh session.
            with contextlib.suppress(NvmlError):
                self.nvml.close()

    # ----------------------------------------------------------------------------------------

    def _apply(self, run: _Pass, announce: Callable[[dict[str, Any]], None]) -> Outcome:
        announced = False
        for _ in range(MAX_ROUNDS):
            # Holders are read after NVML and right before acting, so a device the kubelet
            # has just handed to a pod is seen as in use.
            gpus = observe(self.nvml)
            holders = self.devices.holders()
            try:
                desired = desired_layouts(run.obj)
            except MigNodeError as err:
                return self._refused(run, gpus, holders, c.REASON_INVALID_SPEC, str(err))
            if self._repair(gpus):
                continue
            problem = spec_problem(desired, gpus)
            if problem is not None:
                return self._refused(run, gpus, holders, *problem)
            diffs = _diffs(desired, gpus, holders, run.busy)
            if not any(d.changes for d in diffs.values()):
                return self._finish(run, gpus, holders, diffs)
            if not announced:
                announce(self._applying_status(run, gpus, holders))
                announced = True
            self._act(run, gpus, diffs)
        raise NvmlError(f"the GPUs kept changing during {MAX_ROUNDS} rounds", "apply")

    def _repair(self, gpus: Sequence[GpuObservation]) -> bool:
        """Destroy GPU instances without a compute instance (a create cut short by a kill)."""
        repaired = False
        for gpu in gpus:
            for gi in gpu.instances:
                if gi.mig_uuid is None:
                    log.info("GPU %d: destroying incomplete GPU instance %d", gpu.info.index, gi.id)
                    try:
                        self._destroy(gpu.info.index, gi.id)
                    except InUse:  # another client holds it: leave it, as a busy device
                        log.warning("GPU %d: GPU instance %d is in use", gpu.info.index, gi.id)
                        continue
                    repaired = True
        return repaired

    def _act(
        self, run: _Pass, gpus: Sequence[GpuObservation], diffs: Mapping[int, GpuDiff]
    ) -> None:
        """Destroys first, then creates; a GPU where NVML found a busy device waits a round."""
        by_index = {g.info.index: g for g in gpus}
        for index, diff in sorted(diffs.items()):
            gpu = by_index[index]
            assert gpu.model is not None
            refused = False
            for instance in diff.destroy:
                gi = gpu.find(instance)
                try:
                    self._destroy(index, gi.id)
                except InUse:
                    assert gi.mig_uuid is not None
                    run.busy.add(gi.mig_uuid)
                    refused = True
                    continue
                run.done.append(f"GPU {index}: destroyed {instance.describe(gpu.model)}")
            if refused:
                continue  # re-observe: the busy instance may still stand where creates go
            for instance in diff.create:
                self._create(index, instance)
                run.done.append(f"GPU {index}: created {instance.describe(gpu.model)}")

    def _destroy(self, index: int, gi_id: int) -> None:
        try:
            self.nvml.destroy_instance(index, gi_id)
        except NotFound:
            self.metrics.nvml_operation("destroy", "not_found")  # gone already: what we wanted
        except NvmlError as err:
            self.metrics.nvml_operation("destroy", type(err).__name__)
            raise
        else:
            self.metrics.nvml_operation("destroy", "ok")

    def _create(self, index: int, instance: Instance) -> None:
        try:
            self.nvml.create_instance(index, instance.profile_id, instance.start)
        except NvmlError as err:
            self.metrics.nvml_operation("create", type(err).__name__)
            raise
        self.metrics.nvml_operation("create", "ok")

    # ----------------------------------------------------------------------------------------

    def _refresh_device_plugin(self, gpus: Sequence[GpuObservation], changed: bool) -> bool:
        """Refresh when this pass changed instances or the kubelet's devices are stale.

        Returns whether a refresh happened; raises :class:`RefreshError` on failure.
        """
        expected = mig_uuids(gpus)
        advertised = self.devices.advertised()
        if not changed and (advertised is None or advertised == expected):
            return False
        log.info("refreshing the device plugin (%d MIG devices)", len(expected))
        deadline = time.monotonic() + self.refresh_timeout
        try:
            self.refresher.refresh(self.refresh_timeout)
            # When the kubelet could not tell before, trust the refresh; else see it land.
            while advertised is not None and advertised != expected:
                advertised = self.devices.advertised() or frozenset()
                if advertised == expected:
                    break
                if time.monotonic() > deadline:
                    raise RefreshError(
                        f"the kubelet advertises {len(advertised)} MIG devices, NVML has "
                        f"{len(expected)}, {self.refresh_timeout:.0f} s after a refresh"
                    )
                time.sleep(self.poll_interval)
        except RefreshError:
            self.metrics.device_plugin_refresh("failed")
            raise
        self.metrics.device_plugin_refresh("ok")
        return True

    def _finish(
        self,
        run: _Pass,
        gpus: Sequence[GpuObservation],
        holders: Mapping[str, str],
        diffs: Mapping[int, GpuDiff],
    ) -> Outcome:
        events: list[Event] = []
        if run.done:
            events.append(Event("Normal", EVENT_APPLIED, "; ".join(run.done)))
        try:
            if self._refresh_device_plugin(gpus, bool(run.done)):
                events.append(Event("Normal", EVENT_REFRESHED, "device plugin re-read devices"))
        except RefreshError as err:
            outcome = self._failed(run, c.REASON_DEVICE_PLUGIN, str(err), gpus, holders)
            outcome.events[:0] = events
            return outcome
        by_index = {g.info.index: g for g in gpus}
        blocked = _blocked_message(diffs, by_index, holders)
        waiting = _waiting_message(diffs, by_index)
        ready: tuple[ConditionStatus, str, str] = (
            ("True", c.REASON_APPLIED, "the observed layout is the desired one")
            if not waiting
            else ("False", c.REASON_NOT_APPLIED, waiting)
        )
        degraded: tuple[ConditionStatus, str, str] = (
            ("True", c.REASON_IN_USE_IN_THE_WAY, blocked)
            if blocked
            else ("False", c.REASON_AS_EXPECTED, "")
        )
        if blocked and (run.done or run.previous_degraded() != degraded[1:]):
            events.append(Event("Warning", c.REASON_IN_USE_IN_THE_WAY, blocked))
        conditions = _conditions(
            run.conditions,
            run.generation,
            ready,
            ("False", c.REASON_IDLE, ""),
            degraded,
        )
        self.metrics.observed(gpus, holders, run.generation)
        status = render_status([g.status(holders) for g in gpus], run.generation, conditions)
        return Outcome(status, events)

    def _refused(
        self,
        run: _Pass,
        gpus: Sequence[GpuObservation],
        holders: Mapping[str, str],
        reason: str,
        message: str,
    ) -> Outcome:
        """A spec the agent will not apply at all: said once, and the generation is done."""
        conditions = _conditions(
            run.conditions,
            run.generation,
            ("False", c.REASON_NOT_APPLIED, f"spec refused: {message}"),
            ("False", c.REASON_IDLE, ""),
            ("True", reason, message),
        )
        events = []
        if run.previous_degraded() != (reason, message):
            events.append(Event("Warning", reason, message))
        self.metrics.observed(gpus, holders, run.generation)
        status = render_status([g.status(holders) for g in gpus], run.generation, conditions)
        return Outcome(status, events)

    def _failed(
        self,
        run: _Pass,
        reason: str,
        message: str,
        gpus: Sequence[GpuObservation] | None = None,
        holders: Mapping[str, str] | None = None,
    ) -> Outcome:
        """A failure to retry with backoff; the generation stays unobserved."""
        log.warning("%s: %s", reason, message)
        conditions = _conditions(
            run.conditions,
            run.previous_generation,
            ("False", c.REASON_NOT_APPLIED, message),
            ("False", c.REASON_IDLE, ""),
            ("True", reason, message),
        )
        events = []
        if run.done or run.previous_degraded() != (reason, message):
            if run.done:
                events.append(Event("Normal", EVENT_APPLIED, "; ".join(run.done)))
            events.append(Event("Warning", reason, message))
        status: dict[str, Any]
        if gpus is not None:
            status = render_status(
                [g.status(holders or {}) for g in gpus], run.previous_generation, conditions
            )
        else:  # nothing fresh to show: keep the last observed GPUs
            status = {"gpus": list(run.previous.get("gpus") or []), "conditions": conditions}
            if run.previous_generation is not None:
                status["observedGeneration"] = run.previous_generation
        return Outcome(status, events, retry=True)

    def _applying_status(
        self, run: _Pass, gpus: Sequence[GpuObservation], holders: Mapping[str, str]
    ) -> dict[str, Any]:
        conditions = run.conditions
        conditions = set_condition(
            conditions,
            c.CONDITION_APPLYING,
            "True",
            c.REASON_APPLYING,
            f"applying generation {run.generation}",
            run.generation,
        )
        return render_status([g.status(holders) for g in gpus], run.previous_generation, conditions)


def spec_problem(
    desired: Mapping[int, Sequence[Instance]], gpus: Sequence[GpuObservation]
) -> tuple[str, str] | None:
    """``(reason, message)`` when the spec cannot be applied on these GPUs at all."""
    by_index = {g.info.index: g for g in gpus}
    for index in sorted(desired):
        gpu = by_index.get(index)
        if gpu is None:
            return c.REASON_INVALID_SPEC, f"the node has no GPU {index}"
        if gpu.model is None:
            return c.REASON_INVALID_SPEC, f"MIG mode is off on GPU {index}"
        unknown = sorted({i.profile_id for i in desired[index]} - set(gpu.model.by_id))
        if unknown:
            ids = ", ".join(map(str, unknown))
            return (
                c.REASON_PROFILE_UNKNOWN,
                f"GPU {index} ({gpu.model.name}) has no MIG profile id {ids}",
            )
        errors = layout_errors(gpu.model, desired[index])
        if errors:
            return c.REASON_INVALID_SPEC, f"GPU {index}: {errors[0]}"
    return None


def _diffs(
    desired: Mapping[int, Sequence[Instance]],
    gpus: Sequence[GpuObservation],
    holders: Mapping[str, str],
    busy: set[str],
) -> dict[int, GpuDiff]:
    by_index = {g.info.index: g for g in gpus}
    diffs = {}
    for index, layout in desired.items():
        gpu = by_index[index]
        assert gpu.model is not None  # spec_problem ran first
        diffs[index] = diff_gpu(gpu.model, gpu.layout, gpu.in_use(holders, busy), layout)
    return diffs


def _blocked_message(
    diffs: Mapping[int, GpuDiff],
    gpus: Mapping[int, GpuObservation],
    holders: Mapping[str, str],
) -> str:
    parts: list[str] = []
    for index, diff in sorted(diffs.items()):
        gpu = gpus[index]
        assert gpu.model is not None
        for instance in diff.blocked:
            uuid = gpu.find(instance).mig_uuid or ""
            holder = holders.get(uuid, "a process outside Kubernetes")
            parts.append(f"GPU {index}: {instance.describe(gpu.model)} is held by {holder}")
    return "; ".join(parts) + (" (the spec drops it; kept)" if parts else "")


def _waiting_message(diffs: Mapping[int, GpuDiff], gpus: Mapping[int, GpuObservation]) -> str:
    parts: list[str] = []
    for index, diff in sorted(diffs.items()):
        model = gpus[index].model
        assert model is not None
        parts.extend(
            f"GPU {index}: {instance.describe(model)} waits for an in-use instance"
            for instance in diff.deferred
        )
        parts.extend(
            f"GPU {index}: {instance.describe(model)} is in use and not in the spec"
            for instance in diff.blocked
        )
    return "; ".join(parts)

"""The agent's loop: wake on a spec change or a resync tick, reconcile, report, back off on errors.

Nothing is carried from one pass to the next except the backoff delay: each pass reads the
MigNode, NVML and the kubelet afresh, so killing the agent at any point loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from jupyter_mig.agent.health import Heartbeat
from jupyter_mig.agent.kube import MigNodeClient
from jupyter_mig.agent.metrics import AgentMetrics
from jupyter_mig.agent.reconcile import Reconciler
from jupyter_mig.api import constants as c
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.nvml import GpuInfo, GpuInstance, NvmlBackend, Uninitialized

log = logging.getLogger(__name__)


class LazyNvml(NvmlBackend):
    """Opens the backend on first use and again after :class:`Uninitialized`, so an agent that
    starts before the driver (or the sim node's state) is there reports NvmlError and retries
    instead of exiting."""

    def __init__(self, open_backend: Callable[[], NvmlBackend]) -> None:
        self._open = open_backend
        self._backend: NvmlBackend | None = None

    def _get(self) -> NvmlBackend:
        if self._backend is None:
            self._backend = self._open()
        return self._backend

    def _call(self, method: str, *args: int) -> Any:
        try:
            return getattr(self._get(), method)(*args)
        except Uninitialized:
            self.close()
            raise

    def gpus(self) -> list[GpuInfo]:
        result: list[GpuInfo] = self._call("gpus")
        return result

    def profile_table(self, gpu_index: int) -> GpuModel:
        result: GpuModel = self._call("profile_table", gpu_index)
        return result

    def instances(self, gpu_index: int) -> list[GpuInstance]:
        result: list[GpuInstance] = self._call("instances", gpu_index)
        return result

    def create_instance(self, gpu_index: int, profile_id: int, start: int) -> GpuInstance:
        result: GpuInstance = self._call("create_instance", gpu_index, profile_id, start)
        return result

    def destroy_instance(self, gpu_index: int, gpu_instance_id: int) -> None:
        self._call("destroy_instance", gpu_index, gpu_instance_id)

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Uninitialized):  # nothing to release then
                backend.close()


class Backoff:
    """Exponential delay between failed attempts, reset by a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def failed(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class Agent:
    """Runs reconcile passes for one node until ``stop`` is set."""

    def __init__(
        self,
        nodes: MigNodeClient,
        reconciler: Reconciler,
        metrics: AgentMetrics,
        heartbeat: Heartbeat,
        resync: float,
        max_backoff: float = 60.0,
    ) -> None:
        self.nodes = nodes
        self.reconciler = reconciler
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.resync = resync
        self.backoff = Backoff(min(1.0, resync), max_backoff)
        self.wake = threading.Event()
        self.stop = threading.Event()

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def run(self) -> None:
        waiting = False
        while not self.stop.is_set():
            self.wake.clear()
            try:
                obj = self.nodes.get()
                if obj is None:
                    if not waiting:
                        log.info(
                            "no MigNode %s yet: the controller creates it for nodes labelled "
                            "%s; waiting",
                            self.nodes.node,
                            c.OPT_IN_SELECTOR,
                        )
                    waiting = True
                    delay = self.backoff.failed()
                else:
                    waiting = False
                    delay = self._pass(obj)
            except Exception as err:  # the API server is away: retry, never die
                log.warning("cannot reach the API server: %s", err)
                self.metrics.reconcile("retry")
                delay = self.backoff.failed()
            self.heartbeat.beat()
            self.wake.wait(delay)

    def _pass(self, obj: dict[str, Any]) -> float:
        stored = obj.get("status") or {}

        def announce(status: dict[str, Any]) -> None:
            nonlocal stored
            self.nodes.write_status(status)
            stored = status

        outcome = self.reconciler.reconcile(obj, announce)
        if outcome.status != stored:
            self.nodes.write_status(outcome.status)
        for event in outcome.events:
            self.nodes.post_event(obj, event)
        if outcome.retry:
            self.metrics.reconcile("retry")
            return self.backoff.failed()
        self.metrics.reconcile("ok")
        self.backoff.reset()
        return self.resync

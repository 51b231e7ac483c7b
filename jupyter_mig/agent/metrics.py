"""Prometheus metrics of the agent, in a registry of its own (several agents can share a test
process without clashing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from jupyter_mig.agent.observe import GpuObservation


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._reconciles = Counter(
            "jupyter_mig_agent_reconciles",
            "Reconcile passes by result (ok, retry).",
            ["result"],
            registry=self.registry,
        )
        self._nvml = Counter(
            "jupyter_mig_agent_nvml_operations",
            "NVML create/destroy calls by result (ok, not_found, or the NVML error class).",
            ["operation", "result"],
            registry=self.registry,
        )
        self._refreshes = Counter(
            "jupyter_mig_agent_device_plugin_refreshes",
            "Device plugin refreshes by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self._instances = Gauge(
            "jupyter_mig_agent_instances",
            "MIG instances per GPU and state (free, used).",
            ["gpu", "state"],
            registry=self.registry,
        )
        self._generation = Gauge(
            "jupyter_mig_agent_observed_generation",
            "The MigNode spec generation last applied.",
            registry=self.registry,
        )

    def reconcile(self, result: str) -> None:
        self._reconciles.labels(result).inc()

    def nvml_operation(self, operation: str, result: str) -> None:
        self._nvml.labels(operation, result).inc()

    def device_plugin_refresh(self, result: str) -> None:
        self._refreshes.labels(result).inc()

    def observed(
        self,
        gpus: Sequence[GpuObservation],
        holders: Mapping[str, str],
        generation: int | None,
    ) -> None:
        for gpu in gpus:
            used = sum(1 for gi in gpu.instances if gi.mig_uuid in holders)
            self._instances.labels(str(gpu.info.index), "used").set(used)
            self._instances.labels(str(gpu.info.index), "free").set(len(gpu.instances) - used)
        if generation is not None:
            self._generation.set(generation)

    def render(self) -> bytes:
        return generate_latest(self.registry)

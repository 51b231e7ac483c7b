"""An in-memory stand-in for the hub service's kernel API, for provisioner tests."""

from __future__ import annotations

from typing import Any

from jupyter_mig.kernels import provisioner as prov
from jupyter_mig.kernels.contract import kernel_ports

KERNEL_ID = "0b5c4e2e-1111-4222-8333-944455556666"


class FakeService:
    """The hub service's kernel API in memory: a pod is Pending for ``pending_polls`` looks."""

    def __init__(self, pending_polls: int = 2, end_with: str = "") -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.pending_polls = pending_polls
        self.end_with = end_with  # a phase the pod ends in instead of running
        self.launches = 0  # each pod gets the next address
        self.broken = False  # state() fails, as a hub service that went away

    async def create(
        self, kernel_id: str, size: str, key: str, scheme: str, launch: int = 0
    ) -> dict[str, Any]:
        self.calls.append(("create", kernel_id, size))
        assert key and scheme == "hmac-sha256"
        if kernel_id in self.pods:
            raise prov.KernelPodError("exists")
        self.launches += 1
        self.pods[kernel_id] = {
            "phase": "Pending",
            "ip": None,
            "looks": 0,
            "size": size,
            "ports": kernel_ports(launch),
        }
        return self.view(kernel_id)

    def view(self, kernel_id: str) -> dict[str, Any]:
        pod = self.pods[kernel_id]
        return {
            "name": f"kernel-{kernel_id}",
            "phase": pod["phase"],
            "ip": pod["ip"],
            "size": pod["size"],
            "profile": pod["size"],
            "ports": pod["ports"],
            "exit_code": pod.get("exit_code"),
            "message": "0/1 nodes are available" if pod["phase"] == "Pending" else "",
        }

    async def state(self, kernel_id: str) -> dict[str, Any] | None:
        self.calls.append(("state", kernel_id))
        if self.broken:
            raise prov.KernelPodError("the hub service did not answer")
        pod = self.pods.get(kernel_id)
        if pod is None:
            return None
        pod["looks"] += 1
        if pod["phase"] == "Pending" and pod["looks"] >= self.pending_polls:
            pod["phase"] = self.end_with or "Running"
            pod["ip"] = None if self.end_with else f"127.0.0.{self.launches}"
            pod["exit_code"] = 3 if self.end_with else None
        return self.view(kernel_id)

    async def delete(self, kernel_id: str, grace: int | None = None) -> None:
        self.calls.append(("delete", kernel_id, str(grace)))
        self.pods.pop(kernel_id, None)

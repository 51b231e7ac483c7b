"""The kubelet side of devices: who holds which MIG device, and making the device plugin re-read.

The NVIDIA device plugin builds its device list once at start, so after a layout change the agent
makes it read NVML again.  On a real node it either deletes the plugin's pod (``pod``: the
DaemonSet makes a successor) or sends the plugin process SIGHUP (``signal``: the plugin restarts
its servers in place, as NVIDIA's config manager does; the agent pod needs ``hostPID``).  On a
sim node it touches ``DIR/device-plugin.refresh``.  Either way the agent then waits until the
kubelet's allocatable devices (pod-resources ``GetAllocatableResources``) match NVML.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from jupyter_mig.agent.reconcile import PodResourcesUnavailable, RefreshError
from jupyter_mig.api import constants as c
from jupyter_mig.podresources import client as podresources

log = logging.getLogger(__name__)

#: The sim node watches this file's mtime (docs/protocol.md).
SIM_REFRESH_FILE = "device-plugin.refresh"


class PodResourcesView:
    """:class:`jupyter_mig.agent.reconcile.DeviceView` on the kubelet's pod-resources socket."""

    def __init__(self, socket_path: str, timeout: float = podresources.DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def holders(self) -> dict[str, str]:
        try:
            found = podresources.assignments(self.socket_path, self.timeout)
        except podresources.PodResourcesError as err:
            raise PodResourcesUnavailable(str(err)) from None
        return {
            item.device_id: item.pod_key
            for item in found
            if item.resource.startswith(c.MIG_RESOURCE_PREFIX)
        }

    def advertised(self) -> frozenset[str] | None:
        try:
            table = podresources.allocatable(self.socket_path, self.timeout)
        except podresources.PodResourcesError as err:
            log.debug("allocatable devices unknown: %s", err)
            return None
        return frozenset(
            device
            for resource, devices in table.items()
            if resource.startswith(c.MIG_RESOURCE_PREFIX)
            for device in devices
        )


class SimRefresher:
    """Asks a sim node's device plugin to re-read the simulated NVML state."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / SIM_REFRESH_FILE

    def refresh(self, timeout: float) -> None:
        try:
            self.path.write_text(f"{time.time():.6f}\n", encoding="utf-8")
        except OSError as err:
            raise RefreshError(f"cannot write {self.path}: {err.strerror}") from None


class PodRefresher:
    """Deletes the device-plugin pod on this node and waits for a Ready successor."""

    def __init__(
        self,
        core: Any,
        node: str,
        namespace: str,
        selector: str,
        poll_interval: float = 1.0,
    ) -> None:
        self.core = core  # kubernetes.client.CoreV1Api
        self.node = node
        self.namespace = namespace
        self.selector = selector
        self.poll_interval = poll_interval

    def pods(self) -> list[Any]:
        """The device-plugin pods on this node (any phase)."""
        listed = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=self.selector,
            field_selector=f"spec.nodeName={self.node}",
            _request_timeout=30,
        )
        return list(listed.items)

    def refresh(self, timeout: float) -> None:
        from kubernetes.client import ApiException

        deadline = time.monotonic() + timeout
        where = f"namespace {self.namespace}, selector {self.selector!r}, node {self.node}"
        try:
            old = self.pods()
            if not old:
                raise RefreshError(f"no device-plugin pod found ({where})")
            for pod in old:
                log.info("deleting device-plugin pod %s/%s", self.namespace, pod.metadata.name)
                try:
                    self.core.delete_namespaced_pod(
                        pod.metadata.name, self.namespace, _request_timeout=30
                    )
                except ApiException as err:
                    if err.status != 404:
                        raise
            old_uids = {pod.metadata.uid for pod in old}
            while time.monotonic() < deadline:
                if any(
                    pod.metadata.uid not in old_uids
                    and pod.metadata.deletion_timestamp is None
                    and _ready(pod)
                    for pod in self.pods()
                ):
                    return
                time.sleep(self.poll_interval)
        except ApiException as err:
            raise RefreshError(f"device-plugin pod ({where}): {err.status} {err.reason}") from None
        raise RefreshError(f"no Ready device-plugin pod within {timeout:.0f} s ({where})")


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(cond.type == "Ready" and cond.status == "True" for cond in conditions)


class SignalRefresher:
    """Sends SIGHUP to every process whose program is NVIDIA's device plugin; with
    ``environment`` (``NAME=VALUE``) only to those whose environment has it: on a machine with
    several simulated nodes, the plugin of this node's simulated GPUs."""

    def __init__(
        self,
        program: str = "nvidia-device-plugin",
        proc: str = "/proc",
        environment: str | None = None,
    ) -> None:
        self.program = program
        self.proc = Path(proc)
        self.environment = environment.encode() if environment is not None else None

    def pids(self) -> list[int]:
        found = []
        for entry in self.proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if os.path.basename(argv0.decode(errors="replace")) != self.program:
                continue
            if self.environment is not None:
                try:
                    if self.environment not in (entry / "environ").read_bytes().split(b"\0"):
                        continue
                except OSError:
                    continue
            found.append(int(entry.name))
        return sorted(found)

    def refresh(self, timeout: float) -> None:
        pids = self.pids()
        if not pids:
            raise RefreshError(
                f"no {self.program} process found (the agent pod needs hostPID for signal mode)"
            )
        for pid in pids:
            log.info("sending SIGHUP to %s (pid %d)", self.program, pid)
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                continue  # it ended meanwhile: its successor reads NVML at start anyway
            except PermissionError:
                raise RefreshError(f"not allowed to signal {self.program} (pid {pid})") from None

"""The simulated node's device-plugin side: which MIG devices it advertises as Node capacity,
and (with NVIDIA's plugin) what the plugin answers when a container gets devices."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_mig.deviceplugin import nvidia
from jupyter_mig.deviceplugin.kubelet import DevicePluginHost
from jupyter_mig.kube.client import Kube
from jupyter_mig.simnode.devices import DeviceTable, node_capacity, read_device_table
from jupyter_mig.simnode.devices import refresh_stamp as read_refresh_stamp
from jupyter_mig.simnode.processes import Processes, proc_start_time
from jupyter_mig.simnode.registration import NodeRegistration

if TYPE_CHECKING:
    from jupyter_mig.simnode.node import NodeConfig

log = logging.getLogger(__name__)

DEVICE_PLUGINS_DIR = "device-plugins"  # the kubelet's /var/lib/kubelet/device-plugins
PLUGIN_PID_FILE = "nvidia-device-plugin.pid"
PLUGIN_LOG_FILE = "nvidia-device-plugin.log"
#: Seconds before a failed device refresh is tried again.
RETRY_SECONDS = 2.0


class DeviceAdvertiser:
    """Keeps the Node's MIG capacity equal to the devices the plugin lists: the built-in plugin
    reads the simulated GPUs after each refresh request (``refresh_delay`` later); NVIDIA's
    plugin, started here, re-reads NVML on SIGHUP and reports through the kubelet socket."""

    def __init__(
        self,
        kube: Kube,
        config: NodeConfig,
        registration: NodeRegistration,
        processes: Processes,
        lock: threading.RLock,
    ) -> None:
        self._kube = kube
        self.config = config
        self.dir: Path = config.state_dir
        self._registration = registration
        self._processes = processes
        self._lock = lock  # the node's: the table is read while admitting pods
        self.read = threading.Event()  # the devices have been advertised once
        self.table: DeviceTable = {}
        self._host: DevicePluginHost | None = None
        self._plugin: subprocess.Popen[bytes] | None = None
        self._seen_refresh: float | None = None
        self._refresh_due: float | None = None

    @property
    def host(self) -> DevicePluginHost | None:
        """The kubelet side of NVIDIA's plugin (None with the built-in plugin)."""
        return self._host

    def start(self) -> None:
        if self.config.device_plugin == "nvidia":
            self._start_nvidia_plugin()
        self._seen_refresh = read_refresh_stamp(self.dir)
        self._refresh_due = time.monotonic()  # the device plugin reads the devices at start

    def stop(self, timeout: float) -> None:
        if self._plugin is not None:
            self._plugin.terminate()
            self._plugin.wait(timeout=timeout)
        if self._host is not None:
            self._host.stop()

    def allocatable(self) -> dict[str, list[str]]:
        with self._lock:
            return {resource: list(ids) for resource, ids in self.table.items()}

    def container_envs(self, devices: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
        """Each container's environment from NVIDIA's plugin's ``Allocate`` answer."""
        if self._host is None:
            return {}
        requests: dict[tuple[str, str], list[str]] = {}
        for container, resource, device in devices:
            requests.setdefault((container, resource), []).append(device)
        envs: dict[str, dict[str, str]] = {}
        for (container, resource), ids in sorted(requests.items()):
            answer = self._host.allocate(resource, ids)
            envs.setdefault(container, {}).update(answer.envs)
        return envs

    def tick(self) -> None:
        stamp = read_refresh_stamp(self.dir)
        if stamp != self._seen_refresh:
            self._seen_refresh = stamp
            self._refresh_due = time.monotonic() + self.config.refresh_delay
            if self._plugin is not None:  # it re-reads NVML on SIGHUP, in its own time
                self._plugin.send_signal(signal.SIGHUP)
                self._refresh_due = None
        if self._host is not None and self._host.advertised() != self.table:
            self._refresh_due = time.monotonic()  # the plugin's list changed: the kubelet's too
        if self._refresh_due is None or time.monotonic() < self._refresh_due:
            return
        if not self._registration.registered:
            return  # not registered yet: the heartbeat registers first
        self._refresh_due = time.monotonic() + RETRY_SECONDS  # should this attempt fail
        self._refresh()
        self._refresh_due = None
        self.read.set()

    def _start_nvidia_plugin(self) -> None:
        """NVIDIA's device plugin on this node's GPUs; one left by a killed predecessor (its
        pid in DIR) is ended first, so one plugin serves the node's sockets."""
        pid_file = self.dir / PLUGIN_PID_FILE
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid, start_time = (int(part) for part in pid_file.read_text().split())
            self._processes.kill(pid, start_time)
        self._host = DevicePluginHost(self.dir / DEVICE_PLUGINS_DIR)
        self._host.start()
        with open(self.dir / PLUGIN_LOG_FILE, "ab") as log_file:
            self._plugin = nvidia.start(self.dir, self._host.directory, log_file)
        pid_file.write_text(f"{self._plugin.pid} {proc_start_time(self._plugin.pid)}\n")

    def _refresh(self) -> None:
        """Advertise the MIG devices as Node capacity: those NVIDIA's plugin lists, or (the
        built-in plugin) those in the simulated GPUs' state now."""
        table = self._host.advertised() if self._host is not None else read_device_table(self.dir)
        node = self._kube.request("GET", self._registration.path)
        on_node = (node.get("status") or {}).get("capacity") or {}
        capacity = node_capacity(table, on_node, self.config.base_capacity())
        with self._lock:  # known to the kubelet before the scheduler can place pods on them
            self.table = table
        self._registration.patch_status({"capacity": capacity, "allocatable": capacity})
        log.info(
            "%s: advertising %s",
            self.config.name,
            {r: len(ids) for r, ids in table.items()} or "no MIG devices",
        )

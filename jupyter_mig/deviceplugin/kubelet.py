"""The kubelet's side of the device-plugin API v1beta1, for a simulated node.

Serves ``Registration`` on ``DIR/kubelet.sock``.  For each plugin that registers it dials the
plugin's endpoint in DIR, follows ``ListAndWatch`` (the node's devices per extended resource, as
the plugin reports them) and calls ``Allocate`` when a pod is admitted (the container's
environment, devices and mounts).  A plugin whose stream ends has no devices until it
registers again, as a kubelet counts a vanished plugin's devices as gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from jupyter_mig.deviceplugin import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
HEALTHY = "Healthy"


class DevicePluginError(Exception):
    """A plugin is missing, refused a call or did not answer in time."""


class _Plugin:
    """One registered plugin: its channel and the devices its last ListAndWatch answer named."""

    def __init__(self, resource: str, endpoint: Path) -> None:
        self.resource = resource
        self.channel = grpc.insecure_channel(f"unix://{endpoint}")
        self.stub = api_pb2_grpc.DevicePluginStub(self.channel)  # type: ignore[no-untyped-call]
        self.devices: dict[str, str] = {}  # device id -> health
        self.stream: Any = None


class DevicePluginHost:
    """Registration server plus one ListAndWatch follower per registered resource."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._plugins: dict[str, _Plugin] = {}
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None

    # -- registration ------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        socket = self.directory / KUBELET_SOCKET
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RegistrationServicer_to_server(  # type: ignore[no-untyped-call]
            _Registration(self._register), server
        )
        server.add_insecure_port(f"unix://{socket}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
        with self._changed:
            plugins, self._plugins = list(self._plugins.values()), {}
        for plugin in plugins:
            if plugin.stream is not None:
                plugin.stream.cancel()
            plugin.channel.close()

    def _register(self, request: Any) -> str | None:
        """Take a registration; returns why it is refused, or None."""
        if request.version != API_VERSION:
            return f"unsupported device-plugin API version {request.version!r}"
        endpoint = self.directory / request.endpoint
        if endpoint.parent != self.directory:
            return f"endpoint {request.endpoint!r} is not a socket name in the plugin directory"
        plugin = _Plugin(request.resource_name, endpoint)
        with self._changed:
            previous = self._plugins.get(plugin.resource)
            self._plugins[plugin.resource] = plugin
        if previous is not None and previous.stream is not None:
            previous.stream.cancel()
        log.info("device plugin for %s registered at %s", plugin.resource, endpoint.name)
        threading.Thread(
            target=self._follow, args=(plugin,), name=f"listwatch-{plugin.resource}", daemon=True
        ).start()
        return None

    def _follow(self, plugin: _Plugin) -> None:
        """Keep ``plugin.devices`` equal to its last ListAndWatch answer until the stream ends."""
        try:
            plugin.stream = plugin.stub.ListAndWatch(api_pb2.Empty())
            for answer in plugin.stream:
                with self._changed:
                    plugin.devices = {d.ID: d.health for d in answer.devices}
                    self._changed.notify_all()
        except grpc.RpcError as err:
            log.info("device plugin for %s went away: %s", plugin.resource, err.code())
        with self._changed:
            plugin.devices = {}
            if self._plugins.get(plugin.resource) is plugin:
                del self._plugins[plugin.resource]
            self._changed.notify_all()

    # -- what the node advertises, and admission ---------------------------------------------

    def advertised(self) -> dict[str, list[str]]:
        """Healthy device ids by extended resource (the Node's capacity and allocatable)."""
        with self._changed:
            return {
                resource: sorted(i for i, health in plugin.devices.items() if health == HEALTHY)
                for resource, plugin in sorted(self._plugins.items())
            }

    def wait(self, condition: Callable[[dict[str, list[str]]], bool], timeout: float) -> bool:
        """Wait until ``condition(advertised())`` holds; False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.advertised()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def allocate(self, resource: str, device_ids: list[str], timeout: float = 10.0) -> Any:
        """The plugin's ``ContainerAllocateResponse`` for one container's devices."""
        with self._changed:
            plugin = self._plugins.get(resource)
        if plugin is None:
            raise DevicePluginError(f"no device plugin is registered for {resource}")
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=device_ids)]
        )
        try:
            answer = plugin.stub.Allocate(request, timeout=timeout)
        except grpc.RpcError as err:
            raise DevicePluginError(f"Allocate of {resource} failed: {err.details()}") from None
        return answer.container_responses[0]


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, register: Callable[[Any], str | None]) -> None:
        self._register = register

    def Register(self, request: Any, context: Any) -> api_pb2.Empty:
        refused = self._register(request)
        if refused is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused)
        return api_pb2.Empty()

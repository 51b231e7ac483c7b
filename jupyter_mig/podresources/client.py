"""A small typed client of the kubelet pod-resources API v1 on a unix socket.

The agent asks it which MIG devices (by MIG UUID) pods hold, so it never destroys a busy
instance.  Real node: ``/var/lib/kubelet/pod-resources/kubelet.sock``; sim node:
``DIR/pod-resources.sock``.  Every call has a deadline; failures raise
:class:`PodResourcesError` with one line that names the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from jupyter_mig.podresources import api_pb2, api_pb2_grpc

#: The kubelet's socket on a real node.
KUBELET_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"

DEFAULT_TIMEOUT = 5.0


class PodResourcesError(Exception):
    """The pod-resources API could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class DeviceAssignment:
    """One device the kubelet assigned to one container of a pod."""

    namespace: str
    pod: str
    container: str
    resource: str  # e.g. "nvidia.com/mig-1g.10gb"
    device_id: str  # for MIG devices: the MIG UUID

    @property
    def pod_key(self) -> str:
        """``namespace/name``, the form the MigNode status uses."""
        return f"{self.namespace}/{self.pod}"


def _target(socket_path: str) -> str:
    return f"unix://{socket_path}"


def _call(socket_path: str, method: str, request: object, timeout: float) -> object:
    """One unary call on a fresh channel (the agent calls rarely; no channel to keep healthy)."""
    try:
        with grpc.insecure_channel(_target(socket_path)) as channel:
            stub: Any = api_pb2_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
            response: object = getattr(stub, method)(request, timeout=timeout)
            return response
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        detail = err.details() if isinstance(err, grpc.Call) else str(err)
        name = code.name if code is not None else "UNKNOWN"
        raise PodResourcesError(
            f"pod-resources {method} on {socket_path} failed: {name}: {detail}"
        ) from None


def assignments(socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> list[DeviceAssignment]:
    """Every device assigned to a container, from ``List``."""
    response = _call(socket_path, "List", api_pb2.ListPodResourcesRequest(), timeout)
    assert isinstance(response, api_pb2.ListPodResourcesResponse)
    found: list[DeviceAssignment] = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                found.extend(
                    DeviceAssignment(
                        pod.namespace, pod.name, container.name, devices.resource_name, device
                    )
                    for device in devices.device_ids
                )
    return found


def list_devices(
    socket_path: str, timeout: float = DEFAULT_TIMEOUT, resource_prefix: str = ""
) -> dict[str, list[tuple[str, str]]]:
    """``{"namespace/pod": [(resource_name, device_id), ...]}`` for pods that hold devices.

    ``resource_prefix`` (e.g. ``"nvidia.com/mig-"``) keeps only matching resources.
    """
    by_pod: dict[str, list[tuple[str, str]]] = {}
    for item in assignments(socket_path, timeout):
        if item.resource.startswith(resource_prefix):
            by_pod.setdefault(item.pod_key, []).append((item.resource, item.device_id))
    return by_pod


def allocatable(socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, list[str]]:
    """``{resource_name: [device_id, ...]}``: every device the kubelet knows, from
    ``GetAllocatableResources``."""
    response = _call(
        socket_path, "GetAllocatableResources", api_pb2.AllocatableResourcesRequest(), timeout
    )
    assert isinstance(response, api_pb2.AllocatableResourcesResponse)
    table: dict[str, list[str]] = {}
    for devices in response.devices:
        table.setdefault(devices.resource_name, []).extend(devices.device_ids)
    return table


def pod_devices(
    socket_path: str, namespace: str, pod: str, timeout: float = DEFAULT_TIMEOUT
) -> list[tuple[str, str]]:
    """``[(resource_name, device_id), ...]`` of one pod, from ``Get``."""
    request = api_pb2.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace)
    response = _call(socket_path, "Get", request, timeout)
    assert isinstance(response, api_pb2.GetPodResourcesResponse)
    return [
        (devices.resource_name, device)
        for container in response.pod_resources.containers
        for devices in container.devices
        for device in devices.device_ids
    ]

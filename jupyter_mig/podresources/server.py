"""A pod-resources API v1 server on a unix socket, as the sim node's kubelet part serves it.

It answers from two callables the sim node owns, so every answer reflects the sim node's
current device assignments and the simulated NVML state at the time of the call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from jupyter_mig.podresources import api_pb2, api_pb2_grpc
from jupyter_mig.podresources.client import DeviceAssignment

#: Every device assigned now.
AssignmentsSource = Callable[[], Iterable[DeviceAssignment]]
#: Every device the node has: resource name -> device ids.
AllocatableSource = Callable[[], dict[str, list[str]]]


def _pod_resources(
    namespace: str, name: str, items: list[DeviceAssignment]
) -> api_pb2.PodResources:
    by_container: dict[str, dict[str, list[str]]] = {}
    for item in items:
        resources = by_container.setdefault(item.container, {})
        resources.setdefault(item.resource, []).append(item.device_id)
    return api_pb2.PodResources(
        name=name,
        namespace=namespace,
        containers=[
            api_pb2.ContainerResources(
                name=container,
                devices=[
                    api_pb2.ContainerDevices(resource_name=resource, device_ids=ids)
                    for resource, ids in sorted(resources.items())
                ],
            )
            for container, resources in sorted(by_container.items())
        ],
    )


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, assignments: AssignmentsSource, allocatable: AllocatableSource) -> None:
        self._assignments = assignments
        self._allocatable = allocatable

    def _by_pod(self) -> dict[tuple[str, str], list[DeviceAssignment]]:
        pods: dict[tuple[str, str], list[DeviceAssignment]] = {}
        for item in self._assignments():
            pods.setdefault((item.namespace, item.pod), []).append(item)
        return pods

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:
        return api_pb2.ListPodResourcesResponse(
            pod_resources=[
                _pod_resources(namespace, name, items)
                for (namespace, name), items in sorted(self._by_pod().items())
            ]
        )

    def GetAllocatableResources(
        self, request: Any, context: Any
    ) -> api_pb2.AllocatableResourcesResponse:
        return api_pb2.AllocatableResourcesResponse(
            devices=[
                api_pb2.ContainerDevices(resource_name=resource, device_ids=ids)
                for resource, ids in sorted(self._allocatable().items())
            ]
        )

    def Get(self, request: Any, context: Any) -> api_pb2.GetPodResourcesResponse:
        # The sim node tracks only pods that hold devices: any other pod gets an empty answer
        # (the kubelet would say "not found" for a pod it does not run at all).
        namespace, name = request.pod_namespace, request.pod_name
        items = self._by_pod().get((namespace, name), [])
        return api_pb2.GetPodResourcesResponse(pod_resources=_pod_resources(namespace, name, items))


def serve(
    socket_path: str | os.PathLike[str],
    assignments: AssignmentsSource,
    allocatable: AllocatableSource,
    workers: int = 4,
) -> grpc.Server:
    """Start serving on ``socket_path``; ``stop()`` ends it.

    The socket is bound under a private name and renamed into place, which replaces a stale
    socket atomically; and since gRPC unlinks the name it bound when it stops, a server that
    is still shutting down cannot remove the socket of its successor.
    """
    path = Path(socket_path)
    private = path.with_name(f".pr-{os.getpid()}.sock")  # not longer than the public name
    with contextlib.suppress(FileNotFoundError):
        private.unlink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(  # type: ignore[no-untyped-call]
        _Lister(assignments, allocatable), server
    )
    server.add_insecure_port(f"unix://{private}")
    server.start()
    os.replace(private, path)
    return server

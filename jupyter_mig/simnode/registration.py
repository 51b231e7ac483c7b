"""The simulated node's registration: the Node object, its Ready heartbeat and its Lease."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jupyter_mig.kube.client import MERGE_PATCH, STRATEGIC_MERGE_PATCH, Kube, KubeError
from jupyter_mig.simnode.pods import NODE_IP, now

if TYPE_CHECKING:
    from jupyter_mig.simnode.node import NodeConfig

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40


class NodeRegistration:
    """Registers the Node as a kubelet does and keeps it Ready: :meth:`tick` beats every
    ``heartbeat_interval`` seconds, registering again when the Node was deleted."""

    def __init__(self, kube: Kube, config: NodeConfig) -> None:
        self._kube = kube
        self.config = config
        self._node_uid: str | None = None
        self._ready_since = now()
        self._next_heartbeat = 0.0

    @property
    def registered(self) -> bool:
        return self._node_uid is not None

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self.config.name}"

    def tick(self) -> None:
        if time.monotonic() < self._next_heartbeat:
            return
        # the next beat is due one interval on, also after a failed one (no retry storm)
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_interval
        self.heartbeat()

    def heartbeat(self) -> None:
        if self._node_uid is None:
            self._register()
        try:
            self.patch_status(self._ready_status())
        except KubeError as err:
            if err.status != 404:
                raise
            self._node_uid = None  # the Node was deleted: register again on the next beat
            return
        self._renew_lease()

    def patch_status(self, status: Mapping[str, Any]) -> None:
        self._kube.request(
            "PATCH",
            f"{self.path}/status",
            body={"status": status},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    def _register(self) -> None:
        labels = self.config.node_labels()
        node = self._kube.get(self.path)
        if node is None:
            node = self._kube.request(
                "POST",
                "/api/v1/nodes",
                body={"metadata": {"name": self.config.name, "labels": labels}},
            )
            log.info("%s: registered the Node", self.config.name)
        else:
            current = node["metadata"].get("labels") or {}
            if any(current.get(k) != v for k, v in labels.items()):
                self._kube.request(
                    "PATCH",
                    self.path,
                    body={"metadata": {"labels": labels}},
                    content_type=STRATEGIC_MERGE_PATCH,
                )
        self._node_uid = node["metadata"]["uid"]
        status = node.get("status") or {}
        # Like a kubelet: cpu/memory/pods at once; MIG devices when the device plugin reports.
        capacity = {**(status.get("capacity") or {}), **self.config.base_capacity()}
        self.patch_status(
            {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": NODE_IP},
                    {"type": "Hostname", "address": self.config.name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "v1.0.0-jupyter-mig-sim",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "sim://0",
                    "osImage": "jupyter-mig simulated node",
                    "kernelVersion": "",
                    "machineID": self.config.name,
                    "systemUUID": self.config.name,
                    "bootID": self.config.name,
                },
                **self._ready_status(),
            }
        )

    def _ready_status(self) -> dict[str, Any]:
        stamp = now()
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "jupyter-mig simulated kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": self._ready_since,
                }
            ]
        }

    def _renew_lease(self) -> None:
        renew = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {
            "holderIdentity": self.config.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": renew,
        }
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        if self._kube.patch(f"{leases}/{self.config.name}", {"spec": spec}, MERGE_PATCH) is None:
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.config.name,
                "uid": self._node_uid,
            }
            self._kube.request(
                "POST",
                leases,
                body={
                    "metadata": {"name": self.config.name, "ownerReferences": [owner]},
                    "spec": spec,
                },
            )

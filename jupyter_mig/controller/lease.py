"""The Lease I/O of leader election: the shell around the pure :mod:`.leader` state machine.

Reads the ``coordination.k8s.io/v1`` Lease, writes what :class:`LeaderElection` decides (a
create, or a replace carrying the Lease's resourceVersion, so two candidates cannot both win),
and hands the Lease back on the way out so a successor need not wait for it to expire.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from jupyter_mig.controller.leader import LeaderElection
from jupyter_mig.kube.client import Kube, KubeError

log = logging.getLogger("jupyter_mig.controller")

#: A release on the way out gets this long per request.
RELEASE_TIMEOUT_S = 5.0


class LeaseKeeper:
    def __init__(self, kube: Kube, election: LeaderElection, name: str, namespace: str) -> None:
        self.kube = kube
        self.election = election
        self.name = name
        self.namespace = namespace

    def is_leader(self) -> bool:
        return self.election.is_leader(time.monotonic())

    def _path(self, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return f"{base}/{name}" if name else base

    def renew(self) -> None:
        """One attempt to take or renew the Lease; a failure only means not renewed this time."""
        timeout = max(1.0, self.election.renew_deadline / 2)
        try:
            lease = self.kube.get(self._path(self.name), timeout=timeout)
            now = time.monotonic()
            current = lease.get("spec") if lease is not None else None
            wanted = self.election.desired(current, now, datetime.now(UTC))
            if wanted is None:
                return
            metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": metadata,
                "spec": wanted,
            }
            if lease is None:
                self.kube.request("POST", self._path(), body=body, timeout=timeout)
            else:
                metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
                self.kube.request("PUT", self._path(self.name), body=body, timeout=timeout)
            self.election.landed(wanted, now)
        except KubeError as err:
            log.info("lease %s: %s", self.name, err)

    def release(self) -> None:
        """Step down and, if the Lease is still ours, mark it free."""
        if not self.is_leader():
            return
        self.election.step_down()
        try:
            lease = self.kube.request("GET", self._path(self.name), timeout=RELEASE_TIMEOUT_S)
            if (lease.get("spec") or {}).get("holderIdentity") != self.election.identity:
                return
            lease["spec"] = self.election.released(datetime.now(UTC))
            self.kube.request("PUT", self._path(self.name), body=lease, timeout=RELEASE_TIMEOUT_S)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except KubeError as err:
            log.info("could not release the lease %s: %s", self.name, err)

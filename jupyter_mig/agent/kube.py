"""The agent's Kubernetes calls: read its MigNode, write its status, post Events, watch it.

The agent only reads ``spec`` and writes ``status`` (through the status subresource); the
controller creates MigNode objects.  All of it goes through :mod:`jupyter_mig.kube`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jupyter_mig.agent.reconcile import Event
from jupyter_mig.api import constants as c
from jupyter_mig.kube.client import MERGE_PATCH, Kube, KubeError
from jupyter_mig.kube.events import event_object, post_event
from jupyter_mig.kube.watch import ListWatch

log = logging.getLogger(__name__)

COMPONENT = "jupyter-mig-agent"
MIGNODES = f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}"


class MigNodeClient:
    """Reads and reports one MigNode (named after this node)."""

    def __init__(self, kube: Kube, node: str) -> None:
        self.kube = kube
        self.node = node

    def get(self) -> dict[str, Any] | None:
        """The MigNode, or ``None`` when the controller has not created it yet."""
        return self.kube.get(f"{MIGNODES}/{self.node}")

    def write_status(self, status: Mapping[str, Any]) -> None:
        """Replace ``status`` (a merge patch replaces the lists wholesale, as intended)."""
        self.kube.request(
            "PATCH",
            f"{MIGNODES}/{self.node}/status",
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    def post_event(self, obj: Mapping[str, Any], event: Event) -> None:
        """A core/v1 Event on the MigNode; failures are logged, never fatal."""
        metadata = obj.get("metadata") or {}
        involved = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": self.node,
            "uid": metadata.get("uid", ""),
            "resourceVersion": metadata.get("resourceVersion", ""),
        }
        body = event_object(
            involved,
            type=event.type,
            reason=event.reason,
            message=event.message,
            component=COMPONENT,
            instance=self.node,
            action="Reconcile",
            now=datetime.now(UTC),
        )
        try:
            post_event(self.kube, body)
        except KubeError as err:
            log.warning("cannot post Event %s: %s %s", event.reason, err.status, err.reason)


class MigNodeWatcher(threading.Thread):
    """Wakes the reconcile loop when this node's MigNode appears, goes, or its spec changes.

    A :class:`~jupyter_mig.kube.ListWatch` of the one MigNode, with a server-side timeout of
    ``watch_timeout``.  Status-only updates (the agent's own writes) do not wake the loop: only
    ``metadata.generation`` does.
    """

    def __init__(
        self,
        kube: Kube,
        node: str,
        wake: Callable[[], None],
        stop: threading.Event,
        watch_timeout: int = 60,
    ) -> None:
        super().__init__(name="mignode-watch", daemon=True)
        self.node = node
        self.wake = wake
        self._generation: Any = None
        self._list_watch = ListWatch(
            kube,
            MIGNODES,
            query={"fieldSelector": f"metadata.name={node}"},
            on_list=self._listed,
            on_event=self._changed,
            stop=stop,
            watch_seconds=(watch_timeout, watch_timeout),
            name=f"MigNode {node}",
        )

    def run(self) -> None:
        self._list_watch.run()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        self._generation = next((item["metadata"].get("generation") for item in items), None)
        self.wake()

    def _changed(self, kind: str, obj: dict[str, Any]) -> None:
        generation = obj["metadata"].get("generation")
        if kind in ("ADDED", "DELETED") or generation != self._generation:
            log.debug("MigNode %s %s (generation %s)", self.node, kind, generation)
            self._generation = None if kind == "DELETED" else generation
            self.wake()

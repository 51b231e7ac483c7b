"""The agent's Kubernetes calls: read its MigNode, write its status, post Events, watch it.

The agent only reads ``spec`` and writes ``status`` (through the status subresource); the
controller creates MigNode objects.  Every call carries a request timeout.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jupyter_mig.agent.reconcile import Event
from jupyter_mig.api import constants as c

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30
#: Events about a cluster-scoped object go to this namespace, as the API server's own do.
EVENT_NAMESPACE = "default"
COMPONENT = "jupyter-mig-agent"


class MigNodeClient:
    """Reads and reports one MigNode (named after this node)."""

    def __init__(self, api_client: Any, node: str) -> None:
        from kubernetes import client

        self.node = node
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)

    def get(self) -> dict[str, Any] | None:
        """The MigNode, or ``None`` when the controller has not created it yet."""
        from kubernetes.client import ApiException

        try:
            obj: dict[str, Any] = self.custom.get_cluster_custom_object(
                c.GROUP, c.VERSION, c.PLURAL, self.node, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return obj

    def write_status(self, status: Mapping[str, Any]) -> None:
        """Replace ``status`` (a merge patch replaces the lists wholesale, as intended)."""
        self.custom.patch_cluster_custom_object_status(
            c.GROUP,
            c.VERSION,
            c.PLURAL,
            self.node,
            {"status": dict(status)},
            field_manager=c.AGENT_FIELD_MANAGER,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def post_event(self, obj: Mapping[str, Any], event: Event) -> None:
        """A core/v1 Event on the MigNode; failures are logged, never fatal."""
        from kubernetes.client import ApiException

        metadata = obj.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        micro = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"name": f"{self.node}.{uuid.uuid4().hex[:16]}"},
            "involvedObject": {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "name": self.node,
                "uid": metadata.get("uid", ""),
                "resourceVersion": metadata.get("resourceVersion", ""),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": micro,
            "action": "Reconcile",
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(
                EVENT_NAMESPACE, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            log.warning("cannot post Event %s: %s %s", event.reason, err.status, err.reason)


class MigNodeWatcher(threading.Thread):
    """Wakes the reconcile loop when this node's MigNode appears, goes, or its spec changes.

    List then watch from the list's resourceVersion, with a server-side timeout; a 410 Gone
    (history compacted) or any error leads to a fresh list after a short backoff.  Status-only
    updates (the agent's own writes) do not wake the loop: only ``metadata.generation`` does.
    """

    def __init__(
        self,
        api_client: Any,
        node: str,
        wake: Callable[[], None],
        stop: threading.Event,
        watch_timeout: int = 60,
    ) -> None:
        super().__init__(name="mignode-watch", daemon=True)
        self.api_client = api_client
        self.node = node
        self.wake = wake
        self.stop = stop
        self.watch_timeout = watch_timeout

    def run(self) -> None:
        from kubernetes import client, watch

        custom: Any = client.CustomObjectsApi(self.api_client)
        selector = f"metadata.name={self.node}"
        backoff = 1.0
        while not self.stop.is_set():
            try:
                listed = custom.list_cluster_custom_object(
                    c.GROUP, c.VERSION, c.PLURAL, field_selector=selector,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
                version = listed["metadata"]["resourceVersion"]
                seen = {item["metadata"].get("generation") for item in listed.get("items", [])}
                self.wake()
                watcher = watch.Watch()  # type: ignore[no-untyped-call]
                self._watch(custom, watcher, selector, version, seen)
                backoff = 1.0
            except client.ApiException as err:
                if err.status == 410:
                    log.info("MigNode watch expired (410 Gone); listing again")
                    continue
                log.warning("MigNode watch failed: %s %s", err.status, err.reason)
            except Exception as err:  # connection refused, timeouts: retry, never die
                log.warning("MigNode watch failed: %s", err)
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _watch(
        self, custom: Any, watcher: Any, selector: str, version: str, seen: set[Any]
    ) -> None:
        generation = next(iter(seen), None)
        while not self.stop.is_set():
            for event in watcher.stream(
                custom.list_cluster_custom_object,
                c.GROUP,
                c.VERSION,
                c.PLURAL,
                field_selector=selector,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                _request_timeout=self.watch_timeout + REQUEST_TIMEOUT,
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                kind = event["type"]
                if kind == "BOOKMARK":
                    continue
                new_generation = obj["metadata"].get("generation")
                if kind in ("ADDED", "DELETED") or new_generation != generation:
                    log.debug("MigNode %s %s (generation %s)", self.node, kind, new_generation)
                    generation = None if kind == "DELETED" else new_generation
                    self.wake()
                if self.stop.is_set():
                    watcher.stop()
                    return
            # The server ended the watch at its timeout: resume from ``version``.

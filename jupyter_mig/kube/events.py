"""core/v1 Events (what ``kubectl describe`` shows): one body, whoever reports.

An Event about a namespaced object lives in that object's namespace; one about a cluster-scoped
object (a MigNode) in ``default``, as the API server's own do.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jupyter_mig.kube.client import Kube

#: Where Events about cluster-scoped objects go.
CLUSTER_EVENT_NAMESPACE = "default"
#: The API server refuses longer messages.
MAX_MESSAGE = 1024


def event_object(
    involved: Mapping[str, str],
    *,
    type: str,
    reason: str,
    message: str,
    component: str,
    instance: str,
    action: str,
    now: datetime,
    source_component: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (``apiVersion``, ``kind``, ``name``, ``uid``, and
    ``namespace`` for a namespaced object), reported by ``component`` (a qualified name) from
    ``instance`` (e.g. a pod or node name).  ``source_component`` is the older field's value
    when it differs from ``component``."""
    namespace = involved.get("namespace") or CLUSTER_EVENT_NAMESPACE
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": dict(involved),
        "type": type,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": action,
        "source": {"component": source_component or component, "host": instance[:128]},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
    }


def post_event(kube: Kube, event: Mapping[str, Any]) -> None:
    """Create ``event`` (from :func:`event_object`) in its namespace; raises ``KubeError``."""
    namespace = event["metadata"]["namespace"]
    kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=dict(event))

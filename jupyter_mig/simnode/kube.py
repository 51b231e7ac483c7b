"""The few Kubernetes API calls a kubelet makes, on plain dicts, each with a timeout.

The generated client's models are bypassed (``_preload_content=False``): the sim node works on
objects exactly as the API server sends them, and its watch handles 410 Gone itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
#: (connect, read) seconds for ordinary calls.
TIMEOUT = (5.0, 30.0)


class Gone(Exception):
    """The watch's resource version is too old (HTTP 410): list again."""


def new_api_client(kubeconfig: str) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kubeconfig``."""
    from kubernetes import config

    new_client: Any = config.new_client_from_config
    return new_client(config_file=kubeconfig)


def body(response: Any) -> Any:
    """The JSON body of a ``_preload_content=False`` response."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def is_status(err: Exception, *codes: int) -> bool:
    """Whether ``err`` is an API error with one of these HTTP status codes."""
    from kubernetes.client import ApiException

    return isinstance(err, ApiException) and err.status in codes


def list_pods(core: Any, node: str) -> tuple[list[dict[str, Any]], str]:
    """Pods bound to ``node`` and the list's resource version."""
    listed = body(
        core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}",
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
    )
    return listed["items"], listed["metadata"]["resourceVersion"]


def watch_pods(
    core: Any, node: str, resource_version: str, timeout_seconds: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event type, pod)`` for pods bound to ``node`` until the server ends the watch.

    BOOKMARK events carry only a resource version; callers track it from every event.
    Raises :class:`Gone` when the resource version has expired.
    """
    from kubernetes.watch import watch

    iter_resp_lines: Any = watch.iter_resp_lines

    response = core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}",
        watch=True,
        resource_version=resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=timeout_seconds,
        _preload_content=False,
        _request_timeout=(TIMEOUT[0], timeout_seconds + 15),
    )
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "ERROR":
                status = event["object"]
                if status.get("code") == 410:
                    raise Gone(status.get("message", "resource version too old"))
                raise RuntimeError(f"watch error: {status.get('message', status)}")
            yield event["type"], event["object"]
    finally:
        response.close()
        response.release_conn()

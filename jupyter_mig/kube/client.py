"""A small JSON client for the Kubernetes API on top of ``kubernetes.client.ApiClient``.

The controller, the agent and the sim node work on plain dicts (the API's own JSON), so they
talk REST directly: the generated model classes would only be converted back and forth.  The
``ApiClient`` still does what it is good at — kubeconfig and in-cluster credentials, TLS, token
refresh.  Every request has a timeout: ``(CONNECT_TIMEOUT_S, read)``, the read part
``REQUEST_TIMEOUT_S`` unless a caller says otherwise, and a watch's the server-side
``timeoutSeconds`` plus ``WATCH_GRACE_S``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3.exceptions
from kubernetes.client import ApiClient

from jupyter_mig.errors import UserError

#: Errors a request can fail with besides an HTTP status (connection refused, reset, timeout).
TRANSPORT_ERRORS = (OSError, urllib3.exceptions.HTTPError)

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
#: How much longer than its server-side ``timeoutSeconds`` a watch may stay silent.
WATCH_GRACE_S = 15.0

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def new_api_client(kubeconfig: str | None) -> Any:
    """Credentials from ``kubeconfig`` when given; else in-cluster (inside a pod), else the
    default kubeconfig.  A :class:`UserError` names what could not be loaded."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig:
            return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return ApiClient()
        return config.new_client_from_config()  # type: ignore[no-untyped-call]
    except ConfigException as err:
        where = kubeconfig or "the in-cluster service account or the default kubeconfig"
        raise UserError(
            f"cannot load Kubernetes credentials from {where} ({err}); pass --kubeconfig FILE"
        ) from None


class KubeError(Exception):
    """An error status from the API server (``status`` 0: the request did not get through)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(KubeError):
    """410: the resourceVersion is too old to watch from; list again."""


def status_error(status: int, reason: str, message: str) -> KubeError:
    """The error for an API status: :class:`Gone` for 410, else :class:`KubeError`."""
    kind = Gone if status == 410 else KubeError
    return kind(status, reason, message)


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data)
        reason, message = str(body.get("reason", "")), str(body.get("message", ""))
    except (ValueError, AttributeError):
        reason, message = "", data[:200].decode("utf-8", "replace")
    return status_error(status, reason, message)


class Kube:
    """Requests and watches on plain dicts.  ``field_manager`` (when given) names this client in
    ``managedFields`` of what it creates and patches."""

    def __init__(self, api_client: ApiClient, field_manager: str | None) -> None:
        self.api_client = api_client
        self.field_manager = field_manager

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        timeout: tuple[float, float],
    ) -> Any:
        params = list((query or {}).items())
        if method in ("POST", "PUT", "PATCH") and self.field_manager:
            params.append(("fieldManager", self.field_manager))
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params={"Accept": JSON, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*request, _request_timeout=timeout).response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or :class:`KubeError`."""
        try:
            response = self._send(
                method, path, query, body, content_type, (CONNECT_TIMEOUT_S, timeout)
            )
            data = response.data
        except TRANSPORT_ERRORS as err:
            raise KubeError(0, type(err).__name__, str(err)) from err
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    def get(self, path: str, timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist (404)."""
        try:
            return self.request("GET", path, timeout=timeout)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def patch(self, path: str, body: Any, content_type: str) -> dict[str, Any] | None:
        """Patch the object at ``path``; None when it does not exist (404)."""
        try:
            return self.request("PATCH", path, body=body, content_type=content_type)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def watch(
        self, path: str, query: Mapping[str, str], timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) until the server ends the stream."""
        params = {**query, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        try:
            response = self._send(
                "GET", path, params, None, JSON,
                (CONNECT_TIMEOUT_S, timeout_seconds + WATCH_GRACE_S),
            )  # fmt: skip
        except TRANSPORT_ERRORS as err:
            raise KubeError(0, type(err).__name__, str(err)) from err
        try:
            if not 200 <= response.status < 300:
                raise _error(response.status, response.read())
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except TRANSPORT_ERRORS as err:
            raise KubeError(0, type(err).__name__, str(err)) from err
        finally:
            response.release_conn()

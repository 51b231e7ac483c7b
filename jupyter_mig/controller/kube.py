"""A small JSON client for the Kubernetes API on top of ``kubernetes.client.ApiClient``.

The controller works on plain dicts (the API's own JSON), so it talks REST directly: the
generated model classes would only be converted back and forth.  The ``ApiClient`` still does
what it is good at — kubeconfig and in-cluster credentials, TLS, token refresh.  Every request
has a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3.exceptions
from kubernetes.client import ApiClient

#: Errors a request can fail with besides an HTTP status (connection refused, reset, timeout).
TRANSPORT_ERRORS = (OSError, urllib3.exceptions.HTTPError)


class KubeError(Exception):
    """An error status from the API server (``status`` 0: the request did not get through)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(KubeError):
    """410: the resourceVersion is too old to watch from; list again."""


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data)
        reason, message = str(body.get("reason", "")), str(body.get("message", ""))
    except (ValueError, AttributeError):
        reason, message = "", data[:200].decode("utf-8", "replace")
    kind = Gone if status == 410 else KubeError
    return kind(status, reason, message)


class Kube:
    def __init__(self, api_client: ApiClient, field_manager: str) -> None:
        self.api_client = api_client
        self.field_manager = field_manager

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float],
    ) -> Any:
        params = list((query or {}).items())
        if method in ("POST", "PUT", "PATCH"):
            params.append(("fieldManager", self.field_manager))
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params={"Accept": "application/json", "Content-Type": content_type},
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
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or :class:`KubeError`."""
        try:
            response = self._send(method, path, query, body, content_type, timeout)
            data = response.data
        except TRANSPORT_ERRORS as err:
            raise KubeError(0, type(err).__name__, str(err)) from err
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    def watch(
        self, path: str, query: Mapping[str, str], timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) until the server ends the stream."""
        params = {**query, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        try:
            response = self._send(
                "GET", path, params, None, "application/json", (10.0, timeout_seconds + 15.0)
            )
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

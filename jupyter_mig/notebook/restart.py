"""Asking the hub's restart service to restart this server with another slice.

The server authenticates with its own token (``$JUPYTERHUB_API_TOKEN``); the service checks that
the token belongs to this server's owner and has access to this server (docs/hub.md lists the
scopes).  The hub, not this process, then stops and starts the server, so the restart survives
the stop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: Why a server cannot change its slice, with what the user can do and what to ask the admin for.
NOT_RESTARTABLE = (
    "this server cannot change its GPU slice: it was not started by a JupyterHub set up for "
    "jupyter-mig. Start a server with the slice you want from your hub's spawn page, or ask "
    "your admin to enable jupyter-mig's restart service (docs/hub.md)"
)


class RestartServiceError(Exception):
    """The service refused (its status and message) or could not be reached (status 502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HubRestartClient:
    def __init__(
        self,
        service_url: str,
        token: str,
        user: str,
        server: str,
        hub_base_url: str,
        timeout: float = 10.0,
    ) -> None:
        self.service_url = service_url if service_url.endswith("/") else service_url + "/"
        self.token = token
        self.user = user
        self.server = server
        self.hub_base_url = hub_base_url if hub_base_url.endswith("/") else hub_base_url + "/"
        self.timeout = timeout

    @staticmethod
    def from_env(
        service_url: str, env: Mapping[str, str], timeout: float
    ) -> HubRestartClient | None:
        """The client for this server, or None when JupyterHub did not start it."""
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        user = env.get("JUPYTERHUB_USER", "")
        if not token or not user or not service_url:
            return None
        return HubRestartClient(
            service_url,
            token,
            user,
            env.get("JUPYTERHUB_SERVER_NAME", ""),
            env.get("JUPYTERHUB_BASE_URL", "/"),
            timeout,
        )

    @property
    def spawn_pending_url(self) -> str:
        """The hub page that shows the restart's progress while this server is gone."""
        url = f"{self.hub_base_url}hub/spawn-pending/{quote(self.user, safe='')}"
        return f"{url}/{quote(self.server, safe='')}" if self.server else url

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        request = HTTPRequest(
            self.service_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            if err.response is None:  # timeout or dropped connection
                raise RestartServiceError(
                    502, f"the hub's restart service at {self.service_url} did not answer: {err}"
                ) from None
            message = _message(err.response.body, str(err))
            raise RestartServiceError(err.code, f"the hub's restart service: {message}") from None
        except OSError as err:
            raise RestartServiceError(
                502, f"the hub's restart service at {self.service_url} is unreachable: {err}"
            ) from None
        data = json.loads(response.body or b"{}")
        return data if isinstance(data, dict) else {}

    async def restart(self, size: str | None, timeout: float) -> dict[str, Any]:
        body = {"server_name": self.server, "gpu_slice": size, "timeout": timeout}
        return await self._call("POST", "api/restart", body)

    async def progress(self) -> dict[str, Any] | None:
        """The latest restart record of this server, or None when there has been none."""
        try:
            return await self._call("GET", "api/restart?" + urlencode({"server_name": self.server}))
        except RestartServiceError as err:
            if err.status == 404:
                return None
            raise


def _message(body: bytes | None, fallback: str) -> str:
    try:
        data = json.loads(body or b"")
    except ValueError:
        return fallback
    return str(data.get("message", fallback)) if isinstance(data, dict) else fallback

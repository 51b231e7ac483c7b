"""The kernel's way to its own Jupyter server's ``jupyter-mig`` REST API.

A kernel started by jupyter_server has ``JPY_PARENT_PID`` (set by jupyter_client) = the server's
process id, and the server writes ``jpserver-<pid>.json`` (its URL and token) into the Jupyter
runtime directory, which the kernel shares.  Under JupyterHub that file has no token, and
``JUPYTERHUB_API_TOKEN`` (inherited from the server) authenticates against the server instead.
``JUPYTER_MIG_SERVER_URL`` / ``JUPYTER_MIG_SERVER_TOKEN`` override both (e.g. remote kernels).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

_OVERRIDE = "set JUPYTER_MIG_SERVER_URL and JUPYTER_MIG_SERVER_TOKEN to the server's URL and token"


class ClientError(Exception):
    """The server could not be found, reached, or refused (``status`` 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def find_server(env: Mapping[str, str], runtime_dir: Path | None = None) -> tuple[str, str]:
    """(base URL ending in ``/``, token) of the server this kernel belongs to."""
    hub_token = env.get("JUPYTERHUB_API_TOKEN", "")
    url = env.get("JUPYTER_MIG_SERVER_URL", "")
    if url:
        return _slash(url), env.get("JUPYTER_MIG_SERVER_TOKEN", "") or hub_token
    pid = env.get("JPY_PARENT_PID", "")
    if not pid.isdigit():
        raise ClientError(
            "cannot find this kernel's Jupyter server (no JPY_PARENT_PID): GPU slices are "
            "changed from a notebook of a Jupyter server with jupyter-mig; from elsewhere "
            f"{_OVERRIDE}"
        )
    path = (runtime_dir or _runtime_dir()) / f"jpserver-{pid}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ClientError(
            f"cannot read the Jupyter server's runtime file {path} ({err}); {_OVERRIDE}"
        ) from None
    return _slash(str(info["url"])), str(info.get("token") or "") or hub_token


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class ServerClient:
    """Blocking calls (a few milliseconds each) to ``<server>/jupyter-mig/api/``."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = _slash(base_url)
        self.token = token
        self.timeout = timeout

    @staticmethod
    def discover(env: Mapping[str, str] | None = None) -> ServerClient:
        url, token = find_server(os.environ if env is None else env)
        return ServerClient(url, token)

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}jupyter-mig/api/{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            raise ClientError(_message(err), err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ClientError(
                f"the Jupyter server at {self.base_url} is unreachable: {reason}"
            ) from None
        return reply if isinstance(reply, dict) else {}

    def capacity(self) -> dict[str, Any]:
        return self.call("GET", "capacity")

    def current(self) -> dict[str, Any]:
        return self.call("GET", "slice")

    def plan(self, size: str) -> dict[str, Any]:
        """What ``size`` would get now, without restarting anything."""
        return self.call("POST", "slice", {"size": size, "dry_run": True})

    def request(self, size: str | None, saved: bool, timeout: float) -> dict[str, Any]:
        """Restart with ``size`` (None: no GPU); ``saved`` asserts open documents are saved."""
        if size is None:
            query = urlencode({"saved": str(saved).lower(), "timeout": timeout})
            return self.call("DELETE", f"slice?{query}")
        return self.call("POST", "slice", {"size": size, "saved": saved, "timeout": timeout})

    def progress(self) -> dict[str, Any]:
        return self.call("GET", "slice/progress")


def _message(err: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(err.read() or b"")
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"the Jupyter server answered {err.code} {err.reason}"

"""A real JupyterHub for the hub tests: the configuration both share, and its REST API.

The hub's proxy is a route table (the tests reach servers at the addresses the hub registered);
each test adds its spawner (``spawner_config``), and the jupyter-mig part is the documented Zero
to JupyterHub values (:mod:`support.hub_values`), run on each JupyterHub line the tests cover.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.hub_values import hub_config
from support.net import free_port

REPO = Path(__file__).resolve().parents[2]
#: The Python of each JupyterHub line the hub tests run on.
HUB_LINES = {"hub6": Path(sys.executable), "hub5": REPO / ".venv-hub5" / "bin" / "python"}

ADMIN_TOKEN = "jupyter-mig-test-admin-token-0123456789"

_SHARED_CONFIG = """
import json
import sys

from jupyterhub.proxy import Proxy


class RouteTableProxy(Proxy):
    '''Keeps the routes; the test reaches servers at the addresses registered here.'''

    should_start = False
    routes = {{}}

    async def add_route(self, routespec, target, data):
        self.routes[routespec] = {{"routespec": routespec, "target": target, "data": data}}

    async def delete_route(self, routespec):
        self.routes.pop(routespec, None)

    async def get_all_routes(self):
        return dict(self.routes)


c.JupyterHub.proxy_class = RouteTableProxy
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.hub_connect_ip = "127.0.0.1"
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "proxy"],
        "services": ["test-admin"],
    }}
]
"""


@dataclass(frozen=True)
class HubFiles:
    config: Path
    hub_port: int
    service_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}/hub/api"


def hub_python(line: str) -> Path:
    """The Python of a JupyterHub line; the test is skipped where it is not installed."""
    python = HUB_LINES[line]
    if not python.exists():
        pytest.skip(f"no {python}: scripts/setup.sh installs the JupyterHub 5.4 line there")
    return python


def hub_files(tmp: Path) -> HubFiles:
    """Ports for a hub in ``tmp``, and a ``tmp/jupyter-config`` that enables the jupyter-mig
    server extension."""
    (tmp / "jupyter-config").mkdir(exist_ok=True)
    (tmp / "jupyter-config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_mig": True}}})
    )
    return HubFiles(tmp / "jupyterhub_config.py", free_port(), free_port())


def write_hub_config(
    files: HubFiles, spawner_config: str, values: dict[str, Any], **fields: Any
) -> None:
    """Write the hub's config: the shared part, ``spawner_config`` (both ``str.format``
    templates that see ``tmp``, ``hub_port``, ``service_port``, ``public_port``, ``admin_token``
    and ``fields``), then the Zero to JupyterHub ``values``' hub configuration."""
    tmp = files.config.parent
    fields = {
        "tmp": tmp,
        "hub_port": files.hub_port,
        "service_port": files.service_port,
        "public_port": free_port(),
        "admin_token": ADMIN_TOKEN,
        **fields,
    }
    files.config.write_text(
        _SHARED_CONFIG.format(**fields) + spawner_config.format(**fields) + hub_config(values, tmp)
    )


def call(url: str, token: str | None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """A JSON request with a hub token: the status and the decoded answer."""
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, data = err.code, err.read()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data.decode("utf-8", "replace")

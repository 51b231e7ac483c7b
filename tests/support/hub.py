"""A real JupyterHub for the hub tests: the configuration both share, and its REST API.

The hub's proxy is a route table (the tests reach servers at the addresses the hub registered);
each test adds its spawner and the ``configure_hub`` call (``spawner_config``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.net import free_port

ADMIN_TOKEN = "jupyter-mig-test-admin-token-0123456789"

_SHARED_CONFIG = """
import json
import sys

from jupyterhub.proxy import Proxy

from jupyter_mig.hub import SliceSettings, configure_hub


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


def write_hub_config(tmp: Path, spawner_config: str, **values: Any) -> HubFiles:
    """Write ``tmp/jupyterhub_config.py`` (the shared part, then ``spawner_config``) and a
    ``tmp/jupyter-config`` that enables the jupyter-mig server extension.

    Both parts are ``str.format`` templates; they see ``tmp``, ``hub_port``, ``service_port``,
    ``public_port``, ``admin_token`` and ``values``.
    """
    (tmp / "jupyter-config").mkdir(exist_ok=True)
    (tmp / "jupyter-config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_mig": True}}})
    )
    files = HubFiles(tmp / "jupyterhub_config.py", free_port(), free_port())
    fields = {
        "tmp": tmp,
        "hub_port": files.hub_port,
        "service_port": files.service_port,
        "public_port": free_port(),
        "admin_token": ADMIN_TOKEN,
        **values,
    }
    files.config.write_text(_SHARED_CONFIG.format(**fields) + spawner_config.format(**fields))
    return files


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

"""The hub side of per-kernel slices without a JupyterHub: its users and tokens as stand-ins.

The kernel pod API under test runs for real (the Kubernetes layer, the controller's capacity);
only what it asks JupyterHub (who owns a token, which servers run) is answered here: two users,
``alice`` and ``bob``, each with a running default server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_mig.hub.kernels import KernelPods
from jupyter_mig.hub.service import HubApi, Restarter, make_app

TOKENS = {"alice-token": "alice", "bob-token": "bob"}


class Hub(HubApi):
    """The users and servers of a JupyterHub: alice and bob, each with a running server."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/hub/api", "unused")
        self.running = {"alice": True, "bob": True}

    async def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[int, Any]:
        """``GET users/<name>``, as the hub's REST API answers it."""
        name = path.removeprefix("users/")
        if method != "GET" or name not in self.running:
            return 404, {"message": f"no such user {name}"}
        server = {"ready": self.running[name], "user_options": {}}
        servers = {"": server} if server["ready"] else {}
        return 200, {"name": name, "groups": [], "servers": servers}


class Auth:
    """Each token belongs to one user, with the scopes a server token has."""

    access_scopes: frozenset[str] = frozenset()

    async def user_for_token(self, token: str, use_cache: bool, sync: bool) -> Any:
        user = TOKENS.get(token)
        return user and {"name": user, "kind": "user", "scopes": [f"servers!server={user}/"]}

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> bool:
        return True


async def serving(
    kernels: KernelPods, restarter: Restarter, scenario: Callable[[str], Awaitable[None]]
) -> None:
    """Run ``scenario(url)`` while the service answers at ``url``."""
    app = make_app("/services/jupyter-mig/", restarter, Auth(), kernels)
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    try:
        port = sockets[0].getsockname()[1]
        await scenario(f"http://127.0.0.1:{port}/services/jupyter-mig/")
    finally:
        server.stop()

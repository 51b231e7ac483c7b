"""The restart service: stops a single-user server and starts it again with another GPU slice.

Why a hub-side service: a server cannot restart itself.  The stop kills it (on Kubernetes, with
everything else in its pod, so a detached helper dies too), and the hub deletes the server's API
token when it stops, so the start that must follow has to come from something that outlives the
server and holds its own token.  This JupyterHub service does both halves with its own token
(role: ``servers``, ``read:users:name``, ``read:users:groups``) and only for the caller's own
server: the caller authenticates with its server token, which needs
``access:services!service=jupyter-mig`` and ``servers!server`` (see
:func:`jupyter_mig.hub.config.configure_hub`).

It validates the size before stopping anything (so a refusal leaves the server running), stops,
starts with the new ``user_options``, follows the hub's progress stream (KubeSpawner relays the
pod's Events there, the controller's included) and goes back to the previous options when the
new server does not come up in time.

API under the service prefix (``/services/jupyter-mig/``):

- ``POST api/restart`` ``{"server_name": "", "gpu_slice": "10gb" | null, "timeout": 600}``
  → 202 and the restart record; 400/403 with a message when the size is refused; 409 when the
  server is not running or a restart is already under way; 429 (with ``Retry-After``) past the
  user's slice changes per period; 503 when the controller is unreachable or the hub runs its
  most restarts at once.  The token needs ``servers!server=<user>/<name>``.
- ``GET api/restart?server_name=`` → the latest restart record of that server, or 404.
- ``GET api/health`` → ``{"ok": true}`` (no authentication).
- ``api/kernels``: kernel pods with their own slices (:mod:`jupyter_mig.hub.kernels`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_mig.api.body import BadBody, Field, parse_body
from jupyter_mig.hub.limits import RateLimiter, check_total
from jupyter_mig.hub.settings import NO_GPU, OPTION, SliceSettings
from jupyter_mig.kernels.contract import KERNELS_PATH
from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.slices.client import CapacityClient
from jupyter_mig.slices.contract import MAX_RESTART_TIMEOUT
from jupyter_mig.slices.errors import SLICE_ERRORS, http_refusal
from jupyter_mig.slices.policy import held_gb, plan_slice

if TYPE_CHECKING:
    from jupyter_mig.hub.kernels import KernelPods

log = logging.getLogger("jupyter_mig.hub.service")

#: The stages a restart goes through, in order (then ``ready``, ``failed`` or ``rolled-back``).
STAGES = ("queued", "repartitioning", "scheduled", "starting", "ready")

#: Kubernetes Event reasons (relayed by KubeSpawner in ``raw_event``) → stage.
EVENT_STAGES = {
    "WaitingForMigCapacity": "queued",
    "FailedScheduling": "queued",
    "MigRepartitioning": "repartitioning",
    "Scheduled": "scheduled",
    "Pulling": "starting",
    "Pulled": "starting",
    "Created": "starting",
    "Started": "starting",
}

MAX_EVENTS = 100
#: The largest request body (a restart request is well under 1 KiB).
MAX_BODY = 16 * 1024
#: tornado HTTPServer settings: bounded bodies and buffers, and connections that send nothing
#: (or headers, or a body, too slowly) are dropped instead of held for tornado's hour.
SERVER_LIMITS: dict[str, Any] = {
    "max_body_size": MAX_BODY,
    "max_buffer_size": 4 * MAX_BODY,
    "body_timeout": 10.0,
    "idle_connection_timeout": 30.0,
}
#: ``POST api/restart``: the fields and their JSON types.
RESTART_FIELDS = {
    "server_name": Field("string"),
    OPTION: Field("string", nullable=True, example="10gb"),
    "timeout": Field("number"),
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_for_event(event: dict[str, Any]) -> str | None:
    """The stage one progress event of the hub shows, or None when it says nothing new."""
    if event.get("ready"):
        return "ready"
    raw = event.get("raw_event")
    if isinstance(raw, dict):
        return EVENT_STAGES.get(str(raw.get("reason", "")))
    return None


class RestartRefused(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Restart:
    """One restart of one server, as the caller's server (and its successor) can read it."""

    user: str
    server: str
    size: str | None  # None: back to no GPU
    previous: dict[str, Any]
    timeout: float
    state: str = "running"  # running, ready, failed, rolled-back
    stage: str = "queued"
    message: str = ""
    stages: list[dict[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    started: str = field(default_factory=now_iso)
    finished: str | None = None

    def __post_init__(self) -> None:
        self.advance("queued", "stopping the server to start it again with the new slice")

    def advance(self, stage: str, message: str) -> None:
        """Move forward (never back) through :data:`STAGES`."""
        if stage in STAGES and (not self.stages or STAGES.index(stage) > STAGES.index(self.stage)):
            self.stage = stage
            self.stages.append({"stage": stage, "at": now_iso(), "message": message})
        self.message = message

    def note(self, message: str) -> None:
        self.events.append(message)
        del self.events[:-MAX_EVENTS]
        self.message = message

    def finish(self, state: str, message: str) -> None:
        self.state = state
        self.finished = now_iso()
        if state == "ready":
            self.advance("ready", message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "server": self.server,
            "size": self.size,
            "previous": self.previous.get(OPTION, NO_GPU),
            "state": self.state,
            "stage": self.stage,
            "message": self.message,
            "stages": list(self.stages),
            "events": list(self.events),
            "started": self.started,
            "finished": self.finished,
        }


class HubApi:
    """The parts of the JupyterHub REST API the restart needs, with the service's own token."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._major: int | None = None

    @staticmethod
    def server_path(user: str, server: str) -> str:
        base = f"users/{quote(user, safe='')}"
        return f"{base}/server" if not server else f"{base}/servers/{quote(server, safe='')}"

    async def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body or None); HTTP errors come back as statuses, never raised."""
        request = HTTPRequest(
            f"{self.api_url}/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body),
            request_timeout=timeout or self.timeout,
            allow_nonstandard_methods=True,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            if err.response is None:
                raise
            return err.code, _json_or_text(err.response.body)
        return response.code, _json_or_text(response.body)

    async def major_version(self) -> int:
        if self._major is None:
            status, data = await self.request("GET", "")
            version = str(data.get("version", "0")) if status == 200 and data else "0"
            self._major = int(version.split(".")[0] or 0)
        return self._major

    async def user(self, name: str) -> dict[str, Any]:
        status, data = await self.request("GET", f"users/{quote(name, safe='')}")
        if status != 200 or not isinstance(data, dict):
            raise RestartRefused(
                502, f"the hub answered {status} for user {name}: {_message(data)}"
            )
        return data

    async def server_state(self, user: str, server: str) -> dict[str, Any] | None:
        """The server's model while it is active (running, starting or stopping), else None."""
        servers = (await self.user(user)).get("servers") or {}
        model = servers.get(server)
        return model if isinstance(model, dict) else None

    async def stop(self, user: str, server: str, timeout: float) -> None:
        status, data = await self.request("DELETE", self.server_path(user, server))
        if status not in (202, 204):
            raise RuntimeError(f"the hub refused to stop the server ({status}: {_message(data)})")
        deadline = time.monotonic() + timeout
        while (state := await self.server_state(user, server)) is not None:
            if state.get("stopped") or (not state.get("pending") and not state.get("ready")):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not stop within {timeout:g} s")
            await asyncio.sleep(0.5)

    async def start(self, user: str, server: str, options: dict[str, Any]) -> int:
        body = {"user_options": options} if await self.major_version() >= 6 else options
        status, data = await self.request("POST", self.server_path(user, server), body)
        if status not in (201, 202):
            raise RuntimeError(f"the hub refused to start the server ({status}: {_message(data)})")
        return status

    async def follow(
        self, user: str, server: str, on_event: Callable[[dict[str, Any]], None], timeout: float
    ) -> bool:
        """Read the progress stream until it ends; True when the server became ready."""
        outcome: dict[str, bool] = {"ready": False}
        buffer = bytearray()

        def chunk(data: bytes) -> None:
            buffer.extend(data)
            while b"\n\n" in buffer:
                block, _, rest = bytes(buffer).partition(b"\n\n")
                buffer[:] = rest
                for line in block.decode("utf-8", "replace").splitlines():
                    if line.startswith("data:"):
                        try:
                            event = json.loads(line[5:])
                        except ValueError:
                            continue
                        if isinstance(event, dict):
                            outcome["ready"] = outcome["ready"] or bool(event.get("ready"))
                            on_event(event)

        request = HTTPRequest(
            f"{self.api_url}/{self.server_path(user, server)}/progress",
            headers={"Authorization": f"token {self.token}"},
            streaming_callback=chunk,
            request_timeout=timeout,
        )
        try:
            await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            if err.code == 599:
                raise TimeoutError(f"no server after {timeout:g} s") from None
            if err.code != 400:  # 400: not pending any more; the state below says how it ended
                raise RuntimeError(f"the hub's progress stream answered {err.code}") from None
        if not outcome["ready"]:
            state = await self.server_state(user, server)
            outcome["ready"] = bool(state and state.get("ready"))
        return outcome["ready"]


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (the code that awaits it may have given up)."""
    if not future.cancelled():
        future.exception()


def _json_or_text(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _message(data: Any) -> str:
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return str(data)[:200]


class Restarter:
    """Validates restart requests and runs each one in the background."""

    def __init__(
        self,
        hub: HubApi,
        settings: SliceSettings,
        capacity: CapacityClient | None = None,
        grace: float = 1.0,
        stop_timeout: float = 120.0,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.capacity = capacity or CapacityClient(settings.controller_url, settings.capacity_ttl)
        self.grace = grace
        self.stop_timeout = stop_timeout
        self.restarts: dict[tuple[str, str], Restart] = {}
        self.changes = RateLimiter(settings.slice_changes_per_period, settings.slice_change_period)
        self._claimed: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def in_flight(self) -> int:
        """Restarts being checked or running, on the whole hub."""
        running = sum(r.state == "running" for r in self.restarts.values())
        return running + len(self._claimed)

    async def request(self, user: str, server: str, size: str | None, timeout: float) -> Restart:
        """Check everything that can be checked while the server still runs, then start.

        The server is claimed before the first ``await``: of concurrent requests for one
        server exactly one gets past here, the others are told a restart is under way.
        """
        key = (user, server)
        current = self.restarts.get(key)
        if key in self._claimed or (current is not None and current.state == "running"):
            raise RestartRefused(409, "a restart of this server is already under way")
        if self.in_flight() >= self.settings.max_concurrent_restarts:
            raise RestartRefused(
                503,
                f"{self.in_flight()} restarts are under way on this hub, the most it runs at "
                "once; try again in a minute",
                retry_after=60.0,
            )
        wait = self.changes.take(user)
        if wait:
            raise RestartRefused(
                429,
                f"you changed GPU slices {self.changes.limit} times within "
                f"{self.changes.period:g} s, the most this hub allows; try again in "
                f"{wait:.0f} s",
                retry_after=wait,
            )
        self._claimed.add(key)
        try:
            restart = await self._checked(user, server, size, timeout)
        except BaseException:
            self.changes.give_back(user)
            raise
        finally:
            self._claimed.discard(key)
        self.restarts[key] = restart
        task = asyncio.ensure_future(self._run(restart))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return restart

    async def _checked(self, user: str, server: str, size: str | None, timeout: float) -> Restart:
        """The restart record, once the hub and the policy agree it may happen."""
        model = await self.hub.user(user)
        servers = model.get("servers") or {}
        state = servers.get(server)
        if not isinstance(state, dict) or not state.get("ready"):
            raise RestartRefused(409, "the server is not running, so there is nothing to restart")
        if size is not None:
            groups = [str(g) for g in model.get("groups") or []]
            policy = self.settings.policy_for(groups)
            try:
                parse_size(size)
                capacity = await self.capacity.get()
                option = plan_slice(size, capacity, policy)
                others = [
                    str((s.get("user_options") or {}).get(OPTION) or NO_GPU)
                    for name, s in servers.items()
                    if name != server
                    and isinstance(s, dict)
                    and (s.get("ready") or s.get("pending"))
                ]
                check_total(
                    self.settings, option, held_gb([o for o in others if o != NO_GPU], capacity)
                )
            except SLICE_ERRORS as err:
                raise RestartRefused(*http_refusal(err)) from None
        previous = state.get("user_options") or {}
        return Restart(user, server, size, dict(previous), timeout)

    def options_for(self, restart: Restart) -> dict[str, Any]:
        return {**restart.previous, OPTION: restart.size or NO_GPU}

    async def _run(self, restart: Restart) -> None:
        try:
            await asyncio.sleep(self.grace)  # let the caller's answer reach its client first
            await self.hub.stop(restart.user, restart.server, self.stop_timeout)
            restart.note("server stopped; starting it with the new slice")
            if await self._start(restart, self.options_for(restart), restart.timeout):
                restart.finish("ready", "the server is running with the new slice")
                return
            reason = "the new server failed to start"
        except (RuntimeError, TimeoutError, OSError, HTTPClientError) as err:
            reason = str(err)
        log.warning("restart of %s/%s: %s", restart.user, restart.server, reason)
        await self._roll_back(restart, reason)

    async def _start(self, restart: Restart, options: dict[str, Any], timeout: float) -> bool:
        """Start the server and follow its spawn; True when it became ready.

        The hub answers the start request only when the spawn is done or after its
        ``slow_spawn_timeout``, so the progress stream is opened as soon as the spawn is
        pending, while that request is still open: KubeSpawner replays the pod's Events from the
        beginning, but only while the spawn is pending.
        """

        def on_event(event: dict[str, Any]) -> None:
            message = str(event.get("message", ""))
            stage = stage_for_event(event)
            if message:
                restart.note(message)
            if stage is not None and stage != "ready":
                restart.advance(stage, message)

        start = asyncio.ensure_future(self.hub.start(restart.user, restart.server, options))
        start.add_done_callback(_retrieved)  # awaited below, unless following fails first
        deadline = time.monotonic() + timeout
        while not start.done():
            state = await self.hub.server_state(restart.user, restart.server)
            if state is not None and state.get("pending") == "spawn":
                break
            if time.monotonic() > deadline:
                start.cancel()
                raise TimeoutError(f"the hub did not start the server within {timeout:g} s")
            await asyncio.wait([start], timeout=0.2)
        if start.done() and await start == 201:
            return True
        remaining = max(deadline - time.monotonic(), 1.0)
        ready = await self.hub.follow(restart.user, restart.server, on_event, remaining)
        await start  # a refused start raises here, with the hub's message
        return ready

    async def _roll_back(self, restart: Restart, reason: str) -> None:
        previous = restart.previous.get(OPTION, NO_GPU)
        restart.note(f"{reason}; going back to the previous slice ({previous})")
        try:
            state = await self.hub.server_state(restart.user, restart.server)
            if state is not None:
                await self.hub.stop(restart.user, restart.server, self.stop_timeout)
            options = {**restart.previous, OPTION: previous}
            if await self._start(restart, options, self.settings.restart_timeout):
                restart.finish("rolled-back", f"{reason}; the server runs again with {previous}")
                return
            restart.finish("failed", f"{reason}; the previous slice did not start either")
        except (RuntimeError, TimeoutError, OSError, HTTPClientError) as err:
            restart.finish("failed", f"{reason}; going back failed too: {err}")

    async def wait_idle(self, timeout: float) -> None:
        """Wait for every restart task (tests and shutdown)."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)


class _Refusal(web.HTTPError):
    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


@web.stream_request_body
class _ApiHandler(web.RequestHandler):
    """Token-authenticated JSON handler: the caller must be a user acting on its own server.

    The body is streamed (:meth:`data_received`) so that :meth:`prepare` checks the token
    before a byte of it is read: a caller without a valid token gets its 401 and the
    connection is closed with the body unread.
    """

    def initialize(self, restarter: Restarter, auth: Any) -> None:
        self.restarter = restarter
        self.auth = auth
        self.caller: dict[str, Any] = {}

    def data_received(self, chunk: bytes) -> None:
        """Collect the body into ``request.body``, as tornado does for non-streaming handlers
        (at most :data:`MAX_BODY`: tornado closes the connection beyond it)."""
        self.request.body += chunk

    def check_xsrf_cookie(self) -> None:
        """Only Authorization-header tokens are accepted (never cookies), so no XSRF to check."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, _Refusal) and exc.retry_after:
            self.set_header("Retry-After", str(math.ceil(exc.retry_after)))
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message or self._reason}))

    def fail(self, status: int, message: str, retry_after: float | None = None) -> web.HTTPError:
        return _Refusal(status, message.replace("%", "%%"), retry_after)

    async def prepare(self) -> None:
        if isinstance(self.request.connection, HTTP1Connection):
            self.request.connection.set_max_body_size(MAX_BODY)  # whatever the server's limit
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            raise self.fail(401, "send the server's API token in the Authorization header")
        model = await self.auth.user_for_token(token.strip(), use_cache=False, sync=False)
        if not model:
            raise self.fail(401, "the hub does not know this token")
        if not self.auth.check_scopes(self.auth.access_scopes, model):
            raise self.fail(
                403,
                f"this token may not use the {self.restarter.settings.service_name} service "
                "(c.Spawner.server_token_scopes needs its access:services scope)",
            )
        if model.get("kind", "user") != "user":
            raise self.fail(403, "only a user's own server can ask for a restart")
        length = self.request.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            raise self.fail(413, f"the body is larger than {MAX_BODY // 1024} KiB")
        self.caller = model

    def server_name(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(400, "server_name must be a string")
        user = str(self.caller["name"])
        from jupyterhub.services.auth import check_scopes

        # Stopping and starting takes what JupyterHub itself asks for: servers!server, not
        # access:servers!server (which only lets a token through the proxy to the server).
        if not check_scopes({f"servers!server={user}/{value}"}, set(self.caller["scopes"])):
            raise self.fail(
                403,
                f"this token may not stop and start the server {user}/{value} (it needs the "
                f"scope servers!server={user}/{value})",
            )
        return value


class RestartHandler(_ApiHandler):
    async def post(self) -> None:
        try:
            body = parse_body(self.request.body, RESTART_FIELDS)
        except BadBody as err:
            raise self.fail(err.status, str(err)) from None
        server = self.server_name(body.get("server_name", ""))
        size = body.get(OPTION)
        if size is not None and not size.strip():
            raise self.fail(400, f"{OPTION} must be a size such as 10gb, or null for no GPU")
        timeout = body.get("timeout", self.restarter.settings.restart_timeout)
        if not 0 < timeout <= MAX_RESTART_TIMEOUT:
            raise self.fail(400, f"timeout must be between 0 and {MAX_RESTART_TIMEOUT:g} seconds")
        try:
            restart = await self.restarter.request(
                str(self.caller["name"]), server, size.strip() if size else None, float(timeout)
            )
        except RestartRefused as err:
            raise self.fail(err.status, str(err), err.retry_after) from None
        self.set_status(202)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(restart.to_json()))

    async def get(self) -> None:
        server = self.server_name(self.get_query_argument("server_name", ""))
        restart = self.restarter.restarts.get((str(self.caller["name"]), server))
        if restart is None:
            raise self.fail(404, "no restart of this server is known")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(restart.to_json()))


class NotFoundHandler(web.RequestHandler):
    """Any other path: a JSON 404, like the API's own errors."""

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": f"no such endpoint: {self.request.path}"}))


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": True}))


def make_app(
    prefix: str, restarter: Restarter, auth: Any, kernels: KernelPods | None = None
) -> web.Application:
    """The service's routes; ``kernels`` adds the kernel pod API (jupyter_mig.hub.kernels)."""
    from jupyter_mig.hub.kernels import KernelsHandler

    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"restarter": restarter, "auth": auth}
    routes: list[Any] = [
        (f"{prefix}api/restart", RestartHandler, args),
        (f"{prefix}api/health", HealthHandler),
    ]
    if kernels is not None:
        kernel_args = {**args, "kernels": kernels}
        routes += [
            (f"{prefix}{KERNELS_PATH}", KernelsHandler, kernel_args),
            (f"{prefix}{KERNELS_PATH}/([^/]+)", KernelsHandler, kernel_args),
        ]
    return web.Application(routes, default_handler_class=NotFoundHandler)

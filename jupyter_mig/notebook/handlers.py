"""REST handlers under ``<base_url>/jupyter-mig/api/`` (docs/notebook.md has the reference).

Every verb is ``@tornado.web.authenticated`` and ``@authorized``; POST and DELETE go through
jupyter_server's XSRF check (cookie-authenticated browsers send the ``_xsrf`` token, kernels and
scripts authenticate with a token and need none).  Restarting needs ``saved: true``: only the
front end knows whether open documents have unsaved changes, so it saves them first and says so;
the server cannot check this and refuses rather than guess.  Request bodies are checked field
by field (:mod:`jupyter_mig.api.body`); every error, an unknown path under the API included, is
JSON ``{"message": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from jupyter_mig.api.body import BadBody, Field, parse_body
from jupyter_mig.kernels.provisioner import GpuSliceProvisioner, KernelPodError
from jupyter_mig.mig.sizes import SizeError, parse_size
from jupyter_mig.notebook.config import JupyterMig
from jupyter_mig.notebook.current import current_slice
from jupyter_mig.notebook.restart import (
    NOT_RESTARTABLE,
    HubRestartClient,
    RestartServiceError,
)
from jupyter_mig.slices.client import CapacityClient
from jupyter_mig.slices.contract import MAX_RESTART_TIMEOUT
from jupyter_mig.slices.errors import SLICE_ERRORS, CapacityError, SliceRefused, http_refusal
from jupyter_mig.slices.policy import (
    Capacity,
    SlicePolicy,
    offered_sizes,
    plan_slice,
    slice_options,
)

NAMESPACE = "jupyter-mig"
SETTINGS_KEY = "jupyter_mig"
#: ``POST slice``: the fields and their JSON types.
SLICE_FIELDS = {
    "size": Field("string", example="10gb"),
    "dry_run": Field("boolean"),
    "saved": Field("boolean"),
    "timeout": Field("number"),
}
#: ``POST kernels/<kernel_id>/slice``: the new size of that kernel.
KERNEL_SLICE_FIELDS = {"size": Field("string", example="20gb")}
#: ``DELETE slice``: query parameters (jupyter_server itself reads ``token`` and ``_xsrf``).
DELETE_PARAMETERS = {"saved", "timeout", "token", "_xsrf"}
_BOOLEANS = {"true": True, "false": False}


@dataclass
class ExtensionState:
    """What the handlers share; built once when the extension loads."""

    config: JupyterMig
    capacity: CapacityClient
    #: The last slice change of each kernel (``kernels/<id>/slice``), by kernel id.
    kernel_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def restart_client(self) -> HubRestartClient | None:
        return HubRestartClient.from_env(
            self.config.service_url, os.environ, self.config.request_timeout
        )


def size_rows(capacity: Capacity, policy: SlicePolicy) -> list[dict[str, Any]]:
    """Every size on the menu with what it would get now, or why it cannot be had here."""
    rows = []
    for size in list(policy.sizes) or offered_sizes(capacity):
        try:
            rows.append(slice_options(size, capacity, policy)[0].to_json())
        except (SizeError, SliceRefused) as err:
            rows.append({"size": size, "status": "unavailable", "reason": str(err)})
    return rows


def _error(status: int, message: str) -> web.HTTPError:
    return web.HTTPError(status, message)


class _Handler(APIHandler):
    auth_resource = "jupyter_mig:slice"

    @property
    def state(self) -> ExtensionState:
        state: ExtensionState = self.settings[SETTINGS_KEY]
        return state

    async def capacity(self) -> Capacity:
        try:
            return await self.state.capacity.get()
        except CapacityError as err:
            raise _error(*http_refusal(err)) from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"message": ...}``: the refusal's own words, else the status's standard phrase."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) else None
        if exc is not None and not isinstance(exc, web.HTTPError):
            message = "internal error; the server's log has the details"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message or self._reason}))

    def body(self, fields: dict[str, Field]) -> dict[str, Any]:
        try:
            return parse_body(self.request.body, fields)
        except BadBody as err:
            raise _error(err.status, str(err)) from None

    def size_in(self, body: dict[str, Any]) -> str:
        size = body.get("size")
        if size is None or not size.strip():
            raise _error(
                400, 'give the size as {"size": "10gb"} (or a profile name such as 1g.10gb)'
            )
        return str(size).strip()

    async def planned(self, size: str) -> dict[str, Any]:
        """What ``size`` would get now under this user's policy, or the refusal."""
        try:
            parse_size(size)
            return plan_slice(size, await self.capacity(), self.state.config.policy).to_json()
        except SLICE_ERRORS as err:
            raise _error(*http_refusal(err)) from None


class CapacityHandler(_Handler):
    auth_resource = "jupyter_mig:capacity"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        capacity = await self.capacity()
        policy = self.state.config.policy
        self.reply(
            {
                "models": capacity.document.get("models", []),
                # Per-GPU layouts when the admin has the controller publish them (the lab
                # panel's grid); null otherwise, and the panel shows the totals.
                "gpus": capacity.document.get("gpus"),
                "generated": capacity.generated,
                "unknown_models": list(capacity.unknown_models),
                "sizes": size_rows(capacity, policy),
                "allowed_sizes": list(policy.sizes),
                "max_size": list(policy.maximum),
            }
        )


class SliceHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        document = current_slice(os.environ)
        client = self.state.restart_client()
        document["restartable"] = client is not None
        self.reply(document)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body(SLICE_FIELDS)
        size = self.size_in(body)
        plan = await self.planned(size)
        if body.get("dry_run", False):
            self.reply({"plan": plan, "current": current_slice(os.environ)["slice"]})
            return
        await self.restart(size, body.get("saved", False), body.get("timeout"))

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        unknown = sorted(set(self.request.query_arguments) - DELETE_PARAMETERS)
        if unknown:
            raise _error(400, f"unknown parameter {unknown[0][:40]!r}; use saved and timeout")
        saved = _BOOLEANS.get(self.get_query_argument("saved", "false"))
        if saved is None:
            raise _error(400, "saved must be true or false")
        timeout = self.get_query_argument("timeout", None)
        try:
            seconds = float(timeout) if timeout is not None else None
        except ValueError:
            raise _error(400, "timeout must be a number of seconds") from None
        await self.restart(None, saved, seconds)

    async def restart(self, size: str | None, saved: bool, timeout: float | None) -> None:
        if not saved:
            raise _error(
                409,
                "the server restarts for a new slice: save open notebooks first and send "
                '"saved": true (the magic, widget and JupyterLab panel do both)',
            )
        if timeout is None:
            timeout = self.state.config.restart_timeout
        if not 0 < timeout <= MAX_RESTART_TIMEOUT:
            raise _error(400, f"timeout must be between 0 and {MAX_RESTART_TIMEOUT:g} seconds")
        client = self.state.restart_client()
        if client is None:
            raise _error(409, NOT_RESTARTABLE)
        try:
            record = await client.restart(size, float(timeout))
        except RestartServiceError as err:
            raise _error(err.status, f"{err}; this server keeps running") from None
        record["spawn_pending_url"] = client.spawn_pending_url
        self.log.info("jupyter-mig: restart with slice %s accepted by the hub", size or "none")
        self.reply(record, 202)


class KernelSliceHandler(_Handler):
    """One kernel's own slice (per-kernel slices, docs/kernels.md): read it, or restart only
    this kernel with another size; the server and its other kernels carry on."""

    def gpu_kernel(self, kernel_id: str) -> tuple[Any, GpuSliceProvisioner | None]:
        if kernel_id not in self.kernel_manager:
            raise _error(404, f"no kernel {kernel_id[:40]} on this server")
        km = self.kernel_manager.get_kernel(kernel_id)
        provisioner = km.provisioner
        return km, provisioner if isinstance(provisioner, GpuSliceProvisioner) else None

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        _, provisioner = self.gpu_kernel(kernel_id)
        pod = (provisioner.pod or {}) if provisioner else {}
        self.reply(
            {
                "kernel_id": kernel_id,
                "gpu_slice": provisioner.size if provisioner else None,
                "profile": pod.get("profile"),
                "phase": pod.get("phase"),
                "change": self.state.kernel_changes.get(kernel_id),
            }
        )

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        size = self.size_in(self.body(KERNEL_SLICE_FIELDS))
        km, provisioner = self.gpu_kernel(kernel_id)
        if provisioner is None:
            raise _error(
                409,
                "this kernel runs inside the server, without a GPU slice of its own: start the "
                'notebook on a "Python 3 · GPU" kernel, or change the server\'s slice',
            )
        plan = await self.planned(size)
        changes = self.state.kernel_changes
        if (changes.get(kernel_id) or {}).get("state") == "running":
            raise _error(409, "this kernel is already restarting with another slice")
        change = {"state": "running", "size": size, "plan": plan, "message": ""}
        changes[kernel_id] = change

        async def restart() -> None:
            try:
                await km.restart_kernel(now=True, gpu_slice=size)
            except (KernelPodError, SizeError, RuntimeError, TimeoutError) as err:
                change.update(state="failed", message=str(err))
                self.log.warning("jupyter-mig: kernel %s with %s: %s", kernel_id, size, err)
            else:
                change.update(state="ready", message=f"the kernel runs with {size}")

        task = asyncio.ensure_future(restart())
        _RESTARTS.add(task)
        task.add_done_callback(_RESTARTS.discard)
        self.reply({"kernel_id": kernel_id, **change}, 202)


#: Kernel restarts under way (kept referenced until they finish).
_RESTARTS: set[asyncio.Task[None]] = set()


class ProgressHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        client = self.state.restart_client()
        if client is None:
            self.reply({"state": "idle", "stage": None, "restartable": False})
            return
        try:
            record = await client.progress()
        except RestartServiceError as err:
            raise _error(err.status, str(err)) from None
        record = record or {"state": "idle", "stage": None}
        record["restartable"] = True
        record["spawn_pending_url"] = client.spawn_pending_url
        self.reply(record)


class NotFoundHandler(_Handler):
    """Any other path under the API: a JSON 404 (for a signed-in caller), not an HTML page."""

    def not_found(self) -> None:
        path = self.request.path
        raise _error(404, f"no such endpoint: {path}; see docs/notebook.md for the API")

    @web.authenticated
    def get(self) -> None:
        self.not_found()

    @web.authenticated
    def post(self) -> None:
        self.not_found()

    @web.authenticated
    def put(self) -> None:
        self.not_found()

    @web.authenticated
    def patch(self) -> None:
        self.not_found()

    @web.authenticated
    def delete(self) -> None:
        self.not_found()


def handlers(base_url: str) -> list[tuple[str, type[APIHandler]]]:
    api = url_path_join(base_url, NAMESPACE, "api")
    return [
        (url_path_join(api, "capacity"), CapacityHandler),
        (url_path_join(api, "slice"), SliceHandler),
        (url_path_join(api, "slice", "progress"), ProgressHandler),
        (url_path_join(api, "kernels", r"([0-9a-f-]{36})", "slice"), KernelSliceHandler),
        (api + "(?:/.*)?", NotFoundHandler),
    ]

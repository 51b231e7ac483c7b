"""Kernel pods for the single-user servers: created by the hub service, never by the servers.

A server's kernel provisioner (:mod:`jupyter_mig.kernels.provisioner`) calls this with the
server's own token; the pod comes from the admin's :class:`KernelPodTemplate`, in the user's
namespace only, for a size the admin allows (the same policy and capacity checks as a server's
slice), and the connection key goes into a Secret that the pod owns.  A pod is only ever read
or deleted for the user and server it was made for.  :meth:`KernelPods.sweep` deletes the pods
(and Secrets) of servers that are no longer running.

API under the service prefix (``/services/jupyter-mig/``), the token needs
``servers!server=<user>/<name>`` as for a restart:

- ``POST api/kernels`` ``{"server_name", "kernel_id", "gpu_slice", "key", "signature_scheme"}``
  → 201 and the kernel pod's state; 400/403 for a size that cannot be had, 409 when the server
  is not running or the kernel exists, 429 past ``max_kernels_per_user``.
- ``GET api/kernels/<kernel_id>?server_name=`` → its state (phase, ip, ports, exit code).
- ``DELETE api/kernels/<kernel_id>?server_name=&grace=`` → 202; the pod and Secret go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tornado.httpclient import HTTPClientError

from jupyter_mig.api.body import BadBody, Field, parse_body
from jupyter_mig.hub.limits import check_total
from jupyter_mig.hub.service import HubApi, RestartRefused, _ApiHandler
from jupyter_mig.hub.settings import NO_GPU, OPTION, SliceSettings
from jupyter_mig.kernels import contract as k
from jupyter_mig.kernels.template import KernelPodTemplate, KernelSlice, TemplateError, safe_slug
from jupyter_mig.kube.client import Kube, KubeError
from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.slices.client import CapacityClient
from jupyter_mig.slices.errors import SLICE_ERRORS, http_refusal
from jupyter_mig.slices.policy import held_gb, plan_slice

log = logging.getLogger("jupyter_mig.hub.kernels")

KERNEL_FIELDS = {
    "server_name": Field("string"),
    "kernel_id": Field("string"),
    OPTION: Field("string", example="10gb"),
    "key": Field("string"),
    "signature_scheme": Field("string"),
    "launch": Field("number"),
}
#: jupyter_client signs messages with HMAC; these digests are accepted.
SIGNATURE_SCHEMES = ("hmac-sha256", "hmac-sha384", "hmac-sha512")
MAX_KEY_LENGTH = 256


def pod_state(pod: dict[str, Any]) -> dict[str, Any]:
    """What the provisioner needs of a kernel pod: phase, address, exit code and why it waits."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "Pending")
    exit_code = None
    message = ""
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" in state:
            exit_code = int(state["terminated"].get("exitCode", 1))
        waiting = state.get("waiting") or {}
        if waiting.get("reason"):
            message = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("message") and not message:
            message = str(condition["message"])
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": phase,
        "ip": status.get("podIP") or None,
        "ports": {
            f"{port['name']}_port": port["containerPort"]
            for container in (pod.get("spec") or {}).get("containers") or []
            if container.get("name") == "kernel"
            for port in container.get("ports") or []
        },
        "size": annotations.get(k.SIZE_ANNOTATION),
        "profile": annotations.get(k.PROFILE_ANNOTATION),
        "exit_code": exit_code,
        "message": message,
    }


def server_gone(status: int, user: Any, server: str) -> bool:
    """Whether the hub's answer about a user (``GET users/<name>``) says the server is gone: the
    user is unknown (404), or the server is neither running nor starting.  Any other answer (an
    error, a hub that cannot be reached) keeps the pod: the sweep never guesses."""
    if status == 404:
        return True
    if status != 200 or not isinstance(user, dict):
        return False
    state = (user.get("servers") or {}).get(server)
    return not (isinstance(state, dict) and (state.get("ready") or state.get("pending")))


def _age(obj: dict[str, Any], now: float) -> float:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return 0.0
    return now - datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()


class KernelPods:
    """Creates, reads, deletes and sweeps kernel pods through :class:`Kube`."""

    def __init__(
        self,
        template: KernelPodTemplate,
        settings: SliceSettings,
        hub: HubApi,
        capacity: CapacityClient,
        kube: Kube | None,
    ) -> None:
        self.template = template
        self.settings = settings
        self.hub = hub
        self.capacity = capacity
        self.kube = kube

    def _kube(self) -> Kube:
        if not self.template.enabled or self.kube is None:
            raise RestartRefused(
                501,
                "per-kernel GPU slices are off on this hub (the admin sets "
                "c.KernelPodTemplate.namespace and image)",
            )
        return self.kube

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self._kube().request, method, path, **kwargs)
        except KubeError as err:
            if err.status in (404, 409):
                raise
            raise RestartRefused(
                502, f"the Kubernetes API refused {method} {path}: {err}"
            ) from None

    def _paths(self, user: str, kernel_id: str) -> tuple[str, str]:
        try:
            name = k.kernel_object_name(kernel_id)
        except k.KernelIdError as err:
            raise RestartRefused(400, str(err)) from None
        self._kube()
        try:
            namespace = self.template.namespace_for(user)
        except TemplateError as err:
            raise RestartRefused(500, f"the hub's kernel pod template: {err}") from None
        base = f"/api/v1/namespaces/{namespace}"
        return f"{base}/pods/{name}", f"{base}/secrets/{name}"

    async def _user_pods(self, user: str) -> list[dict[str, Any]]:
        namespace = self.template.namespace_for(user)
        selector = f"{k.KERNEL_SELECTOR},{k.USER_LABEL}={safe_slug(user)}"
        listed = await self._call(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector}
        )
        return [
            p
            for p in listed.get("items") or []
            if (p["metadata"].get("annotations") or {}).get(k.USER_ANNOTATION) == user
            and not p["metadata"].get("deletionTimestamp")
        ]

    async def _plan(self, user: str, server: str, size: str) -> KernelSlice:
        """The slice a kernel of this user's running server gets, or a refusal."""
        model = await self.hub.user(user)
        servers = model.get("servers") or {}
        state = servers.get(server)
        if not isinstance(state, dict) or not state.get("ready"):
            raise RestartRefused(409, f"the server {user}/{server} is not running")
        pods = await self._user_pods(user)
        if len(pods) >= self.template.max_kernels_per_user:
            raise RestartRefused(
                429,
                f"you have {len(pods)} kernels with GPU slices, the most this hub allows; "
                "shut one down first",
            )
        policy = self.settings.policy_for(str(g) for g in model.get("groups") or [])
        try:
            parse_size(size)
            capacity = await self.capacity.get()
            option = plan_slice(size, capacity, policy)
            held = [
                str((s.get("user_options") or {}).get(OPTION) or NO_GPU)
                for s in servers.values()
                if isinstance(s, dict) and (s.get("ready") or s.get("pending"))
            ]
            held += [str(p["metadata"]["annotations"].get(k.SIZE_ANNOTATION)) for p in pods]
            check_total(self.settings, option, held_gb([h for h in held if h != NO_GPU], capacity))
        except SLICE_ERRORS as err:
            raise RestartRefused(*http_refusal(err)) from None
        return KernelSlice(option.size, option.profile, option.resource, option.products)

    async def create(
        self,
        user: str,
        server: str,
        kernel_id: str,
        size: str,
        key: str,
        scheme: str,
        launch: int = 0,
    ) -> dict[str, Any]:
        """Create the pod, then its Secret owned by it (the kubelet waits for the Secret); a
        Secret that cannot be created takes the pod with it, so nothing is left half-made."""
        pod_path, _ = self._paths(user, kernel_id)
        if scheme not in SIGNATURE_SCHEMES:
            raise RestartRefused(
                400, f"signature_scheme must be one of {', '.join(SIGNATURE_SCHEMES)}"
            )
        if not key or len(key) > MAX_KEY_LENGTH:
            raise RestartRefused(400, f"key must be 1 to {MAX_KEY_LENGTH} characters")
        chosen = await self._plan(user, server, size)
        try:
            pod, secret = self.template.render(user, server, kernel_id, chosen, key, scheme, launch)
        except TemplateError as err:
            raise RestartRefused(500, f"the hub's kernel pod template: {err}") from None
        base = pod_path.rsplit("/pods/", 1)[0]
        try:
            created = await self._call("POST", f"{base}/pods", body=pod)
        except KubeError as err:
            if err.status == 409:
                raise RestartRefused(409, f"kernel {kernel_id} exists already") from None
            raise RestartRefused(
                500,
                f"the kernel pod cannot be created in namespace {pod['metadata']['namespace']} "
                f"({err.message}); ask the hub admin to check c.KernelPodTemplate.namespace",
            ) from None
        meta = created["metadata"]
        secret["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
        ]
        try:
            await self._call("POST", f"{base}/secrets", body=secret)
        except (KubeError, RestartRefused) as err:
            await self._delete_quietly(pod_path, 0)
            raise RestartRefused(502, f"the kernel's Secret was not created: {err}") from None
        log.info(
            "%s/%s: kernel pod %s with %s (%s)", user, server, meta["name"], size, chosen.profile
        )
        return pod_state(created)

    async def _owned(self, user: str, server: str, kernel_id: str) -> dict[str, Any]:
        pod_path, _ = self._paths(user, kernel_id)
        pod = await asyncio.to_thread(self._kube().get, pod_path)
        if pod is None:
            raise RestartRefused(404, f"no kernel pod {k.kernel_object_name(kernel_id)}")
        annotations = pod["metadata"].get("annotations") or {}
        if (annotations.get(k.USER_ANNOTATION), annotations.get(k.SERVER_ANNOTATION)) != (
            user,
            server,
        ):
            raise RestartRefused(403, f"kernel {kernel_id} belongs to another server")
        return pod

    async def state(self, user: str, server: str, kernel_id: str) -> dict[str, Any]:
        return pod_state(await self._owned(user, server, kernel_id))

    async def delete(self, user: str, server: str, kernel_id: str, grace: int) -> None:
        await self._owned(user, server, kernel_id)
        pod_path, secret_path = self._paths(user, kernel_id)
        await self._delete_quietly(pod_path, grace)
        await self._delete_quietly(secret_path, 0)

    async def _delete_quietly(self, path: str, grace: int) -> None:
        """Delete; what is gone already is fine (idempotent)."""
        try:
            await self._call(
                "DELETE",
                path,
                body={"gracePeriodSeconds": grace, "propagationPolicy": "Background"},
            )
        except KubeError as err:
            if err.status != 404:
                raise

    def _sweep_path(self, kind: str) -> str:
        if "{" in self.template.namespace:
            return f"/api/v1/{kind}"
        return f"/api/v1/namespaces/{self.template.namespace}/{kind}"

    async def sweep(self) -> list[str]:
        """Delete kernel pods (and their Secrets) of servers that are not running, once older
        than ``stale_after``; a pod whose server runs is never touched.  The names deleted."""
        now = time.time()
        query = {"labelSelector": k.KERNEL_SELECTOR}
        pods = (await self._call("GET", self._sweep_path("pods"), query=query)).get("items") or []
        gone: dict[tuple[str, str], bool] = {}
        deleted = []
        for pod in pods:
            meta = pod["metadata"]
            annotations = meta.get("annotations") or {}
            owner = (
                annotations.get(k.USER_ANNOTATION, ""),
                annotations.get(k.SERVER_ANNOTATION, ""),
            )
            if meta.get("deletionTimestamp") or _age(pod, now) < self.template.stale_after:
                continue
            if owner not in gone:
                user_path = f"users/{quote(owner[0], safe='')}"
                gone[owner] = server_gone(*await self.hub.request("GET", user_path), owner[1])
            if gone[owner]:
                base = f"/api/v1/namespaces/{meta['namespace']}"
                await self._delete_quietly(f"{base}/pods/{meta['name']}", 0)
                await self._delete_quietly(f"{base}/secrets/{meta['name']}", 0)
                deleted.append(f"{meta['namespace']}/{meta['name']}")
        if deleted:
            log.info("swept stale kernel objects: %s", ", ".join(deleted))
        return deleted

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except (RestartRefused, KubeError, OSError, HTTPClientError) as err:
                log.warning("sweeping stale kernel pods: %s", err)
            await asyncio.sleep(self.template.sweep_interval)


class KernelsHandler(_ApiHandler):
    """``POST api/kernels`` and ``GET``/``DELETE api/kernels/<kernel_id>``."""

    def initialize(self, restarter: Any, auth: Any, kernels: KernelPods) -> None:  # type: ignore[override]
        super().initialize(restarter, auth)
        self.kernels = kernels

    def answer(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    async def post(self, kernel_id: str = "") -> None:
        if kernel_id:
            raise self.fail(405, "POST to api/kernels, without a kernel id")
        try:
            body = parse_body(self.request.body, KERNEL_FIELDS)
            for name in ("kernel_id", OPTION, "key"):
                if name not in body:
                    raise BadBody(f"{name} is required")
        except BadBody as err:
            raise self.fail(err.status, str(err)) from None
        server = self.server_name(body.get("server_name", ""))
        launch = body.get("launch", 0)
        if not isinstance(launch, int) or not 0 <= launch < 2**31:
            raise self.fail(400, "launch must be a whole number from 0 (this kernel's starts)")
        try:
            state = await self.kernels.create(
                str(self.caller["name"]),
                server,
                body["kernel_id"],
                body[OPTION].strip(),
                body["key"],
                body.get("signature_scheme", "hmac-sha256"),
                launch,
            )
        except RestartRefused as err:
            raise self.fail(err.status, str(err), err.retry_after) from None
        self.answer(201, state)

    async def get(self, kernel_id: str = "") -> None:
        server = self.server_name(self.get_query_argument("server_name", ""))
        try:
            self.answer(200, await self.kernels.state(str(self.caller["name"]), server, kernel_id))
        except RestartRefused as err:
            raise self.fail(err.status, str(err)) from None

    async def delete(self, kernel_id: str = "") -> None:
        server = self.server_name(self.get_query_argument("server_name", ""))
        grace = self.get_query_argument(
            "grace", str(self.kernels.template.termination_grace_seconds)
        )
        if not grace.isdigit() or int(grace) > 300:
            raise self.fail(400, "grace must be 0 to 300 seconds")
        try:
            await self.kernels.delete(str(self.caller["name"]), server, kernel_id, int(grace))
        except RestartRefused as err:
            raise self.fail(err.status, str(err)) from None
        self.answer(202, {"deleted": k.kernel_object_name(kernel_id)})

"""The ``jupyter_client`` kernel provisioner that runs a kernel in its own pod with a MIG slice.

The single-user server never creates pods: the provisioner asks the hub service
(:mod:`jupyter_mig.hub.kernels`) with the server's own token, waits until the pod runs, and
connects to it on the ports the pod was made with (``contract.kernel_ports``, a new set each
launch).  The kernel's session key goes along in that request and reaches the pod only as a
Secret.

The size comes from the kernel spec (``metadata.kernel_provisioner.config.gpu_slice``), and a
launch may override it (``start_kernel(gpu_slice="20gb")``, or ``restart_kernel`` with it): the
override is kept for later restarts, as jupyter_client keeps every launch argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any
from urllib.parse import quote, urlencode

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import HTTPError
from traitlets import Float, Unicode

from jupyter_mig.kernels.contract import KERNELS_PATH, PORT_NAMES
from jupyter_mig.mig.sizes import SizeError, parse_size
from jupyter_mig.slices.contract import SERVICE_URL_ENV

#: The kernel spec / launch argument that carries the size.
OPTION = "gpu_slice"
#: Pod phases after which the kernel is gone.
ENDED = ("Succeeded", "Failed")


class KernelPodError(HTTPError):
    """The hub service refused the kernel, or its pod did not come up (one clear line).

    An HTTP error, so that jupyter_server shows the user this message (with the hub service's
    status for a refusal) instead of "Unhandled error".
    """

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(status, message.replace("%", "%%"))
        self.message = message

    def __str__(self) -> str:
        return self.message


class KernelService:
    """The hub service's kernel API, called with this server's own token."""

    def __init__(self, url: str, token: str, server: str, timeout: float = 30.0) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.server = server
        self.timeout = timeout

    @staticmethod
    def from_environment() -> KernelService:
        url, token = os.environ.get(SERVICE_URL_ENV, ""), os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not url or not token:
            raise KernelPodError(
                f"GPU kernels need ${SERVICE_URL_ENV} and $JUPYTERHUB_API_TOKEN: start this "
                "server from a JupyterHub configured with jupyter_mig.hub.configure_hub"
            )
        return KernelService(url, token, os.environ.get("JUPYTERHUB_SERVER_NAME", ""))

    async def _call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        query = {"server_name": self.server, **(query or {})} if method != "POST" else {}
        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            if err.response is None:
                raise KernelPodError(
                    f"the hub service at {self.url} did not answer: {err}"
                ) from None
            response = err.response
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:  # e.g. a proxy's HTML error page
            data = response.body[:200].decode("utf-8", "replace")
        return response.code, data

    async def create(
        self, kernel_id: str, size: str, key: str, scheme: str, launch: int = 0
    ) -> dict[str, Any]:
        body = {
            "launch": launch,
            "server_name": self.server,
            "kernel_id": kernel_id,
            OPTION: size,
            "key": key,
            "signature_scheme": scheme,
        }
        status, data = await self._call("POST", KERNELS_PATH, body)
        if status != 201:
            # The user's own refusals keep their status; anything else (this server's token
            # refused, the service failing) is the server's gateway failing: 502.
            status = status if status in (400, 403, 409, 429) else 502
            raise KernelPodError(f"no GPU kernel with {size}: {_message(data)}", status)
        return dict(data)

    async def state(self, kernel_id: str) -> dict[str, Any] | None:
        """The pod's state, or None when it is gone."""
        status, data = await self._call("GET", f"{KERNELS_PATH}/{quote(kernel_id)}")
        if status == 404:
            return None
        if status != 200:
            raise KernelPodError(f"cannot read the kernel pod: {_message(data)}")
        return dict(data)

    async def delete(self, kernel_id: str, grace: int | None = None) -> None:
        query = {} if grace is None else {"grace": str(grace)}
        status, data = await self._call("DELETE", f"{KERNELS_PATH}/{quote(kernel_id)}", query=query)
        if status not in (202, 404):
            raise KernelPodError(f"cannot delete the kernel pod: {_message(data)}")


def _message(data: Any) -> str:
    return str(data.get("message")) if isinstance(data, dict) else str(data)[:200]


class GpuSliceProvisioner(KernelProvisionerBase):
    """A kernel in its own pod with a GPU slice of ``gpu_slice`` (docs/kernels.md)."""

    gpu_slice = Unicode("", help="The kernel's slice size (10gb, 2g, 1g.10gb, ...).").tag(
        config=True
    )
    launch_timeout = Float(
        600.0, help="Seconds a kernel pod may take to run (the slice may have to be carved)."
    ).tag(config=True)
    poll_interval = Float(1.0, help="Seconds between looks at a starting or stopping pod.").tag(
        config=True
    )

    service: KernelService | None = None
    #: The pod's last known state (None: no pod).
    pod: dict[str, Any] | None = None
    size = ""
    #: Pods started for this kernel so far (each launch gets its own set of ports).
    launches = 0
    _polled = 0.0

    def _service(self) -> KernelService:
        if self.service is None:
            self.service = KernelService.from_environment()
        return self.service

    @property
    def has_process(self) -> bool:
        return self.pod is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check the size here, before anything is asked of the hub."""
        size = str(kwargs.pop(OPTION, None) or self.gpu_slice)
        try:
            parse_size(size)
        except SizeError as err:  # one clear line, before anything is asked of the hub
            raise KernelPodError(str(err), 400) from None
        self.size = size
        kwargs.pop("extra_arguments", None)
        for name in PORT_NAMES:  # so that the kernel manager takes the new pod's ports
            setattr(self.parent, name, 0)
        return await super().pre_launch(cmd=list(self.kernel_spec.argv), **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        session = self.parent.session  # type: ignore[union-attr]  # the KernelManager
        key = session.key.decode() if isinstance(session.key, bytes) else str(session.key)
        service = self._service()
        self.pod = await service.create(
            self.kernel_id, self.size, key, session.signature_scheme, self.launches
        )
        self.launches += 1
        try:
            await self._until_running(service)
        except BaseException:  # a launch that fails leaves no pod behind
            with contextlib.suppress(KernelPodError):
                await self.cleanup()
            raise
        ports = self.pod["ports"]
        self.connection_info = {
            "shell_port": ports["shell_port"],
            "iopub_port": ports["iopub_port"],
            "stdin_port": ports["stdin_port"],
            "control_port": ports["control_port"],
            "hb_port": ports["hb_port"],
            "ip": self.pod["ip"],
            "transport": "tcp",
            "key": session.key,
            "signature_scheme": session.signature_scheme,
            "kernel_name": getattr(self.parent, "kernel_name", ""),
        }
        self.log.info(
            "kernel %s runs in pod %s with %s",
            self.kernel_id,
            self.pod.get("name"),
            self.pod.get("profile"),
        )
        return self.connection_info

    async def _until_running(self, service: KernelService) -> None:
        """Follow the new pod until it runs with an address; one clear error otherwise."""
        deadline = time.monotonic() + self.launch_timeout
        said = ""
        pod: dict[str, Any] = self.pod or {}
        while pod.get("phase") != "Running" or not pod.get("ip"):
            if pod.get("phase") in ENDED or time.monotonic() > deadline:
                reason = pod.get("message") or f"phase {pod.get('phase')}"
                limit = f"within {self.launch_timeout:g} s"
                raise KernelPodError(f"the {self.size} kernel pod did not run {limit}: {reason}")
            if pod.get("message") and pod["message"] != said:
                said = pod["message"]
                self.log.info("kernel %s (%s): %s", self.kernel_id, self.size, said)
            await asyncio.sleep(self.poll_interval)
            state = await service.state(self.kernel_id)
            pod = state if state is not None else {"phase": "Failed", "message": "deleted"}
            self.pod = pod

    async def poll(self) -> int | None:
        """None while the pod runs (or the hub service cannot say), else its exit code."""
        if self.pod is None:
            return 0
        if time.monotonic() - self._polled >= self.poll_interval:
            self._polled = time.monotonic()
            try:
                state = await self._service().state(self.kernel_id)
            except KernelPodError as err:
                self.log.warning("kernel %s: %s", self.kernel_id, err)
                return None
            self.pod = state if state is not None else {**self.pod, "phase": "Gone"}
        phase = self.pod.get("phase")
        if phase in ENDED or phase == "Gone":
            code = self.pod.get("exit_code")
            return int(code) if code is not None else (0 if phase == "Succeeded" else 1)
        return None

    async def wait(self) -> int | None:
        """Until the pod has ended or is gone (at most its grace and a minute)."""
        deadline = time.monotonic() + 60.0
        while (code := await self.poll()) is None and time.monotonic() < deadline:
            await asyncio.sleep(self.poll_interval)
        return code

    async def send_signal(self, signum: int) -> None:
        """SIGKILL and SIGTERM end the pod; interrupts go as messages (the specs say so)."""
        if signum == signal.SIGKILL:
            await self.kill()
        elif signum == signal.SIGTERM:
            await self.terminate()
        elif signum != 0:
            self.log.warning(
                "kernel %s runs in a pod: signal %d is not delivered (interrupt_mode "
                "'message' interrupts it)",
                self.kernel_id,
                signum,
            )

    async def kill(self, restart: bool = False) -> None:
        if self.pod is not None:
            await self._service().delete(self.kernel_id, grace=0)

    async def terminate(self, restart: bool = False) -> None:
        if self.pod is not None:
            await self._service().delete(self.kernel_id)

    async def cleanup(self, restart: bool = False) -> None:
        """Delete the pod and wait until it is gone: a restart reuses its name."""
        if self.pod is None:
            return
        service = self._service()
        await service.delete(self.kernel_id, grace=0)
        deadline = time.monotonic() + 60.0
        while await service.state(self.kernel_id) is not None:
            if time.monotonic() > deadline:
                raise KernelPodError(f"the kernel pod of {self.kernel_id} did not go within 60 s")
            await asyncio.sleep(self.poll_interval)
        self.pod = None

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update({"pod": self.pod, OPTION: self.size, "launches": self.launches})
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.pod = provisioner_info.get("pod")
        self.size = str(provisioner_info.get(OPTION) or self.gpu_slice)
        self.launches = int(provisioner_info.get("launches") or 0)

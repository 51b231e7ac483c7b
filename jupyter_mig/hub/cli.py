"""``jupyter-mig hub-service``: the restart service, run by JupyterHub as a managed service.

JupyterHub passes ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_URL``
(where to listen), ``JUPYTERHUB_SERVICE_PREFIX`` and ``JUPYTERHUB_SERVICE_NAME``;
:func:`jupyter_mig.hub.config.configure_hub` adds the settings as JSON.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit

from jupyter_mig.errors import UserError

#: Names the hub service in managedFields of the kernel pods and Secrets it creates.
KERNEL_FIELD_MANAGER = "jupyter-mig-hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on (default: host and port of $JUPYTERHUB_SERVICE_URL; "
        "use 0.0.0.0:PORT when single-user servers reach the service from other pods)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=1.0,
        help="seconds between accepting a restart and stopping the server (default 1)",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="Kubernetes credentials for kernel pods (default: in-cluster, else ~/.kube/config); "
        "used only when the hub sets c.KernelPodTemplate",
    )


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise UserError(f"${name} is not set: run this as a JupyterHub managed service")
    return value


def _listen_address(listen: str | None) -> tuple[str, int]:
    if listen:
        host, _, port = listen.rpartition(":")
    else:
        parts = urlsplit(_env("JUPYTERHUB_SERVICE_URL"))
        host, port = parts.hostname or "127.0.0.1", str(parts.port or 80)
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise UserError(f"cannot read a port in {listen!r}; use HOST:PORT, e.g. 0.0.0.0:10101")
    return host or "0.0.0.0", int(port)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from jupyterhub.services.auth import HubAuth

    from jupyter_mig.hub.kernels import KernelPods
    from jupyter_mig.hub.service import SERVER_LIMITS, HubApi, Restarter, make_app
    from jupyter_mig.hub.settings import SETTINGS_ENV, SliceSettings
    from jupyter_mig.kernels.template import TEMPLATE_ENV, KernelPodTemplate
    from jupyter_mig.kube.client import Kube, new_api_client

    if not 0 <= args.grace <= 60:
        raise UserError(f"--grace {args.grace:g}: expected 0 to 60 seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = SliceSettings.from_json(_env(SETTINGS_ENV))
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"${SETTINGS_ENV} is not valid settings JSON: {err}") from None
    host, port = _listen_address(args.listen)
    token = _env("JUPYTERHUB_API_TOKEN")
    api_url = _env("JUPYTERHUB_API_URL")
    auth = HubAuth(api_token=token, api_url=api_url)
    try:
        template = KernelPodTemplate.from_json(os.environ.get(TEMPLATE_ENV) or "{}")
    except (ValueError, TypeError) as err:
        raise UserError(f"${TEMPLATE_ENV} is not a valid kernel pod template: {err}") from None
    restarter = Restarter(HubApi(api_url, token), settings, grace=args.grace)
    kube = None
    if template.enabled:
        kube = Kube(new_api_client(args.kubeconfig), field_manager=KERNEL_FIELD_MANAGER)
    kernels = KernelPods(template, settings, restarter.hub, restarter.capacity, kube)
    app = make_app(os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"), restarter, auth, kernels)

    async def serve() -> None:
        server = app.listen(port, address=host, **SERVER_LIMITS)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger("jupyter_mig.hub.service").info("listening on %s:%d", host, port)
        sweep = asyncio.ensure_future(kernels.sweep_forever()) if kube else None
        await stop.wait()
        if sweep is not None:
            sweep.cancel()
        server.stop()

    asyncio.run(serve())
    return 0

"""``jupyter-mig controller``: the in-cluster controller process."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

from jupyter_mig.controller.settings import add_flags, from_flags
from jupyter_mig.errors import UserError
from jupyter_mig.kube.options import add_kubeconfig_argument


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_argument(parser)
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("0.0.0.0", 8080),
        metavar="HOST:PORT",
        help="address of /healthz, /readyz, /metrics and /api/v1/capacity (default 0.0.0.0:8080)",
    )
    add_flags(parser)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="least severe log messages shown",
    )


def _api_client(kubeconfig: str | None) -> Any:
    from jupyter_mig.kube.client import new_api_client

    if kubeconfig and not Path(kubeconfig).is_file():
        raise UserError(f"--kubeconfig {kubeconfig}: no such file")
    return new_api_client(kubeconfig)


def run(args: argparse.Namespace) -> int:
    from jupyter_mig.api import constants as c
    from jupyter_mig.api.cluster import require_crds
    from jupyter_mig.controller.http import Endpoints, HttpServer
    from jupyter_mig.controller.manager import Controller
    from jupyter_mig.kube.client import TRANSPORT_ERRORS, Kube

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.leader_elect and not 0 < args.renew_deadline < args.lease_duration:
        raise UserError("--renew-deadline must be shorter than --lease-duration (e.g. 10s < 15s)")
    api_client = _api_client(args.kubeconfig)
    try:
        require_crds(api_client)
    except TRANSPORT_ERRORS as err:
        host = api_client.configuration.host
        raise UserError(f"cannot reach the Kubernetes API server at {host}: {err}") from None
    settings = from_flags(args)
    controller = Controller(Kube(api_client, c.CONTROLLER_FIELD_MANAGER), settings)
    host, port = args.listen
    try:
        server = HttpServer(
            host,
            port,
            Endpoints(
                controller.metrics.registry,
                controller.healthy,
                controller.ready,
                controller.capacity_document,
            ),
        )
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror}") from None

    def _stop(signum: int, frame: object) -> None:
        controller.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    logging.getLogger("jupyter_mig.controller").info(
        "controller %s serving on http://%s:%d%s",
        settings.identity,
        host,
        server.port,
        " (leader election on)" if args.leader_elect else "",
    )
    try:
        controller.run_until_stopped()
    finally:
        controller.stop()
        server.stop()
    return 0

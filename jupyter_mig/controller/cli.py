"""``jupyter-mig controller``: the in-cluster controller process."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

from jupyter_mig.errors import UserError
from jupyter_mig.kube.options import add_kubeconfig_argument

_DURATION = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def duration(text: str) -> float:
    """``2s``, ``500ms``, ``1.5m``, ``1h`` or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2s, 500ms, 5m)")
    return float(match["value"]) * _UNITS[match["unit"] or "s"]


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


def namespace_list(text: str) -> tuple[str, ...]:
    """``jhub,research`` → ``("jhub", "research")``; each a namespace name or ``*``."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name != "*" and not _NAMESPACE.match(name):
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a namespace name (lower-case letters, digits and '-')"
            )
    return names


def _default_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_argument(parser)
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("0.0.0.0", 8080),
        metavar="HOST:PORT",
        help="address of /healthz, /readyz, /metrics and /api/v1/capacity (default 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--batch-idle",
        type=duration,
        default=2.0,
        metavar="DURATION",
        help="plan new batch pods once none has arrived for this long (default 2s)",
    )
    parser.add_argument(
        "--batch-max",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="...but no later than this after the first arrived (default 10s)",
    )
    parser.add_argument(
        "--resync",
        type=duration,
        default=300.0,
        metavar="DURATION",
        help="list everything again this often, besides watching (default 5m)",
    )
    parser.add_argument(
        "--inflight-timeout",
        type=duration,
        default=300.0,
        metavar="DURATION",
        help="how long pods wait for a node that is applying a layout carved for them before "
        "they are planned elsewhere (default 5m)",
    )
    parser.add_argument(
        "--interactive-namespaces",
        type=namespace_list,
        default=(),
        metavar="NS,NS",
        help="namespaces whose pods may claim interactive priority (the hub's); elsewhere the "
        "component=singleuser-server label and the jupyter-mig.io/interactive annotation are "
        "ignored; '*' trusts every namespace (default: none)",
    )
    parser.add_argument(
        "--watch-namespaces",
        type=namespace_list,
        default=(),
        metavar="NS,NS",
        help="serve pods in these namespaces only, with read access to no others "
        "(default: the whole cluster)",
    )
    parser.add_argument(
        "--capacity-detail",
        action="store_true",
        help="publish per-GPU layouts (node names, which slices are in use) in the capacity "
        "API, for the JupyterLab slice grid; by default it gives counts per model and profile "
        "only (docs/security.md)",
    )
    election = parser.add_argument_group("leader election")
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="run several replicas; only the holder of the Lease plans",
    )
    election.add_argument(
        "--lease-name",
        default="jupyter-mig-controller",
        help="the coordination.k8s.io Lease the replicas compete for",
    )
    election.add_argument(
        "--lease-namespace",
        default=None,
        help="default: $POD_NAMESPACE, else the service account's namespace, else default",
    )
    election.add_argument(
        "--lease-duration",
        type=duration,
        default=15.0,
        metavar="DURATION",
        help="how long a Lease holds without renewal before another replica takes over "
        "(default 15s)",
    )
    election.add_argument(
        "--renew-deadline",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="the leader stops planning when it could not renew for this long (default 10s)",
    )
    election.add_argument(
        "--retry-period",
        type=duration,
        default=2.0,
        metavar="DURATION",
        help="how often replicas try to acquire or renew the Lease (default 2s)",
    )
    election.add_argument(
        "--identity", default=None, help="this replica's name in the Lease (default: host + id)"
    )
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
    from jupyter_mig.controller.manager import Controller, Settings
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
    identity = args.identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        batch_idle=args.batch_idle,
        batch_max=args.batch_max,
        resync=args.resync,
        inflight_timeout=args.inflight_timeout,
        leader_elect=args.leader_elect,
        identity=identity,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace or _default_namespace(),
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        interactive_namespaces=args.interactive_namespaces,
        watch_namespaces=args.watch_namespaces,
        capacity_detail=args.capacity_detail,
    )
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
        identity,
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

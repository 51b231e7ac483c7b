"""``jupyter-mig agent``: the node agent (one per opted-in node, e.g. a DaemonSet)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from jupyter_mig.errors import UserError
from jupyter_mig.kube.options import add_kubeconfig_argument

KUBELET_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SIM_SOCKET = "pod-resources.sock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_argument(parser)
    parser.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME"),
        help="this node's name, also its MigNode's name (default: $NODE_NAME)",
    )
    parser.add_argument(
        "--nvml",
        default="real",
        metavar="real|sim:DIR",
        help="NVML backend: the GPUs of this machine, or a sim node's state directory",
    )
    parser.add_argument(
        "--pod-resources-socket",
        metavar="PATH",
        help=f"kubelet pod-resources socket (default: {KUBELET_SOCKET}, or DIR/{SIM_SOCKET})",
    )
    parser.add_argument(
        "--device-plugin-refresh",
        choices=["pod", "signal", "sim"],
        default=None,
        help="make the device plugin re-read NVML by deleting its pod (pod), by sending its "
        "process SIGHUP (signal; needs hostPID) or through a sim node (sim); default: pod, "
        "or sim with --nvml sim:DIR",
    )
    parser.add_argument(
        "--device-plugin-namespace",
        default="gpu-operator",
        help="namespace of the NVIDIA device-plugin pods (real nodes)",
    )
    parser.add_argument(
        "--device-plugin-selector",
        default="app=nvidia-device-plugin-daemonset",
        help="label selector of the NVIDIA device-plugin pods (real nodes)",
    )
    parser.add_argument(
        "--device-plugin-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the device plugin to advertise a new layout",
    )
    parser.add_argument(
        "--resync", type=float, default=5.0, metavar="SECONDS", help="periodic full reconcile"
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait between retries after NVML or API errors",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve /healthz and /metrics on this port (default 0: off)",
    )
    parser.add_argument("--health-host", default="0.0.0.0", help="address for --health-port")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")


def _check(args: argparse.Namespace) -> None:
    if not args.node:
        raise UserError("--node is required (or set $NODE_NAME to this node's name)")
    if args.nvml != "real" and not (args.nvml.startswith("sim:") and len(args.nvml) > 4):
        raise UserError(f"--nvml {args.nvml!r}: expected 'real' or 'sim:DIR'")
    for name in ("resync", "device_plugin_timeout", "max_backoff"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if not 0 <= args.health_port <= 65535:
        raise UserError(f"--health-port {args.health_port}: expected 0 (off) to 65535")


def run(args: argparse.Namespace) -> int:
    _check(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from kubernetes import client

    from jupyter_mig.agent.devices import (
        PodRefresher,
        PodResourcesView,
        SignalRefresher,
        SimRefresher,
    )
    from jupyter_mig.agent.health import Heartbeat, serve_health
    from jupyter_mig.agent.kube import MigNodeClient, MigNodeWatcher
    from jupyter_mig.agent.metrics import AgentMetrics
    from jupyter_mig.agent.reconcile import DevicePluginRefresher, Reconciler
    from jupyter_mig.agent.runner import Agent, LazyNvml
    from jupyter_mig.api import constants as c
    from jupyter_mig.api.cluster import require_crds
    from jupyter_mig.kube.client import TRANSPORT_ERRORS, Kube, new_api_client
    from jupyter_mig.nvml import open_backend
    from jupyter_mig.nvml.simgpu import ENV_DIR

    api_client = new_api_client(args.kubeconfig)
    kube = Kube(api_client, c.AGENT_FIELD_MANAGER)
    try:
        require_crds(api_client)
    except TRANSPORT_ERRORS as err:
        host = getattr(getattr(api_client, "configuration", None), "host", "?")
        raise UserError(f"cannot reach the Kubernetes API server at {host}: {err}") from None
    refresher: DevicePluginRefresher
    sim_dir = Path(args.nvml[4:]) if args.nvml != "real" else None
    if sim_dir is None:
        socket = args.pod_resources_socket or KUBELET_SOCKET
    else:
        socket = args.pod_resources_socket or str(sim_dir / SIM_SOCKET)
    mode = args.device_plugin_refresh or ("pod" if sim_dir is None else "sim")
    if mode == "signal":
        # Simulated GPUs: only the plugin that reads this node's (several may run here).
        own = f"{ENV_DIR}={sim_dir.resolve()}" if sim_dir is not None else None
        refresher = SignalRefresher(environment=own)
    elif mode == "pod":
        refresher = PodRefresher(
            client.CoreV1Api(api_client),
            args.node,
            args.device_plugin_namespace,
            args.device_plugin_selector,
        )
    elif sim_dir is not None:
        refresher = SimRefresher(sim_dir)
    else:
        raise UserError("--device-plugin-refresh sim needs --nvml sim:DIR (a sim node)")

    metrics = AgentMetrics()
    heartbeat = Heartbeat(stale_after=args.resync + args.device_plugin_timeout + 60)
    nvml = LazyNvml(lambda: open_backend(args.nvml))
    reconciler = Reconciler(
        nvml, PodResourcesView(socket), refresher, metrics,
        refresh_timeout=args.device_plugin_timeout,
    )  # fmt: skip
    agent = Agent(
        MigNodeClient(kube, args.node), reconciler, metrics, heartbeat, args.resync,
        args.max_backoff,
    )  # fmt: skip
    watcher = MigNodeWatcher(kube, args.node, agent.wake.set, agent.stop)

    def on_signal(signum: int, frame: object) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    if args.health_port:
        server = serve_health(args.health_host, args.health_port, heartbeat, metrics.render)
        logging.getLogger(__name__).info(
            "serving /healthz and /metrics on %s:%d", args.health_host, server.server_port
        )
    logging.getLogger(__name__).info(
        "agent for node %s: NVML %s, pod-resources %s", args.node, args.nvml, socket
    )
    watcher.start()
    try:
        agent.run()
    finally:
        if server is not None:
            server.shutdown()
        nvml.close()
    return 0

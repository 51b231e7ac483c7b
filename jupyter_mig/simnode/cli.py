"""``jupyter-mig sim-node``: simulated MIG GPU nodes against a Kubernetes API server."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import MODELS


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _latency(text: str) -> tuple[str, float]:
    operation, sep, seconds = text.partition("=")
    if not sep or not (operation == "*" or operation.startswith("nvml")):
        raise argparse.ArgumentTypeError(f"expected NVML_CALL=SECONDS, got {text!r}")
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{seconds!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("latency cannot be negative")
    return operation, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the API server")
    parser.add_argument("--name", required=True, help="node name (with --count: name prefix)")
    parser.add_argument(
        "--gpu", required=True, metavar="MODEL", help=f"GPU model: {', '.join(MODELS.names())}"
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    parser.add_argument(
        "--state",
        required=True,
        metavar="DIR",
        help="state directory (simulated NVML, allocations, pod-resources socket); "
        "with --count, one subdirectory per node",
    )
    parser.add_argument(
        "--count", type=int, default=1, help="simulate this many nodes NAME-0..NAME-(M-1)"
    )
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra node label (repeatable), e.g. jupyter-mig.io/partitioning=dynamic",
    )
    parser.add_argument(
        "--refresh-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="device plugin re-read delay after a refresh request (default 2)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="node status and Lease renewal interval (default 10)",
    )
    parser.add_argument(
        "--nvml-latency",
        type=_latency,
        action="append",
        default=[],
        metavar="NVML_CALL=SECONDS",
        help="simulated NVML latency per call (repeatable), e.g. "
        "nvmlDeviceCreateGpuInstanceWithPlacement=0.5 or nvmlGpuInstanceDestroy=0.5 "
        "(* for every call)",
    )
    parser.add_argument(
        "--device-plugin",
        choices=["builtin", "nvidia"],
        default="builtin",
        help="builtin: advertise the simulated GPUs' MIG devices directly; nvidia: run NVIDIA's "
        "device plugin (tests/deviceplugin/build.sh, needs root) and be its kubelet side",
    )
    parser.add_argument("--cpu", default="64", help="node cpu capacity (default 64)")
    parser.add_argument("--memory", default="512Gi", help="node memory capacity (default 512Gi)")
    parser.add_argument("--pods", default="110", help="node pod capacity (default 110)")
    parser.add_argument(
        "--reboot",
        action="store_true",
        help="simulate a reboot first: MIG instances and container processes are gone",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="least severe log messages shown",
    )


def run(args: argparse.Namespace) -> int:
    model = MODELS.get(args.gpu)  # ModelError: one line, exit 2
    if not 1 <= args.gpus <= 64 or not 1 <= args.count <= 1000:
        raise UserError("--gpus must be 1 to 64 and --count 1 to 1000")
    kubeconfig = Path(args.kubeconfig)
    if not kubeconfig.is_file():
        raise UserError(f"--kubeconfig {kubeconfig}: no such file")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries: the node logs the outcome
    from jupyter_mig.simnode.node import NodeConfig, SimNode, reboot_state

    root = Path(args.state)
    names = [args.name] if args.count == 1 else [f"{args.name}-{i}" for i in range(args.count)]
    configs = [
        NodeConfig(
            name=name,
            state_dir=root if args.count == 1 else root / name,
            model=model.name,
            gpus=args.gpus,
            labels=dict(args.label),
            refresh_delay=args.refresh_delay,
            heartbeat_interval=args.heartbeat,
            cpu=args.cpu,
            memory=args.memory,
            pods=args.pods,
            nvml_latency=dict(args.nvml_latency),
            device_plugin=args.device_plugin,
        )
        for name in names
    ]
    for config in configs:
        socket_path = config.state_dir.resolve() / "pod-resources.sock"
        if len(str(socket_path).encode()) > 107:
            raise UserError(
                f"--state {config.state_dir}: the socket path {socket_path} is longer than a "
                "unix socket allows (107 bytes); use a shorter directory"
            )
        if args.reboot:
            reboot_state(config.state_dir)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    nodes = []
    try:
        for config in configs:
            node = SimNode(config, str(kubeconfig))
            try:
                node.start()
            except ValueError as err:  # another model or GPU count in DIR, unknown operation
                raise UserError(str(err)) from None
            nodes.append(node)
        stop.wait()
    finally:
        for node in nodes:
            node.stop()
    return 0

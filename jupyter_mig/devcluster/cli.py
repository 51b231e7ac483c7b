"""``jupyter-mig devcluster up/down/env/build``."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from jupyter_mig.devcluster.binaries import build, build_node
from jupyter_mig.devcluster.common import DEFAULT_DIR, NODE_BIN, log_stderr
from jupyter_mig.devcluster.control_plane import (
    DEFAULT_NODE_GRACE,
    START_TIMEOUT_S,
    down,
    resolve_dir,
    running,
    up,
)
from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import MODELS

#: A node is a kubelet, a containerd and a device plugin: a few fit on this kind of machine.
MAX_GPU_NODES = 3
MAX_GPUS = 8

#: A Go duration as kube-controller-manager reads it (checked before anything is built).
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="devcluster_command", metavar="ACTION")
    dir_help = f"cluster directory (default: {DEFAULT_DIR})"

    p_up = sub.add_parser("up", help="start the cluster (build it first if needed)")
    p_up.add_argument("--dir", type=Path, default=None, help=dir_help)
    p_up.add_argument("--port", type=int, default=None,
                      help="kube-apiserver port on 127.0.0.1 (default: a free one)")  # fmt: skip
    p_up.add_argument("--timeout", type=float, default=START_TIMEOUT_S,
                      help="seconds to wait for readiness (default: %(default)s)")  # fmt: skip
    p_up.add_argument("--node-grace", default=DEFAULT_NODE_GRACE,
                      help="kube-controller-manager --node-monitor-grace-period "
                           "(default: %(default)s)")  # fmt: skip

    p_up.add_argument("--gpu-nodes", type=int, default=0, metavar="N",
                      help="real GPU nodes to start (kubelet, containerd, NVIDIA's device "
                           "plugin on simulated GPUs; needs root; default: none)")  # fmt: skip
    p_up.add_argument("--gpu", default="A100-80GB", metavar="MODEL",
                      help="GPU model of each GPU node (default: %(default)s)")  # fmt: skip
    p_up.add_argument("--gpus", type=int, default=1, metavar="K",
                      help="GPUs per GPU node (default: %(default)s)")  # fmt: skip

    p_down = sub.add_parser("down", help="stop the cluster (the logs stay in DIR/logs)")
    p_down.add_argument("--dir", type=Path, default=None, help=dir_help)

    p_env = sub.add_parser("env", help="print `export KUBECONFIG=...` for a running cluster")
    p_env.add_argument("--dir", type=Path, default=None, help=dir_help)
    p_env.add_argument("--json", action="store_true", help="print the cluster's state as JSON")

    p_build = sub.add_parser("build", help="build the binaries into tests/cluster/.cache/bin")
    p_build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p_build.add_argument("--node", action="store_true",
                         help="build the GPU nodes' kubelet and kubectl instead, into "
                              "tests/node/.cache/bin")  # fmt: skip


def _env_lines(kubeconfig: Path) -> str:
    """``KUBECONFIG``, and the kubectl built with the nodes' kubelet on ``PATH`` when built."""
    lines = [f"export KUBECONFIG={shlex.quote(str(kubeconfig))}"]
    if (NODE_BIN / "kubectl").is_file():
        lines.append(f'export PATH={shlex.quote(str(NODE_BIN))}:"$PATH"')
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "devcluster_command", None)
    if action is None:
        raise UserError("say what to do: up, down, env or build (see --help)")
    if action == "build":
        print(build_node(force=args.force) if args.node else build(force=args.force))
        return 0
    if action == "up":
        if args.port is not None and not 1 <= args.port <= 65535:
            raise UserError(f"--port {args.port} is not a TCP port (1-65535)")
        if not args.timeout > 0:
            raise UserError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
        if not _GO_DURATION.match(args.node_grace):
            raise UserError(
                f"--node-grace {args.node_grace!r}: expected a duration such as 40s, 5m or 1h"
            )
        if not 0 <= args.gpu_nodes <= MAX_GPU_NODES:
            raise UserError(f"--gpu-nodes {args.gpu_nodes}: expected 0 to {MAX_GPU_NODES}")
        if not 1 <= args.gpus <= MAX_GPUS:
            raise UserError(f"--gpus {args.gpus}: expected 1 to {MAX_GPUS} GPUs per node")
        if MODELS.find(args.gpu) is None:
            raise UserError(
                f"--gpu {args.gpu!r}: unknown GPU model; known: {', '.join(MODELS.names())}"
            )
        cluster = up(
            args.dir, port=args.port, timeout=args.timeout, node_grace=args.node_grace,
            gpu_nodes=args.gpu_nodes, gpu=args.gpu, gpus=args.gpus,
        )  # fmt: skip
        print(_env_lines(cluster.kubeconfig))
        return 0
    if action == "down":
        path = resolve_dir(args.dir)
        stopped = down(path)
        log_stderr(f"stopped {stopped} processes; logs kept in {path / 'logs'}")
        return 0
    if action == "env":
        path = resolve_dir(args.dir)
        found = running(path)
        if found is None:
            raise UserError(
                f"no cluster is running in {path}: start one with "
                f"`jupyter-mig devcluster up --dir {path}`"
            )
        if args.json:
            json.dump(found.to_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(_env_lines(found.kubeconfig))
        return 0
    raise UserError(f"unknown action {action!r}")

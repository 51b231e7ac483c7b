"""``jupyter-mig nvml-sim``: build the simulated NVML library and make a node's GPUs.

``lib`` prints the absolute path of ``libnvidia-ml.so.1`` (rebuilt first when stale), so
``LD_LIBRARY_PATH=$(dirname "$(jupyter-mig nvml-sim lib)")`` makes any NVML consumer
(nvidia-ml-py, NVIDIA's device plugin) use it; ``init DIR`` makes a node's state, which the
library finds through ``JUPYTER_MIG_NVML_SIM_DIR=DIR``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("lib", help="print the path of the built libnvidia-ml.so.1")
    init = sub.add_parser("init", help="make a node's GPUs: MIG mode on, no instances")
    init.add_argument("dir", metavar="DIR", help="the node's state directory")
    init.add_argument("--gpu", required=True, metavar="MODEL", help="GPU model, e.g. A100-80GB")
    init.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs (default 1)")


def run(args: argparse.Namespace) -> int:
    from jupyter_mig.nvml import simgpu

    if args.action == "lib":
        print(simgpu.library_path())
    else:
        simgpu.init_state(args.dir, args.gpu, args.gpus)
        print(f"{args.dir}: {args.gpus} x {args.gpu}; JUPYTER_MIG_NVML_SIM_DIR={args.dir}")
    return 0

"""``jupyter-mig kernelspecs``: one kernel spec per allowed size ("Python 3 · GPU 10gb").

Run it when the server image is built (into the image's ``share/jupyter/kernels``); each spec
names the provisioner and its size, and interrupts by message (there is no process to signal).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_mig.errors import UserError
from jupyter_mig.kernels.contract import PROVISIONER_NAME
from jupyter_mig.mig.sizes import parse_size


def spec_name(size: str) -> str:
    """``gpu-10gb``: the size's letters and digits only (a directory name)."""
    return "gpu-" + re.sub(r"[^a-z0-9]+", "-", size.strip().lower()).strip("-")


def kernel_spec(size: str, display: str) -> dict[str, Any]:
    return {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display.format(size=size),
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": {"gpu_slice": size},
            },
            "debugger": True,
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", required=True, help="the sizes the hub allows, comma-separated (10gb,20gb)"
    )
    parser.add_argument(
        "--prefix",
        default=sys.prefix,
        help="install into PREFIX/share/jupyter/kernels (the server image's Python)",
    )
    parser.add_argument(
        "--display-name", default="Python 3 · GPU {size}", help="the name in the kernel picker"
    )


def write_specs(sizes: list[str], prefix: Path, display: str) -> list[Path]:
    """Check every size first (nothing is written for a bad list), then write each spec."""
    for size in sizes:
        parse_size(size)
    if not sizes:
        raise UserError("--sizes names no size; give e.g. --sizes 10gb,20gb")
    if "{size}" not in display:
        raise UserError("--display-name must contain {size}, or every spec looks the same")
    written = []
    for size in sizes:
        folder = prefix / "share" / "jupyter" / "kernels" / spec_name(size)
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(kernel_spec(size, display), out, indent=1, ensure_ascii=False)
        os.chmod(temp, 0o644)
        os.replace(temp, folder / "kernel.json")
        written.append(folder / "kernel.json")
    return written


def run(args: argparse.Namespace) -> int:
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for path in write_specs(sizes, Path(args.prefix), args.display_name):
        print(path)
    return 0

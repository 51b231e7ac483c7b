"""NVIDIA's device plugin, unmodified, as a host process for one simulated node.

It runs in its own mount namespace (``unshare -m``, so root) that shows it what a node with
the NVIDIA driver shows: ``/proc/driver/nvidia-caps/mig-minors`` as the driver writes it (every
possible GPU-instance and compute-instance capability entry), and the node's device-plugin
directory at ``/var/lib/kubelet/device-plugins``.  NVML is our ``libnvidia-ml.so.1`` on the
node's simulated GPUs.  Settings: ``MIG_STRATEGY=mixed``, ``DEVICE_LIST_STRATEGY=envvar`` (the
container learns its devices from ``NVIDIA_VISIBLE_DEVICES``) and the default
``DEVICE_ID_STRATEGY=uuid`` (device ids are MIG UUIDs, which the agent relies on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import IO

from jupyter_mig.errors import UserError
from jupyter_mig.nvml import simgpu

#: Where ``tests/deviceplugin/build.sh`` puts the binary in a source checkout.
BINARY = Path(__file__).resolve().parents[2] / "tests/deviceplugin/.cache/bin/nvidia-device-plugin"
MIG_MINORS_FILE = "mig-minors"

# Inside the new mount namespace: a private /proc/driver with the driver's MIG capability
# table, and the node's plugin directory where the kubelet's would be.  /var/lib gets a tmpfs
# only when the host has no /var/lib/kubelet, so nothing is created on the host.
_NAMESPACE_SCRIPT = """set -eu
mount --make-rprivate /
mount -t tmpfs tmpfs /proc/driver
mkdir /proc/driver/nvidia-caps
cp "$1" /proc/driver/nvidia-caps/mig-minors
if [ ! -d /var/lib/kubelet ]; then mount -t tmpfs tmpfs /var/lib; fi
mkdir -p /var/lib/kubelet/device-plugins
mount --bind "$2" /var/lib/kubelet/device-plugins
shift 2
exec "$@"
"""


def mig_minors(gpus: int = 32) -> str:
    """``/proc/driver/nvidia-caps/mig-minors`` as the driver writes it: config, monitor, then
    every GPU's 15 GPU instances with 8 compute instances each, numbered in that order."""
    lines = ["config 1", "monitor 2"]
    minor = 3
    for gpu in range(gpus):
        for gi in range(15):
            lines.append(f"gpu{gpu}/gi{gi}/access {minor}")
            minor += 1
            for ci in range(8):
                lines.append(f"gpu{gpu}/gi{gi}/ci{ci}/access {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


def start(
    state_dir: str | os.PathLike[str],
    plugin_dir: str | os.PathLike[str],
    log: IO[bytes],
    binary: Path = BINARY,
) -> subprocess.Popen[bytes]:
    """Start NVIDIA's plugin for the simulated GPUs in ``state_dir``, registering with the
    kubelet side serving ``plugin_dir/kubelet.sock``; its output goes to ``log``."""
    if not binary.is_file():
        raise UserError(f"{binary} is missing: build it with tests/deviceplugin/build.sh")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        raise UserError("NVIDIA's device plugin needs root and unshare(1) for its mount namespace")
    minors = Path(state_dir) / MIG_MINORS_FILE
    minors.write_text(mig_minors(), encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_LIBRARY_PATH": str(simgpu.library_path().parent),
        simgpu.ENV_DIR: str(Path(state_dir).resolve()),
        "MIG_STRATEGY": "mixed",
        "DEVICE_LIST_STRATEGY": "envvar",
        "FAIL_ON_INIT_ERROR": "true",
    }
    command = [
        "unshare", "-m", "sh", "-c", _NAMESPACE_SCRIPT, "nvidia-device-plugin",
        str(minors.resolve()), str(Path(plugin_dir).resolve()), str(binary),
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

#!/usr/bin/env bash
# Install everything on a fresh machine of this project's kind: the Python package with every
# extra into .venv, JupyterHub 5.4 with the hub's extras into .venv-hub5 (the hub tests run on
# both lines), the simulated GPUs' NVML library, NVIDIA's device plugin (Go, cgo), the
# labextension's build and test tools (npm, from its lock file), Debian's Chromium for the
# browser test, and what a devcluster's real GPU nodes run (Debian's containerd, runc, CNI
# plugins, busybox-static, and their kubelet built from tests/node).
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, as root or through sudo; without either, say what is skipped and go on.
apt_updated=""
apt_install() {
    local why="$1"; shift
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "setup: cannot install $* (not root, no sudo); $why"
        return 0
    fi
    if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Our libnvidia-ml.so.1 for the simulated GPUs, built with the machine's C compiler (gcc).
.venv/bin/jupyter-mig nvml-sim lib >/dev/null
# NVIDIA's device plugin, unmodified, from its Go module (cgo), for the sim nodes that run it.
tests/deviceplugin/build.sh
# The real GPU nodes' kubelet and kubectl (tests/node, the control plane's Kubernetes version).
.venv/bin/jupyter-mig devcluster build --node >/dev/null
# The hub tests also run against JupyterHub 5.4 (Zero to JupyterHub 4.x ships that line).
python3 -m venv .venv-hub5
.venv-hub5/bin/python -m pip install --quiet --upgrade pip
.venv-hub5/bin/python -m pip install --quiet -e '.[hub5-test]'
if [ ! labextension/node_modules/.package-lock.json -nt labextension/package-lock.json ]; then
    (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v chromium >/dev/null; then
    # Headless Chromium for tests/browser; Playwright itself downloads no browser.
    apt_install "the browser test will be skipped" chromium
fi
# Real GPU nodes (jupyter_mig/devcluster/node.py): Debian's containerd 1.6 with its CRI plugin
# (the distribution's supported package, no systemd needed), runc, the CNI plugins bridge and
# host-local, and a static busybox for the test-workload image.
if ! command -v containerd >/dev/null || ! command -v runc >/dev/null \
        || [ ! -x /usr/lib/cni/bridge ] || [ ! -x /bin/busybox ]; then
    apt_install "the real-node tests will be skipped" --no-install-recommends \
        containerd runc containernetworking-plugins busybox-static
fi

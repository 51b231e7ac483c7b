#!/usr/bin/env bash
# Install everything on a fresh machine of this project's kind: the Python package with every
# extra into .venv, JupyterHub 5.4 with the hub's extras into .venv-hub5 (the hub tests run on
# both lines), the simulated GPUs' NVML library, NVIDIA's device plugin (Go, cgo), the
# labextension's build and test tools (npm, from its lock file), and Debian's Chromium for the
# browser test.  Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Our libnvidia-ml.so.1 for the simulated GPUs, built with the machine's C compiler (gcc).
.venv/bin/jupyter-mig nvml-sim lib >/dev/null
# NVIDIA's device plugin, unmodified, from its Go module (cgo), for the sim nodes that run it.
tests/deviceplugin/build.sh
# The hub tests also run against JupyterHub 5.4 (Zero to JupyterHub 4.x ships that line).
python3 -m venv .venv-hub5
.venv-hub5/bin/python -m pip install --quiet --upgrade pip
.venv-hub5/bin/python -m pip install --quiet -e '.[hub5-test]'
if [ ! labextension/node_modules/.package-lock.json -nt labextension/package-lock.json ]; then
    (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v chromium >/dev/null; then
    # Headless Chromium for tests/browser; Playwright itself downloads no browser.
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "setup: cannot install chromium (not root, no sudo); the browser test will be skipped"
        exit 0
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

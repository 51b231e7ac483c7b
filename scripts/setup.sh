#!/usr/bin/env bash
# Install everything on a fresh machine of this project's kind: the Python package with every
# extra into .venv, the labextension's build and test tools (npm, from its lock file), and
# Debian's Chromium for the browser test.  Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
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

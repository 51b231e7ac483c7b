#!/usr/bin/env bash
# Rebuild the prebuilt JupyterLab extension into jupyter_mig/labextension/ (committed: the wheel
# ships it) and record the fingerprints that tests/unit/test_labextension_build.py checks.
# Needs node >= 20 and the dev extra (jupyter-builder) in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci
rm -rf lib tsconfig.tsbuildinfo ../jupyter_mig/labextension
PATH="$PWD/../.venv/bin:$PATH" npm run build
../.venv/bin/python scripts/fingerprint.py --write

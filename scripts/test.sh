#!/usr/bin/env bash
# The project's checks: lint, types, the labextension's Jest tests, and the whole pytest suite
# (unit, integration on the real local control plane, browser).  Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check jupyter_mig tests benchmarks labextension/scripts
.venv/bin/ruff format --check jupyter_mig tests benchmarks labextension/scripts
.venv/bin/mypy
labextension/scripts/test.sh
.venv/bin/pytest "$@"

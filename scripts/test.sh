#!/usr/bin/env bash
# The project's checks: lint, types, and the whole test suite (unit + integration on the real
# local control plane).  Extra arguments go to pytest, e.g. scripts/test.sh -m "not cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check jupyter_mig tests benchmarks
.venv/bin/ruff format --check jupyter_mig tests benchmarks
.venv/bin/mypy
.venv/bin/pytest "$@"

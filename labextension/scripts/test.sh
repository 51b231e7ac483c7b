#!/usr/bin/env bash
# The labextension's Jest tests (pure parts: status text, grid geometry, progress, API client).
set -euo pipefail
cd "$(dirname "$0")/.."
npx --no-install jest --ci "$@"

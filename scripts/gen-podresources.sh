#!/usr/bin/env bash
# Regenerate the Python modules of the kubelet pod-resources API from its .proto (needs the dev
# extra's grpcio-tools).  The generated files are committed; run this only after editing the proto.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
    jupyter_mig/podresources/api.proto

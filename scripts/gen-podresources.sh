#!/usr/bin/env bash
# Regenerate the Python modules of the kubelet pod-resources and device-plugin APIs from their
# .proto files (needs the dev extra's grpcio-tools).  The generated files are committed; run this
# only after editing a proto.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
    jupyter_mig/podresources/api.proto jupyter_mig/deviceplugin/api.proto

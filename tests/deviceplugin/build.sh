#!/usr/bin/env bash
# Build NVIDIA's device plugin (the version pinned in go.mod, unmodified, cgo) into
# tests/deviceplugin/.cache/bin from the Go module proxy.  It loads libnvidia-ml.so.1 with
# dlopen at run time, so no NVIDIA driver is needed to build it.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .cache/bin
# The machine's Go, and this module alone (no go.work, no toolchain download).
export GOTOOLCHAIN=local GOWORK=off
CGO_ENABLED=1 go build -o .cache/bin/nvidia-device-plugin \
    github.com/NVIDIA/k8s-device-plugin/cmd/nvidia-device-plugin

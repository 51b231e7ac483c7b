"""The NVML boundary: interface, error classes and backend selection.

``open_backend("real")`` opens the GPUs of this machine through ``nvidia-ml-py``;
``open_backend("sim:DIR")`` opens the same backend on our own ``libnvidia-ml.so.1``
(:mod:`jupyter_mig.nvml.simgpu`) with the simulated GPUs whose state lives in ``DIR`` (made by
``jupyter-mig nvml-sim init`` or ``jupyter-mig sim-node``).  The backend is imported lazily so
that importing this package never needs ``pynvml``.
"""

from __future__ import annotations

import os

from jupyter_mig.errors import UserError
from jupyter_mig.nvml.base import (
    DriverUnavailable,
    GpuInfo,
    GpuInstance,
    InsufficientResources,
    InUse,
    InvalidArgument,
    NoPermission,
    NotFound,
    NotSupported,
    NvmlBackend,
    NvmlError,
    Uninitialized,
)

__all__ = [
    "DriverUnavailable",
    "GpuInfo",
    "GpuInstance",
    "InUse",
    "InsufficientResources",
    "InvalidArgument",
    "NoPermission",
    "NotFound",
    "NotSupported",
    "NvmlBackend",
    "NvmlError",
    "Uninitialized",
    "open_backend",
    "open_simulated",
]


def open_backend(spec: str) -> NvmlBackend:
    """A backend from a command-line spec: ``real`` or ``sim:DIR``."""
    from jupyter_mig.nvml.real import RealNvml

    if spec == "real":
        return RealNvml()
    if spec.startswith("sim:") and len(spec) > 4:
        return open_simulated(spec[4:])
    raise UserError(f"--nvml {spec!r}: expected 'real' or 'sim:DIR' (a sim-node state directory)")


def open_simulated(directory: str | os.PathLike[str]) -> NvmlBackend:
    """The NVML backend on our ``libnvidia-ml.so.1`` with the simulated GPUs in ``directory``."""
    from jupyter_mig.nvml import simgpu
    from jupyter_mig.nvml.real import RealNvml

    simgpu.load_library()
    with simgpu.session_env(directory):
        return RealNvml()

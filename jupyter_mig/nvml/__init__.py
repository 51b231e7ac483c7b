"""The NVML boundary: interface, error classes and backend selection.

``open_backend("sim:DIR")`` opens the simulated GPUs whose state lives in ``DIR`` (created by
``jupyter-mig sim-node`` or :func:`jupyter_mig.nvml.sim.init_state`); ``open_backend("real")``
opens the GPUs of this machine through ``nvidia-ml-py``.  Backends are imported lazily so that
importing this package never needs ``pynvml``.
"""

from __future__ import annotations

from jupyter_mig.errors import UserError
from jupyter_mig.nvml.base import (
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
]


def open_backend(spec: str) -> NvmlBackend:
    """A backend from a command-line spec: ``real`` or ``sim:DIR``."""
    if spec == "real":
        from jupyter_mig.nvml.real import RealNvml

        return RealNvml()
    if spec.startswith("sim:") and len(spec) > 4:
        from jupyter_mig.nvml.sim import SimNvml

        return SimNvml(spec[4:])
    raise UserError(f"--nvml {spec!r}: expected 'real' or 'sim:DIR' (a sim-node state directory)")

"""The NVML boundary: the few MIG operations the node agent needs, behind one interface.

One backend implements :class:`NvmlBackend`: :mod:`jupyter_mig.nvml.real` on ``nvidia-ml-py``,
over the machine's NVML or over our own ``libnvidia-ml.so.1`` with simulated GPUs
(:mod:`jupyter_mig.nvml.simgpu`).  The agent codes against this module only.

Terms (see ``mig-profiles.md``): a **GPU instance** (GI) is created from a profile, identified
by its NVML **profile id** (never the profile *index*), at a **placement** ``start`` counted in
memory slices.  Each GI the agent creates carries exactly one full-size **compute instance**
(CI); together they are one MIG device with a ``MIG-...`` UUID that the device plugin
advertises and the kubelet hands to pods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

from jupyter_mig.mig.models import GpuModel

# NVML return codes (nvml.h) that the error classes below carry.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_IN_USE = 19
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_UNKNOWN = 999


class NvmlError(Exception):
    """An NVML call failed.  ``code`` is the NVML return code, ``operation`` the call.

    The backend raises exactly these classes, so the agent's error handling sees the same
    thing for a fault injected into the simulated library as for a real GPU.
    """

    code = NVML_ERROR_UNKNOWN

    def __init__(self, message: str, operation: str = "") -> None:
        super().__init__(message)
        self.operation = operation


class Uninitialized(NvmlError):
    """NVML is not initialised, or the driver/library is missing: the session must be
    opened again."""

    code = NVML_ERROR_UNINITIALIZED


class DriverUnavailable(Uninitialized):
    """The driver is gone or changed under this NVML session (not loaded, library not found,
    GPU lost, reset required, library/driver version mismatch): close NVML and open it again.
    ``code`` is the NVML return code."""


#: nvml.h codes after which only a new NVML session can help.
DRIVER_ERROR_CODES = frozenset({9, 12, 15, 16, 18})


class InvalidArgument(NvmlError):
    """A bad GPU index, profile id or placement start (one the profile does not allow)."""

    code = NVML_ERROR_INVALID_ARGUMENT


class NotSupported(NvmlError):
    """The GPU has no MIG, MIG mode is off, or the profile does not exist on this GPU."""

    code = NVML_ERROR_NOT_SUPPORTED


class NoPermission(NvmlError):
    """Creating or destroying instances needs root or the ``mig/config`` capability."""

    code = NVML_ERROR_NO_PERMISSION


class NotFound(NvmlError):
    """No GPU instance with that id (already destroyed, or lost in a reboot)."""

    code = NVML_ERROR_NOT_FOUND


class InUse(NvmlError):
    """The instance has processes on it (a pod holds it): it cannot be destroyed now."""

    code = NVML_ERROR_IN_USE


class InsufficientResources(NvmlError):
    """The new instance does not fit: overlap, max count, compute budget or the one-``+me`` rule."""

    code = NVML_ERROR_INSUFFICIENT_RESOURCES


#: NVML return code -> error class, for backends that translate codes.
ERRORS_BY_CODE: dict[int, type[NvmlError]] = {
    cls.code: cls
    for cls in (
        Uninitialized,
        InvalidArgument,
        NotSupported,
        NoPermission,
        NotFound,
        InUse,
        InsufficientResources,
    )
}


def error_for_code(code: int, message: str, operation: str = "") -> NvmlError:
    """The error class for an NVML return code (unknown codes become plain :class:`NvmlError`)."""
    cls = ERRORS_BY_CODE.get(code, NvmlError)
    if code in DRIVER_ERROR_CODES:
        cls = DriverUnavailable
    error = cls(message, operation)
    error.code = code
    return error


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as the node sees it.

    ``product`` is the name in the form GPU feature discovery writes into the
    ``nvidia.com/gpu.product`` label (spaces become dashes, e.g. ``NVIDIA-A100-SXM4-80GB``).
    ``model`` is the short model name (``A100-80GB``) when the product is known to
    :data:`jupyter_mig.mig.models.MODELS`, else the product itself.
    """

    index: int
    uuid: str  # "GPU-..."
    product: str
    model: str
    mig_enabled: bool
    memory_mib: int
    pci_bus_id: str = ""


@dataclass(frozen=True, slots=True)
class GpuInstance:
    """A GPU instance with its placement, and the MIG device its full-size CI forms.

    ``mig_uuid`` is ``None`` and ``compute_instances`` is 0 for a GI without a compute instance
    (left behind by a crash between the two create calls); such a GI is not a usable device and
    the agent destroys or completes it.
    """

    gpu_index: int
    id: int  # GPU instance id, unique per GPU, reused by NVML after destroy
    profile_id: int  # NVML profile id (info.id), e.g. 19 for 1g.10gb on A100-80GB
    start: int  # placement start, in memory slices
    size: int  # placement size, in memory slices
    mig_uuid: str | None  # "MIG-..." of the MIG device, None without a compute instance
    compute_instances: int = 1


class NvmlBackend(ABC):
    """The MIG operations the agent needs; one object per process, used from one thread.

    Every method raises :class:`NvmlError` subclasses only.  Backends are context managers:
    ``close`` releases NVML.
    """

    @abstractmethod
    def gpus(self) -> list[GpuInfo]:
        """Every GPU on the node, by index."""

    @abstractmethod
    def profile_table(self, gpu_index: int) -> GpuModel:
        """The GPU's profile table with placements, as a :class:`GpuModel`.

        Real backend: discovered from NVML (ids, names, memory, counts, placements as the
        driver reports them); the agent publishes ``to_json()`` of it.  Simulated backend: the
        built-in table of the configured model.  Raises :class:`NotSupported` when MIG is off.
        """

    @abstractmethod
    def instances(self, gpu_index: int) -> list[GpuInstance]:
        """The GPU's current GPU instances, sorted by placement start."""

    @abstractmethod
    def create_instance(self, gpu_index: int, profile_id: int, start: int) -> GpuInstance:
        """Create a GI of ``profile_id`` at placement ``start`` plus its full-size CI.

        Raises :class:`InsufficientResources` when it does not fit beside the existing
        instances, :class:`InvalidArgument` for a start the profile does not allow and
        :class:`NotSupported` for a profile id the GPU does not have.  If the CI cannot be
        created the GI is destroyed again before the error propagates (best effort).
        """

    @abstractmethod
    def destroy_instance(self, gpu_index: int, gpu_instance_id: int) -> None:
        """Destroy a GI: its compute instances first, then the GI itself.

        Raises :class:`InUse` when processes use its MIG device (nothing is destroyed then) and
        :class:`NotFound` when no such GI exists.
        """

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release the library (real backend); the simulated one has nothing to release."""

    def __enter__(self) -> NvmlBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

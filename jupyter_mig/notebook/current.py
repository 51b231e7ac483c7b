"""This server's own slice: what its pod was given, and how much of its memory is in use.

Least privilege: the spawner hook writes the slice into the server's environment
(``JUPYTER_MIG_SLICE`` and friends) and the NVIDIA device plugin sets ``NVIDIA_VISIBLE_DEVICES``
to the MIG device's UUID, so nothing here needs the Kubernetes API or a service account.
Memory figures come from NVML when a device is visible (nvidia-ml-py, imported only then).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jupyter_mig.slices.contract import MODELS_ENV, RESOURCE_ENV, SIZE_ENV, SLICE_ENV
from jupyter_mig.slices.policy import split_list

_NO_DEVICES = ("", "void", "none")


def visible_devices(env: Mapping[str, str]) -> list[str]:
    """The entries of ``NVIDIA_VISIBLE_DEVICES`` (UUIDs, indices or ``all``); none when unset."""
    value = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    return [] if value.lower() in _NO_DEVICES else list(split_list(value))


def slice_from_env(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The slice the hub gave this server, or None when it runs without one."""
    profile = env.get(SLICE_ENV, "").strip()
    if not profile:
        return None
    return {
        "size": env.get(SIZE_ENV, "") or profile,
        "profile": profile,
        "resource": env.get(RESOURCE_ENV, ""),
        "models": list(split_list(env.get(MODELS_ENV))),
    }


def memory_usage(devices: list[str]) -> tuple[dict[str, int] | None, str | None]:
    """(``{"total_mib", "used_mib"}`` summed over the devices, None) or (None, why not)."""
    if not devices:
        return None, None
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed, so GPU memory use is unknown"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return None, f"NVML is not available: {err}"
    try:
        handles: list[Any] = []
        for device in devices:
            if device.lower() == "all":
                count = pynvml.nvmlDeviceGetCount()
                handles.extend(pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
            elif device.isdigit():
                handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(device)))
            else:
                handles.append(pynvml.nvmlDeviceGetHandleByUUID(device))
        total = used = 0
        for handle in handles:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            total += int(info.total)
            used += int(info.used)
        return {"total_mib": total // 2**20, "used_mib": used // 2**20}, None
    except pynvml.NVMLError as err:
        return None, f"NVML could not read GPU memory: {err}"
    finally:
        pynvml.nvmlShutdown()


def current_slice(env: Mapping[str, str]) -> dict[str, Any]:
    """The document ``GET slice`` answers."""
    devices = visible_devices(env)
    memory, memory_error = memory_usage(devices)
    return {
        "slice": slice_from_env(env),
        "devices": devices,
        "memory": memory,
        "memory_error": memory_error,
    }

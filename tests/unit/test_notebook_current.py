"""This server's slice from its environment, and its memory use through NVML."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from jupyter_mig.notebook.current import (
    current_slice,
    memory_usage,
    slice_from_env,
    visible_devices,
)


@pytest.mark.parametrize(
    ("value", "devices"),
    [
        (None, []),
        ("", []),
        ("void", []),
        ("none", []),
        ("all", ["all"]),
        ("MIG-1f3e, MIG-88aa", ["MIG-1f3e", "MIG-88aa"]),
        ("0", ["0"]),
    ],
)
def test_visible_devices(value: str | None, devices: list[str]) -> None:
    env = {} if value is None else {"NVIDIA_VISIBLE_DEVICES": value}
    assert visible_devices(env) == devices


def test_no_slice_without_the_hubs_variables() -> None:
    assert slice_from_env({"NVIDIA_VISIBLE_DEVICES": "all"}) is None
    assert slice_from_env({"JUPYTER_MIG_SLICE": "3g.40gb"}) == {
        "size": "3g.40gb",
        "profile": "3g.40gb",
        "resource": "",
        "models": [],
    }


class FakeNvml(types.ModuleType):
    """The few pynvml calls current.py makes, over a table of devices (MiB total, used)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: dict[str, tuple[int, int]]) -> None:
        super().__init__("pynvml")
        self.devices = devices
        self.open = 0

    def nvmlInit(self) -> None:
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return list(self.devices)[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.devices:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        total, used = self.devices[handle]
        return types.SimpleNamespace(total=total * 2**20, used=used * 2**20, free=0)


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml({"MIG-a": (9728, 1024), "MIG-b": (19968, 0)})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_memory_is_summed_over_the_visible_devices(nvml: FakeNvml) -> None:
    assert memory_usage(["MIG-a"]) == ({"total_mib": 9728, "used_mib": 1024}, None)
    assert memory_usage(["all"]) == ({"total_mib": 29696, "used_mib": 1024}, None)
    assert memory_usage(["1"]) == ({"total_mib": 19968, "used_mib": 0}, None)
    assert nvml.open == 0  # every init is shut down again


def test_an_nvml_error_is_a_message_not_a_failure(nvml: FakeNvml) -> None:
    memory, error = memory_usage(["MIG-gone"])
    assert memory is None and error == "NVML could not read GPU memory: Not Found"
    assert nvml.open == 0


def test_without_nvidia_ml_py_the_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert memory_usage(["MIG-a"]) == (
        None,
        "nvidia-ml-py is not installed, so GPU memory use is unknown",
    )


def test_no_device_means_no_nvml_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    doc = current_slice({"JUPYTER_MIG_SLICE": "1g.10gb", "JUPYTER_MIG_SIZE": "10gb"})
    assert doc["memory"] is None and doc["memory_error"] is None
    assert doc["slice"]["size"] == "10gb"

"""The real NVML backend against a fake ``pynvml`` module: one A100-80GB in MIG mode.

The fake implements only the calls the backend makes, with NVML's conventions: profile
*indexes* in, profile *ids* out; placements and counts by reference; NVML error codes.
"""

from __future__ import annotations

import ctypes
import types
from ctypes import c_uint, c_void_p
from typing import Any

import pynvml
import pytest

from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml.base import InsufficientResources, InUse, NotFound, NotSupported
from jupyter_mig.nvml.real import RealNvml

# index -> (id, name, slices, max count, MiB, size, starts): an `nvidia-smi mig -lgip/-lgipp`
# transcript of an A100-SXM4-80GB, typed in by hand.
LGIP = {
    0: (19, b"MIG 1g.10gb", 1, 7, 9728, 1, (0, 1, 2, 3, 4, 5, 6)),
    1: (14, b"MIG 2g.20gb", 2, 3, 19968, 2, (0, 2, 4)),
    2: (9, b"MIG 3g.40gb", 3, 2, 40192, 4, (0, 4)),
    3: (5, b"MIG 4g.40gb", 4, 1, 40192, 4, (0,)),
    4: (0, b"MIG 7g.80gb", 7, 1, 80896, 8, (0,)),
    7: (20, b"MIG 1g.10gb+me", 1, 1, 9728, 1, (0, 1, 2, 3, 4, 5, 6)),
    9: (15, b"MIG 1g.20gb", 1, 4, 19968, 2, (0, 2, 4, 6)),
}
CI_SLICES = (1, 2, 3, 4, 7)  # compute-instance profile index -> slices (id = index here)
GI_BASE = 0x1000
CI_BASE = 0x100000


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _pointer(kind: Any, value: int) -> Any:
    return ctypes.cast(c_void_p(value), kind)


def _address(handle: Any) -> int:
    value = ctypes.cast(handle, c_void_p).value
    assert value is not None
    return value


class FakeA100:
    """The state of one MIG-enabled A100-80GB behind a pynvml-shaped module."""

    def __init__(self) -> None:
        self.gis: dict[int, dict[str, Any]] = {}  # GI id -> profile id, start, size, cis
        self.busy_cis: set[int] = set()
        self.calls: list[str] = []
        self.initialized = False

    def module(self) -> types.SimpleNamespace:
        names = [n for n in dir(self) if n.startswith("nvml")]
        functions = {n: getattr(self, n) for n in names}
        borrowed = {
            n: getattr(pynvml, n)
            for n in dir(pynvml)
            if n.startswith(("NVMLError", "NVML_", "c_nvml"))
        }
        return types.SimpleNamespace(**borrowed, **functions)

    def _log(self, name: str) -> None:
        assert self.initialized, f"{name} before nvmlInit"
        self.calls.append(name)

    def nvmlInit(self) -> None:
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index != 0:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return "gpu0"

    def nvmlDeviceGetName(self, handle: str) -> str:
        return "NVIDIA A100-SXM4-80GB"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, tuple):
            return f"MIG-00000000-0000-4000-8000-{handle[1]:012x}"
        return "GPU-11111111-2222-4333-8444-555555555555"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        return types.SimpleNamespace(total=81920 * 2**20)

    def nvmlDeviceGetMigMode(self, handle: str) -> list[int]:
        return [1, 1]

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: str, index: int) -> Any:
        self._log("GetGpuInstanceProfileInfo")
        if index >= pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index not in LGIP:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        pid, name, slices, count, mib, _size, _starts = LGIP[index]
        return types.SimpleNamespace(
            id=pid, name=name, sliceCount=slices, instanceCount=count, memorySizeMB=mib
        )

    def _by_id(self, profile_id: int) -> tuple[Any, ...]:
        for row in LGIP.values():
            if row[0] == profile_id:
                return row
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, handle: str, profile_id: int, buffer: Any, count_ref: Any
    ) -> int:
        self._log("GetGpuInstancePossiblePlacements")
        _pid, _name, _slices, _count, _mib, size, starts = self._by_id(profile_id)
        count = count_ref._obj  # a byref(c_uint): fails if passed by value
        if buffer is not None:
            assert count.value >= len(starts), "placement buffer too small"
            for i, start in enumerate(starts):
                buffer[i].start, buffer[i].size = start, size
        count.value = len(starts)
        return 0

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, handle: str, profile_id: int, placement_ref: Any
    ) -> Any:
        self._log("CreateGpuInstanceWithPlacement")
        placement = placement_ref._obj  # the pitfall: the struct must go by reference
        pid, _name, _slices, count, _mib, size, starts = self._by_id(profile_id)
        if placement.start not in starts or placement.size != size:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        mask = ((1 << size) - 1) << placement.start
        used = 0
        for gi in self.gis.values():
            used |= ((1 << gi["size"]) - 1) << gi["start"]
        same = sum(1 for gi in self.gis.values() if gi["profile"] == pid)
        if used & mask or same >= count:
            raise _error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi_id = min(i for i in range(1, 16) if i not in self.gis)
        self.gis[gi_id] = {"profile": pid, "start": placement.start, "size": size, "cis": {}}
        return _pointer(pynvml.c_nvmlGpuInstance_t, GI_BASE + gi_id)

    def _gi(self, handle: Any) -> dict[str, Any]:
        gi_id = _address(handle) - GI_BASE
        if gi_id not in self.gis:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return self.gis[gi_id]

    def nvmlDeviceGetGpuInstances(
        self, handle: str, profile_id: int, buffer: Any, count_ref: Any
    ) -> int:
        found = [i for i, gi in sorted(self.gis.items()) if gi["profile"] == profile_id]
        assert count_ref._obj.value >= len(found)
        for slot, gi_id in enumerate(found):
            buffer[slot] = _pointer(pynvml.c_nvmlGpuInstance_t, GI_BASE + gi_id)
        count_ref._obj.value = len(found)
        return 0

    def nvmlDeviceGetGpuInstanceById(self, handle: str, gi_id: int) -> Any:
        if gi_id not in self.gis:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return _pointer(pynvml.c_nvmlGpuInstance_t, GI_BASE + gi_id)

    def nvmlGpuInstanceGetInfo(self, handle: Any) -> Any:
        gi = self._gi(handle)
        placement = types.SimpleNamespace(start=gi["start"], size=gi["size"])
        return types.SimpleNamespace(
            id=_address(handle) - GI_BASE, profileId=gi["profile"], placement=placement
        )

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, handle: Any, index: int, engine: int
    ) -> Any:
        gi_slices = self._by_id(self._gi(handle)["profile"])[2]
        if index >= len(CI_SLICES) or CI_SLICES[index] > gi_slices:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        slices = CI_SLICES[index]
        return types.SimpleNamespace(id=index, sliceCount=slices, instanceCount=7 // slices)

    def nvmlGpuInstanceCreateComputeInstance(self, handle: Any, ci_profile_id: int) -> Any:
        self._log(f"CreateComputeInstance:{CI_SLICES[ci_profile_id]}")
        gi = self._gi(handle)
        ci_id = len(gi["cis"])
        gi["cis"][ci_id] = ci_profile_id
        return _pointer(pynvml.c_nvmlComputeInstance_t, CI_BASE + _address(handle) * 16 + ci_id)

    def nvmlGpuInstanceGetComputeInstances(
        self, handle: Any, ci_profile_id: int, buffer: Any, count_ref: Any
    ) -> int:
        gi = self._gi(handle)
        found = [ci for ci, p in gi["cis"].items() if p == ci_profile_id]
        for slot, ci_id in enumerate(found):
            value = CI_BASE + _address(handle) * 16 + ci_id
            buffer[slot] = _pointer(pynvml.c_nvmlComputeInstance_t, value)
        count_ref._obj.value = len(found)
        return 0

    def nvmlComputeInstanceDestroy(self, handle: Any) -> None:
        value = _address(handle) - CI_BASE
        if value in self.busy_cis:
            raise _error(pynvml.NVML_ERROR_IN_USE)
        self._log("ComputeInstanceDestroy")
        gi = self.gis[value // 16 - GI_BASE]
        del gi["cis"][value % 16]

    def nvmlGpuInstanceDestroy(self, handle: Any) -> None:
        gi = self._gi(handle)
        if gi["cis"]:
            raise _error(pynvml.NVML_ERROR_IN_USE)
        self._log("GpuInstanceDestroy")
        del self.gis[_address(handle) - GI_BASE]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: str) -> int:
        return 7

    def _mig_devices(self) -> list[tuple[int, int]]:
        return [(gi_id, ci) for gi_id, gi in sorted(self.gis.items()) for ci in gi["cis"]]

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: str, slot: int) -> Any:
        devices = self._mig_devices()
        if slot >= len(devices):
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        gi_id, ci = devices[slot]
        return ("mig", gi_id * 16 + ci)

    def nvmlDeviceGetGpuInstanceId(self, mig: tuple[str, int]) -> c_uint:
        return c_uint(mig[1] // 16).value


@pytest.fixture
def fake() -> FakeA100:
    return FakeA100()


def test_gpu_is_mapped_to_its_model(fake: FakeA100) -> None:
    with RealNvml(fake.module()) as nvml:
        (gpu,) = nvml.gpus()
    assert (gpu.model, gpu.product, gpu.mig_enabled) == (
        "A100-80GB",
        "NVIDIA-A100-SXM4-80GB",
        True,
    )
    assert gpu.memory_mib == 81920
    assert not fake.initialized  # closed on leaving the context


def test_discovered_table_matches_the_built_in_one(fake: FakeA100) -> None:
    table = RealNvml(fake.module()).profile_table(0)
    builtin = MODELS.get("A100-80GB")
    assert (table.name, table.grid, table.compute_budget) == ("A100-80GB", 8, 7)
    assert {p.nvml_id for p in table.profiles} == {p.nvml_id for p in builtin.profiles}
    for profile in table.profiles:
        expected = builtin.profile(profile.nvml_id)
        assert profile.name == expected.name
        assert profile.starts == expected.starts
        assert (profile.size, profile.compute, profile.max_count, profile.media) == (
            expected.size,
            expected.compute,
            expected.max_count,
            expected.media,
        )
    assert table.to_json()["profiles"]  # publishable


def test_create_makes_the_gi_at_its_placement_and_a_full_size_ci(fake: FakeA100) -> None:
    nvml = RealNvml(fake.module())
    made = nvml.create_instance(0, 9, 4)  # 3g.40gb by profile id, at slice 4
    assert (made.profile_id, made.start, made.size, made.compute_instances) == (9, 4, 4, 1)
    assert made.mig_uuid and made.mig_uuid.startswith("MIG-")
    assert "CreateComputeInstance:3" in fake.calls
    seven = nvml.create_instance(0, 19, 0)
    assert nvml.instances(0) == [seven, made]
    with pytest.raises(InsufficientResources):
        nvml.create_instance(0, 14, 4)
    with pytest.raises(NotSupported):
        nvml.create_instance(0, 4, 0)  # 4 is a profile *index* (7g), never an id here


def test_destroy_takes_the_cis_first_then_the_gi(fake: FakeA100) -> None:
    nvml = RealNvml(fake.module())
    made = nvml.create_instance(0, 0, 0)
    assert "CreateComputeInstance:7" in fake.calls
    fake.calls.clear()
    nvml.destroy_instance(0, made.id)
    assert fake.calls == ["ComputeInstanceDestroy", "GpuInstanceDestroy"]
    assert nvml.instances(0) == []
    with pytest.raises(NotFound):
        nvml.destroy_instance(0, made.id)


def test_busy_device_refuses_destruction(fake: FakeA100) -> None:
    nvml = RealNvml(fake.module())
    made = nvml.create_instance(0, 19, 3)
    fake.busy_cis.add(GI_BASE * 16 + made.id * 16 + 0)
    with pytest.raises(InUse):
        nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == [made]

"""The NVML backend for real GPUs, on ``nvidia-ml-py`` (``import pynvml``).

Pitfalls handled here (``mig-profiles.md`` §5): the profile *index* is only an input to
``GetGpuInstanceProfileInfo``; every other call takes the profile *id* (``info.id``).  Profile
indexes are enumerated until INVALID_ARGUMENT, skipping NOT_SUPPORTED ones, never up to the
binding's ``NVML_GPU_INSTANCE_PROFILE_COUNT`` (an older nvidia-ml-py knows fewer indexes than
the driver).  Placements and counts go by reference (``byref``; the binding declares no
argtypes), and placement lists are sized by asking for the count first.  A GI's MIG UUID is
read from its compute instances (``ComputeInstanceGetInfo(...).device``), not by walking the
MIG device slots, which long-lived sessions have been seen to list stale.  MIG mode counts as
on only when the pending mode agrees (a change waits for a GPU reset).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from ctypes import byref, c_uint
from typing import Any

from jupyter_mig.mig.models import MODELS, GpuModel, Profile
from jupyter_mig.nvml.base import (
    GpuInfo,
    GpuInstance,
    InUse,
    InvalidArgument,
    NotFound,
    NotSupported,
    NvmlBackend,
    NvmlError,
    Uninitialized,
    error_for_code,
)

#: ``NVML_GPU_INSTANCE_PROFILE_*`` index -> media kind of jupyter_mig.mig.models (nvml.h ABI).
_MEDIA_BY_INDEX = {
    0x7: "me",  # 1_SLICE_REV1
    0x8: "me",  # 2_SLICE_REV1
    0xA: "gfx",  # 1_SLICE_GFX
    0xB: "gfx",  # 2_SLICE_GFX
    0xC: "gfx",  # 4_SLICE_GFX
    0xD: "no_me",  # 1_SLICE_NO_ME
    0xE: "no_me",  # 2_SLICE_NO_ME
    0xF: "all_me",  # 1_SLICE_ALL_ME
    0x10: "all_me",  # 2_SLICE_ALL_ME
    0x11: "gfx",  # 3_SLICE_GFX
}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def profile_name(nvml_name: str | bytes) -> str:
    """``"MIG 1g.10gb"`` (as NVML names a GI profile) -> ``"1g.10gb"``."""
    return _text(nvml_name).strip().removeprefix("MIG ").strip()


#: Profile indexes tried before giving up on an INVALID_ARGUMENT end (nvml.h has 18 now).
_MAX_PROFILE_INDEX = 256


class RealNvml(NvmlBackend):
    """The GPUs NVML shows this process: the machine's, or our library's simulated ones."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise Uninitialized(
                "nvidia-ml-py is not installed: pip install 'jupyter-mig[nvml]'", "init"
            ) from None
        self._nvml: Any = pynvml
        self._tables: dict[str, GpuModel] = {}  # by GPU UUID, while MIG mode stays on
        with self._translate("nvmlInit"):
            self._nvml.nvmlInit()

    def close(self) -> None:
        with self._translate("nvmlShutdown"):
            self._nvml.nvmlShutdown()

    @contextlib.contextmanager
    def _translate(self, operation: str) -> Iterator[None]:
        """pynvml's exceptions -> this package's, so callers see one hierarchy."""
        try:
            yield
        except self._nvml.NVMLError as err:
            raise error_for_code(int(err.value), f"{operation}: {err}", operation) from None

    def _handle(self, gpu_index: int) -> Any:
        with self._translate("nvmlDeviceGetHandleByIndex"):
            return self._nvml.nvmlDeviceGetHandleByIndex(gpu_index)

    # -- discovery -------------------------------------------------------------------------

    def gpus(self) -> list[GpuInfo]:
        n = self._nvml
        found = []
        with self._translate("gpus"):
            count = n.nvmlDeviceGetCount()
        for index in range(count):
            handle = self._handle(index)
            with self._translate("gpus"):
                product = _text(n.nvmlDeviceGetName(handle)).replace(" ", "-")
                uuid = _text(n.nvmlDeviceGetUUID(handle))
                memory_mib = int(n.nvmlDeviceGetMemoryInfo(handle).total) // 2**20
                try:
                    current, pending = n.nvmlDeviceGetMigMode(handle)
                    mig_enabled = int(current) == int(pending) == n.NVML_DEVICE_MIG_ENABLE
                except n.NVMLError_NotSupported:
                    mig_enabled = False
                pci_bus_id = _text(n.nvmlDeviceGetPciInfo(handle).busId)
            if not mig_enabled:
                self._tables.pop(uuid, None)  # a new table once MIG mode is back on
            known = MODELS.find(product)
            found.append(
                GpuInfo(
                    index=index,
                    uuid=uuid,
                    product=product,
                    model=known.name if known else product,
                    mig_enabled=mig_enabled,
                    memory_mib=memory_mib,
                    pci_bus_id=pci_bus_id,
                )
            )
        return found

    def profile_table(self, gpu_index: int) -> GpuModel:
        """Discovered once per GPU and session: fixed while MIG mode stays on (``gpus`` drops
        it when MIG mode is seen off; a reopened session discovers it again)."""
        with self._translate("nvmlDeviceGetUUID"):
            uuid = _text(self._nvml.nvmlDeviceGetUUID(self._handle(gpu_index)))
        if uuid not in self._tables:
            self._tables[uuid] = self._discover_table(gpu_index)
        return self._tables[uuid]

    def _discover_table(self, gpu_index: int) -> GpuModel:
        n = self._nvml
        handle = self._handle(gpu_index)
        with self._translate("nvmlDeviceGetName"):
            product = _text(n.nvmlDeviceGetName(handle)).replace(" ", "-")
        profiles: list[Profile] = []
        for index in range(_MAX_PROFILE_INDEX):
            try:
                with self._translate("nvmlDeviceGetGpuInstanceProfileInfo"):
                    info = n.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
            except NotSupported:
                continue  # this SKU lacks the profile (or MIG is off: checked below)
            except InvalidArgument:
                break  # past the last index this driver knows
            placements = self._placements(handle, info.id)
            if not placements:
                continue
            profiles.append(
                Profile(
                    nvml_id=int(info.id),
                    name=profile_name(info.name),
                    compute=int(info.sliceCount),
                    memory_mib=int(info.memorySizeMB),
                    size=placements[0][1],
                    max_count=int(info.instanceCount),
                    starts=tuple(start for start, _size in placements),
                    media=_MEDIA_BY_INDEX.get(index, "none"),
                )
            )
        if not profiles:
            raise NotSupported(f"GPU {gpu_index} ({product}) offers no MIG profile", "profiles")
        known = MODELS.find(product)
        return GpuModel(
            name=known.name if known else product,
            grid=max(p.starts[-1] + p.size for p in profiles),
            compute_budget=max(p.compute for p in profiles),
            profiles=tuple(profiles),
            products=known.products if known and product in known.products else (product,),
            memory_gib=known.memory_gib if known else 0,
        )

    def _placements(self, handle: Any, profile_id: int) -> list[tuple[int, int]]:
        n = self._nvml
        count = c_uint(0)
        with self._translate("nvmlDeviceGetGpuInstancePossiblePlacements"):
            n.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, byref(count))
            buffer = (n.c_nvmlGpuInstancePlacement_t * count.value)()
            n.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, buffer, byref(count))
        return sorted((int(p.start), int(p.size)) for p in buffer[: count.value])

    # -- instances -------------------------------------------------------------------------

    def _gpu_instance_handles(self, handle: Any, table: GpuModel) -> list[Any]:
        n = self._nvml
        found = []
        for profile in table.profiles:
            buffer = (n.c_nvmlGpuInstance_t * profile.max_count)()
            count = c_uint(profile.max_count)
            with self._translate("nvmlDeviceGetGpuInstances"):
                n.nvmlDeviceGetGpuInstances(handle, profile.nvml_id, buffer, byref(count))
            found.extend(buffer[: count.value])
        return found

    def _mig_uuids(self, gi: Any) -> list[str]:
        """MIG UUIDs of the GI's compute instances (one MIG device per CI)."""
        n = self._nvml
        uuids = []
        for ci in self._compute_instances(gi):
            with self._translate("nvmlComputeInstanceGetInfo"):
                device = n.nvmlComputeInstanceGetInfo(ci).device
            with self._translate("nvmlDeviceGetUUID"):
                uuids.append(_text(n.nvmlDeviceGetUUID(device)))
        return uuids

    def _compute_instances(self, gi: Any) -> list[Any]:
        """Every compute instance of a GPU instance, over all its compute profiles."""
        n = self._nvml
        instances: list[Any] = []
        for info in self._compute_profiles(gi):
            buffer = (n.c_nvmlComputeInstance_t * int(info.instanceCount))()
            count = c_uint(int(info.instanceCount))
            with self._translate("nvmlGpuInstanceGetComputeInstances"):
                n.nvmlGpuInstanceGetComputeInstances(gi, info.id, buffer, byref(count))
            instances.extend(buffer[: count.value])
        return instances

    def _describe(self, gpu_index: int, gi: Any) -> GpuInstance:
        with self._translate("nvmlGpuInstanceGetInfo"):
            info = self._nvml.nvmlGpuInstanceGetInfo(gi)
        uuids = self._mig_uuids(gi)
        return GpuInstance(
            gpu_index=gpu_index,
            id=int(info.id),
            profile_id=int(info.profileId),
            start=int(info.placement.start),
            size=int(info.placement.size),
            mig_uuid=uuids[0] if uuids else None,
            compute_instances=len(uuids),
        )

    def instances(self, gpu_index: int) -> list[GpuInstance]:
        handle = self._handle(gpu_index)
        table = self.profile_table(gpu_index)
        found = []
        for gi in self._gpu_instance_handles(handle, table):
            try:
                found.append(self._describe(gpu_index, gi))
            except (InvalidArgument, NotFound):
                continue  # destroyed by another process since it was listed: not there now
        return sorted(found, key=lambda inst: inst.start)

    def _compute_profiles(self, gi: Any) -> list[Any]:
        """The GI's compute-instance profile infos (indexes it does not support skipped)."""
        n = self._nvml
        infos = []
        for index in range(_MAX_PROFILE_INDEX):
            try:
                with self._translate("nvmlGpuInstanceGetComputeInstanceProfileInfo"):
                    infos.append(
                        n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                            gi, index, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                        )
                    )
            except NotSupported:
                continue
            except InvalidArgument:
                break  # past the last index this driver knows
        return infos

    def _create_full_ci(self, gi: Any) -> None:
        """The GI's one compute instance spanning all its slices."""
        profiles = self._compute_profiles(gi)
        if not profiles:
            raise NotSupported("the GPU instance offers no compute-instance profile", "ci")
        full = max(profiles, key=lambda info: int(info.sliceCount))
        with self._translate("nvmlGpuInstanceCreateComputeInstance"):
            self._nvml.nvmlGpuInstanceCreateComputeInstance(gi, full.id)

    def create_instance(self, gpu_index: int, profile_id: int, start: int) -> GpuInstance:
        n = self._nvml
        handle = self._handle(gpu_index)
        profile = self.profile_table(gpu_index).by_id.get(profile_id)
        if profile is None:
            raise NotSupported(f"GPU {gpu_index} has no GPU instance profile {profile_id}")
        placement = n.c_nvmlGpuInstancePlacement_t(start, profile.size)
        with self._translate("nvmlDeviceCreateGpuInstanceWithPlacement"):
            gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(handle, profile_id, byref(placement))
        try:
            self._create_full_ci(gi)
            return self._describe(gpu_index, gi)
        except NvmlError:
            with contextlib.suppress(NvmlError), self._translate("nvmlGpuInstanceDestroy"):
                n.nvmlGpuInstanceDestroy(gi)  # do not leave a GI that is no device behind
            raise

    def destroy_instance(self, gpu_index: int, gpu_instance_id: int) -> None:
        """All or nothing: when the GI itself answers IN_USE after its compute instances are
        gone (another client, e.g. DCGM, holds it), its full-size CI is made again, so the
        slice stays a device (with a new MIG UUID) and :class:`InUse` propagates."""
        n = self._nvml
        handle = self._handle(gpu_index)
        with self._translate("nvmlDeviceGetGpuInstanceById"):
            gi = n.nvmlDeviceGetGpuInstanceById(handle, gpu_instance_id)
        for ci in self._compute_instances(gi):
            with self._translate("nvmlComputeInstanceDestroy"):
                n.nvmlComputeInstanceDestroy(ci)
        try:
            with self._translate("nvmlGpuInstanceDestroy"):
                n.nvmlGpuInstanceDestroy(gi)
        except InUse:
            self._create_full_ci(gi)
            raise

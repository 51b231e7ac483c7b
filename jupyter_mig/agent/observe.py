"""What the node has now: GPUs, profile tables and instances from NVML, holders from the kubelet.

Read afresh before every diff, because NVML is the truth: a restarted agent, a reboot or an
operator's ``nvidia-smi`` all show up here, and the agent keeps no memory of what it did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jupyter_mig.api.mignode import GpuStatus, ObservedInstance
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.nvml import GpuInfo, GpuInstance, NotSupported, NvmlBackend


@dataclass(frozen=True)
class GpuObservation:
    """One GPU: ``model`` is the discovered profile table, ``None`` when MIG mode is off."""

    info: GpuInfo
    model: GpuModel | None
    instances: tuple[GpuInstance, ...]

    @property
    def layout(self) -> tuple[Instance, ...]:
        return tuple(sorted(Instance(gi.start, gi.profile_id) for gi in self.instances))

    def find(self, instance: Instance) -> GpuInstance:
        """The GPU instance at ``instance``'s placement (the observation must contain it)."""
        return next(
            gi
            for gi in self.instances
            if (gi.start, gi.profile_id) == (instance.start, instance.profile_id)
        )

    def in_use(self, holders: Mapping[str, str], busy: set[str]) -> frozenset[Instance]:
        """Instances whose MIG device a pod holds or NVML refused to destroy as busy."""
        return frozenset(
            Instance(gi.start, gi.profile_id)
            for gi in self.instances
            if gi.mig_uuid is not None and (gi.mig_uuid in holders or gi.mig_uuid in busy)
        )

    def status(self, holders: Mapping[str, str]) -> GpuStatus:
        return GpuStatus(
            index=self.info.index,
            uuid=self.info.uuid,
            model_name=self.info.model,
            product=self.info.product,
            mig_enabled=self.info.mig_enabled,
            model=self.model,
            instances=tuple(
                ObservedInstance(
                    start=gi.start,
                    profile_id=gi.profile_id,
                    profile=_profile_name(self.model, gi.profile_id),
                    uuid=gi.mig_uuid or "",
                    pod=holders.get(gi.mig_uuid) if gi.mig_uuid else None,
                )
                for gi in self.instances
            ),
        )


def _profile_name(model: GpuModel | None, profile_id: int) -> str:
    profile = model.by_id.get(profile_id) if model is not None else None
    return profile.name if profile is not None else f"profile-{profile_id}"


def observe(nvml: NvmlBackend) -> tuple[GpuObservation, ...]:
    """Every GPU with its profile table (when MIG is on) and its GPU instances."""
    observations = []
    for info in nvml.gpus():
        model: GpuModel | None = None
        instances: Sequence[GpuInstance] = ()
        if info.mig_enabled:
            try:
                model = nvml.profile_table(info.index)
            except NotSupported:
                model = None  # MIG mode changed under us; report it off and touch nothing
            else:
                instances = nvml.instances(info.index)
        observations.append(GpuObservation(info, model, tuple(instances)))
    return tuple(observations)


def mig_uuids(gpus: Sequence[GpuObservation]) -> frozenset[str]:
    """Every complete MIG device on the node: what the device plugin should advertise."""
    return frozenset(gi.mig_uuid for g in gpus for gi in g.instances if gi.mig_uuid is not None)

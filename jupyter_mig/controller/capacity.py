"""The read-only capacity API: per GPU model and profile, what exists free, what could be carved.

``free``: free instances of the profile now.  ``creatable``: how many more the GPUs could hold by
repartitioning their free space — each profile counted alone, in-use instances never touched.
``in_use``: instances held by pods.  A notebook user asking for a slice can get one soon when
``free + creatable > 0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jupyter_mig.api.constants import MIG_RESOURCE_PREFIX
from jupyter_mig.mig.layout import Instance, can_add
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.planner import NodeSnapshot


@dataclass(frozen=True, slots=True)
class ProfileCapacity:
    profile: str
    resource: str
    free: int
    creatable: int
    in_use: int


@dataclass(frozen=True, slots=True)
class ModelCapacity:
    model: str
    gpus: int
    profiles: tuple[ProfileCapacity, ...]


@lru_cache(maxsize=65536)
def most_instances(model: GpuModel, fixed: tuple[Instance, ...], profile_id: int) -> int:
    """The most instances of one profile that fit beside ``fixed``.

    Greedy in start order is exact: instances of one profile are equal-length intervals (the
    earliest start also ends first), and the other limits (compute, count, media) cap the number
    of instances whatever their placement.
    """
    layout = fixed
    for start in model.by_id[profile_id].starts:
        candidate = Instance(start, profile_id)
        if can_add(model, layout, candidate):
            layout = (*layout, candidate)
    return len(layout) - len(fixed)


def capacity(snapshots: Iterable[NodeSnapshot]) -> list[ModelCapacity]:
    """Capacity per model; profiles in table order (one model's tables may differ by driver)."""
    gpus: dict[str, int] = {}
    names: dict[str, dict[str, str]] = {}  # model → profile name → resource, first-seen order
    counts: dict[tuple[str, str], list[int]] = {}  # (model, profile name) → free, creatable, used
    for node in snapshots:
        for gpu in node.gpus:
            model = gpu.model
            gpus[model.name] = gpus.get(model.name, 0) + 1
            seen = names.setdefault(model.name, {})
            used = tuple(sorted(Instance(i.start, i.profile_id) for i in gpu.instances if i.used))
            for profile in model.profiles:
                seen.setdefault(profile.name, f"{MIG_RESOURCE_PREFIX}{profile.resource_name}")
                row = counts.setdefault((model.name, profile.name), [0, 0, 0])
                free = sum(
                    1 for i in gpu.instances if not i.used and i.profile_id == profile.nvml_id
                )
                in_use = sum(1 for i in gpu.instances if i.used and i.profile_id == profile.nvml_id)
                row[0] += free
                row[1] += most_instances(model, used, profile.nvml_id) - free
                row[2] += in_use
    result = []
    for name in sorted(gpus):
        rows = tuple(
            ProfileCapacity(
                profile=profile,
                resource=resource,
                free=counts[(name, profile)][0],
                creatable=counts[(name, profile)][1],
                in_use=counts[(name, profile)][2],
            )
            for profile, resource in names[name].items()
        )
        result.append(ModelCapacity(name, gpus[name], rows))
    return result


def gpu_layouts(
    snapshot: NodeSnapshot, desired: Mapping[int, tuple[Instance, ...]] | None
) -> list[dict[str, Any]]:
    """Each GPU's instances at their placements, for the slice grid people look at: ``in_use``,
    ``free``, or ``creating`` (in the desired layout, not reported yet)."""
    rows = []
    for gpu in snapshot.gpus:
        model = gpu.model
        reported = {(i.start, i.profile_id) for i in gpu.instances}
        instances = [
            {
                "profile": model.by_id[i.profile_id].name,
                "start": i.start,
                "size": model.by_id[i.profile_id].size,
                "state": "in_use" if i.used else "free",
            }
            for i in gpu.instances
        ]
        for wanted in (desired or {}).get(gpu.index, ()):
            profile = model.by_id.get(wanted.profile_id)
            if profile is not None and (wanted.start, wanted.profile_id) not in reported:
                instances.append(
                    {
                        "profile": profile.name,
                        "start": wanted.start,
                        "size": profile.size,
                        "state": "creating",
                    }
                )
        rows.append(
            {
                "node": snapshot.name,
                "index": gpu.index,
                "model": model.name,
                "grid": model.grid,
                "instances": sorted(instances, key=lambda i: (i["start"], i["profile"])),
            }
        )
    return rows


def render_capacity(
    models: Iterable[ModelCapacity],
    generated: datetime,
    gpus: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``GET /api/v1/capacity`` (docs/protocol.md).

    ``gpus`` (per-GPU layouts, with node names) only when the admin publishes them; without it
    the document holds counts per model and profile only.
    """
    document: dict[str, Any] = {} if gpus is None else {"gpus": list(gpus)}
    return document | {
        "models": [
            {
                "model": m.model,
                "gpus": m.gpus,
                "profiles": [
                    {
                        "profile": p.profile,
                        "resource": p.resource,
                        "free": p.free,
                        "creatable": p.creatable,
                        "in_use": p.in_use,
                    }
                    for p in m.profiles
                ],
            }
            for m in models
        ],
        "generated": generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

"""What a notebook user may ask for: the capacity document read back, sizes planned against it.

The notebook server extension and the JupyterHub integration both need this and never import
each other, so it lives in this package of their own.  Pure: the capacity document comes from
:class:`jupyter_mig.slices.client.CapacityClient`.

A request ("10gb", "1g.10gb", "2g") resolves per GPU model present in the cluster to one profile
(:func:`jupyter_mig.mig.sizes.resolve_for_model`).  Models that resolve to the same profile name
share one extended resource, so the options are grouped by resource; the best option is the one
that is free now, else the one the controller can carve by repartitioning, else the smallest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_mig.api.constants import MIG_RESOURCE_PREFIX
from jupyter_mig.mig.models import MODELS, GpuModel, Profile
from jupyter_mig.mig.sizes import (
    SizeError,
    SizeRequest,
    nominal_gb,
    parse_size,
    resolve_for_model,
)
from jupyter_mig.slices.errors import CapacityError, SliceRefused

#: Availability of an option: a free instance exists, the controller can carve one by
#: repartitioning free space, or every one is held by a pod (the request waits).
FREE = "free"
REPARTITION = "repartition"
BUSY = "busy"
_STATUS_RANK = {FREE: 0, REPARTITION: 1, BUSY: 2}


@dataclass(frozen=True, slots=True)
class ProfileCounts:
    free: int
    creatable: int
    in_use: int


@dataclass(frozen=True)
class ModelCapacity:
    model: GpuModel
    gpus: int
    counts: Mapping[str, ProfileCounts]  # profile name → counts

    def counts_for(self, profile: Profile) -> ProfileCounts:
        return self.counts.get(profile.name, ProfileCounts(0, 0, 0))


@dataclass(frozen=True)
class Capacity:
    """``GET /api/v1/capacity`` of the controller (docs/protocol.md), with the models looked up."""

    models: tuple[ModelCapacity, ...]
    generated: str = ""
    unknown_models: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CapacityError(f"capacity document: {where} is not a count: {value!r}", False)
    return value


def parse_capacity(doc: Any) -> Capacity:
    """Read the capacity document; models this package does not know are listed, not used."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CapacityError("capacity document: expected an object with a 'models' list", False)
    models = []
    unknown = []
    for i, entry in enumerate(doc["models"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise CapacityError(f"capacity document: models[{i}] has no model name", False)
        model = MODELS.find(entry["model"])
        if model is None:
            unknown.append(entry["model"])
            continue
        counts = {}
        for j, row in enumerate(entry.get("profiles", [])):
            where = f"models[{i}].profiles[{j}]"
            if not isinstance(row, dict) or not isinstance(row.get("profile"), str):
                raise CapacityError(f"capacity document: {where} has no profile name", False)
            counts[row["profile"]] = ProfileCounts(
                free=_count(row.get("free", 0), f"{where}.free"),
                creatable=_count(row.get("creatable", 0), f"{where}.creatable"),
                in_use=_count(row.get("in_use", 0), f"{where}.in_use"),
            )
        models.append(ModelCapacity(model, _count(entry.get("gpus", 0), "gpus"), counts))
    return Capacity(tuple(models), str(doc.get("generated", "")), tuple(unknown), doc)


@dataclass(frozen=True, slots=True)
class SliceOption:
    """One way to serve a request: a profile (one extended resource) on one or more models."""

    size: str  # the request as given
    profile: str
    resource: str
    models: tuple[str, ...]
    products: tuple[str, ...]  # nvidia.com/gpu.product label values of those models
    memory_gib: float
    compute: int
    free: int
    creatable: int

    @property
    def nominal_gb(self) -> int:
        """The GB figure of the profile's name (what per-user totals add up)."""
        return nominal_gb(MODELS.get(self.models[0]).profile(self.profile))

    @property
    def status(self) -> str:
        if self.free:
            return FREE
        return REPARTITION if self.creatable else BUSY

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "profile": self.profile,
            "resource": self.resource,
            "models": list(self.models),
            "memory_gib": round(self.memory_gib, 2),
            "compute": self.compute,
            "free": self.free,
            "creatable": self.creatable,
            "status": self.status,
        }


def _size_order(text: str) -> tuple[int, float, str]:
    req = parse_size(text)
    return ({"gb": 0, "gib": 0, "compute": 1, "profile": 2}[req.kind], req.amount, text)


@dataclass(frozen=True)
class SlicePolicy:
    """What the hub admin permits: a menu of sizes and a maximum (any of several caps).

    ``sizes`` empty: every plain size the cluster's models offer.  ``maximum`` empty: no cap.
    A profile on a model is permitted when some menu size resolves to it there and it fits
    under some cap (:func:`within_cap`: caps never round up to the next profile).
    """

    sizes: tuple[str, ...] = ()
    maximum: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for text in (*self.sizes, *self.maximum):
            parse_size(text)  # raises SizeError naming the bad entry

    def permits(self, model: GpuModel, profile: Profile) -> bool:
        if self.sizes and not any(resolve_for_model(s, model) == profile for s in self.sizes):
            return False
        return not self.maximum or any(within_cap(profile, cap, model) for cap in self.maximum)

    def menu(self, capacity: Capacity) -> list[str]:
        """The sizes to offer, smallest first, only those some model here permits."""
        sizes = list(self.sizes) or offered_sizes(capacity)
        kept = [s for s in sizes if _permitted_options(parse_size(s), s, capacity, self)]
        return sorted(kept, key=_size_order)


_PROFILE_NAME = re.compile(r"^(\d+)g\.(\d+)gb")


def within_cap(profile: Profile, cap: str, model: GpuModel) -> bool:
    """Whether ``profile`` is no larger than the cap says, compared in the cap's own terms.

    A cap never rounds up: ``30gb`` admits profiles of at most 30 nominal GB (so not 3g.40gb),
    ``20gb`` does not admit a whole A30 (4g.24gb).  A profile cap (``3g.40gb``) bounds compute
    and memory: by the profile itself on models that have it, else by the figures in its name.
    """
    req = parse_size(cap)
    if req.kind == "gb":
        return nominal_gb(profile) <= req.amount
    if req.kind == "gib":
        return profile.memory_mib <= req.amount * 1024
    if req.kind == "compute":
        return profile.compute <= req.amount
    same = model.find_profile(req.profile_name)
    if same is not None:
        return profile.memory_mib <= same.memory_mib and profile.compute <= same.compute
    figures = _PROFILE_NAME.match(req.profile_name)
    return figures is not None and (
        profile.compute <= int(figures.group(1)) and nominal_gb(profile) <= int(figures.group(2))
    )


def offered_sizes(capacity: Capacity) -> list[str]:
    """Nominal sizes (``10gb``) of the plain profiles of the cluster's models, smallest first."""
    sizes = {nominal_gb(p) for m in capacity.models for p in m.model.profiles if p.media == "none"}
    return [f"{gb}gb" for gb in sorted(sizes)]


def _group(size: str, pairs: Iterable[tuple[ModelCapacity, Profile]]) -> list[SliceOption]:
    groups: dict[str, list[tuple[ModelCapacity, Profile]]] = {}
    for entry, profile in pairs:
        groups.setdefault(profile.name, []).append((entry, profile))
    options = []
    for name, members in groups.items():
        first = members[0][1]
        options.append(
            SliceOption(
                size=size,
                profile=name,
                resource=f"{MIG_RESOURCE_PREFIX}{first.resource_name}",
                models=tuple(e.model.name for e, _ in members),
                products=tuple(sorted({p for e, _ in members for p in e.model.products})),
                memory_gib=first.memory_gib,
                compute=first.compute,
                free=sum(e.counts_for(p).free for e, p in members),
                creatable=sum(e.counts_for(p).creatable for e, p in members),
            )
        )
    options.sort(key=lambda o: (_STATUS_RANK[o.status], o.memory_gib, o.compute, o.profile))
    return options


def _candidates(req: SizeRequest, capacity: Capacity) -> list[tuple[ModelCapacity, Profile]]:
    pairs = []
    for entry in capacity.models:
        profile = resolve_for_model(req, entry.model)
        if profile is not None:
            pairs.append((entry, profile))
    return pairs


def _permitted_options(
    req: SizeRequest, size: str, capacity: Capacity, policy: SlicePolicy
) -> list[SliceOption]:
    pairs = [(e, p) for e, p in _candidates(req, capacity) if policy.permits(e.model, p)]
    return _group(size, pairs)


def slice_options(size: str, capacity: Capacity, policy: SlicePolicy) -> list[SliceOption]:
    """The permitted ways to serve ``size`` in this cluster, best first.

    Raises :class:`SizeError` when the size is malformed or no model here offers it (naming the
    sizes that exist), :class:`SliceRefused` when only the policy stands in the way.
    """
    req = parse_size(size)
    if not capacity.models:
        raise SizeError("the cluster has no GPU that jupyter-mig partitions, so no slice exists")
    pairs = _candidates(req, capacity)
    if not pairs:
        raise SizeError(not_offered_message(req, capacity, policy))
    options = _permitted_options(req, size, capacity, policy)
    if not options:
        raise SliceRefused(refusal_message(size, capacity, policy))
    return options


def plan_slice(size: str, capacity: Capacity, policy: SlicePolicy) -> SliceOption:
    """The option a request gets: free now first, then carvable, then the smallest."""
    return slice_options(size, capacity, policy)[0]


def held_gb(sizes: Iterable[str], capacity: Capacity) -> int:
    """Nominal GB that slices of these sizes take, each planned as it would be now.

    The admin's menu and caps are left out on purpose: a server keeps the slice it got even
    when a cap is lowered later.  A size no model here offers any more holds nothing.
    """
    total = 0
    for size in sizes:
        try:
            total += plan_slice(size, capacity, SlicePolicy()).nominal_gb
        except (SizeError, SliceRefused):
            continue
    return total


def not_offered_message(req: SizeRequest, capacity: Capacity, policy: SlicePolicy) -> str:
    menu = ", ".join(policy.menu(capacity)) or "none"
    if req.kind == "profile":
        names = sorted({p.name for m in capacity.models for p in m.model.profiles})
        return (
            f"no GPU in this cluster offers the profile {req.profile_name!r}; profiles here: "
            f"{', '.join(names)}; sizes you can ask for: {menu}"
        )
    return f"no GPU in this cluster offers {req.describe()}; sizes you can ask for: {menu}"


def refusal_message(size: str, capacity: Capacity, policy: SlicePolicy) -> str:
    menu = ", ".join(policy.menu(capacity)) or "none"
    if policy.maximum:
        caps = " or ".join(policy.maximum)
        return f"{size} is above your maximum of {caps}; sizes you can ask for: {menu}"
    return f"{size} is not on this hub's list of sizes; sizes you can ask for: {menu}"


def menu_entries(capacity: Capacity, policy: SlicePolicy) -> list[SliceOption]:
    """The best option of every menu size: what the spawn form, widget and panel show."""
    return [
        _permitted_options(parse_size(s), s, capacity, policy)[0] for s in policy.menu(capacity)
    ]


def split_list(text: str | None) -> tuple[str, ...]:
    """``"10gb, 20gb"`` → ``("10gb", "20gb")`` (environment variables carry lists this way)."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())

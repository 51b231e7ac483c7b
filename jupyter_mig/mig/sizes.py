"""Size requests: what a user types ("10gb", "2g", "1g.10gb") and the profile it gets per model.

Semantics (documented in the README):

- ``10gb``, ``10GB``, ``10G``: the nominal size in the profile *name* (``1g.10gb`` is a 10 GB slice
  even where NVML reports 9.5 GiB), so a request reads the way the slices are sold.
- ``10GiB``: real memory, at least 10 x 1024 MiB as NVML reports it.
- ``2g``: at least 2 compute slices.
- ``1g.10gb``, ``mig-1g.10gb``, ``nvidia.com/mig-1g.10gb``: exactly that profile, on the models
  that have it.

A size resolves per model to the least-waste plain profile: least memory, then least compute, for
memory sizes; least compute, then least memory, for compute sizes.  Media-extension and graphics
variants are only chosen by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jupyter_mig.mig.models import MODELS, GpuModel, Profile, normalize_profile_name

EXAMPLES = "e.g. 10gb, 10GiB, 2g or 1g.10gb"

_PROFILE_RE = re.compile(r"^\d+g\.\d+gb([.+-][a-z.]+)?$")
_AMOUNT_RE = re.compile(r"^(?P<num>[+-]?\d+(?:\.\d+)?)\s*(?P<unit>gib|gb|g)$")


class SizeError(ValueError):
    """A size request that is malformed or that no GPU model can satisfy."""


@dataclass(frozen=True, slots=True)
class SizeRequest:
    """A parsed size request."""

    kind: str  # "profile", "gb" (nominal), "gib" (real memory) or "compute"
    text: str
    amount: float = 0.0
    profile_name: str = ""

    def matches(self, profile: Profile) -> bool:
        if self.kind == "profile":
            return normalize_profile_name(self.profile_name) in (
                profile.name.lower(),
                profile.resource_name.lower(),
            )
        if profile.media != "none":
            return False
        if self.kind == "gb":
            return nominal_gb(profile) >= self.amount
        if self.kind == "gib":
            return profile.memory_mib >= self.amount * 1024
        return profile.compute >= self.amount

    def waste_key(self, profile: Profile) -> tuple[int, int, int]:
        if self.kind == "compute":
            return (profile.compute, profile.memory_mib, profile.nvml_id)
        return (profile.memory_mib, profile.compute, profile.nvml_id)

    def describe(self) -> str:
        if self.kind == "profile":
            return f"the {self.profile_name} profile"
        if self.kind == "compute":
            return f"a {self.amount:g}-compute-slice slice"
        unit = "GiB" if self.kind == "gib" else "GB"
        return f"a {self.amount:g} {unit} slice"


def nominal_gb(profile: Profile) -> int:
    """The GB figure in a profile name (``3g.40gb`` → 40)."""
    match = re.match(r"^\d+g\.(\d+)gb", profile.name)
    return int(match.group(1)) if match else math.floor(profile.memory_mib / 1024)


def parse_size(text: str) -> SizeRequest:
    """Parse a size request; raise :class:`SizeError` with one clear line when it is malformed."""
    if not isinstance(text, str) or not text.strip():
        raise SizeError(f"empty GPU slice size; give one, {EXAMPLES}")
    raw = text.strip()
    key = normalize_profile_name(raw)
    if _PROFILE_RE.match(key):
        return SizeRequest(kind="profile", text=raw, profile_name=key)
    amount = _AMOUNT_RE.match(key)
    if amount is None:
        raise SizeError(f"cannot read {raw!r} as a GPU slice size; use {EXAMPLES}")
    value = float(amount.group("num"))
    unit = amount.group("unit")
    # Case matters for a bare "g": "10G" is memory (as in Kubernetes quantities), "2g" is compute
    # slices (as in profile names).
    kind = unit if unit != "g" else ("gb" if raw.endswith("G") else "compute")
    if value <= 0:
        raise SizeError(f"a GPU slice size must be positive, got {raw!r}; use {EXAMPLES}")
    if kind == "compute" and not value.is_integer():
        raise SizeError(f"compute slices come in whole numbers, got {raw!r}; use {EXAMPLES}")
    return SizeRequest(kind=kind, text=raw, amount=value)


def resolve_for_model(request: SizeRequest | str, model: GpuModel) -> Profile | None:
    """The least-waste profile of ``model`` that satisfies the request, or None."""
    req = parse_size(request) if isinstance(request, str) else request
    candidates = [p for p in model.profiles if req.matches(p)]
    return min(candidates, key=req.waste_key) if candidates else None


def resolve(
    request: SizeRequest | str, models: Iterable[GpuModel] | None = None
) -> dict[str, Profile]:
    """The chosen profile per model that can satisfy the request (model name → profile).

    Raises :class:`SizeError` naming the largest slice on offer when no model can.
    """
    req = parse_size(request) if isinstance(request, str) else request
    pool = list(MODELS if models is None else models)
    chosen = {}
    for model in pool:
        profile = resolve_for_model(req, model)
        if profile is not None:
            chosen[model.name] = profile
    if not chosen:
        raise SizeError(unsatisfiable_message(req, pool))
    return chosen


def unsatisfiable_message(req: SizeRequest, models: list[GpuModel]) -> str:
    if not models:
        return f"no GPU model is known, so {req.describe()} cannot be served"
    if req.kind == "profile":
        names = sorted({p.name for m in models for p in m.profiles})
        return f"no GPU model offers the profile {req.profile_name!r}; profiles: {', '.join(names)}"
    largest_model = max(models, key=lambda m: (m.full_profile.memory_mib, m.name))
    largest = largest_model.full_profile
    if req.kind == "compute":
        most = max(models, key=lambda m: (m.compute_budget, m.full_profile.memory_mib))
        return (
            f"no GPU model offers a {req.amount:g}-compute-slice slice; the most is "
            f"{most.full_profile.name} on {most.name} (a lower-case g counts compute slices: "
            f"did you mean {req.amount:g}gb?)"
        )
    unit = "GiB" if req.kind == "gib" else "GB"
    return (
        f"no GPU model offers a {req.amount:g} {unit} slice; the largest is "
        f"{largest.name} on {largest_model.name}"
    )

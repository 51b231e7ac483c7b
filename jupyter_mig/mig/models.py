"""GPU models and their MIG profile tables.

The built-in tables come from the NVIDIA MIG user guide plus real ``nvidia-smi mig -lgip/-lgipp``
transcripts.  They are defaults: the node agent reads the real table from NVML and publishes it as
JSON (:meth:`GpuModel.to_json`), and a published table replaces the built-in one
(:func:`GpuModel.from_json`).  Profiles are identified by NVML profile id, never by name:
names drift between drivers (``3g.39gb`` vs ``3g.40gb``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

#: Media-extension variants.  ``me``: one per GPU.  ``all_me``: takes every media engine, so it
#: excludes ``me`` and every plain/gfx profile on the GPU (only ``no_me`` may sit beside it).
MEDIA_KINDS = ("none", "me", "all_me", "no_me", "gfx")


class ModelError(ValueError):
    """A model name, profile or profile table that cannot be used."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One GPU-instance profile of a GPU model, as NVML describes it."""

    nvml_id: int
    name: str  # as nvidia-smi and the device plugin print it, e.g. "1g.10gb", "1g.10gb+me"
    compute: int  # compute (SM) slices
    memory_mib: int
    size: int  # placement size in memory-slice units
    max_count: int
    starts: tuple[int, ...]  # legal placement starts
    media: str = "none"

    @property
    def resource_name(self) -> str:
        """The extended-resource suffix the device plugin advertises (``+me`` becomes ``.me``)."""
        return self.name.replace("+", ".")

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.nvml_id,
            "name": self.name,
            "compute": self.compute,
            "memory_mib": self.memory_mib,
            "size": self.size,
            "max_count": self.max_count,
            "starts": list(self.starts),
            "media": self.media,
        }

    @staticmethod
    def from_json(data: dict[str, Any], where: str = "profile") -> Profile:
        try:
            profile = Profile(
                nvml_id=_int(data["id"], f"{where}.id"),
                name=str(data["name"]),
                compute=_int(data["compute"], f"{where}.compute", minimum=1),
                memory_mib=_int(data["memory_mib"], f"{where}.memory_mib", minimum=1),
                size=_int(data["size"], f"{where}.size", minimum=1),
                max_count=_int(data["max_count"], f"{where}.max_count", minimum=1),
                starts=tuple(_int(s, f"{where}.starts") for s in data["starts"]),
                media=str(data.get("media", "none")),
            )
        except KeyError as missing:
            raise ModelError(f"{where}: missing field {missing}") from None
        except TypeError:
            raise ModelError(f"{where}: must be an object with id, name, compute, ...") from None
        if profile.media not in MEDIA_KINDS:
            raise ModelError(f"{where}.media: {profile.media!r} is not one of {MEDIA_KINDS}")
        if not profile.starts:
            raise ModelError(f"{where}.starts: a profile needs at least one placement")
        return profile


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class GpuModel:
    """A MIG-capable GPU model: its slice grid, compute budget and profiles."""

    name: str  # short name, e.g. "A100-80GB"
    grid: int  # memory slices (8, 4 or 12)
    compute_budget: int  # compute slices (7 or 4)
    profiles: tuple[Profile, ...]
    products: tuple[str, ...] = ()  # nvidia.com/gpu.product label values
    memory_gib: int = 0
    notes: str = field(default="", compare=False)

    def __hash__(self) -> int:  # models are memo keys in the planner: hash cheaply
        return hash(self.name)

    def __post_init__(self) -> None:
        ids = [p.nvml_id for p in self.profiles]
        if len(set(ids)) != len(ids):
            raise ModelError(f"{self.name}: duplicate NVML profile ids in the profile table")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ModelError(f"{self.name}: duplicate profile names in the profile table")
        for p in self.profiles:
            for start in p.starts:
                if start < 0 or start + p.size > self.grid:
                    raise ModelError(
                        f"{self.name}: profile {p.name} placement {start}:{p.size} "
                        f"lies outside the {self.grid}-slice grid"
                    )
            if p.compute > self.compute_budget:
                raise ModelError(f"{self.name}: profile {p.name} exceeds the compute budget")

    @cached_property
    def by_id(self) -> dict[int, Profile]:
        return {p.nvml_id: p for p in self.profiles}

    @cached_property
    def by_name(self) -> dict[str, Profile]:
        table = {}
        for p in self.profiles:
            table[p.name] = p
            table[p.resource_name] = p
        return table

    def profile(self, ref: str | int) -> Profile:
        """A profile by NVML id or by name (``1g.10gb``, ``mig-1g.10gb``, ``1g.10gb.me``)."""
        if isinstance(ref, int):
            try:
                return self.by_id[ref]
            except KeyError:
                raise ModelError(f"{self.name} has no MIG profile with NVML id {ref}") from None
        key = normalize_profile_name(ref)
        found = self.by_name.get(key)
        if found is None:
            known = ", ".join(p.name for p in self.profiles)
            raise ModelError(f"{self.name} has no MIG profile {ref!r}; it has {known}")
        return found

    def find_profile(self, ref: str) -> Profile | None:
        return self.by_name.get(normalize_profile_name(ref))

    @property
    def full_profile(self) -> Profile:
        """The profile that spans the whole GPU (largest compute, then memory)."""
        return max(self.profiles, key=lambda p: (p.compute, p.size, p.media == "none"))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "grid": self.grid,
            "compute_budget": self.compute_budget,
            "products": list(self.products),
            "memory_gib": self.memory_gib,
            "profiles": [p.to_json() for p in self.profiles],
        }

    @staticmethod
    def from_json(data: dict[str, Any], where: str = "model") -> GpuModel:
        """A profile table as the agent publishes it; replaces the built-in one for that model."""
        if not isinstance(data, dict):
            raise ModelError(f"{where}: expected an object")
        try:
            profiles_data = data["profiles"]
            if not isinstance(profiles_data, list) or not profiles_data:
                raise ModelError(f"{where}.profiles: expected a non-empty list")
            return GpuModel(
                name=str(data["model"]),
                grid=_int(data["grid"], f"{where}.grid", minimum=1),
                compute_budget=_int(data["compute_budget"], f"{where}.compute_budget", minimum=1),
                profiles=tuple(
                    Profile.from_json(p, f"{where}.profiles[{i}]")
                    for i, p in enumerate(profiles_data)
                ),
                products=tuple(str(p) for p in data.get("products", [])),
                memory_gib=int(data.get("memory_gib", 0)),
            )
        except KeyError as missing:
            raise ModelError(f"{where}: missing field {missing}") from None


_PREFIXES = ("nvidia.com/mig-", "mig-")


def normalize_profile_name(name: str) -> str:
    """``nvidia.com/mig-1g.10gb.me`` → ``1g.10gb.me``; lower-case, no resource prefix."""
    key = name.strip().lower()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return key


# --------------------------------------------------------------------------------------------
# Built-in tables.  Placement rules: see mig-profiles.md §3.  MiB values as observed; entries
# marked "inferred" in the reference are inferred here too and are replaced by what NVML reports.
# --------------------------------------------------------------------------------------------

_ALL7 = (0, 1, 2, 3, 4, 5, 6)


def _seven_slice(
    name: str,
    gb: tuple[int, int, int, int],
    mib: tuple[int, int, int, int],
    products: tuple[str, ...],
    memory_gib: int,
    notes: str = "",
) -> GpuModel:
    """The common 8-wide, 7-compute family (A100, H100, H200, GH200, B200)."""
    g1, g2, g4, g8 = gb
    m1, m2, m4, m8 = mib
    return GpuModel(
        name=name,
        grid=8,
        compute_budget=7,
        products=products,
        memory_gib=memory_gib,
        notes=notes,
        profiles=(
            Profile(19, f"1g.{g1}gb", 1, m1, 1, 7, _ALL7),
            Profile(20, f"1g.{g1}gb+me", 1, m1, 1, 1, _ALL7, media="me"),
            Profile(15, f"1g.{g2}gb", 1, m2, 2, 4, (0, 2, 4, 6)),
            Profile(14, f"2g.{g2}gb", 2, m2, 2, 3, (0, 2, 4)),
            Profile(9, f"3g.{g4}gb", 3, m4, 4, 2, (0, 4)),
            Profile(5, f"4g.{g4}gb", 4, m4, 4, 1, (0,)),
            Profile(0, f"7g.{g8}gb", 7, m8, 8, 1, (0,)),
        ),
    )


def _builtin_models() -> tuple[GpuModel, ...]:
    return (
        GpuModel(
            name="A30-24GB",
            grid=4,
            compute_budget=4,
            products=("NVIDIA-A30", "A30"),
            memory_gib=24,
            profiles=(
                Profile(14, "1g.6gb", 1, 5952, 1, 4, (0, 1, 2, 3)),
                Profile(21, "1g.6gb+me", 1, 5952, 1, 1, (0, 1, 2, 3), media="me"),
                Profile(5, "2g.12gb", 2, 11968, 2, 2, (0, 2)),
                Profile(6, "2g.12gb+me", 2, 11968, 2, 1, (0, 2), media="me"),
                Profile(0, "4g.24gb", 4, 24000, 4, 1, (0,)),
            ),
        ),
        _seven_slice(
            "A100-40GB",
            (5, 10, 20, 40),
            (4864, 9856, 19968, 40192),
            (
                "NVIDIA-A100-SXM4-40GB",
                "NVIDIA-A100-PCIE-40GB",
                "NVIDIA-A100-40GB-PCIe",
                "A100-SXM4-40GB",
            ),
            40,
        ),
        _seven_slice(
            "A100-80GB",
            (10, 20, 40, 80),
            (9728, 19968, 40192, 80896),
            ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "NVIDIA-A800-SXM4-80GB"),
            80,
            notes="1g.20gb MiB inferred",
        ),
        _seven_slice(
            "H100-80GB",
            (10, 20, 40, 80),
            (9984, 20096, 40448, 81152),
            ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H800"),
            80,
        ),
        _seven_slice(
            "H100-94GB",
            (12, 24, 47, 94),
            (11008, 22144, 47488, 95360),
            ("NVIDIA-H100-NVL", "NVIDIA-H800-NVL"),
            94,
        ),
        _seven_slice(
            "H100-96GB",
            (12, 24, 48, 96),
            (11264, 23552, 47616, 95232),
            ("NVIDIA-GH200-480GB", "NVIDIA-H100-96GB", "NVIDIA-H20"),
            96,
            notes="placements and 7g MiB inferred",
        ),
        _seven_slice(
            "H200-141GB",
            (18, 35, 71, 141),
            (16384, 33024, 71168, 143104),
            ("NVIDIA-H200", "NVIDIA-H200-NVL", "NVIDIA-H200-141GB-HBM3e"),
            141,
            notes="placements inferred from H100",
        ),
        _seven_slice(
            "GH200-144GB",
            (18, 36, 72, 144),
            (17920, 36096, 72192, 144384),
            ("NVIDIA-GH200-144G-HBM3e", "NVIDIA-GH200-144GB"),
            144,
            notes="placements, 3g/4g/7g MiB inferred",
        ),
        _seven_slice(
            "B200-180GB",
            (23, 45, 90, 180),
            (20992, 45312, 90624, 181248),
            ("NVIDIA-B200",),
            180,
            notes="placements, 3g/4g/7g MiB inferred",
        ),
        GpuModel(
            name="RTXPRO6000-96GB",
            grid=12,
            compute_budget=4,
            products=(
                "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition",
                "NVIDIA-RTX-PRO-6000-Blackwell-Workstation-Edition",
                "NVIDIA-RTX-PRO-6000-Blackwell-Max-Q-Workstation-Edition",
            ),
            memory_gib=96,
            profiles=(
                Profile(14, "1g.24gb", 1, 24192, 3, 4, (0, 3, 6, 9)),
                Profile(21, "1g.24gb+me", 1, 24192, 3, 1, (0, 3, 6, 9), media="me"),
                Profile(47, "1g.24gb+gfx", 1, 24192, 3, 4, (0, 3, 6, 9), media="gfx"),
                Profile(65, "1g.24gb+me.all", 1, 24192, 3, 1, (0, 3, 6, 9), media="all_me"),
                Profile(67, "1g.24gb-me", 1, 24192, 3, 4, (0, 3, 6, 9), media="no_me"),
                Profile(5, "2g.48gb", 2, 48512, 6, 2, (0, 6)),
                Profile(35, "2g.48gb+gfx", 2, 48512, 6, 2, (0, 6), media="gfx"),
                Profile(64, "2g.48gb+me.all", 2, 48512, 6, 1, (0, 6), media="all_me"),
                Profile(66, "2g.48gb-me", 2, 48512, 6, 2, (0, 6), media="no_me"),
                Profile(0, "4g.96gb", 4, 97280, 12, 1, (0,)),
                Profile(32, "4g.96gb+gfx", 4, 97280, 12, 1, (0,), media="gfx"),
            ),
        ),
    )


BUILTIN_MODELS: tuple[GpuModel, ...] = _builtin_models()


def _label_key(value: str) -> str:
    key = value.strip().upper()
    key = re.sub(r"-(MIG-.*|SHARED)$", "", key)  # GFD suffixes under mig.strategy=single/sharing
    return key.removeprefix("NVIDIA-")


class ModelRegistry:
    """Lookup of GPU models by short name or ``nvidia.com/gpu.product`` label.

    Starts from the built-in tables; :meth:`register` replaces a model with a table the agent
    discovered from NVML.
    """

    def __init__(self, models: tuple[GpuModel, ...] = BUILTIN_MODELS) -> None:
        self._models: dict[str, GpuModel] = {}
        self._labels: dict[str, str] = {}
        for model in models:
            self.register(model)

    def register(self, model: GpuModel) -> None:
        self._models[model.name] = model
        self._labels[_label_key(model.name)] = model.name
        for product in model.products:
            self._labels[_label_key(product)] = model.name

    def __iter__(self) -> Any:
        return iter(self._models.values())

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> GpuModel:
        """By short name (``A100-80GB``), case-insensitively, or by GFD product label."""
        model = self.find(name)
        if model is None:
            raise ModelError(
                f"unknown GPU model {name!r}; known models: {', '.join(self._models)} "
                "(or their nvidia.com/gpu.product label values)"
            )
        return model

    def find(self, name: str) -> GpuModel | None:
        if name in self._models:
            return self._models[name]
        short = self._labels.get(_label_key(name))
        return self._models[short] if short else None


#: The process-wide default registry.  Pure functions take a registry argument where it matters.
MODELS = ModelRegistry()


def get_model(name: str) -> GpuModel:
    return MODELS.get(name)

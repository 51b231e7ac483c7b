"""Layouts of one GPU: sets of GPU instances at explicit placements, and their validity."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jupyter_mig.mig.models import GpuModel, Profile


class LayoutError(ValueError):
    """A layout that the hardware would refuse."""


@dataclass(frozen=True, slots=True, order=True)
class Instance:
    """A GPU instance of a profile (by NVML id) at a placement start (memory-slice index)."""

    start: int
    profile_id: int

    def describe(self, model: GpuModel) -> str:
        return f"{model.profile(self.profile_id).name}@{self.start}"


def span_mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def layout_errors(model: GpuModel, instances: Iterable[Instance]) -> list[str]:
    """Why a layout is invalid; empty when the hardware would accept it."""
    errors: list[str] = []
    occupied = 0
    compute = 0
    counts: dict[int, int] = {}
    media = []
    for inst in sorted(instances):
        profile = model.by_id.get(inst.profile_id)
        if profile is None:
            errors.append(f"{model.name} has no profile with NVML id {inst.profile_id}")
            continue
        if inst.start not in profile.starts:
            legal = ",".join(map(str, profile.starts))
            errors.append(f"{profile.name} cannot start at slice {inst.start} (legal: {legal})")
            continue
        mask = span_mask(inst.start, profile.size)
        if occupied & mask:
            errors.append(f"{profile.name}@{inst.start} overlaps another instance")
        occupied |= mask
        compute += profile.compute
        counts[profile.nvml_id] = counts.get(profile.nvml_id, 0) + 1
        if counts[profile.nvml_id] == profile.max_count + 1:
            errors.append(f"more than {profile.max_count} x {profile.name}")
        media.append(profile.media)
    if compute > model.compute_budget:
        errors.append(f"{compute} compute slices exceed the budget of {model.compute_budget}")
    errors.extend(_media_errors(media))
    return errors


def _media_errors(media: list[str]) -> list[str]:
    extended = media.count("me") + media.count("all_me")
    if extended > 1:
        return ["more than one media-extension (+me) instance"]
    if "all_me" in media and any(m not in ("all_me", "no_me") for m in media):
        return ["a +me.all instance allows only -me instances beside it"]
    return []


def is_valid(model: GpuModel, instances: Iterable[Instance]) -> bool:
    return not layout_errors(model, instances)


def validate_layout(model: GpuModel, instances: Iterable[Instance]) -> None:
    errors = layout_errors(model, instances)
    if errors:
        raise LayoutError(f"invalid {model.name} layout: {errors[0]}")


def can_add(model: GpuModel, instances: tuple[Instance, ...], candidate: Instance) -> bool:
    """Whether ``candidate`` can join a valid layout ``instances``."""
    return is_valid(model, (*instances, candidate))


def enumerate_layouts(
    model: GpuModel,
    base: Iterable[Instance] = (),
    profiles: Iterable[Profile] | None = None,
    maximal_only: bool = False,
) -> Iterator[tuple[Instance, ...]]:
    """Every valid layout that contains ``base``, built from ``profiles`` (default: all).

    Each layout is yielded once, as a sorted tuple.  ``maximal_only`` keeps those to which no
    instance of ``profiles`` can be added.
    """
    base_layout = tuple(sorted(base))
    validate_layout(model, base_layout)
    options = sorted(
        Instance(start, p.nvml_id)
        for p in (model.profiles if profiles is None else profiles)
        for start in p.starts
    )

    def extend(current: tuple[Instance, ...], first_option: int) -> Iterator[tuple[Instance, ...]]:
        grew = False
        for i in range(first_option, len(options)):
            option = options[i]
            if option in current or not can_add(model, current, option):
                continue
            grew = True
            yield from extend(tuple(sorted((*current, option))), i + 1)
        if not maximal_only or (
            not grew
            and not any(
                option not in current and can_add(model, current, option) for option in options
            )
        ):
            yield current

    yield from extend(base_layout, 0)

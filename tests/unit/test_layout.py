"""Layout validity and enumeration (reference §3-§4)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_mig.mig.layout import (
    Instance,
    LayoutError,
    enumerate_layouts,
    is_valid,
    layout_errors,
    validate_layout,
)
from jupyter_mig.mig.models import BUILTIN_MODELS, GpuModel, Profile, get_model

EIGHT_WIDE = [m for m in BUILTIN_MODELS if m.grid == 8]


def plain_named(model: GpuModel, *prefixes: str) -> list[Profile]:
    """The plain (no media variant) profiles whose names start with each prefix, in order."""
    found = []
    for prefix in prefixes:
        matches = [p for p in model.profiles if p.media == "none" and p.name.startswith(prefix)]
        found.append(min(matches, key=lambda p: p.size))  # single-memory 1g when two exist
    return found


def layouts(model: GpuModel, profiles: list[Profile]) -> set[tuple[tuple[str, int], ...]]:
    return {
        tuple(sorted((model.by_id[i.profile_id].name, i.start) for i in layout))
        for layout in enumerate_layouts(model, profiles=profiles, maximal_only=True)
    }


def a100_reference_layouts(names: dict[str, str]) -> set[tuple[tuple[str, int], ...]]:
    """The 19 A100 geometries of reference §4: 6 left halves x 3 right halves, plus the 7g."""
    one, two, three, four, seven = (names[k] for k in ("1g", "2g", "3g", "4g", "7g"))
    left = [
        [(four, 0)],
        [(three, 0)],
        [(two, 0), (two, 2)],
        [(two, 0), (one, 2), (one, 3)],
        [(one, 0), (one, 1), (two, 2)],
        [(one, 0), (one, 1), (one, 2), (one, 3)],
    ]
    right = [[(three, 4)], [(two, 4), (one, 6)], [(one, 4), (one, 5), (one, 6)]]
    result = {tuple(sorted(a + b)) for a, b in itertools.product(left, right)}
    result.add(((seven, 0),))
    return result


REFERENCE_MULTISETS = {
    (7,),
    (4, 3),
    (4, 2, 1),
    (4, 1, 1, 1),
    (3, 3),
    (3, 2, 1),
    (3, 1, 1, 1),
    (3, 2, 2),
    (3, 2, 1, 1),
    (3, 1, 1, 1, 1),
    (2, 2, 2, 1),
    (2, 2, 1, 1, 1),
    (2, 1, 1, 1, 1, 1),
    (1, 1, 1, 1, 1, 1, 1),
}


@pytest.mark.parametrize("model", EIGHT_WIDE, ids=lambda m: m.name)
def test_eight_wide_parts_have_the_19_reference_geometries(model: GpuModel) -> None:
    profiles = plain_named(model, "1g.", "2g.", "3g.", "4g.", "7g.")
    names = dict(zip(("1g", "2g", "3g", "4g", "7g"), (p.name for p in profiles), strict=True))
    found = layouts(model, profiles)
    assert len(found) == 19
    assert found == a100_reference_layouts(names)
    multisets = {
        tuple(sorted((int(name.split("g.")[0]) for name, _ in layout), reverse=True))
        for layout in found
    }
    assert multisets == REFERENCE_MULTISETS  # the 14 distinct multisets


def test_a100_40gb_with_1g_10gb_has_78_layouts_and_38_multisets() -> None:
    model = get_model("A100-40GB")
    profiles = [model.profile(n) for n in ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb")]
    profiles.append(model.profile("7g.40gb"))
    found = layouts(model, profiles)
    assert len(found) == 78
    assert len({tuple(sorted(name for name, _ in layout)) for layout in found}) == 38
    # the example of the reference: 4g@0 + 1g.10gb@4 + 1g.10gb@6 fills all 8 memory slices
    assert (("1g.10gb", 4), ("1g.10gb", 6), ("4g.20gb", 0)) in found


def test_a30_has_the_5_reference_layouts() -> None:
    model = get_model("A30-24GB")
    profiles = [p for p in model.profiles if p.media == "none"]
    assert layouts(model, profiles) == {
        (("4g.24gb", 0),),
        (("2g.12gb", 0), ("2g.12gb", 2)),
        (("1g.6gb", 2), ("1g.6gb", 3), ("2g.12gb", 0)),
        (("1g.6gb", 0), ("1g.6gb", 1), ("2g.12gb", 2)),
        (("1g.6gb", 0), ("1g.6gb", 1), ("1g.6gb", 2), ("1g.6gb", 3)),
    }


def test_rtx_pro_6000_has_the_a30_shape_on_a_12_unit_grid() -> None:
    model = get_model("RTXPRO6000-96GB")
    profiles = [p for p in model.profiles if p.media == "none"]
    assert layouts(model, profiles) == {
        (("4g.96gb", 0),),
        (("2g.48gb", 0), ("2g.48gb", 6)),
        (("1g.24gb", 6), ("1g.24gb", 9), ("2g.48gb", 0)),
        (("1g.24gb", 0), ("1g.24gb", 3), ("2g.48gb", 6)),
        (("1g.24gb", 0), ("1g.24gb", 3), ("1g.24gb", 6), ("1g.24gb", 9)),
    }


# -- the enumeration is complete, unique and respects its base --------------------------------


def all_candidates(model: GpuModel, profiles: list[Profile]) -> list[Instance]:
    return [Instance(s, p.nvml_id) for p in profiles for s in p.starts]


@pytest.mark.parametrize(
    ("model_name", "profile_names"),
    [
        ("A30-24GB", None),
        ("A100-40GB", ["1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb"]),
        ("H100-80GB", ["1g.10gb+me", "1g.20gb", "2g.20gb", "4g.40gb"]),
        ("RTXPRO6000-96GB", ["1g.24gb", "1g.24gb+me.all", "1g.24gb-me", "2g.48gb+gfx"]),
    ],
)
def test_enumeration_is_every_valid_subset(
    model_name: str, profile_names: list[str] | None
) -> None:
    model = get_model(model_name)
    profiles = (
        list(model.profiles) if profile_names is None else [model.profile(n) for n in profile_names]
    )
    candidates = all_candidates(model, profiles)
    assert len(candidates) <= 16  # small enough for the brute force
    brute = {
        tuple(sorted(subset))
        for r in range(len(candidates) + 1)
        for subset in itertools.combinations(candidates, r)
        if is_valid(model, subset)
    }
    found = list(enumerate_layouts(model, profiles=profiles))
    assert len(found) == len(set(found))  # each layout once
    assert all(layout == tuple(sorted(layout)) for layout in found)
    assert set(found) == brute
    maximal = set(enumerate_layouts(model, profiles=profiles, maximal_only=True))
    assert maximal == {
        layout
        for layout in brute
        if not any(c not in layout and is_valid(model, (*layout, c)) for c in candidates)
    }


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_enumeration_keeps_the_base(model: GpuModel) -> None:
    smallest = min(model.profiles, key=lambda p: (p.size, p.media != "none"))
    base = [Instance(smallest.starts[-1], smallest.nvml_id)]
    found = list(enumerate_layouts(model, base=base))
    assert found and all(base[0] in layout for layout in found)
    assert all(layout_errors(model, layout) == [] for layout in found)
    everything = list(enumerate_layouts(model))
    assert set(found) == {layout for layout in everything if base[0] in layout}


def test_enumeration_refuses_an_invalid_base() -> None:
    model = get_model("A100-40GB")
    with pytest.raises(LayoutError, match="A100-40GB"):
        list(enumerate_layouts(model, base=[Instance(0, 5), Instance(2, 14)]))


# -- layout_errors on the rules of reference §3 -----------------------------------------------


def custom_model() -> GpuModel:
    """A made-up 8-slice part with a budget of 3: the compute and count rules become reachable."""
    return GpuModel(
        name="TEST-8",
        grid=8,
        compute_budget=3,
        profiles=(
            Profile(1, "1g.1gb", 1, 1024, 1, 5, tuple(range(8))),
            Profile(2, "2g.2gb", 2, 2048, 2, 2, (0, 2, 4, 6)),
        ),
    )


def inst(model: GpuModel, name: str, start: int) -> Instance:
    return Instance(start, model.profile(name).nvml_id)


@pytest.mark.parametrize(
    ("model_name", "layout", "error"),
    [
        ("A100-40GB", [("3g.20gb", 2)], "3g.20gb cannot start at slice 2"),
        ("A100-40GB", [("2g.10gb", 6)], "cannot start at slice 6"),
        ("A100-40GB", [("1g.5gb", 7)], "cannot start at slice 7"),
        ("A100-40GB", [("4g.20gb", 0), ("2g.10gb", 2)], "overlaps"),
        ("A100-40GB", [("7g.40gb", 0), ("1g.5gb", 3)], "overlaps"),
        ("A100-40GB", [("1g.10gb", 4), ("1g.5gb", 5)], "overlaps"),
        ("A100-40GB", [("1g.5gb+me", 0), ("1g.5gb+me", 1)], "media-extension"),
        ("A30-24GB", [("1g.6gb+me", 0), ("2g.12gb+me", 2)], "media-extension"),
        ("RTXPRO6000-96GB", [("1g.24gb+me.all", 0), ("1g.24gb", 3)], "+me.all"),
        ("RTXPRO6000-96GB", [("2g.48gb+me.all", 0), ("1g.24gb+gfx", 6)], "+me.all"),
        ("RTXPRO6000-96GB", [("1g.24gb+me.all", 0), ("1g.24gb+me", 3)], "media-extension"),
    ],
)
def test_invalid_layouts_say_why(
    model_name: str, layout: list[tuple[str, int]], error: str
) -> None:
    model = get_model(model_name)
    instances = [inst(model, name, start) for name, start in layout]
    errors = layout_errors(model, instances)
    assert errors and any(error in e for e in errors), errors
    assert not is_valid(model, instances)
    with pytest.raises(LayoutError, match=model_name):
        validate_layout(model, instances)


@pytest.mark.parametrize(
    ("model_name", "layout"),
    [
        ("A100-40GB", []),
        ("A100-40GB", [("4g.20gb", 0), ("3g.20gb", 4)]),
        ("A100-40GB", [("1g.5gb+me", 3), ("1g.10gb", 6), ("2g.10gb", 0)]),
        ("H100-80GB", [("1g.20gb", 0), ("1g.20gb", 2), ("1g.20gb", 4), ("1g.20gb", 6)]),
        ("RTXPRO6000-96GB", [("1g.24gb+me.all", 0), ("1g.24gb-me", 3), ("2g.48gb-me", 6)]),
        ("RTXPRO6000-96GB", [("1g.24gb+gfx", 0), ("1g.24gb+me", 3), ("2g.48gb", 6)]),
    ],
)
def test_valid_layouts(model_name: str, layout: list[tuple[str, int]]) -> None:
    model = get_model(model_name)
    instances = [inst(model, name, start) for name, start in layout]
    assert layout_errors(model, instances) == []
    validate_layout(model, instances)


def test_compute_budget_and_max_count() -> None:
    model = custom_model()
    assert layout_errors(model, [inst(model, "1g.1gb", s) for s in (0, 1, 2)]) == []
    errors = layout_errors(model, [inst(model, "1g.1gb", s) for s in (0, 1, 2, 3)])
    assert any("exceed the budget of 3" in e for e in errors)
    errors = layout_errors(model, [inst(model, "2g.2gb", 0), inst(model, "1g.1gb", 2)])
    assert errors == []
    errors = layout_errors(model, [inst(model, "2g.2gb", 0), inst(model, "2g.2gb", 2)])
    assert any("exceed the budget" in e for e in errors)
    six = GpuModel(
        name="TEST-COUNT",
        grid=8,
        compute_budget=8,
        profiles=(Profile(1, "1g.1gb", 1, 1024, 1, 2, tuple(range(8))),),
    )
    errors = layout_errors(six, [Instance(s, 1) for s in (0, 1, 2)])
    assert errors == ["more than 2 x 1g.1gb"]


def test_unknown_profile_id_is_an_error() -> None:
    errors = layout_errors(get_model("A100-40GB"), [Instance(0, 99)])
    assert errors and "99" in errors[0]


# -- property: layout_errors agrees with a plain reading of the rules --------------------------


def oracle_valid(model: GpuModel, layout: list[Instance]) -> bool:
    """The reference §1/§3 rules, written out slice by slice."""
    slices = [0] * model.grid
    compute = 0
    counts: Counter[int] = Counter()
    media: list[str] = []
    for i in layout:
        p = model.by_id.get(i.profile_id)
        if p is None or i.start not in p.starts:
            return False
        for s in range(i.start, i.start + p.size):
            slices[s] += 1
        compute += p.compute
        counts[p.nvml_id] += 1
        media.append(p.media)
    if max(slices, default=0) > 1 or compute > model.compute_budget:
        return False
    if any(counts[p.nvml_id] > p.max_count for p in model.profiles):
        return False
    if sum(m in ("me", "all_me") for m in media) > 1:
        return False
    return not ("all_me" in media and any(m not in ("all_me", "no_me") for m in media))


@st.composite
def any_layouts(draw: Any) -> tuple[GpuModel, list[Instance]]:
    model = draw(st.sampled_from([*BUILTIN_MODELS, custom_model()]))
    profile_ids = [p.nvml_id for p in model.profiles]
    instances = draw(
        st.lists(
            st.builds(
                Instance,
                start=st.integers(0, model.grid - 1),
                profile_id=st.sampled_from(profile_ids),
            ),
            max_size=6,
            unique=True,
        )
    )
    return model, instances


@settings(max_examples=400, deadline=None)
@given(any_layouts())
def test_layout_errors_agree_with_the_rules(case: tuple[GpuModel, list[Instance]]) -> None:
    model, layout = case
    assert is_valid(model, layout) == oracle_valid(model, layout)
    assert is_valid(model, list(reversed(layout))) == is_valid(model, layout)

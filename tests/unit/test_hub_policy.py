"""Sizes planned against a capacity document under a policy (jupyter_mig.slices.policy)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from jupyter_mig.mig.models import BUILTIN_MODELS, MODELS, GpuModel
from jupyter_mig.mig.sizes import SizeError, nominal_gb, parse_size
from jupyter_mig.slices.errors import CapacityError, SliceRefused
from jupyter_mig.slices.policy import (
    BUSY,
    FREE,
    REPARTITION,
    Capacity,
    SlicePolicy,
    menu_entries,
    offered_sizes,
    parse_capacity,
    plan_slice,
    slice_options,
)


def document(*models: tuple[str, dict[str, tuple[int, int, int]]]) -> Capacity:
    return parse_capacity(
        {
            "models": [
                {
                    "model": name,
                    "gpus": 1,
                    "profiles": [
                        {
                            "profile": p,
                            "resource": f"nvidia.com/mig-{p}",
                            "free": f,
                            "creatable": c,
                            "in_use": u,
                        }
                        for p, (f, c, u) in rows.items()
                    ],
                }
                for name, rows in models
            ],
            "generated": "2026-11-29T12:00:00Z",
        }
    )


MIXED = document(
    ("A100-80GB", {"1g.10gb": (0, 6, 1), "3g.40gb": (0, 0, 2)}),
    ("H100-80GB", {"1g.10gb": (2, 0, 0), "3g.40gb": (0, 1, 0)}),
    ("A100-40GB", {"3g.20gb": (0, 0, 2)}),
)


def test_models_with_the_same_profile_share_one_option() -> None:
    [option] = slice_options("10gb", MIXED, SlicePolicy())
    assert option.profile == "1g.10gb" and option.resource == "nvidia.com/mig-1g.10gb"
    assert option.models == ("A100-80GB", "H100-80GB", "A100-40GB")
    assert option.free == 2 and option.creatable == 6 and option.status == FREE
    assert set(option.products) == {
        p for m in ("A100-80GB", "H100-80GB", "A100-40GB") for p in MODELS.get(m).products
    }


def test_free_beats_carvable_beats_busy() -> None:
    options = slice_options("20gb", MIXED, SlicePolicy())
    assert [o.status for o in options] == sorted(
        (o.status for o in options), key=[FREE, REPARTITION, BUSY].index
    )
    assert plan_slice("40gb", MIXED, SlicePolicy()).status == REPARTITION


def test_unknown_models_are_listed_not_used() -> None:
    capacity = document(("Z9000-1TB", {"1g.100gb": (1, 0, 0)}), ("A100-80GB", {}))
    assert capacity.unknown_models == ("Z9000-1TB",)
    assert [m.model.name for m in capacity.models] == ["A100-80GB"]


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"models": [{"gpus": 1}]},
        {"models": [{"model": "A100-80GB", "profiles": [{"profile": "1g.10gb", "free": -1}]}]},
    ],
)
def test_broken_documents_are_refused(doc: object) -> None:
    with pytest.raises(CapacityError):
        parse_capacity(doc)


def test_the_menu_defaults_to_what_the_cluster_offers() -> None:
    sizes = offered_sizes(MIXED)
    assert sizes == sorted(sizes, key=lambda s: int(s[:-2]))
    assert "10gb" in sizes and "80gb" in sizes and "5gb" in sizes  # A100-40GB has 1g.5gb
    assert [o.size for o in menu_entries(MIXED, SlicePolicy(sizes=("40gb", "10gb")))] == [
        "10gb",
        "40gb",
    ]


def test_a_cap_allows_what_fits_under_it_on_each_model() -> None:
    policy = SlicePolicy(maximum=("20gb",))
    assert plan_slice("1g.20gb", MIXED, policy).profile == "1g.20gb"
    with pytest.raises(SliceRefused, match="above your maximum of 20gb"):
        plan_slice("3g.40gb", MIXED, policy)
    assert "40gb" not in policy.menu(MIXED)


def test_the_menu_admits_profiles_the_menu_sizes_resolve_to() -> None:
    policy = SlicePolicy(sizes=("10gb",))
    assert plan_slice("mig-1g.10gb", MIXED, policy).profile == "1g.10gb"
    with pytest.raises(SliceRefused, match="not on this hub's list of sizes"):
        plan_slice("1g.20gb", MIXED, policy)


def test_nothing_partitioned_means_no_slice() -> None:
    with pytest.raises(SizeError, match="no GPU that jupyter-mig partitions"):
        plan_slice("10gb", parse_capacity({"models": []}), SlicePolicy())


def test_a_cap_never_rounds_up_to_the_next_profile() -> None:
    a100 = document(("A100-80GB", {"2g.20gb": (1, 0, 0), "3g.40gb": (1, 0, 0)}))
    policy = SlicePolicy(maximum=("30gb",))
    assert plan_slice("2g.20gb", a100, policy).profile == "2g.20gb"
    with pytest.raises(SliceRefused, match="above your maximum of 30gb"):
        plan_slice("40gb", a100, policy)
    a30 = document(("A30-24GB", {"2g.12gb": (1, 0, 0), "4g.24gb": (1, 0, 0)}))
    with pytest.raises(SliceRefused):
        plan_slice("4g.24gb", a30, SlicePolicy(maximum=("20gb",)))
    assert "24gb" not in SlicePolicy(maximum=("20gb",)).menu(a30)


@settings(max_examples=examples(200), deadline=None)
@given(
    model=st.sampled_from(BUILTIN_MODELS),
    cap=st.sampled_from(["5gb", "10gb", "20gb", "30gb", "45gb", "2g", "3g", "15GiB", "3g.40gb"]),
)
def test_a_permitted_profile_is_never_larger_than_its_cap(model: GpuModel, cap: str) -> None:
    policy = SlicePolicy(maximum=(cap,))
    req = parse_size(cap)
    for profile in model.profiles:
        if not policy.permits(model, profile):
            continue
        if req.kind == "gb":
            assert nominal_gb(profile) <= req.amount
        elif req.kind == "gib":
            assert profile.memory_mib <= req.amount * 1024
        elif req.kind == "compute":
            assert profile.compute <= req.amount
        else:
            assert profile.compute <= 3 and nominal_gb(profile) <= 40

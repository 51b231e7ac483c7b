"""GPU models and profile tables against NVIDIA's published MIG profile tables (MIG user guide)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from jupyter_mig.mig.contract import ContractError, parse_input, render_plan
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import (
    BUILTIN_MODELS,
    MODELS,
    GpuModel,
    ModelError,
    ModelRegistry,
    get_model,
)
from jupyter_mig.mig.planner import plan_round

# (name, NVML id, compute slices, placement size, max count, starts), from the reference tables.
EIGHT_WIDE_SHAPE = [
    # suffix index: 0 = single-memory 1g, 1 = double-memory 1g / 2g, 2 = 3g/4g, 3 = 7g
    ("1g.{0}gb", 19, 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    ("1g.{0}gb+me", 20, 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    ("1g.{1}gb", 15, 1, 2, 4, (0, 2, 4, 6)),
    ("2g.{1}gb", 14, 2, 2, 3, (0, 2, 4)),
    ("3g.{2}gb", 9, 3, 4, 2, (0, 4)),
    ("4g.{2}gb", 5, 4, 4, 1, (0,)),
    ("7g.{3}gb", 0, 7, 8, 1, (0,)),
]
EIGHT_WIDE_GB = {
    "A100-40GB": (5, 10, 20, 40),
    "A100-80GB": (10, 20, 40, 80),
    "H100-80GB": (10, 20, 40, 80),
    "H100-94GB": (12, 24, 47, 94),
    "H100-96GB": (12, 24, 48, 96),
    "H200-141GB": (18, 35, 71, 141),
    "GH200-144GB": (18, 36, 72, 144),
    "B200-180GB": (23, 45, 90, 180),
}
A30 = [
    ("1g.6gb", 14, 1, 1, 4, (0, 1, 2, 3)),
    ("1g.6gb+me", 21, 1, 1, 1, (0, 1, 2, 3)),
    ("2g.12gb", 5, 2, 2, 2, (0, 2)),
    ("2g.12gb+me", 6, 2, 2, 1, (0, 2)),
    ("4g.24gb", 0, 4, 4, 1, (0,)),
]
RTX_1G = (0, 3, 6, 9)
RTXPRO6000 = [
    ("1g.24gb", 14, 1, 3, 4, RTX_1G),
    ("1g.24gb+me", 21, 1, 3, 1, RTX_1G),
    ("1g.24gb+gfx", 47, 1, 3, 4, RTX_1G),
    ("1g.24gb+me.all", 65, 1, 3, 1, RTX_1G),
    ("1g.24gb-me", 67, 1, 3, 4, RTX_1G),
    ("2g.48gb", 5, 2, 6, 2, (0, 6)),
    ("2g.48gb+gfx", 35, 2, 6, 2, (0, 6)),
    ("2g.48gb+me.all", 64, 2, 6, 1, (0, 6)),
    ("2g.48gb-me", 66, 2, 6, 2, (0, 6)),
    ("4g.96gb", 0, 4, 12, 1, (0,)),
    ("4g.96gb+gfx", 32, 4, 12, 1, (0,)),
]


def expected_tables() -> dict[str, tuple[int, int, list[tuple[Any, ...]]]]:
    tables: dict[str, tuple[int, int, list[tuple[Any, ...]]]] = {
        "A30-24GB": (4, 4, A30),
        "RTXPRO6000-96GB": (12, 4, RTXPRO6000),
    }
    for model, gb in EIGHT_WIDE_GB.items():
        rows = [(name.format(*gb), *rest) for name, *rest in EIGHT_WIDE_SHAPE]
        tables[model] = (8, 7, rows)
    return tables


# Memory (MiB) that the reference reports as observed (not inferred).
OBSERVED_MIB = {
    ("A100-40GB", "1g.5gb"): 4864,
    ("A100-40GB", "2g.10gb"): 9856,
    ("A100-40GB", "3g.20gb"): 19968,
    ("A100-40GB", "7g.40gb"): 40192,
    ("A100-80GB", "1g.10gb"): 9728,
    ("A100-80GB", "2g.20gb"): 19968,
    ("A100-80GB", "3g.40gb"): 40192,
    ("A100-80GB", "7g.80gb"): 80896,
    ("A30-24GB", "1g.6gb"): 5952,
    ("A30-24GB", "2g.12gb"): 11968,
    ("A30-24GB", "4g.24gb"): 24000,
    ("H100-80GB", "1g.10gb"): 9984,
    ("H100-80GB", "1g.20gb"): 20096,
    ("H100-80GB", "3g.40gb"): 40448,
    ("H100-80GB", "7g.80gb"): 81152,
    ("H100-94GB", "1g.12gb"): 11008,
    ("H100-94GB", "2g.24gb"): 22144,
    ("H100-94GB", "3g.47gb"): 47488,
    ("H100-94GB", "7g.94gb"): 95360,
    ("H200-141GB", "1g.18gb"): 16384,
    ("H200-141GB", "1g.35gb"): 33024,
    ("H200-141GB", "3g.71gb"): 71168,
    ("B200-180GB", "1g.45gb"): 45312,
    ("RTXPRO6000-96GB", "2g.48gb"): 48512,
}


def test_the_ten_models_are_built_in() -> None:
    assert sorted(m.name for m in BUILTIN_MODELS) == sorted(expected_tables())
    assert sorted(MODELS.names()) == sorted(expected_tables())


@pytest.mark.parametrize("name", sorted(expected_tables()))
def test_profile_table_matches_the_reference(name: str) -> None:
    grid, budget, rows = expected_tables()[name]
    model = get_model(name)
    assert (model.grid, model.compute_budget) == (grid, budget)
    got = sorted(
        (p.name, p.nvml_id, p.compute, p.size, p.max_count, tuple(p.starts)) for p in model.profiles
    )
    assert got == sorted(rows)


@pytest.mark.parametrize("name", sorted(expected_tables()))
def test_memory_grows_with_the_profile(name: str) -> None:
    model = get_model(name)
    for a in model.profiles:
        for b in model.profiles:
            if a.size < b.size:
                assert a.memory_mib < b.memory_mib, (a.name, b.name)
            if a.size == b.size:  # same memory slices: same memory, give or take a driver
                assert abs(a.memory_mib - b.memory_mib) <= 0.02 * a.memory_mib, (a.name, b.name)
    # The memory of the whole-GPU profile is close to the nominal size of the model.
    full = model.full_profile
    assert full.size == model.grid
    assert 0.9 * model.memory_gib <= full.memory_gib <= 1.05 * model.memory_gib


@pytest.mark.parametrize(("key", "mib"), sorted(OBSERVED_MIB.items()))
def test_observed_memory(key: tuple[str, str], mib: int) -> None:
    model_name, profile_name = key
    assert get_model(model_name).profile(profile_name).memory_mib == mib


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_media_extension_profiles_allow_one_per_gpu(model: GpuModel) -> None:
    extended = [p for p in model.profiles if p.media in ("me", "all_me")]
    assert extended, "every built-in model has a +me profile"
    for p in extended:
        assert p.max_count == 1
        assert p.name.endswith(("+me", "+me.all"))
        assert p.resource_name == p.name.replace("+", ".")
    # Two media-extension instances never fit together, even where the space would.
    for a in extended:
        for b in extended:
            pair = [Instance(a.starts[0], a.nvml_id), Instance(b.starts[-1], b.nvml_id)]
            if a.starts[0] + a.size <= b.starts[-1]:
                assert layout_errors(model, pair), (a.name, b.name)


# -- lookup ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("A100-80GB", "A100-80GB"),
        ("a100-80gb", "A100-80GB"),
        ("A30-24GB", "A30-24GB"),
        ("NVIDIA-A30", "A30-24GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-H100-NVL", "H100-94GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA-B200", "B200-180GB"),
        ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "RTXPRO6000-96GB"),
        # GPU feature discovery appends the MIG profile under mig.strategy=single
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB"),
        ("NVIDIA-H100-80GB-HBM3-SHARED", "H100-80GB"),
    ],
)
def test_lookup_by_short_name_and_product_label(query: str, expected: str) -> None:
    assert get_model(query).name == expected
    assert MODELS.find(query) is get_model(expected)


@pytest.mark.parametrize("query", ["Z100-80GB", "", "NVIDIA-T4", "A100"])
def test_unknown_model_is_one_clear_line(query: str) -> None:
    with pytest.raises(ModelError) as info:
        get_model(query)
    message = str(info.value)
    assert "\n" not in message
    assert repr(query) in message and "A100-80GB" in message
    assert MODELS.find(query) is None


@pytest.mark.parametrize(
    ("ref", "expected_id"),
    [
        ("1g.10gb", 19),
        ("mig-1g.10gb", 19),
        ("nvidia.com/mig-1g.10gb", 19),
        ("1G.10GB", 19),
        (" 2g.20gb ", 14),
        ("1g.10gb+me", 20),
        ("1g.10gb.me", 20),
        ("nvidia.com/mig-1g.10gb.me", 20),
        ("1g.20gb", 15),
        (9, 9),
        (0, 0),
    ],
)
def test_profile_lookup_by_name_resource_name_and_id(ref: str | int, expected_id: int) -> None:
    assert get_model("A100-80GB").profile(ref).nvml_id == expected_id


@pytest.mark.parametrize("ref", ["1g.5gb", "3g.39gb", "mig-", 1, 99])
def test_unknown_profile_names_the_model(ref: str | int) -> None:
    with pytest.raises(ModelError) as info:
        get_model("A100-80GB").profile(ref)
    assert "A100-80GB" in str(info.value) and "\n" not in str(info.value)


# -- JSON form ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_json_round_trip(model: GpuModel) -> None:
    data = json.loads(json.dumps(model.to_json()))
    again = GpuModel.from_json(data)
    assert again == model
    assert again.profiles == model.profiles
    assert again.products == model.products


def renamed_a100_80gb() -> dict[str, Any]:
    """An A100-80GB table as a 535 driver publishes it: the 3g profile is ``3g.39gb``."""
    data = get_model("A100-80GB").to_json()
    for p in data["profiles"]:
        if p["id"] == 9:
            p["name"] = "3g.39gb"
            p["memory_mib"] = 39936
    return data


def test_published_table_replaces_the_built_in_one() -> None:
    registry = ModelRegistry()
    registry.register(GpuModel.from_json(renamed_a100_80gb()))
    model = registry.get("NVIDIA-A100-SXM4-80GB")
    assert model.profile(9).name == "3g.39gb"
    assert model.profile("3g.39gb").nvml_id == 9
    assert model.find_profile("3g.40gb") is None
    # the process-wide registry is untouched
    assert get_model("A100-80GB").profile(9).name == "3g.40gb"


def test_a_renamed_profile_still_plans_by_id() -> None:
    """Name drift (3g.40gb -> 3g.39gb): in-use instances given by id survive, requests resolve."""
    doc = {
        "models": [renamed_a100_80gb()],
        "nodes": [
            {
                "name": "n1",
                "gpus": [
                    {
                        "index": 0,
                        "model": "A100-80GB",
                        # an observed layout as the agent reports it: by NVML id
                        "instances": [{"profile": 9, "start": 0, "used": True}],
                    },
                    {"index": 1, "model": "NVIDIA-A100-SXM4-80GB", "instances": []},
                ],
            }
        ],
        "pending": [
            {"name": "by-new-name", "requests": {"mig-3g.39gb": 1}},
            {"name": "by-compute", "requests": {"3g": 2}},
        ],
    }
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert plan.unplaced == []
    out = render_plan(plan, nodes)
    gpu0 = next(g for g in out["gpus"] if g["index"] == 0)
    assert {"profile": "3g.39gb", "start": 0} in gpu0["instances"]
    given = [a["profile"] for pod in out["placements"].values() for a in pod]
    assert given == ["3g.39gb"] * 3
    starts = {(a["gpu"], a["start"]) for pod in out["placements"].values() for a in pod}
    assert starts == {(0, 4), (1, 0), (1, 4)}
    assert out["ops"] == {"create": 3, "destroy": 0}


def test_the_old_name_is_refused_after_a_rename() -> None:
    # The observed layout names the old profile name; with the renamed table that name is gone,
    # and the error says which field and which names exist.
    doc = {
        "models": [renamed_a100_80gb()],
        "nodes": [
            {
                "name": "n1",
                "gpus": [
                    {
                        "index": 0,
                        "model": "A100-80GB",
                        "instances": [{"profile": "3g.40gb", "start": 0, "used": True}],
                    }
                ],
            }
        ],
        "pending": [],
    }
    with pytest.raises(ContractError) as info:
        parse_input(doc)
    assert "nodes[0].gpus[0].instances[0].profile" in str(info.value)
    assert "3g.39gb" in str(info.value)


# -- bad tables --------------------------------------------------------------------------------


def _table() -> dict[str, Any]:
    return copy.deepcopy(get_model("A30-24GB").to_json())


def _edit(path: list[Any], value: Any) -> dict[str, Any]:
    data = _table()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["profiles"], [], "model.profiles"),
        (["profiles"], "x", "model.profiles"),
        (["grid"], 0, "model.grid"),
        (["grid"], "8", "model.grid"),
        (["compute_budget"], True, "model.compute_budget"),
        (["model"], _DELETE, "missing field 'model'"),
        (["profiles", 2, "id"], _DELETE, "model.profiles[2]: missing field 'id'"),
        (["profiles", 2, "id"], -1, "model.profiles[2].id"),
        (["profiles", 2, "size"], 0, "model.profiles[2].size"),
        (["profiles", 2, "compute"], 1.5, "model.profiles[2].compute"),
        (["profiles", 2, "max_count"], 0, "model.profiles[2].max_count"),
        (["profiles", 2, "starts"], [], "model.profiles[2].starts"),
        (["profiles", 2, "starts"], [0, "2"], "model.profiles[2].starts"),
        (["profiles", 2, "media"], "sparkly", "model.profiles[2].media"),
        (["profiles", 2, "starts"], [0, 3], "placement 3:2 lies outside the 4-slice grid"),
        (["profiles", 2, "compute"], 5, "exceeds the compute budget"),
        (["profiles", 2, "id"], 14, "duplicate NVML profile ids"),
        (["profiles", 2, "name"], "1g.6gb", "duplicate profile names"),
        (["profiles", 2], "2g", "model.profiles[2]"),
    ],
)
def test_bad_profile_tables_are_refused(path: list[Any], value: Any, expected: str) -> None:
    with pytest.raises(ModelError) as info:
        GpuModel.from_json(_edit(path, value))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_table_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ModelError):
        GpuModel.from_json([])  # type: ignore[arg-type]

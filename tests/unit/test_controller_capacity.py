"""The capacity API's numbers: free now, creatable by repartitioning free space, in use."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_mig.controller.capacity import capacity, most_instances, render_capacity
from jupyter_mig.mig.layout import Instance, enumerate_layouts
from jupyter_mig.mig.models import BUILTIN_MODELS, MODELS, GpuModel
from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

A100 = MODELS.get("A100-80GB")


def gpu(index: int, *instances: tuple[str, int, bool], model: GpuModel = A100) -> GpuSnapshot:
    return GpuSnapshot(
        index,
        model,
        tuple(ObservedInstance(model.profile(p).nvml_id, s, used) for p, s, used in instances),
    )


def rows(snapshots: list[NodeSnapshot]) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {
        (m.model, p.profile): (p.free, p.creatable, p.in_use)
        for m in capacity(snapshots)
        for p in m.profiles
    }


def test_an_empty_gpu_can_hold_seven_small_slices_or_one_whole() -> None:
    table = rows([NodeSnapshot("n1", (gpu(0),))])
    assert table[("A100-80GB", "1g.10gb")] == (0, 7, 0)
    assert table[("A100-80GB", "7g.80gb")] == (0, 1, 0)
    assert table[("A100-80GB", "3g.40gb")] == (0, 2, 0)


def test_in_use_instances_are_never_counted_as_room() -> None:
    busy = gpu(0, ("3g.40gb", 0, True), ("1g.10gb", 4, False))
    table = rows([NodeSnapshot("n1", (busy,))])
    assert table[("A100-80GB", "3g.40gb")] == (0, 1, 1)  # the other half is free space
    assert table[("A100-80GB", "1g.10gb")] == (1, 2, 0)  # starts 4, 5, 6; one exists
    assert table[("A100-80GB", "7g.80gb")] == (0, 0, 0)
    assert table[("A100-80GB", "4g.40gb")] == (0, 0, 0)


def test_models_are_summed_separately_and_sorted() -> None:
    a30 = MODELS.get("A30-24GB")
    node = NodeSnapshot("n1", (gpu(0), gpu(1, ("1g.10gb", 0, True)), gpu(2, model=a30)))
    models = capacity([node])
    assert [(m.model, m.gpus) for m in models] == [("A100-80GB", 2), ("A30-24GB", 1)]
    a100 = {p.profile: p for p in models[0].profiles}
    assert a100["1g.10gb"].creatable == 7 + 6 and a100["1g.10gb"].in_use == 1
    assert a100["1g.10gb"].resource == "nvidia.com/mig-1g.10gb"
    assert a100["1g.10gb+me"].resource == "nvidia.com/mig-1g.10gb.me"


def test_the_document_shape() -> None:
    doc = render_capacity(
        capacity([NodeSnapshot("n1", (gpu(0),))]), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    assert doc["generated"] == "2026-01-02T03:04:05Z"
    [model] = doc["models"]
    assert set(model) == {"model", "gpus", "profiles"}
    assert set(model["profiles"][0]) == {"profile", "resource", "free", "creatable", "in_use"}


@cache
def all_layouts(model: GpuModel) -> list[tuple[Instance, ...]]:
    return list(enumerate_layouts(model))


@st.composite
def used_layouts(draw: st.DrawFn) -> tuple[GpuModel, tuple[Instance, ...], int]:
    model = draw(st.sampled_from(BUILTIN_MODELS))
    layout = draw(st.sampled_from(all_layouts(model)))
    return model, layout, draw(st.sampled_from([p.nvml_id for p in model.profiles]))


@settings(max_examples=150, deadline=None)
@given(used_layouts())
def test_most_instances_matches_exhaustive_search(
    case: tuple[GpuModel, tuple[Instance, ...], int],
) -> None:
    model, used, profile_id = case
    best = max(
        len(layout) - len(used)
        for layout in enumerate_layouts(model, used, [model.by_id[profile_id]])
    )
    assert most_instances(model, used, profile_id) == best


def test_gpu_layouts_mark_in_use_free_and_creating_instances() -> None:
    from jupyter_mig.controller.capacity import gpu_layouts
    from jupyter_mig.mig.layout import Instance
    from jupyter_mig.mig.models import get_model
    from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

    a100 = get_model("A100-80GB")
    one_g, three_g = a100.profile("1g.10gb"), a100.profile("3g.40gb")
    snapshot = NodeSnapshot(
        name="gpu-node-1",
        gpus=(
            GpuSnapshot(
                index=0,
                model=a100,
                instances=(
                    ObservedInstance(one_g.nvml_id, 0, used=True),
                    ObservedInstance(one_g.nvml_id, 1, used=False),
                ),
            ),
        ),
    )
    desired = {0: (Instance(0, one_g.nvml_id), Instance(4, three_g.nvml_id))}
    (row,) = gpu_layouts(snapshot, desired)
    assert (row["node"], row["index"], row["model"], row["grid"]) == (
        "gpu-node-1",
        0,
        "A100-80GB",
        8,
    )
    assert [(i["profile"], i["start"], i["size"], i["state"]) for i in row["instances"]] == [
        ("1g.10gb", 0, 1, "in_use"),
        ("1g.10gb", 1, 1, "free"),
        ("3g.40gb", 4, 4, "creating"),
    ]

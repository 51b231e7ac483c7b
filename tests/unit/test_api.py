"""The MigNode helpers shared by controller and agent: parsing, rendering, conditions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from support.mignode import observed_gpu

from jupyter_mig.api import constants as c
from jupyter_mig.api.conditions import condition_is, get_condition, set_condition
from jupyter_mig.api.mignode import (
    MigNodeError,
    desired_layouts,
    is_interactive,
    is_opted_in,
    new_mignode,
    parse_status,
    render_spec,
    render_status,
    spec_observed,
)
from jupyter_mig.mig.layout import Instance, enumerate_layouts, layout_errors
from jupyter_mig.mig.models import BUILTIN_MODELS, MODELS, GpuModel, ModelRegistry, Profile

A100 = MODELS.get("A100-80GB")
A30 = MODELS.get("A30-24GB")


def _some_layouts(model: GpuModel, count: int) -> list[tuple[Instance, ...]]:
    return list(itertools.islice(enumerate_layouts(model, maximal_only=True), count))


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_spec_round_trip(model: GpuModel) -> None:
    layouts = {i: layout for i, layout in enumerate(_some_layouts(model, 3))}
    obj = new_mignode("gpu-node-1", spec=render_spec(layouts, dict.fromkeys(layouts, model)))
    assert desired_layouts(obj) == layouts
    for gpu in obj["spec"]["gpus"]:
        for inst in gpu["instances"]:
            assert model.by_id[inst["profileId"]].name == inst["profile"]


def test_desired_layouts_sorts_and_ignores_profile_names() -> None:
    obj = {
        "metadata": {"name": "n"},
        "spec": {
            "gpus": [
                {
                    "index": 2,
                    "instances": [
                        {"profile": "3g.39gb", "profileId": 9, "start": 4},
                        {"profileId": 19, "start": 0},
                    ],
                }
            ]
        },
    }
    assert desired_layouts(obj) == {2: (Instance(0, 19), Instance(4, 9))}


def test_empty_spec_means_no_gpus() -> None:
    assert desired_layouts({"metadata": {"name": "n"}}) == {}
    assert desired_layouts(new_mignode("n")) == {}


@pytest.mark.parametrize(
    ("gpus", "problem"),
    [
        ([{"index": 0, "instances": [{"profileId": 19, "start": -1}]}], "start"),
        ([{"index": 0, "instances": [{"profileId": 19}]}], "start"),
        ([{"index": 0, "instances": [{"start": 0}]}], "profileId"),
        ([{"index": 0, "instances": [{"profileId": "19", "start": 0}]}], "profileId"),
        ([{"index": 0}, {"index": 0}], "twice"),
        ([{"instances": []}], "index"),
        ({"index": 0}, "list"),
    ],
)
def test_desired_layouts_rejects_malformed_spec(gpus: object, problem: str) -> None:
    with pytest.raises(MigNodeError, match=problem):
        desired_layouts({"metadata": {"name": "gpu-node-1"}, "spec": {"gpus": gpus}})


def test_new_mignode_is_owned_by_its_node() -> None:
    obj = new_mignode("gpu-node-1", node_uid="1234")
    assert obj["apiVersion"] == f"{c.GROUP}/{c.VERSION}"
    assert obj["kind"] == c.KIND
    assert obj["metadata"]["name"] == "gpu-node-1"
    (owner,) = obj["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", "gpu-node-1", "1234")
    assert "ownerReferences" not in new_mignode("gpu-node-1")["metadata"]


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_status_round_trip(model: GpuModel) -> None:
    gpus = [observed_gpu(i, model, layout) for i, layout in enumerate(_some_layouts(model, 2))]
    conditions = set_condition([], c.CONDITION_READY, "True", c.REASON_APPLIED)
    obj = {"metadata": {"name": "n"}, "status": render_status(gpus, 3, conditions)}
    status = parse_status(obj)
    assert status.observed_generation == 3
    assert status.gpus == tuple(gpus)
    assert [g.model for g in status.gpus] == [model] * len(gpus)
    assert list(status.conditions) == conditions
    for gpu, original in zip(status.gpus, gpus, strict=True):
        assert gpu.layout == tuple(sorted(i.instance for i in original.instances))
        assert gpu.in_use == {i.instance for i in original.instances if i.pod is not None}


def test_published_profile_table_wins_over_builtin() -> None:
    """A driver that names 3g differently and has an extra profile: its table is used."""
    renamed = tuple(
        Profile(p.nvml_id, "3g.39gb", p.compute, p.memory_mib, p.size, p.max_count, p.starts)
        if p.nvml_id == 9
        else p
        for p in A100.profiles
    )
    published = GpuModel(A100.name, A100.grid, A100.compute_budget, renamed, A100.products)
    obj = {"status": {"gpus": [{"index": 0, "model": A100.name, "profiles": published.to_json()}]}}
    (gpu,) = parse_status(obj).gpus
    assert gpu.model is not None
    assert gpu.model.by_id[9].name == "3g.39gb"
    assert MODELS.get(A100.name).by_id[9].name != "3g.39gb"


def test_status_without_table_falls_back_to_registry_by_name_or_product() -> None:
    by_product = {"status": {"gpus": [{"index": 0, "product": "NVIDIA-A30"}]}}
    assert parse_status(by_product).gpus[0].model == A30
    by_name = {"status": {"gpus": [{"index": 1, "model": "A30-24GB"}]}}
    assert parse_status(by_name).gpus[0].model == A30
    unknown = {"status": {"gpus": [{"index": 0, "product": "NVIDIA-T4"}]}}
    assert parse_status(unknown).gpus[0].model is None
    assert parse_status(by_product, ModelRegistry(())).gpus[0].model is None


def test_status_missing_means_nothing_reported() -> None:
    status = parse_status({"metadata": {"name": "n"}})
    assert status.observed_generation is None
    assert status.gpus == ()
    assert status.gpu(0) is None


@pytest.mark.parametrize(
    "status",
    [
        {"observedGeneration": "3"},
        {"gpus": [{"index": 0, "profiles": {"model": "x"}}]},
        {"gpus": [{"index": 0, "instances": [{"profileId": 19, "start": -2}]}]},
        {"gpus": {"index": 0}},
    ],
)
def test_parse_status_rejects_malformed_status(status: object) -> None:
    with pytest.raises(MigNodeError):
        parse_status({"metadata": {"name": "n"}, "status": status})


def test_spec_observed_is_the_generation_handshake() -> None:
    obj = {"metadata": {"name": "n", "generation": 4}, "status": {"observedGeneration": 3}}
    assert not spec_observed(obj)
    obj["status"]["observedGeneration"] = 4
    assert spec_observed(obj)
    assert not spec_observed({"metadata": {"name": "n"}})


def test_interactive_and_opt_in() -> None:
    assert is_interactive({"component": "singleuser-server"}, None)
    assert is_interactive(None, {c.INTERACTIVE_ANNOTATION: "True"})
    assert not is_interactive({"component": "hub"}, {c.INTERACTIVE_ANNOTATION: "false"})
    assert not is_interactive(None, None)
    assert is_opted_in({c.PARTITIONING_LABEL: "dynamic"})
    assert not is_opted_in({c.PARTITIONING_LABEL: "static"})
    assert not is_opted_in(None)


T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = set_condition([], c.CONDITION_DEGRADED, "False", c.REASON_AS_EXPECTED, now=T0)
    later = T0 + timedelta(minutes=5)
    same = set_condition(
        first, c.CONDITION_DEGRADED, "False", c.REASON_AS_EXPECTED, "still fine", 7, later
    )
    cond = get_condition(same, c.CONDITION_DEGRADED)
    assert cond is not None
    assert cond["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert (cond["message"], cond["observedGeneration"]) == ("still fine", 7)
    flipped = set_condition(same, c.CONDITION_DEGRADED, "True", c.REASON_NVML_ERROR, now=later)
    cond = get_condition(flipped, c.CONDITION_DEGRADED)
    assert cond is not None
    assert cond["lastTransitionTime"] == "2026-11-29T12:05:00Z"
    assert condition_is(flipped, c.CONDITION_DEGRADED, "True")
    assert not condition_is(flipped, c.CONDITION_READY, "True")


def test_set_condition_keeps_order_and_does_not_mutate_its_input() -> None:
    conditions: list[dict[str, object]] = []
    for type_ in c.CONDITION_TYPES:
        conditions = set_condition(conditions, type_, "Unknown", "Starting", now=T0)
    snapshot = [dict(cond) for cond in conditions]
    updated = set_condition(conditions, c.CONDITION_APPLYING, "True", c.REASON_APPLYING, now=T0)
    assert conditions == snapshot
    assert [cond["type"] for cond in updated] == list(c.CONDITION_TYPES)
    assert len(updated) == len(c.CONDITION_TYPES)


def test_rendered_spec_layouts_are_what_the_agent_validates() -> None:
    """render_spec does not judge; an overlapping layout survives for the agent to refuse."""
    overlapping = (Instance(0, 9), Instance(0, 19))
    obj = new_mignode("n", spec=render_spec({0: overlapping}, {0: A100}))
    assert desired_layouts(obj)[0] == overlapping
    assert layout_errors(A100, desired_layouts(obj)[0])

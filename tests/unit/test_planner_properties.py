"""The planner's hard rules, determinism and no-op rounds, as hypothesis properties, plus a few
hand-made rounds for each rule and objective (issue 2, item 3)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import (
    MODELS_BY_NAME,
    RandomChooser,
    examples,
    plan_violations,
    random_layout,
    rounds,
)

from jupyter_mig.mig.contract import parse_input, render_plan
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.planner import Demand, Plan, plan_round
from jupyter_mig.mig.sizes import parse_size

PROPERTY = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def plan_doc(doc: dict[str, Any]) -> tuple[Plan, dict[str, Any]]:
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    return plan, render_plan(plan, nodes)


# -- hard rules ---------------------------------------------------------------------------------


# A pod with one request that no GPU of the round can serve (found by this test at scale).
UNSERVABLE_ITEM = {
    "nodes": [{"name": "node-0", "gpus": [{"index": 0, "model": "A30-24GB", "instances": []}]}],
    "pending": [{"name": "pod-0", "requests": {"1g.6gb": 1, "35gb": 1}}],
}


@PROPERTY
@given(rounds())
@example(UNSERVABLE_ITEM)
def test_hard_rules_hold(doc: dict[str, Any]) -> None:
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert plan_violations(nodes, demands, plan) == [], json.dumps(doc)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(max_nodes=4, max_gpus=4, min_pods=8, max_pods=30, max_existing=7))
def test_hard_rules_hold_on_bigger_rounds(doc: dict[str, Any]) -> None:
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert plan_violations(nodes, demands, plan) == [], json.dumps(doc)


# -- determinism --------------------------------------------------------------------------------


def shuffled(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The same round with every list and object order permuted."""
    other = copy.deepcopy(doc)
    other["nodes"] = data.draw(st.permutations(other["nodes"]))
    for node in other["nodes"]:
        node["gpus"] = data.draw(st.permutations(node["gpus"]))
        for gpu in node["gpus"]:
            gpu["instances"] = data.draw(st.permutations(gpu["instances"]))
    other["pending"] = data.draw(st.permutations(other["pending"]))
    for pod in other["pending"]:
        if "nodes" in pod:
            pod["nodes"] = data.draw(st.permutations(pod["nodes"]))
    return other


def shuffle_requests(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    other = copy.deepcopy(doc)
    for pod in other["pending"]:
        keys = data.draw(st.permutations(list(pod["requests"])))
        pod["requests"] = {k: pod["requests"][k] for k in keys}
    return other


@PROPERTY
@given(rounds(), st.data())
def test_same_input_same_output(doc: dict[str, Any], data: st.DataObject) -> None:
    first, first_out = plan_doc(doc)
    again, again_out = plan_doc(copy.deepcopy(doc))
    assert again == first
    assert json.dumps(again_out) == json.dumps(first_out)
    _, reordered_out = plan_doc(shuffled(doc, data))
    assert json.dumps(reordered_out) == json.dumps(first_out)


@PROPERTY
@given(rounds(), st.data())
def test_request_order_within_a_pod_does_not_matter(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    # JSON objects have no order, so the same instances must go to the same pods; only the order
    # of a pod's own list of placements may follow the order of its requests.
    _, first_out = plan_doc(doc)
    _, reordered_out = plan_doc(shuffle_requests(doc, data))
    for out in (first_out, reordered_out):
        for pod_placements in out["placements"].values():
            pod_placements.sort(key=lambda a: json.dumps(a, sort_keys=True))
    assert json.dumps(reordered_out) == json.dumps(first_out)


def test_request_order_within_a_pod_does_not_matter_example() -> None:
    # found by the property above: two items of equal size, given in either order
    doc = round_doc(
        {
            "node-0": [gpu("A100-80GB")],
            "node-2": [gpu("A100-40GB", ("1g.5gb", 0, True), ("1g.5gb", 1, True))],
        },
        pod("pod-0", {"5gb": 1, "1g.10gb": 1}),
    )
    _, first = plan_doc(doc)
    doc["pending"][0]["requests"] = {"1g.10gb": 1, "5gb": 1}
    _, second = plan_doc(doc)
    assert second["gpus"] == first["gpus"]


# -- rounds that need no change -----------------------------------------------------------------


@PROPERTY
@given(rounds(min_pods=0, max_pods=0, max_existing=7))
def test_no_pending_pods_no_operations(doc: dict[str, Any]) -> None:
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert (plan.creates, plan.destroys) == (0, 0)
    assert plan.placements == {} and plan.unplaced == []
    for node in nodes:
        for gpu in node.gpus:
            before = sorted((i.start, i.profile_id) for i in gpu.instances)
            after = sorted((i.start, i.profile_id) for i in plan.layouts[(node.name, gpu.index)])
            assert after == before


@st.composite
def rounds_served_by_free_instances(draw: Any) -> dict[str, Any]:
    """Pods that each ask for existing free instances of their node, by profile name."""
    doc = draw(rounds(min_pods=0, max_pods=0, max_existing=7))
    pending: list[dict[str, Any]] = []
    for node in doc["nodes"]:
        one_model = len({g["model"] for g in node["gpus"]}) == 1
        wanted: list[str] = []
        for gpu in node["gpus"]:
            model = MODELS_BY_NAME[gpu["model"]]
            for inst in gpu["instances"]:
                if not inst.get("used", False) and draw(st.booleans()):
                    wanted.append(model.profile(inst["profile"]).name)
        while wanted:
            # several instances per pod only where every GPU of the node is the same model
            take = draw(st.integers(1, min(3, len(wanted)))) if one_model else 1
            requests: dict[str, int] = {}
            for name in wanted[:take]:
                prefix = draw(st.sampled_from(["", "mig-", "nvidia.com/mig-"]))
                requests[prefix + name] = requests.get(prefix + name, 0) + 1
            wanted = wanted[take:]
            pending.append(
                {"name": f"pod-{len(pending)}", "requests": requests, "nodes": [node["name"]]}
            )
    doc["pending"] = pending
    return doc


@PROPERTY
@given(rounds_served_by_free_instances())
def test_pods_that_fit_free_instances_need_no_operations(doc: dict[str, Any]) -> None:
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands)
    assert plan_violations(nodes, demands, plan) == []
    assert plan.unplaced == [], json.dumps(doc)
    assert (plan.creates, plan.destroys) == (0, 0), json.dumps(doc)


# -- hand-made rounds ---------------------------------------------------------------------------


def gpu(model: str, *instances: tuple[str, int, bool], index: int = 0) -> dict[str, Any]:
    return {
        "index": index,
        "model": model,
        "instances": [{"profile": p, "start": s, "used": u} for p, s, u in instances],
    }


def round_doc(nodes: dict[str, list[dict[str, Any]]], *pods: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": [{"name": n, "gpus": g} for n, g in nodes.items()], "pending": list(pods)}


def pod(name: str, requests: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "requests": requests, **extra}


def test_in_use_instances_are_never_destroyed() -> None:
    # A 4g request on an A30 whose slice 3 is in use cannot be served: the planner must not
    # destroy the in-use 1g to make room, but it may (and should) serve the 2g pod.
    doc = round_doc(
        {"n": [gpu("A30-24GB", ("1g.6gb", 3, True), ("1g.6gb", 2, False))]},
        pod("whole", {"4g.24gb": 1}, priority=9),
        pod("half", {"2g.12gb": 1}),
    )
    _, out = plan_doc(doc)
    assert out["unplaced"] == ["whole"]
    assert {"profile": "1g.6gb", "start": 3} in out["gpus"][0]["instances"]
    assert out["placements"]["half"] == [{"node": "n", "gpu": 0, "profile": "2g.12gb", "start": 0}]
    assert out["ops"] == {"create": 1, "destroy": 0}


def test_free_instances_in_the_way_are_destroyed_when_needed() -> None:
    doc = round_doc({"n": [gpu("H100-80GB", ("7g.80gb", 0, False))]}, pod("p", {"1g.10gb": 2}))
    plan, out = plan_doc(doc)
    assert out["unplaced"] == []
    assert out["ops"] == {"create": 2, "destroy": 1}
    assert plan.destroyed == {("n", 0): (Instance(start=0, profile_id=0),)}  # the 7g
    assert [i["profile"] for i in out["gpus"][0]["instances"]] == ["1g.10gb", "1g.10gb"]


def test_a_free_instance_is_reused_rather_than_created() -> None:
    doc = round_doc({"n": [gpu("A100-40GB", ("3g.20gb", 4, False))]}, pod("p", {"20gb": 1}))
    _, out = plan_doc(doc)
    assert out["placements"]["p"] == [{"node": "n", "gpu": 0, "profile": "3g.20gb", "start": 4}]
    assert out["ops"] == {"create": 0, "destroy": 0}


def test_higher_priority_then_interactive_wins() -> None:
    # One A30 holds one 4g.24gb; four pods want it.
    pods = [
        pod("batch-low", {"4g.24gb": 1}),
        pod("interactive-low", {"4g.24gb": 1}, interactive=True),
        pod("batch-high", {"4g.24gb": 1}, priority=2),
        pod("interactive-mid", {"4g.24gb": 1}, priority=1, interactive=True),
    ]
    _, out = plan_doc(round_doc({"n": [gpu("A30-24GB")]}, *pods))
    assert list(out["placements"]) == ["batch-high"]
    _, out = plan_doc(round_doc({"n": [gpu("A30-24GB")]}, *pods[:2]))
    assert list(out["placements"]) == ["interactive-low"]


def test_more_pods_beat_one_large_pod_of_the_same_tier() -> None:
    doc = round_doc(
        {"n": [gpu("A100-40GB")]},
        pod("whole", {"7g.40gb": 1}),
        pod("a", {"3g.20gb": 1}),
        pod("b", {"3g.20gb": 1}),
    )
    _, out = plan_doc(doc)
    assert sorted(out["placements"]) == ["a", "b"]


def test_node_restriction_is_hard() -> None:
    doc = round_doc(
        {"a": [gpu("A100-80GB")], "b": [gpu("A100-80GB", ("7g.80gb", 0, True))]},
        pod("only-b", {"10gb": 1}, nodes=["b"]),
        pod("only-a", {"10gb": 1}, nodes=["a"]),
        pod("nowhere", {"10gb": 1}, nodes=["c"]),
    )
    _, out = plan_doc(doc)
    assert sorted(out["unplaced"]) == ["nowhere", "only-b"]
    assert out["placements"]["only-a"][0]["node"] == "a"


def test_all_instances_of_a_pod_share_one_node() -> None:
    # Each node alone has room for two 3g instances; the pod wants three.
    doc = round_doc({"a": [gpu("A100-40GB")], "b": [gpu("A100-40GB")]}, pod("p", {"3g.20gb": 3}))
    _, out = plan_doc(doc)
    assert out["unplaced"] == ["p"] and out["ops"] == {"create": 0, "destroy": 0}
    doc["nodes"][1]["gpus"].append(gpu("A100-40GB", index=1))
    _, out = plan_doc(doc)
    assert out["unplaced"] == []
    assert {a["node"] for a in out["placements"]["p"]} == {"b"}


def test_a_size_resolves_per_gpu_model() -> None:
    # "20gb" is a 1g.20gb on an H100 and a 3g.20gb on an A100-40GB.
    doc = round_doc(
        {
            "a": [gpu("A100-40GB", ("4g.20gb", 0, True), ("1g.5gb", 4, True))],
            "h": [gpu("H100-80GB", ("7g.80gb", 0, True))],
        },
        pod("p", {"20gb": 1}),
    )
    _, out = plan_doc(doc)
    assert out["unplaced"] == ["p"]
    doc["nodes"][1]["gpus"] = [gpu("H100-80GB", ("4g.40gb", 0, True))]
    _, out = plan_doc(doc)
    (placed,) = out["placements"]["p"]
    assert (placed["node"], placed["profile"]) == ("h", "1g.20gb")


def test_only_demanded_instances_are_created() -> None:
    doc = round_doc({"n": [gpu("B200-180GB"), gpu("B200-180GB", index=1)]}, pod("p", {"1g": 1}))
    _, out = plan_doc(doc)
    assert out["ops"] == {"create": 1, "destroy": 0}
    assert sum(len(g["instances"]) for g in out["gpus"]) == 1


def test_a_pod_that_no_gpu_here_can_serve_stays_pending() -> None:
    # 35gb has no A30 profile; the other pods still get served and nothing is created for it
    doc = round_doc(
        {"n": [gpu("A30-24GB")]},
        pod("mixed", {"1g.6gb": 1, "35gb": 1}),
        pod("too-big", {"35gb": 2}),
        pod("fits", {"6gb": 1}),
    )
    _, out = plan_doc(doc)
    assert sorted(out["unplaced"]) == ["mixed", "too-big"]
    assert out["ops"] == {"create": 1, "destroy": 0}


def test_one_media_extension_instance_per_gpu() -> None:
    pods = [pod("me-1", {"1g.10gb+me": 1}), pod("me-2", {"nvidia.com/mig-1g.10gb.me": 1})]
    _, out = plan_doc(round_doc({"n": [gpu("A100-80GB")]}, *pods))
    assert len(out["placements"]) == 1 and len(out["unplaced"]) == 1
    _, out = plan_doc(round_doc({"n": [gpu("A100-80GB"), gpu("A100-80GB", index=1)]}, *pods))
    assert out["unplaced"] == []
    assert {p[0]["gpu"] for p in out["placements"].values()} == {0, 1}


def test_duplicate_pod_names_are_refused() -> None:
    items = (parse_size("10gb"),)
    with pytest.raises(ValueError, match="unique"):
        plan_round([], [Demand("a", items), Demand("a", items)])


def test_random_layouts_are_valid() -> None:
    # the generator behind every property above only makes valid input layouts
    chooser = RandomChooser(7)
    for name, model in MODELS_BY_NAME.items():
        for _ in range(50):
            assert layout_errors(model, random_layout(chooser, model, 8)) == [], name


# -- spare instances (issue 12) -----------------------------------------------------------------


def free_by_profile(nodes: Any, plan: Plan) -> tuple[set[tuple[str, int]], dict[Any, int]]:
    """(the (model, profile) pairs in use or placed, free instances per pair) after ``plan``."""
    placed = {(a.node, a.gpu, a.start) for slots in plan.placements.values() for a in slots}
    held: set[tuple[str, int]] = set()
    free: dict[tuple[str, int], int] = {}
    for node in nodes:
        for snap in node.gpus:
            used = {(i.start, i.profile_id) for i in snap.instances if i.used}
            for inst in plan.layouts[(node.name, snap.index)]:
                key = (snap.model.name, inst.profile_id)
                if (inst.start, inst.profile_id) in used or (
                    (node.name, snap.index, inst.start) in placed
                ):
                    held.add(key)
                else:
                    free[key] = free.get(key, 0) + 1
    return held, free


@PROPERTY
@given(rounds(max_existing=7), st.integers(1, 3))
def test_spares_change_no_placement_and_take_only_surplus(doc: dict[str, Any], spares: int) -> None:
    nodes, demands = parse_input(doc)
    plain = plan_round(nodes, demands)
    spared = plan_round(nodes, demands, spares=spares)
    assert plan_violations(nodes, demands, spared, spares) == [], json.dumps(doc)
    assert (spared.placements, spared.unplaced) == (plain.placements, plain.unplaced)
    held, before = free_by_profile(nodes, plain)
    _, after = free_by_profile(nodes, spared)
    for key in held:  # a profile in use keeps min(spares, what it had) free instances at least
        assert after.get(key, 0) >= min(spares, before.get(key, 0)), (key, json.dumps(doc))
    for gpu_key, made in plain.created.items():  # nothing the plan creates is given up
        assert set(made) <= set(spared.layouts[gpu_key])


def test_a_spare_of_the_size_in_demand_is_carved_from_free_space() -> None:
    # A 1g pod goes to the uncarved GPU; its spare goes beside it, and the free whole-GPU
    # instance of the other GPU (kept for a whole-GPU pod) is not broken for it.
    doc = round_doc(
        {"n": [gpu("A100-80GB"), gpu("A100-80GB", ("7g.80gb", 0, False), index=1)]},
        pod("p", {"1g.10gb": 1}),
    )
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands, spares=1)
    out = render_plan(plan, nodes)
    assert out["placements"]["p"] == [{"node": "n", "gpu": 0, "profile": "1g.10gb", "start": 6}]
    assert [i["profile"] for i in out["gpus"][0]["instances"]] == ["1g.10gb", "1g.10gb"]
    assert out["gpus"][1]["instances"] == [{"profile": "7g.80gb", "start": 0}]
    assert out["ops"] == {"create": 2, "destroy": 0}


def test_spares_break_a_surplus_free_instance_but_not_the_last_spare_of_a_profile() -> None:
    # GPU 0: a 3g in use and two free 2g; the pod takes one 2g, the other stays its spare.  The
    # 3g in use has no spare: it is carved from GPU 1's free 7g (no 7g is in use: a surplus).
    doc = round_doc(
        {
            "n": [
                gpu(
                    "A100-80GB", ("3g.40gb", 4, True), ("2g.20gb", 0, False), ("2g.20gb", 2, False)
                ),
                gpu("A100-80GB", ("7g.80gb", 0, False), index=1),
            ]
        },
        pod("p", {"2g.20gb": 1}),
    )
    nodes, demands = parse_input(doc)
    plan = plan_round(nodes, demands, spares=1)
    out = render_plan(plan, nodes)
    assert out["placements"]["p"][0]["gpu"] == 0
    assert sorted(i["profile"] for i in out["gpus"][0]["instances"]) == [
        "2g.20gb",
        "2g.20gb",
        "3g.40gb",
    ]
    assert [i["profile"] for i in out["gpus"][1]["instances"]] == ["3g.40gb"]
    assert out["ops"] == {"create": 1, "destroy": 1}
    assert plan_round(nodes, demands, spares=0).operations == 0

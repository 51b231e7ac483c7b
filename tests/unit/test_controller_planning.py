"""A planning round from cluster objects to spec writes and Events, without a cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from controller_objects import gpu_status, mignode, node, pod, spec_gpu

from jupyter_mig.api.mignode import desired_layouts
from jupyter_mig.controller import events as ev
from jupyter_mig.controller.planning import Assessment, Decision, assess, decide
from jupyter_mig.controller.selection import is_candidate, pending_pod
from jupyter_mig.controller.snapshot import (
    PLACEMENTS_ANNOTATION,
    NodeState,
    build_views,
    parse_reservation,
    render_reservation,
)
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import Assignment

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=5)
A100 = MODELS.get("A100-80GB")
P1G = "nvidia.com/mig-1g.10gb"
P3G = "nvidia.com/mig-3g.40gb"


def round_of(
    nodes: list[dict[str, Any]],
    mignodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    plannable: set[str] | None = None,
    now: datetime = NOW,
) -> tuple[Assessment, Decision]:
    views = build_views(nodes, mignodes, pods)
    pending = [pending_pod(p) for p in pods if is_candidate(p)]
    keys = {p.key for p in pending} if plannable is None else plannable
    assessment = assess(views, pending, keys, now, TIMEOUT)
    return assessment, decide(views, assessment, now, spares=0)  # the tests count demanded slices


def reasons(assessment: Assessment) -> dict[str, str]:
    return {e.name: e.reason for e in assessment.warnings}


def written_layout(decision: Decision, name: str, index: int = 0) -> tuple[Instance, ...]:
    write = next(w for w in decision.writes if w.node == name)
    return desired_layouts({"metadata": {"name": name}, "spec": write.spec})[index]


# -- serving pods ------------------------------------------------------------------------------


def test_a_pending_pod_gets_a_slice_carved_and_is_told_so() -> None:
    _, decision = round_of([node("n1")], [mignode("n1", [gpu_status(0)])], [pod("a", {P1G: 1})])
    [write] = decision.writes
    layout = written_layout(decision, "n1")
    assert [A100.by_id[i.profile_id].name for i in layout] == ["1g.10gb"]
    assert not layout_errors(A100, layout)
    assert write.resource_version == "100" and write.creates == 1 and write.destroys == 0
    [event] = write.events
    assert (event.name, event.type, event.reason) == ("a", "Normal", ev.REPARTITIONING)
    assert event.message == "creating 1g.10gb on n1 GPU 0"
    assert write.placements is not None
    reserved = json.loads(write.placements)["pods"]
    assert reserved == {"demo/a": [{"gpu": 0, "profileId": 19, "start": layout[0].start}]}


def test_a_free_instance_is_reused_without_a_write() -> None:
    status = gpu_status(0, [("1g.10gb", 3, None), ("3g.40gb", 4, "x/busy")])
    assessment, decision = round_of([node("n1")], [mignode("n1", [status])], [pod("a", {P1G: 1})])
    assert [d.name for d in assessment.demands] == ["demo/a"]
    assert decision.writes == [] and decision.waiting == []
    assert decision.plan.placements["demo/a"][0].start == 3


def test_an_in_use_instance_survives_and_a_full_gpu_means_waiting() -> None:
    status = gpu_status(0, [("7g.80gb", 0, "x/big")])
    _, decision = round_of([node("n1")], [mignode("n1", [status])], [pod("a", {P1G: 1})])
    assert decision.writes == []
    [event] = decision.waiting
    assert event.reason == ev.WAITING and event.type == "Normal"
    assert "1g.10gb" in event.message and "1 eligible GPU " in event.message


def test_free_instances_in_the_way_are_destroyed_and_the_event_says_so() -> None:
    status = gpu_status(0, [("1g.10gb", 0, None), ("1g.10gb", 4, "x/busy")])
    _, decision = round_of([node("n1")], [mignode("n1", [status])], [pod("a", {P3G: 1})])
    [write] = decision.writes
    layout = written_layout(decision, "n1")
    assert Instance(4, 19) in layout  # the busy one stays
    assert Instance(0, 19) not in layout and Instance(0, 9) in layout
    assert write.destroys == 1
    assert write.events[0].message == (
        "creating 3g.40gb on n1 GPU 0 (removing 1 free instance in the way)"
    )


def test_pods_reusing_a_slice_on_a_node_being_rewritten_wait_for_it_too() -> None:
    status = gpu_status(0, [("1g.10gb", 0, None), ("3g.40gb", 4, "x/busy")])
    pods = [pod("reuses", {P1G: 1}), pod("carves", {"nvidia.com/mig-2g.20gb": 1})]
    _, decision = round_of([node("n1")], [mignode("n1", [status])], pods)
    [write] = decision.writes
    assert [e.name for e in write.events] == ["carves"]  # only a created slice is news
    assert write.placements is not None
    assert sorted(json.loads(write.placements)["pods"]) == ["demo/carves", "demo/reuses"]


def test_higher_priority_wins_the_last_slot() -> None:
    status = gpu_status(0, [("4g.40gb", 0, "x/busy")])
    pods = [pod("low", {P3G: 1}, priority=0), pod("high", {P3G: 1}, priority=100)]
    _, decision = round_of([node("n1")], [mignode("n1", [status])], pods)
    assert [e.name for e in decision.writes[0].events] == ["high"]
    assert [e.name for e in decision.waiting] == ["low"]


def test_all_slices_of_a_pod_land_on_one_node() -> None:
    nodes = [node("n1"), node("n2")]
    mignodes = [
        mignode("n1", [gpu_status(0, [("4g.40gb", 0, "x/a")])]),
        mignode("n2", [gpu_status(0), gpu_status(1)]),
    ]
    p = pod("pair", {P3G: 2})
    _, decision = round_of(nodes, mignodes, [p])
    assert {a.node for a in decision.plan.placements["demo/pair"]} == {"n2"}


# -- what is planned and what waits ------------------------------------------------------------


def test_a_node_with_a_generation_in_flight_is_not_planned() -> None:
    status = gpu_status(0)
    busy = mignode("n1", [status], generation=4, observed=3)
    assessment, decision = round_of([node("n1")], [busy], [pod("a", {P1G: 1})])
    assert assessment.demands == [] and assessment.warnings == []
    assert decision.writes == [] and decision.waiting == []


def test_a_pod_waits_for_the_slice_being_carved_for_it_on_an_applying_node() -> None:
    carved = {"demo/a": [Assignment("n1", 0, 19, 0)]}
    annotations = {PLACEMENTS_ANNOTATION: render_reservation(NOW - timedelta(seconds=30), carved)}
    applying = mignode("n1", [gpu_status(0)], generation=4, observed=3, annotations=annotations)
    idle = mignode("n2", [gpu_status(0)])
    nodes = [node("n1"), node("n2")]
    assessment, decision = round_of(nodes, [applying, idle], [pod("a", {P1G: 1})])
    assert assessment.demands == [] and decision.writes == []
    # Another pod is planned on the idle node meanwhile, and a stale reservation expires.
    assessment, _ = round_of(nodes, [applying, idle], [pod("b", {P1G: 1})])
    assert [d.name for d in assessment.demands] == ["demo/b"]
    late = NOW + TIMEOUT
    assessment, decision = round_of(nodes, [applying, idle], [pod("a", {P1G: 1})], now=late)
    assert [d.name for d in assessment.demands] == ["demo/a"]
    assert [w.node for w in decision.writes] == ["n2"]


def test_a_reservation_on_a_settled_node_is_ignored() -> None:
    carved = {"demo/a": [Assignment("n1", 0, 19, 0)]}
    annotations = {PLACEMENTS_ANNOTATION: render_reservation(NOW, carved)}
    settled = mignode("n1", [gpu_status(0, [("1g.10gb", 0, None)])], annotations=annotations)
    assessment, decision = round_of([node("n1")], [settled], [pod("a", {P1G: 1})])
    assert [d.name for d in assessment.demands] == ["demo/a"]
    assert decision.writes == []  # reuses the carved slice


def test_pods_the_batch_has_not_released_are_not_planned_yet() -> None:
    assessment, decision = round_of(
        [node("n1")], [mignode("n1", [gpu_status(0)])], [pod("a", {P1G: 1})], plannable=set()
    )
    assert assessment.demands == [] and decision.writes == []
    assert assessment.demand_by_profile == {"1g.10gb": 1}


def test_until_the_agent_reports_nothing_is_planned_and_nobody_is_warned() -> None:
    unreported = mignode("n1", None, observed=None, spec_gpus=[])
    assessment, decision = round_of([node("n1")], [unreported], [pod("a", {P1G: 1})])
    assert build_views([node("n1")], [unreported], [])["n1"].state is NodeState.UNREPORTED
    assert assessment.demands == [] and assessment.warnings == [] and decision.writes == []


def test_an_opted_in_node_without_a_mignode_is_missing() -> None:
    assert build_views([node("n1")], [], [])["n1"].state is NodeState.MISSING


def test_a_pod_bound_but_not_yet_reported_pins_a_free_instance() -> None:
    status = gpu_status(0, [("1g.10gb", 0, None), ("3g.40gb", 4, "x/busy")])
    bound = pod("early", {P1G: 1}, node_name="n1", phase="Pending", unschedulable=False)
    late = pod("late", {P3G: 1})
    _, decision = round_of([node("n1")], [mignode("n1", [status])], [late])
    assert written_layout(decision, "n1") == (Instance(0, 9), Instance(4, 9))  # 1g.10gb goes
    _, decision = round_of([node("n1")], [mignode("n1", [status])], [bound, late])
    # 3g.40gb could only go at 0, where the 1g.10gb the bound pod is about to get sits.
    assert [e.name for e in decision.waiting] == ["late"]
    assert decision.writes == []
    reported = gpu_status(0, [("1g.10gb", 0, "demo/early"), ("3g.40gb", 4, "x/busy")])
    _, decision = round_of([node("n1")], [mignode("n1", [reported])], [bound, late])
    assert [e.name for e in decision.waiting] == ["late"]


# -- Warnings, once per reason -----------------------------------------------------------------


def test_bad_requests_are_warned_about_and_left_out() -> None:
    pods = [
        pod("unknown", {"nvidia.com/mig-2g.15gb": 1}),
        pod("huge", {"nvidia.com/mig-8g.400gb": 1}),
        pod("garbled", {"nvidia.com/mig-banana": 1}),
        pod("two", {P1G: 1, P3G: 1}),
        pod("elsewhere", {"nvidia.com/mig-1g.5gb": 1}),  # an A100-40GB profile
        pod("too-many", {"nvidia.com/mig-7g.80gb": 2}),
        pod("ok", {P1G: 1}),
    ]
    assessment, decision = round_of([node("n1")], [mignode("n1", [gpu_status(0)])], pods)
    assert reasons(assessment) == {
        "unknown": ev.UNKNOWN_PROFILE,
        "huge": ev.SLICE_TOO_LARGE,
        "garbled": ev.UNKNOWN_PROFILE,
        "two": "MultipleMigProfiles",
        "elsewhere": ev.PROFILE_NOT_OFFERED,
        "too-many": ev.REQUEST_TOO_LARGE,
    }
    assert all(e.type == "Warning" for e in assessment.warnings)
    messages = {e.name: e.message for e in assessment.warnings}
    assert "largest MIG slice is 7g.180gb on B200-180GB" in messages["huge"]
    assert "offer 1g.10gb" in messages["elsewhere"]
    assert [d.name for d in assessment.demands] == ["demo/ok"]
    assert [e.name for w in decision.writes for e in w.events] == ["ok"]


def test_no_eligible_dynamic_node() -> None:
    pods = [pod("picky", {P1G: 1}, node_selector={"pool": "elsewhere"})]
    assessment, _ = round_of([node("n1")], [mignode("n1", [gpu_status(0)])], pods)
    assert reasons(assessment) == {"picky": ev.NO_ELIGIBLE_NODE}
    assessment, _ = round_of(
        [node("n1", unschedulable=True)], [mignode("n1", [gpu_status(0)])], [pod("a", {P1G: 1})]
    )
    assert reasons(assessment) == {"a": ev.NO_ELIGIBLE_NODE}


def test_selectors_and_taints_restrict_the_demand_to_matching_nodes() -> None:
    gpu_taint = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    nodes = [node("n1", {"zone": "a"}), node("n2", {"zone": "b"}), node("n3", taints=[gpu_taint])]
    mignodes = [mignode(n, [gpu_status(0)]) for n in ("n1", "n2", "n3")]
    p = pod("a", {P1G: 1}, node_selector={"zone": "b"})
    assessment, decision = round_of(nodes, mignodes, [p])
    assert [d.nodes for d in assessment.demands] == [("n2",)]
    anywhere = pod("b", {P1G: 1}, tolerations=[{"operator": "Exists"}])
    assessment, _ = round_of(nodes, mignodes, [anywhere])
    assert [d.nodes for d in assessment.demands] == [None]  # every planned node: no list
    assert [w.node for w in decision.writes] == ["n2"]


def test_a_discovered_profile_table_replaces_the_built_in_one() -> None:
    table = A100.to_json()
    for profile in table["profiles"]:
        if profile["id"] == 9:
            profile["name"] = "3g.39gb"  # what some drivers call it
    status = gpu_status(0, table=table)
    pods = [pod("new-name", {"nvidia.com/mig-3g.39gb": 1}), pod("old-name", {P3G: 1})]
    assessment, decision = round_of([node("n1")], [mignode("n1", [status])], pods)
    assert reasons(assessment) == {"old-name": ev.PROFILE_NOT_OFFERED}
    assert [e.message for w in decision.writes for e in w.events] == [
        "creating 3g.39gb on n1 GPU 0"
    ]
    assert decision.writes[0].spec["gpus"][0]["instances"][0]["profile"] == "3g.39gb"


# -- specs: written only when they change, repaired when hand-edited ----------------------------


def test_a_fresh_mignode_gets_the_current_layout_as_its_spec() -> None:
    status = gpu_status(0, [("3g.40gb", 0, "x/busy"), ("1g.10gb", 4, None)])
    fresh = mignode("n1", [status], spec_gpus=[], generation=1, observed=1)
    _, decision = round_of([node("n1")], [fresh], [])
    [write] = decision.writes
    assert written_layout(decision, "n1") == (Instance(0, 9), Instance(4, 19))
    assert write.events == () and write.placements is None and write.creates == 0


def test_a_settled_node_is_not_rewritten() -> None:
    status = gpu_status(0, [("3g.40gb", 0, "x/busy"), ("1g.10gb", 4, None)])
    _, decision = round_of([node("n1")], [mignode("n1", [status])], [])
    assert decision.writes == []


def test_a_hand_edited_invalid_spec_is_replaced_not_crashed_on() -> None:
    status = gpu_status(0, [("1g.10gb", 0, None)])
    overlapping = [spec_gpu(0, [("3g.40gb", 0), ("7g.80gb", 0)])]
    _, decision = round_of([node("n1")], [mignode("n1", [status], spec_gpus=overlapping)], [])
    assert written_layout(decision, "n1") == (Instance(0, 19),)
    garbled = mignode("n1", [status])
    garbled["spec"] = {"gpus": "all of them"}
    _, decision = round_of([node("n1")], [garbled], [])
    assert written_layout(decision, "n1") == (Instance(0, 19),)


def test_an_unreadable_status_leaves_the_node_alone() -> None:
    broken = mignode("n1", [gpu_status(0)])
    broken["status"]["gpus"] = "lots"
    view = build_views([node("n1")], [broken], [])["n1"]
    assert view.state is NodeState.INVALID and view.problems
    assessment, decision = round_of([node("n1")], [broken], [pod("a", {P1G: 1})])
    assert decision.writes == [] and assessment.demands == []


def test_a_gpu_reported_with_an_impossible_layout_is_left_out() -> None:
    impossible = gpu_status(0, [("4g.40gb", 4, None)])  # 4g.40gb only starts at 0
    view = build_views([node("n1")], [mignode("n1", [impossible, gpu_status(1)])], [])["n1"]
    assert view.snapshot is not None and [g.index for g in view.snapshot.gpus] == [1]
    assert "GPU 0" in view.problems[0]


def test_gpus_the_round_cannot_plan_keep_their_spec() -> None:
    off = gpu_status(1, mig_enabled=False)
    spec = [spec_gpu(0, []), spec_gpu(1, [("7g.80gb", 0)])]
    _, decision = round_of(
        [node("n1")], [mignode("n1", [gpu_status(0), off], spec_gpus=spec)], [pod("a", {P1G: 1})]
    )
    [write] = decision.writes
    assert write.spec["gpus"][1] == spec_gpu(1, [("7g.80gb", 0)])
    assert [g["index"] for g in write.spec["gpus"]] == [0, 1]


def test_a_garbled_placements_annotation_reads_as_empty() -> None:
    obj = mignode("n1", [], annotations={PLACEMENTS_ANNOTATION: "{not json"})
    assert parse_reservation(obj).pods == {}
    good = render_reservation(NOW, {"demo/a": [Assignment("n1", 0, 19, 2)]})
    obj = mignode("n1", [], annotations={PLACEMENTS_ANNOTATION: good})
    reservation = parse_reservation(obj)
    assert reservation.written_at == NOW
    assert reservation.pods == {"demo/a": (Assignment("n1", 0, 19, 2),)}

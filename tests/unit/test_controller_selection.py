"""Which pods the controller serves, what they ask for, and which nodes they may use."""

from __future__ import annotations

from typing import Any

import pytest
from controller_objects import node, pod

from jupyter_mig.controller.selection import (
    RequestError,
    is_candidate,
    mig_requests,
    node_eligible,
    pending_pod,
    tolerates,
)

MIG = "nvidia.com/mig-1g.10gb"


# -- candidates --------------------------------------------------------------------------------


def test_an_unschedulable_pending_mig_pod_is_a_candidate() -> None:
    assert is_candidate(pod("a", {MIG: 1}))


@pytest.mark.parametrize(
    "changes",
    [
        {"unschedulable": False},  # the scheduler has not given up on it
        {"node_name": "n1", "phase": "Pending"},  # already bound
        {"nominated": "n1"},  # preemption frees room for it elsewhere
        {"owner_kind": "DaemonSet"},
        {"owner_kind": "Node"},  # a mirror pod
        {"phase": "Failed"},
    ],
)
def test_pods_more_capacity_would_not_help_are_not_candidates(changes: dict[str, Any]) -> None:
    assert not is_candidate(pod("a", {MIG: 1}, **changes))


def test_a_pod_without_mig_requests_is_not_a_candidate() -> None:
    assert not is_candidate(pod("a", {"nvidia.com/gpu": 1}))


def test_a_pod_being_deleted_is_not_a_candidate() -> None:
    p = pod("a", {MIG: 1})
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not is_candidate(p)


def test_a_scheduler_error_other_than_unschedulable_is_not_ours() -> None:
    p = pod("a", {MIG: 1})
    p["status"]["conditions"][0]["reason"] = "SchedulerError"
    assert not is_candidate(p)


def test_interactivity_and_priority() -> None:
    trusted = ("demo",)
    hub = pending_pod(
        pod("jupyter-ann", {MIG: 1}, labels={"component": "singleuser-server"}), trusted
    )
    marked = pending_pod(
        pod("k", {MIG: 1}, annotations={"jupyter-mig.io/interactive": "true"}), trusted
    )
    batch = pending_pod(pod("job", {MIG: 1}, priority=50), trusted)
    assert hub.interactive and marked.interactive and not batch.interactive
    assert batch.priority == 50 and hub.priority == 0
    assert batch.key == "demo/job"


@pytest.mark.parametrize(
    ("namespace", "trusted", "interactive"),
    [
        ("jhub", ("jhub",), True),
        ("batch", ("jhub",), False),
        ("batch", (), False),
        ("batch", ("*",), True),
    ],
)
def test_the_interactive_mark_counts_only_where_the_admin_trusts_it(
    namespace: str, trusted: tuple[str, ...], interactive: bool
) -> None:
    both = pod(
        "sneaky",
        {MIG: 1},
        namespace=namespace,
        labels={"component": "singleuser-server"},
        annotations={"jupyter-mig.io/interactive": "true"},
    )
    assert pending_pod(both, trusted).interactive is interactive


# -- requests ----------------------------------------------------------------------------------


def _container(name: str, limits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"limits": limits}, **extra}


def test_requests_add_up_over_containers_and_normalise_names() -> None:
    p = pod(
        "a",
        containers=[
            _container("x", {MIG: "2", "cpu": "1"}),
            _container("y", {MIG: 1}),
            _container("z", {"nvidia.com/mig-3g.40gb": "1"}),
        ],
    )
    assert mig_requests(p) == {"1g.10gb": 3, "3g.40gb": 1}


def test_an_init_container_runs_alone_but_a_sidecar_runs_alongside() -> None:
    p = pod(
        "a",
        containers=[_container("main", {MIG: 1})],
        init_containers=[
            _container("setup", {MIG: 3}),
            _container("proxy", {"nvidia.com/mig-2g.20gb": 1}, restartPolicy="Always"),
        ],
    )
    assert mig_requests(p) == {"1g.10gb": 3, "2g.20gb": 1}


def test_requests_without_limits_count_too() -> None:
    p = pod("a", containers=[{"name": "m", "resources": {"requests": {MIG: "1"}}}])
    assert mig_requests(p) == {"1g.10gb": 1}


def test_two_mig_profiles_in_one_container_is_refused_with_a_reason() -> None:
    p = pod("a", {MIG: 1, "nvidia.com/mig-2g.20gb": 1})
    with pytest.raises(RequestError) as err:
        mig_requests(p)
    assert err.value.reason == "MultipleMigProfiles"
    assert "mig-1g.10gb and nvidia.com/mig-2g.20gb" in str(err.value)


def test_a_fractional_quantity_is_refused() -> None:
    with pytest.raises(RequestError) as err:
        mig_requests(pod("a", {MIG: "500m"}))
    assert err.value.reason == "InvalidMigRequest"


# -- node eligibility --------------------------------------------------------------------------


def test_node_selector() -> None:
    p = pod("a", {MIG: 1}, node_selector={"pool": "gpu"})
    assert node_eligible(p, node("n1", {"pool": "gpu"}))
    assert not node_eligible(p, node("n2", {"pool": "cpu"}))
    assert not node_eligible(p, node("n3"))


def _affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


@pytest.mark.parametrize(
    ("expression", "labels", "expected"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
        ({"key": "zone", "operator": "In", "values": ["a"]}, {"zone": "b"}, False),
        ({"key": "zone", "operator": "In", "values": ["a"]}, {}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "b"}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
        ({"key": "gpu", "operator": "Exists"}, {"gpu": ""}, True),
        ({"key": "gpu", "operator": "Exists"}, {}, False),
        ({"key": "gpu", "operator": "DoesNotExist"}, {}, True),
        ({"key": "gpu", "operator": "DoesNotExist"}, {"gpu": "x"}, False),
        ({"key": "mem", "operator": "Gt", "values": ["40"]}, {"mem": "80"}, True),
        ({"key": "mem", "operator": "Gt", "values": ["80"]}, {"mem": "80"}, False),
        ({"key": "mem", "operator": "Lt", "values": ["80"]}, {"mem": "40"}, True),
        ({"key": "mem", "operator": "Lt", "values": ["80"]}, {"mem": "big"}, False),
        ({"key": "mem", "operator": "Gt", "values": ["1"]}, {}, False),
    ],
)
def test_match_expressions(
    expression: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    p = pod("a", {MIG: 1}, affinity=_affinity({"matchExpressions": [expression]}))
    assert node_eligible(p, node("n1", labels)) is expected


def test_terms_are_ored_and_expressions_anded() -> None:
    p = pod(
        "a",
        {MIG: 1},
        affinity=_affinity(
            {
                "matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]},
                    {"key": "tier", "operator": "In", "values": ["gold"]},
                ]
            },
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]},
        ),
    )
    assert node_eligible(p, node("n1", {"zone": "a", "tier": "gold"}))
    assert not node_eligible(p, node("n2", {"zone": "a", "tier": "silver"}))
    assert node_eligible(p, node("n9"))


def test_an_empty_term_matches_nothing() -> None:
    p = pod("a", {MIG: 1}, affinity=_affinity({}))
    assert not node_eligible(p, node("n1"))


def test_match_fields_not_in() -> None:
    p = pod(
        "a",
        {MIG: 1},
        affinity=_affinity(
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}
        ),
    )
    assert not node_eligible(p, node("n1"))
    assert node_eligible(p, node("n2"))


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}, True),
        ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "value": "absent"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, True),  # tolerates everything
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations(toleration: dict[str, Any], expected: bool) -> None:
    assert tolerates([toleration], [GPU_TAINT]) is expected


def test_prefer_no_schedule_taints_do_not_block() -> None:
    taint = {"key": "busy", "effect": "PreferNoSchedule"}
    assert tolerates([], [taint])
    assert not tolerates([], [GPU_TAINT])


def test_taints_on_nodes_keep_intolerant_pods_off() -> None:
    tainted = node("n1", taints=[GPU_TAINT])
    assert not node_eligible(pod("a", {MIG: 1}), tainted)
    assert node_eligible(
        pod("a", {MIG: 1}, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]), tainted
    )

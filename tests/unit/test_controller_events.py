"""Each distinct message is said to a pod once while it is pending."""

from __future__ import annotations

from jupyter_mig.controller import events as ev
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import Assignment


def event(uid: str, message: str, reason: str = ev.WAITING) -> ev.PodEvent:
    return ev.PodEvent("demo", uid, uid, ev.NORMAL, reason, message)


def test_the_same_event_is_posted_once() -> None:
    ledger = ev.EventLedger()
    assert ledger.fresh([event("a", "x")]) == [event("a", "x")]
    assert ledger.fresh([event("a", "x")]) == []
    assert ledger.fresh([event("a", "y"), event("b", "x")]) == [event("a", "y"), event("b", "x")]


def test_a_failed_post_is_retried() -> None:
    ledger = ev.EventLedger()
    ledger.fresh([event("a", "x")])
    ledger.untell(event("a", "x"))
    assert ledger.fresh([event("a", "x")]) == [event("a", "x")]


def test_pods_that_are_gone_are_forgotten() -> None:
    ledger = ev.EventLedger()
    ledger.fresh([event("a", "x"), event("b", "x")])
    ledger.keep_only({"b"})
    assert ledger.fresh([event("a", "x"), event("b", "x")]) == [event("a", "x")]


def test_creating_message_names_profile_node_and_gpu() -> None:
    a100 = MODELS.get("A100-80GB")
    models = {("gpu-node-1", 0): a100, ("gpu-node-1", 1): a100}
    one = [Assignment("gpu-node-1", 0, 19, 2)]
    assert ev.creating_message(one, models, 0) == "creating 1g.10gb on gpu-node-1 GPU 0"
    two = [*one, Assignment("gpu-node-1", 1, 9, 4)]
    assert ev.creating_message(two, models, 2) == (
        "creating 1g.10gb on gpu-node-1 GPU 0, 3g.40gb on gpu-node-1 GPU 1 "
        "(removing 2 free instances in the way)"
    )

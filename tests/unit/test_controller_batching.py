"""The batch window: an explicit clock, so each rule is checked without sleeping."""

from __future__ import annotations

import pytest

from jupyter_mig.controller.batching import Batcher


def test_nothing_waiting_is_never_due() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {})
    assert batcher.deadline() is None
    assert not batcher.due(100)


def test_a_batch_pod_waits_for_the_idle_window() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    assert not batcher.due(1.9)
    assert batcher.due(2.0)


def test_each_arrival_extends_the_idle_window_up_to_the_maximum() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    for t in range(0, 12):
        pending = {f"p{i}": False for i in range(t + 1)}
        batcher.update(float(t), pending)
        if t < 10:
            assert not batcher.due(t + 0.5), t
    assert batcher.deadline() == 10
    assert batcher.due(10)


def test_a_pod_seen_again_does_not_extend_the_window() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    batcher.update(1.5, {"a": False})
    assert batcher.due(2)


def test_an_interactive_pod_makes_the_round_due_at_once_and_takes_the_others_along() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"job": False})
    batcher.update(0.5, {"job": False, "notebook": True})
    assert batcher.due(0.5)
    batcher.release()
    assert batcher.released() == {"job", "notebook"}
    assert batcher.deadline() is None


def test_released_pods_stay_plannable_and_new_ones_wait() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    batcher.release()
    batcher.update(5, {"a": False, "b": False})
    assert batcher.released() == {"a"}
    assert not batcher.due(6)
    assert batcher.due(7)


def test_pods_that_left_are_forgotten() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    batcher.release()
    batcher.update(1, {"b": False})
    assert batcher.released() == frozenset()
    batcher.update(1.5, {})
    assert batcher.deadline() is None


def test_a_pod_that_leaves_and_returns_waits_again() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    batcher.release()
    batcher.update(1, {})
    batcher.update(2, {"a": False})
    assert "a" not in batcher.released()
    assert batcher.deadline() == 4


def test_reset_forgets_everything() -> None:
    batcher = Batcher(idle=2, max_wait=10)
    batcher.update(0, {"a": False})
    batcher.release()
    batcher.update(1, {"a": False, "b": True})
    batcher.reset()
    assert batcher.released() == frozenset() and batcher.deadline() is None


def test_zero_windows_plan_on_arrival() -> None:
    batcher = Batcher(idle=0, max_wait=0)
    batcher.update(3, {"a": False})
    assert batcher.due(3)


def test_negative_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(idle=-1, max_wait=1)

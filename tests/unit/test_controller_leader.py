"""Lease-based leader election as a state machine with explicit clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jupyter_mig.controller.leader import LeaderElection, micro_time

WALL = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


class LeaseStore:
    """An in-memory Lease with resourceVersion semantics, shared by the candidates."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.version = 0

    def read(self) -> tuple[dict[str, Any] | None, int]:
        return (dict(self.spec) if self.spec else None), self.version

    def write(self, spec: dict[str, Any], version: int) -> bool:
        if version != self.version:
            return False
        self.spec, self.version = dict(spec), self.version + 1
        return True


def attempt(election: LeaderElection, store: LeaseStore, now: float) -> bool:
    """One retry-period step of a candidate; True when its write landed."""
    current, version = store.read()
    wanted = election.desired(current, now, WALL + timedelta(seconds=now))
    if wanted is None or not store.write(wanted, version):
        return False
    election.landed(wanted, now)
    return True


def test_micro_time_always_has_six_fractional_digits() -> None:
    assert micro_time(WALL) == "2026-11-29T12:00:00.000000Z"


def test_the_first_candidate_takes_a_missing_lease_and_the_second_follows() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    assert attempt(a, store, 0)
    assert not attempt(b, store, 0.1)
    assert a.is_leader(1) and not b.is_leader(1)
    assert store.spec is not None and store.spec["holderIdentity"] == "a"


def test_the_leader_keeps_the_lease_by_renewing() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    for t in range(0, 60, 2):
        attempt(a, store, t)
        attempt(b, store, t + 1)
    assert a.is_leader(59) and not b.is_leader(59)
    assert store.spec is not None and store.spec["leaseTransitions"] == 0


def test_a_silent_leader_steps_down_before_the_follower_takes_over() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    attempt(a, store, 0)
    attempt(b, store, 0)  # b sees the record at t=0
    assert not a.is_leader(10)  # renew deadline passed without a renewal
    assert not attempt(b, store, 14.9)
    assert attempt(b, store, 15)
    assert b.is_leader(15)
    assert store.spec is not None
    assert store.spec["holderIdentity"] == "b" and store.spec["leaseTransitions"] == 1


def test_expiry_is_measured_on_the_followers_clock_from_the_last_change() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    attempt(a, store, 0)
    attempt(b, store, 0)
    attempt(a, store, 8)  # a renews, then falls silent; b first sees the new record at 16
    assert not attempt(b, store, 16)
    assert not attempt(b, store, 30.9)
    assert attempt(b, store, 31)


def test_a_leader_that_finds_the_lease_taken_steps_down_at_once() -> None:
    store = LeaseStore()
    a = LeaderElection("a", 15, 10)
    attempt(a, store, 0)
    store.spec = dict(store.spec or {}, holderIdentity="b")
    store.version += 1
    assert not attempt(a, store, 2)
    assert not a.is_leader(2)


def test_losing_a_write_race_wins_nothing() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    current, version = store.read()
    wanted_a = a.desired(current, 0, WALL)
    wanted_b = b.desired(current, 0, WALL)
    assert wanted_a is not None and wanted_b is not None
    assert store.write(wanted_a, version)
    assert not store.write(wanted_b, version)  # stale resourceVersion
    a.landed(wanted_a, 0)
    assert a.is_leader(0) and not b.is_leader(0)


def test_a_released_lease_is_taken_at_once() -> None:
    store = LeaseStore()
    a, b = LeaderElection("a", 15, 10), LeaderElection("b", 15, 10)
    attempt(a, store, 0)
    attempt(b, store, 0)
    _, version = store.read()
    assert store.write(a.released(WALL), version)
    a.step_down()
    assert attempt(b, store, 0.5)
    assert b.is_leader(0.5) and not a.is_leader(0.5)


def test_the_renew_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError):
        LeaderElection("a", 10, 10)

"""The HTTP endpoints, served for real on a loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_mig.controller.http import Endpoints, HttpServer
from jupyter_mig.controller.metrics import Metrics


class State:
    def __init__(self) -> None:
        self.ready = False
        self.healthy = True
        self.capacity: dict[str, Any] = {"models": [], "generated": "2026-01-01T00:00:00Z"}


@pytest.fixture
def served() -> Iterator[tuple[State, Metrics, int]]:
    state, metrics = State(), Metrics()

    def capacity() -> dict[str, Any]:
        if "boom" in state.capacity:
            raise RuntimeError("boom")
        return state.capacity

    endpoints = Endpoints(
        metrics.registry,
        lambda: (state.healthy, "ok" if state.healthy else "loop stalled"),
        lambda: (state.ready, "ok" if state.ready else "caches not synced"),
        capacity,
    )
    server = HttpServer("127.0.0.1", 0, endpoints)
    server.start()
    try:
        yield state, metrics, server.port
    finally:
        server.stop()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_probes_follow_the_state(served: tuple[State, Metrics, int]) -> None:
    state, _, port = served
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (503, "caches not synced\n")
    state.ready, state.healthy = True, False
    assert get(port, "/readyz") == (200, "ok\n")
    assert get(port, "/healthz") == (503, "loop stalled\n")


def test_capacity_waits_for_the_caches(served: tuple[State, Metrics, int]) -> None:
    state, _, port = served
    status, body = get(port, "/api/v1/capacity")
    assert status == 503 and "not ready" in json.loads(body)["error"]
    state.ready = True
    status, body = get(port, "/api/v1/capacity")
    assert status == 200 and json.loads(body) == state.capacity


def test_a_failing_handler_answers_500_and_the_server_lives_on(
    served: tuple[State, Metrics, int],
) -> None:
    state, _, port = served
    state.ready = True
    state.capacity = {"boom": True}
    assert get(port, "/api/v1/capacity")[0] == 500
    assert get(port, "/healthz")[0] == 200


def test_metrics_are_exposed(served: tuple[State, Metrics, int]) -> None:
    _, metrics, port = served
    metrics.set_pending_demand({"1g.10gb": 3, "3g.40gb": 1})
    metrics.set_pending_demand({"1g.10gb": 2})
    metrics.operations.labels("create").inc(4)
    status, body = get(port, "/metrics")
    assert status == 200
    assert 'jupyter_mig_pending_demand{profile="1g.10gb"} 2.0' in body
    assert "3g.40gb" not in body  # nobody asks for it any more
    assert 'jupyter_mig_operations_total{kind="create"} 4.0' in body
    assert "jupyter_mig_round_duration_seconds_bucket" in body
    assert "jupyter_mig_pending_to_bound_seconds_bucket" in body


def test_unknown_paths_are_404(served: tuple[State, Metrics, int]) -> None:
    assert get(served[2], "/nope")[0] == 404

"""``ListWatch``: resume from the last resourceVersion after a dropped watch, list again on 410.

The API server is played by a script of answers (this is the reflector's own logic, not the
API: the real server is in tests/integration).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from jupyter_mig.kube.client import Gone, KubeError
from jupyter_mig.kube.events import event_object
from jupyter_mig.kube.watch import ListWatch


def _pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class ScriptedKube:
    """Lists answer from ``lists``; each watch plays the next entry of ``watches`` (events,
    then an optional exception).  Records the resourceVersion every watch started from."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[Any]], stop: Any) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.watched_from: list[str] = []
        self.list_count = 0

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        assert method == "GET"
        self.list_count += 1
        return self.lists.pop(0)

    def watch(
        self, path: str, query: Mapping[str, str], timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        self.watched_from.append(query["resourceVersion"])
        if not self.watches:
            self.stop.set()
            return
        for step in self.watches.pop(0):
            if isinstance(step, Exception):
                raise step
            yield step


def test_a_dropped_watch_resumes_and_410_lists_again() -> None:
    stop = threading.Event()
    kube = ScriptedKube(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [_pod("a", "9")]},
            {"metadata": {"resourceVersion": "30"}, "items": [_pod("b", "29")]},
        ],
        watches=[
            [{"type": "ADDED", "object": _pod("b", "11")}, KubeError(0, "reset", "dropped")],
            [
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
                {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}},
            ],
        ],
        stop=stop,
    )
    lists: list[list[str]] = []
    events: list[tuple[str, str]] = []
    ListWatch(
        kube,  # type: ignore[arg-type]
        "/api/v1/pods",
        on_list=lambda items: lists.append([i["metadata"]["name"] for i in items]),
        on_event=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        stop=stop,
        watch_seconds=(1, 1),
        max_backoff=0.01,
    ).run()
    assert lists == [["a"], ["b"]]
    assert events == [("ADDED", "b")]  # bookmarks move the version, they are no change
    # after the drop: from the last version seen; after 410: from the new list's version
    assert kube.watched_from == ["10", "11", "30"]


def test_gone_is_a_kube_error_with_status_410() -> None:
    assert issubclass(Gone, KubeError)


def test_one_event_body_for_namespaced_and_cluster_scoped_objects() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    pod = {"apiVersion": "v1", "kind": "Pod", "namespace": "demo", "name": "nb", "uid": "u"}
    body = event_object(
        pod, type="Normal", reason="R", message="m" * 2000, component="x.io/c",
        instance="i" * 200, action="Plan", now=now,
    )  # fmt: skip
    assert body["metadata"] == {"generateName": "nb.", "namespace": "demo"}
    assert len(body["message"]) == 1024 and len(body["reportingInstance"]) == 128
    assert body["eventTime"] == "2026-01-02T03:04:05.006000Z"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-02T03:04:05Z"
    node = {"apiVersion": "jupyter-mig.io/v1alpha1", "kind": "MigNode", "name": "n", "uid": "u"}
    cluster_scoped = event_object(
        node, type="Normal", reason="R", message="m", component="agent", instance="n",
        action="Reconcile", now=now,
    )  # fmt: skip
    assert cluster_scoped["metadata"]["namespace"] == "default"

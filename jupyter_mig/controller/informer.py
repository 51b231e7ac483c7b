"""A local cache of one resource, kept by :class:`jupyter_mig.kube.watch.ListWatch`.

Every change calls ``on_change`` — the controller is level-triggered and only needs to know
*that* something changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_mig.kube.client import Kube
from jupyter_mig.kube.watch import ListWatch


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


class Informer:
    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        on_change: Callable[[], None],
        resync: float,
        stop: threading.Event,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.stop = stop
        self.synced = threading.Event()
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._list_watch = ListWatch(
            kube,
            path,
            query=query,
            on_list=self._replace,
            on_event=self._apply,
            stop=stop,
            resync=resync,
        )
        self.thread = threading.Thread(
            target=self._list_watch.run, name=f"informer {path}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def _replace(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items = {object_key(obj): obj for obj in items}
        self.synced.set()
        self.on_change()

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if kind == "DELETED":
                self._items.pop(object_key(obj), None)
            else:
                self._items[object_key(obj)] = obj
        self.on_change()

"""List+watch of one resource into a local cache, as client-go's reflector does it.

List (in pages), then watch from the list's resourceVersion with bookmarks; after a dropped
connection watch again from the last version seen; on 410 Gone list again; and list again every
``resync`` seconds anyway, so a missed event cannot leave the cache wrong for long.  Every change
calls ``on_change`` — the controller is level-triggered and only needs to know *that* something
changed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_mig.controller.kube import Gone, Kube, KubeError

log = logging.getLogger("jupyter_mig.controller")

_PAGE = 500
_MAX_BACKOFF = 30.0


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
        self.kube = kube
        self.path = path
        self.query = dict(query or {})
        self.on_change = on_change
        self.resync = resync
        self.stop = stop
        self.synced = threading.Event()
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"informer {path}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def _run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                version = self._list()
                backoff = 1.0
                self._watch_until_resync(version)
            except Gone:
                log.info("%s: watch expired (410 Gone); listing again", self.path)
                continue
            except KubeError as err:
                log.warning("%s: %s; listing again in %.0fs", self.path, err, backoff)
            except Exception:  # a garbled answer must not stop the cache for good
                log.exception("%s: unexpected error; listing again in %.0fs", self.path, backoff)
            else:
                continue
            self.stop.wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _list(self) -> str:
        items: dict[str, dict[str, Any]] = {}
        token = ""
        while True:
            query = {**self.query, "limit": str(_PAGE)}
            if token:
                query["continue"] = token
            page = self.kube.request("GET", self.path, query=query, timeout=60.0)
            for obj in page.get("items") or ():
                items[object_key(obj)] = obj
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
        with self._lock:
            self._items = items
        self.synced.set()
        self.on_change()
        return version

    def _watch_until_resync(self, version: str) -> None:
        """Watch from ``version``; return when a fresh list is due, raise on 410 Gone."""
        deadline = time.monotonic() + self.resync
        backoff = 1.0
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Spread the watch ends so several informers do not reconnect in step.
            seconds = max(1, int(min(left, random.uniform(240, 300))))
            try:
                version = self._watch(version, seconds)
                backoff = 1.0
            except Gone:
                raise
            except KubeError as err:
                log.info("%s: watch broke (%s); watching again in %.0fs", self.path, err, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _watch(self, version: str, seconds: int) -> str:
        query = {**self.query, "resourceVersion": version, "allowWatchBookmarks": "true"}
        for event in self.kube.watch(self.path, query, seconds):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = int(obj.get("code") or 0)
                error = Gone if code == 410 else KubeError
                raise error(code, str(obj.get("reason", "")), str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion", version))
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._items.pop(object_key(obj), None)
                else:
                    self._items[object_key(obj)] = obj
            self.on_change()
            if self.stop.is_set():
                break
        return version

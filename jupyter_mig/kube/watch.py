"""List+watch of one collection, as client-go's reflector does it: the one loop every part uses.

List (in pages), then watch from the list's resourceVersion with bookmarks; when the server
ends a watch or the connection drops, watch again from the last version seen; on 410 Gone list
again; list again every ``resync`` seconds anyway, so a missed event cannot leave a reader wrong
for long; back off (with jitter) after errors.  Readers get every full list (``on_list``) and
every change (``on_event``); nothing here knows what they do with them.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_mig.kube.client import Gone, Kube, KubeError, status_error

log = logging.getLogger(__name__)

PAGE_SIZE = 500
LIST_TIMEOUT_S = 60.0
#: Server-side watch lengths, drawn per watch so several watchers do not reconnect in step.
WATCH_SECONDS = (240.0, 300.0)


class ListWatch:
    """Keeps ``on_list``/``on_event`` current with the collection at ``path`` until ``stop``.

    ``on_list(items)`` gets each complete list; ``on_event(type, obj)`` each ``ADDED``,
    ``MODIFIED`` or ``DELETED`` (bookmarks only move the resourceVersion).  An exception from a
    callback counts as an error: logged, backed off, listed again.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        query: Mapping[str, str] | None = None,
        resync: float = math.inf,
        watch_seconds: tuple[float, float] = WATCH_SECONDS,
        max_backoff: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.kube = kube
        self.path = path
        self.query = dict(query or {})
        self.on_list = on_list
        self.on_event = on_event
        self.stop = stop
        self.resync = resync
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self.name = name or path
        self._version = ""  # the last resourceVersion seen: where a dropped watch resumes

    def run(self) -> None:
        """List and watch until ``stop`` is set; never raises."""
        backoff = self._first_backoff()
        while not self.stop.is_set():
            try:
                self._list()
                backoff = self._first_backoff()
                self._watch_until_resync()
            except Gone:
                log.info("%s: watch expired (410 Gone); listing again", self.name)
                continue
            except KubeError as err:
                log.warning("%s: %s; listing again in %.0fs", self.name, err, backoff)
            except Exception:  # a garbled answer must not stop the loop for good
                log.exception("%s: unexpected error; listing again in %.0fs", self.name, backoff)
            else:
                continue
            self.stop.wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.max_backoff)

    def _first_backoff(self) -> float:
        return min(1.0, self.max_backoff)

    def _list(self) -> None:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {**self.query, "limit": str(PAGE_SIZE)}
            if token:
                query["continue"] = token
            page = self.kube.request("GET", self.path, query=query, timeout=LIST_TIMEOUT_S)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
        self.on_list(items)
        self._version = version

    def _watch_until_resync(self) -> None:
        """Watch from the last version seen; return when a fresh list is due, raise on 410."""
        deadline = time.monotonic() + self.resync
        backoff = self._first_backoff()
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            seconds = max(1, int(min(left, random.uniform(*self.watch_seconds))))
            try:
                self._watch(seconds)
                backoff = self._first_backoff()
            except Gone:
                raise
            except KubeError as err:
                log.info("%s: watch broke (%s); watching again in %.0fs", self.name, err, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _watch(self, seconds: int) -> None:
        query = {**self.query, "resourceVersion": self._version, "allowWatchBookmarks": "true"}
        for event in self.kube.watch(self.path, query, seconds):
            kind = str(event.get("type"))
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = int(obj.get("code") or 0)
                raise status_error(code, str(obj.get("reason", "")), str(obj.get("message", "")))
            if kind != "BOOKMARK":
                self.on_event(kind, obj)
            self._version = str((obj.get("metadata") or {}).get("resourceVersion", self._version))
            if self.stop.is_set():
                break

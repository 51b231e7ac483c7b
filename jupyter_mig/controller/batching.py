"""When to plan: a batch window over newly pending pods, with an explicit clock.

Planning many pods together packs GPUs better than planning each on arrival, so a new batch pod
waits until no new pod has arrived for ``idle`` seconds, or until the first waiting pod has waited
``max_wait`` seconds.  An interactive pod (a notebook server someone is staring at) closes the
window at once, and the pods waiting with it ride along.

The batcher only gates *new* pods.  Once a round has taken a pod it stays released: later rounds
(triggered by cluster changes) plan it again without waiting.
"""

from __future__ import annotations

from collections.abc import Mapping


class Batcher:
    def __init__(self, idle: float, max_wait: float) -> None:
        if idle < 0 or max_wait < 0:
            raise ValueError("batch windows must not be negative")
        self.idle = idle
        self.max_wait = max_wait
        self._waiting: dict[str, bool] = {}  # key → interactive
        self._released: set[str] = set()
        self._first: float | None = None
        self._last: float | None = None

    def update(self, now: float, pending: Mapping[str, bool]) -> None:
        """The current pending pods (key → interactive); new keys open or extend the window."""
        for key in [k for k in self._waiting if k not in pending]:
            del self._waiting[key]
        self._released.intersection_update(pending)
        for key, interactive in pending.items():
            if key in self._released or key in self._waiting:
                continue
            self._waiting[key] = interactive
            self._first = now if self._first is None else self._first
            self._last = now
        if not self._waiting:
            self._first = self._last = None

    def deadline(self) -> float | None:
        """When the waiting pods become due (None when nothing waits)."""
        if self._first is None or self._last is None:
            return None
        if any(self._waiting.values()):
            return self._last
        return min(self._last + self.idle, self._first + self.max_wait)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def release(self) -> None:
        """A round has taken every waiting pod."""
        self._released.update(self._waiting)
        self._waiting.clear()
        self._first = self._last = None

    def released(self) -> frozenset[str]:
        """The pods a round may plan now."""
        return frozenset(self._released)

    def reset(self) -> None:
        """Forget everything (leadership lost: a new leader starts its own windows)."""
        self._waiting.clear()
        self._released.clear()
        self._first = self._last = None

"""Per-user rate limits of the hub side (docs/security.md lists every limit and its default)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from jupyter_mig.hub.settings import SliceSettings
from jupyter_mig.slices.errors import SliceRefused
from jupyter_mig.slices.policy import SliceOption


class RateLimiter:
    """At most ``limit`` events per key within any ``period`` seconds (a sliding window).

    :meth:`take` reserves a slot synchronously, so concurrent callers cannot all pass the
    check before any of them is counted; :meth:`give_back` returns a slot a refused request
    did not use.  ``limit`` 0 turns the limiter off.
    """

    def __init__(
        self, limit: int, period: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def take(self, key: str) -> float:
        """0 when the event may happen now (and is counted), else seconds until it may."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.period:
            events.popleft()
        if len(events) >= self.limit:
            return max(events[0] + self.period - now, 0.001)
        events.append(now)
        return 0.0

    def give_back(self, key: str) -> None:
        events = self._events.get(key)
        if events:
            events.pop()


def check_total(settings: SliceSettings, option: SliceOption, held: int) -> None:
    """Refuse a slice that would take a user's servers over ``max_total_size`` together."""
    cap = settings.max_total_gb
    total = held + option.nominal_gb
    if cap is not None and total > cap:
        raise SliceRefused(
            f"{option.size} ({option.profile}) would bring the GPU slices of your servers to "
            f"{total} GB together, above this hub's limit of {settings.max_total_size} per "
            "user; stop another server with a GPU or ask for less"
        )

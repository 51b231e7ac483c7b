"""The one waiting helper: every wait in the tests has a timeout and says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Poll ``probe()`` until it returns something truthy, and return that.

    An ``OSError`` from the probe (a server not listening yet) counts as not yet.  Raises
    ``TimeoutError`` naming ``what`` and the last value (or error) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: Any
        try:
            last = probe()
        except OSError as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)

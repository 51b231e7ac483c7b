"""The controller's capacity API as the hub and the notebook server read it, cached briefly.

:meth:`CapacityClient.get` imports tornado inside (the controller image has no tornado and
never calls it).
"""

from __future__ import annotations

import asyncio
import json
import time

from jupyter_mig.slices.contract import CONTROLLER_URL_ENV
from jupyter_mig.slices.errors import CapacityError
from jupyter_mig.slices.policy import Capacity, parse_capacity


class CapacityClient:
    """Fetches the controller's capacity API, caching the answer for ``ttl`` seconds.

    Concurrent callers share one request; a failure is not cached, so the next call retries.
    """

    def __init__(self, controller_url: str, ttl: float = 5.0, timeout: float = 5.0) -> None:
        self.controller_url = controller_url.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self._cached: tuple[float, Capacity] | None = None
        self._inflight: asyncio.Future[Capacity] | None = None

    @property
    def url(self) -> str:
        return f"{self.controller_url}/api/v1/capacity"

    async def get(self) -> Capacity:
        if not self.controller_url:
            raise CapacityError(
                "GPU slices are not set up here: no jupyter-mig controller address is configured; "
                f"ask your admin to set c.JupyterMig.controller_url (or {CONTROLLER_URL_ENV} "
                "in this server's environment)",
                True,
            )
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.ttl:
            return self._cached[1]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        inflight = self._inflight
        try:
            capacity = await asyncio.shield(inflight)
        finally:
            if self._inflight is inflight and inflight.done():
                self._inflight = None
        self._cached = (time.monotonic(), capacity)
        return capacity

    async def _fetch(self) -> Capacity:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        try:
            response = await AsyncHTTPClient().fetch(
                self.url, request_timeout=self.timeout, connect_timeout=self.timeout
            )
        except HTTPClientError as err:
            if err.code == 599:  # tornado's code for a timeout or a dropped connection
                raise CapacityError(
                    f"the jupyter-mig controller at {self.url} is unreachable ({err})", True
                ) from None
            raise CapacityError(
                f"the jupyter-mig controller at {self.url} answered {err.code}", False
            ) from None
        except (OSError, TimeoutError) as err:
            raise CapacityError(
                f"the jupyter-mig controller at {self.url} is unreachable ({err})", True
            ) from None
        try:
            doc = json.loads(response.body)
        except ValueError:
            raise CapacityError(
                f"the jupyter-mig controller at {self.url} answered something other than JSON",
                False,
            ) from None
        return parse_capacity(doc)

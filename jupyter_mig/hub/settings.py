"""The hub admin's choices, shared by the spawner hooks (hub process) and the restart service.

The restart service is a separate process the hub starts, so the settings travel to it as JSON
in one environment variable (:data:`SETTINGS_ENV`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_mig.api.slices import SlicePolicy
from jupyter_mig.mig.sizes import parse_size

#: The ``user_options`` key (and KubeSpawner profile option) that carries the requested size.
OPTION = "gpu_slice"
#: The choice meaning "no GPU".
NO_GPU = "none"
SETTINGS_ENV = "JUPYTER_MIG_HUB_SETTINGS"


@dataclass(frozen=True)
class SliceSettings:
    """GPU slices on this hub: where the controller is, what users may ask for.

    ``sizes``: the menu (empty: every plain size the cluster's GPUs offer).  ``max_size``: the
    cap for everyone (None: no cap); ``max_size_by_group``: caps for members of these groups,
    replacing ``max_size`` (a member of several groups gets the largest of their caps).
    ``service_url``: where the hub and its proxy reach the restart service;
    ``server_service_url``: where single-user servers reach it (default: ``service_url``).

    Limits on what one user can make the cluster do (docs/security.md): ``max_total_size``
    (``"40gb"``; None: no limit) caps the nominal GB of the slices of all of a user's servers
    together; ``slice_changes_per_period`` restarts with another slice per user within
    ``slice_change_period`` seconds (0: no limit); ``max_concurrent_restarts`` on the whole hub.
    """

    controller_url: str
    sizes: tuple[str, ...] = ()
    max_size: str | None = None
    max_size_by_group: Mapping[str, str] = field(default_factory=dict)
    capacity_ttl: float = 5.0
    restart_timeout: float = 600.0
    service_name: str = "jupyter-mig"
    service_url: str = "http://127.0.0.1:10101"
    server_service_url: str = ""
    max_total_size: str | None = None
    slice_changes_per_period: int = 10
    slice_change_period: float = 3600.0
    max_concurrent_restarts: int = 10

    def __post_init__(self) -> None:
        for text in (*self.sizes, *self.max_size_by_group.values()):
            parse_size(text)
        if self.max_size is not None:
            parse_size(self.max_size)
        if self.restart_timeout <= 0 or self.capacity_ttl < 0:
            raise ValueError("restart_timeout must be positive and capacity_ttl not negative")
        if self.max_total_size is not None and parse_size(self.max_total_size).kind != "gb":
            raise ValueError(
                f"max_total_size must be nominal GB such as 40gb, not {self.max_total_size!r}"
            )
        if self.slice_changes_per_period < 0 or self.slice_change_period <= 0:
            raise ValueError(
                "slice_changes_per_period must not be negative and slice_change_period positive"
            )
        if self.max_concurrent_restarts < 1:
            raise ValueError("max_concurrent_restarts must be at least 1")

    @property
    def max_total_gb(self) -> float | None:
        """``max_total_size`` in nominal GB."""
        return None if self.max_total_size is None else parse_size(self.max_total_size).amount

    def policy_for(self, groups: Iterable[str]) -> SlicePolicy:
        """The menu and caps of a user who belongs to ``groups``."""
        caps = tuple(
            self.max_size_by_group[g] for g in sorted(set(groups)) if g in self.max_size_by_group
        )
        if not caps and self.max_size is not None:
            caps = (self.max_size,)
        return SlicePolicy(sizes=self.sizes, maximum=caps)

    @property
    def url_for_servers(self) -> str:
        """The restart service's base URL as single-user servers call it (ends with a slash)."""
        base = (
            self.server_service_url
            or f"{self.service_url.rstrip('/')}/services/{self.service_name}/"
        )
        return base if base.endswith("/") else base + "/"

    def to_json(self) -> str:
        return json.dumps(
            {
                "controller_url": self.controller_url,
                "sizes": list(self.sizes),
                "max_size": self.max_size,
                "max_size_by_group": dict(self.max_size_by_group),
                "capacity_ttl": self.capacity_ttl,
                "restart_timeout": self.restart_timeout,
                "service_name": self.service_name,
                "service_url": self.service_url,
                "server_service_url": self.server_service_url,
                "max_total_size": self.max_total_size,
                "slice_changes_per_period": self.slice_changes_per_period,
                "slice_change_period": self.slice_change_period,
                "max_concurrent_restarts": self.max_concurrent_restarts,
            }
        )

    @staticmethod
    def from_json(text: str) -> SliceSettings:
        data: dict[str, Any] = json.loads(text)
        return SliceSettings(
            controller_url=str(data["controller_url"]),
            sizes=tuple(data.get("sizes", ())),
            max_size=data.get("max_size"),
            max_size_by_group=dict(data.get("max_size_by_group", {})),
            capacity_ttl=float(data.get("capacity_ttl", 5.0)),
            restart_timeout=float(data.get("restart_timeout", 600.0)),
            service_name=str(data.get("service_name", "jupyter-mig")),
            service_url=str(data.get("service_url", "http://127.0.0.1:10101")),
            server_service_url=str(data.get("server_service_url", "")),
            max_total_size=data.get("max_total_size"),
            slice_changes_per_period=int(data.get("slice_changes_per_period", 10)),
            slice_change_period=float(data.get("slice_change_period", 3600.0)),
            max_concurrent_restarts=int(data.get("max_concurrent_restarts", 10)),
        )

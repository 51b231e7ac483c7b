"""The hub admin's choices, shared by the spawner hooks (hub process) and the restart service.

``c.SliceSettings.<name>`` in ``jupyterhub_config.py`` (listed by ``jupyterhub --help-all``), or
``SliceSettings(name=...)`` passed to :func:`jupyter_mig.hub.configure_hub`.  The restart service
is a separate process the hub starts, so the settings travel to it as JSON in one environment
variable (:data:`SETTINGS_ENV`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from traitlets import Dict, Float, Integer, List, Unicode, validate
from traitlets.config import Configurable

from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.slices.contract import HUB_SETTINGS_ENV, MAX_RESTART_TIMEOUT, RESTART_TIMEOUT
from jupyter_mig.slices.policy import SlicePolicy

#: The ``user_options`` key (and KubeSpawner profile option) that carries the requested size.
OPTION = "gpu_slice"
#: The choice meaning "no GPU".
NO_GPU = "none"
SETTINGS_ENV = HUB_SETTINGS_ENV


class SliceSettings(Configurable):
    """GPU slices on this hub: where the controller is, what users may ask for, and the limits
    on what one user can make the cluster do (docs/security.md)."""

    controller_url = Unicode(
        help="Base URL of the jupyter-mig controller (required), e.g. "
        "http://jupyter-mig-controller.jupyter-mig.svc:8080."
    ).tag(config=True)
    sizes = List(
        Unicode(),
        help="The sizes users may pick (empty: every plain size the cluster's GPUs offer).",
    ).tag(config=True)
    max_size = Unicode(
        None, allow_none=True, help="The largest slice anyone may take (None: no cap)."
    ).tag(config=True)
    max_size_by_group = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        help="Caps for members of these groups, replacing max_size (a member of several groups "
        "gets the largest of their caps).",
    ).tag(config=True)
    capacity_ttl = Float(5.0, help="Seconds a capacity answer of the controller is reused.").tag(
        config=True
    )
    restart_timeout = Float(
        RESTART_TIMEOUT,
        help="Seconds a restart may take before the hub goes back to the previous slice "
        f"(a request may ask for up to {MAX_RESTART_TIMEOUT:g}).",
    ).tag(config=True)
    service_name = Unicode(
        "jupyter-mig", help="Name of the restart service (its URL path and its role)."
    ).tag(config=True)
    service_url = Unicode(
        "http://127.0.0.1:10101", help="Where the hub and its proxy reach the restart service."
    ).tag(config=True)
    server_service_url = Unicode(
        "",
        help="Where single-user servers reach the restart service "
        "(empty: service_url + /services/<service_name>/).",
    ).tag(config=True)
    max_total_size = Unicode(
        None,
        allow_none=True,
        help="Cap on the nominal GB of the slices of all of a user's servers together, "
        "e.g. 40gb (None: no limit).",
    ).tag(config=True)
    slice_changes_per_period = Integer(
        10,
        help="Restarts with another slice per user within slice_change_period (0: no limit).",
    ).tag(config=True)
    slice_change_period = Float(
        3600.0, help="Seconds of the window slice_changes_per_period counts in."
    ).tag(config=True)
    max_concurrent_restarts = Integer(
        10, help="Restarts in flight on the whole hub (at least 1)."
    ).tag(config=True)

    @validate("sizes", "max_size_by_group", "max_size")
    def _valid_sizes(self, proposal: Any) -> Any:
        value = proposal["value"]
        if isinstance(value, dict):
            texts = list(value.values())
        else:
            texts = [value] if isinstance(value, str) else list(value or ())
        for text in texts:
            parse_size(text)
        return value

    @validate("max_total_size")
    def _valid_total(self, proposal: Any) -> str | None:
        value: str | None = proposal["value"]
        if value is not None and parse_size(value).kind != "gb":
            raise ValueError(f"max_total_size must be nominal GB such as 40gb, not {value!r}")
        return value

    @validate("restart_timeout", "capacity_ttl", "slice_change_period")
    def _valid_seconds(self, proposal: Any) -> float:
        name, value = proposal["trait"].name, float(proposal["value"])
        if value < 0 or (value == 0 and name != "capacity_ttl"):
            raise ValueError(f"{name} must be positive (capacity_ttl: not negative), not {value}")
        if name == "restart_timeout" and value > MAX_RESTART_TIMEOUT:
            raise ValueError(
                f"restart_timeout {value:g} is over the {MAX_RESTART_TIMEOUT:g} s that a restart "
                "request may ask for; set it to at most that"
            )
        return value

    @validate("slice_changes_per_period", "max_concurrent_restarts")
    def _valid_counts(self, proposal: Any) -> int:
        name, value = proposal["trait"].name, int(proposal["value"])
        if value < (1 if name == "max_concurrent_restarts" else 0):
            raise ValueError(f"{name} must be at least {int(name != 'slice_changes_per_period')}")
        return value

    def settings(self) -> dict[str, Any]:
        """Every setting by name (what :meth:`to_json` carries)."""
        return {name: getattr(self, name) for name in sorted(self.trait_names(config=True))}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SliceSettings) and self.settings() == other.settings()

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable like any traits object

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
        return SlicePolicy(sizes=tuple(self.sizes), maximum=caps)

    @property
    def url_for_servers(self) -> str:
        """The restart service's base URL as single-user servers call it (ends with a slash)."""
        base = (
            self.server_service_url
            or f"{self.service_url.rstrip('/')}/services/{self.service_name}/"
        )
        return base if base.endswith("/") else base + "/"

    def to_json(self) -> str:
        return json.dumps(self.settings())

    @staticmethod
    def from_json(text: str) -> SliceSettings:
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict) or not data.get("controller_url"):
            raise ValueError("the settings name no controller_url")
        unknown = set(data) - set(SliceSettings.class_trait_names(config=True))
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return SliceSettings(**data)

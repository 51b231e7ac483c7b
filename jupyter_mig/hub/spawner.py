"""KubeSpawner integration: a live ``profile_list`` and the hook that turns a size into a pod.

``SliceOptions`` is the ``Spawner.apply_user_options`` hook (JupyterHub >= 5.3): it reads
``user_options["gpu_slice"]``, checks it against the hub's policy and the controller's capacity,
and sets, on a KubeSpawner, one ``nvidia.com/mig-<profile>: "1"`` resource limit, node affinity
to the GPU products that serve that profile and the interactive annotation.  The resource name
always comes from the profile table, never from the user's string.  On any spawner it sets the
``JUPYTER_MIG_*`` environment the server extension reads.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from jupyter_mig.api.constants import (
    GPU_PRODUCT_LABEL,
    INTERACTIVE_ANNOTATION,
    MIG_RESOURCE_PREFIX,
)
from jupyter_mig.hub.limits import check_total
from jupyter_mig.hub.settings import NO_GPU, OPTION, SliceSettings
from jupyter_mig.mig.sizes import SizeError, parse_size
from jupyter_mig.slices import contract as env_names
from jupyter_mig.slices.client import CapacityClient
from jupyter_mig.slices.errors import SLICE_ERRORS, CapacityError, SliceRefused, http_refusal
from jupyter_mig.slices.policy import (
    BUSY,
    FREE,
    REPARTITION,
    SliceOption,
    SlicePolicy,
    held_gb,
    menu_entries,
    plan_slice,
)

#: The key under which a dict-valued ``node_affinity_required`` gets our term.
AFFINITY_KEY = "jupyter-mig"


def requested_size(user_options: Mapping[str, Any]) -> str | None:
    """The size in ``user_options``, or None for no GPU; raises ValueError on a non-string."""
    value = user_options.get(OPTION)
    if value is None or value == NO_GPU:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{OPTION} must be a size such as 10gb, or {NO_GPU!r}")
    return value.strip()


def user_groups(spawner: Any) -> list[str]:
    return [g.name for g in getattr(spawner.user, "groups", [])]


def slice_environment(
    settings: SliceSettings, policy: SlicePolicy, option: SliceOption | None
) -> dict[str, str]:
    """What the single-user server's extension reads (docs/hub.md lists each variable)."""
    env = {
        env_names.CONTROLLER_URL_ENV: settings.controller_url,
        env_names.SERVICE_URL_ENV: settings.url_for_servers,
        env_names.ALLOWED_SIZES_ENV: ",".join(policy.sizes),
        env_names.MAX_SIZE_ENV: ",".join(policy.maximum),
    }
    if option is not None:
        env.update(
            {
                env_names.SIZE_ENV: option.size,
                env_names.SLICE_ENV: option.profile,
                env_names.RESOURCE_ENV: option.resource,
                env_names.MODELS_ENV: ",".join(option.models),
            }
        )
    return env


def _without_product_terms(terms: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Node selector terms with our product expressions taken out (and terms left empty dropped)."""
    kept = []
    for original in terms:
        term: dict[str, Any] = copy.deepcopy(dict(original))
        expressions = [
            e for e in term.get("matchExpressions", []) if e.get("key") != GPU_PRODUCT_LABEL
        ]
        if expressions:
            term["matchExpressions"] = expressions
        else:
            term.pop("matchExpressions", None)
        if term.get("matchExpressions") or term.get("matchFields"):
            kept.append(term)
    return kept


def _with_products(terms: list[dict[str, Any]], products: Iterable[str]) -> list[dict[str, Any]]:
    """Terms are ORed, so the product constraint goes into every one of them."""
    expression = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": sorted(products)}
    if not terms:
        return [{"matchExpressions": [expression]}]
    return [{**t, "matchExpressions": [*t.get("matchExpressions", []), expression]} for t in terms]


def _affinity(current: Any, option: SliceOption | None) -> Any:
    """``node_affinity_required`` (a list of terms or a dict of named terms) constrained by us."""
    if isinstance(current, Mapping):
        kept = {}
        for key in sorted(current):
            terms = _without_product_terms([current[key]]) if key != AFFINITY_KEY else []
            if terms:
                kept[key] = terms[0]
        if option is None:
            return kept
        if not kept:
            return {AFFINITY_KEY: _with_products([], option.products)[0]}
        return {k: _with_products([t], option.products)[0] for k, t in kept.items()}
    terms = _without_product_terms(current or [])
    return _with_products(terms, option.products) if option is not None else terms


def apply_slice(
    spawner: Any, settings: SliceSettings, policy: SlicePolicy, option: SliceOption | None
) -> None:
    """Set (or clear) the slice on a spawner; idempotent, so a restart without GPU clears it.

    Traits are replaced, never mutated in place: their default values may be shared config.
    """
    spawner.environment = {
        **{k: v for k, v in spawner.environment.items() if not k.startswith(env_names.ENV_PREFIX)},
        **slice_environment(settings, policy, option),
    }
    if not hasattr(spawner, "extra_resource_limits"):  # not a KubeSpawner: environment only
        return
    limits = {
        k: v
        for k, v in spawner.extra_resource_limits.items()
        if not k.startswith(MIG_RESOURCE_PREFIX)
    }
    guarantees = {
        k: v
        for k, v in spawner.extra_resource_guarantees.items()
        if not k.startswith(MIG_RESOURCE_PREFIX)
    }
    annotations = {
        k: v for k, v in spawner.extra_annotations.items() if k != INTERACTIVE_ANNOTATION
    }
    if option is not None:
        limits[option.resource] = "1"  # extended resources: limits only, requests follow
        annotations[INTERACTIVE_ANNOTATION] = "true"
    spawner.extra_resource_limits = limits
    spawner.extra_resource_guarantees = guarantees
    spawner.extra_annotations = annotations
    spawner.node_affinity_required = _affinity(spawner.node_affinity_required, option)


def _http_error(status: int, message: str) -> Exception:
    from tornado.web import HTTPError

    return HTTPError(status, message.replace("%", "%%"))


class SliceOptions:
    """``c.Spawner.apply_user_options``: validate the requested size and apply it."""

    def __init__(self, settings: SliceSettings, capacity: CapacityClient | None = None) -> None:
        self.settings = settings
        self.capacity = capacity or CapacityClient(settings.controller_url, settings.capacity_ttl)

    async def plan(
        self, policy: SlicePolicy, user_options: Mapping[str, Any]
    ) -> SliceOption | None:
        """The option this spawn gets; HTTP errors with one clear message otherwise."""
        try:
            size = requested_size(user_options)
        except ValueError as err:
            raise _http_error(400, str(err)) from None
        if size is None:
            return None
        try:
            parse_size(size)
            capacity = await self.capacity.get()
            return plan_slice(size, capacity, policy)
        except SLICE_ERRORS as err:
            raise _http_error(*http_refusal(err)) from None

    async def check_total(self, spawner: Any, option: SliceOption) -> None:
        """Refuse (403) what would take the user's active servers over ``max_total_size``."""
        if self.settings.max_total_gb is None:
            return
        others = []
        for other in getattr(spawner.user, "spawners", {}).values():
            if other is not spawner and other.active:
                size = (other.user_options or {}).get(OPTION)
                if isinstance(size, str) and size not in ("", NO_GPU):
                    others.append(size)  # held_gb counts what still resolves
        try:
            check_total(self.settings, option, held_gb(others, await self.capacity.get()))
        except (SliceRefused, CapacityError) as err:
            raise _http_error(*http_refusal(err)) from None

    async def __call__(self, spawner: Any, user_options: Mapping[str, Any]) -> None:
        policy = self.settings.policy_for(user_groups(spawner))
        option = await self.plan(policy, user_options)
        if option is not None:
            await self.check_total(spawner, option)
        apply_slice(spawner, self.settings, policy, option)
        if option is not None:
            spawner.log.info(
                "%s: GPU slice %s -> %s (%s) on %s",
                spawner._log_name,
                option.size,
                option.profile,
                option.status,
                ", ".join(option.models),
            )


_STATUS_TEXT = {
    FREE: "{free} free now",
    REPARTITION: "ready after repartitioning",
    BUSY: "all in use: waits for one to be released",
}


def choice_label(option: SliceOption) -> str:
    status = _STATUS_TEXT[option.status].format(free=option.free)
    compute = f"{option.compute} compute slice" + ("s" if option.compute > 1 else "")
    return f"{option.size}: {option.profile} ({option.memory_gib:.1f} GiB, {compute}) — {status}"


class SliceProfiles:
    """A callable ``c.KubeSpawner.profile_list``: the admin's profiles, each with a slice option.

    The choices are the menu sizes with their availability now.  A size already in the user's
    ``user_options`` (from the REST API, e.g. a restart from ``%gpu_slice``) is offered too when
    it parses, so KubeSpawner accepts it; :class:`SliceOptions` has the last word on it.
    """

    def __init__(
        self,
        settings: SliceSettings,
        profiles: list[dict[str, Any]] | None = None,
        capacity: CapacityClient | None = None,
    ) -> None:
        self.settings = settings
        self.profiles = profiles or [
            {"display_name": "Jupyter server", "slug": "default", "default": True}
        ]
        self.capacity = capacity or CapacityClient(settings.controller_url, settings.capacity_ttl)

    async def choices(self, spawner: Any) -> dict[str, dict[str, Any]]:
        choices: dict[str, dict[str, Any]] = {NO_GPU: {"display_name": "No GPU", "default": True}}
        policy = self.settings.policy_for(user_groups(spawner))
        try:
            capacity = await self.capacity.get()
        except CapacityError as err:
            spawner.log.warning("GPU sizes not offered: %s", err)
        else:
            for option in menu_entries(capacity, policy):
                choices[option.size] = {"display_name": choice_label(option)}
        try:
            wanted = requested_size(spawner.user_options or {})
            if wanted is not None:
                parse_size(wanted)
        except (ValueError, SizeError):
            wanted = None
        if wanted is not None and wanted not in choices:
            choices[wanted] = {"display_name": f"{wanted} (as requested)"}
        return choices

    async def __call__(self, spawner: Any) -> list[dict[str, Any]]:
        choices = await self.choices(spawner)
        profiles = copy.deepcopy(self.profiles)
        for profile in profiles:
            options = profile.setdefault("profile_options", {})
            options[OPTION] = {"display_name": "GPU slice", "choices": copy.deepcopy(choices)}
        return profiles

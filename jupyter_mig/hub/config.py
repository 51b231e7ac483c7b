"""One call in ``jupyterhub_config.py`` wires GPU slices into a hub.

:func:`configure_hub` sets the KubeSpawner ``profile_list``, the ``apply_user_options`` hook, the
scopes of the single-user servers' tokens, and registers the restart service with its role.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_mig.hub.settings import SETTINGS_ENV, SliceSettings
from jupyter_mig.hub.spawner import SliceOptions, SliceProfiles
from jupyter_mig.kernels.template import TEMPLATE_ENV, KernelPodTemplate
from jupyter_mig.slices.client import CapacityClient

#: The scopes of the ``server`` role that every server token keeps.
SERVER_SCOPES = ("access:servers!server", "users:activity!user")
#: What a server token needs to restart its own server through the service: the service's
#: access scope is added per service name; stopping and starting takes ``servers!server``, as
#: JupyterHub's own REST API does (``access:servers`` only lets a token reach the server).
RESTART_SCOPE = "servers!server"
#: What the restart service may do: stop and start any user's servers, read names and groups.
SERVICE_SCOPES = ("servers", "read:users:name", "read:users:groups")


def access_scope(settings: SliceSettings) -> str:
    return f"access:services!service={settings.service_name}"


def configure_hub(
    c: Any,
    settings: SliceSettings | None = None,
    profiles: list[dict[str, Any]] | None = None,
    listen: str | None = None,
    kernels: KernelPodTemplate | None = None,
) -> None:
    """Configure a JupyterHub (``c`` is the config object of ``jupyterhub_config.py``).

    ``settings``: default ``c.SliceSettings`` (``controller_url`` is required).

    ``profiles``: the admin's KubeSpawner profiles; each gets the ``gpu_slice`` option.
    ``listen``: the restart service's listen address (``HOST:PORT``) when it differs from
    ``settings.service_url`` (e.g. ``0.0.0.0:10101`` behind a Kubernetes Service).
    ``kernels``: the kernel pod template (default ``c.KernelPodTemplate``); with a namespace
    and an image set, the service creates kernel pods with their own slices.
    """
    if settings is None:
        settings = SliceSettings(config=c)
    if not settings.controller_url:
        raise ValueError("set c.SliceSettings.controller_url to the jupyter-mig controller's URL")
    capacity = CapacityClient(settings.controller_url, settings.capacity_ttl)
    c.KubeSpawner.profile_list = SliceProfiles(settings, profiles, capacity)
    c.Spawner.apply_user_options = SliceOptions(settings, capacity)

    scope = access_scope(settings)
    configured = c.Spawner.server_token_scopes if "server_token_scopes" in c.Spawner else None
    base = list(configured) if isinstance(configured, list) else list(SERVER_SCOPES)
    c.Spawner.server_token_scopes = [*base, *(s for s in (scope, RESTART_SCOPE) if s not in base)]

    # Users must hold the access scope for their server tokens to get it (tokens get the subset
    # of the requested scopes that their owner holds).
    if _hub_has_trait("extra_user_scopes"):  # JupyterHub >= 6
        c.JupyterHub.extra_user_scopes = {*_existing(c.JupyterHub, "extra_user_scopes"), scope}
    else:
        c.JupyterHub.load_roles = [
            *[r for r in _existing(c.JupyterHub, "load_roles") if r.get("name") != "user"],
            {"name": "user", "scopes": ["self", scope]},
        ]

    if kernels is None:
        kernels = KernelPodTemplate(config=c)
    environment = {SETTINGS_ENV: settings.to_json()}
    if kernels.enabled:
        environment[TEMPLATE_ENV] = kernels.to_json()
    command = [sys.executable, "-m", "jupyter_mig.cli", "hub-service"]
    if listen:
        command += ["--listen", listen]
    c.JupyterHub.services = [
        *[s for s in _existing(c.JupyterHub, "services") if s.get("name") != settings.service_name],
        {
            "name": settings.service_name,
            "url": settings.service_url,
            "command": command,
            "environment": environment,
            "display": False,
        },
    ]
    c.JupyterHub.load_roles = [
        *[
            r
            for r in _existing(c.JupyterHub, "load_roles")
            if r.get("name") != settings.service_name
        ],
        {
            "name": settings.service_name,
            "description": "restart single-user servers with another GPU slice",
            "scopes": list(SERVICE_SCOPES),
            "services": [settings.service_name],
        },
    ]


def _existing(section: Any, name: str) -> list[Any]:
    return list(section[name]) if name in section else []


def _hub_has_trait(name: str) -> bool:
    from jupyterhub.app import JupyterHub

    return JupyterHub.class_traits().get(name) is not None

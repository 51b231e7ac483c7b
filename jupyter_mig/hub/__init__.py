"""JupyterHub/KubeSpawner integration: GPU slices in the spawn form and on restart.

In ``jupyterhub_config.py``::

    from jupyter_mig.hub import configure_hub
    c.SliceSettings.controller_url = "http://jupyter-mig-controller.jupyter-mig:8080"
    configure_hub(c)

See docs/hub.md.  The names below load on first use, so ``jupyter-mig hub-service --help``
(which imports this package) works without the hub extra installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_mig.hub.config import configure_hub
    from jupyter_mig.hub.settings import SliceSettings
    from jupyter_mig.hub.spawner import SliceOptions, SliceProfiles, apply_slice

_WHERE = {
    "configure_hub": "jupyter_mig.hub.config",
    "SliceSettings": "jupyter_mig.hub.settings",
    "SliceOptions": "jupyter_mig.hub.spawner",
    "SliceProfiles": "jupyter_mig.hub.spawner",
    "apply_slice": "jupyter_mig.hub.spawner",
}
__all__ = ["SliceOptions", "SliceProfiles", "SliceSettings", "apply_slice", "configure_hub"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

"""Loading the server extension: settings, the shared capacity cache, the REST handlers."""

from __future__ import annotations

from typing import Any

from jupyter_mig.notebook.config import JupyterMig
from jupyter_mig.notebook.handlers import SETTINGS_KEY, ExtensionState, handlers
from jupyter_mig.slices.client import CapacityClient


def _load_jupyter_server_extension(serverapp: Any) -> None:
    config = JupyterMig(parent=serverapp)
    state = ExtensionState(
        config=config,
        capacity=CapacityClient(config.controller_url, config.capacity_ttl, config.request_timeout),
    )
    web_app = serverapp.web_app
    web_app.settings[SETTINGS_KEY] = state
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info(
        "jupyter-mig: GPU slice API at %sjupyter-mig/api/ (controller: %s)",
        web_app.settings["base_url"],
        config.controller_url or "not configured",
    )

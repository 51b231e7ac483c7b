"""Settings of the server extension: ``c.JupyterMig.<name>`` in ``jupyter_server_config.py``.

Under JupyterHub the defaults come from the environment the hub's spawner hook sets
(``JUPYTER_MIG_*``), so one hub configuration drives every server.  These checks are for quick,
clear answers only: the user controls this process, so the hub enforces the same rules again.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Float, List, Unicode, default, validate
from traitlets.config import Configurable

from jupyter_mig.mig.sizes import SizeError, parse_size
from jupyter_mig.slices.contract import (
    ALLOWED_SIZES_ENV,
    CONTROLLER_URL_ENV,
    MAX_RESTART_TIMEOUT,
    MAX_SIZE_ENV,
    RESTART_TIMEOUT,
    SERVICE_URL_ENV,
)
from jupyter_mig.slices.policy import SlicePolicy, split_list


class JupyterMig(Configurable):
    """GPU slices for this Jupyter server."""

    controller_url = Unicode(
        help="Base URL of the jupyter-mig controller (its capacity API is /api/v1/capacity). "
        f"Default: ${CONTROLLER_URL_ENV}."
    ).tag(config=True)

    capacity_ttl = Float(
        5.0, help="Seconds a capacity answer is reused before asking the controller again."
    ).tag(config=True)

    allowed_sizes = List(
        Unicode(),
        help="Sizes users may ask for (empty: every size the cluster's GPUs offer). "
        f"Default: ${ALLOWED_SIZES_ENV} (comma-separated).",
    ).tag(config=True)

    max_size = List(
        Unicode(),
        help="The largest slice this user may ask for; several entries: any of them. "
        f"Default: ${MAX_SIZE_ENV} (comma-separated).",
    ).tag(config=True)

    service_url = Unicode(
        help="URL of the hub's jupyter-mig restart service, which restarts this server with "
        f"another slice. Default: ${SERVICE_URL_ENV}."
    ).tag(config=True)

    restart_timeout = Float(
        RESTART_TIMEOUT,
        help="Default seconds the hub waits for the restarted server before going back to the "
        f"previous slice (a request may ask for up to {MAX_RESTART_TIMEOUT:g}).",
    ).tag(config=True)

    request_timeout = Float(
        10.0, help="Seconds to wait for the controller or the hub's restart service."
    ).tag(config=True)

    @default("controller_url")
    def _controller_url_default(self) -> str:
        return os.environ.get(CONTROLLER_URL_ENV, "")

    @default("allowed_sizes")
    def _allowed_sizes_default(self) -> list[str]:
        return list(split_list(os.environ.get(ALLOWED_SIZES_ENV)))

    @default("max_size")
    def _max_size_default(self) -> list[str]:
        return list(split_list(os.environ.get(MAX_SIZE_ENV)))

    @default("service_url")
    def _service_url_default(self) -> str:
        return os.environ.get(SERVICE_URL_ENV, "")

    @validate("allowed_sizes", "max_size")
    def _valid_sizes(self, proposal: Any) -> list[str]:
        sizes = [str(s).strip() for s in proposal["value"]]
        for size in sizes:
            try:
                parse_size(size)
            except SizeError as err:
                raise ValueError(f"JupyterMig.{proposal['trait'].name}: {err}") from None
        return sizes

    @property
    def policy(self) -> SlicePolicy:
        return SlicePolicy(sizes=tuple(self.allowed_sizes), maximum=tuple(self.max_size))

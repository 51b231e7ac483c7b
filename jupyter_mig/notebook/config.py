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

from jupyter_mig.api.slices import SlicePolicy, split_list
from jupyter_mig.mig.sizes import SizeError, parse_size


class JupyterMig(Configurable):
    """GPU slices for this Jupyter server."""

    controller_url = Unicode(
        help="Base URL of the jupyter-mig controller (its capacity API is /api/v1/capacity). "
        "Default: $JUPYTER_MIG_CONTROLLER_URL."
    ).tag(config=True)

    capacity_ttl = Float(
        5.0, help="Seconds a capacity answer is reused before asking the controller again."
    ).tag(config=True)

    allowed_sizes = List(
        Unicode(),
        help="Sizes users may ask for (empty: every size the cluster's GPUs offer). "
        "Default: $JUPYTER_MIG_ALLOWED_SIZES (comma-separated).",
    ).tag(config=True)

    max_size = List(
        Unicode(),
        help="The largest slice this user may ask for; several entries: any of them. "
        "Default: $JUPYTER_MIG_MAX_SIZE (comma-separated).",
    ).tag(config=True)

    service_url = Unicode(
        help="URL of the hub's jupyter-mig restart service, which restarts this server with "
        "another slice. Default: $JUPYTER_MIG_SERVICE_URL."
    ).tag(config=True)

    restart_timeout = Float(
        600.0,
        help="Default seconds the hub waits for the restarted server before going back to the "
        "previous slice.",
    ).tag(config=True)

    request_timeout = Float(
        10.0, help="Seconds to wait for the controller or the hub's restart service."
    ).tag(config=True)

    @default("controller_url")
    def _controller_url_default(self) -> str:
        return os.environ.get("JUPYTER_MIG_CONTROLLER_URL", "")

    @default("allowed_sizes")
    def _allowed_sizes_default(self) -> list[str]:
        return list(split_list(os.environ.get("JUPYTER_MIG_ALLOWED_SIZES")))

    @default("max_size")
    def _max_size_default(self) -> list[str]:
        return list(split_list(os.environ.get("JUPYTER_MIG_MAX_SIZE")))

    @default("service_url")
    def _service_url_default(self) -> str:
        return os.environ.get("JUPYTER_MIG_SERVICE_URL", "")

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

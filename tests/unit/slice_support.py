"""A controller capacity API for the notebook and hub tests: the controller's own HTTP server.

The document is rendered from planner snapshots by the controller's capacity code, so the
numbers are what a controller would publish for this cluster.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from jupyter_mig.controller.capacity import capacity, render_capacity
from jupyter_mig.controller.http import Endpoints, HttpServer
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

A100_80 = MODELS.get("A100-80GB")
A100_40 = MODELS.get("A100-40GB")


def snapshots() -> list[NodeSnapshot]:
    """One 1g.10gb free and one in use on an A100-80GB, an empty A100-80GB, a full A100-40GB."""
    small = A100_80.profile("1g.10gb").nvml_id
    whole = A100_40.profile("7g.40gb").nvml_id
    return [
        NodeSnapshot(
            "gpu-node-1",
            (
                GpuSnapshot(
                    0,
                    A100_80,
                    (ObservedInstance(small, 0, True), ObservedInstance(small, 1, False)),
                ),
                GpuSnapshot(1, A100_80),
            ),
        ),
        NodeSnapshot("gpu-node-2", (GpuSnapshot(0, A100_40, (ObservedInstance(whole, 0, True),)),)),
    ]


class Controller:
    """The controller's HTTP endpoints with a fixed capacity; counts capacity requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.document = render_capacity(capacity(snapshots()), datetime.now(UTC))
        self.server = HttpServer(
            "127.0.0.1",
            0,
            Endpoints(CollectorRegistry(), lambda: (True, "ok"), lambda: (True, "ok"), self.serve),
        )

    def serve(self) -> dict[str, Any]:
        self.requests += 1
        return self.document

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def __enter__(self) -> Controller:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

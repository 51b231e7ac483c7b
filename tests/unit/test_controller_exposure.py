"""What the controller reads and publishes: chosen namespaces only, per-GPU detail on request."""

from __future__ import annotations

import pytest
from controller_objects import gpu_status, mignode, node

from jupyter_mig.controller.manager import Controller, Settings, pod_paths
from jupyter_mig.kube.client import Kube


def controller_with_one_node(settings: Settings) -> Controller:
    controller = Controller(Kube(None, "test"), settings)
    controller.nodes._items = {"gpu-1": node("gpu-1")}
    controller.mignodes._items = {
        "gpu-1": mignode("gpu-1", [gpu_status(0, [("1g.10gb", 0, "jhub/jupyter-alice")])])
    }
    return controller


def test_the_capacity_api_gives_counts_only_unless_the_admin_publishes_detail() -> None:
    plain = controller_with_one_node(Settings()).capacity_document()
    assert "gpus" not in plain
    assert "gpu-1" not in str(plain) and "alice" not in str(plain)
    assert plain["models"][0]["model"] == "A100-80GB"
    detailed = controller_with_one_node(Settings(capacity_detail=True)).capacity_document()
    assert [(g["node"], g["index"]) for g in detailed["gpus"]] == [("gpu-1", 0)]


@pytest.mark.parametrize(
    ("namespaces", "paths"),
    [
        ((), ["/api/v1/pods"]),
        (
            ("jhub", "batch", "jhub"),
            ["/api/v1/namespaces/batch/pods", "/api/v1/namespaces/jhub/pods"],
        ),
    ],
)
def test_pods_are_watched_cluster_wide_or_in_the_chosen_namespaces(
    namespaces: tuple[str, ...], paths: list[str]
) -> None:
    assert pod_paths(namespaces) == paths
    controller = Controller(Kube(None, "test"), Settings(watch_namespaces=namespaces))
    assert [i.path for i in controller.pod_informers] == paths

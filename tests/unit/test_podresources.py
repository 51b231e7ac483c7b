"""The pod-resources API v1: our server and client over a real unix-socket gRPC channel."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_mig.podresources.client import (
    DeviceAssignment,
    PodResourcesError,
    allocatable,
    assignments,
    list_devices,
    pod_devices,
)
from jupyter_mig.podresources.server import serve

MIG_A = "MIG-aaaaaaaa-0000-4000-8000-000000000001"
MIG_B = "MIG-bbbbbbbb-0000-4000-8000-000000000002"
MIG_C = "MIG-cccccccc-0000-4000-8000-000000000003"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes: pytest's tmp_path can be longer
    with tempfile.TemporaryDirectory(prefix="jm-pr-") as directory:
        yield Path(directory)


@pytest.fixture
def socket_path(socket_dir: Path) -> Iterator[str]:
    held = [
        DeviceAssignment("demo", "pod-a", "main", "nvidia.com/mig-1g.10gb", MIG_A),
        DeviceAssignment("demo", "pod-a", "side", "nvidia.com/mig-3g.40gb", MIG_B),
        DeviceAssignment("other", "pod-b", "main", "example.com/fpga", "fpga-0"),
    ]
    devices = {"nvidia.com/mig-1g.10gb": [MIG_A, MIG_C], "nvidia.com/mig-3g.40gb": [MIG_B]}
    path = socket_dir / "pod-resources.sock"
    server = serve(path, lambda: list(held), lambda: devices)
    yield str(path)
    server.stop(grace=None)


def test_list_groups_devices_by_pod(socket_path: str) -> None:
    assert list_devices(socket_path) == {
        "demo/pod-a": [("nvidia.com/mig-1g.10gb", MIG_A), ("nvidia.com/mig-3g.40gb", MIG_B)],
        "other/pod-b": [("example.com/fpga", "fpga-0")],
    }
    assert list_devices(socket_path, resource_prefix="nvidia.com/mig-").keys() == {"demo/pod-a"}
    containers = {(a.pod_key, a.container) for a in assignments(socket_path)}
    assert containers == {("demo/pod-a", "main"), ("demo/pod-a", "side"), ("other/pod-b", "main")}


def test_allocatable_lists_every_device(socket_path: str) -> None:
    assert allocatable(socket_path) == {
        "nvidia.com/mig-1g.10gb": [MIG_A, MIG_C],
        "nvidia.com/mig-3g.40gb": [MIG_B],
    }


def test_get_one_pod(socket_path: str) -> None:
    assert sorted(pod_devices(socket_path, "demo", "pod-a")) == [
        ("nvidia.com/mig-1g.10gb", MIG_A),
        ("nvidia.com/mig-3g.40gb", MIG_B),
    ]
    assert pod_devices(socket_path, "demo", "nobody") == []


def test_missing_socket_is_one_clear_error(socket_dir: Path) -> None:
    missing = str(socket_dir / "absent.sock")
    with pytest.raises(PodResourcesError, match=r"absent\.sock"):
        list_devices(missing, timeout=0.5)


def test_a_stopping_server_leaves_its_successors_socket(socket_dir: Path) -> None:
    path = socket_dir / "pod-resources.sock"
    old = serve(path, lambda: [], lambda: {"nvidia.com/mig-1g.10gb": [MIG_A]})
    new = serve(path, lambda: [], lambda: {"nvidia.com/mig-1g.10gb": [MIG_C]})
    try:
        old.stop(grace=None).wait(timeout=10)
        assert allocatable(str(path)) == {"nvidia.com/mig-1g.10gb": [MIG_C]}
    finally:
        new.stop(grace=None)

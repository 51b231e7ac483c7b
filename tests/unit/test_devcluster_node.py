"""The pure parts of a devcluster's real GPU nodes: the command line's checks, the image
archives, the node's configuration.  The node itself runs in tests/e2e/test_e2e_real_node.py."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from jupyter_mig import cli
from jupyter_mig.devcluster import host, images
from jupyter_mig.devcluster import node as gpu_nodes


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--gpu-nodes", "4"], "--gpu-nodes 4: expected 0 to 3"),
        (["--gpu-nodes", "-1"], "--gpu-nodes -1: expected 0 to 3"),
        (["--gpu-nodes", "1", "--gpus", "0"], "--gpus 0: expected 1 to 8"),
        (["--gpu-nodes", "1", "--gpu", "B300"], "--gpu 'B300': unknown GPU model; known: "),
    ],
)
def test_bad_gpu_node_options_are_one_line_before_anything_starts(
    args: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["devcluster", "up", "--dir", str(tmp_path / "dc"), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1, err
    assert not (tmp_path / "dc").exists()


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_an_image_archive_is_what_docker_save_writes_and_reproducible(tmp_path: Path) -> None:
    binary = tmp_path / "busybox"
    binary.write_bytes(b"\x7fELF not really busybox")
    first = images.busybox_image(tmp_path / "a", binary)
    second = images.busybox_image(tmp_path / "b", binary)
    assert first.archive.read_bytes() == second.archive.read_bytes()
    members = _members(first.archive)
    [manifest] = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == [images.BUSYBOX_IMAGE]
    config = json.loads(members[manifest["Config"]])
    [layer_name] = manifest["Layers"]
    layer = members[layer_name]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert manifest["Config"] == hashlib.sha256(members[manifest["Config"]]).hexdigest() + ".json"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        entries = {m.name: m for m in tar.getmembers()}
    assert entries["bin/busybox"].mode == 0o755
    assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "busybox"


def test_a_missing_busybox_names_the_package(tmp_path: Path) -> None:
    from jupyter_mig.errors import UserError

    with pytest.raises(UserError, match="busybox-static"):
        images.busybox_image(tmp_path, tmp_path / "nowhere")


def _node(index: int = 2) -> gpu_nodes.GpuNode:
    return gpu_nodes.GpuNode(
        name="gpu-2", index=index, model="A100-80GB", gpus=1, dir=Path("/d/nodes/gpu-2"),
        run_dir=Path("/run/jupyter-mig/k/gpu-2"), cgroup="/jupyter-mig/k-gpu-2",
        bridge="jmabcdef-2", network="10.213.2", kubelet_port=10250, healthz_port=10248, pids={},
    )  # fmt: skip


def test_each_node_has_its_own_network_cgroup_and_sockets() -> None:
    node = _node()
    kubelet = json.loads(gpu_nodes.kubelet_config(node, Path("/d/pki/ca.crt")))
    assert kubelet["address"] == node.ip == "10.213.2.1"
    assert kubelet["cgroupRoot"] == node.cgroup
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{node.containerd_socket}"
    cni = json.loads(gpu_nodes.cni_config(node))
    [bridge] = cni["plugins"]
    assert bridge["bridge"] == node.bridge
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.213.2.0/24"}]]
    containerd = gpu_nodes.containerd_config(node, "/usr/lib/cni")
    assert f'address = "{node.containerd_socket}"' in containerd
    assert f'sandbox_image = "{images.PAUSE_IMAGE}"' in containerd
    # Every socket the node serves fits a unix socket path (107 bytes) with a long DIR.
    longest = node.device_plugin_dir / "nvidia-mig-1g.10gb.me.sock"
    assert len(str(longest)) < 107


def test_a_recorded_node_reads_back(tmp_path: Path) -> None:
    node = _node()
    node.dir = tmp_path / "nodes" / "gpu-2"
    node.dir.mkdir(parents=True)
    (node.dir / "node.json").write_text(json.dumps(node.to_json()))
    (tmp_path / "nodes" / "torn").mkdir()
    (tmp_path / "nodes" / "torn" / "node.json").write_text("{")
    assert gpu_nodes.recorded_nodes(tmp_path) == [node]


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_a_pod_subnet_in_use_is_refused_before_a_bridge_is_made() -> None:
    from jupyter_mig.errors import UserError

    # Loopback's own subnet: in use on every machine.
    with pytest.raises(UserError, match=r"gpu-2: its pod subnet 127\.0\.0\.0/24 is in use on lo"):
        host.make_bridge("jmtest-2", "127.0.0.2/24", "127.0.0.0/24", "gpu-2")
    assert not host.link_exists("jmtest-2")


def test_cgroup_pids_reads_every_level_and_skips_what_is_gone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for hierarchy, pod in (("memory", "pod-a"), ("pids", "pod-b")):
        cgroup = tmp_path / hierarchy / "jupyter-mig" / "k-gpu-1" / "kubepods" / pod
        cgroup.mkdir(parents=True)
        (cgroup / "cgroup.procs").write_text("41\n42\n" if pod == "pod-a" else "43\n")
    (tmp_path / "memory" / "jupyter-mig" / "k-gpu-1" / "cgroup.procs").write_text("7\n")
    monkeypatch.setattr(host, "CGROUP_FS", tmp_path)
    assert host.cgroup_pids("/jupyter-mig/k-gpu-1") == {7, 41, 42, 43}
    assert host.cgroup_pids("/jupyter-mig/k-gpu-2") == set()  # never made, or already removed

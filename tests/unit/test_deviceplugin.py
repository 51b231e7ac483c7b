"""NVIDIA's device plugin, unmodified, on our libnvidia-ml.so.1, with our kubelet side.

Needs the plugin built (``tests/deviceplugin/build.sh``, Go with cgo) and root for its mount
namespace; skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_mig.deviceplugin import nvidia
from jupyter_mig.deviceplugin.kubelet import DevicePluginError, DevicePluginHost
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import NvmlBackend, open_simulated, simgpu

A100 = MODELS.get("A100-80GB")

needs_plugin = pytest.mark.skipif(
    not nvidia.BINARY.is_file() or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs the plugin (tests/deviceplugin/build.sh), root and unshare",
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, NvmlBackend, DevicePluginHost]]:
    state = tmp_path / "gpus"
    simgpu.init_state(state, "A100-80GB", gpus=1)
    host = DevicePluginHost(tmp_path / "device-plugins")
    host.start()
    with open_simulated(state) as nvml:
        yield state, nvml, host
    host.stop()


def start_plugin(state: Path, host: DevicePluginHost) -> subprocess.Popen[bytes]:
    log = open(state / "plugin.log", "ab")  # noqa: SIM115 - the plugin process owns it
    return nvidia.start(state, host.directory, log)


def stop(plugin: subprocess.Popen[bytes]) -> None:
    plugin.terminate()
    plugin.wait(timeout=30)


@needs_plugin
def test_the_plugin_advertises_the_mig_devices_and_allocates_their_uuids(
    node: tuple[Path, NvmlBackend, DevicePluginHost],
) -> None:
    state, nvml, host = node
    small = [nvml.create_instance(0, A100.profile("1g.10gb").nvml_id, s) for s in (0, 1)]
    big = nvml.create_instance(0, A100.profile("3g.40gb").nvml_id, 4)
    expected = {
        "nvidia.com/mig-1g.10gb": sorted(gi.mig_uuid or "" for gi in small),
        "nvidia.com/mig-3g.40gb": [big.mig_uuid or ""],
    }
    plugin = start_plugin(state, host)
    try:
        seen = host.wait(lambda advertised: advertised == expected, timeout=60)
        assert seen, (host.advertised(), (state / "plugin.log").read_text()[-2000:])
        answer = host.allocate("nvidia.com/mig-3g.40gb", [big.mig_uuid or ""])
        assert dict(answer.envs)["NVIDIA_VISIBLE_DEVICES"] == big.mig_uuid
        with pytest.raises(DevicePluginError):
            host.allocate("nvidia.com/mig-7g.80gb", ["MIG-none"])
        # The plugin lists devices only at start; SIGHUP makes it read NVML again.
        nvml.destroy_instance(0, big.id)
        plugin.send_signal(signal.SIGHUP)
        expected = {"nvidia.com/mig-1g.10gb": expected["nvidia.com/mig-1g.10gb"]}
        seen = host.wait(lambda advertised: advertised == expected, timeout=60)
        assert seen, (host.advertised(), (state / "plugin.log").read_text()[-2000:])
    finally:
        stop(plugin)


def test_mig_minors_number_every_capability_like_the_driver() -> None:
    lines = nvidia.mig_minors(gpus=2).splitlines()
    assert lines[:4] == ["config 1", "monitor 2", "gpu0/gi0/access 3", "gpu0/gi0/ci0/access 4"]
    assert lines[-1] == f"gpu1/gi14/ci7/access {2 + 2 * 15 * 9}"


@needs_plugin
@pytest.mark.parametrize("model", ["A100-80GB", "H100-80GB"])
def test_the_plugin_names_the_whole_gpu_profile_like_nvidia_smi(tmp_path: Path, model: str) -> None:
    """It derives the name from the profile's share of the GPU's memory (7g.80gb, not 7g.79gb)."""
    state = tmp_path / "gpus"
    simgpu.init_state(state, model, gpus=1)
    host = DevicePluginHost(tmp_path / "device-plugins")
    host.start()
    whole = MODELS.get(model).full_profile
    with open_simulated(state) as nvml:
        made = nvml.create_instance(0, whole.nvml_id, 0)
    plugin = start_plugin(state, host)
    try:
        expected = {f"nvidia.com/mig-{whole.resource_name}": [made.mig_uuid or ""]}
        seen = host.wait(lambda advertised: advertised == expected, timeout=60)
        assert seen, host.advertised()
    finally:
        stop(plugin)
        host.stop()

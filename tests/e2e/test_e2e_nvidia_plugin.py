"""The seed scenario with NVIDIA's device plugin, unmodified, advertising the capacity.

The sim node runs NVIDIA's plugin on our libnvidia-ml.so.1 and takes the kubelet's side of the
device-plugin API: the Node's capacity is what the plugin lists, the agent refreshes it with
SIGHUP (through the sim node), and each container gets the environment of the plugin's Allocate
answer.  Needs the plugin built (``tests/deviceplugin/build.sh``) and root; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil

import pytest
from e2e_harness import System

from jupyter_mig.deviceplugin import nvidia

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not nvidia.BINARY.is_file() or os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs NVIDIA's plugin (tests/deviceplugin/build.sh), root and unshare",
    ),
]

REPLICAS = 5


def test_each_pod_sees_the_mig_device_the_planner_chose(system: System) -> None:
    node = system.add_node("a100", "A100-80GB", device_plugin="nvidia")
    system.start_controller("controller-0")
    for i in range(REPLICAS):
        system.create_pod(f"seed-{i}", "1g.10gb", interactive=True)
    names = [f"seed-{i}" for i in range(REPLICAS)]
    system.wait("all 5 pods to run", lambda: system.running(names))
    system.wait("the system to settle", system.settled)

    obj = system.mignode(node.name)
    assert obj is not None
    [gpu] = obj["status"]["gpus"]
    chosen = {i["pod"]: i["uuid"] for i in gpu["instances"]}  # what the agent made per pod
    assert len(chosen) == REPLICAS
    visible = {
        f"{record['namespace']}/{record['name']}": record["envs"]["main"]["NVIDIA_VISIBLE_DEVICES"]
        for record in node.allocations().values()
        if record["devices"]  # not the agent's own pod
    }
    assert visible == chosen

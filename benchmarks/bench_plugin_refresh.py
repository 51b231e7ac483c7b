"""NVIDIA's device plugin: from a refresh request to the new devices, on the kubelet's side
or on the Node.

Runs the unmodified plugin (``tests/deviceplugin/build.sh``) on our libnvidia-ml.so.1, then
repeats: change the layout through NVML (one 1g.10gb slice added or removed), ask for a refresh,
time until the new devices are seen.  Needs root (the plugin's mount namespace).

Without ``--dir``: ``jupyter_mig.deviceplugin.kubelet.DevicePluginHost`` is the kubelet; the
request is SIGHUP, the end is ListAndWatch naming exactly the new MIG devices.

With ``--dir`` (a devcluster directory; a running cluster there is used, otherwise one is
started and stopped at the end): a ``jupyter-mig sim-node --device-plugin nvidia`` is the
kubelet and the end is the Node's ``status.capacity`` showing the new count.  The request is
``--request file`` (what the agent does on a sim node: it writes the node's refresh file, the
sim node sends its plugin SIGHUP) or ``signal`` (SIGHUP straight to the plugin process, what
the agent's ``signal`` mode does on a real node).

    .venv/bin/python benchmarks/bench_plugin_refresh.py --rounds 20
    .venv/bin/python benchmarks/bench_plugin_refresh.py --dir /tmp/dc --rounds 10 --gpus 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench_e2e import running_cluster

from jupyter_mig.agent.devices import SignalRefresher, SimRefresher
from jupyter_mig.deviceplugin import nvidia
from jupyter_mig.deviceplugin.kubelet import DevicePluginHost
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import open_simulated, simgpu

RESOURCE = "nvidia.com/mig-1g.10gb"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dir", help="devcluster directory: measure up to the Node's capacity")
    parser.add_argument(
        "--request",
        choices=["file", "signal"],
        default="file",
        help="with --dir: the sim node's refresh file (as the agent) or SIGHUP to the plugin",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="with --dir: GPUs on the node; those after the first hold seven 1g.10gb each",
    )
    args = parser.parse_args()
    if args.dir:
        return on_node(Path(args.dir), args.rounds, args.request, args.gpus)
    one_g = MODELS.get("A100-80GB").profile("1g.10gb").nvml_id
    with tempfile.TemporaryDirectory(prefix="jm-dp-") as tmp:
        state = Path(tmp) / "gpus"
        simgpu.init_state(state, "A100-80GB", gpus=1)
        host = DevicePluginHost(Path(tmp) / "dp")
        host.start()
        nvml = open_simulated(state)
        nvml.create_instance(0, one_g, 0)
        with open(state / "plugin.log", "ab") as log:
            plugin = nvidia.start(state, host.directory, log)
        try:
            first = [gi.mig_uuid for gi in nvml.instances(0)]
            if not host.wait(lambda seen: seen.get(RESOURCE) == first, 60):
                print("the plugin did not register within 60 s", file=sys.stderr)
                return 1
            times = []
            for round_ in range(args.rounds):
                present = nvml.instances(0)
                if round_ % 2 == 0:
                    nvml.create_instance(0, one_g, 1)
                else:
                    nvml.destroy_instance(0, next(gi.id for gi in present if gi.start == 1))
                want = sorted(gi.mig_uuid or "" for gi in nvml.instances(0))
                began = time.monotonic()
                plugin.send_signal(signal.SIGHUP)
                if not host.wait(lambda seen, want=want: seen.get(RESOURCE) == want, 60):
                    print(f"round {round_}: no new list within 60 s", file=sys.stderr)
                    return 1
                times.append(time.monotonic() - began)
        finally:
            plugin.terminate()
            plugin.wait(timeout=30)
            nvml.close()
            host.stop()
    report("SIGHUP -> new ListAndWatch list", times)
    return 0


def report(what: str, times: list[float]) -> None:
    times = sorted(times)
    print(
        f"{what}, {len(times)} rounds: median {statistics.median(times):.3f} s, "
        f"min {times[0]:.3f} s, max {times[-1]:.3f} s"
    )


def on_node(cluster_dir: Path, rounds: int, request: str, gpus: int) -> int:
    """Refresh request -> the Node's status.capacity, through a sim node running the plugin."""
    from jupyter_mig.kube.client import Kube

    one_g = MODELS.get("A100-80GB").profile("1g.10gb").nvml_id
    name = f"bench-refresh-{uuid.uuid4().hex[:6]}"
    state = Path(tempfile.mkdtemp(prefix="jm-br-"))  # short: the socket path limit
    simgpu.init_state(state, "A100-80GB", gpus=gpus)
    nvml = open_simulated(state)
    nvml.create_instance(0, one_g, 0)
    for gpu in range(1, gpus):
        for start in range(7):
            nvml.create_instance(gpu, one_g, start)
    with running_cluster(cluster_dir) as cluster, cluster.api_client() as api:
        kube = Kube(api, "bench-plugin-refresh")
        kubeconfig = cluster.kubeconfig_for_user(f"system:node:{name}", ["system:nodes"])
        command = [sys.executable, "-m", "jupyter_mig.cli", "sim-node", "--kubeconfig"]
        command += [str(kubeconfig), "--name", name, "--gpu", "A100-80GB", "--gpus", str(gpus)]
        command += ["--state", str(state), "--device-plugin", "nvidia"]
        with open(state / "sim-node.log", "ab") as log:
            node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def capacity() -> int:
            try:
                found = kube.request("GET", f"/api/v1/nodes/{name}")
            except Exception:  # not registered yet
                return -1
            return int(((found.get("status") or {}).get("capacity") or {}).get(RESOURCE, -1))

        def refresh() -> None:
            if request == "file":
                SimRefresher(state).refresh(30)
                return
            for pid in SignalRefresher().pids():  # only this node's plugin: others run too
                if _parent(pid) == node.pid:
                    os.kill(pid, signal.SIGHUP)

        try:
            if not _wait(lambda: capacity() == 1 + 7 * (gpus - 1), 120):
                print(f"node {name}: no {RESOURCE} within 120 s; see {state}", file=sys.stderr)
                return 1
            times = []
            for round_ in range(rounds):
                if round_ % 2 == 0:
                    nvml.create_instance(0, one_g, 1)
                else:
                    second = next(gi.id for gi in nvml.instances(0) if gi.start == 1)
                    nvml.destroy_instance(0, second)
                want = sum(len(nvml.instances(gpu)) for gpu in range(gpus))
                began = time.monotonic()
                refresh()
                if not _wait(lambda want=want: capacity() == want, 60):
                    print(f"round {round_}: capacity not {want} within 60 s", file=sys.stderr)
                    return 1
                times.append(time.monotonic() - began)
        finally:
            node.terminate()
            node.wait(timeout=30)
            nvml.close()
            kube.request("DELETE", f"/api/v1/nodes/{name}")
    report(f"refresh request ({request}) -> Node status.capacity", times)
    shutil.rmtree(state, ignore_errors=True)  # kept on failure: the sim node's log is there
    return 0


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _wait(done: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(interval)
    return False


if __name__ == "__main__":
    sys.exit(main())

"""NVIDIA's device plugin: from SIGHUP to the new device list on the kubelet's side.

Runs the unmodified plugin (``tests/deviceplugin/build.sh``) on our libnvidia-ml.so.1 with
``jupyter_mig.deviceplugin.kubelet.DevicePluginHost`` as the kubelet, then repeats: change the
layout through NVML (one 1g.10gb slice added or removed), send SIGHUP, time until ListAndWatch
names exactly the new MIG devices.  Needs root (the plugin's mount namespace).

    .venv/bin/python benchmarks/bench_plugin_refresh.py --rounds 20
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_mig.deviceplugin import nvidia
from jupyter_mig.deviceplugin.kubelet import DevicePluginHost
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import open_simulated, simgpu

RESOURCE = "nvidia.com/mig-1g.10gb"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
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
    times.sort()
    print(
        f"SIGHUP -> new ListAndWatch list, {len(times)} rounds: median "
        f"{statistics.median(times):.3f} s, min {times[0]:.3f} s, max {times[-1]:.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

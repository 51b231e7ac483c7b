"""Kernel launch time with per-kernel slices: on a free slice, and on one that must be carved.

A real ``AsyncKernelManager`` starts "GPU 10gb" kernels through the provisioner, the hub
service's kernel API (real Kubernetes layer and capacity client; JupyterHub's users and tokens
are the tests' stand-ins, ``tests/support/kernels.py``), the real devcluster, the controller
and an agent with the chart's accounts and arguments, and a sim node whose pods only pretend to
run the kernel (``tests/e2e/e2e_harness.py``).  Simulated latencies are ``bench_e2e.py``'s with
``--device-plugin builtin``: ``--nvml-latency`` seconds per GPU-instance create or destroy
(0.5) and the plugin's re-read ``--refresh-delay`` seconds after a refresh request (2).

Round 1 starts ``--kernels`` kernels one after another and keeps them: each needs a new 1g.10gb
instance carved.  They are shut down, and round 2 starts as many again: each finds one of
those instances free.  A launch is timed from ``start_kernel`` to its return (the pod runs and
the kernel manager has its address).

    python benchmarks/bench_kernels.py --dir /tmp/dc --kernels 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from e2e_harness import E2E_VALUES, System, install_release, uninstall_release  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from support.kernels import Hub, serving  # noqa: E402

from jupyter_mig import devcluster  # noqa: E402
from jupyter_mig.hub.kernels import KernelPods  # noqa: E402
from jupyter_mig.hub.service import Restarter  # noqa: E402
from jupyter_mig.hub.settings import SliceSettings  # noqa: E402
from jupyter_mig.kernels.provisioner import GpuSliceProvisioner  # noqa: E402
from jupyter_mig.kernels.specs import kernel_spec  # noqa: E402
from jupyter_mig.kernels.template import KernelPodTemplate  # noqa: E402
from jupyter_mig.kube.client import KubeError  # noqa: E402
from jupyter_mig.slices.client import CapacityClient  # noqa: E402


async def launches(url: str, specs: KernelSpecManager, count: int) -> dict[str, list[float]]:
    """Seconds per launch: ``count`` carved, then ``count`` on the slices they left free."""
    os.environ.update({"JUPYTER_MIG_SERVICE_URL": url, "JUPYTERHUB_API_TOKEN": "alice-token"})
    GpuSliceProvisioner.service = None
    times: dict[str, list[float]] = {"carved": [], "free": []}
    for kind in ("carved", "free"):
        managers = []
        for _ in range(count):
            km = AsyncKernelManager(kernel_name="gpu-10gb", kernel_spec_manager=specs)
            started = time.monotonic()
            await km.start_kernel(kernel_id=str(uuid.uuid4()))
            times[kind].append(round(time.monotonic() - started, 2))
            managers.append(km)
        for km in managers:
            await km.shutdown_kernel(now=True)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    latency = {
        "nvmlDeviceCreateGpuInstanceWithPlacement": args.nvml_latency,
        "nvmlGpuInstanceDestroy": args.nvml_latency,
    }
    path = Path(args.dir)
    existing = devcluster.running(path)
    cluster = existing or devcluster.up(path)
    workdir = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    release = install_release(cluster, E2E_VALUES)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(namespace)
    system = System(cluster, release, namespace, workdir, refresh_delay=args.refresh_delay)
    try:
        system.add_node("n0", "A100-80GB", gpus=1, latency=latency, device_plugin="builtin")
        controller = system.start_controller("controller-0")
        controller_url = f"http://127.0.0.1:{controller.port}"
        kernel_dir = workdir / "kernels" / "gpu-10gb"
        kernel_dir.mkdir(parents=True)
        spec = kernel_spec("10gb", "GPU {size}")
        spec["metadata"]["kernel_provisioner"]["config"]["poll_interval"] = 0.1
        (kernel_dir / "kernel.json").write_text(json.dumps(spec))
        specs = KernelSpecManager(kernel_dirs=[str(workdir / "kernels")])
        settings = SliceSettings(controller_url=controller_url)
        template = KernelPodTemplate(
            namespace=namespace, image="none", node_selector=system.label, security_context={}
        )
        template.max_kernels_per_user = max(4, args.kernels)
        hub = Hub()
        kernels = KernelPods(
            template, settings, hub, CapacityClient(controller_url, 0), system.kube
        )
        times: dict[str, list[float]] = {}

        async def scenario(url: str) -> None:
            times.update(await launches(url, specs, args.kernels))

        asyncio.run(serving(kernels, Restarter(hub, settings), scenario))
    finally:
        system.close()
        uninstall_release(cluster, release)
        with contextlib.suppress(KubeError):
            system.kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
        if existing is None:
            devcluster.down(path)
    return {
        "settings": vars(args),
        "seconds": times,
        "median": {kind: statistics.median(values) for kind, values in times.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", required=True, help="devcluster directory")
    parser.add_argument("--kernels", type=int, default=5, help="launches per round (at most 7)")
    parser.add_argument("--nvml-latency", type=float, default=0.5)
    parser.add_argument("--refresh-delay", type=float, default=2.0)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    if not 1 <= args.kernels <= 7:
        parser.error("--kernels: 1 to 7 (an A100-80GB holds seven 1g.10gb slices)")
    result = run(args)
    for kind, values in result["seconds"].items():
        print(f"{kind:>7}: median {result['median'][kind]:.2f} s  ({', '.join(map(str, values))})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

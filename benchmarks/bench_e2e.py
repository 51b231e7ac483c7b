"""End-to-end latency: from a pod's creation to bound and to Running, on the real devcluster.

The whole system runs as in ``tests/e2e``: sim nodes with a kubelet's identity, an agent per
node and a controller with the chart's service accounts, RBAC and arguments
(``tests/e2e/e2e_harness.py``).  Each node's device plugin is NVIDIA's, unmodified
(``--device-plugin nvidia``, the default once ``tests/deviceplugin/build.sh`` has built it; needs
root): it re-reads NVML on SIGHUP in its own time, so no refresh delay is simulated.
``--device-plugin builtin`` is the Python stand-in, which re-reads ``--refresh-delay`` seconds
after a refresh request.  NVML is our libnvidia-ml.so.1 with its latency switch at
``--nvml-latency`` seconds per GPU-instance create or destroy (default 0.5).  Pods arrive
at random (exponential gaps), ask for one slice of a mix of sizes, half of them interactive,
and are deleted ``--lifetime`` seconds after they run, so capacity churns and later pods often
find a free slice that is already there.  With ``--lifetime 0`` pods stay, and on enough GPUs
every pod needs a slice carved for it: the controller's and agent's path.

Watches on pods, MigNodes and Nodes time each pod's way:

    created → unschedulable (scheduler)  → spec written for it (controller: batching, round)
            → bound (agent: NVML, device-plugin refresh; scheduler requeue) → Running (kubelet)

A pod that lands on a slice that already existed free (no spec written for it) is counted as
"reused"; the others as "carved".

    python benchmarks/bench_e2e.py --dir /tmp/dc --pods 100 --json /tmp/e2e.json
    python benchmarks/bench_e2e.py --dir /tmp/dc --pods 120 --lifetime 0 --nodes 4 --gpus 8

``--dir`` is a devcluster directory: a running cluster there is used (and left running),
otherwise one is started and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from e2e_harness import (  # noqa: E402
    E2E_VALUES,
    MIGNODES,
    E2EFailure,
    System,
    install_release,
    uninstall_release,
)

from jupyter_mig import devcluster  # noqa: E402
from jupyter_mig.deviceplugin import nvidia  # noqa: E402
from jupyter_mig.kube.client import Kube, KubeError  # noqa: E402

PROFILE_MIX = (("1g.10gb", 0.5), ("2g.20gb", 0.2), ("3g.40gb", 0.15), ("1g.20gb", 0.15))


@dataclass
class Timeline:
    """One pod's way: ``time.monotonic()`` when each step was first seen (None: not seen)."""

    name: str
    profile: str
    interactive: bool
    created: float
    unschedulable: float | None = None
    spec_written: float | None = None
    agent_acked: float | None = None
    bound: float | None = None
    running: float | None = None
    node: str = ""

    @property
    def carved(self) -> bool:
        return self.spec_written is not None


class Recorder:
    """Watches pods of one namespace and the MigNodes; stamps each step when first seen."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pods: dict[str, Timeline] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._waiting_ack: dict[str, tuple[str, int]] = {}  # pod → (node, generation)

    def start(self) -> None:
        for path, handle in (
            (f"/api/v1/namespaces/{self.namespace}/pods", self._pod),
            (MIGNODES, self._mignode),
        ):
            threading.Thread(target=self._watch, args=(path, handle), daemon=True).start()

    def _watch(self, path: str, handle: Any) -> None:
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    listed = self.kube.request("GET", path)
                    for item in listed.get("items") or []:
                        handle(item)
                    version = listed["metadata"]["resourceVersion"]
                query = {"resourceVersion": version, "allowWatchBookmarks": "true"}
                for event in self.kube.watch(path, query, timeout_seconds=60):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        handle(obj)
                    if self.stop.is_set():
                        return
            except KubeError:
                version = ""
                time.sleep(0.5)

    def _pod(self, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        with self.lock:
            line = self.pods.get(pod["metadata"]["name"])
            if line is None:
                return
            status = pod.get("status") or {}
            unschedulable = any(
                x["type"] == "PodScheduled" and x.get("reason") == "Unschedulable"
                for x in status.get("conditions") or []
            )
            if unschedulable and line.unschedulable is None:
                line.unschedulable = now
            if pod["spec"].get("nodeName") and line.bound is None:
                line.bound = now
                line.node = pod["spec"]["nodeName"]
            if status.get("phase") == "Running" and line.running is None:
                line.running = now

    def _mignode(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        raw = (meta.get("annotations") or {}).get("jupyter-mig.io/placements")
        placed = json.loads(raw).get("pods", {}) if raw else {}
        observed = (obj.get("status") or {}).get("observedGeneration") or 0
        with self.lock:
            for key in placed:
                namespace, _, name = key.partition("/")
                line = self.pods.get(name)
                if namespace == self.namespace and line is not None and line.spec_written is None:
                    line.spec_written = now
                    self._waiting_ack[name] = (meta["name"], int(meta.get("generation") or 0))
            for name, (node, generation) in list(self._waiting_ack.items()):
                if node == meta["name"] and observed >= generation:
                    self.pods[name].agent_acked = now
                    del self._waiting_ack[name]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(lines: list[Timeline]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float | int]:
        if not values:
            return {"n": 0}
        return {
            "n": len(values),
            "p50": round(percentile(values, 50), 2),
            "p95": round(percentile(values, 95), 2),
            "max": round(max(values), 2),
        }

    def gaps(group: list[Timeline], a: str, b: str) -> list[float]:
        out = []
        for line in group:
            start, end = getattr(line, a), getattr(line, b)
            if start is not None and end is not None:
                out.append(end - start)
        return out

    groups = {
        "interactive": [x for x in lines if x.interactive],
        "batch": [x for x in lines if not x.interactive],
        "interactive, carved": [x for x in lines if x.interactive and x.carved],
        "batch, carved": [x for x in lines if not x.interactive and x.carved],
        "all": lines,
    }
    return {
        name: {
            "to_bound": stats(gaps(group, "created", "bound")),
            "to_running": stats(gaps(group, "created", "running")),
            "reused": sum(1 for x in group if not x.carved),
            "steps_p50": {
                step: round(statistics.median(values), 2)
                for step, values in (
                    ("created→unschedulable", gaps(group, "created", "unschedulable")),
                    ("unschedulable→spec written", gaps(group, "unschedulable", "spec_written")),
                    ("spec written→agent acked", gaps(group, "spec_written", "agent_acked")),
                    ("spec written→bound", gaps(group, "spec_written", "bound")),
                    ("bound→running", gaps(group, "bound", "running")),
                )
                if values
            },
        }
        for name, group in groups.items()
    }


@contextlib.contextmanager
def running_cluster(path: Path) -> Iterator[devcluster.DevCluster]:
    existing = devcluster.running(path)
    cluster = existing or devcluster.up(path)
    try:
        yield cluster
    finally:
        if existing is None:
            devcluster.down(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    latency = {
        "nvmlDeviceCreateGpuInstanceWithPlacement": args.nvml_latency,
        "nvmlGpuInstanceDestroy": args.nvml_latency,
    }
    values = json.loads(json.dumps(E2E_VALUES))
    values["agent"]["resync"] = args.agent_resync
    with running_cluster(Path(args.dir)) as cluster:
        release = install_release(cluster, values)
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        cluster.create_namespace(namespace)
        workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
        system = System(cluster, release, namespace, workdir, refresh_delay=args.refresh_delay)
        recorder = Recorder(system.kube, namespace)
        try:
            for i in range(args.nodes):
                system.add_node(
                    f"n{i}",
                    args.model,
                    gpus=args.gpus,
                    latency=latency,
                    device_plugin=args.device_plugin,
                )
            system.start_controller("controller-0")
            recorder.start()
            print(
                f"{args.nodes} nodes x {args.gpus} {args.model} up, {args.device_plugin} device "
                f"plugin; logs in {workdir}",
                flush=True,
            )
            delete_at: dict[str, float] = {}
            next_arrival = 0.0
            started = time.monotonic()
            for i in range(args.pods):
                next_arrival += rng.expovariate(1 / args.arrival)
                while time.monotonic() - started < next_arrival:
                    expire(system, recorder, delete_at, args.lifetime)
                    time.sleep(0.05)
                profile = rng.choices([p for p, _ in PROFILE_MIX], [w for _, w in PROFILE_MIX])[0]
                interactive = rng.random() < args.interactive
                name = f"p{i:03d}-{'nb' if interactive else 'job'}"
                with recorder.lock:
                    recorder.pods[name] = Timeline(name, profile, interactive, time.monotonic())
                system.create_pod(name, profile, interactive=interactive)
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                expire(system, recorder, delete_at, args.lifetime)
                with recorder.lock:
                    if all(x.running is not None for x in recorder.pods.values()):
                        break
                time.sleep(0.2)
            try:
                system.check()
            except E2EFailure as err:  # reported with the timings: a finding, not the end
                print(err, file=sys.stderr)
        finally:
            recorder.stop.set()
            system.close()
            uninstall_release(cluster, release)
            with contextlib.suppress(KubeError):
                system.kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    with recorder.lock:
        lines = list(recorder.pods.values())
    missing = [x.name for x in lines if x.running is None]
    return {
        "settings": vars(args),
        "violations": system.monitor.violations,
        "never_ran": missing,
        "summary": summarize([x for x in lines if x.running is not None]),
        "pods": [asdict(x) for x in lines],
    }


def expire(
    system: System, recorder: Recorder, delete_at: dict[str, float], lifetime: float
) -> None:
    """Delete pods ``lifetime`` seconds after they started running (never when it is 0)."""
    if lifetime <= 0:
        return
    now = time.monotonic()
    with recorder.lock:
        for line in recorder.pods.values():
            if line.running is not None and line.name not in delete_at:
                delete_at[line.name] = now + lifetime
    for name, when in list(delete_at.items()):
        if when <= now:
            with contextlib.suppress(KubeError):
                system.delete_pod(name)
            delete_at[name] = float("inf")


def print_report(result: dict[str, Any]) -> None:
    print(
        f"violations: {result['violations'] or 'none'}; never ran: {result['never_ran'] or 'none'}"
    )
    print(f"{'pods':<22}{'n':>4}{'reused':>8}  {'bound p50/p95':>15}  {'Running p50/p95':>17}")
    for name, group in result["summary"].items():
        bound, running = group["to_bound"], group["to_running"]
        if not bound["n"]:
            continue
        print(
            f"{name:<22}{bound['n']:>4}{group['reused']:>8}  "
            f"{bound['p50']:>6.2f} / {bound['p95']:>5.2f} s  "
            f"{running['p50']:>6.2f} / {running['p95']:>5.2f} s"
        )
    for name in ("interactive, carved", "batch, carved"):
        steps = result["summary"][name]["steps_p50"]
        print(f"{name}, median per step: " + "; ".join(f"{k} {v:.2f} s" for k, v in steps.items()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", required=True, help="devcluster directory")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--interactive", type=float, default=0.5, help="share of interactive pods")
    parser.add_argument("--arrival", type=float, default=2.0, help="mean seconds between pods")
    parser.add_argument(
        "--lifetime", type=float, default=20.0, help="seconds a pod runs (0: until the end)"
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=2, help="GPUs per node")
    parser.add_argument("--model", default="A100-80GB")
    parser.add_argument(
        "--nvml-latency", type=float, default=0.5, help="seconds per create/destroy"
    )
    default_plugin = "nvidia" if nvidia.BINARY.is_file() else "builtin"
    parser.add_argument(
        "--device-plugin",
        choices=["builtin", "nvidia"],
        default=default_plugin,
        help="nvidia: NVIDIA's plugin, needs root (default when tests/deviceplugin/build.sh has "
        f"built it; here: {default_plugin}); builtin: the Python stand-in",
    )
    parser.add_argument(
        "--refresh-delay",
        type=float,
        help="builtin plugin only: seconds from a refresh request to the re-read (default 2)",
    )
    parser.add_argument("--agent-resync", type=int, default=30, help="the chart's default: 30")
    parser.add_argument("--drain", type=float, default=120.0, help="wait for the last pods")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write every pod's timeline and the summary here")
    args = parser.parse_args()
    if args.device_plugin == "nvidia" and args.refresh_delay is not None:
        parser.error("--refresh-delay applies to --device-plugin builtin only")
    if args.refresh_delay is None:  # nvidia: the plugin's own time, nothing simulated
        args.refresh_delay = 2.0 if args.device_plugin == "builtin" else 0.0
    result = run(args)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 1 if result["violations"] or result["never_ran"] else 0


if __name__ == "__main__":
    sys.exit(main())

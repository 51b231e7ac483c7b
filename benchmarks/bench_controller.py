"""Controller planning-round time at 200 nodes.

Two modes:

``offline``  the whole decision pipeline of one round — Node/MigNode/Pod dicts → node views →
             demands and Warnings → plan → rendered spec writes — on synthetic objects, no I/O.
``cluster``  the real controller process against a real API server (``jupyter-mig devcluster``):
             the benchmark creates opted-in Node objects and plays their agents (publishes each
             MigNode status), then creates a burst of pending pods and measures how long the
             controller takes from the last pod to the last spec write, plus the controller's
             own ``jupyter_mig_round_duration_seconds``.  Everything it created is deleted.

    python benchmarks/bench_controller.py offline --nodes 200 --pods 1000
    python benchmarks/bench_controller.py cluster --kubeconfig DIR/kubeconfig --nodes 200 --pods 400
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.controller.planning import assess, decide
from jupyter_mig.controller.selection import is_candidate, pending_pod
from jupyter_mig.controller.snapshot import build_views
from jupyter_mig.mig.layout import Instance, enumerate_layouts
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import DEFAULT_SPARES

MODEL = MODELS.get("A100-80GB")
PROFILE_MIX = (
    ("1g.10gb", 0.45),
    ("2g.20gb", 0.2),
    ("3g.40gb", 0.2),
    ("1g.20gb", 0.1),
    ("7g.80gb", 0.05),
)
MIGNODES = f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}"
ROUND_METRICS = (
    "jupyter_mig_round_duration_seconds_count",
    "jupyter_mig_round_duration_seconds_sum",
    "jupyter_mig_plan_duration_seconds_sum",
)


def gpu_status(index: int, layout: tuple[Instance, ...], rng: random.Random) -> dict[str, Any]:
    """One GPU as an agent reports it: 60 % of its instances held by some running pod."""
    return {
        "index": index,
        "uuid": f"GPU-{index}",
        "model": MODEL.name,
        "product": MODEL.products[0],
        "migEnabled": True,
        "profiles": MODEL.to_json(),
        "instances": [
            {
                "profile": MODEL.by_id[i.profile_id].name,
                "profileId": i.profile_id,
                "start": i.start,
                "uuid": f"MIG-{index}-{i.start}",
                **({"pod": "load/running"} if rng.random() < 0.6 else {}),
            }
            for i in layout
        ],
    }


def synthetic_statuses(nodes: int, gpus: int, seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    layouts = [lay for lay in enumerate_layouts(MODEL) if len(lay) <= 4]
    return [
        [gpu_status(g, rng.choice(layouts) if rng.random() < 0.7 else (), rng) for g in range(gpus)]
        for _ in range(nodes)
    ]


def profiles_for(pods: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    names = [name for name, _ in PROFILE_MIX]
    weights = [weight for _, weight in PROFILE_MIX]
    return rng.choices(names, weights, k=pods)


def pod_body(name: str, namespace: str, profile: str, label: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "nodeSelector": label,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "resources": {"limits": {f"{c.MIG_RESOURCE_PREFIX}{profile}": "1"}},
                }
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# offline
# --------------------------------------------------------------------------------------------


def offline(args: argparse.Namespace) -> None:
    statuses = synthetic_statuses(args.nodes, args.gpus, args.seed)
    nodes, mignodes = [], []
    for n, gpus in enumerate(statuses):
        name = f"node-{n:04d}"
        labels = {c.PARTITIONING_LABEL: c.PARTITIONING_DYNAMIC, "bench": "yes"}
        nodes.append({"metadata": {"name": name, "uid": f"u-{n}", "labels": labels}, "spec": {}})
        spec = [
            {"index": g["index"], "instances": [
                {k: i[k] for k in ("profile", "profileId", "start")} for i in g["instances"]
            ]}
            for g in gpus
        ]  # fmt: skip
        mignodes.append(
            {
                "metadata": {"name": name, "generation": 1, "resourceVersion": "1"},
                "spec": {"gpus": spec},
                "status": {"observedGeneration": 1, "gpus": gpus},
            }
        )
    pods = []
    for i, profile in enumerate(profiles_for(args.pods, args.seed)):
        body = pod_body(f"p{i:05d}", "bench", profile, {"bench": "yes"})
        body["status"] = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        }
        pods.append(body)
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        views = build_views(nodes, mignodes, pods)
        pending = [pending_pod(p) for p in pods if is_candidate(p)]
        now = datetime.now(UTC)
        assessment = assess(views, pending, {p.key for p in pending}, now, timedelta(minutes=5))
        decision = decide(views, assessment, now, DEFAULT_SPARES)
        times.append(time.perf_counter() - started)
    plan = decision.plan
    print(
        f"offline: {args.nodes} nodes x {args.gpus} GPUs, {args.pods} pending pods: "
        f"{len(plan.placements)} placed, {len(plan.unplaced)} waiting, "
        f"{len(decision.writes)} specs to write, {plan.creates} creates, {plan.destroys} destroys"
    )
    warm = times[1:] or times
    print(
        f"round time: first {times[0] * 1000:.0f} ms (parses every profile table), then median "
        f"{statistics.median(warm) * 1000:.0f} ms, max {max(warm) * 1000:.0f} ms "
        f"over {len(warm)} rounds"
    )


# --------------------------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------------------------


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _wait(what: str, probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def cluster(args: argparse.Namespace) -> None:
    from kubernetes import config

    from jupyter_mig.kube.client import Kube, KubeError

    kube = Kube(config.new_client_from_config(config_file=args.kubeconfig), "bench")  # type: ignore[no-untyped-call]
    run = uuid.uuid4().hex[:6]
    label = {"jupyter-mig.io/bench": run}
    namespace = f"bench-{run}"
    names = [f"bench-{run}-{n:04d}" for n in range(args.nodes)]
    statuses = synthetic_statuses(args.nodes, args.gpus, args.seed)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = Path(tempfile.mkdtemp(prefix="bench-controller-")) / "controller.log"
    controller: subprocess.Popen[bytes] | None = None
    try:
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        for name in names:
            node_labels = {c.PARTITIONING_LABEL: c.PARTITIONING_DYNAMIC, **label}
            kube.request(
                "POST", "/api/v1/nodes", body={"metadata": {"name": name, "labels": node_labels}}
            )
        with open(log, "wb") as out:
            controller = subprocess.Popen(
                [sys.executable, "-m", "jupyter_mig.cli", "controller", "--kubeconfig",
                 args.kubeconfig, "--listen", f"127.0.0.1:{port}", "--batch-idle", "2s",
                 "--batch-max", "30s"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        print(f"controller log: {log}")

        def settled() -> bool:
            """Play the agents: publish each GPU status, ack every generation, until all idle."""
            idle = 0
            listed = kube.request("GET", MIGNODES)["items"]
            by_name = {m["metadata"]["name"]: m for m in listed}
            for name, gpus in zip(names, statuses, strict=True):
                obj = by_name.get(name)
                if obj is None:
                    continue
                generation = obj["metadata"]["generation"]
                if (obj.get("status") or {}).get("observedGeneration") == generation and (
                    obj.get("spec") or {}
                ).get("gpus"):
                    idle += 1
                    continue
                status = {"observedGeneration": generation, "gpus": gpus}
                with contextlib.suppress(KubeError):
                    kube.request(
                        "PATCH",
                        f"{MIGNODES}/{name}/status",
                        body={"status": status},
                        content_type="application/merge-patch+json",
                    )
            return idle == len(names)

        started = time.monotonic()
        _wait("every MigNode to be created, reported and settled", settled, 600)
        print(f"{args.nodes} nodes settled in {time.monotonic() - started:.1f}s")
        before = {m: _metric(port, m) for m in ROUND_METRICS}
        profiles = profiles_for(args.pods, args.seed)
        for i, profile in enumerate(profiles):
            body = pod_body(f"p{i:05d}", namespace, profile, label)
            del body["metadata"]["uid"]
            kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body)
        burst_end = time.monotonic()

        ours = set(names)

        def applying() -> int:
            """Nodes with a generation in flight: the agents stopped acking, one per write."""
            return sum(
                1
                for m in kube.request("GET", MIGNODES)["items"]
                if m["metadata"]["name"] in ours
                and (m.get("status") or {}).get("observedGeneration") != m["metadata"]["generation"]
            )

        # The burst is planned when the count of written nodes has not grown for 15 s.
        written, last_change = 0, burst_end
        while time.monotonic() - max(last_change, burst_end) < 15:
            count = applying()
            if count != written:
                written, last_change = count, time.monotonic()
            time.sleep(0.5)
        rounds, spent, planned = (_metric(port, m) - before[m] for m in ROUND_METRICS)
        print(
            f"cluster: {args.nodes} nodes x {args.gpus} GPUs, {args.pods} pods: {written} specs "
            f"written, last write {last_change - burst_end:.1f}s after the last pod was created"
        )
        print(
            f"controller rounds: {rounds:.0f}; deciding took {planned * 1000:.0f} ms in all, "
            f"deciding + writing specs + posting Events {spent * 1000:.0f} ms"
        )
    finally:
        if controller is not None:
            controller.terminate()
            controller.wait(10)
        with contextlib.suppress(KubeError):
            kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
        for name in names:
            for path in (f"{MIGNODES}/{name}", f"/api/v1/nodes/{name}"):
                with contextlib.suppress(KubeError):
                    kube.request("DELETE", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("offline", "cluster"):
        p = sub.add_parser(mode)
        p.add_argument("--nodes", type=int, default=200)
        p.add_argument("--gpus", type=int, default=8)
        p.add_argument("--pods", type=int, default=1000 if mode == "offline" else 400)
        p.add_argument("--seed", type=int, default=7)
        if mode == "offline":
            p.add_argument("--repeat", type=int, default=5)
        else:
            p.add_argument("--kubeconfig", required=True)
    args = parser.parse_args()
    offline(args) if args.mode == "offline" else cluster(args)


if __name__ == "__main__":
    main()

"""``jupyter-mig bench planner``: planner speed at cluster scale.

Builds a seeded synthetic round — nodes of 8 GPUs, part of each GPU already carved and in use,
some free instances left over, and ten pending pods per node with a mixed size mix — and times
``plan_round`` alone (JSON I/O excluded).  Every round starts cold: the planner's memo lives for one
round only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

from jupyter_mig.cli import add_spares_option
from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, enumerate_layouts
from jupyter_mig.mig.models import MODELS, GpuModel
from jupyter_mig.mig.planner import (
    DEFAULT_SPARES,
    Demand,
    GpuSnapshot,
    NodeSnapshot,
    ObservedInstance,
    plan_round,
)
from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.output import output_path, write_atomic

# Pending-pod size mix (fraction of pods): mostly small notebook/inference slices.
SIZE_MIX = (
    ("1g", 0.40),
    ("10gb", 0.10),
    ("20gb", 0.15),
    ("2g", 0.15),
    ("3g", 0.12),
    ("7g", 0.03),
    ("4g", 0.05),
)


def synthetic_round(
    nodes: int, gpus_per_node: int, pods_per_node: int, model: GpuModel, seed: int
) -> tuple[list[NodeSnapshot], list[Demand]]:
    """A reproducible round: every GPU starts from a random valid layout, 60 % of it in use."""
    rng = random.Random(seed)
    layouts = [lay for lay in enumerate_layouts(model) if len(lay) <= 5]
    snapshots = []
    for n in range(nodes):
        gpus = []
        for g in range(gpus_per_node):
            layout: tuple[Instance, ...] = rng.choice(layouts) if rng.random() < 0.7 else ()
            instances = tuple(
                ObservedInstance(i.profile_id, i.start, used=rng.random() < 0.6) for i in layout
            )
            gpus.append(GpuSnapshot(index=g, model=model, instances=instances))
        snapshots.append(NodeSnapshot(name=f"node-{n:05d}", gpus=tuple(gpus)))
    sizes = [s for s, _ in SIZE_MIX]
    weights = [w for _, w in SIZE_MIX]
    demands = []
    for p in range(nodes * pods_per_node):
        size = rng.choices(sizes, weights)[0]
        count = 2 if rng.random() < 0.03 else 1
        restricted = rng.random() < 0.05
        demands.append(
            Demand(
                name=f"ns/pod-{p:06d}",
                items=(parse_size(size),) * count,
                nodes=(f"node-{rng.randrange(nodes):05d}",) if restricted else None,
                priority=rng.choice((0, 0, 0, 10)),
                interactive=rng.random() < 0.2,
            )
        )
    return snapshots, demands


def measure(
    nodes: int,
    gpus_per_node: int,
    pods_per_node: int,
    model: GpuModel,
    seed: int,
    repeat: int,
    spares: int = DEFAULT_SPARES,
) -> dict[str, Any]:
    snapshots, demands = synthetic_round(nodes, gpus_per_node, pods_per_node, model, seed)
    timings = []
    plan = None
    for _ in range(repeat):
        began = time.perf_counter()
        plan = plan_round(snapshots, demands, spares=spares)
        timings.append(time.perf_counter() - began)
    assert plan is not None
    return {
        "nodes": nodes,
        "gpus": nodes * gpus_per_node,
        "pending": len(demands),
        "model": model.name,
        "median_s": round(statistics.median(timings), 4),
        "min_s": round(min(timings), 4),
        "max_s": round(max(timings), 4),
        "placed": len(plan.placements),
        "unplaced": len(plan.unplaced),
        "creates": plan.creates,
        "destroys": plan.destroys,
    }


#: The largest cluster measured (a round of 100k nodes already takes minutes and GiBs).
MAX_NODES = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["planner"], help="what to benchmark")
    parser.add_argument(
        "--nodes", type=int, action="append", help="cluster sizes (default: 100, 1000, 5000)"
    )
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs on each node")
    parser.add_argument(
        "--pods-per-node", type=int, default=10, help="pending pods per node in each round"
    )
    parser.add_argument("--gpu", default="A100-80GB", help="GPU model")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per size (median reported)")
    add_spares_option(parser, DEFAULT_SPARES, "plan with")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated cluster")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    model = MODELS.get(args.gpu)
    sizes = args.nodes or [100, 1000, 5000]
    if any(n < 1 for n in sizes) or args.gpus_per_node < 1 or args.pods_per_node < 0:
        raise UserError("--nodes and --gpus-per-node must be >= 1, --pods-per-node >= 0")
    if args.repeat < 1:
        raise UserError("--repeat must be >= 1")
    if max(sizes) > MAX_NODES or args.gpus_per_node > 64 or args.pods_per_node > 1000:
        raise UserError(
            f"--nodes at most {MAX_NODES}, --gpus-per-node at most 64 and --pods-per-node at "
            "most 1000 (memory)"
        )
    json_path = output_path(args.json, "--json")
    results = []
    print(
        f"{'nodes':>6} {'GPUs':>6} {'pending':>8} {'median s':>9} {'min s':>7} {'placed':>7} "
        f"{'create':>7} {'destroy':>7}"
    )
    for n in sizes:
        row = measure(
            n, args.gpus_per_node, args.pods_per_node, model, args.seed, args.repeat, args.spares
        )
        results.append(row)
        print(
            f"{row['nodes']:>6} {row['gpus']:>6} {row['pending']:>8} {row['median_s']:>9.3f} "
            f"{row['min_s']:>7.3f} {row['placed']:>7} {row['creates']:>7} {row['destroys']:>7}"
        )
        sys.stdout.flush()
    if json_path is not None:
        write_atomic(json_path, (json.dumps(results, indent=2) + "\n").encode())
    return 0

"""Seed sweep of the openb comparison: dynamic vs nos-greedy over several seeds and loads.

Usage: .venv/bin/python benchmarks/simulate_seeds.py [TRACE_DIR] [--seeds 0,1,2,3] [--loads 0.8,1.0]
Prints a markdown table (benchmarks/RESULTS.md, section "Simulator").  Same cluster and defaults
as benchmarks/simulate_openb.sh: 8 nodes x 8 A100-80GB, lifetimes capped at one day.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jupyter_mig.mig.models import get_model
from jupyter_mig.sim.engine import ClusterSpec, Timing, simulate
from jupyter_mig.sim.policies import make_policy
from jupyter_mig.sim.workload import openb, parse_openb

TRACES = ("default", "gpushare100", "multigpu20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "traces", nargs="?", default=Path(__file__).parents[2] / "shared/traces/openb"
    )
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--loads", default="0.8,1.0")
    args = parser.parse_args()
    model = get_model("A100-80GB")
    cluster = ClusterSpec(model, 8, 8)
    seeds = [int(s) for s in args.seeds.split(",")]
    loads = [float(x) for x in args.loads.split(",")]
    print(
        "| trace | load | seed | placed dynamic | placed nos-greedy | p95 wait dynamic (s) "
        "| p95 wait nos-greedy (s) | ops dynamic | ops nos-greedy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for trace in TRACES:
        path = Path(args.traces) / f"openb_pod_list_{trace}.csv"
        with open(path, encoding="utf-8", newline="") as handle:
            rows = parse_openb(handle, path.name)
        for load in loads:
            for seed in seeds:
                workload = openb(
                    rows,
                    path.name,
                    cluster,
                    load=load,
                    time_scale=None,
                    max_duration=86400,
                    seed=seed,
                )
                dyn, nos = (
                    simulate(cluster, workload.pods, make_policy(p, model, seed=seed), Timing())
                    for p in ("dynamic", "nos-greedy")
                )
                print(
                    f"| {trace} | {load:g} | {seed} | {dyn.placed} | {nos.placed} "
                    f"| {dyn.wait_percentile(95):.0f} | {nos.wait_percentile(95):.0f} "
                    f"| {dyn.creates + dyn.destroys} | {nos.creates + nos.destroys} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

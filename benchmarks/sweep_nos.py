"""``dynamic`` against nos's planner over traces, seeds, loads and cluster sizes (issue 12).

Every run — (workload, cluster, load, seed, policy) — is one job whose result is written to its
own JSON file under ``--out``, so the sweep can be split into chunks run at the same time
(``--chunk 1/2`` and ``--chunk 2/2``), stopped and resumed (finished jobs are skipped), and a
policy re-run alone after a change (``--policy dynamic --fresh``).  ``--table`` prints the
markdown table of benchmarks/RESULTS.md from what is there.

    nice .venv/bin/python benchmarks/sweep_nos.py --out /tmp/sweep --jobs 2
    .venv/bin/python benchmarks/sweep_nos.py --out /tmp/sweep --table

Every GPU starts with one whole-GPU instance, for ``dynamic`` as for nos (which initializes
its GPUs so), so that both policies start from the same cluster.

Workloads: the openb traces found in TRACE_DIR (default: ``../shared/traces/openb`` beside the
repository) and the built-in synthetic workload; ``--max-pods N`` keeps the first N pods of each
trace (in trace order) to shorten a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from jupyter_mig.mig.models import get_model
from jupyter_mig.mig.planner import DEFAULT_SPARES
from jupyter_mig.sim.engine import ClusterSpec, Timing, simulate
from jupyter_mig.sim.policies import make_policy
from jupyter_mig.sim.report import result_json
from jupyter_mig.sim.workload import Workload, openb, parse_openb, synthetic

TRACES = ("default", "gpushare100", "multigpu20")
MODEL = "A100-80GB"


@dataclass(frozen=True)
class Job:
    workload: str  # a trace name or "synthetic"
    nodes: int
    load: float
    seed: int
    policy: str

    @property
    def key(self) -> str:
        return f"{self.workload}-{self.nodes}x8-{self.load:g}-{self.seed}-{self.policy}"


def _workload(job: Job, traces: Path, max_pods: int | None, count: int) -> Workload:
    cluster = ClusterSpec(get_model(MODEL), job.nodes, 8)
    if job.workload == "synthetic":
        return synthetic(cluster, count, job.load, job.seed, 86400)
    path = traces / f"openb_pod_list_{job.workload}.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = parse_openb(handle, path.name)
    if max_pods is not None:
        rows = rows[:max_pods]
    return openb(
        rows,
        path.name,
        cluster,
        load=job.load,
        time_scale=None,
        max_duration=86400,
        seed=job.seed,
    )


def run_job(job: Job, traces: Path, max_pods: int | None, count: int, out: Path) -> str:
    model = get_model(MODEL)
    cluster = ClusterSpec(model, job.nodes, 8)
    workload = _workload(job, traces, max_pods, count)
    # ``nos-greedy@K``: nos's random choices from seed K instead of the workload's seed;
    # ``dynamic@N``: dynamic with N spares instead of the controller's default.
    name, _, variant = job.policy.partition("@")
    seed = int(variant) if variant and name != "dynamic" else job.seed
    spares = int(variant) if variant and name == "dynamic" else DEFAULT_SPARES
    policy = make_policy(name, model, seed=seed, dynamic_start_whole=True, dynamic_spares=spares)
    result = simulate(cluster, workload.pods, policy, Timing())
    doc = {"job": job.__dict__, **result_json(result)}
    target = out / f"{job.key}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return job.key


def jobs(args: argparse.Namespace, workloads: list[str]) -> Iterator[Job]:
    for workload in workloads:
        for nodes in args.nodes:
            for load in args.loads:
                for seed in args.seeds:
                    for policy in args.policy:
                        yield Job(workload, nodes, load, seed, policy)


def table(out: Path) -> str:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))]
    runs: dict[tuple[str, int, float, int], dict[str, dict[str, object]]] = {}
    for doc in docs:
        job = doc["job"]
        runs.setdefault((job["workload"], job["nodes"], job["load"], job["seed"]), {})[
            job["policy"]
        ] = doc
    lines = [
        "| workload | cluster | load | seed | placed dynamic | placed nos-greedy | Δ placed "
        "| p95 wait dynamic (s) | p95 wait nos-greedy (s) | ops dynamic | ops nos-greedy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    behind = lower_wait = both = 0
    spreads: list[str] = []
    below_median = 0
    for (workload, nodes, load, seed), by_policy in sorted(runs.items()):
        dyn, nos = by_policy.get("dynamic"), by_policy.get("nos-greedy")
        if dyn is None or nos is None:
            continue
        both += 1
        seeded = sorted(
            int(d["placed"])  # type: ignore[call-overload]
            for p, d in by_policy.items()
            if p == "nos-greedy" or p.startswith("nos-greedy@")
        )
        if len(seeded) > 1:
            median = statistics.median(seeded)
            below_median += int(dyn["placed"] < median)
            spreads.append(
                f"| {workload} | {nodes}×8 | {load:g} | {seed} | {dyn['placed']} "
                f"| {len(seeded)} | {seeded[0]} | {median:g} | {seeded[-1]} |"
            )
        behind += int(dyn["placed"] < nos["placed"])  # type: ignore[operator]
        p95 = (dyn["wait_seconds"]["p95"], nos["wait_seconds"]["p95"])  # type: ignore[index]
        lower_wait += int(p95[0] <= p95[1])
        ops = [d["ops"]["create"] + d["ops"]["destroy"] for d in (dyn, nos)]  # type: ignore[index]
        lines.append(
            f"| {workload} | {nodes}×8 | {load:g} | {seed} | {dyn['placed']} | {nos['placed']} "
            f"| {dyn['placed'] - nos['placed']:+d} | {p95[0]:.0f} | {p95[1]:.0f} "  # type: ignore[operator]
            f"| {ops[0]} | {ops[1]} |"
        )
    lines.append("")
    lines.append(
        f"{both} runs: dynamic places fewer pods than nos-greedy in {behind}; "
        f"its p95 wait is lower or equal in {lower_wait}."
    )
    if spreads:
        lines += [
            "",
            "nos-greedy with other seeds for its own random choices (same workload):",
            "",
            "| workload | cluster | load | seed | placed dynamic | nos seeds | nos min "
            "| nos median | nos max |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *spreads,
            "",
            f"{len(spreads)} runs: dynamic places fewer pods than nos-greedy's median in "
            f"{below_median}.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "traces", nargs="?", type=Path, default=Path(__file__).parents[2] / "shared/traces/openb"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory of per-run results")
    parser.add_argument("--table", action="store_true", help="print the table and exit")
    parser.add_argument("--workloads", default=",".join((*TRACES, "synthetic")))
    parser.add_argument("--nodes", default="16,8,4", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument(
        "--loads", default="0.8,1.0,1.2", type=lambda s: [float(x) for x in s.split(",")]
    )
    parser.add_argument("--seeds", default="0,1,2,3", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument(
        "--policy",
        action="append",
        help="default: dynamic and nos-greedy; nos-greedy@K seeds nos's own random choices "
        "with K instead of the workload's seed; dynamic@N keeps N spares",
    )
    parser.add_argument("--max-pods", type=int, help="keep the first N pods of each trace")
    parser.add_argument("--count", type=int, default=2000, help="synthetic pods (2000)")
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--chunk", default="1/1", help="run only chunk I of N (I/N)")
    parser.add_argument(
        "--fresh", action="store_true", help="re-run jobs that already have results"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(table(args.out))
        return 0
    args.policy = args.policy or ["dynamic", "nos-greedy"]
    workloads = args.workloads.split(",")
    missing = [
        w
        for w in workloads
        if w != "synthetic" and not (args.traces / f"openb_pod_list_{w}.csv").is_file()
    ]
    if missing:
        print(
            f"sweep_nos.py: no trace {missing[0]} in {args.traces}; pass TRACE_DIR", file=sys.stderr
        )
        return 2
    index, total = (int(x) for x in args.chunk.split("/"))
    todo = [
        job
        for n, job in enumerate(jobs(args, workloads))
        if n % total == index - 1 and (args.fresh or not (args.out / f"{job.key}.json").exists())
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(run_job, job, args.traces, args.max_pods, args.count, args.out)
            for job in todo
        ]
        with tqdm(total=len(futures), desc="sweep", unit="run", file=sys.stderr) as bar:
            for future in as_completed(futures):
                bar.set_postfix_str(future.result())
                bar.update()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``jupyter-mig simulate``: replay a workload on a simulated MIG cluster under several policies.

With no arguments it runs the built-in synthetic workload under every policy and prints the
comparison: the project's main job, which needs nothing outside the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from jupyter_mig.cli import add_spares_option
from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import ModelError, get_model
from jupyter_mig.mig.planner import DEFAULT_SPARES
from jupyter_mig.output import output_path, write_atomic

DEFAULT_POLICIES = ("dynamic", "nos-greedy", "static:all-1g", "static:balanced", "static:all-3g")
#: Plot formats by file suffix (matplotlib writes each without extra packages).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
#: Bounds that keep one run within a workstation's memory (the openb trace is ~1 MiB, 8k pods).
MAX_TRACE_CHARS = 256 * 2**20
MAX_PODS = 1_000_000
MAX_NODES = 100_000
MAX_GPUS_PER_NODE = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Policies: dynamic (the jupyter-mig planner), nos-greedy (a re-implementation of nos), "
        "nos-greedy-ordered (the same without nos's random choices and quirks), nos-shipped "
        "(nos with its shipped geometry tables), "
        "static:all-1g, static:balanced, static:all-3g or static:<sizes> such as "
        "static:2x1g+2g+3g.  See docs/simulator.md."
    )
    work = parser.add_argument_group("workload")
    work.add_argument("--pods", metavar="CSV", help="openb pod list (default: synthetic)")
    work.add_argument("--count", default=2000, metavar="N", help="synthetic pods (default 2000)")
    work.add_argument(
        "--load",
        default=0.8,
        metavar="L",
        help="offered load, fraction of compute capacity (default 0.8)",
    )
    work.add_argument(
        "--time-scale",
        metavar="S",
        help="replay the CSV's own arrival times divided by S instead of resampling at --load",
    )
    work.add_argument(
        "--max-duration", default=86400, metavar="SEC", help="cap on pod lifetimes (default 1 day)"
    )
    work.add_argument("--seed", default=0, metavar="N", help="random seed (default 0)")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--nodes", default=4, metavar="N", help="nodes (default 4)")
    cluster.add_argument(
        "--gpu", default="A100-80GB", metavar="MODEL", help="GPU model (default A100-80GB)"
    )
    cluster.add_argument(
        "--gpus-per-node", default=8, metavar="K", help="GPUs per node (default 8)"
    )
    timing = parser.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--op-latency", default=1.0, metavar="SEC", help="per instance create/destroy (1)"
    )
    timing.add_argument(
        "--refresh-delay", default=5.0, metavar="SEC", help="device-plugin refresh (5)"
    )
    timing.add_argument("--batch-idle", default=2.0, metavar="SEC", help="dynamic: idle window (2)")
    timing.add_argument(
        "--batch-max", default=10.0, metavar="SEC", help="dynamic: longest batch (10)"
    )
    parser.add_argument(
        "--dynamic-start",
        choices=["empty", "whole"],
        default="empty",
        help="dynamic's starting layout: nothing carved (default), or one whole-GPU instance per "
        "GPU, as nos starts",
    )
    add_spares_option(parser, DEFAULT_SPARES, "dynamic: keep")
    parser.add_argument(
        "--policy",
        action="append",
        metavar="POLICY",
        help="policy to run (repeatable; default: all of " + ", ".join(DEFAULT_POLICIES) + ")",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="plot utilization and pending pods; the suffix names the format: "
        + ", ".join(PLOT_SUFFIXES),
    )


def _number(
    value: object,
    flag: str,
    *,
    minimum: float,
    integer: bool = False,
    maximum: float = float("inf"),
) -> float:
    text = str(value).strip()
    try:
        number = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{flag}: expected {kind}, got {text!r}") from None
    if not number >= minimum or number == float("inf"):
        raise UserError(f"{flag}: must be at least {minimum:g}, got {text}")
    if number > maximum:
        raise UserError(f"{flag}: at most {maximum:g} (memory), got {text}")
    return number


def _bounded(lines: Iterable[str], source: str, limit: int = MAX_TRACE_CHARS) -> Iterator[str]:
    """The lines of a trace; refuses one over ``limit`` characters before memory runs out."""
    total = 0
    for line in lines:
        total += len(line)
        if total > limit:
            raise UserError(
                f"--pods {source}: larger than {limit // 2**20} MiB; give a shorter trace"
            )
        yield line


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jupyter_mig.sim.engine import Batching, ClusterSpec, Timing, simulate
    from jupyter_mig.sim.policies import make_policy
    from jupyter_mig.sim.report import plot, results_json, table
    from jupyter_mig.sim.workload import openb, parse_openb, synthetic

    try:
        model = get_model(args.gpu)
    except ModelError as err:
        raise UserError(f"--gpu: {err}") from None
    cluster = ClusterSpec(
        model,
        int(_number(args.nodes, "--nodes", minimum=1, integer=True, maximum=MAX_NODES)),
        int(
            _number(
                args.gpus_per_node,
                "--gpus-per-node",
                minimum=1,
                integer=True,
                maximum=MAX_GPUS_PER_NODE,
            )
        ),
    )
    load = _number(args.load, "--load", minimum=1e-6)
    seed = int(_number(args.seed, "--seed", minimum=0, integer=True))
    max_duration = _number(args.max_duration, "--max-duration", minimum=1)
    timing = Timing(
        op_latency=_number(args.op_latency, "--op-latency", minimum=0),
        refresh_delay=_number(args.refresh_delay, "--refresh-delay", minimum=0),
    )
    idle = _number(args.batch_idle, "--batch-idle", minimum=0)
    longest = _number(args.batch_max, "--batch-max", minimum=0)
    batching = Batching(idle=idle, max_wait=max(idle, longest))
    policies = [
        make_policy(spec, model, batching, seed, args.dynamic_start == "whole", args.spares)
        for spec in args.policy or DEFAULT_POLICIES
    ]
    json_path = output_path(args.json, "--json")
    plot_path = output_path(args.plot, "--plot", PLOT_SUFFIXES)

    if args.pods is not None:
        time_scale = None
        if args.time_scale is not None:
            time_scale = _number(args.time_scale, "--time-scale", minimum=1e-9)
        try:
            with open(args.pods, encoding="utf-8", newline="") as handle:
                rows = parse_openb(_bounded(handle, args.pods), args.pods)
        except OSError as err:
            raise UserError(f"--pods {args.pods}: cannot read: {err.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"--pods {args.pods}: not a UTF-8 text file") from None
        workload = openb(
            rows,
            args.pods,
            cluster,
            load=load,
            time_scale=time_scale,
            max_duration=max_duration,
            seed=seed,
        )
    else:
        if args.time_scale is not None:
            raise UserError("--time-scale: only applies to a trace given with --pods")
        count = int(_number(args.count, "--count", minimum=1, integer=True, maximum=MAX_PODS))
        workload = synthetic(cluster, count, load, seed, max_duration)

    header = [
        f"cluster: {cluster.nodes} nodes x {cluster.gpus_per_node} {model.name} "
        f"({cluster.compute_slices} compute slices); op latency {timing.op_latency:g} s, "
        f"device-plugin refresh {timing.refresh_delay:g} s",
        *workload.summary,
        f"offered load: {workload.offered_load:.2f} of compute capacity",
    ]
    results = []
    with tqdm(
        total=len(workload.pods) * len(policies),
        desc="simulating",
        unit="pod",
        file=sys.stderr,
        disable=None,
        leave=False,
    ) as bar:
        for policy in policies:
            bar.set_postfix_str(policy.name)
            results.append(simulate(cluster, workload.pods, policy, timing, progress=bar.update))
    print("\n".join(header))
    print()
    print(table(results))
    outputs = []
    if json_path is not None:
        text = json.dumps(results_json(results), indent=2) + "\n"
        outputs.append((json_path, text.encode()))
    if plot_path is not None:
        title = f"{cluster.nodes} x {cluster.gpus_per_node} {model.name}; " + (
            Path(args.pods).name if args.pods else "synthetic workload"
        )
        outputs.append((plot_path, plot(results, title, plot_path.suffix[1:].lower())))
    for target, data in outputs:
        write_atomic(target, data)
    return 0

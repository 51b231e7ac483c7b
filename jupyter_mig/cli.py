"""The ``jupyter-mig`` command line: one entry point, subcommands registered below.

Subcommand modules import only the standard library and ``jupyter_mig.mig`` at top level and
keep heavy imports (kubernetes, grpc, matplotlib) inside ``run``, so every ``--help`` works
without the optional dependencies.  Every user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jupyter_mig import __version__
from jupyter_mig.errors import UserError
from jupyter_mig.mig.contract import ContractError, parse_input, render_plan
from jupyter_mig.mig.layout import LayoutError
from jupyter_mig.mig.models import MODELS, ModelError
from jupyter_mig.mig.planner import plan_round
from jupyter_mig.mig.sizes import SizeError, resolve

USER_ERRORS = (UserError, ContractError, SizeError, ModelError, LayoutError)

# name -> (module, help).  A module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("jupyter_mig.sim.cli", "trace-driven simulation of a GPU cluster under policies"),
    "plan": ("jupyter_mig.cli", "one planning round on the JSON contract (FILE or - for stdin)"),
    "resolve": ("jupyter_mig.cli", "how a size request maps to MIG profiles, per GPU model"),
    "bench": ("jupyter_mig.bench", "planner speed at scale"),
    "devcluster": ("jupyter_mig.devcluster", "the real local Kubernetes control plane"),
    "crds": ("jupyter_mig.api.cli", "print the MigNode CRD manifest (pipe to kubectl apply -f -)"),
    "agent": ("jupyter_mig.agent.cli", "the node agent: apply MigNode specs to GPUs through NVML"),
    "controller": ("jupyter_mig.controller.cli", "batch pending pods, plan, write MigNode specs"),
    "sim-node": ("jupyter_mig.simnode.cli", "simulated MIG GPU nodes (device plugin + kubelet)"),
    "nvml-sim": ("jupyter_mig.nvml.cli", "simulated MIG GPUs: our libnvidia-ml.so.1 and its state"),
    "hub-service": ("jupyter_mig.hub.cli", "JupyterHub service: restart servers with a new slice"),
}


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="planner input JSON, or - for stdin")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the output")


def _plan_run(args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as err:
        raise UserError(f"cannot read {args.file}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{args.file}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{args.file}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except RecursionError:
        raise UserError(f"{args.file}: JSON nested too deeply") from None
    nodes, demands = parse_input(data)
    result = render_plan(plan_round(nodes, demands), nodes)
    json.dump(result, sys.stdout, indent=args.indent)
    sys.stdout.write("\n")
    return 0


def _resolve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("size", metavar="SIZE", help="e.g. 10gb, 10GiB, 2g, 1g.10gb")
    parser.add_argument("--model", "-m", action="append", help="GPU model (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _resolve_run(args: argparse.Namespace) -> int:
    models = [MODELS.get(m) for m in args.model] if args.model else list(MODELS)
    chosen = resolve(args.size, models)
    rows = []
    for model in models:
        p = chosen.get(model.name)
        rows.append(
            {
                "model": model.name,
                "profile": p.name if p else None,
                "resource": f"nvidia.com/mig-{p.resource_name}" if p else None,
                "compute": p.compute if p else None,
                "memory_gib": round(p.memory_gib, 2) if p else None,
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'model':<18} {'profile':<12} {'compute':>7} {'memory':>10}  resource")
    for row in rows:
        if row["profile"] is None:
            print(f"{row['model']:<18} {'-':<12} {'':>7} {'':>10}  (no profile this large)")
        else:
            print(
                f"{row['model']:<18} {row['profile']:<12} {row['compute']:>7} "
                f"{row['memory_gib']:>7.2f} GiB  {row['resource']}"
            )
    return 0


_LOCAL: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "plan": (_plan_arguments, _plan_run),
    "resolve": (_resolve_arguments, _resolve_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-mig", description="GPU slices by size: dynamic NVIDIA MIG partitioning."
    )
    parser.add_argument("--version", action="version", version=f"jupyter-mig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in _LOCAL:
            add, run = _LOCAL[name]
        else:
            module: Any = importlib.import_module(module_name)
            add, run = module.add_arguments, module.run
        add(sub_parser)
        sub_parser.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except USER_ERRORS as err:
        print(f"jupyter-mig {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jupyter-mig {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

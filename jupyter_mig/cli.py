"""The ``jupyter-mig`` command line: one entry point, subcommands registered below.

Subcommand modules import only the standard library and ``jupyter_mig.mig`` at top level and
keep heavy imports (kubernetes, grpc, matplotlib) inside ``run``, so every ``--help`` works
without the optional dependencies.  Every user error is one line on stderr and exit status 2:
bad arguments, bad input, and an optional dependency that is not installed (named with the
extra that installs it, here, once for every subcommand).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jupyter_mig import __version__
from jupyter_mig.errors import UserError
from jupyter_mig.mig.contract import ContractError, parse_input, render_plan
from jupyter_mig.mig.layout import LayoutError
from jupyter_mig.mig.models import MODELS, ModelError
from jupyter_mig.mig.planner import DEFAULT_SPARES, MAX_SPARES, plan_round
from jupyter_mig.mig.sizes import SizeError, resolve

USER_ERRORS = (UserError, ContractError, SizeError, ModelError, LayoutError)
#: Exit status after the reader of our output went away (``| head``): 128 + SIGPIPE, as a shell.
BROKEN_PIPE = 141
#: The largest input ``plan`` reads (a planning round of thousands of nodes is a few MiB).
MAX_PLAN_INPUT = 64 * 2**20

# name -> (module, help, extra).  A module provides add_arguments(parser) and run(args) -> int;
# ``extra`` is the one that installs what it imports (None: the base package suffices).
SUBCOMMANDS: dict[str, tuple[str, str, str | None]] = {
    "simulate": (
        "jupyter_mig.sim.cli",
        "trace-driven simulation of a GPU cluster under policies",
        None,
    ),
    "plan": (
        "jupyter_mig.cli",
        "one planning round on the JSON contract (FILE or - for stdin)",
        None,
    ),
    "resolve": ("jupyter_mig.cli", "how a size request maps to MIG profiles, per GPU model", None),
    "bench": ("jupyter_mig.bench", "planner speed at scale", None),
    "devcluster": ("jupyter_mig.devcluster", "the real local Kubernetes control plane", "cluster"),
    "crds": (
        "jupyter_mig.api.cli",
        "print the MigNode CRD manifest (pipe to kubectl apply -f -)",
        "cluster",
    ),
    "agent": (
        "jupyter_mig.agent.cli",
        "the node agent: apply MigNode specs to GPUs through NVML",
        "cluster",
    ),
    "controller": (
        "jupyter_mig.controller.cli",
        "batch pending pods, plan, write MigNode specs",
        "cluster",
    ),
    "sim-node": (
        "jupyter_mig.simnode.cli",
        "simulated MIG GPU nodes (device plugin + kubelet)",
        "cluster",
    ),
    "nvml-sim": (
        "jupyter_mig.nvml.cli",
        "simulated MIG GPUs: our libnvidia-ml.so.1 and its state",
        None,
    ),
    "kernelspecs": (
        "jupyter_mig.kernels.specs",
        "write kernel specs with a GPU slice per kernel, one per allowed size",
        None,
    ),
    "hub-service": (
        "jupyter_mig.hub.cli",
        "JupyterHub service: restart servers with a new slice",
        "hub",
    ),
}

#: Optional top-level modules whose extra differs from their subcommand's (``agent`` on real
#: GPUs needs NVML's binding from ``nvml``); any other missing module is its command's extra.
MODULE_EXTRAS = {
    "pynvml": "nvml",
    "jupyterhub": "hub",
    "kubespawner": "hub",
    "jupyter_server": "notebook",
    "ipywidgets": "notebook",
    "IPython": "notebook",
}


class Parser(argparse.ArgumentParser):
    """Shows every option's default in its help and reports bad arguments in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or action.default == []
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def missing_extra(err: ModuleNotFoundError, command_extra: str | None) -> str | None:
    """The line for a missing optional dependency, or None when ``err`` is not one (a bug)."""
    module = (err.name or "").partition(".")[0]
    if not module or module == "jupyter_mig":
        return None
    extra = MODULE_EXTRAS.get(module, command_extra)
    if extra is None:
        return None
    return (
        f"needs the Python module {module!r}, which is not installed: "
        f"pip install 'jupyter-mig[{extra}]'"
    )


def add_spares_option(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--spares N``, as the controller's: free instances kept per profile in use."""
    parser.add_argument(
        "--spares",
        type=int,
        choices=range(MAX_SPARES + 1),
        default=default,
        metavar="N",
        help=f"{what} N free instances of each profile in use, as the controller does (its "
        f"default: {DEFAULT_SPARES}); 0 to {MAX_SPARES} (default: {default})",
    )


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="planner input JSON, or - for stdin")
    parser.add_argument(
        "--indent", type=int, default=None, help="pretty-print with this many spaces per level"
    )
    add_spares_option(parser, 0, "also keep")


def _plan_run(args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            text = sys.stdin.read(MAX_PLAN_INPUT + 1)
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read(MAX_PLAN_INPUT + 1)
    except OSError as err:
        raise UserError(f"cannot read {args.file}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{args.file}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    if len(text) > MAX_PLAN_INPUT:
        raise UserError(
            f"{args.file}: larger than {MAX_PLAN_INPUT // 2**20} MiB; plan fewer nodes per round"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{args.file}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except RecursionError:
        raise UserError(f"{args.file}: JSON nested too deeply") from None
    nodes, demands = parse_input(data)
    result = render_plan(plan_round(nodes, demands, spares=args.spares), nodes)
    json.dump(result, sys.stdout, indent=args.indent)
    sys.stdout.write("\n")
    return 0


def _resolve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("size", metavar="SIZE", help="e.g. 10gb, 10GiB, 2g, 1g.10gb")
    parser.add_argument(
        "--model", "-m", action="append", help="GPU model (repeatable; default: every model)"
    )
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
    parser = Parser(
        prog="jupyter-mig", description="GPU slices by size: dynamic NVIDIA MIG partitioning."
    )
    parser.add_argument("--version", action="version", version=f"jupyter-mig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text, _) in SUBCOMMANDS.items():
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
    prefix = f"jupyter-mig {args.command}"
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
    except USER_ERRORS as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        line = missing_extra(err, SUBCOMMANDS[args.command][2])
        if line is None:
            raise
        print(f"{prefix}: error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped (``| head``): nothing to report.  Python's docs: point stdout at
        # devnull so that the flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

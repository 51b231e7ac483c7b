"""The command line as a user meets it: missing extras, closed pipes, help for every option."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_mig import cli

#: The top-level modules each extra installs (what ``pip install jupyter-mig`` lacks).
EXTRA_MODULES = {
    "cluster": ["kubernetes", "urllib3", "yaml", "prometheus_client", "grpc", "cryptography"],
    "nvml": ["pynvml"],
    "notebook": ["jupyter_server", "ipywidgets", "IPython", "traitlets", "tornado"],
    "hub": ["jupyterhub", "kubespawner", "tornado"],
}

#: A process in which the listed top-level modules cannot be imported, as if not installed.
BLOCKED_RUN = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None


sys.meta_path.insert(0, NotInstalled())
from jupyter_mig.cli import main

sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, ",".join(sorted(set(modules))), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


def commands_needing_extras(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Every subcommand that needs an extra: arguments that get past parsing, and the extra."""
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text("{}")
    return {
        "controller": (["controller", "--kubeconfig", str(kubeconfig)], "cluster"),
        "agent": (["agent", "--node", "n1", "--nvml", f"sim:{tmp}"], "cluster"),
        "sim-node": (
            [
                "sim-node",
                *("--kubeconfig", str(kubeconfig), "--name", "n1"),
                *("--gpu", "A100-80GB", "--state", str(tmp / "state")),
            ],
            "cluster",
        ),
        "hub-service": (["hub-service"], "hub"),
        "crds": (["crds"], "cluster"),
    }


@pytest.mark.parametrize("installed", [[], ["notebook"]], ids=["base", "notebook"])
def test_every_subcommand_with_a_missing_extra_says_which_in_one_line(
    tmp_path: Path, installed: list[str]
) -> None:
    available = {m for extra in installed for m in EXTRA_MODULES[extra]}
    blocked = [m for mods in EXTRA_MODULES.values() for m in mods if m not in available]
    needing = commands_needing_extras(tmp_path)
    base = {"simulate", "plan", "resolve", "bench", "devcluster", "nvml-sim", "kernelspecs"}
    assert set(needing) | base == set(cli.SUBCOMMANDS), "a new subcommand: add it to this walk"
    for name, (argv, extra) in needing.items():
        done = run_without(blocked, argv)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (name, done.stderr)
        assert len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith(f"jupyter-mig {name}: error: ")
        assert f"pip install 'jupyter-mig[{extra}]'" in lines[0], lines[0]


def test_the_base_package_runs_what_needs_no_extra(tmp_path: Path) -> None:
    blocked = [m for mods in EXTRA_MODULES.values() for m in mods]
    done = run_without(blocked, ["resolve", "10gb"])
    assert done.returncode == 0, done.stderr
    done = run_without(blocked, ["devcluster", "env", "--dir", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no cluster is running" in done.stderr


def test_the_agent_on_real_gpus_names_the_nvml_extra() -> None:
    err = ModuleNotFoundError("No module named 'pynvml'", name="pynvml")
    assert "jupyter-mig[nvml]" in str(cli.missing_extra(err, "cluster"))
    bug = ModuleNotFoundError("No module named 'jupyter_mig.nope'", name="jupyter_mig.nope")
    assert cli.missing_extra(bug, "cluster") is None
    assert cli.missing_extra(ModuleNotFoundError("x", name="somewhere"), None) is None


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    nodes = [
        {"name": f"node-{i}", "gpus": [{"index": 0, "model": "A100-80GB"}]} for i in range(300)
    ]
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"nodes": nodes, "pending": []}))
    done = subprocess.run(
        f"{sys.executable} -m jupyter_mig.cli plan --indent 2 {big} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(done.stdout) == 10
    assert done.stderr == ""


def all_parsers() -> list[argparse.ArgumentParser]:
    """The top-level parser and every subparser below it."""
    found, todo = [], [cli.build_parser()]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


def test_every_option_has_help_that_shows_its_default() -> None:
    missing = []
    for parser in all_parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            text = formatter._expand_help(action) if action.help else ""
            if not text:
                missing.append(f"{parser.prog} {action.option_strings or action.dest}: no help")
            elif action.default not in (None, False, [], argparse.SUPPRESS) and (
                "default" not in text
            ):
                missing.append(f"{parser.prog} {action.option_strings}: default not shown")
    assert not missing, "\n".join(missing)


def test_a_bad_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["controller", "--lease-duration", "soon"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("jupyter-mig controller: error: argument --lease-duration")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["bench", "planner", "--nodes", "10000000"], "--nodes at most 100000"),
        (
            [
                *("sim-node", "--kubeconfig", "k", "--name", "n", "--gpu", "A100-80GB"),
                *("--state", "s", "--gpus", "100000"),
            ],
            "--gpus must be 1 to 64",
        ),
        (["hub-service", "--grace", "-1"], "--grace -1: expected 0 to 60 seconds"),
        (["hub-service", "--listen", "0.0.0.0:99999"], "cannot read a port"),
    ],
)
def test_sizes_that_would_exhaust_memory_or_make_no_sense_are_refused_first(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_MIG_HUB_SETTINGS", '{"controller_url": "http://c"}')
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err

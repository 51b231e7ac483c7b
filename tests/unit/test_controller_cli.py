"""The controller's command line: arguments, and one-line errors before anything starts."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jupyter_mig.cli import main
from jupyter_mig.controller import events as ev
from jupyter_mig.controller.cli import listen_address
from jupyter_mig.controller.manager import event_body
from jupyter_mig.controller.settings import duration, namespace_list


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0), ("7", 7.0), (" 3 s ", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2d", "-1s", "s", "1.2.3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_listen_addresses() -> None:
    assert listen_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert listen_address(":9090") == ("0.0.0.0", 9090)
    assert listen_address("[::1]:80") == ("::1", 80)
    for bad in ("8080", "host:", "host:99999", "host:http"):
        with pytest.raises(argparse.ArgumentTypeError):
            listen_address(bad)


def test_namespace_lists() -> None:
    assert namespace_list("jhub, research,") == ("jhub", "research")
    assert namespace_list("*") == ("*",)
    assert namespace_list("") == ()
    for bad in ("JHub", "a_b", "-x", "x" * 64):
        with pytest.raises(argparse.ArgumentTypeError, match="not a namespace name"):
            namespace_list(bad)


def test_help_works_without_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["controller", "--help"])
    assert done.value.code == 0
    assert "--batch-idle" in capsys.readouterr().out


def test_a_missing_kubeconfig_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["controller", "--kubeconfig", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"jupyter-mig controller: error: --kubeconfig {missing}: no such file"


def test_an_unreachable_server_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: x, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    assert main(["controller", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Kubernetes API server at" in err[0]


def test_the_renew_deadline_must_be_shorter_than_the_lease(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["controller", "--leader-elect", "--lease-duration", "5s", "--renew-deadline", "5s"]
    assert main(args) == 2
    assert "--renew-deadline must be shorter" in capsys.readouterr().err


def test_event_body_is_a_core_v1_event_about_the_pod() -> None:
    event = ev.PodEvent("demo", "nb", "u-1", ev.WARNING, ev.UNKNOWN_PROFILE, "why")
    body = event_body(event, "replica-1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "demo",
        "name": "nb",
        "uid": "u-1",
    }
    assert (body["type"], body["reason"], body["message"]) == (
        "Warning",
        "UnknownMigProfile",
        "why",
    )
    assert body["metadata"] == {"generateName": "nb.", "namespace": "demo"}
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-02T03:04:05Z"

"""``devcluster`` faults that need no built control plane: clear one-line causes, no hangs."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
from pathlib import Path

import pytest
import yaml

from jupyter_mig import cli, devcluster
from jupyter_mig.devcluster import binaries
from jupyter_mig.errors import UserError


def _fake_go(tmp_path: Path, version: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(f"#!/bin/sh\necho {version}\n")
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_missing_go_toolchain_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binaries, "GO_FALLBACKS", ())
    with pytest.raises(UserError, match=r"no Go toolchain found .*install Go >= 1\.26"):
        devcluster.find_go()


def test_too_old_go_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(_fake_go(tmp_path, "go1.22.5")))
    with pytest.raises(UserError, match=r"is go1\.22\.5; tests/cluster needs Go >= 1\.26"):
        devcluster.find_go()


def test_a_taken_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is already in use"):
            devcluster.up(tmp_path / "dc", port=port)
    assert devcluster.dir_processes(tmp_path / "dc") == []


def test_env_and_down_without_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "none"
    assert cli.main(["devcluster", "env", "--dir", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no cluster is running in {path}" in err
    assert f"jupyter-mig devcluster up --dir {path}" in err
    assert cli.main(["devcluster", "down", "--dir", str(path)]) == 0


def test_a_stale_state_file_is_not_a_running_cluster(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{torn")
    assert devcluster.running(tmp_path) is None
    state = {"dir": str(tmp_path), "server": "https://127.0.0.1:1", "token": "t", "ports": {}}
    state["pids"] = {"etcd": os.getpid()}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert devcluster.running(tmp_path) is None  # that pid is not an etcd of this DIR
    assert devcluster.down(tmp_path) == 0
    assert not (tmp_path / "state.json").exists()


def test_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(UserError, match="is not a directory"):
        devcluster.up(path)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "70000"], "--port 70000 is not a TCP port"),
        (["--timeout", "-5"], "--timeout -5: expected a positive number of seconds"),
        (["--node-grace", "soon"], "--node-grace 'soon': expected a duration"),
    ],
)
def test_bad_up_arguments_are_refused_before_anything_builds(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["devcluster", "up", *args]) == 2
    assert words in capsys.readouterr().err


def test_kubeconfig_text_is_valid_yaml(tmp_path: Path) -> None:
    text = devcluster.kubeconfig_text(
        "https://127.0.0.1:6443", b"PEM", user="system:node:a", token="abc", namespace="ns"
    )
    data = yaml.safe_load(text)
    assert data["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert data["users"][0] == {"name": "system:node:a", "user": {"token": "abc"}}
    assert data["contexts"][0]["context"]["namespace"] == "ns"
    assert data["current-context"] == "devcluster"


def test_build_stamp_follows_go_mod() -> None:
    stamp = devcluster.build_stamp()
    assert stamp == devcluster.build_stamp()
    assert len(stamp) == 64


def _fake_build_go(tmp_path: Path, build_body: str) -> Path:
    bin_dir = tmp_path / "gobin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(
        '#!/bin/sh\nif [ "$1" = env ]; then echo go1.26.8; exit 0; fi\n'
        'if [ "$1" = list ]; then exit 1; fi\n' + build_body + "\n"
    )
    go.chmod(0o755)
    return bin_dir


def _spec_in(monkeypatch: pytest.MonkeyPatch, cache: Path) -> binaries.GoBuild:
    """The control-plane build with its cache (and Go build cache) in ``cache``."""
    monkeypatch.setattr(binaries, "CACHE", cache)
    return dataclasses.replace(binaries.CONTROL_PLANE, bin_dir=cache / "bin")


def test_a_failed_build_names_the_error_and_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    body = 'echo "main.go:7:2: undefined: embed.Nope" >&2; exit 1'
    monkeypatch.setenv("PATH", f"{_fake_build_go(tmp_path, body)}:/usr/bin:/bin")
    spec = _spec_in(monkeypatch, tmp_path / "cache")
    with pytest.raises(UserError) as failed:
        devcluster.build(log=lambda _: None, spec=spec)
    message = str(failed.value)
    assert "the control-plane build failed (go build exit 1)" in message
    assert str(tmp_path / "cache" / "build.log") in message
    assert "undefined: embed.Nope" in message


def test_a_hung_build_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", f"{_fake_build_go(tmp_path, 'sleep 60')}:/usr/bin:/bin")
    spec = _spec_in(monkeypatch, tmp_path / "cache")
    with pytest.raises(UserError, match=r"did not finish in 1s"):
        devcluster.build(log=lambda _: None, timeout=1, spec=spec)

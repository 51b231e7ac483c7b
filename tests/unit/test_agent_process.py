"""The agent's process plumbing: command-line errors, health endpoint, NVML (re)opening."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jupyter_mig import cli
from jupyter_mig.agent.devices import SignalRefresher
from jupyter_mig.agent.health import Heartbeat, serve_health
from jupyter_mig.agent.reconcile import RefreshError
from jupyter_mig.agent.runner import Backoff, LazyNvml
from jupyter_mig.nvml import Uninitialized, open_backend
from jupyter_mig.nvml.simgpu import init_state


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "--nvml", "sim:/nowhere"], "--node is required"),
        (["agent", "--node", "n", "--nvml", "gpu0"], "expected 'real' or 'sim:DIR'"),
        (["agent", "--node", "n", "--resync", "0"], "--resync must be a positive"),
        (["agent", "--node", "n", "--health-port", "70000"], "--health-port 70000"),
        (["agent", "--node", "n", "--kubeconfig", "/nonexistent/kubeconfig"], "credentials"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_healthz_fails_when_the_loop_stalls() -> None:
    heartbeat = Heartbeat(stale_after=3600)
    server = serve_health("127.0.0.1", 0, heartbeat, lambda: b"metric 1\n")
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert _status(f"{base}/healthz") == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.read() == b"metric 1\n"
        heartbeat.stale_after = 0
        assert _status(f"{base}/healthz") == 503
        heartbeat.stale_after = 3600
        heartbeat.beat()
        assert _status(f"{base}/healthz") == 200
        assert _status(f"{base}/other") == 404
    finally:
        server.shutdown()
        server.server_close()


def test_lazy_nvml_opens_once_the_state_exists(tmp_path: Path) -> None:
    """An agent started before the sim node (or the driver) retries instead of exiting."""
    nvml = LazyNvml(lambda: open_backend(f"sim:{tmp_path}"))
    with pytest.raises(Uninitialized):
        nvml.gpus()
    init_state(tmp_path, "A30-24GB", gpus=1)
    assert [g.model for g in nvml.gpus()] == ["A30-24GB"]
    made = nvml.create_instance(0, 0, 0)
    assert [gi.id for gi in nvml.instances(0)] == [made.id]
    nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == []
    nvml.close()


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.failed() == 1.0


def test_signal_refresher_sends_sighup_to_the_device_plugin(tmp_path: Path) -> None:
    received = tmp_path / "hup"
    handler = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGHUP, lambda *_: open(sys.argv[1], 'w').close())\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    plugin = subprocess.Popen(
        ["bash", "-c", 'exec -a nvidia-device-plugin "$0" -c "$1" "$2"', sys.executable,
         handler, str(received)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert plugin.stdout is not None and plugin.stdout.readline() == b"ready\n"
        refresher = SignalRefresher()
        assert plugin.pid in refresher.pids()
        refresher.refresh(timeout=5)
        deadline = time.monotonic() + 30
        while not received.exists():
            assert time.monotonic() < deadline, "no SIGHUP arrived"
            time.sleep(0.05)
    finally:
        plugin.kill()
        plugin.wait()
    with pytest.raises(RefreshError, match="hostPID"):
        SignalRefresher(program="no-such-plugin").refresh(timeout=5)


def test_signal_refresher_picks_the_plugin_of_its_own_simulated_gpus(tmp_path: Path) -> None:
    def fake_plugin(state: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["bash", "-c", "exec -a nvidia-device-plugin sleep 60"],
            env={"PATH": "/usr/bin:/bin", "JUPYTER_MIG_NVML_SIM_DIR": state},
        )

    mine, other = fake_plugin(str(tmp_path / "a")), fake_plugin(str(tmp_path / "b"))
    try:
        deadline = time.monotonic() + 30
        everyone = SignalRefresher()
        while not {mine.pid, other.pid} <= set(everyone.pids()):
            assert time.monotonic() < deadline, "the fake plugins did not start"
            time.sleep(0.05)
        own = SignalRefresher(environment=f"JUPYTER_MIG_NVML_SIM_DIR={tmp_path / 'a'}")
        assert mine.pid in own.pids() and other.pid not in own.pids()
    finally:
        for plugin in (mine, other):
            plugin.kill()
            plugin.wait()

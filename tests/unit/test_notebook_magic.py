"""``%gpu_slice`` and ``GpuSlicePicker`` against a real Jupyter server process.

The server runs with the extension in its own runtime directory; the kernel side finds it the
way a real kernel does (``JPY_PARENT_PID`` and the server's ``jpserver-<pid>.json``).  The
controller's capacity API is the controller's own HTTP server (slice_support).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from slice_support import Controller, closed_port_url

import jupyter_mig
from jupyter_mig.notebook.client import ClientError, ServerClient, find_server
from jupyter_mig.notebook.magic import Confirmation, GpuSliceMagics
from jupyter_mig.notebook.widget import REQUEST_MIME, GpuSlicePicker

WAIT_S = 60.0


class Server:
    def __init__(self, process: subprocess.Popen[bytes], runtime: Path, log: Path) -> None:
        self.process = process
        self.runtime = runtime
        self.log = log

    @property
    def info_file(self) -> Path:
        return self.runtime / f"jpserver-{self.process.pid}.json"

    def listening(self) -> bool:
        """Its info file is written and its port answers (the file can come first)."""
        try:
            port = int(json.loads(self.info_file.read_text())["port"])
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except (OSError, ValueError, KeyError):
            return False
        return True


@pytest.fixture(scope="module")
def controller() -> Iterator[Controller]:
    with Controller() as ctl:
        yield ctl


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, controller: Controller) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    for name in ("runtime", "config", "data", "root"):
        (tmp / name).mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTERHUB_", "JUPYTER_MIG_", "JPY_"))
    }
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_MIG_CONTROLLER_URL=controller.url,
        # As if started by a hub set up for jupyter-mig: the server may offer restarts (the
        # restart service itself is never reached; the magic hands restarts to the front end).
        JUPYTERHUB_API_TOKEN="server-token",
        JUPYTERHUB_USER="alice",
        JUPYTER_MIG_SERVICE_URL=closed_port_url() + "/services/jupyter-mig/",
    )
    log = tmp / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                "--ServerApp.port=0",
                f"--ServerApp.root_dir={tmp / 'root'}",
                "--ServerApp.jpserver_extensions=jupyter_mig=True",
                "--ServerApp.allow_unauthenticated_access=False",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, tmp / "runtime", log)
    try:
        deadline = time.monotonic() + WAIT_S
        while not running.listening():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the Jupyter server did not start"
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def kernel_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a kernel of that server has."""
    for name in ("JUPYTERHUB_API_TOKEN", "JUPYTER_MIG_SERVER_URL", "JUPYTER_MIG_SERVER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JPY_PARENT_PID", str(server.process.pid))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime))


@pytest.fixture
def ip(kernel_env: None) -> Iterator[InteractiveShell]:
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("jupyter_mig")
    yield shell
    shell.extension_manager.unload_extension("jupyter_mig")


def bundles(captured: Any) -> list[dict[str, Any]]:
    return [output.data for output in captured.outputs]


def test_the_kernel_finds_its_server_through_the_runtime_file(server: Server) -> None:
    url, token = find_server({"JPY_PARENT_PID": str(server.process.pid)}, server.runtime)
    info = json.loads(server.info_file.read_text())
    assert url == info["url"] and token == info["token"] and token
    assert ServerClient(url, token).current()["slice"] is None


def test_without_a_parent_server_the_error_says_what_to_set() -> None:
    with pytest.raises(ClientError, match="set JUPYTER_MIG_SERVER_URL"):
        find_server({})


def test_a_bad_token_is_refused(server: Server) -> None:
    url, _ = find_server({"JPY_PARENT_PID": str(server.process.pid)}, server.runtime)
    with pytest.raises(ClientError) as caught:
        ServerClient(url, "not-the-token").capacity()
    assert caught.value.status == 403


def test_gpu_slice_shows_the_current_slice_and_the_sizes(ip: InteractiveShell) -> None:
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "")
    [shown] = bundles(captured)
    assert "application/vnd.jupyter.widget-view+json" in shown
    text = shown["text/plain"]
    assert text.startswith("No GPU slice.")
    assert "10gb: 1g.10gb" in text and "1 free now" in text


def test_a_size_with_yes_asks_the_front_end_to_save_and_restart(ip: InteractiveShell) -> None:
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "40gb --yes --timeout 300")
    assert "40gb would get 40gb: 3g.40gb" in captured.stdout
    [request] = bundles(captured)
    assert request[REQUEST_MIME] == {"size": "40gb", "timeout": 300.0}
    assert "%gpu_slice 40gb --yes --saved" in request["text/plain"]


def test_without_yes_a_button_confirms(ip: InteractiveShell) -> None:
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "1g.10gb")
    [shown] = bundles(captured)  # the confirmation widget, and no request yet
    assert "application/vnd.jupyter.widget-view+json" in shown
    assert REQUEST_MIME not in shown


@pytest.mark.parametrize(("press", "shown"), [("yes", {"size": "1g.10gb"}), ("no", None)])
def test_the_confirmation_runs_the_change_only_when_confirmed(
    press: str, shown: dict[str, Any] | None
) -> None:
    calls: list[str] = []

    def change() -> dict[str, Any]:
        calls.append("change")
        return {REQUEST_MIME: {"size": "1g.10gb"}, "text/plain": "saving"}

    box = Confirmation("1g.10gb would get ...", "The server restarts.", change)
    yes, no = box.children[1].children
    (yes if press == "yes" else no).click()
    assert yes.disabled and no.disabled
    [output] = box.children[2].outputs
    assert output["data"].get(REQUEST_MIME) == shown
    assert calls == (["change"] if shown else [])


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("ten", "cannot read 'ten' as a GPU slice size"),
        ("500gb", "no GPU in this cluster offers a 500 GB slice; sizes you can ask for"),
        ("10gb --release", "give a size or --release, not both"),
        ("10gb --timeout 0", "--timeout must be a positive number of seconds"),
        ("10gb --timeout 7200", "--timeout must be a positive number of seconds, at most 3600"),
        ("ten gb", "cannot read 'ten gb' as a GPU slice size; use e.g. 10gb"),
        ("10gb --yes --saved", "the hub's restart service at http://127.0.0.1:"),
        ("--release", "this server has no GPU slice, so there is nothing to release"),
        ("--bogus", "unrecognized arguments: --bogus (see %gpu_slice --help)"),
    ],
)
def test_bad_requests_are_one_usage_error_line(ip: InteractiveShell, line: str, words: str) -> None:
    with pytest.raises(UsageError) as caught, capture_output():
        ip.run_line_magic("gpu_slice", line)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_server_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    monkeypatch.delenv("JUPYTER_MIG_SERVER_URL", raising=False)
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("jupyter_mig")
    try:
        with pytest.raises(UsageError, match="cannot find this kernel's Jupyter server"):
            shell.run_line_magic("gpu_slice", "10gb")
    finally:
        shell.extension_manager.unload_extension("jupyter_mig")


def test_the_picker_offers_the_sizes_and_hands_a_request_to_the_front_end(
    kernel_env: None,
) -> None:
    picker = GpuSlicePicker()
    try:
        sizes = [size for _, size in picker.sizes.options]
        assert "10gb" in sizes and "40gb" in sizes
        assert picker.release_button.disabled  # no slice to release
        assert picker.usage.layout.display == "none"  # no device, no usage bar
        picker.sizes.value = "40gb"
        picker.request_button.click()
        assert picker.output.outputs[0]["data"][REQUEST_MIME]["size"] == "40gb"
    finally:
        picker.close()


def test_the_picker_says_when_the_controller_is_unreachable(
    server: Server, kernel_env: None
) -> None:
    url, token = find_server({"JPY_PARENT_PID": str(server.process.pid)}, server.runtime)

    class Unreachable(ServerClient):
        def capacity(self) -> dict[str, Any]:
            return ServerClient(closed_port_url(), token, timeout=5).capacity()

    picker = GpuSlicePicker(Unreachable(url, token))
    try:
        assert picker.request_button.disabled
        assert "Availability unknown" in picker.status.value
    finally:
        picker.close()


def test_the_magic_can_load_lazily_on_first_use(kernel_env: None) -> None:
    """``c.MagicsManager.lazy_magics = {"gpu_slice": "jupyter_mig"}`` in the kernel config."""
    shell = InteractiveShell.instance()
    assert shell.find_line_magic("gpu_slice") is None
    shell.magics_manager.lazy_magics = {"gpu_slice": "jupyter_mig"}
    try:
        with pytest.raises(UsageError, match="cannot read 'ten'"):
            shell.run_line_magic("gpu_slice", "ten")
    finally:
        shell.magics_manager.lazy_magics = {}
        shell.extension_manager.unload_extension("jupyter_mig")
    assert shell.find_line_magic("gpu_slice") is None


def test_the_package_stays_light_and_exports_lazily() -> None:
    code = (
        "import sys, jupyter_mig; "
        "heavy = [m for m in ('ipywidgets', 'jupyter_server', 'IPython', 'tornado') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert jupyter_mig.GpuSlicePicker is GpuSlicePicker
    assert callable(jupyter_mig.load_ipython_extension)
    with pytest.raises(AttributeError):
        _ = jupyter_mig.no_such_name


def test_help_shows_the_options(ip: InteractiveShell) -> None:
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "--help")
    for option in ("--yes", "--release", "--saved", "--timeout", "size"):
        assert option in captured.stdout


def test_a_size_may_have_a_space_like_resolve_accepts(ip: InteractiveShell) -> None:
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "10 gb --yes")
    assert "10gb would get 10gb: 1g.10gb" in captured.stdout
    [request] = bundles(captured)
    assert request[REQUEST_MIME]["size"] == "10gb"  # one token: the front end refuses spaces


class NotRestartable(ServerClient):
    """A server not started by a hub (``GET slice`` says so), with a slice from its admin."""

    def current(self) -> dict[str, Any]:
        return {**super().current(), "slice": {"profile": "1g.10gb"}, "restartable": False}


@pytest.mark.parametrize("line", ["--release", "--release --yes", "20gb", "20gb --yes --saved"])
def test_a_server_that_cannot_restart_offers_no_restart(server: Server, line: str) -> None:
    url, token = find_server({"JPY_PARENT_PID": str(server.process.pid)}, server.runtime)
    shell = InteractiveShell.instance()
    shell.register_magics(GpuSliceMagics(shell, lambda: NotRestartable(url, token)))
    try:
        with pytest.raises(UsageError) as caught, capture_output() as captured:
            shell.run_line_magic("gpu_slice", line)
    finally:
        shell.magics_manager.magics["line"].pop("gpu_slice", None)
    message = str(caught.value)
    assert "not started by a JupyterHub set up for jupyter-mig" in message
    assert "spawn page" in message and "ask your admin" in message
    assert "JUPYTER_MIG" not in message and "\n" not in message
    assert bundles(captured) == []  # no button, no request


def test_the_confirmation_reads_as_text_where_widgets_cannot_show(ip: InteractiveShell) -> None:
    """Terminal IPython shows text/plain: words and the command, not ``VBox(children=...)``."""
    with capture_output() as captured:
        ip.run_line_magic("gpu_slice", "40gb")
    [shown] = bundles(captured)
    text = shown["text/plain"]
    assert text.startswith("40gb would get 40gb: 3g.40gb")
    assert "%gpu_slice 40gb --yes" in text and "VBox" not in text


def test_the_confirmation_escapes_what_it_shows() -> None:
    box = Confirmation("<img src=x onerror=alert(1)> would get", "a & b", dict)
    assert "<img" not in box.children[0].value and "&lt;img" in box.children[0].value


def test_the_widget_outside_a_server_fails_once_and_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = (
        "import os\n"
        "for name in ('JPY_PARENT_PID', 'JUPYTER_MIG_SERVER_URL'):\n"
        "    os.environ.pop(name, None)\n"
        "from jupyter_mig import GpuSlicePicker\n"
        "from jupyter_mig.notebook.client import ClientError\n"
        "try:\n"
        "    GpuSlicePicker()\n"
        "except ClientError as err:\n"
        "    print(err)\n"
        "import gc; gc.collect()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "cannot find this kernel's Jupyter server" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": 1e9}, "timeout"),
        ({"refresh_seconds": -1}, "refresh"),
    ],
)
def test_the_widget_checks_its_arguments_first(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        GpuSlicePicker(ServerClient("http://127.0.0.1:9/", ""), **kwargs)  # type: ignore[arg-type]


POD_KERNEL_ID = "0b5c4e2e-1111-4222-8333-944455556666"


@pytest.fixture
def pod_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """A kernel in its own pod (per-kernel slices): it has no server token to ask with."""
    monkeypatch.setenv("JUPYTER_MIG_KERNEL_ID", POD_KERNEL_ID)
    monkeypatch.setenv("JUPYTER_MIG_SIZE", "10gb")
    monkeypatch.setenv("JUPYTER_MIG_SLICE", "1g.10gb")
    shell = InteractiveShell.instance()

    def no_server() -> ServerClient:
        raise AssertionError("a kernel pod does not look for its server")

    shell.register_magics(GpuSliceMagics(shell, no_server))
    yield shell
    shell.magics_manager.magics["line"].pop("gpu_slice", None)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("", "runs in its own pod with a GPU slice of 10gb (1g.10gb); %gpu_slice SIZE offers"),
        ("--release", "for no GPU, switch this notebook to a kernel without one"),
    ],
)
def test_a_kernel_in_its_own_pod_says_its_slice_and_how_to_change_it(
    pod_kernel: InteractiveShell, line: str, words: str
) -> None:
    with pytest.raises(UsageError) as caught, capture_output() as captured:
        pod_kernel.run_line_magic("gpu_slice", line)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert bundles(captured) == []


@pytest.mark.parametrize("line", ["20gb", "20 gb --yes", "1g.20gb --yes --saved"])
def test_a_kernel_in_its_own_pod_asks_the_front_end_to_restart_only_itself(
    pod_kernel: InteractiveShell, line: str
) -> None:
    """Never a server restart: the request names this kernel, and says its variables are lost."""
    with capture_output() as captured:
        pod_kernel.run_line_magic("gpu_slice", line)
    [request] = bundles(captured)
    size = line.split(" --")[0].replace(" ", "")
    assert request[REQUEST_MIME] == {"size": size, "scope": "kernel", "kernel_id": POD_KERNEL_ID}
    assert "loses its variables" in request["text/plain"]
    assert f"switch this notebook to the GPU {size} kernel" in request["text/plain"]


def test_the_widget_in_a_kernel_pod_says_its_slice_and_points_to_the_magic(
    pod_kernel: InteractiveShell,
) -> None:
    with pytest.raises(ClientError, match=r"own pod .* %gpu_slice SIZE offers to restart"):
        GpuSlicePicker()


def test_a_kernel_in_its_own_pod_refuses_a_bad_size(pod_kernel: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="cannot read 'ten'"), capture_output() as captured:
        pod_kernel.run_line_magic("gpu_slice", "ten")
    assert bundles(captured) == []

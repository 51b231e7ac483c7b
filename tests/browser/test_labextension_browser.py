"""The JupyterLab extension in a real browser against a real JupyterLab server.

What is real: JupyterLab with this package's server extension and prebuilt labextension (as pip
installed them), Debian's headless Chromium driven by playwright-core, the controller's capacity
document (built by the controller's own code from GPU snapshots) served over HTTP.

What stands in, and why: a restart needs JupyterHub to stop this server and start a new one, so
the hub's jupyter-mig restart service (``jupyter_mig.hub.service``, whose API the server extension
calls) is a small HTTP server here that moves a restart through its stages one poll at a time and
then reports it ready.  The server therefore never really goes away; the browser still follows
the same path (save, request, progress, reload), once from the request dialog and once from the
``%gpu_slice`` magic's output in a notebook run by a real kernel.  The restart against a real hub
is covered by the hub integration tests.  The server has the GPU kernel specs of
``jupyter-mig kernelspecs``, but a GPU kernel runs in a pod that only a cluster can start, so the
status bar's per-kernel slice is checked against a stand-in answer to ``GET kernels/<id>/slice``
(given in the browser, for a plain kernel's id); the real server's answer for that plain kernel
is checked first.

Screenshots are kept in tests/artifacts/browser/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from support.net import free_port

from jupyter_mig.controller.capacity import capacity, render_capacity
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.planner import GpuSnapshot, NodeSnapshot, ObservedInstance

ROOT = Path(__file__).resolve().parents[2]
LABEXTENSION = ROOT / "labextension"
PLAYWRIGHT = LABEXTENSION / "node_modules" / "playwright-core"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NODE = shutil.which("node")
SERVER_TOKEN = "token-of-the-single-user-server"
LAB_TOKEN = "browser-test-token"
SERVICE_PREFIX = "/services/jupyter-mig/"
STAGES = ("queued", "repartitioning", "scheduled", "starting", "ready")
WAIT_S = 90.0
DRIVER_TIMEOUT_S = 300
GPU_KERNEL_SIZES = "10gb,20gb"
#: The stand-in ``GET kernels/<id>/slice`` of a GPU-slice kernel (handlers.KernelSliceHandler).
GPU_KERNEL_SLICE = {"gpu_slice": "20gb", "profile": "1g.20gb", "phase": "Running", "change": None}


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "needs Debian's chromium (apt-get install -y chromium; scripts/setup.sh does it)"
    if NODE is None:
        return "needs node"
    if not PLAYWRIGHT.is_dir():
        return "needs playwright-core: run `npm ci` in labextension/ (scripts/setup.sh does it)"
    if importlib.util.find_spec("jupyterlab") is None:
        return "needs jupyterlab (the dev extra)"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


def _snapshots() -> tuple[NodeSnapshot, ...]:
    """Two nodes: two A100-80GB GPUs in different states and one A30-24GB (a 4-slice grid)."""
    a100 = MODELS.get("A100-80GB")
    a30 = MODELS.get("A30-24GB")

    def inst(model: Any, name: str, start: int, used: bool) -> ObservedInstance:
        return ObservedInstance(model.profile(name).nvml_id, start, used)

    return (
        NodeSnapshot(
            "gpu-node-1",
            (
                GpuSnapshot(
                    0,
                    a100,
                    (
                        inst(a100, "1g.10gb", 0, True),
                        inst(a100, "1g.10gb", 1, False),
                        inst(a100, "2g.20gb", 2, True),
                        inst(a100, "3g.40gb", 4, True),
                    ),
                ),
                GpuSnapshot(1, a100, (inst(a100, "1g.20gb", 6, True),)),
            ),
        ),
        NodeSnapshot(
            "gpu-node-2",
            (GpuSnapshot(0, a30, (inst(a30, "2g.12gb", 0, True), inst(a30, "1g.6gb", 2, False))),),
        ),
    )


#: An instance the controller has written into a spec and the agent has not reported yet.
CREATING = {("gpu-node-1", 1): [("1g.10gb", 0)]}


def _capacity_document() -> dict[str, Any]:
    """The controller's capacity document, plus the per-GPU layouts the panel draws."""
    snapshots = _snapshots()
    document = render_capacity(capacity(snapshots), datetime.now(UTC))
    gpus = []
    for node in snapshots:
        for gpu in node.gpus:
            instances = [
                {
                    "profile": gpu.model.by_id[i.profile_id].name,
                    "start": i.start,
                    "size": gpu.model.by_id[i.profile_id].size,
                    "state": "in_use" if i.used else "free",
                }
                for i in gpu.instances
            ]
            for name, start in CREATING.get((node.name, gpu.index), []):
                profile = gpu.model.profile(name)
                instances.append(
                    {"profile": name, "start": start, "size": profile.size, "state": "creating"}
                )
            gpus.append(
                {
                    "node": node.name,
                    "index": gpu.index,
                    "model": gpu.model.name,
                    "grid": gpu.model.grid,
                    "instances": instances,
                }
            )
    document["gpus"] = gpus
    return document


class _JsonServer(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[_JsonServer, str]:
    server = _JsonServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def controller() -> Iterator[tuple[str, dict[str, Any]]]:
    """The controller's capacity API, serving a fixed document."""
    document = _capacity_document()

    class Handler(_Handler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/api/v1/capacity":
                self.reply(200, document)
            else:
                self.reply(404, {"error": "no such endpoint"})

    server, url = _serve(Handler)
    yield url, document
    server.shutdown()
    server.server_close()


@dataclass
class RestartService:
    """Stands in for the hub's restart service; one stage per poll, then ready."""

    url: str
    watched_file: Path
    requests: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        with self.lock:
            self.requests.append(
                {
                    "body": body,
                    "token": token,
                    # what the document held on disk when the restart was asked for
                    "file_then": self.watched_file.read_text(),
                }
            )
            self.record = {
                "user": "ada",
                "server": body.get("server_name", ""),
                "size": body.get("gpu_slice"),
                "previous": "10gb",
                "state": "running",
                "stage": "queued",
                "message": "stopping the server to start it again with the new slice",
                "stages": [],
                "events": [],
            }
            return dict(self.record)

    def poll(self) -> dict[str, Any] | None:
        with self.lock:
            if self.record is None:
                return None
            stage = STAGES[min(STAGES.index(self.record["stage"]) + 1, len(STAGES) - 1)]
            self.record["stage"] = stage
            self.record["message"] = f"stand-in hub: {stage}"
            if stage == "ready":
                self.record["state"] = "ready"
            return dict(self.record)


@pytest.fixture
def restart_service(tmp_path: Path) -> Iterator[RestartService]:
    root = tmp_path / "root"
    root.mkdir()
    holder: list[RestartService] = []

    class Handler(_Handler):
        def _token(self) -> str | None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            return token if scheme.lower() == "token" and token else None

        def do_POST(self) -> None:
            token = self._token()
            if urlparse(self.path).path != f"{SERVICE_PREFIX}api/restart" or token is None:
                self.reply(404 if token else 401, {"message": "no"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            self.reply(202, holder[0].start(body, token))

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            if parsed.path != f"{SERVICE_PREFIX}api/restart" or self._token() is None:
                self.reply(404, {"message": "no"})
                return
            if parse_qs(parsed.query, keep_blank_values=True).get("server_name") != [""]:
                self.reply(400, {"message": "server_name must name the default server"})
                return
            record = holder[0].poll()
            if record is None:
                self.reply(404, {"message": "no restart of this server is known"})
            else:
                self.reply(200, record)

    server, url = _serve(Handler)
    service = RestartService(url + SERVICE_PREFIX, root / "notes.txt")
    holder.append(service)
    yield service
    server.shutdown()
    server.server_close()


@dataclass
class Lab:
    url: str
    root: Path

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {LAB_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def lab(
    tmp_path: Path, controller: tuple[str, dict[str, Any]], restart_service: RestartService
) -> Iterator[Lab]:
    """A real JupyterLab server, set up as the hub's spawner hook would set it up."""
    root = restart_service.watched_file.parent
    root.joinpath("notes.txt").write_text("notes written before the browser opened\n")
    port = free_port()
    home = tmp_path / "home"
    # The kernel specs an admin installs in the server image, one per allowed size.
    command = [str(Path(sys.executable).with_name("jupyter-mig")), "kernelspecs"]
    subprocess.run(
        [*command, "--sizes", GPU_KERNEL_SIZES, "--prefix", str(tmp_path / "kernels")], check=True
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "NVIDIA"))},
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTER_MIG_CONTROLLER_URL": controller[0],
        "JUPYTER_MIG_SERVICE_URL": restart_service.url,
        "JUPYTER_MIG_SLICE": "1g.10gb",
        "JUPYTER_MIG_SIZE": "10gb",
        "JUPYTER_MIG_RESOURCE": "nvidia.com/mig-1g.10gb",
        "JUPYTERHUB_API_TOKEN": SERVER_TOKEN,
        "JUPYTERHUB_USER": "ada",
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTER_PATH": str(tmp_path / "kernels" / "share" / "jupyter"),
    }
    (home / "config").mkdir(parents=True)
    server_config = {
        "ServerApp": {"jpserver_extensions": {"jupyter_mig": True}},
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        },
    }
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps(server_config))
    # Decline JupyterLab's news prompt up front, so it does not cover the screenshots.
    notification = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = (tmp_path / "jupyterlab.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",  # CI runs as root
            f"--IdentityProvider.token={LAB_TOKEN}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = Lab(f"http://127.0.0.1:{port}/", root)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()}")
            try:
                started.get("api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {WAIT_S:g} s")
                time.sleep(0.3)
        yield started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _installed_build_is_current() -> None:
    """JupyterLab serves the pip-installed copy; it must be the build in this tree."""
    installed = (
        Path(sys.prefix) / "share/jupyter/labextensions/@jupyter-mig/labextension/package.json"
    )
    built = ROOT / "jupyter_mig" / "labextension" / "package.json"
    assert installed.is_file(), f"{installed} is missing: run scripts/setup.sh"
    assert json.loads(installed.read_text()) == json.loads(built.read_text()), (
        "the installed labextension is older than jupyter_mig/labextension: "
        "run `pip install -e .` (scripts/setup.sh)"
    )


def _expected_blocks(gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """Every memory slice covered once: the document's instances, the rest uncarved."""
    blocks = [
        {"start": i["start"], "span": i["size"], "state": i["state"], "label": i["profile"]}
        for i in gpu["instances"]
    ]
    covered = {c for b in blocks for c in range(b["start"], b["start"] + b["span"])}
    blocks += [
        {"start": c, "span": 1, "state": "uncarved", "label": ""}
        for c in range(gpu["grid"])
        if c not in covered
    ]
    return sorted(blocks, key=lambda b: b["start"])


def test_status_panel_dialog_and_restart_in_chromium(
    lab: Lab,
    controller: tuple[str, dict[str, Any]],
    restart_service: RestartService,
    tmp_path: Path,
) -> None:
    _installed_build_is_current()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    server_capacity = lab.get("jupyter-mig/api/capacity")
    # A size the controller has to carve: the flow a user waits longest for.
    carvable = [r["size"] for r in server_capacity["sizes"] if r["status"] == "repartition"]
    assert carvable, server_capacity
    size = carvable[-1]
    # The notebook asks for another size, with its own timeout, through the %gpu_slice magic.
    notebook_size = next(
        r["size"] for r in server_capacity["sizes"] if r["status"] == "free" and r["size"] != size
    )
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "gpu-slice",
                "metadata": {},
                "outputs": [],
                "source": f"%load_ext jupyter_mig\n%gpu_slice {notebook_size} --yes --timeout 300",
            }
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (lab.root / "slice-request.ipynb").write_text(json.dumps(notebook))
    # What a kernel pod's %gpu_slice 20gb displays, made by a plain kernel for itself.
    kernel_request = {
        **notebook["cells"][0],
        "id": "kernel-request",
        "source": "from ipykernel.connect import get_connection_file\n"
        "from jupyter_mig.notebook.widget import kernel_request_bundle\n"
        "kernel_id = get_connection_file().rsplit('kernel-', 1)[1].removesuffix('.json')\n"
        "display(kernel_request_bundle('20gb', kernel_id), raw=True)",
    }
    (lab.root / "kernel.ipynb").write_text(json.dumps({**notebook, "cells": [kernel_request]}))
    typed = "typed in the browser, unsaved until the restart"
    config = {
        "url": lab.url,
        "token": LAB_TOKEN,
        "file": "notes.txt",
        "text": typed,
        "size": size,
        "notebook": "slice-request.ipynb",
        "kernelNotebook": "kernel.ipynb",
        "kernelSlice": GPU_KERNEL_SLICE,
        "chromium": CHROMIUM,
        "playwright": str(PLAYWRIGHT),
        "artifacts": str(ARTIFACTS),
        "profileDir": str(tmp_path / "chromium-profile"),
    }
    # Its own process group: Chromium runs under node, and a hung run must take both down.
    driver = subprocess.Popen(
        [NODE or "node", str(Path(__file__).with_name("drive_lab.cjs"))],
        env={**os.environ, "JUPYTER_MIG_E2E": json.dumps(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = driver.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=30)
        pytest.fail(f"the browser driver took over {DRIVER_TIMEOUT_S} s:\n{stderr}")
    assert driver.returncode == 0, f"browser driver failed:\n{stderr}\n{stdout}"
    seen = json.loads(stdout.strip().splitlines()[-1])

    # Status bar: the slice the hub gave this server (no NVML here, so no memory figures).
    assert seen["statusText"] == "GPU 1g.10gb"
    assert "asked for as 10gb" in seen["statusTitle"]

    # Side panel: every GPU of the document, each instance at its placement.
    document = controller[1]
    drawn = {(g["node"], g["index"]): g for g in seen["panel"]}
    assert set(drawn) == {(g["node"], g["index"]) for g in document["gpus"]}, seen["panelNote"]
    for gpu in document["gpus"]:
        mine = drawn[(gpu["node"], gpu["index"])]
        assert mine["columns"] == gpu["grid"]
        assert mine["blocks"] == _expected_blocks(gpu)
    assert [row[0] for row in seen["panelSizes"]] == [r["size"] for r in server_capacity["sizes"]]

    # Dialog: the sizes the server extension offers, unavailable ones disabled, plus "No GPU".
    choices = {c["value"]: c for c in seen["dialog"]}
    for row in server_capacity["sizes"]:
        assert choices[row["size"]]["disabled"] == (row["status"] == "unavailable")
    assert choices[""]["disabled"] is False  # "No GPU": this server has a slice to give back

    # The restart: documents saved before the request, the hub asked with the server's token,
    # every stage shown in order, then the page reloaded.
    assert len(restart_service.requests) == 2
    request = restart_service.requests[0]
    assert request["token"] == SERVER_TOKEN
    assert request["body"]["gpu_slice"] == size
    assert typed in request["file_then"]
    assert typed in (lab.root / "notes.txt").read_text()
    phases = [p["phase"] for p in seen["phases"]]
    order = ["saving", "requesting", *STAGES]
    assert all(p in order for p in phases), seen["phases"]  # never "failed"
    ranks = [order.index(p) for p in phases]
    assert ranks == sorted(ranks), seen["phases"]  # never backwards
    assert set(STAGES) <= set(phases), seen["phases"]  # each stage shown
    assert seen["reloaded"] is True
    assert seen["statusAfterReload"] == "GPU 1g.10gb"
    for shot in seen["screenshots"]:
        assert Path(shot).stat().st_size > 10_000

    # The notebook: the magic's output offers the restart, rendering it again when the
    # notebook is opened again restarts nothing, and only the click asks, once, with the
    # magic's size and timeout.
    summary = (
        f"Restart this server with a {notebook_size} GPU slice. The hub waits up to 5 min for it."
    )
    for seen_output in (seen["notebookFirst"], seen["notebookReopened"]):
        assert seen_output["phase"] == "ask", seen_output
        assert seen_output["summary"] == summary
        assert seen_output["buttonVisible"] and seen_output["buttonEnabled"]
    assert seen["notebookRunning"]["buttonEnabled"] is False
    assert [(c["method"], c["afterClick"]) for c in seen["sliceCalls"]] == [("POST", True)]
    assert json.loads(seen["sliceCalls"][0]["body"]) == {
        "size": notebook_size,
        "saved": True,
        "timeout": 300,
    }
    request = restart_service.requests[1]
    assert request["body"]["gpu_slice"] == notebook_size
    assert request["body"]["timeout"] == 300
    assert seen["notebookReloaded"] is True

    # Per-kernel slices: the picker offers the GPU kernels; the status bar shows the server's
    # slice for a kernel inside the server (the real server's answer) and a GPU kernel's own.
    assert {"Python 3 · GPU 10gb", "Python 3 · GPU 20gb"} <= set(seen["kernelChoices"]), seen
    assert seen["statusPlainKernel"] == "GPU 1g.10gb"
    assert seen["statusGpuKernel"] == "this notebook: 1g.20gb"
    assert seen["statusOtherNotebook"] == "GPU 1g.10gb"  # follows the current notebook
    assert "own pod with the MIG slice 1g.20gb" in seen["statusGpuKernelTitle"]

    # The kernel-scoped request: said before the click, one POST for that kernel, and the real
    # server's refusal (a kernel inside the server has no slice of its own) shown in the output.
    before = seen["kernelRequest"]
    assert before["phase"] == "ask" and before["button"] == "Restart this kernel", before
    assert before["summary"] == "Restart this kernel with a 20gb GPU slice."
    assert "its variables are lost" in before["message"]
    assert seen["kernelPost"] == {"kernel": True, "body": '{"size":"20gb"}'}
    assert "runs inside the server" in seen["kernelRequestAfter"]["message"]
    assert seen["kernelProgress"] == "failed"

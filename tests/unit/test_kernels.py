"""Per-kernel slices without a cluster: names, the pod template, kernel specs, the provisioner.

The provisioner runs under jupyter_client's real ``AsyncKernelManager`` (found through the
entry point, as a server finds it); only the hub service it calls is an in-memory stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from kernel_support import KERNEL_ID, FakeService

from jupyter_mig.cli import main
from jupyter_mig.kernels import contract as k
from jupyter_mig.kernels import provisioner as prov
from jupyter_mig.kernels.specs import spec_name, write_specs
from jupyter_mig.kernels.template import (
    KernelPodTemplate,
    KernelSlice,
    TemplateError,
    safe_slug,
)
from jupyter_mig.mig.sizes import SizeError

SLICE = KernelSlice("10gb", "1g.10gb", "nvidia.com/mig-1g.10gb", ("NVIDIA-A100-SXM4-80GB",))
LABEL_VALUE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def template(**traits: Any) -> KernelPodTemplate:
    return KernelPodTemplate(**{"namespace": "jhub", "image": "kernel:1", **traits})


# --- names --------------------------------------------------------------------------------


@given(st.uuids())
def test_kernel_ids_become_names(kernel_id: uuid.UUID) -> None:
    assert k.kernel_object_name(str(kernel_id)) == f"kernel-{kernel_id}"


@pytest.mark.parametrize(
    "bad", ["", "../x", "ABCDEF00-1111-4222-8333-944455556666", f"{KERNEL_ID}/x", "kernel"]
)
def test_anything_else_is_refused_as_a_kernel_id(bad: str) -> None:
    with pytest.raises(k.KernelIdError, match="lower-case UUID"):
        k.kernel_object_name(bad)


@given(st.text(min_size=1, max_size=80))
def test_any_user_name_makes_a_label_value(name: str) -> None:
    slug = safe_slug(name)
    assert LABEL_VALUE.match(slug) and len(slug) <= 63, slug


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_distinct_names_get_distinct_slugs(a: str, b: str) -> None:
    if a != b:
        assert safe_slug(a) != safe_slug(b)


# --- the template ---------------------------------------------------------------------------


def test_the_pod_gets_the_slice_the_labels_and_the_key_only_through_the_secret() -> None:
    tpl = template(
        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "claim-{username}"}}],
        volume_mounts=[{"name": "home", "mountPath": "/home/jovyan"}],
        resources={"limits": {"memory": "4Gi"}},
    )
    pod, secret = tpl.render("Alice@Example", "gpu", KERNEL_ID, SLICE, "s3cret-key", "hmac-sha256")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == secret["metadata"]["name"] == f"kernel-{KERNEL_ID}"
    assert meta["namespace"] == secret["metadata"]["namespace"] == "jhub"
    assert meta["annotations"][k.USER_ANNOTATION] == "Alice@Example"
    assert meta["labels"][k.USER_LABEL] == safe_slug("Alice@Example")
    assert meta["labels"][k.KERNEL_ID_LABEL] == KERNEL_ID
    container = spec["containers"][0]
    assert container["resources"]["limits"] == {"memory": "4Gi", SLICE.resource: "1"}
    assert [p["containerPort"] for p in container["ports"]] == list(k.kernel_ports(0).values())
    assert spec["automountServiceAccountToken"] is False
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == f"claim-{safe_slug('Alice@Example')}"
    secret_volume = {"secretName": meta["name"], "defaultMode": 0o400}
    assert {"name": "jupyter-mig-connection", "secret": secret_volume} in spec["volumes"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == list(SLICE.products)
    assert "s3cret-key" not in json.dumps(pod)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["JUPYTER_MIG_SIZE"], env["JUPYTER_MIG_SLICE"]) == ("10gb", "1g.10gb")
    assert env[k.KERNEL_ID_ENV] == KERNEL_ID
    connection = json.loads(secret["stringData"][k.CONNECTION_KEY])
    assert connection["key"] == "s3cret-key" and connection["shell_port"] == 52001


def test_the_template_does_not_mutate_its_settings() -> None:
    tpl = template(resources={"limits": {"memory": "4Gi"}})
    tpl.render("alice", "", KERNEL_ID, SLICE, "key", "hmac-sha256")
    assert tpl.resources == {"limits": {"memory": "4Gi"}}


@pytest.mark.parametrize(
    ("traits", "words"),
    [
        ({"volumes": [{"name": "{user}"}]}, "c.KernelPodTemplate.volumes cannot be rendered"),
        ({"env": {"A": "{username.__class__}"}}, "c.KernelPodTemplate.env cannot be rendered"),
        ({"namespace": "Jhub_{username}"}, "renders to 'Jhub_alice', not a namespace name"),
    ],
)
def test_a_template_that_cannot_be_rendered_says_which_setting(
    traits: dict[str, Any], words: str
) -> None:
    with pytest.raises(TemplateError, match=re.escape(words)):
        template(**traits).render("alice", "", KERNEL_ID, SLICE, "key", "hmac-sha256")


def test_per_user_namespaces() -> None:
    assert template(namespace="jhub-{username}").namespace_for("Bob") == f"jhub-{safe_slug('Bob')}"


def test_the_template_travels_to_the_service_as_json() -> None:
    tpl = template(node_selector={"pool": "gpu"}, max_kernels_per_user=2)
    again = KernelPodTemplate.from_json(tpl.to_json())
    assert again.settings() == tpl.settings() and again.enabled
    with pytest.raises(ValueError, match="unknown kernel pod template settings"):
        KernelPodTemplate.from_json('{"imagee": "x"}')
    assert not KernelPodTemplate().enabled


# --- kernel specs ---------------------------------------------------------------------------


def test_kernelspecs_writes_one_spec_per_size(tmp_path: Path, capsys: Any) -> None:
    assert main(["kernelspecs", "--sizes", "10gb, 1g.20gb", "--prefix", str(tmp_path)]) == 0
    manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "share/jupyter/kernels")])
    specs = manager.get_all_specs()
    assert {"gpu-10gb", "gpu-1g-20gb"} <= set(specs)  # and the native python3
    spec = specs["gpu-10gb"]["spec"]
    assert spec["display_name"] == "Python 3 · GPU 10gb"
    assert spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": k.PROVISIONER_NAME,
        "config": {"gpu_slice": "10gb"},
    }


def test_a_bad_size_writes_no_spec(tmp_path: Path, capsys: Any) -> None:
    assert main(["kernelspecs", "--sizes", "10gb,lots", "--prefix", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read 'lots' as a GPU slice size" in err[0]
    assert not (tmp_path / "share").exists()
    with pytest.raises(SizeError):
        write_specs(["0gb"], tmp_path, "{size}")
    assert spec_name(" 10GiB ") == "gpu-10gib"


# --- the provisioner under a real kernel manager --------------------------------------------


@pytest.fixture
def kernel_dirs(tmp_path: Path) -> KernelSpecManager:
    write_specs(["10gb"], tmp_path, "GPU {size}")
    return KernelSpecManager(kernel_dirs=[str(tmp_path / "share/jupyter/kernels")])


def manager(specs: KernelSpecManager, service: FakeService, tmp_path: Path) -> AsyncKernelManager:
    km = AsyncKernelManager(
        kernel_name="gpu-10gb",
        kernel_spec_manager=specs,
        connection_file=str(tmp_path / "kernel.json"),
    )
    prov.GpuSliceProvisioner.service = service  # type: ignore[assignment]
    return km


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prov.GpuSliceProvisioner, "service", None)
    monkeypatch.setattr(prov.GpuSliceProvisioner, "_polled", 0.0)


def test_a_kernel_starts_in_its_pod_and_its_pod_goes_at_shutdown(
    kernel_dirs: KernelSpecManager, tmp_path: Path
) -> None:
    service = FakeService()

    async def scenario() -> None:
        km = manager(kernel_dirs, service, tmp_path)
        km.kernel_spec.metadata["kernel_provisioner"]["config"]["poll_interval"] = 0.01
        await km.start_kernel(kernel_id=KERNEL_ID)
        provisioner = km.provisioner
        assert isinstance(provisioner, prov.GpuSliceProvisioner)
        assert km.ip == "127.0.0.1" and km.shell_port == k.kernel_ports(0)["shell_port"]
        assert json.loads((tmp_path / "kernel.json").read_text())["ip"] == "127.0.0.1"
        assert await km.is_alive()
        info = await provisioner.get_provisioner_info()
        assert info["gpu_slice"] == "10gb" and info["pod"]["name"] == f"kernel-{KERNEL_ID}"
        service.pods[KERNEL_ID]["phase"] = "Failed"  # the kernel died
        provisioner._polled = 0.0
        assert await provisioner.poll() == 1
        await km.shutdown_kernel(now=True)
        assert KERNEL_ID not in service.pods and not provisioner.has_process

    asyncio.run(scenario())
    assert service.calls[0] == ("create", KERNEL_ID, "10gb")


def test_a_launch_may_ask_for_another_size_and_restarts_keep_it(
    kernel_dirs: KernelSpecManager, tmp_path: Path
) -> None:
    service = FakeService(pending_polls=1)

    async def scenario() -> None:
        km = manager(kernel_dirs, service, tmp_path)
        km.kernel_spec.metadata["kernel_provisioner"]["config"]["poll_interval"] = 0.01
        await km.start_kernel(kernel_id=KERNEL_ID, gpu_slice="20gb")
        first = (km.ip, sorted(km.ports))
        await km.restart_kernel(now=True)
        # A new pod: a new address, and new ports, so that jupyter_server rebuilds the
        # channels of a browser that reconnects (it compares ports only).
        assert (km.ip, sorted(km.ports)) == ("127.0.0.2", list(k.kernel_ports(1).values()))
        assert first == ("127.0.0.1", list(k.kernel_ports(0).values()))
        await km.shutdown_kernel(now=True)

    asyncio.run(scenario())
    creates = [c for c in service.calls if c[0] == "create"]
    assert creates == [("create", KERNEL_ID, "20gb")] * 2
    assert service.pods == {}


def test_a_pod_that_ends_before_it_runs_is_one_clear_error_and_is_deleted(
    kernel_dirs: KernelSpecManager, tmp_path: Path
) -> None:
    service = FakeService(end_with="Failed")

    async def scenario() -> None:
        km = manager(kernel_dirs, service, tmp_path)
        km.kernel_spec.metadata["kernel_provisioner"]["config"]["poll_interval"] = 0.01
        with pytest.raises(prov.KernelPodError, match="the 10gb kernel pod did not run"):
            await km.start_kernel(kernel_id=KERNEL_ID)

    asyncio.run(scenario())
    assert service.pods == {}


def test_a_launch_that_fails_half_way_leaves_no_pod(
    kernel_dirs: KernelSpecManager, tmp_path: Path
) -> None:
    service = FakeService()
    service.broken = True

    async def scenario() -> None:
        km = manager(kernel_dirs, service, tmp_path)
        km.kernel_spec.metadata["kernel_provisioner"]["config"]["poll_interval"] = 0.01
        with pytest.raises(prov.KernelPodError, match="did not answer"):
            await km.start_kernel(kernel_id=KERNEL_ID)

    asyncio.run(scenario())
    assert ("delete", KERNEL_ID, "0") in service.calls and service.pods == {}


def test_a_bad_size_is_refused_before_the_hub_is_asked(
    kernel_dirs: KernelSpecManager, tmp_path: Path
) -> None:
    service = FakeService()

    async def scenario() -> None:
        km = manager(kernel_dirs, service, tmp_path)
        with pytest.raises(prov.KernelPodError, match="cannot read 'huge'") as caught:
            await km.start_kernel(kernel_id=KERNEL_ID, gpu_slice="huge")
        assert caught.value.status_code == 400  # jupyter_server shows the message

    asyncio.run(scenario())
    assert service.calls == []


def test_provisioner_info_lets_another_server_process_find_the_kernel(
    kernel_dirs: KernelSpecManager,
) -> None:
    async def scenario() -> None:
        spec = kernel_dirs.get_kernel_spec("gpu-10gb")
        first = prov.GpuSliceProvisioner(kernel_id=KERNEL_ID, kernel_spec=spec, gpu_slice="10gb")
        first.pod = {"name": f"kernel-{KERNEL_ID}", "phase": "Running", "ip": "10.0.0.5"}
        first.size = "20gb"
        info = await first.get_provisioner_info()
        second = prov.GpuSliceProvisioner(kernel_spec=spec, gpu_slice="10gb")
        await second.load_provisioner_info(info)
        assert second.has_process and second.kernel_id == KERNEL_ID and second.size == "20gb"

    asyncio.run(scenario())


# --- the hub service's kernel API: what is refused before Kubernetes is asked --------------


class TokenAuth:
    """Stands in for HubAuth: every token is alice's server token."""

    access_scopes: frozenset[str] = frozenset()

    async def user_for_token(self, token: str, use_cache: bool, sync: bool) -> dict[str, Any]:
        return {"name": "alice", "kind": "user", "scopes": ["servers!server=alice/"]}

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> bool:
        return True


def call_kernel_api(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from jupyter_mig.hub.kernels import KernelPods
    from jupyter_mig.hub.service import HubApi, Restarter, make_app
    from jupyter_mig.hub.settings import SliceSettings

    settings = SliceSettings(controller_url="http://127.0.0.1:9")
    hub = HubApi("http://127.0.0.1:9/hub/api", "t")
    restarter = Restarter(hub, settings)
    kernels = KernelPods(KernelPodTemplate(), settings, hub, restarter.capacity, None)

    async def main() -> tuple[int, bytes]:
        app = make_app("/services/jupyter-mig/", restarter, TokenAuth(), kernels)
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            response = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/services/jupyter-mig/{path}",
                method=method,
                body=None if body is None else json.dumps(body),
                headers={"Authorization": "token t"},
                raise_error=False,
                allow_nonstandard_methods=True,
            )
        finally:
            server.stop()
        return response.code, response.body

    status, raw = asyncio.run(main())
    return status, json.loads(raw)


GOOD = {"kernel_id": KERNEL_ID, "gpu_slice": "10gb", "key": "k"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "api/kernels", {**GOOD, "key": None}, 400, "key must be a string"),
        (
            "POST",
            "api/kernels",
            {"kernel_id": KERNEL_ID, "gpu_slice": "10gb"},
            400,
            "key is required",
        ),
        ("POST", "api/kernels", {**GOOD, "image": "evil"}, 400, 'unknown field "image"'),
        ("POST", "api/kernels", {**GOOD, "kernel_id": "../../x"}, 400, "lower-case UUID"),
        ("POST", "api/kernels", {**GOOD, "server_name": "bob"}, 403, "servers!server=alice/bob"),
        ("POST", "api/kernels", GOOD, 501, "per-kernel GPU slices are off on this hub"),
        ("GET", "api/kernels/Not-A-Uuid", None, 400, "lower-case UUID"),
        ("DELETE", f"api/kernels/{KERNEL_ID}?grace=-1", None, 400, "grace must be 0 to 300"),
    ],
)
def test_kernel_requests_are_checked_before_kubernetes_is_asked(
    method: str, path: str, body: Any, status: int, words: str
) -> None:
    code, doc = call_kernel_api(method, path, body)
    assert code == status and words in doc["message"], doc


# --- the hub service process: the template reaches it, the kernel API is served -------------

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def service_env(tmp_path: Path, template_json: str) -> dict[str, str]:
    from jupyter_mig.hub.settings import SETTINGS_ENV, SliceSettings
    from jupyter_mig.kernels.template import TEMPLATE_ENV

    return {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": "service-token",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/jupyter-mig/",
        SETTINGS_ENV: SliceSettings(controller_url="http://127.0.0.1:1").to_json(),
        TEMPLATE_ENV: template_json,
    }


def test_the_hub_service_serves_the_kernel_api_with_the_hubs_template(tmp_path: Path) -> None:
    from support.net import free_port, http_get
    from support.processes import stop_process
    from support.waiting import wait_for

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    port = free_port()
    command = [sys.executable, "-m", "jupyter_mig.cli", "hub-service"]
    process = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(tmp_path / "kubeconfig")],
        env=service_env(tmp_path, template().to_json()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/services/jupyter-mig/"
        wait_for("the service", lambda: http_get(base + "api/health")[0] == 200, 30)
        request = urllib.request.Request(base + "api/kernels", data=b"{}", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as err:
            status, doc = err.code, json.loads(err.read())
        assert status == 401 and "API token" in doc["message"], "the route is there"
    finally:
        stop_process(process, timeout=10)


def test_a_bad_template_stops_the_hub_service_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_mig.cli", "hub-service", "--listen", "127.0.0.1:1"],
        env=service_env(tmp_path, '{"imagee": "x"}'),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "is not a valid kernel pod template: unknown kernel pod template settings" in lines[0]


@pytest.mark.parametrize(
    ("status", "user", "gone"),
    [
        (404, {"message": "Not Found"}, True),
        (200, {"servers": {}}, True),
        (200, {"servers": {"": {"ready": False, "pending": None}}}, True),
        (200, {"servers": {"": {"ready": True}}}, False),
        (200, {"servers": {"": {"ready": False, "pending": "spawn"}}}, False),
        (500, None, False),  # the hub cannot say: keep the pod
        (403, {"message": "scope"}, False),
        (200, "not json", False),
    ],
)
def test_the_sweep_takes_a_pod_only_when_the_hub_says_its_server_is_gone(
    status: int, user: Any, gone: bool
) -> None:
    from jupyter_mig.hub.kernels import server_gone

    assert server_gone(status, user, "") is gone


def test_the_pod_starts_ipykernel_on_a_private_copy_of_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_mig.kernels import launch

    secret = tmp_path / "connection.json"
    secret.write_text('{"key": "k"}')
    monkeypatch.setenv(k.CONNECTION_ENV, str(secret))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "private"))
    (tmp_path / "private").mkdir()
    started: list[list[str]] = []
    monkeypatch.setattr(launch.tempfile, "tempdir", None)
    monkeypatch.setattr(launch.os, "execv", lambda path, argv: started.append(argv))
    launch.main()
    [argv] = started
    assert argv[1:4] == ["-m", "ipykernel_launcher", "-f"]
    copy = Path(argv[4])
    assert copy.parent == tmp_path / "private" and copy.read_text() == '{"key": "k"}'
    assert copy.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv(k.CONNECTION_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(SystemExit, match="names no connection file"):
        launch.main()

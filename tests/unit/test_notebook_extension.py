"""The server extension's REST API on a real jupyter_server (pytest-jupyter's jp_fetch).

The controller's capacity API is the controller's own HTTP server serving a capacity document
rendered from planner snapshots, so the numbers are what the controller would publish.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from kernel_support import KERNEL_ID, FakeService
from pytest_jupyter.jupyter_server import *  # noqa: F403  (fixtures, scoped to this module)
from slice_support import Controller, closed_port_url
from tornado.httpclient import HTTPClientError, HTTPResponse

from jupyter_mig.kernels.provisioner import GpuSliceProvisioner
from jupyter_mig.kernels.specs import kernel_spec


@pytest.fixture
def controller() -> Iterator[Controller]:
    with Controller() as ctl:
        yield ctl


@pytest.fixture
def jupyter_mig_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(controller: Controller, jupyter_mig_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_mig": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "JupyterMig": {"controller_url": controller.url, **jupyter_mig_config},
    }


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """This server runs outside JupyterHub unless a test says otherwise."""
    for name in (
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_USER",
        "JUPYTER_MIG_SERVICE_URL",
        "JUPYTER_MIG_SLICE",
        "JUPYTER_MIG_SIZE",
        "JUPYTER_MIG_RESOURCE",
        "JUPYTER_MIG_MODELS",
        "NVIDIA_VISIBLE_DEVICES",
        "JUPYTER_MIG_ALLOWED_SIZES",
        "JUPYTER_MIG_MAX_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)


class Api:
    """Calls ``jupyter-mig/api/...`` through jp_fetch and returns (status, JSON body)."""

    def __init__(self, fetch: Any, loop: Any) -> None:
        self.fetch = fetch
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, HTTPResponse]) -> HTTPResponse:
        return self.loop.run_until_complete(coro)  # type: ignore[no-any-return]

    def __call__(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PUT"):
            kwargs["body"] = ""
        try:
            response = self.run(
                self.fetch("jupyter-mig", "api", *path.split("/"), method=method, **kwargs)
            )
        except HTTPClientError as err:
            assert err.response is not None
            response = err.response
        return response.code, json.loads(response.body or b"{}")


@pytest.fixture
def api(jp_fetch: Any, jp_asyncio_loop: Any) -> Api:
    return Api(jp_fetch, jp_asyncio_loop)


def rows_by_size(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["size"]: row for row in doc["sizes"]}


def test_capacity_lists_every_size_with_what_it_gets_now(api: Api) -> None:
    status, doc = api("GET", "capacity")
    assert status == 200
    rows = rows_by_size(doc)
    assert rows["10gb"]["profile"] == "1g.10gb"
    assert rows["10gb"]["status"] == "free" and rows["10gb"]["free"] == 1
    assert set(rows["10gb"]["models"]) == {"A100-80GB", "A100-40GB"}
    # 40gb: the A100-80GB can carve a 3g.40gb; the A100-40GB's 7g.40gb is taken.
    assert rows["40gb"]["profile"] == "3g.40gb" and rows["40gb"]["status"] == "repartition"
    assert [m["model"] for m in doc["models"]] == ["A100-40GB", "A100-80GB"]


def test_capacity_is_cached_for_a_few_seconds(api: Api, controller: Controller) -> None:
    assert api("GET", "capacity")[0] == 200
    assert api("GET", "capacity")[0] == 200
    assert controller.requests == 1


@pytest.mark.parametrize("jupyter_mig_config", [{"controller_url": closed_port_url()}])
def test_an_unreachable_controller_is_a_503_that_says_so(api: Api) -> None:
    status, doc = api("GET", "capacity")
    assert status == 503
    assert "unreachable" in doc["message"] and "/api/v1/capacity" in doc["message"]


def test_a_broken_controller_answer_is_a_502(api: Api, controller: Controller) -> None:
    controller.document = {"not": "capacity"}
    status, doc = api("GET", "capacity")
    assert status == 502
    assert "models" in doc["message"]


@pytest.mark.parametrize("jupyter_mig_config", [{"max_size": ["20gb"]}])
def test_sizes_above_the_maximum_are_shown_as_not_possible(api: Api) -> None:
    rows = rows_by_size(api("GET", "capacity")[1])
    assert rows["20gb"]["status"] != "unavailable"
    assert rows["40gb"]["status"] == "unavailable"
    assert "above your maximum of 20gb" in rows["40gb"]["reason"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "capacity"),
        ("GET", "slice"),
        ("POST", "slice"),
        ("DELETE", "slice"),
        ("GET", "slice/progress"),
    ],
)
def test_every_endpoint_refuses_requests_without_credentials(
    api: Api, method: str, path: str
) -> None:
    status, _ = api(
        method, path, {"size": "10gb"} if method == "POST" else None, headers={"Authorization": ""}
    )
    assert status == 403


def test_every_handler_is_authenticated_so_the_server_starts_without_warnings(
    jp_configurable_serverapp: Any, jp_server_config: dict[str, Any]
) -> None:
    from jupyter_server.utils import JupyterServerAuthWarning
    from traitlets.config import Config

    config = Config(jp_server_config)
    config.ServerApp.reraise_server_extension_failures = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", JupyterServerAuthWarning)
        app = jp_configurable_serverapp(config=config)
    assert app.extension_manager.extensions["jupyter_mig"].enabled


def test_the_dry_run_shows_what_a_size_would_get(api: Api) -> None:
    status, doc = api("POST", "slice", {"size": "40gb", "dry_run": True})
    assert status == 200
    assert doc["plan"]["profile"] == "3g.40gb"
    assert doc["plan"]["resource"] == "nvidia.com/mig-3g.40gb"
    assert doc["current"] is None


@pytest.mark.parametrize(
    ("size", "words"),
    [
        ("ten gigs", "cannot read 'ten gigs' as a GPU slice size"),
        ("200gb", "no GPU in this cluster offers a 200 GB slice; sizes you can ask for:"),
        ("2g.12gb", "no GPU in this cluster offers the profile '2g.12gb'"),
    ],
)
def test_bad_sizes_get_one_clear_message(api: Api, size: str, words: str) -> None:
    status, doc = api("POST", "slice", {"size": size, "saved": True})
    assert status == 400
    assert words in doc["message"]
    assert "\n" not in doc["message"]


@pytest.mark.parametrize("jupyter_mig_config", [{"max_size": ["20gb"]}])
def test_a_size_above_the_maximum_is_refused(api: Api) -> None:
    status, doc = api("POST", "slice", {"size": "40gb", "saved": True})
    assert status == 403
    assert doc["message"].startswith("40gb is above your maximum of 20gb")


def test_a_restart_needs_saved_documents(api: Api) -> None:
    status, doc = api("POST", "slice", {"size": "10gb"})
    assert status == 409
    assert "save open notebooks first" in doc["message"]
    status, doc = api("DELETE", "slice")
    assert status == 409


def test_outside_jupyterhub_the_server_says_it_cannot_restart(api: Api) -> None:
    status, doc = api("POST", "slice", {"size": "10gb", "saved": True})
    assert status == 409
    assert "not started by a JupyterHub" in doc["message"]
    assert api("GET", "slice")[1]["restartable"] is False
    assert api("GET", "slice/progress")[1] == {
        "state": "idle",
        "stage": None,
        "restartable": False,
    }


def test_an_unreachable_restart_service_leaves_the_server_running(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTER_MIG_SERVICE_URL", closed_port_url() + "/services/jupyter-mig/")
    status, doc = api("POST", "slice", {"size": "10gb", "saved": True, "timeout": 60})
    assert status == 502
    assert "restart service" in doc["message"] and "keeps running" in doc["message"]


@pytest.mark.parametrize("timeout", [0, -5, "soon", 10**6])
def test_the_restart_timeout_is_checked(api: Api, timeout: Any) -> None:
    status, doc = api("POST", "slice", {"size": "10gb", "saved": True, "timeout": timeout})
    assert status == 400
    assert "timeout" in doc["message"]


def test_the_current_slice_comes_from_the_environment_the_hub_set(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api("GET", "slice")[1]["slice"] is None
    monkeypatch.setenv("JUPYTER_MIG_SLICE", "1g.10gb")
    monkeypatch.setenv("JUPYTER_MIG_SIZE", "10gb")
    monkeypatch.setenv("JUPYTER_MIG_RESOURCE", "nvidia.com/mig-1g.10gb")
    monkeypatch.setenv("JUPYTER_MIG_MODELS", "A100-80GB,H100-80GB")
    status, doc = api("GET", "slice")
    assert status == 200
    assert doc["slice"] == {
        "size": "10gb",
        "profile": "1g.10gb",
        "resource": "nvidia.com/mig-1g.10gb",
        "models": ["A100-80GB", "H100-80GB"],
    }
    assert doc["devices"] == [] and doc["memory"] is None


def test_xsrf_is_enforced_for_cookie_authenticated_requests(
    jp_fetch: Any, jp_asyncio_loop: Any, jp_serverapp: Any
) -> None:
    token = jp_serverapp.identity_provider.token
    login = jp_asyncio_loop.run_until_complete(
        jp_fetch("api", "status", params={"token": token}, headers={"Authorization": ""})
    )
    cookies = login.headers.get_list("Set-Cookie")
    jar = {c.split("=", 1)[0]: c.split("=", 1)[1].split(";", 1)[0] for c in cookies}
    assert any(name.startswith("username-") for name in jar)  # logged in by cookie
    jar["_xsrf"] = "0123456789abcdef0123456789abcdef"  # a browser gets this with a page
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    api = Api(jp_fetch, jp_asyncio_loop)
    body = {"size": "10gb"}
    status, doc = api("POST", "slice", body, headers={"Authorization": "", "Cookie": cookie})
    assert status == 403 and "xsrf" in doc["message"].lower()
    status, doc = api(
        "POST",
        "slice",
        body,
        headers={"Authorization": "", "Cookie": cookie, "X-XSRFToken": jar["_xsrf"]},
    )
    assert status == 409  # past authentication and XSRF: refused only for not having saved


def test_delete_takes_its_options_as_query_parameters(api: Api) -> None:
    status, doc = api("DELETE", "slice", params={"saved": "true", "timeout": "soon"})
    assert status == 400
    assert doc["message"] == "timeout must be a number of seconds"


def test_installing_the_package_enables_the_extension() -> None:
    """The wheel ships jupyter-config/... into etc/jupyter/jupyter_server_config.d."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    enable = root / "jupyter-config" / "jupyter_server_config.d" / "jupyter_mig.json"
    assert json.loads(enable.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"jupyter_mig": True}}
    }
    project = tomllib.loads((root / "pyproject.toml").read_text())
    shared = project["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared["jupyter-config/jupyter_server_config.d"] == "etc/jupyter/jupyter_server_config.d"
    import jupyter_mig

    assert jupyter_mig._jupyter_server_extension_points() == [
        {"module": "jupyter_mig.notebook.extension"}
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"size": "10gb", "saved": "false"}, "saved must be true or false, not the string"),
        ({"size": "10gb", "saved": 1}, "saved must be true or false, not a number"),
        ({"size": "10gb", "dry_run": "false"}, "dry_run must be true or false"),
        ({"size": 10, "saved": True}, "size must be a string such as 10gb, not a number"),
        ({"size": "10gb", "saved": True, "timeout": "60"}, "timeout must be a number"),
        ({"size": "10gb", "saved": True, "timeout": None}, "timeout must be a number"),
        ({"size": "10gb", "saved": True, "force": True}, 'unknown field "force"'),
        (["10gb"], "the body must be a JSON object, not an array"),
    ],
)
def test_every_field_of_a_slice_request_must_have_its_json_type(
    api: Api, monkeypatch: pytest.MonkeyPatch, body: Any, words: str
) -> None:
    # A hub-started server whose restart service is unreachable: a request that got through
    # the checks would be a 502 (or a 200 dry run), not a 400.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTER_MIG_SERVICE_URL", closed_port_url() + "/services/jupyter-mig/")
    status, doc = api("POST", "slice", body)
    assert status == 400, doc
    assert words in doc["message"]
    assert set(doc) == {"message"}


def test_bodies_that_are_not_json_or_too_large_are_refused(api: Api) -> None:
    for raw, expected in ((b"\xff\xfe", 400), (b"{", 400), (b" " * 70_000 + b"{}", 413)):
        try:
            response = api.run(api.fetch("jupyter-mig", "api", "slice", method="POST", body=raw))
        except HTTPClientError as err:
            assert err.response is not None
            response = err.response
        assert response.code == expected
        assert set(json.loads(response.body)) == {"message"}


def test_delete_takes_only_true_or_false_for_saved(api: Api) -> None:
    status, doc = api("DELETE", "slice", params={"saved": "yes please"})
    assert status == 400 and doc["message"] == "saved must be true or false"
    status, doc = api("DELETE", "slice", params={"saved": "true", "force": "1"})
    assert status == 400 and "unknown parameter 'force'" in doc["message"]


@pytest.mark.parametrize("path", ["nope", "slices", "slice/progress/extra", "capacity/x"])
def test_unknown_paths_under_the_api_are_json_404s(api: Api, path: str) -> None:
    status, doc = api("GET", path)
    assert status == 404
    assert "no such endpoint" in doc["message"] and set(doc) == {"message"}
    assert api("POST", path, {})[0] == 404
    assert api("GET", path, headers={"Authorization": ""})[0] == 403


def test_error_bodies_carry_a_message_and_nothing_null(api: Api) -> None:
    status, doc = api("POST", "slice", {"size": "10gb"})
    assert status == 409
    assert set(doc) == {"message"} and doc["message"]


# --- per-kernel slices: one kernel restarts with another size ------------------------------


@pytest.fixture
def gpu_kernel(
    api: Api, jp_data_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, FakeService]]:
    """A kernel started by the server on the "GPU 10gb" spec; its pod is the stand-in's."""
    folder = jp_data_dir / "kernels" / "gpu-10gb"
    folder.mkdir(parents=True)
    spec = kernel_spec("10gb", "Python 3 · GPU {size}")
    spec["metadata"]["kernel_provisioner"]["config"]["poll_interval"] = 0.01
    (folder / "kernel.json").write_text(json.dumps(spec))
    service = FakeService(pending_polls=1)
    monkeypatch.setattr(GpuSliceProvisioner, "service", service)
    response = api.run(api.fetch("api", "kernels", method="POST", body='{"name": "gpu-10gb"}'))
    kernel_id = json.loads(response.body)["id"]
    yield kernel_id, service
    api.run(api.fetch("api", "kernels", kernel_id, method="DELETE"))


def wait_for_change(api: Api, kernel_id: str) -> dict[str, Any]:
    for _ in range(500):
        change = api("GET", f"kernels/{kernel_id}/slice")[1]["change"]
        if change["state"] != "running":
            return dict(change)
        api.run(asyncio.sleep(0.01))  # type: ignore[arg-type]
    raise AssertionError("the kernel did not restart")


def test_a_gpu_kernel_says_its_slice(api: Api, gpu_kernel: tuple[str, FakeService]) -> None:
    kernel_id, _ = gpu_kernel
    status, doc = api("GET", f"kernels/{kernel_id}/slice")
    assert status == 200
    assert (doc["gpu_slice"], doc["phase"], doc["change"]) == ("10gb", "Running", None)


def test_one_kernel_restarts_with_another_slice(
    api: Api, gpu_kernel: tuple[str, FakeService]
) -> None:
    kernel_id, service = gpu_kernel
    status, doc = api("POST", f"kernels/{kernel_id}/slice", {"size": "20gb"})
    assert status == 202 and doc["state"] == "running" and doc["plan"]["size"] == "20gb"
    change = wait_for_change(api, kernel_id)
    assert change["state"] == "ready", change
    assert api("GET", f"kernels/{kernel_id}/slice")[1]["gpu_slice"] == "20gb"
    creates = [c for c in service.calls if c[0] == "create"]
    assert creates == [("create", kernel_id, "10gb"), ("create", kernel_id, "20gb")]


@pytest.mark.parametrize("jupyter_mig_config", [{"allowed_sizes": ["10gb", "20gb"]}])
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"size": "lots"}, 400, "cannot read 'lots' as a GPU slice size"),
        ({"size": "40gb"}, 403, "40gb is not on this hub's list of sizes"),
        ({"size": ""}, 400, 'give the size as {"size": "10gb"}'),
        ({"size": "10gb", "saved": True}, 400, 'unknown field "saved"'),
    ],
)
def test_a_kernel_slice_change_that_cannot_be_had_leaves_the_kernel_alone(
    api: Api, gpu_kernel: tuple[str, FakeService], body: Any, status: int, words: str
) -> None:
    kernel_id, service = gpu_kernel
    code, doc = api("POST", f"kernels/{kernel_id}/slice", body)
    assert code == status and words in doc["message"], doc
    assert [c[0] for c in service.calls].count("create") == 1


def test_an_unknown_kernel_is_a_404(api: Api) -> None:
    status, doc = api("POST", f"kernels/{KERNEL_ID}/slice", {"size": "10gb"})
    assert status == 404 and "no kernel" in doc["message"]

"""The KubeSpawner integration: real KubeSpawner objects, real pod manifests, no cluster.

The hook runs the way JupyterHub runs it (``apply_user_options`` before ``start``), then
KubeSpawner loads its profile with the callable ``profile_list`` and builds the pod manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.app import JupyterHub
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from slice_support import Controller, closed_port_url
from tornado.web import HTTPError
from traitlets.config import Config

from jupyter_mig.api.constants import GPU_PRODUCT_LABEL, INTERACTIVE_ANNOTATION
from jupyter_mig.hub import SliceOptions, SliceProfiles, SliceSettings, configure_hub
from jupyter_mig.mig.models import MODELS
from jupyter_mig.slices.client import CapacityClient


@pytest.fixture
def controller() -> Iterator[Controller]:
    with Controller() as ctl:
        yield ctl


#: KubeSpawner reads a kubeconfig when it is created; building manifests never contacts it.
OFFLINE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: offline, user: {token: unused}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


@pytest.fixture(autouse=True)
def offline_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(OFFLINE_KUBECONFIG)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture(autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per test: KubeSpawner binds its API client to the running loop."""
    event_loop = asyncio.new_event_loop()
    asyncio.set_event_loop(event_loop)
    yield event_loop
    # KubeSpawner's shared API client closes itself when its task is cancelled.
    tasks = asyncio.all_tasks(event_loop)
    for task in tasks:
        task.cancel()
    event_loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    asyncio.set_event_loop(None)
    event_loop.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.get_event_loop_policy().get_event_loop().run_until_complete(coro)


def make_spawner(config: Config | None = None, groups: tuple[str, ...] = ()) -> Any:
    async def create() -> Any:
        return KubeSpawner(config=config or Config(), _mock=True)

    spawner = run(create())
    spawner.user.groups = [SimpleNamespace(name=g) for g in groups]
    return spawner


def settings_for(controller: Controller, **kwargs: Any) -> SliceSettings:
    return SliceSettings(controller_url=controller.url, capacity_ttl=0, **kwargs)


async def spawn_manifest(
    spawner: Any, settings: SliceSettings, user_options: dict[str, Any]
) -> Any:
    """What JupyterHub and KubeSpawner do with user_options, up to the pod manifest."""
    capacity = CapacityClient(settings.controller_url, settings.capacity_ttl)
    spawner.profile_list = SliceProfiles(settings, capacity=capacity)
    spawner.user_options = user_options
    await SliceOptions(settings, capacity)(spawner, user_options)
    await spawner.load_user_options()
    return await spawner.get_pod_manifest()


def spawn(spawner: Any, settings: SliceSettings, user_options: dict[str, Any]) -> Any:
    return run(spawn_manifest(spawner, settings, user_options))


def manifest(pod: Any) -> dict[str, Any]:
    """The pod as the API server would receive it (camelCase JSON)."""

    async def sanitize() -> dict[str, Any]:
        async with ApiClient() as client:
            doc: dict[str, Any] = client.sanitize_for_serialization(pod)
            return doc

    return run(sanitize())  # type: ignore[no-any-return]


def product_expressions(pod: Any) -> list[list[dict[str, Any]]]:
    affinity = manifest(pod)["spec"].get("affinity", {}).get("nodeAffinity", {})
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return [term.get("matchExpressions", []) for term in required.get("nodeSelectorTerms", [])]


def env_of(pod: Any) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest(pod)["spec"]["containers"][0]["env"]}


def limits_of(pod: Any) -> dict[str, str]:
    resources = manifest(pod)["spec"]["containers"][0].get("resources", {})
    return dict(resources.get("limits", {}))


def products(*models: str) -> list[str]:
    return sorted({p for m in models for p in MODELS.get(m).products})


def test_a_size_becomes_one_mig_limit_affinity_and_the_interactive_mark(
    controller: Controller,
) -> None:
    pod = spawn(make_spawner(), settings_for(controller), {"gpu_slice": "10gb"})
    limits = limits_of(pod)
    assert limits["nvidia.com/mig-1g.10gb"] == "1"
    assert [k for k in limits if k.startswith("nvidia.com/mig-")] == ["nvidia.com/mig-1g.10gb"]
    # Both models in the cluster have 1g.10gb, so both may serve it.
    assert product_expressions(pod) == [
        [
            {
                "key": GPU_PRODUCT_LABEL,
                "operator": "In",
                "values": products("A100-80GB", "A100-40GB"),
            }
        ]
    ]
    assert pod.metadata.annotations[INTERACTIVE_ANNOTATION] == "true"
    assert pod.metadata.labels["component"] == "singleuser-server"
    env = env_of(pod)
    assert env["JUPYTER_MIG_SLICE"] == "1g.10gb"
    assert env["JUPYTER_MIG_SIZE"] == "10gb"
    assert env["JUPYTER_MIG_RESOURCE"] == "nvidia.com/mig-1g.10gb"
    assert env["JUPYTER_MIG_CONTROLLER_URL"] == controller.url


def test_only_the_models_that_have_the_chosen_profile_are_allowed(controller: Controller) -> None:
    pod = spawn(make_spawner(), settings_for(controller), {"gpu_slice": "40gb"})
    # 3g.40gb (A100-80GB, carvable) beats 7g.40gb (A100-40GB, taken).
    assert "nvidia.com/mig-3g.40gb" in limits_of(pod)
    assert product_expressions(pod)[0][0]["values"] == products("A100-80GB")


def test_a_restart_without_a_slice_clears_everything_the_slice_set(controller: Controller) -> None:
    settings = settings_for(controller)
    spawner = make_spawner()
    spawn(spawner, settings, {"gpu_slice": "10gb"})
    pod = spawn(spawner, settings, {"gpu_slice": "none"})
    limits = limits_of(pod)
    assert not [k for k in limits if k.startswith("nvidia.com/mig-")]
    assert product_expressions(pod) == []
    assert INTERACTIVE_ANNOTATION not in (pod.metadata.annotations or {})
    env = env_of(pod)
    assert "JUPYTER_MIG_SLICE" not in env
    assert env["JUPYTER_MIG_SERVICE_URL"] == settings.url_for_servers


def test_a_different_size_replaces_the_previous_one(controller: Controller) -> None:
    settings = settings_for(controller)
    spawner = make_spawner()
    spawn(spawner, settings, {"gpu_slice": "10gb"})
    pod = spawn(spawner, settings, {"gpu_slice": "80gb"})
    limits = limits_of(pod)
    assert [k for k in limits if k.startswith("nvidia.com/mig-")] == ["nvidia.com/mig-7g.80gb"]
    assert len(product_expressions(pod)) == 1


@pytest.mark.parametrize("as_dict", [False, True])
def test_admin_affinity_terms_each_get_the_product_constraint(
    controller: Controller, as_dict: bool
) -> None:
    terms = [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]},
    ]
    config = Config()
    config.KubeSpawner.node_affinity_required = (
        {"pool-a": terms[0], "pool-b": terms[1]} if as_dict else terms
    )
    settings = settings_for(controller)
    spawner = make_spawner(config)
    pod = spawn(spawner, settings, {"gpu_slice": "80gb"})
    expressions = product_expressions(pod)
    assert len(expressions) == 2  # terms are ORed: each keeps its pool and gains the product
    for term, pool in zip(expressions, ["a", "b"], strict=True):
        assert term[0]["values"] == [pool]
        assert term[1]["key"] == GPU_PRODUCT_LABEL
    pod = spawn(spawner, settings, {"gpu_slice": "none"})
    assert [[e["key"] for e in t] for t in product_expressions(pod)] == [["pool"], ["pool"]]


def test_admin_resource_limits_are_kept(controller: Controller) -> None:
    config = Config()
    config.KubeSpawner.extra_resource_limits = {"example.com/fpga": "1"}
    pod = spawn(make_spawner(config), settings_for(controller), {"gpu_slice": "10gb"})
    assert limits_of(pod)["example.com/fpga"] == "1"


def refusal(spawner: Any, settings: SliceSettings, user_options: dict[str, Any]) -> HTTPError:
    with pytest.raises(HTTPError) as caught:
        spawn(spawner, settings, user_options)
    return caught.value


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        (10, 400, "gpu_slice must be a size such as 10gb"),
        ("nvidia.com/gpu", 400, "cannot read 'nvidia.com/gpu' as a GPU slice size"),
        ("10gb; rm -rf", 400, "cannot read"),
        ("500gb", 400, "no GPU in this cluster offers a 500 GB slice; sizes you can ask for: 5gb"),
        ("2g.12gb", 400, "no GPU in this cluster offers the profile '2g.12gb'"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(
    controller: Controller, value: Any, status: int, words: str
) -> None:
    err = refusal(make_spawner(), settings_for(controller), {"gpu_slice": value})
    assert err.status_code == status
    assert words in (err.log_message or "")


def test_the_maximum_depends_on_the_users_groups(controller: Controller) -> None:
    settings = settings_for(controller, max_size="10gb", max_size_by_group={"gpu-power": "80gb"})
    err = refusal(make_spawner(), settings, {"gpu_slice": "40gb"})
    assert err.status_code == 403
    assert "40gb is above your maximum of 10gb" in (err.log_message or "")
    pod = spawn(make_spawner(groups=("gpu-power",)), settings, {"gpu_slice": "40gb"})
    assert "nvidia.com/mig-3g.40gb" in limits_of(pod)
    assert env_of(pod)["JUPYTER_MIG_MAX_SIZE"] == "80gb"


def test_sizes_off_the_menu_are_refused(controller: Controller) -> None:
    settings = settings_for(controller, sizes=("10gb", "40gb"))
    err = refusal(make_spawner(), settings, {"gpu_slice": "20gb"})
    assert err.status_code == 403
    assert "not on this hub's list of sizes; sizes you can ask for: 10gb, 40gb" in str(
        err.log_message
    )
    # A profile name that one of the menu sizes resolves to is the same slice: allowed.
    pod = spawn(make_spawner(), settings, {"gpu_slice": "1g.10gb"})
    assert "nvidia.com/mig-1g.10gb" in limits_of(pod)


def test_a_broken_controller_answer_is_the_same_502_as_on_the_notebook_server(
    controller: Controller,
) -> None:
    controller.document = {"not": "capacity"}
    err = refusal(make_spawner(), settings_for(controller), {"gpu_slice": "10gb"})
    assert err.status_code == 502
    assert "models" in (err.log_message or "")


def test_an_unreachable_controller_refuses_a_gpu_but_not_a_plain_server() -> None:
    settings = SliceSettings(controller_url=closed_port_url())
    err = refusal(make_spawner(), settings, {"gpu_slice": "10gb"})
    assert err.status_code == 503
    assert "cannot check GPU capacity" in (err.log_message or "")
    pod = spawn(make_spawner(), settings, {})
    assert not [k for k in limits_of(pod) if k.startswith("nvidia.com/mig-")]


def test_the_profile_list_offers_sizes_with_availability(controller: Controller) -> None:
    spawner = make_spawner()
    profiles = run(SliceProfiles(settings_for(controller))(spawner))
    assert [p["slug"] for p in profiles] == ["default"]
    choices = profiles[0]["profile_options"]["gpu_slice"]["choices"]
    assert choices["none"] == {"display_name": "No GPU", "default": True}
    assert choices["10gb"]["display_name"].startswith("10gb: 1g.10gb")
    assert "1 free now" in choices["10gb"]["display_name"]
    assert "ready after repartitioning" in choices["40gb"]["display_name"]


def test_the_profile_list_keeps_the_admins_profiles(controller: Controller) -> None:
    admin = [
        {"display_name": "Small", "slug": "small", "default": True},
        {"display_name": "Big", "slug": "big", "kubespawner_override": {"cpu_limit": 8}},
    ]
    profiles = run(SliceProfiles(settings_for(controller), admin)(make_spawner()))
    assert [p["slug"] for p in profiles] == ["small", "big"]
    assert all("gpu_slice" in p["profile_options"] for p in profiles)
    assert "profile_options" not in admin[0]  # the admin's list is not modified


def test_a_requested_size_off_the_menu_is_accepted_by_kubespawner(controller: Controller) -> None:
    """A restart asks for e.g. "1g.10gb": KubeSpawner must find it among the choices."""
    pod = spawn(make_spawner(), settings_for(controller), {"gpu_slice": "1g.10gb"})
    assert "nvidia.com/mig-1g.10gb" in limits_of(pod)


def test_the_spawn_form_choice_works_like_the_rest_api(controller: Controller) -> None:
    spawner = make_spawner()
    form = {"profile": ["default"], "profile-option-default--gpu_slice": ["40gb"]}
    options = spawner.options_from_form(form)
    assert options == {"profile": "default", "gpu_slice": "40gb"}
    pod = spawn(spawner, settings_for(controller), options)
    assert "nvidia.com/mig-3g.40gb" in limits_of(pod)


def test_configure_hub_sets_scopes_service_and_role(controller: Controller) -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    settings = settings_for(controller)
    configure_hub(c, settings, listen="0.0.0.0:10101")
    assert "access:services!service=jupyter-mig" in c.Spawner.server_token_scopes
    assert "access:servers!server" in c.Spawner.server_token_scopes
    if JupyterHub.class_traits().get("extra_user_scopes") is not None:  # JupyterHub >= 6
        assert "access:services!service=jupyter-mig" in c.JupyterHub.extra_user_scopes
    else:  # 5.x: the user role itself gets the scope
        user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
        assert user_role["scopes"] == ["self", "access:services!service=jupyter-mig"]
    names = [s["name"] for s in c.JupyterHub.services]
    assert names == ["other", "jupyter-mig"]
    service = c.JupyterHub.services[1]
    assert service["command"][-3:] == ["hub-service", "--listen", "0.0.0.0:10101"]
    assert SliceSettings.from_json(service["environment"]["JUPYTER_MIG_HUB_SETTINGS"]) == settings
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "jupyter-mig")
    assert role["services"] == ["jupyter-mig"]
    assert set(role["scopes"]) == {"servers", "read:users:name", "read:users:groups"}
    assert isinstance(c.KubeSpawner.profile_list, SliceProfiles)
    assert isinstance(c.Spawner.apply_user_options, SliceOptions)


def test_configure_hub_keeps_the_admins_server_token_scopes(controller: Controller) -> None:
    c = Config()
    c.Spawner.server_token_scopes = ["access:servers!server", "read:users:name!user"]
    configure_hub(c, settings_for(controller))
    configure_hub(c, settings_for(controller))  # idempotent
    assert c.Spawner.server_token_scopes == [
        "access:servers!server",
        "read:users:name!user",
        "access:services!service=jupyter-mig",
        "servers!server",
    ]
    assert [s["name"] for s in c.JupyterHub.services] == ["jupyter-mig"]


def test_bad_settings_are_refused_when_the_hub_loads_its_config(controller: Controller) -> None:
    with pytest.raises(ValueError, match="cannot read 'ten' as a GPU slice size"):
        SliceSettings(controller_url=controller.url, sizes=("ten",))


def test_the_example_hub_config_loads() -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "jupyterhub_config.py"
    c = Config()
    runpy.run_path(str(example), init_globals={"c": c})
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    profiles: SliceProfiles = c.KubeSpawner.profile_list
    assert [p["slug"] for p in profiles.profiles] == ["datascience", "big"]
    assert profiles.settings.policy_for(["gpu-power"]).maximum == ("40gb",)
    assert c.JupyterHub.services[-1]["command"][-1] == "0.0.0.0:10101"


def test_a_users_servers_together_stay_under_the_total(controller: Controller) -> None:
    settings = settings_for(controller, max_total_size="40gb")
    spawner = make_spawner()
    big = SimpleNamespace(active=True, user_options={"gpu_slice": "3g.40gb"})
    stopped = SimpleNamespace(active=False, user_options={"gpu_slice": "40gb"})
    spawner.user.spawners = {"": spawner, "big": big, "old": stopped}
    err = refusal(spawner, settings, {"gpu_slice": "10gb"})
    assert err.status_code == 403
    assert "50 GB together, above this hub's limit of 40gb" in (err.log_message or "")
    big.user_options = {"gpu_slice": "20gb"}
    assert "nvidia.com/mig-1g.10gb" in limits_of(spawn(spawner, settings, {"gpu_slice": "10gb"}))
    assert not limits_of(spawn(spawner, settings, {"gpu_slice": "none"}))  # no GPU: no limit

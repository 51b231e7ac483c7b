"""The chart against the real API server: the CRD's schema, RBAC and the admission policies.

Workloads are applied with server-side dry-run only (a DaemonSet would otherwise land on the
sim nodes of other tests).  Service accounts act through TokenRequest tokens; the agent's is
bound to a pod on a node, which gives it the node name the admission policy checks.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chart_render import Chart
from support.waiting import wait_for

from jupyter_mig.api import constants as c
from jupyter_mig.api.cluster import require_crds
from jupyter_mig.api.crd import crd_manifests
from jupyter_mig.api.mignode import new_mignode
from jupyter_mig.errors import UserError

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

pytestmark = pytest.mark.cluster

CHART = Chart(Path(__file__).resolve().parents[2] / "controller" / "chart")
WAIT_S = 30.0
WORKLOAD_KINDS = ("Deployment", "DaemonSet")


def _status_of(call: Callable[[], Any]) -> int:
    """The HTTP status of an API call: 200 when it succeeds, else the error's."""
    try:
        call()
    except client.ApiException as err:
        return int(err.status)
    return 200


def _error_body(call: Callable[[], Any]) -> str:
    """The body of the error a call must end in.  A new admission policy takes effect a moment
    after it is created (the API server loads it asynchronously), so an allowed call is retried
    until the deadline before the test fails."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            call()
        except client.ApiException as err:
            return str(err.body)
        if time.monotonic() > deadline:
            pytest.fail(f"still allowed after {WAIT_S:.0f}s: the call should have been refused")
        time.sleep(0.5)


def _apply(dynamic: DynamicClient, manifest: dict[str, Any], dry_run: bool = False) -> Any:
    resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    return resource.server_side_apply(
        body=manifest,
        name=manifest["metadata"]["name"],
        namespace=manifest["metadata"].get("namespace"),
        field_manager="jupyter-mig-tests",
        force_conflicts=True,
        **({"dry_run": "All"} if dry_run else {}),
    )


def _delete(dynamic: DynamicClient, manifest: dict[str, Any]) -> None:
    """Delete what ``manifest`` names, if it is still there."""
    resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    with contextlib.suppress(client.ApiException):
        resource.delete(
            name=manifest["metadata"]["name"], namespace=manifest["metadata"].get("namespace")
        )


def _crd_established(api: client.ApiClient) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(c.CRD_NAME)
    return any(
        cond.type == "Established" and cond.status == "True"
        for cond in (crd.status.conditions or [])
    )


def _served(api: client.ApiClient) -> bool:
    try:
        require_crds(api)
    except UserError:
        return False
    return True


def test_require_crds_fails_fast_without_the_crd(cluster: Any) -> None:
    """Runs before this module installs the CRD; on a cluster that already has it, skips."""
    with cluster.api_client() as api:
        if (
            _status_of(
                lambda: client.ApiextensionsV1Api(api).read_custom_resource_definition(c.CRD_NAME)
            )
            != 404
        ):
            pytest.skip("the MigNode CRD is already installed in this cluster")
        with pytest.raises(UserError, match=r"jupyter-mig crds \| kubectl apply -f -"):
            require_crds(api)


@dataclass
class Install:
    release: str
    namespace: str
    plugin_namespace: str
    manifests: list[dict[str, Any]]
    admin: client.ApiClient
    token_for: Callable[[str, dict[str, Any] | None], client.ApiClient]


@pytest.fixture(scope="module")
def install(cluster: Any) -> Iterator[Install]:
    """The CRD for real; RBAC and admission policies of a fresh release for real; workloads
    dry-run.  Everything but the CRD is removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    release, namespace, plugin_namespace = f"jm-{suffix}", f"jm-{suffix}", f"jm-dp-{suffix}"
    # The release namespace stands in for the hub's: the interactive mark is allowed there only.
    manifests = CHART.render(
        {
            "agent": {"devicePlugin": {"namespace": plugin_namespace}},
            "controller": {"interactiveNamespaces": [namespace]},
        },
        release,
        namespace,
    )
    clients: list[client.ApiClient] = []
    admin = cluster.api_client()
    clients.append(admin)
    dynamic = DynamicClient(admin)

    def token_for(account: str, bound_pod: dict[str, Any] | None) -> client.ApiClient:
        ref = None
        if bound_pod is not None:
            ref = client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=bound_pod["name"], uid=bound_pod["uid"]
            )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[], expiration_seconds=3600, bound_object_ref=ref
            )
        )
        result = client.CoreV1Api(admin).create_namespaced_service_account_token(
            account, namespace, request
        )
        api = cluster.api_client(token=result.status.token)
        clients.append(api)
        return api

    for crd in crd_manifests():
        _apply(dynamic, crd)
    wait_for(
        "the MigNode CRD to be established and served", lambda: _crd_established(admin), WAIT_S
    )
    wait_for("the API server to serve mignodes", lambda: _served(admin), WAIT_S)
    for name in (namespace, plugin_namespace):
        cluster.create_namespace(name)
    cluster_scoped: list[dict[str, Any]] = []
    try:
        for manifest in manifests:
            if manifest["kind"] in WORKLOAD_KINDS:
                continue
            _apply(dynamic, manifest)
            if "namespace" not in manifest["metadata"]:
                cluster_scoped.append(manifest)
        yield Install(release, namespace, plugin_namespace, manifests, admin, token_for)
    finally:
        for manifest in manifests:
            if manifest["kind"] not in WORKLOAD_KINDS and manifest["metadata"].get(
                "namespace"
            ) not in (None, namespace, plugin_namespace):
                cluster_scoped.append(manifest)  # e.g. the agent's Role in "default"
        for manifest in cluster_scoped:
            _delete(dynamic, manifest)
        core = client.CoreV1Api(admin)
        for name in (namespace, plugin_namespace):
            with contextlib.suppress(client.ApiException):
                # No kubelet confirms these pods' deaths: remove them outright.
                core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
                core.delete_namespace(name)
        for api in clients:
            api.close()


def test_every_manifest_passes_server_side_dry_run(install: Install) -> None:
    dynamic = DynamicClient(install.admin)
    for manifest in install.manifests:
        _apply(dynamic, manifest, dry_run=True)


def test_admission_policies_type_check_cleanly(install: Install) -> None:
    policies = client.AdmissionregistrationV1Api(install.admin)
    names = [
        m["metadata"]["name"] for m in install.manifests if m["kind"] == "ValidatingAdmissionPolicy"
    ]
    assert names
    for name in names:

        def checked(name: str = name) -> bool:
            policy = policies.read_validating_admission_policy(name)
            return bool(policy.status and policy.status.observed_generation)

        wait_for(f"type checking of {name}", checked, WAIT_S)
        status = policies.read_validating_admission_policy(name).status
        warnings = status.type_checking.expression_warnings if status.type_checking else None
        assert not warnings, f"{name}: {warnings}"


# --- The CRD's schema ------------------------------------------------------------------------


def _mignode(name: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
    return new_mignode(name, spec={"gpus": [{"index": 0, "instances": instances}]})


def _create(api: client.ApiClient, body: dict[str, Any], strict: bool = True) -> Any:
    return client.CustomObjectsApi(api).create_cluster_custom_object(
        c.GROUP,
        c.VERSION,
        c.PLURAL,
        body,
        dry_run="All",
        field_validation="Strict" if strict else None,
    )


def test_crd_accepts_the_protocol_example_and_prints_its_columns(install: Install) -> None:
    created = _create(
        install.admin,
        _mignode(
            f"{install.release}-valid",
            [
                {"profile": "1g.10gb", "profileId": 19, "start": 0},
                {"profile": "3g.40gb", "profileId": 9, "start": 4},
            ],
        ),
    )
    assert created["spec"]["gpus"][0]["instances"][1] == {
        "profile": "3g.40gb",
        "profileId": 9,
        "start": 4,
    }
    response = DynamicClient(install.admin).request(
        "get",
        f"/apis/{c.GROUP}/{c.VERSION}/{c.PLURAL}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        serialize=False,
    )
    table = json.loads(response.data)
    columns = [col["name"] for col in table["columnDefinitions"]]
    assert columns[:4] == ["Name", *c.CONDITION_TYPES]
    assert {"Observed", "Age"} <= set(columns)


@pytest.mark.parametrize(
    ("instances", "problem"),
    [
        ([{"profile": "1g.10gb", "profileId": 19, "start": -1}], "start"),
        ([{"profile": "1g.10gb", "start": 0}], "profileId"),
        ([{"profileId": 19}], "start"),
        ([{"profileId": "nineteen", "start": 0}], "profileId"),
        ([{"profileId": 19, "start": i} for i in range(c.MAX_INSTANCES + 1)], "instances"),
    ],
)
def test_crd_rejects_invalid_specs(
    install: Install, instances: list[dict[str, Any]], problem: str
) -> None:
    body = _error_body(lambda: _create(install.admin, _mignode(f"{install.release}-x", instances)))
    assert problem in body


def test_crd_rejects_unknown_spec_fields_under_strict_validation(install: Install) -> None:
    body = _mignode(f"{install.release}-x", [{"profileId": 19, "start": 0}])
    body["spec"]["gpus"][0]["instances"][0]["placement"] = 3
    body["spec"]["surprise"] = True
    message = _error_body(lambda: _create(install.admin, body))
    assert "surprise" in message and "placement" in message
    pruned = _create(install.admin, copy.deepcopy(body), strict=False)
    assert "surprise" not in pruned["spec"]


def test_require_crds_passes_once_installed(install: Install) -> None:
    require_crds(install.admin)


# --- RBAC and admission, acting as the service accounts --------------------------------------


def _bound_pod(install: Install, namespace: str, node: str, account: str = "default") -> Any:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"p-{uuid.uuid4().hex[:8]}"),
        spec=client.V1PodSpec(
            node_name=node,
            service_account_name=account,
            containers=[client.V1Container(name="c", image="pause")],
            # Nothing runs these pods; keep kubelet-less nodes from tripping anything.
            automount_service_account_token=False,
        ),
    )
    return client.CoreV1Api(install.admin).create_namespaced_pod(namespace, pod)


@pytest.fixture(scope="module")
def nodes(install: Install) -> Iterator[tuple[str, str]]:
    """Two Node objects (no kubelet behind them) and a MigNode for each."""
    core = client.CoreV1Api(install.admin)
    custom = client.CustomObjectsApi(install.admin)
    names = (f"{install.release}-node-a", f"{install.release}-node-b")
    for name in names:
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        custom.create_cluster_custom_object(c.GROUP, c.VERSION, c.PLURAL, new_mignode(name))
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(c.GROUP, c.VERSION, c.PLURAL, name)
            with contextlib.suppress(client.ApiException):
                core.delete_node(name)


def _status_patch(api: client.ApiClient, name: str) -> Callable[[], Any]:
    body = {"status": {"observedGeneration": 1, "gpus": []}}
    return lambda: client.CustomObjectsApi(api).patch_cluster_custom_object_status(
        c.GROUP, c.VERSION, c.PLURAL, name, body
    )


def _spec_patch(api: client.ApiClient, name: str) -> Callable[[], Any]:
    body = {"spec": {"gpus": [{"index": 0, "instances": [{"profileId": 19, "start": 0}]}]}}
    return lambda: client.CustomObjectsApi(api).patch_cluster_custom_object(
        c.GROUP, c.VERSION, c.PLURAL, name, body
    )


def test_controller_cannot_read_secrets_but_can_do_its_job(
    install: Install, nodes: tuple[str, str]
) -> None:
    api = install.token_for(f"{install.release}-controller", None)
    core = client.CoreV1Api(api)
    assert _status_of(lambda: core.list_namespaced_secret(install.namespace)) == 403
    assert _status_of(lambda: core.list_secret_for_all_namespaces()) == 403
    assert _status_of(lambda: core.list_pod_for_all_namespaces(limit=1)) == 200
    assert _status_of(lambda: core.list_node(limit=1)) == 200
    assert _status_of(_spec_patch(api, nodes[0])) == 200
    assert _status_of(_status_patch(api, nodes[0])) == 403, "status belongs to the agent"
    assert _status_of(lambda: core.delete_namespaced_pod("x", install.namespace)) == 403
    coordination = client.CoordinationV1Api(api)
    lease_name = CHART.values["controller"]["leaderElection"]["leaseName"]
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name=lease_name))
    assert (
        _status_of(
            lambda: coordination.create_namespaced_lease(install.namespace, lease, dry_run="All")
        )
        == 200
    )
    assert _status_of(lambda: coordination.create_namespaced_lease("default", lease)) == 403


def test_bound_token_carries_the_node_name(install: Install, nodes: tuple[str, str]) -> None:
    agent = f"{install.release}-agent"
    pod = _bound_pod(install, install.namespace, nodes[0], agent)
    api = install.token_for(agent, {"name": pod.metadata.name, "uid": pod.metadata.uid})
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    user = review.status.user_info
    assert user.username == f"system:serviceaccount:{install.namespace}:{agent}"
    assert user.extra[c.NODE_NAME_EXTRA] == [nodes[0]]


def test_agent_writes_only_its_own_mignode_status(install: Install, nodes: tuple[str, str]) -> None:
    own, other = nodes
    agent = f"{install.release}-agent"
    pod = _bound_pod(install, install.namespace, own, agent)
    api = install.token_for(agent, {"name": pod.metadata.name, "uid": pod.metadata.uid})
    assert _status_of(_status_patch(api, own)) == 200
    denied = _error_body(_status_patch(api, other))
    assert "ValidatingAdmissionPolicy" in denied and other in denied
    assert _status_of(_spec_patch(api, own)) == 403, "the spec is the controller's"
    custom = client.CustomObjectsApi(api)
    assert (
        _status_of(lambda: custom.delete_cluster_custom_object(c.GROUP, c.VERSION, c.PLURAL, own))
        == 403
    )
    assert (
        _status_of(lambda: client.CoreV1Api(api).list_namespaced_secret(install.namespace)) == 403
    )


def test_agent_token_without_a_node_is_refused(install: Install, nodes: tuple[str, str]) -> None:
    api = install.token_for(f"{install.release}-agent", None)
    assert "no node name" in _error_body(_status_patch(api, nodes[0]))


def test_agent_deletes_only_pods_on_its_node_in_the_plugin_namespace(
    install: Install, nodes: tuple[str, str]
) -> None:
    own, other = nodes
    agent = f"{install.release}-agent"
    pod = _bound_pod(install, install.namespace, own, agent)
    api = install.token_for(agent, {"name": pod.metadata.name, "uid": pod.metadata.uid})
    core = client.CoreV1Api(api)
    mine = _bound_pod(install, install.plugin_namespace, own)
    theirs = _bound_pod(install, install.plugin_namespace, other)
    elsewhere = _bound_pod(install, install.namespace, own)
    assert (
        _status_of(
            lambda: core.list_namespaced_pod(
                install.plugin_namespace, field_selector=f"spec.nodeName={own}"
            )
        )
        == 200
    )
    denied = _error_body(
        lambda: core.delete_namespaced_pod(theirs.metadata.name, install.plugin_namespace)
    )
    assert "ValidatingAdmissionPolicy" in denied
    assert (
        _status_of(lambda: core.delete_namespaced_pod(elsewhere.metadata.name, install.namespace))
        == 403
    )
    assert (
        _status_of(lambda: core.delete_namespaced_pod(mine.metadata.name, install.plugin_namespace))
        == 200
    )


# --- Grants as narrow as the work (issue: hardening) -------------------------------------------


def _event(kind: str, name: str, namespace: str) -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"e-{uuid.uuid4().hex[:8]}"),
        involved_object=client.V1ObjectReference(
            api_version="v1" if kind == "Pod" else c.API_VERSION,
            kind=kind,
            name=name,
            namespace=namespace if kind == "Pod" else None,
        ),
        reason="Test",
        message="log in again at https://example.invalid",
        type="Normal",
    )


def test_agent_posts_events_only_about_its_own_mignode(
    install: Install, nodes: tuple[str, str]
) -> None:
    own, other = nodes
    agent = f"{install.release}-agent"
    pod = _bound_pod(install, install.namespace, own, agent)
    core = client.CoreV1Api(
        install.token_for(agent, {"name": pod.metadata.name, "uid": pod.metadata.uid})
    )

    def post(namespace: str, event: client.CoreV1Event) -> Callable[[], Any]:
        return lambda: core.create_namespaced_event(namespace, event, dry_run="All")

    denied = _error_body(post("default", _event("MigNode", other, "")))
    assert "may post Events only about its own MigNode" in denied
    assert "ValidatingAdmissionPolicy" in _error_body(
        post("default", _event("Pod", "jupyter-alice", "default"))
    )
    user_pod = _event("Pod", "jupyter-alice", install.namespace)
    assert _status_of(post(install.namespace, user_pod)) == 403, "no Events on users' pods"
    assert _status_of(post("default", _event("MigNode", own, ""))) == 200


def _allowed(install: Install, account: str, verb: str, resource: str, **where: str) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{install.namespace}:{account}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{install.namespace}"],
            resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, **where),
        )
    )
    answer = client.AuthorizationV1Api(install.admin).create_subject_access_review(review)
    return bool(answer.status.allowed)


def test_controller_writes_mignode_specs_without_update(install: Install) -> None:
    controller = f"{install.release}-controller"
    mignodes = {"group": c.GROUP}
    assert _allowed(install, controller, "patch", c.PLURAL, **mignodes)
    assert _allowed(install, controller, "create", c.PLURAL, **mignodes)
    assert not _allowed(install, controller, "update", c.PLURAL, **mignodes)
    assert not _allowed(install, controller, "patch", "events", namespace="default")


def _annotated_pod(interactive: bool) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"batch-{uuid.uuid4().hex[:6]}",
            labels={c.SINGLEUSER_LABEL: c.SINGLEUSER_VALUE},
            annotations={c.INTERACTIVE_ANNOTATION: "true"} if interactive else {},
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="pause")]),
    )


def test_the_interactive_annotation_is_refused_outside_the_hub_namespaces(
    install: Install,
) -> None:
    core = client.CoreV1Api(install.admin)

    def create(namespace: str, interactive: bool) -> Callable[[], Any]:
        pod = _annotated_pod(interactive)
        return lambda: core.create_namespaced_pod(namespace, pod, dry_run="All")

    denied = _error_body(create(install.plugin_namespace, True))
    assert "reserved for JupyterHub servers" in denied and install.plugin_namespace in denied
    assert _status_of(create(install.namespace, True)) == 200
    # The label alone is left to the controller (other tools use it too): it ignores it there.
    assert _status_of(create(install.plugin_namespace, False)) == 200


def test_watch_namespaces_keeps_the_controller_out_of_other_namespaces(
    install: Install,
) -> None:
    release = f"{install.release}-w"
    manifests = CHART.render(
        {
            "controller": {"watchNamespaces": [install.plugin_namespace]},
            "admissionPolicy": {"enabled": False},
            "networkPolicy": {"enabled": False},
        },
        release,
        install.namespace,
    )
    rbac = [
        m
        for m in manifests
        if m["kind"]
        in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
        and m["metadata"]["name"].startswith(f"{release}-controller")
    ]
    dynamic = DynamicClient(install.admin)
    try:
        for manifest in rbac:
            _apply(dynamic, manifest)
        core = client.CoreV1Api(install.token_for(f"{release}-controller", None))
        wait_for(
            "the namespaced Role to take effect",
            lambda: _status_of(lambda: core.list_namespaced_pod(install.plugin_namespace)) == 200,
        )
        assert _status_of(lambda: core.list_namespaced_pod(install.namespace)) == 403
        assert _status_of(lambda: core.list_pod_for_all_namespaces(limit=1)) == 403
        assert _status_of(lambda: core.list_node(limit=1)) == 200
    finally:
        for manifest in rbac:
            _delete(dynamic, manifest)


def test_the_hub_service_may_make_kernel_pods_and_secrets_only_where_listed(
    install: Install,
) -> None:
    from jupyter_mig.kernels.template import KernelPodTemplate, KernelSlice

    release = f"{install.release}-k"
    account = {"name": "hub", "namespace": install.namespace}
    values = {"namespaces": [install.namespace], "serviceAccount": account}
    manifests = CHART.render({"hubKernels": values}, release, install.namespace)
    rbac = [m for m in manifests if m["metadata"]["name"] == f"{release}-hub-kernels"]
    assert {m["kind"] for m in rbac} == {"Role", "RoleBinding"}
    dynamic = DynamicClient(install.admin)
    core_admin = client.CoreV1Api(install.admin)
    core_admin.create_namespaced_service_account(install.namespace, {"metadata": {"name": "hub"}})
    template = KernelPodTemplate(namespace=install.namespace, image="kernel")
    chosen = KernelSlice("10gb", "1g.10gb", "nvidia.com/mig-1g.10gb", ("NVIDIA-A100-SXM4-80GB",))
    kernel_id = str(uuid.uuid4())
    pod, secret = template.render("alice", "", kernel_id, chosen, "key", "hmac-sha256")
    name, ns, other = pod["metadata"]["name"], install.namespace, install.plugin_namespace
    try:
        for manifest in rbac:
            _apply(dynamic, manifest)
        core = client.CoreV1Api(install.token_for("hub", None))
        wait_for(
            "the hub's Role to take effect",
            lambda: _status_of(lambda: core.list_namespaced_pod(ns)) == 200,
        )
        assert _status_of(lambda: core.create_namespaced_pod(ns, pod, dry_run="All")) == 200
        assert _status_of(lambda: core.create_namespaced_secret(ns, secret, dry_run="All")) == 200
        assert _status_of(lambda: core.read_namespaced_pod(name, ns)) == 404  # allowed, absent
        assert _status_of(lambda: core.delete_namespaced_pod(name, ns)) == 404
        assert _status_of(lambda: core.delete_namespaced_secret(name, ns)) == 404
        assert _status_of(lambda: core.read_namespaced_secret(name, ns)) == 403
        assert _status_of(lambda: core.list_namespaced_secret(ns)) == 403
        assert _status_of(lambda: core.patch_namespaced_pod(name, ns, {"metadata": {}})) == 403
        assert _status_of(lambda: core.create_namespaced_pod(other, pod, dry_run="All")) == 403
        assert _status_of(lambda: core.list_pod_for_all_namespaces(limit=1)) == 403
    finally:
        for manifest in rbac:
            _delete(dynamic, manifest)
        with contextlib.suppress(client.ApiException):
            core_admin.delete_namespaced_service_account("hub", install.namespace)

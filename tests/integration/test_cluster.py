"""The real local control plane behaves like Kubernetes: scheduling of extended resources,
controllers, RBAC, CRD validation; and ``devcluster`` handles its faults."""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support.waiting import wait_for

from jupyter_mig import cli, devcluster
from jupyter_mig.devcluster import DevCluster
from jupyter_mig.errors import UserError

pytestmark = pytest.mark.cluster

MIG = "nvidia.com/mig-1g.10gb"


@pytest.fixture
def core(cluster: DevCluster) -> Iterator[client.CoreV1Api]:
    with cluster.api_client() as api:
        yield client.CoreV1Api(api)


def _ready_node(core: client.CoreV1Api, name: str, resources: dict[str, str]) -> None:
    """Register a Node as a kubelet would: the object, then a Ready status with capacity."""
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", **resources}
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "simulated",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    core.patch_node_status(
        name, {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [condition]}}
    )


def _pod(name: str, node: str, limits: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            # Only our node: other tests' nodes may advertise the same resource.
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {"name": "main", "image": "registry.invalid/none", "resources": {"limits": limits}}
            ],
        },
    }


def test_scheduler_binds_pods_to_extended_resources(
    cluster: DevCluster, core: client.CoreV1Api, namespace: str
) -> None:
    node = f"gpu-{uuid.uuid4().hex[:8]}"
    _ready_node(core, node, {MIG: "2"})
    try:
        assert core.read_node(node).status.allocatable[MIG] == "2"
        # Admission taints a new Node not-ready; the node lifecycle controller lifts the taint
        # once it sees Ready=True.
        wait_for(
            "the not-ready taint to be lifted",
            lambda: not (core.read_node(node).spec.taints or []),
            timeout=60,
        )
        for i in range(3):
            core.create_namespaced_pod(namespace, _pod(f"nb-{i}", node, {MIG: "1"}))

        def settled() -> tuple[list[str], list[str]] | None:
            pods = core.list_namespaced_pod(namespace).items
            bound = [p.metadata.name for p in pods if p.spec.node_name == node]
            unschedulable = [
                p.metadata.name
                for p in pods
                if not p.spec.node_name
                and any(
                    c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                    for c in p.status.conditions or []
                )
            ]
            return (bound, unschedulable) if (len(bound), len(unschedulable)) == (2, 1) else None

        bound, unschedulable = wait_for("2 pods bound and 1 unschedulable", settled, timeout=90)
        assert len(bound) == 2
        assert len(unschedulable) == 1
        pending = core.read_namespaced_pod(unschedulable[0], namespace)
        assert pending.status.phase == "Pending"
        message = next(c.message for c in pending.status.conditions if c.type == "PodScheduled")
        assert MIG in message  # "Insufficient nvidia.com/mig-1g.10gb"
    finally:
        core.delete_node(node)


def test_deployment_gets_its_pods(cluster: DevCluster, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web"}]},
            },
        },
    }
    with cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(namespace, deployment)

        def pods() -> list[Any]:
            items = core.list_namespaced_pod(namespace, label_selector="app=web").items
            return items if len(items) == 5 else []

        found = wait_for("5 pods of the Deployment", pods, timeout=90)
        owners = {p.metadata.owner_references[0].kind for p in found}
        assert owners == {"ReplicaSet"}
        replica_set = apps.read_namespaced_replica_set(
            found[0].metadata.owner_references[0].name, namespace
        )
        assert replica_set.metadata.owner_references[0].name == "web"
        assert replica_set.spec.replicas == 5


def test_rbac_forbids_then_allows_after_binding(cluster: DevCluster, namespace: str) -> None:
    token = cluster.mint_token(namespace, "reader")
    with cluster.api_client(token) as api:
        as_reader = client.CoreV1Api(api)
        with pytest.raises(client.ApiException) as denied:
            as_reader.list_node()
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

        role = f"node-reader-{namespace}"
        with cluster.api_client() as admin_api:
            rbac = client.RbacAuthorizationV1Api(admin_api)
            rbac.create_cluster_role(
                {
                    "metadata": {"name": role},
                    "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
                }
            )
            rbac.create_cluster_role_binding(
                {
                    "metadata": {"name": role},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "reader", "namespace": namespace}
                    ],
                }
            )
            try:

                def allowed() -> bool:
                    try:
                        as_reader.list_node()
                    except client.ApiException as err:
                        if err.status != 403:
                            raise
                        return False
                    return True

                wait_for("the binding to take effect", allowed, timeout=30)
                # Still only what the role grants.
                with pytest.raises(client.ApiException) as still_denied:
                    as_reader.list_namespaced_secret(namespace)
                assert still_denied.value.status == 403
            finally:
                rbac.delete_cluster_role_binding(role)
                rbac.delete_cluster_role(role)


def test_kubeconfig_for_token_and_for_user(cluster: DevCluster, namespace: str) -> None:
    from kubernetes import config

    token = cluster.mint_token(namespace, "viewer")
    path = cluster.kubeconfig_for_token(token)
    with config.new_client_from_config(config_file=str(path)) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:viewer"
    node_config = cluster.kubeconfig_for_user("system:node:gpu-x", ["system:nodes"])
    with config.new_client_from_config(config_file=str(node_config)) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review({})
        assert review.status.user_info.username == "system:node:gpu-x"
        assert "system:nodes" in review.status.user_info.groups


CRD_GROUP = "tests.jupyter-mig.dev"


def test_crd_schema_rejects_invalid_objects(cluster: DevCluster, namespace: str) -> None:
    name = f"slices.{CRD_GROUP}"
    crd = {
        "metadata": {"name": name},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "slices", "singular": "slice", "kind": "Slice"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size", "count"],
                                    "properties": {
                                        "size": {"type": "string", "pattern": "^[0-9]+g$"},
                                        "count": {"type": "integer", "minimum": 1},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    with cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        ext.create_custom_resource_definition(crd)
        try:

            def established() -> bool:
                conditions = ext.read_custom_resource_definition(name).status.conditions or []
                return any(c.type == "Established" and c.status == "True" for c in conditions)

            wait_for("the CRD to be established", established, timeout=30)
            custom = client.CustomObjectsApi(api)

            def create(obj_name: str, spec: dict[str, Any]) -> Any:
                body = {
                    "apiVersion": f"{CRD_GROUP}/v1",
                    "kind": "Slice",
                    "metadata": {"name": obj_name},
                    "spec": spec,
                }
                return custom.create_namespaced_custom_object(
                    CRD_GROUP, "v1", namespace, "slices", body
                )

            # The discovery of a fresh CRD can lag a moment behind Established.
            created = wait_for(
                "the CRD to serve objects",
                lambda: _ok_or_none(lambda: create("ok", {"size": "2g", "count": 1})),
                timeout=30,
            )
            assert created["spec"] == {"size": "2g", "count": 1}
            with pytest.raises(client.ApiException) as bad:
                create("bad", {"size": "ten", "count": 0})
            assert bad.value.status == 422
            assert "spec.size" in bad.value.body
            assert "spec.count" in bad.value.body
            with pytest.raises(client.ApiException) as missing:
                create("missing", {"size": "1g"})
            assert missing.value.status == 422
            assert "spec.count" in missing.value.body
        finally:
            ext.delete_custom_resource_definition(name)


def _ok_or_none(call: Any) -> Any:
    try:
        return call()
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


# -- devcluster itself --------------------------------------------------------------------------


def test_up_is_idempotent_and_env_prints_the_kubeconfig(
    cluster: DevCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    again = devcluster.up(cluster.dir)
    assert again.pids == cluster.pids
    assert again.server == cluster.server
    assert cli.main(["devcluster", "env", "--dir", str(cluster.dir)]) == 0
    # Then, once the nodes' kubectl is built, the line that puts it on PATH.
    exports = capsys.readouterr().out.strip().splitlines()
    assert exports[0] == f"export KUBECONFIG={cluster.kubeconfig}"
    assert exports[1:] in ([], [f'export PATH={devcluster.NODE_BIN}:"$PATH"'])
    for name in devcluster.COMPONENTS:
        assert (cluster.logs / f"{name}.log").stat().st_size > 0
    version = client.VersionApi(cluster.api_client()).get_code()
    assert version.git_version == devcluster.KUBERNETES_VERSION


def test_a_killed_run_is_cleaned_up_by_the_next_up_and_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dc"
    first = devcluster.up(path, timeout=90)
    try:
        # A crash: the apiserver dies, etcd and the rest stay as orphans; state.json is stale.
        os.kill(first.pids["kube-apiserver"], signal.SIGKILL)
        wait_for("the apiserver to die", lambda: devcluster.running(path) is None, timeout=10)
        second = devcluster.up(path, timeout=90)
        assert second.token != first.token
        assert not set(first.pids.values()) & set(devcluster.dir_processes(path))
        assert sorted(devcluster.dir_processes(path)) == sorted(second.pids.values())
        assert (path / "logs.previous" / "kube-apiserver.log").exists()
    finally:
        devcluster.down(path)
    assert devcluster.dir_processes(path) == []
    assert (path / "logs" / "etcd.log").exists()  # kept for diagnosis
    assert not (path / "state.json").exists()
    capsys.readouterr()
    assert cli.main(["devcluster", "env", "--dir", str(path)]) == 2
    assert f"no cluster is running in {path}" in capsys.readouterr().err


def test_a_component_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    path = tmp_path / "dc"
    with pytest.raises(UserError) as failed:
        devcluster.up(path, timeout=60, extra_args={"kube-apiserver": ["--no-such-flag"]})
    message = str(failed.value)
    assert "kube-apiserver exited with status" in message
    assert str(path / "logs" / "kube-apiserver.log") in message
    assert "no-such-flag" in message
    assert devcluster.dir_processes(path) == []  # etcd was stopped too

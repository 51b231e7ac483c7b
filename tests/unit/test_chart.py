"""The Helm chart in controller/chart, rendered with tests/chart_render.py, and the Dockerfile."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import Chart, TemplateError

from jupyter_mig import cli
from jupyter_mig.api import constants as c
from jupyter_mig.api.crd import crd_manifests

REPO = Path(__file__).resolve().parents[2]
CHART = Chart(REPO / "controller" / "chart")
RELEASE, NAMESPACE = "jupyter-mig", "gpu-slices"


def _render(**values: Any) -> list[dict[str, Any]]:
    return CHART.render(values, release=RELEASE, namespace=NAMESPACE)


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


# --- CRDs ------------------------------------------------------------------------------------


def test_committed_crds_equal_the_generated_ones() -> None:
    assert CHART.crds() == crd_manifests(), (
        "controller/chart/crds/ is stale: run "
        "`jupyter-mig crds > controller/chart/crds/mignodes.yaml`"
    )


def test_crds_command_prints_the_manifests() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["crds"]) == 0
    assert [d for d in yaml.safe_load_all(out.getvalue()) if d] == crd_manifests()
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["crds", "--output", "json"]) == 0
    assert json.loads(out.getvalue()) == {
        "apiVersion": "v1",
        "kind": "List",
        "items": crd_manifests(),
    }


# --- RBAC ------------------------------------------------------------------------------------

Grant = tuple[str, str, str, str, str]  # (namespace or "*", apiGroup, resource, verb, name)


def _grants(manifests: list[dict[str, Any]], account: str) -> set[Grant]:
    """Everything the bindings in the chart allow a service account, rule by rule."""
    roles = {
        (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]): m
        for m in manifests
        if m["kind"] in ("Role", "ClusterRole")
    }
    grants: set[Grant] = set()
    for binding in manifests:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]}
        if ("ServiceAccount", NAMESPACE, account) not in subject:
            continue
        namespace = binding["metadata"].get("namespace", "*")
        ref = binding["roleRef"]
        role = roles[
            (ref["kind"], None if ref["kind"] == "ClusterRole" else namespace, ref["name"])
        ]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or ["*"]:
                            grants.add((namespace, group, resource, verb, name))
    return grants


def _allows(grants: set[Grant], namespace: str, group: str, resource: str, verb: str) -> bool:
    return any(
        g[0] in ("*", namespace) and g[1:4] == (group, resource, verb) and g[4] == "*"
        for g in grants
    )


CONTROLLER_SA, AGENT_SA = f"{RELEASE}-controller", f"{RELEASE}-agent"


def test_no_wildcards_in_any_role() -> None:
    for manifest in _render():
        for rule in manifest.get("rules", []) if manifest["kind"].endswith("Role") else []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{manifest['metadata']['name']}: wildcard {key}"


def test_controller_grants_are_least_privilege() -> None:
    grants = _grants(_render(), CONTROLLER_SA)
    anywhere = "some-namespace"
    for verb in ("get", "list", "watch"):
        assert _allows(grants, anywhere, "", "pods", verb)
        assert _allows(grants, "*", "", "nodes", verb)
    for verb in ("get", "list", "watch", "create", "patch"):
        assert _allows(grants, "*", c.GROUP, c.PLURAL, verb)
    assert not _allows(grants, "*", c.GROUP, c.PLURAL, "update"), "specs are merge-patched"
    assert _allows(grants, anywhere, "", "events", "create")
    assert {g[3] for g in grants if g[2] == "events"} == {"create"}
    assert not {g for g in grants if g[2] in ("secrets", "configmaps")}
    assert not {g for g in grants if g[2] == f"{c.PLURAL}/status"}, "status is the agent's"
    reads = ("get", "list", "watch")
    assert not {g for g in grants if g[2] in ("pods", "nodes") and g[3] not in reads}
    assert not _allows(grants, "*", c.GROUP, c.PLURAL, "delete")
    leases = {g for g in grants if g[2] == "leases"}
    assert leases, "leader election needs its Lease"
    assert {g[0] for g in leases} == {NAMESPACE}
    lease_name = CHART.values["controller"]["leaderElection"]["leaseName"]
    assert {g[4] for g in leases if g[3] != "create"} == {lease_name}


def test_agent_grants_are_least_privilege() -> None:
    grants = _grants(_render(), AGENT_SA)
    plugin_ns = CHART.values["agent"]["devicePlugin"]["namespace"]
    for verb in ("get", "list", "watch"):
        assert _allows(grants, "*", c.GROUP, c.PLURAL, verb)
    for verb in ("update", "patch"):
        assert _allows(grants, "*", c.GROUP, f"{c.PLURAL}/status", verb)
    for verb in ("create", "update", "patch", "delete"):
        assert not _allows(grants, "*", c.GROUP, c.PLURAL, verb), f"agent may {verb} spec"
    assert _allows(grants, plugin_ns, "", "pods", "delete")
    assert {g[0] for g in grants if g[2] == "pods"} == {plugin_ns}
    assert not _allows(grants, "default", "", "pods", "delete")
    assert _allows(grants, "*", "", "nodes", "get")
    assert not {g for g in grants if g[2] == "nodes" and g[3] != "get"}
    assert not {g for g in grants if g[2] in ("secrets", "configmaps")}


def test_agent_posts_events_only_in_the_default_namespace() -> None:
    events = {g for g in _grants(_render(), AGENT_SA) if g[2] == "events"}
    assert events == {("default", "", "events", "create", "*")}


def test_watch_namespaces_replace_cluster_wide_pod_reads() -> None:
    manifests = _render(controller={"watchNamespaces": ["jhub", "research"]})
    grants = _grants(manifests, CONTROLLER_SA)
    pods = {g[0] for g in grants if g[2] == "pods"}
    events = {g[0] for g in grants if g[2] == "events"}
    assert pods == events == {"jhub", "research"}
    assert _allows(grants, "*", "", "nodes", "list")
    args = _container(manifests, "Deployment", CONTROLLER_SA)["args"]
    assert "--watch-namespaces=jhub,research" in args
    assert not [
        a for a in _container(_render(), "Deployment", CONTROLLER_SA)["args"] if "watch" in a
    ]


def test_the_hub_service_gets_kernel_pods_and_secrets_in_the_listed_namespaces_only() -> None:
    account = {"name": "hub", "namespace": NAMESPACE}
    manifests = _render(hubKernels={"namespaces": ["jhub", "research"], "serviceAccount": account})
    grants = _grants(manifests, "hub")
    assert {(g[0], g[2], g[3]) for g in grants} == {
        (ns, resource, verb)
        for ns in ("jhub", "research")
        for resource, verbs in (
            ("pods", ("get", "list", "create", "delete")),
            ("secrets", ("create", "delete")),
        )
        for verb in verbs
    }, "no Secret reads, no patches, nothing cluster-wide"
    assert not _grants(_render(), "hub"), "off unless the admin lists namespaces"


def test_leader_election_off_drops_the_lease_role_and_flag() -> None:
    manifests = _render(controller={"leaderElection": {"enabled": False}})
    assert not {g for g in _grants(manifests, CONTROLLER_SA) if g[2] == "leases"}
    deployment = _one(manifests, "Deployment", CONTROLLER_SA)
    assert "--leader-elect" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


# --- Workloads -------------------------------------------------------------------------------


def _container(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (container,) = _one(manifests, kind, name)["spec"]["template"]["spec"]["containers"]
    return container


def test_controller_deployment() -> None:
    manifests = _render()
    deployment = _one(manifests, "Deployment", CONTROLLER_SA)
    pod = deployment["spec"]["template"]
    container = _container(manifests, "Deployment", CONTROLLER_SA)
    assert deployment["spec"]["replicas"] == 2
    assert pod["spec"]["serviceAccountName"] == CONTROLLER_SA
    assert container["args"][0] == "controller"
    assert "--leader-elect" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = container["ports"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(manifests, "Service", CONTROLLER_SA)
    assert service["spec"]["selector"].items() <= labels.items()


def test_agent_daemonset() -> None:
    manifests = _render()
    pod = _one(manifests, "DaemonSet", AGENT_SA)["spec"]["template"]["spec"]
    container = _container(manifests, "DaemonSet", AGENT_SA)
    assert pod["nodeSelector"] == {c.PARTITIONING_LABEL: c.PARTITIONING_DYNAMIC}
    assert pod["serviceAccountName"] == AGENT_SA
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert not pod.get("hostPID") and not pod.get("hostNetwork")
    assert "--device-plugin-refresh=pod" in container["args"]
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert "/var/lib/kubelet/pod-resources" in host_paths
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["image"] == _container(manifests, "Deployment", CONTROLLER_SA)["image"]
    socket = next(a for a in container["args"] if a.startswith("--pod-resources-socket="))
    mount = next(m for m in container["volumeMounts"] if m["name"] == "pod-resources")
    assert socket.split("=", 1)[1].startswith(mount["mountPath"] + "/")
    node_env = next(e for e in container["env"] if e["name"] == "NODE_NAME")
    assert node_env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_image_tag_defaults_to_app_version_and_can_be_set() -> None:
    app_version = CHART.metadata["appVersion"]
    assert _container(_render(), "DaemonSet", AGENT_SA)["image"] == f"jupyter-mig:{app_version}"
    custom = _render(image={"repository": "registry.example/jm", "tag": "1.2.3"})
    assert _container(custom, "Deployment", CONTROLLER_SA)["image"] == "registry.example/jm:1.2.3"


def test_metrics_annotations_follow_the_knob() -> None:
    for manifest in _render(metrics={"enabled": False}):
        if manifest["kind"] in ("Deployment", "DaemonSet"):
            annotations = manifest["spec"]["template"]["metadata"].get("annotations") or {}
            assert "prometheus.io/scrape" not in annotations


def _flags(args: list[str]) -> list[str]:
    """Container args with the downward-API variables filled in, as the kubelet would."""
    return [re.sub(r"\$\((\w+)\)", "value-of-" + r"\1", arg) for arg in args]


@pytest.mark.parametrize(("kind", "name"), [("Deployment", CONTROLLER_SA), ("DaemonSet", AGENT_SA)])
def test_container_args_parse_with_the_real_command_line(kind: str, name: str) -> None:
    args = _container(_render(), kind, name)["args"]
    if args[0] not in cli.SUBCOMMANDS:
        pytest.skip(f"`jupyter-mig {args[0]}` is not registered yet")
    parsed = cli.build_parser().parse_args(_flags(args))
    assert parsed.command == args[0]


# --- Admission policies ----------------------------------------------------------------------


def test_admission_policies_name_the_agent_and_are_bound() -> None:
    manifests = _render()
    policies = [m for m in manifests if m["kind"] == "ValidatingAdmissionPolicy"]
    bindings = {
        m["spec"]["policyName"]: m
        for m in manifests
        if m["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert len(policies) == 3
    user = f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
    agent_policies = [p for p in policies if "-agent-" in p["metadata"]["name"]]
    assert len(agent_policies) == 3
    for policy in policies:
        assert bindings[policy["metadata"]["name"]]["spec"]["validationActions"] == ["Deny"]
    for policy in agent_policies:
        assert bindings[policy["metadata"]["name"]]["spec"]["validationActions"] == ["Deny"]
        assert policy["spec"]["failurePolicy"] == "Fail"
        (condition,) = policy["spec"]["matchConditions"]
        assert f'"{user}"' in condition["expression"]
        assert c.NODE_NAME_EXTRA in policy["spec"]["variables"][0]["expression"]
    mignode_policy = next(
        p
        for p in policies
        if p["spec"]["matchConstraints"]["resourceRules"][0]["apiGroups"] == [c.GROUP]
    )
    assert set(mignode_policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"]) == {
        c.PLURAL,
        f"{c.PLURAL}/status",
    }


def test_the_interactive_annotation_is_allowed_only_in_the_listed_namespaces() -> None:
    name = f"{RELEASE}-interactive-namespaces"
    listed = _render(controller={"interactiveNamespaces": ["jhub", "staff"]})
    policy = _one(listed, "ValidatingAdmissionPolicy", name)
    (validation,) = policy["spec"]["validations"]
    assert validation["expression"] == 'request.namespace in ["jhub", "staff"]'
    assert c.INTERACTIVE_ANNOTATION in policy["spec"]["matchConditions"][0]["expression"]
    args = _container(listed, "Deployment", CONTROLLER_SA)["args"]
    assert "--interactive-namespaces=jhub,staff" in args
    assert not [m for m in _render() if m["metadata"]["name"] == name], "none listed: not refused"
    everywhere = _render(controller={"interactiveNamespaces": ["*"]})
    assert not [m for m in everywhere if m["metadata"]["name"] == name]


def test_network_policies_admit_only_the_listed_namespaces() -> None:
    manifests = _render(
        networkPolicy={"capacityNamespaces": ["jhub"], "metricsNamespaces": ["monitoring"]}
    )
    controller = _one(manifests, "NetworkPolicy", CONTROLLER_SA)["spec"]
    (rule,) = controller["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [p.get("namespaceSelector", {}).get("matchExpressions") for p in rule["from"]]
    assert peers == [
        None,  # the release namespace's own pods
        [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["jhub"]}],
        [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}],
    ]
    agent = _one(manifests, "NetworkPolicy", AGENT_SA)["spec"]
    assert [p["namespaceSelector"] for p in agent["ingress"][0]["from"]] == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}
            ]
        }
    ]
    labels = _one(manifests, "DaemonSet", AGENT_SA)["spec"]["template"]["metadata"]["labels"]
    assert agent["podSelector"]["matchLabels"].items() <= labels.items()
    closed = _one(_render(), "NetworkPolicy", AGENT_SA)["spec"]
    assert closed["ingress"] == [] and closed["policyTypes"] == ["Ingress"]
    assert not [
        m for m in _render(networkPolicy={"enabled": False}) if m["kind"] == "NetworkPolicy"
    ]


def test_capacity_detail_is_off_unless_the_admin_turns_it_on() -> None:
    assert "--capacity-detail" not in _container(_render(), "Deployment", CONTROLLER_SA)["args"]
    detailed = _render(controller={"capacityDetail": True})
    assert "--capacity-detail" in _container(detailed, "Deployment", CONTROLLER_SA)["args"]


def test_admission_policies_can_be_turned_off() -> None:
    kinds = {m["kind"] for m in _render(admissionPolicy={"enabled": False})}
    assert "ValidatingAdmissionPolicy" not in kinds
    assert "ValidatingAdmissionPolicyBinding" not in kinds


def test_namespaced_objects_land_in_the_release_namespace() -> None:
    plugin_ns = CHART.values["agent"]["devicePlugin"]["namespace"]
    for manifest in _render():
        namespace = manifest["metadata"].get("namespace")
        if (
            manifest["kind"] in ("Role", "RoleBinding")
            and "device-plugin" in manifest["metadata"]["name"]
        ):
            assert namespace == plugin_ns
        elif (
            manifest["kind"] in ("Role", "RoleBinding")
            and "-events" in manifest["metadata"]["name"]
        ):
            assert namespace == "default", "Events about cluster-scoped objects live there"
        elif manifest["kind"] in (
            "ServiceAccount",
            "Deployment",
            "DaemonSet",
            "Service",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
        ):
            assert namespace == NAMESPACE, manifest["metadata"]["name"]
        else:
            assert namespace is None, f"{manifest['kind']} is cluster-scoped"


# --- The renderer itself ---------------------------------------------------------------------


def _chart_with(tmp_path: Path, template: str, values: str = "a: {b: 1}\n") -> Chart:
    (tmp_path / "templates").mkdir(parents=True)
    (tmp_path / "Chart.yaml").write_text("name: t\nversion: 0.0.1\nappVersion: '1'\n")
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "templates" / "t.yaml").write_text(template)
    return Chart(tmp_path)


def test_renderer_trims_like_go_templates(tmp_path: Path) -> None:
    chart = _chart_with(
        tmp_path,
        "x: {{ .Values.a.b }}\n{{- if .Values.a.c }}\ny: 1\n{{- else }}\ny: 2\n{{- end }}\n",
    )
    assert chart.render() == [{"x": 1, "y": 2}]


def test_renderer_refuses_missing_values_and_unknown_functions(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="missing"):
        _chart_with(tmp_path / "a", "x: {{ .Values.a.typo }}\n").render()
    with pytest.raises(TemplateError, match="not a function"):
        _chart_with(tmp_path / "b", "x: {{ upper .Values.a.b }}\n").render()


def test_renderer_ranges_over_lists_with_the_top_as_dollar(tmp_path: Path) -> None:
    chart = _chart_with(
        tmp_path,
        "{{- range .Values.names }}\n---\nname: {{ . }}\nowner: {{ $.Values.owner }}\n"
        '{{- end }}\n---\nall: {{ join "," .Values.names }}\nlist: {{ toJson .Values.names }}\n'
        'star: {{ has "*" .Values.names }}\n',
        "names: [a, b]\nowner: me\n",
    )
    assert chart.render() == [
        {"name": "a", "owner": "me"},
        {"name": "b", "owner": "me"},
        {"all": "a,b", "list": ["a", "b"], "star": False},
    ]


HELM = shutil.which("helm")
OVERRIDES: dict[str, Any] = {
    "imagePullSecrets": [{"name": "regcred"}],
    "metrics": {"enabled": False},
    "controller": {"leaderElection": {"enabled": False}, "nodeSelector": {"a": "b"}},
    "agent": {"runtimeClassName": "", "tolerations": [], "devicePlugin": {"namespace": "dp"}},
    "admissionPolicy": {"enabled": False},
}


@pytest.mark.skipif(HELM is None, reason="helm is not installed")
@pytest.mark.parametrize("values", [{}, OVERRIDES], ids=["defaults", "overrides"])
def test_renderer_agrees_with_helm(tmp_path: Path, values: dict[str, Any]) -> None:
    """Where Helm is installed: it lints the chart and renders the same manifests."""
    assert HELM is not None
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    chart = str(REPO / "controller" / "chart")
    common = [chart, "--namespace", NAMESPACE, "-f", str(values_file)]
    subprocess.run([HELM, "lint", "--strict", *common], check=True, capture_output=True, timeout=60)
    rendered = subprocess.run(
        [HELM, "template", RELEASE, *common], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    by_helm = [d for d in yaml.safe_load_all(rendered) if d]

    def key(manifest: dict[str, Any]) -> tuple[str, str]:
        return manifest["kind"], manifest["metadata"]["name"]

    assert sorted(by_helm, key=key) == sorted(_render(**values), key=key)


# --- Image -----------------------------------------------------------------------------------


def _dockerfile() -> Iterator[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line, continuations joined."""
    text = (REPO / "controller" / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            yield instruction, arguments


def test_dockerfile_copies_what_exists_and_installs_no_jupyter() -> None:
    instructions = list(_dockerfile())
    for instruction, arguments in instructions:
        if instruction == "COPY" and not arguments.startswith("--from"):
            for source in shlex.split(arguments)[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    entrypoint = [json.loads(a) for i, a in instructions if i == "ENTRYPOINT"][-1]
    assert entrypoint == ["jupyter-mig"]
    assert any("[cluster,nvml]" in a for i, a in instructions if i == "RUN")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = project["dependencies"] + [
        dep for extra in ("cluster", "nvml") for dep in project["optional-dependencies"][extra]
    ]
    assert not [d for d in installed if re.match(r"(jupyter|notebook|ipy)", d, re.IGNORECASE)]


def test_signal_refresh_runs_the_agent_with_host_pid() -> None:
    manifests = _render(agent={"devicePlugin": {"refresh": "signal"}})
    pod = _one(manifests, "DaemonSet", AGENT_SA)["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert "--device-plugin-refresh=signal" in _container(manifests, "DaemonSet", AGENT_SA)["args"]
    assert not [m for m in manifests if "device-plugin" in m["metadata"]["name"]]

"""The e2e harness's pure parts (no cluster): flag overrides against the chart's real command
lines, and the layout and request readers the invariants rely on."""

from __future__ import annotations

from e2e_harness import (
    CHART,
    E2E_VALUES,
    Release,
    expand_env,
    layout_problems,
    mig_limits,
    with_flags,
)

from jupyter_mig.mig.models import MODELS

A100 = MODELS.get("A100-80GB")


def _release() -> Release:
    return Release("r", "ns", "dp", CHART.render(E2E_VALUES, "r", "ns"))


def test_every_flag_the_harness_replaces_is_in_the_charts_command_lines() -> None:
    release = _release()
    agent = release.container_args("DaemonSet")
    controller = release.container_args("Deployment")
    for flag in ("--nvml", "--pod-resources-socket", "--health-port", "--node", "--resync"):
        assert any(a.startswith(flag + "=") for a in agent), flag
    for flag in ("--listen", "--identity", "--lease-namespace", "--lease-name", "--batch-idle"):
        assert any(a.startswith(flag + "=") for a in controller), flag
    assert "--resync=5" in agent  # E2E_VALUES reached the rendered arguments
    assert release.lease_name() == CHART.values["controller"]["leaderElection"]["leaseName"]


def test_with_flags_replaces_and_adds_and_expand_env_fills_references() -> None:
    args = ["agent", "--node=$(NODE_NAME)", "--nvml=real", "--verbose"]
    replaced = with_flags(expand_env(args, {"NODE_NAME": "n1"}), {"--nvml": "sim:/d", "--x": "1"})
    assert replaced == ["agent", "--node=n1", "--verbose", "--nvml=sim:/d", "--x=1"]


def test_layout_problems_judges_spec_and_status_with_the_reported_model() -> None:
    one_g = A100.profile("1g.10gb").nvml_id
    seven_g = A100.profile("7g.80gb").nvml_id
    ok = {"profileId": one_g, "start": 0}
    status = {"gpus": [{"index": 0, "model": A100.name, "instances": [ok]}]}
    fine = {"spec": {"gpus": [{"index": 0, "instances": [ok]}]}, "status": status}
    assert layout_problems(fine) == []
    overlap = [ok, {"profileId": seven_g, "start": 0}]
    bad = {"spec": {"gpus": [{"index": 0, "instances": overlap}]}, "status": status}
    [problem] = layout_problems(bad)
    assert problem.startswith("spec GPU 0: ")


def test_mig_limits_sums_containers_and_ignores_other_resources() -> None:
    container = {"resources": {"limits": {"nvidia.com/mig-1g.10gb": "2", "cpu": "1"}}}
    other = {"resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}
    pod = {"spec": {"containers": [container, other, {"name": "plain"}]}}
    assert mig_limits(pod) == {"1g.10gb": 3}

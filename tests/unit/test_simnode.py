"""The sim node's kubelet and device-plugin logic, without an API server."""

from __future__ import annotations

import ipaddress
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_for

from jupyter_mig.nvml import open_simulated
from jupyter_mig.nvml.simgpu import init_state, read_devices
from jupyter_mig.simnode.devices import node_capacity, read_device_table
from jupyter_mig.simnode.node import ALLOCATIONS_FILE, NodeConfig, reboot_state
from jupyter_mig.simnode.pods import (
    AdmissionError,
    ContainerRun,
    PodRecord,
    allocate,
    device_requests,
    pod_ip,
    pod_status,
    status_differs,
)
from jupyter_mig.simnode.processes import (
    Processes,
    command_line,
    container_env,
    expand,
)

MIG = "nvidia.com/mig-1g.10gb"


def make_pod(limits: dict[str, str], restart_policy: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": str(uuid.uuid4())},
        "spec": {
            "nodeName": "gpu-1",
            "restartPolicy": restart_policy,
            "containers": [
                {"name": "main", "image": "x", "resources": {"limits": limits}},
                {"name": "side", "image": "y"},
            ],
        },
        "status": {"phase": "Pending"},
    }


def test_device_requests_are_the_mig_limits() -> None:
    pod = make_pod({MIG: "2", "cpu": "1", "nvidia.com/mig-3g.40gb": "0"})
    assert device_requests(pod) == [("main", MIG, 2)]


def test_allocate_takes_free_advertised_devices() -> None:
    advertised = {MIG: ["MIG-a", "MIG-b", "MIG-c"]}
    present = {"MIG-a", "MIG-b", "MIG-c"}
    chosen = allocate([("main", MIG, 2)], advertised, present, taken={"MIG-a"})
    assert chosen == [("main", MIG, "MIG-b"), ("main", MIG, "MIG-c")]
    with pytest.raises(AdmissionError, match="Requested: 2, Available: 1"):
        allocate([("main", MIG, 2)], advertised, present, taken={"MIG-a", "MIG-b"})
    with pytest.raises(AdmissionError, match="MIG-b no longer exists"):
        allocate([("main", MIG, 1)], advertised, {"MIG-a"}, taken={"MIG-a"})


def test_pod_ips_are_private_loopback_addresses() -> None:
    uids = [str(uuid.uuid4()) for _ in range(200)]
    ips = [ipaddress.ip_address(pod_ip(uid)) for uid in uids]
    assert all(ip.is_loopback and not str(ip).startswith("127.0.") for ip in ips)
    assert pod_ip(uids[0]) == pod_ip(uids[0])
    assert len(set(ips)) > 190


def record_for(pod: dict[str, Any], **runs: ContainerRun) -> PodRecord:
    return PodRecord(
        uid=pod["metadata"]["uid"],
        namespace="ns",
        name="p",
        ip="127.9.9.9",
        started_at="2026-01-01T00:00:00Z",
        containers=dict(runs),
    )


def test_running_pod_status() -> None:
    pod = make_pod({})
    record = record_for(
        pod,
        main=ContainerRun("main", "2026-01-01T00:00:01Z", pid=10),
        side=ContainerRun("side", "2026-01-01T00:00:01Z"),
    )
    status = pod_status(pod, record)
    assert status["phase"] == "Running" and status["podIP"] == "127.9.9.9"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert [s["state"] for s in status["containerStatuses"]] == [
        {"running": {"startedAt": "2026-01-01T00:00:01Z"}}
    ] * 2
    assert status_differs(pod["status"], status)
    assert not status_differs(status, pod_status({**pod, "status": status}, record))


@pytest.mark.parametrize(
    ("policy", "codes", "phase"),
    [
        ("Never", (0, 0), "Succeeded"),
        ("Never", (0, 2), "Failed"),
        ("OnFailure", (0, 0), "Succeeded"),
        ("OnFailure", (1, 0), "Running"),
        ("Always", (0, 0), "Running"),
    ],
)
def test_exited_containers_and_restart_policy(
    policy: str, codes: tuple[int, int], phase: str
) -> None:
    pod = make_pod({}, restart_policy=policy)
    runs = {
        name: ContainerRun(name, "t0", pid=1, exit_code=code, finished_at="t1")
        for name, code in zip(("main", "side"), codes, strict=True)
    }
    status = pod_status(pod, record_for(pod, **runs))
    assert status["phase"] == phase
    ready = {c["type"]: c["status"] for c in status["conditions"]}["Ready"]
    assert ready == "False"
    if phase == "Running":
        waiting = [s for s in status["containerStatuses"] if "waiting" in s["state"]]
        assert waiting and all("terminated" in s["lastState"] for s in waiting)


def test_rejected_pod_fails_with_unexpected_admission_error() -> None:
    pod = make_pod({MIG: "1"})
    record = record_for(pod)
    record.admission_error = "Allocate failed"
    status = pod_status(pod, record)
    assert (status["phase"], status["reason"]) == ("Failed", "UnexpectedAdmissionError")


def test_records_round_trip_through_json() -> None:
    pod = make_pod({MIG: "1"})
    record = record_for(pod, main=ContainerRun("main", "t0", pid=5, proc_start=99, restarts=2))
    record.devices = [("main", MIG, "MIG-a")]
    assert PodRecord.from_json(record.to_json()) == record


def test_device_table_and_capacity_follow_nvml(tmp_path: Path) -> None:
    init_state(tmp_path, "A100-80GB", gpus=2)
    nvml = open_simulated(tmp_path)
    a = nvml.create_instance(0, 19, 0)
    b = nvml.create_instance(1, 19, 3)
    big = nvml.create_instance(1, 9, 4)
    table = read_device_table(tmp_path)
    assert table == {
        MIG: sorted([a.mig_uuid or "", b.mig_uuid or ""]),
        "nvidia.com/mig-3g.40gb": [big.mig_uuid],
    }
    nvml.destroy_instance(1, big.id)
    capacity = node_capacity(
        read_device_table(tmp_path),
        on_node={"cpu": "1", MIG: "2", "nvidia.com/mig-3g.40gb": "1"},
        base={"cpu": "8", "pods": "110"},
    )
    assert capacity == {"cpu": "8", "pods": "110", MIG: "2", "nvidia.com/mig-3g.40gb": "0"}


def test_node_labels_are_gpu_feature_discovery_labels(tmp_path: Path) -> None:
    config = NodeConfig(
        name="gpu-1",
        state_dir=tmp_path,
        model="H100-80GB",
        gpus=4,
        labels={"jupyter-mig.io/partitioning": "dynamic"},
    )
    labels = config.node_labels()
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["nvidia.com/mig.capable"] == "true"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["jupyter-mig.io/partitioning"] == "dynamic"


def test_container_env_and_command() -> None:
    pod = make_pod({MIG: "1"})
    spec = {
        "name": "main",
        "command": ["serve", "--ip=$(JUPYTER_MIG_POD_IP)", "$$(kept)"],
        "args": ["--name", "$(POD_NAME)", "$(UNDEFINED)"],
        "env": [
            {"name": "GREETING", "value": "hi $(HOSTNAME)"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
    }
    env = container_env(pod, spec, "127.5.6.7", ["MIG-a", "MIG-b"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "MIG-a,MIG-b"
    assert env["JUPYTER_MIG_POD_IP"] == "127.5.6.7"
    assert env["GREETING"] == "hi p"
    assert env["POD_NAME"] == "p"
    assert "SECRET" not in env
    assert command_line(spec, env) == [
        "serve",
        "--ip=127.5.6.7",
        "$(kept)",
        "--name",
        "p",
        "$(UNDEFINED)",
    ]
    assert command_line({"name": "x", "args": ["a"]}, env) == []
    assert expand("$$$(A)", {"A": "1"}) == "$1"
    assert container_env(pod, {"name": "side"}, "127.1.1.1", [])["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_processes_report_exit_codes(tmp_path: Path) -> None:
    processes = Processes()
    env = {"PATH": "/usr/bin:/bin"}
    done = tmp_path / "done.exit"
    pid, start = processes.start(
        [sys.executable, "-c", "import sys; sys.exit(3)"], env, tmp_path, tmp_path / "a.log", done
    )
    wait_for("the process to end", lambda: not processes.alive(pid, start), 30.0, 0.05)
    assert processes.exit_code(pid, done) == 3
    stopped = tmp_path / "stopped.exit"
    pid, start = processes.start(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env,
        tmp_path,
        tmp_path / "b.log",
        stopped,
    )
    try:
        assert processes.alive(pid, start)
        assert not Processes().alive(pid, (start or 0) + 1)  # a reused pid is not ours
        assert Processes().alive(pid, start)  # recognised by another sim node process
        processes.terminate(pid, start)
        wait_for("the process to end", lambda: not processes.alive(pid, start), 30.0, 0.05)
    finally:
        processes.kill(pid, start)
    assert processes.exit_code(pid, stopped) == 143
    assert Processes().exit_code(pid, tmp_path / "never.exit") == 137


def test_reboot_kills_containers_and_forgets_everything(tmp_path: Path) -> None:
    init_state(tmp_path, "A30-24GB", gpus=1)
    with open_simulated(tmp_path) as nvml:
        made = nvml.create_instance(0, 14, 0)
    processes = Processes()
    pid, start = processes.start(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        {"PATH": "/usr/bin:/bin"},
        tmp_path,
        tmp_path / "c.log",
        tmp_path / "c.exit",
    )
    try:
        record = PodRecord("u", "ns", "p", "127.1.2.3", "t0")
        record.devices = [("main", "nvidia.com/mig-1g.6gb", made.mig_uuid or "")]
        record.containers["main"] = ContainerRun("main", "t0", pid=pid, proc_start=start)
        (tmp_path / ALLOCATIONS_FILE).write_text(
            '{"pods": {"u": ' + __import__("json").dumps(record.to_json()) + "}}"
        )
        reboot_state(tmp_path)
        wait_for("the process to end", lambda: not processes.alive(pid, start), 30.0, 0.05)
    finally:
        processes.kill(pid, start)
    assert not (tmp_path / ALLOCATIONS_FILE).exists()
    gpus, busy = read_devices(tmp_path)
    assert gpus[0]["instances"] == [] and busy == set()

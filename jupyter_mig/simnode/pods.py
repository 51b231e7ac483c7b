"""The sim node's kubelet bookkeeping, free of I/O: device admission, pod addresses, the
allocation records that survive a restart, and the pod status a kubelet would report.

Pods are plain dicts as the API server sends them (``raw_object`` of a watch event).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_mig.api import constants as c

#: The address every sim node reports as its InternalIP and as the pods' hostIP.
NODE_IP = "127.0.0.1"


class AdmissionError(Exception):
    """The pod cannot get its devices: the kubelet fails it with UnexpectedAdmissionError."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def pod_ip(uid: str) -> str:
    """A loopback address of the pod's own, stable for its uid: 127.1-254.0-255.1-254.

    127.0.x.x is left to the node's own services (the API server listens on 127.0.0.1).
    """
    digest = hashlib.sha256(uid.encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def device_requests(pod: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(container, resource, count)`` for every MIG resource a container limits.

    Extended resources cannot be overcommitted, so limits and requests agree; a request alone
    (without a limit) is rejected by the API server, hence limits first.
    """
    wanted = []
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources") or {}
        amounts = resources.get("limits") or resources.get("requests") or {}
        for resource, amount in sorted(amounts.items()):
            if resource.startswith(c.MIG_RESOURCE_PREFIX) and int(amount) > 0:
                wanted.append((container["name"], resource, int(amount)))
    return wanted


def allocate(
    requests: Iterable[tuple[str, str, int]],
    advertised: Mapping[str, list[str]],
    present: set[str],
    taken: set[str],
) -> list[tuple[str, str, str]]:
    """Pick specific devices: ``(container, resource, MIG UUID)`` per requested device.

    Candidates are the devices the plugin advertised, not ``taken`` by another pod; a candidate
    that no longer exists in NVML (destroyed since the last refresh) makes admission fail,
    like a real kubelet whose device plugin cannot allocate a vanished device.
    """
    chosen: list[tuple[str, str, str]] = []
    used = set(taken)
    for container, resource, count in requests:
        free = [d for d in advertised.get(resource, []) if d not in used]
        if len(free) < count:
            raise AdmissionError(
                f"Allocate failed due to requested number of devices unavailable for "
                f"{resource}. Requested: {count}, Available: {len(free)}, which is unexpected"
            )
        picked = free[:count]
        vanished = [d for d in picked if d not in present]
        if vanished:
            raise AdmissionError(
                f"Allocate failed for {resource}: device {vanished[0]} no longer exists, "
                "which is unexpected"
            )
        used.update(picked)
        chosen.extend((container, resource, device) for device in picked)
    return chosen


@dataclass
class ContainerRun:
    """One container: a local process (``pid``) or, without one, a container that just runs."""

    name: str
    started_at: str
    pid: int | None = None
    proc_start: int | None = None  # /proc/PID/stat start time: recognises the pid on restart
    restarts: int = 0
    exit_code: int | None = None
    finished_at: str | None = None

    @property
    def running(self) -> bool:
        return self.exit_code is None


@dataclass
class PodRecord:
    """What the sim kubelet knows about a pod it admitted; stored in DIR/allocations.json."""

    uid: str
    namespace: str
    name: str
    ip: str
    started_at: str
    devices: list[tuple[str, str, str]] = field(default_factory=list)  # container, resource, id
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    admission_error: str | None = None
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> from Allocate

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["devices"] = [list(d) for d in self.devices]
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PodRecord:
        return PodRecord(
            uid=data["uid"],
            namespace=data["namespace"],
            name=data["name"],
            ip=data["ip"],
            started_at=data["started_at"],
            devices=[(d[0], d[1], d[2]) for d in data.get("devices", [])],
            containers={
                name: ContainerRun(**run) for name, run in data.get("containers", {}).items()
            },
            admission_error=data.get("admission_error"),
            envs={name: dict(env) for name, env in data.get("envs", {}).items()},
        )


def _condition(kind: str, status: bool, since: Mapping[str, Any], reason: str = "") -> Any:
    """A pod condition; keeps the old lastTransitionTime while the status stays the same."""
    value = "True" if status else "False"
    old = since.get(kind) or {}
    condition = {
        "type": kind,
        "status": value,
        "lastProbeTime": None,
        "lastTransitionTime": old.get("lastTransitionTime")
        if old.get("status") == value
        else now(),
    }
    if reason:
        condition["reason"] = reason
    return condition


def _container_status(
    pod: Mapping[str, Any], spec: Mapping[str, Any], record: PodRecord
) -> dict[str, Any]:
    run = record.containers.get(spec["name"])
    status: dict[str, Any] = {
        "name": spec["name"],
        "image": spec.get("image", ""),
        "imageID": "",
        "containerID": f"sim://{record.uid}/{spec['name']}",
        "restartCount": run.restarts if run else 0,
        "ready": bool(run and run.running),
        "started": bool(run and run.running),
    }
    if run is None:
        status["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif run.running:
        status["state"] = {"running": {"startedAt": run.started_at}}
    else:
        terminated = {
            "terminated": {
                "exitCode": run.exit_code,
                "reason": "Completed" if run.exit_code == 0 else "Error",
                "startedAt": run.started_at,
                "finishedAt": run.finished_at,
                "containerID": status["containerID"],
            }
        }
        if restart_wanted(pod, run):
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
            status["lastState"] = terminated
        else:
            status["state"] = terminated
    return status


def pod_status(pod: Mapping[str, Any], record: PodRecord) -> dict[str, Any]:
    """The status a kubelet reports for ``pod`` given what it did (``record``)."""
    old = pod.get("status") or {}
    since = {cond["type"]: cond for cond in old.get("conditions") or []}
    base = {"hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}], "startTime": record.started_at}
    if record.admission_error is not None:
        return {
            **base,
            "phase": "Failed",
            "reason": "UnexpectedAdmissionError",
            "message": f"Pod was rejected: {record.admission_error}",
        }
    statuses = [_container_status(pod, spec, record) for spec in pod["spec"].get("containers", [])]
    all_ready = all(s["ready"] for s in statuses)
    if not all(s["state"].get("terminated") for s in statuses):
        phase = "Running"
    elif all(run.exit_code == 0 for run in record.containers.values()):
        phase = "Succeeded"
    else:
        phase = "Failed"
    done = "PodCompleted" if phase != "Running" else ""
    return {
        **base,
        "phase": phase,
        "podIP": record.ip,
        "podIPs": [{"ip": record.ip}],
        "conditions": [
            _condition("PodReadyToStartContainers", phase == "Running", since),
            _condition("Initialized", True, since),
            _condition("Ready", all_ready and phase == "Running", since, done),
            _condition("ContainersReady", all_ready and phase == "Running", since, done),
            _condition("PodScheduled", True, since),
        ],
        "containerStatuses": statuses,
    }


def status_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether reporting ``desired`` would change what the API server shows (avoids churn)."""

    def essence(status: Mapping[str, Any]) -> Any:
        return (
            status.get("phase"),
            status.get("reason"),
            status.get("podIP"),
            status.get("hostIP"),
            sorted((cond["type"], cond["status"]) for cond in status.get("conditions") or []),
            sorted(
                (
                    s["name"],
                    s.get("ready"),
                    s.get("restartCount"),
                    tuple(sorted((s.get("state") or {}).keys())),
                    ((s.get("state") or {}).get("terminated") or {}).get("exitCode"),
                )
                for s in status.get("containerStatuses") or []
            ),
        )

    return bool(essence(current) != essence(desired))


def restart_wanted(pod: Mapping[str, Any], run: ContainerRun) -> bool:
    """Whether the kubelet restarts an exited container under the pod's restartPolicy."""
    policy = pod["spec"].get("restartPolicy", "Always")
    return policy == "Always" or (policy == "OnFailure" and run.exit_code != 0)


def restart_delay(run: ContainerRun) -> float:
    """Crash-loop back-off: 10 s doubling per restart, at most 5 minutes (as the kubelet)."""
    return float(min(10 * 2**run.restarts, 300))

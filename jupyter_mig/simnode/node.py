"""One simulated GPU node against a real API server: the kubelet's pod work and the
pod-resources API here; registration and heartbeats in :mod:`.registration`, the device plugin
in :mod:`.deviceplugin`.

Two threads per node.  The *watch* thread lists and watches the pods bound to the node and
reconciles each (admit, report status, stop and delete).  The *tick* thread, twice a second,
renews the heartbeat, answers device-plugin refresh requests and notices container exits.
Both are level-triggered: on every relist the node compares what the API server says with
``DIR/allocations.json`` and the process table, so a sim node killed and restarted resumes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jupyter_mig.api import constants as c
from jupyter_mig.deviceplugin.kubelet import DevicePluginError
from jupyter_mig.kube.client import (
    STRATEGIC_MERGE_PATCH,
    Kube,
    KubeError,
    new_api_client,
)
from jupyter_mig.kube.watch import ListWatch
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import simgpu
from jupyter_mig.podresources.client import DeviceAssignment
from jupyter_mig.simnode.deviceplugin import DeviceAdvertiser
from jupyter_mig.simnode.devices import read_device_table
from jupyter_mig.simnode.pods import (
    AdmissionError,
    ContainerRun,
    PodRecord,
    allocate,
    device_requests,
    now,
    pod_ip,
    pod_status,
    restart_delay,
    restart_wanted,
    status_differs,
)
from jupyter_mig.simnode.processes import Processes, command_line, container_env
from jupyter_mig.simnode.registration import NodeRegistration

log = logging.getLogger(__name__)

ALLOCATIONS_FILE = "allocations.json"
DIR_LOCK_FILE = "sim-node.lock"
SOCKET_FILE = "pod-resources.sock"
PODS_DIR = "pods"
#: Longest a pod's processes get between SIGTERM and SIGKILL (keeps deletions quick).
MAX_GRACE_SECONDS = 10.0
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass
class NodeConfig:
    """Everything that describes one simulated node."""

    name: str
    state_dir: Path
    model: str
    gpus: int
    labels: dict[str, str] = field(default_factory=dict)
    refresh_delay: float = 2.0
    heartbeat_interval: float = 10.0
    resync_interval: float = 300.0
    watch_timeout: int = 60
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    nvml_latency: dict[str, float] = field(default_factory=dict)
    device_plugin: str = "builtin"  # or "nvidia": NVIDIA's plugin, this node its kubelet side

    def node_labels(self) -> dict[str, str]:
        """GPU feature discovery's labels for the model, plus the user's ``--label``s."""
        model = MODELS.get(self.model)
        return {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            c.GPU_PRODUCT_LABEL: model.products[0] if model.products else model.name,
            "nvidia.com/gpu.count": str(self.gpus),
            "nvidia.com/gpu.memory": str(model.full_profile.memory_mib),
            "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.strategy": "mixed",
            **self.labels,
        }

    def base_capacity(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}


def _load_records(path: Path) -> dict[str, PodRecord]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {uid: PodRecord.from_json(raw) for uid, raw in data.get("pods", {}).items()}


def reboot_state(state_dir: str | Path) -> None:
    """Simulate a node reboot in DIR: container processes die, MIG instances vanish, the
    kubelet forgets its device assignments.  Pods stay in the API server, as after a reboot."""
    root = Path(state_dir)
    processes = Processes()
    for record in _load_records(root / ALLOCATIONS_FILE).values():
        for run in record.containers.values():
            if run.pid is not None:
                processes.kill(run.pid, run.proc_start)
    with contextlib.suppress(FileNotFoundError):
        (root / ALLOCATIONS_FILE).unlink()
    if (root / simgpu.STATE_FILE).exists():
        simgpu.reboot(root)


class SimNode:
    """A simulated node; :meth:`start` brings it up, :meth:`stop` ends its threads."""

    def __init__(self, config: NodeConfig, kubeconfig: str) -> None:
        self.config = config
        self.dir = config.state_dir
        self._api = new_api_client(kubeconfig)
        self._kube = Kube(self._api, field_manager=None)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._processes = Processes()
        self._registration = NodeRegistration(self._kube, config)
        self._devices = DeviceAdvertiser(
            self._kube, config, self._registration, self._processes, self._lock
        )
        self._records: dict[str, PodRecord] = {}
        self._stop_deadlines: dict[str, float] = {}  # uid -> SIGKILL time of a stopping pod
        self._pods: dict[str, dict[str, Any]] = {}  # uid -> last seen pod
        self._dir_lock: IO[str] | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        from jupyter_mig.podresources.server import serve

        self.dir.mkdir(parents=True, exist_ok=True)
        self._hold_dir_lock()
        simgpu.init_state(self.dir, self.config.model, self.config.gpus, self.config.nvml_latency)
        (self.dir / PODS_DIR).mkdir(exist_ok=True)
        self._records = _load_records(self.dir / ALLOCATIONS_FILE)
        self._mark_busy()
        self._server = serve(self.dir / SOCKET_FILE, self._assignments, self._devices.allocatable)
        self._devices.start()
        for target, name in ((self._tick_loop, "tick"), (self._watch_loop, "watch")):
            thread = threading.Thread(target=target, name=f"{self.config.name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("%s: started (%d x %s)", self.config.name, self.config.gpus, self.config.model)

    def stop(self, timeout: float = 5.0) -> None:
        """End the threads and the socket; container processes keep running (as a kubelet's)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._server is not None:
            self._server.stop(grace=None)
        self._devices.stop(timeout)
        self._api.close()
        if self._dir_lock is not None:
            self._dir_lock.close()  # releases the flock: a successor may start

    def _hold_dir_lock(self, timeout: float = 30.0) -> None:
        """One sim node per DIR: wait (bounded) for a predecessor that is still stopping."""
        lock = open(self.dir / DIR_LOCK_FILE, "a+")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise ValueError(
                        f"another sim node still runs on {self.dir} after {timeout:.0f} s; "
                        "stop it first"
                    ) from None
                time.sleep(0.2)
        self._dir_lock = lock

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the node is stopping."""
        return self._stopping.wait(seconds)

    # -- pod-resources sources ---------------------------------------------------------------

    def _assignments(self) -> list[DeviceAssignment]:
        with self._lock:
            return [
                DeviceAssignment(record.namespace, record.name, container, resource, device)
                for record in self._records.values()
                for container, resource, device in record.devices
            ]

    # -- persistence -------------------------------------------------------------------------

    def _save(self) -> None:
        data = {"pods": {uid: record.to_json() for uid, record in self._records.items()}}
        simgpu.write_atomic(self.dir / ALLOCATIONS_FILE, json.dumps(data, indent=1, sort_keys=True))

    def _mark_busy(self) -> None:
        """The devices pods hold have processes on them: NVML refuses to destroy them."""
        simgpu.set_busy(self.dir, (d for r in self._records.values() for _c, _r, d in r.devices))

    # -- the tick thread ---------------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._wait(0.5):
            for step in (self._registration.tick, self._devices.tick, self._tick_processes):
                try:
                    step()
                except Exception as err:  # an unreachable API server must not end the node
                    log.warning("%s: %s failed: %s", self.config.name, step.__name__, err)

    def _tick_processes(self) -> None:
        """Notice exits, restart per restartPolicy, finish stopping pods."""
        with self._lock:
            changed: set[str] = set()
            for uid, record in list(self._records.items()):
                for run in record.containers.values():
                    if (
                        run.running
                        and run.pid is not None
                        and not self._processes.alive(run.pid, run.proc_start)
                    ):
                        exit_file = self._exit_file(record, run.name)
                        run.exit_code = self._processes.exit_code(run.pid, exit_file)
                        run.finished_at = now()
                        changed.add(uid)
                        log.info(
                            "%s: %s container %s exited with %d",
                            self.config.name,
                            record.key,
                            run.name,
                            run.exit_code,
                        )
                if uid in self._stop_deadlines:
                    self._continue_stopping(record)
                    continue
                pod = self._pods.get(uid)
                if pod is not None and self._restart_exited(pod, record):
                    changed.add(uid)
            if changed:
                self._save()
            for uid in changed:
                pod = self._pods.get(uid)
                if pod is not None and uid in self._records:
                    self._reconcile(pod)

    def _restart_exited(self, pod: Mapping[str, Any], record: PodRecord) -> bool:
        restarted = False
        specs = {spec["name"]: spec for spec in pod["spec"].get("containers", [])}
        for run in record.containers.values():
            if run.running or run.name not in specs or not restart_wanted(pod, run):
                continue
            finished = dt.datetime.strptime(run.finished_at or now(), "%Y-%m-%dT%H:%M:%SZ")
            waited = dt.datetime.now(dt.UTC).replace(tzinfo=None) - finished
            if waited.total_seconds() < restart_delay(run):
                continue
            fresh = self._start_container(pod, specs[run.name], record)
            fresh.restarts = run.restarts + 1
            record.containers[run.name] = fresh
            restarted = True
        return restarted

    # -- the watch thread --------------------------------------------------------------------

    def _watch_loop(self) -> None:
        # Admit pods only once the device plugin has advertised: a kubelet whose plugin has not
        # registered yet fails GPU pods with UnexpectedAdmissionError, which helps nobody here.
        while not self._devices.read.wait(0.5):
            if self._stopping.is_set():
                return
        ListWatch(
            self._kube,
            "/api/v1/pods",
            query={"fieldSelector": f"spec.nodeName={self.config.name}"},
            on_list=self._relist,
            on_event=self._handle,
            stop=self._stopping,
            resync=self.config.resync_interval,
            watch_seconds=(self.config.watch_timeout, self.config.watch_timeout),
            max_backoff=10.0,
            name=f"{self.config.name}: pods",
        ).run()

    def _relist(self, pods: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pods = {pod["metadata"]["uid"]: pod for pod in pods}
            for pod in pods:
                self._reconcile(pod)
            for uid in list(self._records):
                if uid not in self._pods:
                    self._begin_stopping(uid, grace=0.0)

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
                self._begin_stopping(uid, grace=0.0)
                return
            self._pods[uid] = pod
            self._reconcile(pod)

    # -- the kubelet's pod work --------------------------------------------------------------

    def _reconcile(self, pod: dict[str, Any]) -> None:
        """Bring one pod bound to this node to where the kubelet would have it."""
        meta = pod["metadata"]
        uid = meta["uid"]
        record = self._records.get(uid)
        if meta.get("deletionTimestamp"):
            if record is None:
                self._delete_pod(pod)
            elif uid not in self._stop_deadlines:
                self._begin_stopping(uid, grace=_grace_seconds(pod))
            return
        if record is None:
            if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
                return  # finished before this node knew it (e.g. before a reboot)
            record = self._admit(pod)
        desired = pod_status(pod, record)
        if desired["phase"] in TERMINAL_PHASES and record.devices:
            record.devices = []  # a finished pod's devices go back to the pool
            self._save()
            self._mark_busy()
        if status_differs(pod.get("status") or {}, desired):
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
            self._kube.patch(path, {"status": desired}, STRATEGIC_MERGE_PATCH)

    def _admit(self, pod: Mapping[str, Any]) -> PodRecord:
        meta = pod["metadata"]
        record = PodRecord(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            ip=pod_ip(meta["uid"]),
            started_at=now(),
        )
        present = {d for ids in read_device_table(self.dir).values() for d in ids}
        taken = {d for r in self._records.values() for _c, _r, d in r.devices}
        try:
            record.devices = allocate(device_requests(pod), self._devices.table, present, taken)
            record.envs = self._devices.container_envs(record.devices)
        except (AdmissionError, DevicePluginError) as err:
            record.admission_error = str(err)
            log.warning("%s: %s rejected: %s", self.config.name, record.key, err)
        self._records[record.uid] = record
        self._save()
        self._mark_busy()
        if record.admission_error is None:
            for spec in pod["spec"].get("containers", []):
                record.containers[spec["name"]] = self._start_container(pod, spec, record)
            self._save()
            log.info(
                "%s: running %s on %s with %s",
                self.config.name,
                record.key,
                record.ip,
                [d for _c, _r, d in record.devices] or "no MIG device",
            )
        return record

    def _pod_dir(self, record: PodRecord) -> Path:
        return self.dir / PODS_DIR / record.uid

    def _exit_file(self, record: PodRecord, container: str) -> Path:
        return self._pod_dir(record) / f"{container}.exit"

    def _start_container(
        self, pod: Mapping[str, Any], spec: Mapping[str, Any], record: PodRecord
    ) -> ContainerRun:
        """A local process when the pod asks for sim-exec and has a command; else a container
        that simply runs until the pod is deleted."""
        run = ContainerRun(name=spec["name"], started_at=now())
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get(c.SIM_EXEC_ANNOTATION) != "true":
            return run
        devices = [d for name, _r, d in record.devices if name == spec["name"]]
        env = container_env(pod, spec, record.ip, devices) | record.envs.get(spec["name"], {})
        argv = command_line(spec, env)
        if not argv:
            log.warning(
                "%s: %s container %s has no command to run; it only pretends to run",
                self.config.name,
                record.key,
                spec["name"],
            )
            return run
        pod_dir = self._pod_dir(record)
        pod_dir.mkdir(parents=True, exist_ok=True)
        working_dir = Path(spec.get("workingDir") or pod_dir)
        run.pid, run.proc_start = self._processes.start(
            argv,
            env,
            working_dir if working_dir.is_dir() else pod_dir,
            pod_dir / f"{spec['name']}.log",
            self._exit_file(record, spec["name"]),
        )
        return run

    def _begin_stopping(self, uid: str, grace: float) -> None:
        """SIGTERM the pod's processes; :meth:`_continue_stopping` finishes the job."""
        record = self._records.get(uid)
        if record is None or uid in self._stop_deadlines:
            return
        self._stop_deadlines[uid] = time.monotonic() + min(grace, MAX_GRACE_SECONDS)
        for run in record.containers.values():
            if run.running and run.pid is not None:
                self._processes.terminate(run.pid, run.proc_start)
        self._continue_stopping(record)

    def _continue_stopping(self, record: PodRecord) -> None:
        running = [
            run
            for run in record.containers.values()
            if run.running
            and run.pid is not None
            and self._processes.alive(run.pid, run.proc_start)
        ]
        if running and time.monotonic() < self._stop_deadlines[record.uid]:
            return
        for run in running:
            self._processes.kill(run.pid or 0, run.proc_start)
        del self._records[record.uid]
        del self._stop_deadlines[record.uid]
        self._save()
        self._mark_busy()
        shutil.rmtree(self._pod_dir(record), ignore_errors=True)
        pod = self._pods.get(record.uid)
        if pod is not None:
            self._delete_pod(pod)
        log.info("%s: stopped %s and released its devices", self.config.name, record.key)

    def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's last word on a terminating pod: delete it for good."""
        meta = pod["metadata"]
        try:
            self._kube.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except KubeError as err:
            if err.status not in (404, 409):
                raise


def _grace_seconds(pod: Mapping[str, Any]) -> float:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return float(grace)

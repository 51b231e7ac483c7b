"""Real GPU nodes of a devcluster: per node a real kubelet (``tests/node``), its own containerd
(Debian's 1.6: its CRI plugin, runc), a bridge + host-local CNI network, NVIDIA's device plugin on
our NVML library, and the node's simulated GPUs.

Settings this machine kind needs (cgroup v1, no systemd, root): the kubelet runs with
``failCgroupV1: false``, ``cgroupDriver: cgroupfs``, ``failSwapOn: false``,
``enforceNodeAllocatable: []``, its own ``cgroupRoot``, root, pod-logs and static-pod
directories and ports; its node IP is its bridge's address (it refuses a loopback one), so the
API server reaches it for logs and exec; containerd with
``restrict_oom_score_adj`` (no capability to lower ``oom_score_adj`` here), runc without systemd
cgroups, network namespaces under its own state directory and a pause image imported before the
kubelet starts (there is no registry).  Containerd (with its shims and containers) and the
kubelet share one mount namespace per node, since the kubelet's device-plugin directory is
fixed at ``/var/lib/kubelet/device-plugins``.

Where a node keeps what:

    DIR/nodes/NAME/node.json   what ``down`` needs (paths, cgroup, bridge, ports)
    DIR/nodes/NAME/gpu/        the simulated GPUs (``JUPYTER_MIG_NVML_SIM_DIR``)
    DIR/nodes/NAME/containerd/ containerd's root (images, snapshots) and config
    DIR/logs/NAME-*.log        kubelet, containerd and device-plugin logs (kept by ``down``)
    /run/jupyter-mig/KEY/NAME/ sockets, the kubelet's root and containerd's state: short paths,
                               since a unix socket path has at most 107 bytes

``stop`` deletes the node's pods through the API (so the kubelet tears their sandboxes and
networks down), stops the processes, then removes whatever is left: shims and container
processes (by the node's cgroups), mounts under the node's directories (the node's mount
namespace goes with its last process), the bridge, the cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.devcluster.binaries import build_node
from jupyter_mig.devcluster.cluster import DevCluster, api_get
from jupyter_mig.devcluster.common import NODE_BIN, Log, log_tail
from jupyter_mig.devcluster.host import (
    CGROUP_FS,
    cgroup_pids,
    delete_link,
    make_bridge,
    make_cgroup,
    remove_cgroup,
    unmount_all,
)
from jupyter_mig.devcluster.images import PAUSE_IMAGE, node_images
from jupyter_mig.devcluster.processes import alive, free_ports, proc_cmdline, stop_pids
from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import simgpu

RUN_ROOT = Path("/run/jupyter-mig")
#: Containerd 1.6 puts its shims' sockets here whatever its state directory; removed when empty.
SHIM_SOCKETS = Path("/run/containerd/s")
CGROUP_PARENT = "jupyter-mig"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
NODE_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
#: Pod networks: node i of a cluster gets 10.N.i.0/24 on its own bridge (N from 200 to 249,
#: by the cluster's directory, so clusters on one machine rarely meet; a subnet in use is
#: refused), whose address 10.N.i.1 is also the node's IP (the kubelet refuses a loopback
#: one).  Traffic stays on this machine.
POD_NETWORKS = 50

# The node's mount namespace, where containerd, its shims and containers, and the kubelet run:
# the kubelet's device-plugin directory is fixed at /var/lib/kubelet/device-plugins, so each
# node binds its own there.  /var/lib gets a tmpfs only when the host has no /var/lib/kubelet,
# so nothing is created on the host.  Every mount made in it (volumes, network namespaces)
# goes away with its last process.
_NODE_NAMESPACE_SCRIPT = """set -eu
if [ ! -d /var/lib/kubelet ]; then mount -t tmpfs tmpfs /var/lib; fi
mkdir -p /var/lib/kubelet/device-plugins
mount --bind "$1" /var/lib/kubelet/device-plugins
shift
exec "$@"
"""


@dataclass
class GpuNode:
    """One real GPU node: what ``node.json`` records."""

    name: str
    index: int
    model: str
    gpus: int
    dir: Path
    run_dir: Path
    cgroup: str  # the kubelet's cgroupRoot, e.g. /jupyter-mig/ab12cd34-gpu-1
    bridge: str
    network: str  # the first three octets of its pod subnet, e.g. 10.213.1
    kubelet_port: int
    healthz_port: int
    pids: dict[str, int]

    @property
    def ip(self) -> str:
        return f"{self.network}.1"

    @property
    def subnet(self) -> str:
        return f"{self.network}.0/24"

    @property
    def gpu_state(self) -> Path:
        return self.dir / "gpu"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def pod_resources_socket(self) -> Path:
        return self.kubelet_root / "pod-resources" / "kubelet.sock"

    @property
    def device_plugin_dir(self) -> Path:
        return self.kubelet_root / "device-plugins"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dir"], data["run_dir"] = str(self.dir), str(self.run_dir)
        data["pod_resources_socket"] = str(self.pod_resources_socket)
        data["gpu_state"] = str(self.gpu_state)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuNode:
        fields = {k: data[k] for k in cls.__dataclass_fields__}
        fields["dir"], fields["run_dir"] = Path(data["dir"]), Path(data["run_dir"])
        return cls(**fields)


def _record(node: GpuNode) -> None:
    """``node.json``: what ``down`` and a later ``up`` read."""
    (node.dir / "node.json").write_text(json.dumps(node.to_json(), indent=2) + "\n")


def _key(cluster_dir: Path) -> str:
    return hashlib.sha256(str(cluster_dir).encode()).hexdigest()[:8]


def node_names(count: int) -> list[str]:
    return [f"gpu-{i}" for i in range(1, count + 1)]


def recorded_nodes(cluster_dir: Path) -> list[GpuNode]:
    found = []
    for path in sorted((cluster_dir / "nodes").glob("*/node.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append(GpuNode.from_json(json.loads(path.read_text())))
    return found


def node_labels(name: str, model: str, gpus: int) -> dict[str, str]:
    """GPU feature discovery's labels for the model, and the dynamic-partitioning opt-in."""
    gpu_model = MODELS.get(model)
    key, value = c.OPT_IN_SELECTOR.split("=", 1)
    return {
        c.GPU_PRODUCT_LABEL: gpu_model.products[0] if gpu_model.products else gpu_model.name,
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.memory": str(gpu_model.full_profile.memory_mib),
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
        key: value,
    }


# -- configuration files ---------------------------------------------------------------------


def containerd_config(node: GpuNode, cni_bin: str) -> str:
    return f"""version = 2
root = "{node.dir / "containerd" / "root"}"
state = "{node.run_dir / "containerd"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{node.containerd_socket}"

[ttrpc]
  address = "{node.run_dir / "containerd-ttrpc.sock"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{node.dir / "containerd" / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{node.run_dir / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{node.dir / "cni"}"
    max_conf_num = 1
"""


def cni_config(node: GpuNode) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": f"jupyter-mig-{node.bridge}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": node.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.subnet}]],
                        "dataDir": str(node.run_dir / "cni-ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(node: GpuNode, ca_file: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        "address": node.ip,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": node.healthz_port,
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "staticPodPath": str(node.dir / "manifests"),
        "podLogsDir": str(node.run_dir / "pod-logs"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # A loaded shared machine: evict only when the disk is nearly full.
        "evictionHard": {"nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "registerNode": True,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }
    return json.dumps(config, indent=2)


# -- start -----------------------------------------------------------------------------------


def _cni_bin() -> str:
    for directory in CNI_BIN_DIRS:
        if all(os.access(Path(directory) / p, os.X_OK) for p in ("bridge", "host-local")):
            return directory
    raise UserError(
        "the CNI plugins bridge and host-local are missing: install Debian's "
        "containernetworking-plugins (scripts/setup.sh does)"
    )


def check_prerequisites() -> None:
    """Root, cgroup v1 hierarchies, and the Debian packages the node stack runs."""
    if os.geteuid() != 0:
        raise UserError("GPU nodes need root (kubelet, containerd, network namespaces)")
    missing = [
        p for p in ("containerd", "ctr", "runc", "ip", "unshare", "nsenter") if not shutil.which(p)
    ]
    if missing:
        raise UserError(
            f"{', '.join(missing)} not found: install Debian's containerd, runc and iproute2 "
            "(scripts/setup.sh does)"
        )
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        raise UserError(f"no cgroup file system at {CGROUP_FS}")
    _cni_bin()


class _NodeStarter:
    def __init__(self, cluster: DevCluster, node: GpuNode, deadline: float, log: Log) -> None:
        self.cluster, self.node, self.deadline, self.log = cluster, node, deadline, log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, component: str) -> Path:
        return self.cluster.logs / f"{self.node.name}-{component}.log"

    def start(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        path = self.log_path(component)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            self.procs[component] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip
        self.node.pids[component] = self.procs[component].pid

    def wait(self, what: str, probe: Any) -> None:
        while True:
            for component, proc in self.procs.items():
                if proc.poll() is not None:
                    path = self.log_path(component)
                    raise UserError(
                        f"{self.node.name}: {component} exited with status {proc.returncode} "
                        f"while starting; its log is {path}; last lines:\n"
                        + log_tail(path, 12, pattern=r"^[EF]\d{4}|error|fatal|panic|level=error")
                    )
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                if probe():
                    return
            if time.monotonic() > self.deadline:
                raise UserError(
                    f"{self.node.name}: timed out waiting for {what}; logs: "
                    f"{self.cluster.logs}/{self.node.name}-*.log"
                )
            time.sleep(0.3)

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.node.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def _node_ready(cluster: DevCluster, name: str) -> bool:
    status, body = api_get(cluster, f"/api/v1/nodes/{name}", 3.0)
    if status != 200:
        return False
    conditions = (json.loads(body).get("status") or {}).get("conditions") or []
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)


#: NVIDIA's plugin has read NVML: it registered its resources, or (MIG on, no instance yet,
#: as on a fresh node) waits for a SIGHUP, which the agent sends after carving.
_PLUGIN_STARTED = re.compile(r"No devices found\. Waiting indefinitely|Registered device plugin")


def _plugin_started(log_path: Path, offset: int) -> bool:
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        return bool(_PLUGIN_STARTED.search(handle.read().decode(errors="replace")))


def start_node(
    cluster: DevCluster, name: str, index: int, model: str, gpus: int, log: Log,
    timeout: float = NODE_TIMEOUT_S,
) -> GpuNode:  # fmt: skip
    """Start one GPU node; return once its Node is Ready and NVIDIA's plugin has read NVML.
    On any failure, what was started is stopped and removed."""
    from jupyter_mig.deviceplugin import nvidia

    key = _key(cluster.dir)
    kubelet_port, healthz_port = free_ports(2)
    node = GpuNode(
        name=name, index=index, model=model, gpus=gpus, dir=cluster.dir / "nodes" / name,
        run_dir=RUN_ROOT / key / name, cgroup=f"/{CGROUP_PARENT}/{key}-{name}",
        bridge=f"jm{key[:6]}-{index}"[:15],
        network=f"10.{200 + int(key, 16) % POD_NETWORKS}.{index}", kubelet_port=kubelet_port,
        healthz_port=healthz_port, pids={},
    )  # fmt: skip
    for path in (node.dir / "containerd", node.dir / "cni", node.dir / "manifests", node.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    _record(node)  # from here on, ``down`` finds what to remove
    starter = _NodeStarter(cluster, node, time.monotonic() + timeout, log)
    try:
        simgpu.init_state(node.gpu_state, model, gpus)
        make_cgroup(node.cgroup)
        make_bridge(node.bridge, f"{node.ip}/24", node.subnet, node.name)
        node.device_plugin_dir.mkdir(parents=True, exist_ok=True)
        cni_bin = _cni_bin()
        (node.dir / "containerd" / "config.toml").write_text(containerd_config(node, cni_bin))
        (node.dir / "cni" / "10-bridge.conflist").write_text(cni_config(node))
        (node.dir / "kubelet.json").write_text(kubelet_config(node, cluster.ca_file))
        kubeconfig = cluster.kubeconfig_for_user(
            f"system:node:{name}", ["system:nodes"], path=node.dir / "kubelet.kubeconfig"
        )
        starter.start(
            "containerd",
            ["unshare", "-m", "--propagation", "private", "sh", "-c", _NODE_NAMESPACE_SCRIPT,
             "node-namespace", str(node.device_plugin_dir),
             "containerd", "--config", str(node.dir / "containerd" / "config.toml")],
        )  # fmt: skip
        starter.wait("containerd", lambda: starter.ctr("version", timeout=10).returncode == 0)
        for image in node_images():
            done = starter.ctr("images", "import", str(image.archive))
            if done.returncode != 0:
                raise UserError(f"{name}: importing {image.name} failed: {done.stderr.strip()}")
        labels = ",".join(f"{k}={v}" for k, v in node_labels(name, model, gpus).items())
        starter.start(
            "kubelet",
            [
                "nsenter", f"--mount=/proc/{node.pids['containerd']}/ns/mnt", "--",
                str(NODE_BIN / "kubelet"), f"--config={node.dir / 'kubelet.json'}",
                f"--kubeconfig={kubeconfig}", f"--root-dir={node.kubelet_root}",
                f"--cert-dir={node.dir / 'kubelet-pki'}", f"--hostname-override={name}",
                f"--node-ip={node.ip}", f"--node-labels={labels}", "--v=2",
            ],
        )  # fmt: skip
        starter.wait(f"Node {name} to be Ready", lambda: _node_ready(cluster, name))
        starter.wait(
            "the kubelet's device-plugin socket",
            lambda: (node.device_plugin_dir / "kubelet.sock").exists(),
        )
        plugin_log = starter.log_path("device-plugin")
        offset = plugin_log.stat().st_size if plugin_log.exists() else 0
        with open(plugin_log, "ab") as out:
            proc = nvidia.start(node.gpu_state, node.device_plugin_dir, out)
        starter.procs["device-plugin"] = proc
        node.pids["device-plugin"] = proc.pid
        starter.wait(
            f"NVIDIA's device plugin to read NVML on {name}",
            lambda: _plugin_started(plugin_log, offset),
        )
    except BaseException as err:
        _record(node)
        try:
            stop_node(cluster, node)
        except UserError as left:
            raise UserError(f"{err}\n{name}: and stopping it failed: {left}") from None
        raise
    _record(node)
    return node


def node_running(node: GpuNode) -> bool:
    processes = node_processes(node)
    return all(processes[part] for part in ("kubelet", "containerd", "device-plugin"))


def ensure_nodes(
    cluster: DevCluster, count: int, model: str, gpus: int, log: Log,
    timeout: float = NODE_TIMEOUT_S,
) -> list[GpuNode]:  # fmt: skip
    """Nodes gpu-1 .. gpu-COUNT running with ``gpus`` x ``model``: running ones are kept, the
    others (re)started; the kubelet is built first when needed."""
    if count <= 0:
        return []
    MODELS.get(model)  # an unknown model: one line before anything starts
    check_prerequisites()
    build_node(log=log)
    recorded = {node.name: node for node in recorded_nodes(cluster.dir)}
    nodes = []
    for index, name in enumerate(node_names(count), start=1):
        node = recorded.get(name)
        if node is not None and (node.model, node.gpus) == (model, gpus) and node_running(node):
            nodes.append(node)
            continue
        if node is not None:
            stop_node(cluster, node)
        log(f"starting GPU node {name} ({gpus} x {model})")
        started = time.monotonic()
        nodes.append(start_node(cluster, name, index, model, gpus, log, timeout))
        log(f"GPU node {name} ready in {time.monotonic() - started:.1f}s")
    return nodes


# -- stop ------------------------------------------------------------------------------------


def crash_and_restart(cluster: DevCluster, node: GpuNode, part: str) -> int:
    """SIGKILL the node's ``kubelet`` or ``containerd`` (a crash) and start it again with the
    same command line in the node's mount namespace, which its other processes keep; return
    the new pid."""
    processes = node_processes(node)
    [pid] = processes[part]
    argv = proc_cmdline(pid)
    keeper = next(p for other in ("kubelet", "containerd", "shims") if other != part
                  for p in processes[other])  # fmt: skip
    namespace = os.readlink(f"/proc/{keeper}/ns/mnt")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive(pid):
        if time.monotonic() > deadline:
            raise UserError(f"{node.name}: {part} (pid {pid}) did not die after SIGKILL")
        time.sleep(0.05)
    with open(cluster.logs / f"{node.name}-{part}.log", "ab") as out:
        out.write(b"$ (restarted after SIGKILL)\n")
        out.flush()
        proc = subprocess.Popen(
            ["nsenter", f"--mount=/proc/{keeper}/ns/mnt", "--", *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    if os.readlink(f"/proc/{keeper}/ns/mnt") != namespace:
        raise UserError(f"{node.name}: the node's mount namespace changed while restarting")
    node.pids[part] = proc.pid
    _record(node)
    return proc.pid


def _delete_node_pods(cluster: DevCluster | None, name: str) -> None:
    """Force-delete the pods bound to the node: its kubelet then stops each sandbox, which
    tears down its network and unmounts its volumes."""
    if cluster is None or not cluster.readyz():
        return
    with cluster.api_client() as api:
        from kubernetes import client

        core = client.CoreV1Api(api)
        with contextlib.suppress(client.ApiException):
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items
            for pod in pods:
                meta = pod.metadata
                if meta is None or not meta.name or not meta.namespace:
                    continue
                with contextlib.suppress(client.ApiException):
                    core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)


def _tasks(node: GpuNode) -> list[str]:
    done = subprocess.run(
        ["ctr", "--address", str(node.containerd_socket), "--namespace", "k8s.io", "tasks", "ls",
         "-q"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout.split() if done.returncode == 0 else []


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def node_processes(node: GpuNode) -> dict[str, list[int]]:
    """Live processes of the node by part, found by what they run for this node: the kubelet
    and containerd by their directories on the command line, the shims by containerd's
    socket, the device plugin by its GPU state in its environment, the containers by the
    node's cgroups."""
    found: dict[str, list[int]] = {"kubelet": [], "device-plugin": [], "containerd": [],
                                   "shims": [], "containers": []}  # fmt: skip
    marks = {"kubelet": str(node.kubelet_root), "containerd": str(node.dir / "containerd")}
    socket = str(node.containerd_socket)
    plugin_env = f"{simgpu.ENV_DIR}={node.gpu_state.resolve()}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = proc_cmdline(pid)
        if not argv or not alive(pid):
            continue
        joined = " ".join(argv)
        program = os.path.basename(argv[0])
        if program == "containerd-shim-runc-v2" and socket in joined:
            found["shims"].append(pid)
        elif program in ("nvidia-device-plugin", "unshare", "sh") and plugin_env in _environ(pid):
            found["device-plugin"].append(pid)
        elif program in ("kubelet", "containerd", "unshare", "nsenter", "sh"):
            for part, mark in marks.items():
                if mark in joined:
                    found[part].append(pid)
    ours = {pid for pids in found.values() for pid in pids}
    found["containers"] = sorted(p for p in cgroup_pids(node.cgroup) if alive(p) and p not in ours)
    return found


def stop_node(cluster: DevCluster | None, node: GpuNode, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the node and remove everything it made on the machine; raise if anything is left.
    Without a running ``cluster`` (a stale directory) the kubelet cannot tear pods down; what
    is left is removed by force."""
    with contextlib.suppress(Exception):
        _delete_node_pods(cluster, node.name)
        deadline = time.monotonic() + timeout
        while node_processes(node)["kubelet"] and _tasks(node) and time.monotonic() < deadline:
            time.sleep(0.5)
    for part in ("device-plugin", "kubelet"):
        stop_pids(node_processes(node)[part], 15.0)
    # Whatever the kubelet left running: kill the containers, then the shims, then containerd.
    for part in ("containers", "shims", "containerd"):
        stop_pids(node_processes(node)[part], 10.0 if part == "containerd" else 0.5)
    left = {k: v for k, v in node_processes(node).items() if v}
    if left:
        raise UserError(f"{node.name}: processes left after SIGKILL: {left}")
    unmount_all(node.run_dir, node.dir)
    delete_link(node.bridge)
    remove_cgroup(node.cgroup)
    if cgroup_pids(node.cgroup):
        raise UserError(f"{node.name}: cgroup {node.cgroup} still has processes")
    shutil.rmtree(node.run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        node.run_dir.parent.rmdir()
    for empty in (RUN_ROOT, SHIM_SOCKETS, SHIM_SOCKETS.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()
    shutil.rmtree(node.dir, ignore_errors=True)
    if cluster is not None and cluster.readyz():
        with cluster.api_client() as api:
            from kubernetes import client

            with contextlib.suppress(client.ApiException):
                client.CoreV1Api(api).delete_node(node.name)


def node_absent(cluster: DevCluster, name: str) -> bool:
    return api_get(cluster, f"/api/v1/nodes/{name}", 3.0)[0] == 404


def stop_nodes(cluster_dir: Path, cluster: DevCluster | None) -> int:
    """Stop every recorded GPU node of the directory; return how many."""
    nodes = recorded_nodes(cluster_dir)
    for node in nodes:
        stop_node(cluster, node)
    return len(nodes)

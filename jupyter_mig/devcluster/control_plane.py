"""Start and stop the control plane of one directory: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler as plain processes; every wait has a timeout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from jupyter_mig.devcluster.binaries import build
from jupyter_mig.devcluster.cluster import DevCluster, api_get, read_state, state_path
from jupyter_mig.devcluster.common import DEFAULT_DIR, Log, file_lock, log_stderr, log_tail
from jupyter_mig.devcluster.node import NODE_TIMEOUT_S, ensure_nodes, stop_nodes
from jupyter_mig.devcluster.pki import (
    ISSUER,
    SERVICE_CIDR,
    kubeconfig_text,
    make_pki,
    write_private,
)
from jupyter_mig.devcluster.processes import (
    alive,
    dir_processes,
    free_ports,
    port_free,
    refers_to,
    stop_in_order,
)
from jupyter_mig.errors import UserError

START_TIMEOUT_S = 120.0


# Test nodes have no kubelet: a long grace keeps a Ready node Ready between heartbeats.
DEFAULT_NODE_GRACE = "1h"


def resolve_dir(cluster_dir: Path | str | None) -> Path:
    path = Path(cluster_dir) if cluster_dir is not None else DEFAULT_DIR
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a directory: choose another --dir")
    return path


def running(cluster_dir: Path | str | None = None) -> DevCluster | None:
    """The cluster running in DIR, healthy (all four processes alive, /readyz ok), or None."""
    path = resolve_dir(cluster_dir)
    state = read_state(path)
    if state is None or state.dir != path:
        return None
    if state.dead_components() or not state.readyz():
        return None
    return state


def _clean(cluster_dir: Path, log: Log, *, keep_logs: bool) -> int:
    """Stop every process of ours referring to DIR and remove its runtime files."""
    state = read_state(cluster_dir)
    healthy = state if state is not None and state.readyz() else None
    stopped_nodes = stop_nodes(cluster_dir, healthy)  # first: their kubelets need the API
    if stopped_nodes:
        log(f"stopped {stopped_nodes} GPU nodes")
    pids = set(dir_processes(cluster_dir))
    if state is not None:
        pids |= {pid for pid in state.pids.values() if alive(pid) and refers_to(pid, cluster_dir)}
    if pids:
        stop_in_order(pids)
    for name in ("etcd", "pki", "minted", "nodes"):
        shutil.rmtree(cluster_dir / name, ignore_errors=True)
    for name in ("state.json", "kubeconfig", "tokens.csv"):
        with contextlib.suppress(FileNotFoundError):
            (cluster_dir / name).unlink()
    for path in cluster_dir.glob("*.kubeconfig"):
        path.unlink()
    logs = cluster_dir / "logs"
    if not keep_logs and logs.is_dir() and any(logs.iterdir()):
        previous = cluster_dir / "logs.previous"
        shutil.rmtree(previous, ignore_errors=True)
        logs.rename(previous)
    return len(pids)


class _PortTaken(Exception):
    def __init__(self, component: str, port: int) -> None:
        super().__init__(f"{component}: port {port} taken")
        self.component = component
        self.port = port


class _Starter:
    """Starts the components of one DIR; on any failure stops what it started."""

    def __init__(self, cluster_dir: Path, bin_dir: Path, deadline: float, log: Log) -> None:
        self.dir = cluster_dir
        self.bin = bin_dir
        self.deadline = deadline
        self.log = log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, args: Sequence[str]) -> None:
        log_path = self.dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            out.write(f"$ {name} {' '.join(args)}\n".encode())
            out.flush()
            self.procs[name] = subprocess.Popen(
                [str(self.bin / name), *args], cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is None:
                continue
            log_path = self.dir / "logs" / f"{name}.log"
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            for component, port in self.ports.items():
                if re.search(rf"(127\.0\.0\.1|\[::\]|0\.0\.0\.0)?:{port}\b.*address already in use"
                             rf"|address already in use.*:{port}\b", text):  # fmt: skip
                    raise _PortTaken(component, port)
            tail = log_tail(log_path, 12, pattern=r"^[EF]\d{4}|error|fatal|panic")
            raise UserError(
                f"{name} exited with status {code} while starting; its log is {log_path}; "
                f"last lines:\n{tail}"
            )

    def wait(self, what: str, probe: Callable[[], bool]) -> None:
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                if probe():
                    return
            if time.monotonic() > self.deadline:
                logs = self.dir / "logs"
                raise UserError(
                    f"timed out waiting for {what}; the component logs are in {logs} "
                    "(on a loaded machine, retry with a larger --timeout)"
                )
            time.sleep(0.2)

    def stop_all(self) -> None:
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        with contextlib.suppress(UserError):
            stop_in_order(pids)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)


def _https_ok(url: str, ca_file: Path, token: str | None = None, timeout: float = 2.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return b'"health":"true"' in response.read()


def _start(
    cluster_dir: Path,
    bin_dir: Path,
    *,
    port: int | None,
    timeout: float,
    node_grace: str,
    extra_args: Mapping[str, Sequence[str]],
    log: Log,
) -> DevCluster:
    start_time = time.time()
    names = ["etcd-client", "etcd-peer", "kube-apiserver", "kube-controller-manager",
             "kube-scheduler"]  # fmt: skip
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    while port is not None and port != ports["kube-apiserver"] and port in ports.values():
        ports = dict(zip(names, free_ports(len(names)), strict=True))  # avoid --port
    if port is not None:
        ports["kube-apiserver"] = port
    d = cluster_dir
    pki = d / "pki"
    make_pki(pki)
    ca_pem = (pki / "ca.crt").read_bytes()
    token = secrets.token_urlsafe(32)
    write_private(d / "tokens.csv", f'{token},admin,admin,"system:masters"\n')
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    for name in ("kube-controller-manager", "kube-scheduler"):
        write_private(
            d / f"{name}.kubeconfig",
            kubeconfig_text(server, ca_pem, user=f"system:{name}", cert_file=pki / f"{name}.crt",
                            key_file=pki / f"{name}.key"),
        )  # fmt: skip
    write_private(d / "kubeconfig", kubeconfig_text(server, ca_pem, user="admin", token=token))

    starter = _Starter(d, bin_dir, time.monotonic() + timeout, log)
    starter.ports = dict(ports)
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        starter.start(
            "etcd",
            [f"--data-dir={d / 'etcd'}", f"--listen-client-url={etcd_url}",
             f"--listen-peer-url=http://127.0.0.1:{ports['etcd-peer']}",
             *extra_args.get("etcd", ())],
        )  # fmt: skip
        starter.wait("etcd to be healthy", lambda: _http_ok(etcd_url + "/health"))

        starter.start(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The endpoint reconciler refuses a loopback address for the `kubernetes`
                # Service (nothing in-cluster dials it here: there are no kubelets).
                "--endpoint-reconciler-type=none",
                f"--secure-port={ports['kube-apiserver']}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                *extra_args.get("kube-apiserver", ()),
            ],
        )
        starter.wait(
            "kube-apiserver /readyz",
            lambda: _https_ok(server + "/readyz", pki / "ca.crt", token),
        )

        common = {
            name: [
                f"--kubeconfig={d / f'{name}.kubeconfig'}",
                f"--authentication-kubeconfig={d / f'{name}.kubeconfig'}",
                f"--authorization-kubeconfig={d / f'{name}.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports[name]}",
                f"--tls-cert-file={pki / f'{name}-serving.crt'}",
                f"--tls-private-key-file={pki / f'{name}-serving.key'}",
                "--leader-elect=false",
                "--profiling=false",
            ]
            for name in ("kube-controller-manager", "kube-scheduler")
        }
        starter.start(
            "kube-controller-manager",
            [
                *common["kube-controller-manager"],
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--controllers=*",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={node_grace}",
                "--cluster-name=devcluster",
                *extra_args.get("kube-controller-manager", ()),
            ],
        )
        starter.start(
            "kube-scheduler",
            [*common["kube-scheduler"], *extra_args.get("kube-scheduler", ())],
        )
        for name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{ports[name]}/healthz"

            def healthy(url: str = url) -> bool:
                return _https_ok(url, pki / "ca.crt")

            starter.wait(f"{name} /healthz", healthy)

        cluster = DevCluster(
            dir=d,
            server=server,
            token=token,
            ports=ports,
            pids={name: proc.pid for name, proc in starter.procs.items()},
            started_at=start_time,
        )

        def default_sa() -> bool:
            status, _ = api_get(cluster, "/api/v1/namespaces/default/serviceaccounts/default", 2.0)
            return status == 200

        # The ServiceAccount controller works: pods can be created in "default".
        starter.wait("the default ServiceAccount (kube-controller-manager)", default_sa)
    except BaseException:
        starter.stop_all()
        raise
    write_private(state_path(d), json.dumps(cluster.to_json(), indent=2) + "\n")
    return cluster


def up(
    cluster_dir: Path | str | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
    node_grace: str = DEFAULT_NODE_GRACE,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    gpu_nodes: int = 0,
    gpu: str = "A100-80GB",
    gpus: int = 1,
    log: Log = log_stderr,
) -> DevCluster:
    """Start (or find running) the cluster in DIR; return once it is ready.

    ``extra_args`` maps a component name to extra command-line flags (e.g. feature gates).
    ``gpu_nodes`` real GPU nodes (:mod:`.node`), each with ``gpus`` GPUs of model ``gpu``, are
    started (or kept, when running) after the control plane.
    Raises :class:`UserError` with the cause and the log to read on any failure.
    """
    path = resolve_dir(cluster_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path} is not writable: choose another --dir")
    with file_lock(path / ".lock", timeout, f"devcluster directory {path}"):
        existing = running(path)
        if existing is not None:
            log(f"already running in {path} ({existing.server})")
            ensure_nodes(existing, gpu_nodes, gpu, gpus, log, max(timeout, NODE_TIMEOUT_S))
            return existing
        stopped = _clean(path, log, keep_logs=False)
        if stopped:
            log(f"cleaned up a stale cluster in {path} (stopped {stopped} leftover processes)")
        if port is not None and not port_free(port):
            raise UserError(
                f"port {port} on 127.0.0.1 is already in use: free it (see `ss -ltnp "
                f"'sport = :{port}'`) or choose another --port (or none, for a free one)"
            )
        bin_dir = build(log=log)
        started = time.monotonic()
        for attempt in range(3):
            try:
                cluster = _start(
                    path, bin_dir, port=port, timeout=timeout, node_grace=node_grace,
                    extra_args=extra_args or {}, log=log,
                )  # fmt: skip
            except _PortTaken as err:
                if port is not None and err.component == "kube-apiserver":
                    raise UserError(
                        f"port {port} on 127.0.0.1 was taken while kube-apiserver started: "
                        "choose another --port"
                    ) from None
                if attempt == 2:
                    raise UserError(
                        f"{err.component} could not bind port {err.port} (address already in "
                        f"use) three times; see the logs in {path / 'logs'}"
                    ) from None
                log(f"{err.component}: port {err.port} was taken meanwhile; retrying")
                _clean(path, log, keep_logs=True)
                continue
            log(f"ready in {time.monotonic() - started:.1f}s: {cluster.server}")
            try:
                ensure_nodes(cluster, gpu_nodes, gpu, gpus, log, max(timeout, NODE_TIMEOUT_S))
            except BaseException:
                _clean(path, log, keep_logs=True)
                raise
            return cluster
    raise AssertionError("unreachable")


def down(cluster_dir: Path | str | None = None, *, log: Log = log_stderr) -> int:
    """Stop everything of DIR's cluster (also what a killed run left); return how many processes
    were stopped.  The component logs stay in DIR/logs."""
    path = resolve_dir(cluster_dir)
    if not path.is_dir():
        return 0
    with file_lock(path / ".lock", START_TIMEOUT_S, f"devcluster directory {path}"):
        stopped = _clean(path, log, keep_logs=True)
    left = dir_processes(path)
    if left:
        raise UserError(f"processes {left} still refer to {path} after stopping: stop them")
    return stopped

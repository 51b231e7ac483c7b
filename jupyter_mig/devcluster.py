"""``jupyter-mig devcluster``: the real local Kubernetes control plane (from a source checkout).

The official ``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` of
``k8s.io/kubernetes`` and a small etcd server are built from ``tests/cluster`` (a Go module) into
``tests/cluster/.cache/bin`` and started as plain processes on free loopback ports, with real
TLS, service-account signing keys, ``Node,RBAC`` authorization and a static admin token.
Everything a cluster needs lives in one directory ``DIR``:

    DIR/kubeconfig          admin kubeconfig (static token in group system:masters)
    DIR/state.json          ports, pids, token: what ``env``/``down``/the test fixture read
    DIR/logs/*.log          one log per component (kept by ``down``, for diagnosis)
    DIR/pki/, DIR/etcd/     certificates and keys, etcd's data (removed by ``down``)

``up`` is idempotent on a running DIR; ``up`` and ``down`` clean up what a killed run left
(they stop every process of ours whose command line refers to DIR).  Every wait has a timeout.

The Python API (``up``, ``down``, ``running``, ``build``, :class:`DevCluster`) is what the
pytest fixture ``cluster`` in ``tests/conftest.py`` and the local demo use.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_mig.errors import UserError

KUBERNETES_VERSION = "v1.37.2"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
GO_PACKAGES = (
    ".",  # tests/cluster/main.go: the etcd server
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler",
)
MIN_GO = (1, 26)
GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")  # when `go` is not on PATH
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "tests" / "cluster"
CACHE = SRC / ".cache"
BIN = CACHE / "bin"
DEFAULT_DIR = REPO / ".devcluster"

BUILD_TIMEOUT_S = float(os.environ.get("JUPYTER_MIG_BUILD_TIMEOUT_S", "3600"))
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
# Test nodes have no kubelet: a long grace keeps a Ready node Ready between heartbeats.
DEFAULT_NODE_GRACE = "1h"
#: A Go duration as kube-controller-manager reads it (checked before anything is built).
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")

Log = Callable[[str], None]
_T = TypeVar("_T")


def _stderr(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def build_stamp() -> str:
    """Hash of what the binaries are built from: rebuild only when this changes."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        path = SRC / name
        if not path.is_file():
            raise UserError(
                f"{path} is missing: devcluster needs a source checkout of jupyter-mig "
                "(the Go module tests/cluster)"
            )
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_ldflags().encode())
    return digest.hexdigest()


def binaries_fresh(bin_dir: Path | None = None) -> bool:
    bin_dir = bin_dir or BIN
    stamp = bin_dir / ".stamp"
    if not stamp.is_file() or stamp.read_text().strip() != build_stamp():
        return False
    return all(os.access(bin_dir / name, os.X_OK) for name in COMPONENTS)


def find_go() -> str:
    go = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
    if go is None:
        raise UserError(
            "no Go toolchain found (`go` is not on PATH): install Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]} and put it on PATH; the control plane is built from "
            "the Kubernetes Go modules (tests/cluster/go.mod)"
        )
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(
            f"`{go} env GOVERSION` failed ({err}): is the Go toolchain broken?"
        ) from None
    match = re.match(r"go(\d+)\.(\d+)", out)
    if match is None or (int(match[1]), int(match[2])) < MIN_GO:
        raise UserError(
            f"{go} is {out or 'an unknown version'}; tests/cluster needs Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]} (Kubernetes {KUBERNETES_VERSION}): install a newer Go"
        )
    return go


@contextlib.contextmanager
def _flock(path: Path, timeout: float, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{what} is locked by another process for over {timeout:.0f}s "
                        f"(lock file {path}); wait for it to finish, or stop it"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(*, force: bool = False, log: Log = _stderr, timeout: float = BUILD_TIMEOUT_S) -> Path:
    """Build the four binaries into ``tests/cluster/.cache/bin`` unless they are up to date.

    Returns the bin directory.  Concurrent callers wait for one build (file lock).  The build
    log is ``tests/cluster/.cache/build.log``.
    """
    if not force and binaries_fresh():
        return BIN
    with _flock(CACHE / "build.lock", timeout, "the control-plane build"):
        if not force and binaries_fresh():
            return BIN
        go = find_go()
        stamp = build_stamp()
        tmp = CACHE / f"bin.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = CACHE / "build.log"
        env = dict(os.environ)
        env.update(GOCACHE=str(CACHE / "gocache"), GOTOOLCHAIN="local", GOWORK="off")
        env.setdefault("GOFLAGS", "")
        cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", _ldflags()]
        cmd += ["-o", str(tmp) + os.sep, *GO_PACKAGES]
        log(
            f"building kube-apiserver, kube-controller-manager, kube-scheduler {KUBERNETES_VERSION}"
            f" and etcd (the first build takes ~7 min on 2 quiet cores; log: {log_path})"
        )
        start = time.monotonic()
        total = _count_packages(go, env, timeout=min(timeout / 2, 600))
        with open(log_path, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, cwd=SRC, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            next_note = start + 60
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if now - start > timeout:
                        _kill_group(proc.pid)
                        proc.wait(timeout=30)
                        raise UserError(
                            f"the control-plane build did not finish in {timeout:.0f}s "
                            f"(see {log_path}); raise JUPYTER_MIG_BUILD_TIMEOUT_S on a slow "
                            "machine"
                        )
                    if now >= next_note:
                        done = f"{_count_lines(log_path) - 1}/{total or '?'}"
                        log(f"still building ({now - start:.0f}s, {done} packages) ...")
                        next_note = now + 60
                    time.sleep(1)
            except BaseException:
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait(timeout=30)
                raise
        if proc.returncode != 0:
            tail = _tail(log_path, 15, pattern=r"error|cannot|go: |\.go:\d+")
            raise UserError(
                f"the control-plane build failed (go build exit {proc.returncode}); "
                f"full log: {log_path}; last errors:\n{tail}\n"
                "If modules could not be downloaded, check that the Go module proxy is reachable "
                "(go env GOPROXY)."
            )
        (tmp / "cluster").rename(tmp / "etcd")
        BIN.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            os.replace(tmp / name, BIN / name)
        (BIN / ".stamp").write_text(stamp + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"built in {time.monotonic() - start:.0f}s into {BIN}")
    return BIN


def _count_packages(go: str, env: Mapping[str, str], timeout: float) -> int | None:
    """How many packages the build compiles (for progress; also downloads the modules)."""
    try:
        out = subprocess.run(
            [go, "list", "-deps", *GO_PACKAGES], cwd=SRC, env=env, capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return len(out.stdout.split()) if out.returncode == 0 else None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path, lines: int, pattern: str | None = None) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    chosen = text
    if pattern is not None:
        rx = re.compile(pattern, re.IGNORECASE)
        matched = [line for line in text if rx.search(line)]
        chosen = matched or text
    return "\n".join("    " + line[:400] for line in chosen[-lines:])


# --------------------------------------------------------------------------------------------
# Processes of a DIR
# --------------------------------------------------------------------------------------------


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own zombie children
        return False
    return True


def _refers_to(pid: int, cluster_dir: Path) -> bool:
    """Is ``pid`` one of our components (by program name) started for ``cluster_dir``?"""
    argv = _proc_cmdline(pid)
    if not argv or os.path.basename(argv[0]) not in COMPONENTS:
        return False
    needle = str(cluster_dir) + os.sep
    return any(needle in arg for arg in argv[1:])


def dir_processes(cluster_dir: Path) -> list[int]:
    """Every live process of ours whose command line refers to ``cluster_dir``."""
    cluster_dir = cluster_dir.resolve()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            pid = int(entry)
            if _refers_to(pid, cluster_dir) and _alive(pid):
                found.append(pid)
    return sorted(found)


def _stop_pids(pids: Sequence[int], timeout: float = STOP_TIMEOUT_S) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        live = [pid for pid in pids if _alive(pid)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if _alive(pid)]
            time.sleep(0.1)
        if not live:
            return
    left = [pid for pid in pids if _alive(pid)]
    if left:
        raise UserError(f"processes {left} did not stop even after SIGKILL; stop them by hand")


def _stop_in_order(pids: set[int] | Sequence[int]) -> None:
    """Clients before servers (scheduler, controller-manager, apiserver, etcd): an apiserver
    whose etcd is gone, or with watchers attached, takes long to stop gracefully."""
    order = {name: rank for rank, name in enumerate(reversed(COMPONENTS))}
    stages: dict[int, list[int]] = {}
    for pid in pids:
        argv = _proc_cmdline(pid)
        rank = order.get(os.path.basename(argv[0]) if argv else "", len(order))
        stages.setdefault(rank, []).append(pid)
    for rank in sorted(stages):
        _stop_pids(sorted(stages[rank]))


# --------------------------------------------------------------------------------------------
# PKI and kubeconfigs
# --------------------------------------------------------------------------------------------


def _need_crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise UserError(
            "the `cryptography` package is missing: pip install -e '.[cluster]'"
        ) from None
    return x509


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject_cn: str,
    key: Any,
    *,
    ca: tuple[Any, Any] | None = None,
    orgs: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 365,
) -> bytes:
    x509 = _need_crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject_cn))
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    issuer_cert, issuer_key = ca if ca else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
        sans: list[Any] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _make_pki(pki: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    x509 = _need_crypto()
    ca_key = _new_key()
    ca_pem = _cert("devcluster-ca", ca_key, days=3650)
    ca = (x509.load_pem_x509_certificate(ca_pem), ca_key)
    _write(pki / "ca.crt", ca_pem, 0o644)
    _write(pki / "ca.key", _key_pem(ca_key))
    serving_dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    key = _new_key()
    _write(pki / "apiserver.key", _key_pem(key))
    _write(
        pki / "apiserver.crt",
        _cert("kube-apiserver", key, ca=ca, dns=serving_dns, ips=["127.0.0.1", SERVICE_IP],
              server=True),
    )  # fmt: skip
    for name in ("kube-controller-manager", "kube-scheduler"):
        # Serving certificate (for /healthz) and client certificate (identity system:NAME).
        key = _new_key()
        _write(pki / f"{name}-serving.key", _key_pem(key))
        _write(
            pki / f"{name}-serving.crt",
            _cert(name, key, ca=ca, dns=["localhost"], ips=["127.0.0.1"], server=True),
        )
        key = _new_key()
        _write(pki / f"{name}.key", _key_pem(key))
        _write(pki / f"{name}.crt", _cert(f"system:{name}", key, ca=ca, client=True))
    # The aggregation layer's front proxy: its own CA, as kubeadm sets it up.
    fp_key = _new_key()
    fp_pem = _cert("front-proxy-ca", fp_key, days=3650)
    _write(pki / "front-proxy-ca.crt", fp_pem, 0o644)
    key = _new_key()
    _write(pki / "front-proxy-client.key", _key_pem(key))
    _write(
        pki / "front-proxy-client.crt",
        _cert("front-proxy-client", key, ca=(x509.load_pem_x509_certificate(fp_pem), fp_key),
              client=True),
    )  # fmt: skip
    sa_key = _new_key()
    _write(pki / "sa.key", _key_pem(sa_key))
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(pki / "sa.pub", sa_pub, 0o644)


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def kubeconfig_text(
    server: str,
    ca_pem: bytes,
    *,
    user: str = "admin",
    token: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    namespace: str | None = None,
) -> str:
    """A self-contained kubeconfig: the CA is embedded, credentials are a token or cert files."""
    import base64

    if token is not None:
        creds = f"    token: {_yaml_str(token)}\n"
    elif cert_file is not None and key_file is not None:
        creds = (
            f"    client-certificate: {_yaml_str(str(cert_file))}\n"
            f"    client-key: {_yaml_str(str(key_file))}\n"
        )
    else:
        raise ValueError("kubeconfig needs a token or a client certificate")
    ns = f"    namespace: {_yaml_str(namespace)}\n" if namespace else ""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: devcluster\n"
        "  cluster:\n"
        f"    server: {_yaml_str(server)}\n"
        f"    certificate-authority-data: {base64.b64encode(ca_pem).decode()}\n"
        "users:\n"
        f"- name: {_yaml_str(user)}\n"
        "  user:\n"
        f"{creds}"
        "contexts:\n"
        "- name: devcluster\n"
        "  context:\n"
        "    cluster: devcluster\n"
        f"    user: {_yaml_str(user)}\n"
        f"{ns}"
        "current-context: devcluster\n"
    )


# --------------------------------------------------------------------------------------------
# The running cluster
# --------------------------------------------------------------------------------------------


@dataclass
class DevCluster:
    """A running devcluster: what ``state.json`` records, and helpers for clients and tests."""

    dir: Path
    server: str
    token: str
    ports: dict[str, int]
    pids: dict[str, int]
    version: str = KUBERNETES_VERSION
    started_at: float = 0.0
    _minted: int = field(default=0, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "server": self.server,
            "token": self.token,
            "ports": self.ports,
            "pids": self.pids,
            "version": self.version,
            "started_at": self.started_at,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.ca_file),
            "logs": str(self.logs),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DevCluster:
        return cls(
            dir=Path(data["dir"]),
            server=str(data["server"]),
            token=str(data["token"]),
            ports={k: int(v) for k, v in data["ports"].items()},
            pids={k: int(v) for k, v in data["pids"].items()},
            version=str(data.get("version", KUBERNETES_VERSION)),
            started_at=float(data.get("started_at", 0.0)),
        )

    # -- health ------------------------------------------------------------------------------

    def dead_components(self) -> list[str]:
        return [
            name
            for name, pid in self.pids.items()
            if not (_alive(pid) and _refers_to(pid, self.dir))
        ]

    def readyz(self, timeout: float = 3.0) -> bool:
        try:
            return _get(self, "/readyz", timeout=timeout) == (200, "ok")
        except OSError:
            return False

    # -- clients -----------------------------------------------------------------------------

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` (admin, or the identity of ``token``)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.server
        config.ssl_ca_cert = str(self.ca_file)
        config.verify_ssl = True
        config.api_key = {"authorization": token or self.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(config)

    def _new_path(self, stem: str) -> Path:
        self._minted += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60]
        return self.dir / "minted" / f"{self._minted:04d}-{safe}.kubeconfig"

    def kubeconfig_for_token(
        self, token: str, path: Path | None = None, *, namespace: str | None = None
    ) -> Path:
        """Write a kubeconfig that authenticates with ``token``; return its path."""
        path = path or self._new_path("token")
        text = kubeconfig_text(
            self.server, self.ca_file.read_bytes(), user="token-user", token=token,
            namespace=namespace,
        )  # fmt: skip
        return _write(path, text)

    def kubeconfig_for_user(
        self, user: str, groups: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """A kubeconfig with a client certificate for ``user`` in ``groups``, signed by the CA.

        E.g. ``kubeconfig_for_user("system:node:gpu-1", ["system:nodes"])`` is a kubelet's
        identity under the Node authorizer and NodeRestriction.
        """
        x509 = _need_crypto()
        from cryptography.hazmat.primitives import serialization

        pki = self.dir / "pki"
        ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        path = path or self._new_path(user)
        key = _new_key()
        key_file = _write(path.with_suffix(".key"), _key_pem(key))
        cert_file = _write(
            path.with_suffix(".crt"),
            _cert(user, key, ca=(ca_cert, ca_key), orgs=groups, client=True),
            0o644,
        )
        text = kubeconfig_text(
            self.server, self.ca_file.read_bytes(), user=user, cert_file=cert_file,
            key_file=key_file,
        )  # fmt: skip
        return _write(path, text)

    def mint_token(
        self,
        namespace: str,
        service_account: str,
        *,
        create: bool = True,
        expiration_seconds: int = 3600,
        audiences: Sequence[str] = (),
    ) -> str:
        """A bound token for ServiceAccount ``namespace/service_account`` (TokenRequest API).

        With ``create`` the namespace and the ServiceAccount are created when missing.
        """
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            if create:
                _create_if_missing(
                    lambda: core.create_namespace(
                        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
                    )
                )
                _create_if_missing(
                    lambda: core.create_namespaced_service_account(
                        namespace,
                        client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=service_account)),
                    )
                )
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=list(audiences), expiration_seconds=expiration_seconds
                )
            )
            result = core.create_namespaced_service_account_token(
                service_account, namespace, request
            )
            return str(result.status.token)  # type: ignore[union-attr]

    def create_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create namespace ``name`` and wait for its ``default`` ServiceAccount (which pods need
        before they can be created)."""
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            _create_if_missing(
                lambda: core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
                )
            )
            deadline = time.monotonic() + timeout
            while True:
                try:
                    core.read_namespaced_service_account("default", name)
                    return
                except client.ApiException as err:
                    if err.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)


def wait_for(
    what: str, probe: Callable[[], _T], timeout: float = 60.0, interval: float = 0.25
) -> _T:
    """Poll ``probe()`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def _create_if_missing(create: Callable[[], Any]) -> None:
    from kubernetes import client

    try:
        create()
    except client.ApiException as err:
        if err.status != 409:
            raise


def _get(cluster: DevCluster, path: str, timeout: float) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    request = urllib.request.Request(
        cluster.server + path, headers={"Authorization": f"Bearer {cluster.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return int(response.status), response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace").strip()


def _state_path(cluster_dir: Path) -> Path:
    return cluster_dir / "state.json"


def _read_state(cluster_dir: Path) -> DevCluster | None:
    try:
        data = json.loads(_state_path(cluster_dir).read_text())
        return DevCluster.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a torn or foreign state file: treated as stale


def _resolve_dir(cluster_dir: Path | str | None) -> Path:
    path = Path(cluster_dir) if cluster_dir is not None else DEFAULT_DIR
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a directory: choose another --dir")
    return path


def running(cluster_dir: Path | str | None = None) -> DevCluster | None:
    """The cluster running in DIR, healthy (all four processes alive, /readyz ok), or None."""
    path = _resolve_dir(cluster_dir)
    state = _read_state(path)
    if state is None or state.dir != path:
        return None
    if state.dead_components() or not state.readyz():
        return None
    return state


def _clean(cluster_dir: Path, log: Log, *, keep_logs: bool) -> int:
    """Stop every process of ours referring to DIR and remove its runtime files."""
    state = _read_state(cluster_dir)
    pids = set(dir_processes(cluster_dir))
    if state is not None:
        pids |= {pid for pid in state.pids.values() if _alive(pid) and _refers_to(pid, cluster_dir)}
    if pids:
        _stop_in_order(pids)
    for name in ("etcd", "pki", "minted"):
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


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


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
            tail = _tail(log_path, 12, pattern=r"^[EF]\d{4}|error|fatal|panic")
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
            _stop_in_order(pids)
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
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    while port is not None and port != ports["kube-apiserver"] and port in ports.values():
        ports = dict(zip(names, _free_ports(len(names)), strict=True))  # avoid --port
    if port is not None:
        ports["kube-apiserver"] = port
    d = cluster_dir
    pki = d / "pki"
    _make_pki(pki)
    ca_pem = (pki / "ca.crt").read_bytes()
    token = secrets.token_urlsafe(32)
    _write(d / "tokens.csv", f'{token},admin,admin,"system:masters"\n')
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    for name in ("kube-controller-manager", "kube-scheduler"):
        _write(
            d / f"{name}.kubeconfig",
            kubeconfig_text(server, ca_pem, user=f"system:{name}", cert_file=pki / f"{name}.crt",
                            key_file=pki / f"{name}.key"),
        )  # fmt: skip
    _write(d / "kubeconfig", kubeconfig_text(server, ca_pem, user="admin", token=token))

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
            status, _ = _get(cluster, "/api/v1/namespaces/default/serviceaccounts/default", 2.0)
            return status == 200

        # The ServiceAccount controller works: pods can be created in "default".
        starter.wait("the default ServiceAccount (kube-controller-manager)", default_sa)
    except BaseException:
        starter.stop_all()
        raise
    _write(_state_path(d), json.dumps(cluster.to_json(), indent=2) + "\n")
    return cluster


def up(
    cluster_dir: Path | str | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
    node_grace: str = DEFAULT_NODE_GRACE,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    log: Log = _stderr,
) -> DevCluster:
    """Start (or find running) the cluster in DIR; return once it is ready.

    ``extra_args`` maps a component name to extra command-line flags (e.g. feature gates).
    Raises :class:`UserError` with the cause and the log to read on any failure.
    """
    path = _resolve_dir(cluster_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path} is not writable: choose another --dir")
    with _flock(path / ".lock", timeout, f"devcluster directory {path}"):
        existing = running(path)
        if existing is not None:
            log(f"already running in {path} ({existing.server})")
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
            return cluster
    raise AssertionError("unreachable")


def down(cluster_dir: Path | str | None = None, *, log: Log = _stderr) -> int:
    """Stop everything of DIR's cluster (also what a killed run left); return how many processes
    were stopped.  The component logs stay in DIR/logs."""
    path = _resolve_dir(cluster_dir)
    if not path.is_dir():
        return 0
    with _flock(path / ".lock", START_TIMEOUT_S, f"devcluster directory {path}"):
        stopped = _clean(path, log, keep_logs=True)
    left = dir_processes(path)
    if left:
        raise UserError(f"processes {left} still refer to {path} after stopping: stop them")
    return stopped


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="devcluster_command", metavar="ACTION")
    dir_help = f"cluster directory (default: {DEFAULT_DIR})"

    p_up = sub.add_parser("up", help="start the cluster (build it first if needed)")
    p_up.add_argument("--dir", type=Path, default=None, help=dir_help)
    p_up.add_argument("--port", type=int, default=None,
                      help="kube-apiserver port on 127.0.0.1 (default: a free one)")  # fmt: skip
    p_up.add_argument("--timeout", type=float, default=START_TIMEOUT_S,
                      help="seconds to wait for readiness (default: %(default)s)")  # fmt: skip
    p_up.add_argument("--node-grace", default=DEFAULT_NODE_GRACE,
                      help="kube-controller-manager --node-monitor-grace-period "
                           "(default: %(default)s)")  # fmt: skip

    p_down = sub.add_parser("down", help="stop the cluster (the logs stay in DIR/logs)")
    p_down.add_argument("--dir", type=Path, default=None, help=dir_help)

    p_env = sub.add_parser("env", help="print `export KUBECONFIG=...` for a running cluster")
    p_env.add_argument("--dir", type=Path, default=None, help=dir_help)
    p_env.add_argument("--json", action="store_true", help="print the cluster's state as JSON")

    p_build = sub.add_parser("build", help="build the binaries into tests/cluster/.cache/bin")
    p_build.add_argument("--force", action="store_true", help="rebuild even if up to date")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "devcluster_command", None)
    if action is None:
        raise UserError("say what to do: up, down, env or build (see --help)")
    if action == "build":
        build(force=args.force)
        print(BIN)
        return 0
    if action == "up":
        if args.port is not None and not 1 <= args.port <= 65535:
            raise UserError(f"--port {args.port} is not a TCP port (1-65535)")
        if not args.timeout > 0:
            raise UserError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
        if not _GO_DURATION.match(args.node_grace):
            raise UserError(
                f"--node-grace {args.node_grace!r}: expected a duration such as 40s, 5m or 1h"
            )
        cluster = up(args.dir, port=args.port, timeout=args.timeout, node_grace=args.node_grace)
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if action == "down":
        path = _resolve_dir(args.dir)
        stopped = down(path)
        _stderr(f"stopped {stopped} processes; logs kept in {path / 'logs'}")
        return 0
    if action == "env":
        path = _resolve_dir(args.dir)
        found = running(path)
        if found is None:
            raise UserError(
                f"no cluster is running in {path}: start one with "
                f"`jupyter-mig devcluster up --dir {path}`"
            )
        if args.json:
            json.dump(found.to_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(f"export KUBECONFIG={found.kubeconfig}")
        return 0
    raise UserError(f"unknown action {action!r}")

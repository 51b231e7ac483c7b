"""A running devcluster (what ``state.json`` records) and helpers for its clients and tests."""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_mig.devcluster.common import KUBERNETES_VERSION
from jupyter_mig.devcluster.pki import (
    key_pem,
    kubeconfig_text,
    need_crypto,
    new_key,
    sign_cert,
    write_private,
)
from jupyter_mig.devcluster.processes import alive, refers_to


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
            name for name, pid in self.pids.items() if not (alive(pid) and refers_to(pid, self.dir))
        ]

    def readyz(self, timeout: float = 3.0) -> bool:
        try:
            return api_get(self, "/readyz", timeout=timeout) == (200, "ok")
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
        return write_private(path, text)

    def kubeconfig_for_user(
        self, user: str, groups: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """A kubeconfig with a client certificate for ``user`` in ``groups``, signed by the CA.

        E.g. ``kubeconfig_for_user("system:node:gpu-1", ["system:nodes"])`` is a kubelet's
        identity under the Node authorizer and NodeRestriction.
        """
        x509 = need_crypto()
        from cryptography.hazmat.primitives import serialization

        pki = self.dir / "pki"
        ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        path = path or self._new_path(user)
        key = new_key()
        key_file = write_private(path.with_suffix(".key"), key_pem(key))
        cert_file = write_private(
            path.with_suffix(".crt"),
            sign_cert(user, key, ca=(ca_cert, ca_key), orgs=groups, client=True),
            0o644,
        )
        text = kubeconfig_text(
            self.server, self.ca_file.read_bytes(), user=user, cert_file=cert_file,
            key_file=key_file,
        )  # fmt: skip
        return write_private(path, text)

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


def _create_if_missing(create: Callable[[], Any]) -> None:
    from kubernetes import client

    try:
        create()
    except client.ApiException as err:
        if err.status != 409:
            raise


def api_get(cluster: DevCluster, path: str, timeout: float) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    request = urllib.request.Request(
        cluster.server + path, headers={"Authorization": f"Bearer {cluster.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return int(response.status), response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace").strip()


def state_path(cluster_dir: Path) -> Path:
    return cluster_dir / "state.json"


def read_state(cluster_dir: Path) -> DevCluster | None:
    try:
        data = json.loads(state_path(cluster_dir).read_text())
        return DevCluster.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a torn or foreign state file: treated as stale

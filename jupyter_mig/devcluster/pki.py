"""Certificates, keys, tokens and kubeconfigs of a devcluster (real TLS, as kubeadm sets it up)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_mig.errors import UserError

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def need_crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise UserError(
            "the `cryptography` package is missing: pip install -e '.[cluster]'"
        ) from None
    return x509


def new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def sign_cert(
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
    x509 = need_crypto()
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


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def make_pki(pki: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    x509 = need_crypto()
    ca_key = new_key()
    ca_pem = sign_cert("devcluster-ca", ca_key, days=3650)
    ca = (x509.load_pem_x509_certificate(ca_pem), ca_key)
    write_private(pki / "ca.crt", ca_pem, 0o644)
    write_private(pki / "ca.key", key_pem(ca_key))
    serving_dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    key = new_key()
    write_private(pki / "apiserver.key", key_pem(key))
    write_private(
        pki / "apiserver.crt",
        sign_cert("kube-apiserver", key, ca=ca, dns=serving_dns, ips=["127.0.0.1", SERVICE_IP],
              server=True),
    )  # fmt: skip
    for name in ("kube-controller-manager", "kube-scheduler"):
        # Serving certificate (for /healthz) and client certificate (identity system:NAME).
        key = new_key()
        write_private(pki / f"{name}-serving.key", key_pem(key))
        write_private(
            pki / f"{name}-serving.crt",
            sign_cert(name, key, ca=ca, dns=["localhost"], ips=["127.0.0.1"], server=True),
        )
        key = new_key()
        write_private(pki / f"{name}.key", key_pem(key))
        write_private(pki / f"{name}.crt", sign_cert(f"system:{name}", key, ca=ca, client=True))
    # The API server's identity towards kubelets (logs, exec, port-forward), as kubeadm's.
    key = new_key()
    write_private(pki / "apiserver-kubelet-client.key", key_pem(key))
    write_private(
        pki / "apiserver-kubelet-client.crt",
        sign_cert("kube-apiserver-kubelet-client", key, ca=ca, orgs=["system:masters"],
                  client=True),
    )  # fmt: skip
    # The aggregation layer's front proxy: its own CA, as kubeadm sets it up.
    fp_key = new_key()
    fp_pem = sign_cert("front-proxy-ca", fp_key, days=3650)
    write_private(pki / "front-proxy-ca.crt", fp_pem, 0o644)
    key = new_key()
    write_private(pki / "front-proxy-client.key", key_pem(key))
    write_private(
        pki / "front-proxy-client.crt",
        sign_cert("front-proxy-client", key, ca=(x509.load_pem_x509_certificate(fp_pem), fp_key),
              client=True),
    )  # fmt: skip
    sa_key = new_key()
    write_private(pki / "sa.key", key_pem(sa_key))
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_private(pki / "sa.pub", sa_pub, 0o644)


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

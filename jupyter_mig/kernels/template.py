"""The admin's kernel pod template (``c.KernelPodTemplate.*``) and the pod and Secret it renders.

Pure: the hub service validates the user, the server, the kernel id and the size, plans the slice
(:func:`jupyter_mig.slices.policy.plan_slice`) and passes the outcome here; nothing a user sends
reaches a resource name or label except through :func:`kernel_object_name` and :func:`safe_slug`.

String values of ``namespace``, ``env``, ``volumes`` and ``volume_mounts`` may name
``{username}`` and ``{servername}`` (safe slugs), as KubeSpawner's templates do, so the default
user volume of the server (``claimName: claim-{username}``) can be mounted by the kernel too.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import Dict, Float, Integer, List, Unicode, validate
from traitlets.config import Configurable

from jupyter_mig.api.constants import GPU_PRODUCT_LABEL, INTERACTIVE_ANNOTATION
from jupyter_mig.kernels import contract as k
from jupyter_mig.slices.contract import RESOURCE_ENV, SIZE_ENV, SLICE_ENV

#: The traits that travel to the hub service as JSON (every configurable one).
TEMPLATE_ENV = "JUPYTER_MIG_KERNEL_TEMPLATE"

_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_HASH_LENGTH = 8


class TemplateError(ValueError):
    """The template cannot be rendered for this kernel (one line naming the setting)."""


def safe_slug(name: str) -> str:
    """``name`` when it is a short lower-case DNS label without ``--``; otherwise its safe
    characters, ``---`` and a hash of the whole name (distinct names stay distinct)."""
    if _SLUG.match(name) and "--" not in name:
        return name
    stripped = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:20].rstrip("-") or "x"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_LENGTH]
    return f"{stripped}---{digest}"


@dataclass(frozen=True)
class KernelSlice:
    """What the planner chose for a kernel: the size asked for and the resource that serves it."""

    size: str
    profile: str
    resource: str
    products: tuple[str, ...]


class _Fields(string.Formatter):
    """``str.format`` that knows only the template's fields and refuses anything fancier."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = fields

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name not in self.fields:
            raise KeyError(field_name)
        return self.fields[field_name], field_name


def expand(value: Any, fields: Mapping[str, str], where: str) -> Any:
    """``value`` with ``{field}`` replaced in every string inside it."""
    if isinstance(value, str):
        try:
            return _Fields(fields).format(value)
        except (KeyError, ValueError, IndexError) as err:
            known = ", ".join("{" + f + "}" for f in fields)
            raise TemplateError(
                f"c.KernelPodTemplate.{where} cannot be rendered ({value!r}: {err}); "
                f"the fields are {known}, and literal braces are written {{{{ }}}}"
            ) from None
    if isinstance(value, Mapping):
        return {key: expand(item, fields, where) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [expand(item, fields, where) for item in value]
    return value


class KernelPodTemplate(Configurable):
    """How a kernel pod looks (docs/kernels.md): the hub admin's part of every kernel pod.

    The GPU resource, the node affinity to the GPU products that serve the slice, the
    connection Secret's volume, the ports, the labels and ``automountServiceAccountToken:
    false`` are always set by jupyter-mig on top of this.
    """

    namespace = Unicode(
        "",
        help="Namespace of kernel pods, e.g. jhub, or jhub-{username} for per-user namespaces "
        "(empty: per-kernel slices are off).",
    ).tag(config=True)
    image = Unicode("", help="The kernel image (needs ipykernel and jupyter-mig).").tag(config=True)
    command = List(
        Unicode(),
        ["python", "-m", "jupyter_mig.kernels.launch"],
        help="The kernel container's command; it finds the connection file in "
        f"${k.CONNECTION_ENV}.",
    ).tag(config=True)
    working_dir = Unicode("", help="The kernel's working directory (empty: the image's).").tag(
        config=True
    )
    env = Dict(value_trait=Unicode(), key_trait=Unicode(), help="Extra environment.").tag(
        config=True
    )
    volumes = List(Dict(), help="Pod volumes, e.g. the user's claim-{username} claim.").tag(
        config=True
    )
    volume_mounts = List(Dict(), help="Mounts of those volumes in the kernel container.").tag(
        config=True
    )
    resources = Dict(
        help="The container's CPU and memory requests and limits (the GPU is added)."
    ).tag(config=True)
    node_selector = Dict(
        value_trait=Unicode(), key_trait=Unicode(), help="The pod's nodeSelector."
    ).tag(config=True)
    tolerations = List(Dict(), help="The pod's tolerations.").tag(config=True)
    security_context = Dict(
        {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        help="The pod's securityContext.",
    ).tag(config=True)
    container_security_context = Dict(
        {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        help="The kernel container's securityContext.",
    ).tag(config=True)
    extra_labels = Dict(
        value_trait=Unicode(), key_trait=Unicode(), help="More labels of kernel pods."
    ).tag(config=True)
    extra_annotations = Dict(
        value_trait=Unicode(), key_trait=Unicode(), help="More annotations of kernel pods."
    ).tag(config=True)
    termination_grace_seconds = Integer(5, help="Grace of a kernel pod's deletion.").tag(
        config=True
    )
    max_kernels_per_user = Integer(
        4, help="Kernel pods one user may have at once (at least 1)."
    ).tag(config=True)
    stale_after = Float(
        120.0,
        help="Seconds a kernel pod of a server that is not running is kept before the sweep "
        "deletes it.",
    ).tag(config=True)
    sweep_interval = Float(60.0, help="Seconds between sweeps for stale kernel pods.").tag(
        config=True
    )

    @validate("max_kernels_per_user", "termination_grace_seconds")
    def _valid_counts(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < (1 if proposal["trait"].name == "max_kernels_per_user" else 0):
            raise ValueError(f"{proposal['trait'].name} must be at least 1, not {value}")
        return value

    @validate("stale_after", "sweep_interval")
    def _valid_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise ValueError(f"{proposal['trait'].name} must be positive, not {value}")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.namespace and self.image)

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in sorted(self.trait_names(config=True))}

    def to_json(self) -> str:
        return json.dumps(self.settings())

    @staticmethod
    def from_json(text: str) -> KernelPodTemplate:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the kernel pod template must be a JSON object")
        unknown = set(data) - set(KernelPodTemplate.class_trait_names(config=True))
        if unknown:
            raise ValueError(f"unknown kernel pod template settings {sorted(unknown)}")
        return KernelPodTemplate(**data)

    def fields(self, user: str, server: str) -> dict[str, str]:
        return {"username": safe_slug(user), "servername": safe_slug(server) if server else ""}

    def namespace_for(self, user: str) -> str:
        """The user's kernel namespace: the template's, with ``{username}`` filled in."""
        name: str = expand(self.namespace, self.fields(user, ""), "namespace")
        if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name):
            raise TemplateError(
                f"c.KernelPodTemplate.namespace renders to {name!r}, not a namespace name"
            )
        return name

    def labels(self, user: str, server: str, kernel_id: str) -> dict[str, str]:
        return {
            k.COMPONENT_LABEL: k.COMPONENT_VALUE,
            k.MANAGED_BY_LABEL: k.MANAGED_BY_VALUE,
            k.USER_LABEL: safe_slug(user),
            k.SERVER_LABEL: safe_slug(server) if server else "default",
            k.KERNEL_ID_LABEL: kernel_id,
        }

    def render(
        self,
        user: str,
        server: str,
        kernel_id: str,
        chosen: KernelSlice,
        key: str,
        scheme: str,
        launch: int = 0,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The kernel's pod and its connection Secret (the Secret's owner reference to the pod
        is added once the pod exists, since it needs the pod's uid)."""
        name = k.kernel_object_name(kernel_id)
        ports = k.kernel_ports(launch)
        fields = self.fields(user, server)
        namespace = self.namespace_for(user)
        labels = {
            **expand(dict(self.extra_labels), fields, "extra_labels"),
            **self.labels(user, server, kernel_id),
        }
        annotations = {
            **dict(self.extra_annotations),
            k.USER_ANNOTATION: user,
            k.SERVER_ANNOTATION: server,
            k.SIZE_ANNOTATION: chosen.size,
            k.PROFILE_ANNOTATION: chosen.profile,
            INTERACTIVE_ANNOTATION: "true",
        }
        connection = {
            **ports,
            "ip": "0.0.0.0",
            "transport": "tcp",
            "key": key,
            "signature_scheme": scheme,
            "kernel_name": "",
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "stringData": {k.CONNECTION_KEY: json.dumps(connection)},
        }
        resources = json.loads(json.dumps(dict(self.resources)))
        resources.setdefault("limits", {})[chosen.resource] = "1"
        env = {**expand(dict(self.env), fields, "env")}
        env[k.CONNECTION_ENV] = f"{k.CONNECTION_DIR}/{k.CONNECTION_KEY}"
        env[k.KERNEL_ID_ENV] = kernel_id
        # What the kernel's own slice is, under the names a server with a slice has.
        env.update(
            {SIZE_ENV: chosen.size, SLICE_ENV: chosen.profile, RESOURCE_ENV: chosen.resource}
        )
        container: dict[str, Any] = {
            "name": "kernel",
            "image": self.image,
            "command": list(self.command),
            "env": [{"name": n, "value": v} for n, v in sorted(env.items())],
            "ports": [
                {"name": p.removesuffix("_port"), "containerPort": n} for p, n in ports.items()
            ],
            "resources": resources,
            "volumeMounts": [
                *expand(list(self.volume_mounts), fields, "volume_mounts"),
                {"name": "jupyter-mig-connection", "mountPath": k.CONNECTION_DIR, "readOnly": True},
            ],
            "securityContext": dict(self.container_security_context),
        }
        if self.working_dir:
            container["workingDir"] = expand(self.working_dir, fields, "working_dir")
        product_term = {
            "matchExpressions": [
                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": sorted(chosen.products)}
            ]
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": self.termination_grace_seconds,
                "securityContext": dict(self.security_context),
                "nodeSelector": dict(self.node_selector),
                "tolerations": list(self.tolerations),
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [product_term]
                        }
                    }
                },
                "containers": [container],
                "volumes": [
                    *expand(list(self.volumes), fields, "volumes"),
                    {
                        "name": "jupyter-mig-connection",
                        "secret": {"secretName": name, "defaultMode": 0o400},
                    },
                ],
            },
        }
        return pod, secret

"""The ``MigNode`` CustomResourceDefinition as Python data: the single source of truth.

``jupyter-mig crds`` prints it; ``controller/chart/crds/`` holds the same manifest, and a test
keeps the two equal.  The schema is structural: unknown fields are pruned, and refused by
requests with ``fieldValidation=Strict`` (kubectl's default).  It rejects negative or missing
starts and profile ids and bounds every list; whether a layout fits a GPU is the agent's check.
"""

from __future__ import annotations

from typing import Any

from jupyter_mig.api import constants as c

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
_CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


def _int(description: str, maximum: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "format": "int32",
        "minimum": 0,
        "maximum": maximum,
        "description": description,
    }


def _string(description: str, max_length: int = 128) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "description": description}


def _instance_properties() -> dict[str, Any]:
    return {
        "profile": {
            **_string("Profile name for people (e.g. 1g.10gb); matching uses profileId.", 64),
            "pattern": _NAME_PATTERN,
        },
        "profileId": _int("NVML GPU-instance profile id.", 255),
        "start": _int("Placement start, in memory slices.", 63),
    }


def _desired_instance() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["profileId", "start"],
        "properties": _instance_properties(),
    }


def _observed_instance() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["profileId", "start"],
        "properties": {
            **_instance_properties(),
            "uuid": _string("MIG device UUID (MIG-...).", 128),
            "pod": _string("namespace/name of the pod holding the device; absent when free.", 320),
        },
    }


def _profile_table() -> dict[str, Any]:
    """The schema of jupyter_mig.mig.models.GpuModel.to_json()."""
    return {
        "type": "object",
        "description": "The discovered MIG profile table (GpuModel JSON).",
        "required": ["model", "grid", "compute_budget", "profiles"],
        "properties": {
            "model": _string("Short model name.", 64),
            "grid": _int("Memory slices of the GPU.", 64),
            "compute_budget": _int("Compute slices of the GPU.", 64),
            "memory_gib": _int("Total memory in GiB.", 100000),
            "products": {
                "type": "array",
                "maxItems": 32,
                "items": _string("nvidia.com/gpu.product label value.", 128),
            },
            "profiles": {
                "type": "array",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "required": [
                        "id",
                        "name",
                        "compute",
                        "memory_mib",
                        "size",
                        "max_count",
                        "starts",
                    ],
                    "properties": {
                        "id": _int("NVML profile id.", 255),
                        "name": _string("Profile name.", 64),
                        "compute": _int("Compute slices.", 64),
                        "memory_mib": _int("Memory in MiB.", 10_000_000),
                        "size": _int("Placement size in memory slices.", 64),
                        "max_count": _int("Most instances of this profile per GPU.", 64),
                        "starts": {
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "integer", "minimum": 0, "maximum": 63},
                        },
                        "media": {
                            "type": "string",
                            "enum": ["none", "me", "all_me", "no_me", "gfx"],
                        },
                    },
                },
            },
        },
    }


def _gpu_list(properties: dict[str, Any]) -> dict[str, Any]:
    """A list of per-GPU entries keyed by GPU index (spec and status share the shape)."""
    return {
        "type": "array",
        "maxItems": c.MAX_GPUS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["index"],
        "items": {
            "type": "object",
            "required": ["index"],
            "properties": {"index": _int("GPU index (NVML).", 63), **properties},
        },
    }


def _conditions() -> dict[str, Any]:
    """metav1.Condition, as the Kubernetes API conventions define it."""
    return {
        "type": "array",
        "maxItems": c.MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": _CONDITION_TYPE_PATTERN,
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "message": {"type": "string", "maxLength": 32768},
            },
        },
    }


def _schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Desired (spec, controller) and observed (status, agent) MIG layouts "
        "of one node's GPUs. Named after the node.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "description": "Desired layouts, written only by the controller.",
                "properties": {
                    "gpus": _gpu_list(
                        {
                            "instances": {
                                "type": "array",
                                "description": "The full desired layout of this GPU.",
                                "maxItems": c.MAX_INSTANCES,
                                "items": _desired_instance(),
                            },
                        }
                    ),
                },
            },
            "status": {
                "type": "object",
                "description": "Observed state, written only by the node agent.",
                "properties": {
                    "observedGeneration": {
                        "type": "integer",
                        "format": "int64",
                        "minimum": 0,
                        "description": "The spec generation the agent has finished applying.",
                    },
                    "gpus": _gpu_list(
                        {
                            "uuid": _string("GPU UUID.", 128),
                            "model": _string("Short model name (e.g. A100-80GB).", 64),
                            "product": _string("Product name as GFD labels it.", 128),
                            "migEnabled": {"type": "boolean"},
                            "profiles": _profile_table(),
                            "instances": {
                                "type": "array",
                                "maxItems": c.MAX_INSTANCES,
                                "items": _observed_instance(),
                            },
                        }
                    ),
                    "conditions": _conditions(),
                },
            },
        },
    }


def _condition_column(type_: str) -> dict[str, Any]:
    return {
        "name": type_,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
    }


def mignode_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest of ``mignodes.jupyter-mig.io``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": c.CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "jupyter-mig"},
        },
        "spec": {
            "group": c.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": c.KIND,
                "listKind": c.LIST_KIND,
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": [c.SHORT_NAME],
                "categories": ["jupyter-mig"],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *(_condition_column(t) for t in c.CONDITION_TYPES),
                        {
                            "name": "Generation",
                            "type": "integer",
                            "jsonPath": ".metadata.generation",
                            "priority": 1,
                        },
                        {
                            "name": "Observed",
                            "type": "integer",
                            "jsonPath": ".status.observedGeneration",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": _schema()},
                }
            ],
        },
    }


def crd_manifests() -> list[dict[str, Any]]:
    """Every CRD the project installs, in apply order."""
    return [mignode_crd()]

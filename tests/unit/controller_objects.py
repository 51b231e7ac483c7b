"""Builders of Pod, Node and MigNode dicts (as the API server sends them) for controller tests."""

from __future__ import annotations

from typing import Any

from jupyter_mig.mig.models import MODELS


def pod(
    name: str,
    limits: dict[str, Any] | None = None,
    *,
    namespace: str = "demo",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    unschedulable: bool = True,
    node_name: str | None = None,
    phase: str = "Pending",
    priority: int | None = None,
    node_selector: dict[str, str] | None = None,
    affinity: dict[str, Any] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    owner_kind: str | None = None,
    nominated: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": containers
        if containers is not None
        else [{"name": "main", "resources": {"limits": dict(limits or {})}}]
    }
    if init_containers is not None:
        spec["initContainers"] = init_containers
    if node_name:
        spec["nodeName"] = node_name
    if priority is not None:
        spec["priority"] = priority
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if affinity is not None:
        spec["affinity"] = affinity
    if tolerations is not None:
        spec["tolerations"] = tolerations
    status: dict[str, Any] = {"phase": phase}
    if unschedulable and not node_name:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        ]
    if nominated:
        status["nominatedNodeName"] = nominated
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner_kind:
        metadata["ownerReferences"] = [{"kind": owner_kind, "name": "owner", "uid": "o"}]
    return {"metadata": metadata, "spec": spec, "status": status}


def node(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    taints: list[dict[str, Any]] | None = None,
    unschedulable: bool = False,
    opted_in: bool = True,
) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if opted_in:
        all_labels["jupyter-mig.io/partitioning"] = "dynamic"
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": all_labels}, "spec": spec}


def gpu_status(
    index: int,
    instances: list[tuple[str, int, str | None]] | None = None,
    *,
    model: str = "A100-80GB",
    mig_enabled: bool = True,
    table: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``instances``: (profile name, start, pod or None)."""
    gpu_model = MODELS.get(model)
    return {
        "index": index,
        "uuid": f"GPU-{index}",
        "model": gpu_model.name,
        "product": gpu_model.products[0] if gpu_model.products else gpu_model.name,
        "migEnabled": mig_enabled,
        "profiles": table if table is not None else gpu_model.to_json(),
        "instances": [
            {
                "profile": profile,
                "profileId": gpu_model.profile(profile).nvml_id,
                "start": start,
                "uuid": f"MIG-{index}-{start}",
                **({"pod": holder} if holder else {}),
            }
            for profile, start, holder in instances or []
        ],
    }


def spec_gpu(
    index: int, instances: list[tuple[str, int]], model: str = "A100-80GB"
) -> dict[str, Any]:
    gpu_model = MODELS.get(model)
    return {
        "index": index,
        "instances": [
            {"profile": p, "profileId": gpu_model.profile(p).nvml_id, "start": s}
            for p, s in instances
        ],
    }


def mignode(
    name: str,
    gpus: list[dict[str, Any]] | None = None,
    *,
    spec_gpus: list[dict[str, Any]] | None = None,
    generation: int = 3,
    observed: int | None = 3,
    annotations: dict[str, str] | None = None,
    resource_version: str = "100",
) -> dict[str, Any]:
    """A MigNode; ``spec_gpus`` defaults to the status layout (what a settled node has)."""
    if spec_gpus is None:
        spec_gpus = [
            {
                "index": g["index"],
                "instances": [
                    {"profile": i["profile"], "profileId": i["profileId"], "start": i["start"]}
                    for i in g["instances"]
                ],
            }
            for g in gpus or []
        ]
    status: dict[str, Any] = {}
    if gpus is not None:
        status["gpus"] = gpus
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "jupyter-mig.io/v1alpha1",
        "kind": "MigNode",
        "metadata": {
            "name": name,
            "generation": generation,
            "resourceVersion": resource_version,
            "annotations": annotations or {},
        },
        "spec": {"gpus": spec_gpus},
        "status": status,
    }

"""Typed views of ``MigNode`` objects: parse spec/status dicts, render them back.

Objects are plain dicts as the Kubernetes dynamic client and ``kubectl -o json`` give them.
Instances are matched by NVML profile id and start (:class:`jupyter_mig.mig.layout.Instance`);
profile names are only for people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import MODELS, GpuModel, ModelError, ModelRegistry


class MigNodeError(ValueError):
    """A MigNode object whose spec or status cannot be read."""


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    """A GPU instance that exists on a GPU, and the pod holding it (``namespace/name``)."""

    start: int
    profile_id: int
    profile: str
    uuid: str = ""
    pod: str | None = None

    @property
    def instance(self) -> Instance:
        return Instance(self.start, self.profile_id)

    @property
    def in_use(self) -> bool:
        return self.pod is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "profile": self.profile,
            "profileId": self.profile_id,
            "start": self.start,
        }
        if self.uuid:
            data["uuid"] = self.uuid
        if self.pod is not None:
            data["pod"] = self.pod
        return data


@dataclass(frozen=True)
class GpuStatus:
    """One GPU as the agent observed it.

    ``model`` is the published profile table when the agent sent one, else the built-in table
    found by model name or product (``None`` when neither is known).
    """

    index: int
    uuid: str = ""
    model_name: str = ""
    product: str = ""
    mig_enabled: bool = False
    model: GpuModel | None = field(default=None, compare=False)
    instances: tuple[ObservedInstance, ...] = ()

    @property
    def layout(self) -> tuple[Instance, ...]:
        """The instances that exist, sorted (the planner's and the diff's view)."""
        return tuple(sorted(i.instance for i in self.instances))

    @property
    def in_use(self) -> frozenset[Instance]:
        return frozenset(i.instance for i in self.instances if i.in_use)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "uuid": self.uuid,
            "model": self.model.name if self.model is not None else self.model_name,
            "product": self.product,
            "migEnabled": self.mig_enabled,
            "instances": [
                i.to_json() for i in sorted(self.instances, key=lambda i: (i.start, i.profile_id))
            ],
        }
        if self.model is not None:
            data["profiles"] = self.model.to_json()
        return data


@dataclass(frozen=True)
class NodeStatus:
    """The status of one MigNode."""

    observed_generation: int | None = None
    gpus: tuple[GpuStatus, ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()

    def gpu(self, index: int) -> GpuStatus | None:
        return next((g for g in self.gpus if g.index == index), None)


def parse_status(obj: Mapping[str, Any], registry: ModelRegistry = MODELS) -> NodeStatus:
    """The typed status of a MigNode (empty when the agent has not reported yet)."""
    status = obj.get("status") or {}
    if not isinstance(status, Mapping):
        raise MigNodeError(f"{_name(obj)}: status must be an object")
    generation = status.get("observedGeneration")
    if generation is not None and (isinstance(generation, bool) or not isinstance(generation, int)):
        raise MigNodeError(f"{_name(obj)}: status.observedGeneration must be an integer")
    gpus = tuple(
        _parse_gpu_status(g, f"{_name(obj)}: status.gpus[{i}]", registry)
        for i, g in enumerate(_list(status.get("gpus"), f"{_name(obj)}: status.gpus"))
    )
    conditions = tuple(
        dict(cond)
        for cond in _list(status.get("conditions"), f"{_name(obj)}: status.conditions")
        if isinstance(cond, Mapping)
    )
    return NodeStatus(generation, gpus, conditions)


def _parse_gpu_status(data: Any, where: str, registry: ModelRegistry) -> GpuStatus:
    if not isinstance(data, Mapping):
        raise MigNodeError(f"{where}: must be an object")
    model_name = str(data.get("model") or "")
    product = str(data.get("product") or "")
    model: GpuModel | None
    if data.get("profiles"):
        try:
            model = GpuModel.from_json(dict(data["profiles"]), f"{where}.profiles")
        except (ModelError, TypeError, ValueError) as err:
            raise MigNodeError(str(err)) from None
    else:
        model = registry.find(model_name) if model_name else None
        if model is None and product:
            model = registry.find(product)
    instances = tuple(
        ObservedInstance(
            start=_int(inst, "start", f"{where}.instances[{j}]"),
            profile_id=_int(inst, "profileId", f"{where}.instances[{j}]"),
            profile=str(inst.get("profile") or ""),
            uuid=str(inst.get("uuid") or ""),
            pod=str(inst["pod"]) if inst.get("pod") else None,
        )
        for j, inst in enumerate(_list(data.get("instances"), f"{where}.instances"))
    )
    return GpuStatus(
        index=_int(data, "index", where),
        uuid=str(data.get("uuid") or ""),
        model_name=model_name,
        product=product,
        mig_enabled=bool(data.get("migEnabled", False)),
        model=model,
        instances=instances,
    )


def render_status(
    gpus: Sequence[GpuStatus],
    observed_generation: int | None,
    conditions: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The ``status`` dict the agent writes through the status subresource."""
    status: dict[str, Any] = {
        "gpus": [g.to_json() for g in sorted(gpus, key=lambda g: g.index)],
        "conditions": [dict(cond) for cond in conditions],
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    return status


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


def desired_layouts(obj: Mapping[str, Any]) -> dict[int, tuple[Instance, ...]]:
    """GPU index → desired instances (sorted), from ``spec.gpus``.

    Only the shape is checked here; whether a layout is valid for the GPU is the agent's
    question (:func:`jupyter_mig.mig.layout.layout_errors`).
    """
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise MigNodeError(f"{_name(obj)}: spec must be an object")
    layouts: dict[int, tuple[Instance, ...]] = {}
    for i, gpu in enumerate(_list(spec.get("gpus"), f"{_name(obj)}: spec.gpus")):
        where = f"{_name(obj)}: spec.gpus[{i}]"
        if not isinstance(gpu, Mapping):
            raise MigNodeError(f"{where}: must be an object")
        index = _int(gpu, "index", where)
        if index in layouts:
            raise MigNodeError(f"{where}: GPU index {index} appears twice")
        layouts[index] = tuple(
            sorted(
                Instance(
                    _int(inst, "start", f"{where}.instances[{j}]"),
                    _int(inst, "profileId", f"{where}.instances[{j}]"),
                )
                for j, inst in enumerate(_list(gpu.get("instances"), f"{where}.instances"))
            )
        )
    return layouts


def render_spec(
    layouts: Mapping[int, Sequence[Instance]], models: Mapping[int, GpuModel]
) -> dict[str, Any]:
    """The ``spec`` dict for desired layouts; ``models`` names the profiles of each GPU."""
    gpus = []
    for index in sorted(layouts):
        model = models[index]
        gpus.append(
            {
                "index": index,
                "instances": [
                    {
                        "profile": model.profile(inst.profile_id).name,
                        "profileId": inst.profile_id,
                        "start": inst.start,
                    }
                    for inst in sorted(layouts[index])
                ],
            }
        )
    return {"gpus": gpus}


def new_mignode(
    node_name: str, node_uid: str | None = None, spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A MigNode for a node; owned by the Node (when its uid is given) so it goes with it."""
    metadata: dict[str, Any] = {"name": node_name}
    if node_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}
        ]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": metadata,
        "spec": dict(spec) if spec is not None else {"gpus": []},
    }


def spec_observed(obj: Mapping[str, Any]) -> bool:
    """The handshake: the agent has finished applying the current spec generation."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and observed == generation


def is_interactive(labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None) -> bool:
    """Interactive pods (JupyterHub servers, or annotated) trigger a planning round at once."""
    if (labels or {}).get(c.SINGLEUSER_LABEL) == c.SINGLEUSER_VALUE:
        return True
    return (annotations or {}).get(c.INTERACTIVE_ANNOTATION, "").strip().lower() == "true"


def is_opted_in(labels: Mapping[str, str] | None) -> bool:
    return (labels or {}).get(c.PARTITIONING_LABEL) == c.PARTITIONING_DYNAMIC


# --------------------------------------------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    return f"MigNode {(obj.get('metadata') or {}).get('name', '?')}"


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MigNodeError(f"{where}: must be a list")
    return value


def _int(data: Any, key: str, where: str) -> int:
    if not isinstance(data, Mapping):
        raise MigNodeError(f"{where}: must be an object")
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MigNodeError(f"{where}.{key}: expected an integer >= 0, got {value!r}")
    return value

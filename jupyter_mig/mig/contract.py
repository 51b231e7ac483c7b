"""The planner's JSON contract (docs/planner.md): parse and check input, render output.

Every problem is reported as one line that names the field, e.g.
``pending[2].requests["0gb"]: a GPU slice size must be positive``.
"""

from __future__ import annotations

from typing import Any

from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import GpuModel, ModelError, ModelRegistry
from jupyter_mig.mig.planner import Demand, GpuSnapshot, NodeSnapshot, ObservedInstance, Plan
from jupyter_mig.mig.sizes import SizeError, SizeRequest, parse_size, resolve

MAX_INSTANCES_PER_POD = 56  # 8 GPUs x 7 slices: more can never fit on one node


class ContractError(ValueError):
    """Input that does not follow the contract; the message names the field."""


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if isinstance(value, bool) and kind in (int, (int,)):
        raise ContractError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ContractError(f"{where}: expected {what}, got {type(value).__name__}")
    return value


def parse_input(
    data: Any, registry: ModelRegistry | None = None
) -> tuple[list[NodeSnapshot], list[Demand]]:
    """Turn a contract document into planner input; raise :class:`ContractError` on any problem."""
    _expect(data, dict, "input", 'an object with "nodes" and "pending"')
    unknown = set(data) - {"nodes", "pending", "models"}
    if unknown:
        raise ContractError(f"input: unknown field {sorted(unknown)[0]!r}")
    registry = registry or ModelRegistry()
    for i, table in enumerate(_expect(data.get("models", []), list, "models", "a list")):
        try:
            registry.register(GpuModel.from_json(table, f"models[{i}]"))
        except ModelError as err:
            raise ContractError(str(err)) from None
    nodes = [
        _parse_node(n, f"nodes[{i}]", registry)
        for i, n in enumerate(_expect(data.get("nodes"), list, "nodes", "a list"))
    ]
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise ContractError(f"nodes[{i}].name: duplicate node name {node.name!r}")
        seen.add(node.name)
    pending_data = _expect(data.get("pending", []), list, "pending", "a list")
    models = list(registry)
    demands = [_parse_demand(p, f"pending[{i}]", models) for i, p in enumerate(pending_data)]
    names: set[str] = set()
    for i, demand in enumerate(demands):
        if demand.name in names:
            raise ContractError(f"pending[{i}].name: duplicate pod name {demand.name!r}")
        names.add(demand.name)
    return nodes, demands


def _parse_node(data: Any, where: str, registry: ModelRegistry) -> NodeSnapshot:
    _expect(data, dict, where, "an object")
    name = _expect(data.get("name"), str, f"{where}.name", "a node name")
    if not name:
        raise ContractError(f"{where}.name: must not be empty")
    labels = _expect(data.get("labels", {}), dict, f"{where}.labels", "an object")
    for key, value in labels.items():
        _expect(value, str, f"{where}.labels[{key!r}]", "a string")
    gpus = []
    indexes: set[int] = set()
    for g, gpu in enumerate(_expect(data.get("gpus", []), list, f"{where}.gpus", "a list")):
        snap = _parse_gpu(gpu, f"{where}.gpus[{g}]", registry)
        if snap.index in indexes:
            raise ContractError(f"{where}.gpus[{g}].index: duplicate GPU index {snap.index}")
        indexes.add(snap.index)
        gpus.append(snap)
    return NodeSnapshot(name=name, gpus=tuple(gpus), labels=tuple(sorted(labels.items())))


def _parse_gpu(data: Any, where: str, registry: ModelRegistry) -> GpuSnapshot:
    _expect(data, dict, where, "an object")
    index = _expect(data.get("index"), int, f"{where}.index", "a GPU index (integer)")
    if index < 0:
        raise ContractError(f"{where}.index: must be >= 0, got {index}")
    model_name = _expect(data.get("model"), str, f"{where}.model", "a GPU model name")
    try:
        model = registry.get(model_name)
    except ModelError as err:
        raise ContractError(f"{where}.model: {err}") from None
    instances = []
    raw = _expect(data.get("instances", []), list, f"{where}.instances", "a list")
    for k, inst in enumerate(raw):
        here = f"{where}.instances[{k}]"
        _expect(inst, dict, here, "an object")
        ref = inst.get("profile")
        if isinstance(ref, bool) or not isinstance(ref, str | int):
            raise ContractError(f"{here}.profile: expected a profile name or NVML id")
        try:
            profile = model.profile(ref)
        except ModelError as err:
            raise ContractError(f"{here}.profile: {err}") from None
        start = _expect(inst.get("start"), int, f"{here}.start", "a placement start (integer)")
        used = _expect(inst.get("used", False), bool, f"{here}.used", "true or false")
        instances.append(ObservedInstance(profile.nvml_id, start, used))
    errors = layout_errors(model, [Instance(i.start, i.profile_id) for i in instances])
    if errors:
        raise ContractError(f"{where}.instances: invalid {model.name} layout: {errors[0]}")
    return GpuSnapshot(index=index, model=model, instances=tuple(instances))


def _parse_demand(data: Any, where: str, models: list[GpuModel]) -> Demand:
    _expect(data, dict, where, "an object")
    name = _expect(data.get("name"), str, f"{where}.name", "a pod name")
    if not name:
        raise ContractError(f"{where}.name: must not be empty")
    requests = _expect(data.get("requests"), dict, f"{where}.requests", "an object")
    if not requests:
        raise ContractError(f'{where}.requests: name at least one slice, e.g. {{"1g.10gb": 1}}')
    items: list[SizeRequest] = []
    for size, count in requests.items():
        here = f"{where}.requests[{size!r}]"
        _expect(count, int, here, "a count (integer)")
        if not 1 <= count <= MAX_INSTANCES_PER_POD:
            raise ContractError(
                f"{here}: count must be between 1 and {MAX_INSTANCES_PER_POD}, got {count}"
            )
        try:
            request = parse_size(size)
            resolve(request, models)
        except SizeError as err:
            raise ContractError(f"{here}: {err}") from None
        items.extend([request] * count)
    if len(items) > MAX_INSTANCES_PER_POD:
        raise ContractError(f"{where}.requests: more than {MAX_INSTANCES_PER_POD} instances")
    nodes = data.get("nodes")
    if nodes is not None:
        _expect(nodes, list, f"{where}.nodes", "a list of node names")
        for n in nodes:
            _expect(n, str, f"{where}.nodes", "a list of node names")
    priority = _expect(data.get("priority", 0), int, f"{where}.priority", "an integer")
    interactive = _expect(data.get("interactive", False), bool, f"{where}.interactive", "a bool")
    return Demand(
        name=name,
        items=tuple(items),
        nodes=None if nodes is None else tuple(nodes),
        priority=priority,
        interactive=interactive,
    )


def render_plan(plan: Plan, nodes: list[NodeSnapshot]) -> dict[str, Any]:
    """The output document of the contract."""
    models = {(n.name, g.index): g.model for n in nodes for g in n.gpus}

    def name(node: str, gpu: int, profile_id: int) -> str:
        return models[(node, gpu)].by_id[profile_id].name

    return {
        "gpus": [
            {
                "node": node,
                "index": index,
                "instances": [
                    {"profile": name(node, index, i.profile_id), "start": i.start}
                    for i in instances
                ],
            }
            for (node, index), instances in sorted(plan.layouts.items())
        ],
        "placements": {
            pod: [
                {
                    "node": a.node,
                    "gpu": a.gpu,
                    "profile": name(a.node, a.gpu, a.profile_id),
                    "start": a.start,
                }
                for a in assignments
            ]
            for pod, assignments in sorted(plan.placements.items())
        },
        "unplaced": list(plan.unplaced),
        "ops": {"create": plan.creates, "destroy": plan.destroys},
    }

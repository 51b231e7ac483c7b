"""The MigNode CRD as data: structural, bounded, and covering what the helpers write."""

from __future__ import annotations

import re
from typing import Any

import pytest
from support.mignode import observed_gpu

from jupyter_mig.api import constants as c
from jupyter_mig.api.conditions import set_condition
from jupyter_mig.api.crd import crd_manifests, mignode_crd
from jupyter_mig.api.mignode import (
    new_mignode,
    render_spec,
    render_status,
)
from jupyter_mig.mig.layout import enumerate_layouts
from jupyter_mig.mig.models import BUILTIN_MODELS, GpuModel

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
}


def _errors(schema: dict[str, Any], data: Any, where: str = "") -> list[str]:
    """What the API server's structural validation (strict field validation) would refuse.

    Covers the keywords the CRD uses; the integration tests check the real API server.
    """
    expected = _TYPES[schema["type"]]
    if not isinstance(data, expected) or (expected is int and isinstance(data, bool)):
        return [f"{where}: expected {schema['type']}"]
    errors = []
    if isinstance(data, dict) and "properties" in schema:
        for key in schema.get("required", []):
            if key not in data:
                errors.append(f"{where}.{key}: required")
        for key, value in data.items():
            if key not in schema["properties"]:
                errors.append(f"{where}.{key}: unknown field")
            else:
                errors += _errors(schema["properties"][key], value, f"{where}.{key}")
    if isinstance(data, list):
        if len(data) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(data):
            errors += _errors(schema["items"], item, f"{where}[{i}]")
    if isinstance(data, int) and not schema.get("minimum", data) <= data <= schema.get(
        "maximum", data
    ):
        errors.append(f"{where}: {data} out of range")
    if isinstance(data, str):
        if len(data) > schema.get("maxLength", len(data)):
            errors.append(f"{where}: too long")
        if "enum" in schema and data not in schema["enum"]:
            errors.append(f"{where}: not one of {schema['enum']}")
        if "pattern" in schema and not re.search(schema["pattern"], data):
            errors.append(f"{where}: does not match {schema['pattern']}")
    return errors


VERSION = mignode_crd()["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def _walk(schema: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(where, schema)]
    for key, child in schema.get("properties", {}).items():
        nodes += _walk(child, f"{where}.{key}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{where}[]")
    return nodes


def test_schema_is_structural_and_bounded() -> None:
    for where, node in _walk(SCHEMA):
        assert "type" in node, f"{where}: structural schemas need a type everywhere"
        if node["type"] == "array":
            assert "maxItems" in node, f"{where}: unbounded list"
        if node["type"] == "object" and where not in ("", ".metadata"):
            assert "properties" in node, f"{where}: free-form object"
        assert "x-kubernetes-preserve-unknown-fields" not in node, where


def test_crd_identity_and_columns() -> None:
    crd = mignode_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{c.PLURAL}.{c.GROUP}"
    assert (spec["group"], spec["scope"], VERSION["name"]) == (c.GROUP, "Cluster", c.VERSION)
    assert spec["names"]["shortNames"] == [c.SHORT_NAME]
    assert VERSION["subresources"] == {"status": {}}
    columns = {col["name"]: col["jsonPath"] for col in VERSION["additionalPrinterColumns"]}
    for type_ in c.CONDITION_TYPES:
        assert f'@.type=="{type_}"' in columns[type_]
    assert columns["Observed"] == ".status.observedGeneration"
    assert columns["Age"] == ".metadata.creationTimestamp"
    assert crd_manifests() == [crd]


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.name)
def test_everything_the_helpers_write_fits_the_schema(model: GpuModel) -> None:
    """Nothing the agent or controller writes would be pruned or refused."""
    layouts = dict(enumerate(enumerate_layouts(model, maximal_only=True)))
    layouts = {i: layouts[i] for i in list(layouts)[: c.MAX_GPUS]}
    obj = new_mignode("gpu-node-1", "uid-1", render_spec(layouts, dict.fromkeys(layouts, model)))
    gpus = [
        observed_gpu(index, model, layout, lambda n: "a-namespace/a-pod")
        for index, layout in layouts.items()
    ]
    conditions: list[dict[str, Any]] = []
    for type_, reason in zip(
        c.CONDITION_TYPES,
        (c.REASON_APPLIED, c.REASON_IDLE, c.REASON_IN_USE_IN_THE_WAY),
        strict=True,
    ):
        conditions = set_condition(conditions, type_, "True", reason, "why", 3)
    obj["status"] = render_status(gpus, 3, conditions)
    del obj["metadata"]
    assert _errors(SCHEMA, obj) == []


@pytest.mark.parametrize(
    ("instance", "problem"),
    [
        ({"profileId": 19, "start": -1}, "out of range"),
        ({"start": 0}, "profileId: required"),
        ({"profileId": 19}, "start: required"),
        ({"profileId": 19, "start": 0, "placement": 1}, "unknown field"),
        ({"profileId": 19, "start": 0, "profile": "1g 10gb"}, "does not match"),
    ],
)
def test_schema_refuses_bad_instances(instance: dict[str, Any], problem: str) -> None:
    obj = new_mignode("n", spec={"gpus": [{"index": 0, "instances": [instance]}]})
    del obj["metadata"]
    errors = _errors(SCHEMA, obj)
    assert any(problem in e for e in errors), errors


def test_schema_refuses_unknown_spec_fields_and_long_lists() -> None:
    obj = new_mignode("n", spec={"gpus": [], "extra": 1})
    del obj["metadata"]
    assert _errors(SCHEMA, obj) == [".spec.extra: unknown field"]
    many = [{"profileId": 19, "start": 0}] * (c.MAX_INSTANCES + 1)
    obj = new_mignode("n", spec={"gpus": [{"index": 0, "instances": many}]})
    del obj["metadata"]
    assert _errors(SCHEMA, obj) == [".spec.gpus[0].instances: more than 16 items"]

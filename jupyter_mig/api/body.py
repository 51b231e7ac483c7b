"""Request bodies of the REST APIs (server extension, hub service): JSON objects, checked field
by field, so that ``"saved": "false"`` is refused instead of counting as true.

Each endpoint lists its fields with their JSON types; anything else (an unknown field, a wrong
type, a body that is not a JSON object, or one larger than :data:`MAX_BODY_BYTES`) is a
:class:`BadBody` with one line that names the field and what it must be.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The largest request body accepted: every body here is a few small fields.
MAX_BODY_BYTES = 64 * 1024


class BadBody(ValueError):
    """The body is refused; ``status`` is 400, or 413 when it is too large."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Field:
    """A field's JSON type: ``kind`` is "string", "boolean" or "number"; null allowed or not."""

    kind: str
    nullable: bool = False
    example: str = ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "boolean":
            return isinstance(value, bool)
        if self.kind == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        return isinstance(value, str)

    def describe(self) -> str:
        text = {"boolean": "true or false", "number": "a number", "string": "a string"}[self.kind]
        if self.example:
            text += f" such as {self.example}"
        return text + (" or null" if self.nullable else "")


def json_type(value: Any) -> str:
    """How JSON spells the type of ``value`` (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40])}"
    return "an array" if isinstance(value, list) else "an object"


def parse_body(body: bytes, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The JSON object in ``body`` (empty: ``{}``) with every field checked against ``fields``."""
    if len(body) > MAX_BODY_BYTES:
        raise BadBody(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB", 413)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadBody("the body must be a JSON object (it is not valid JSON)") from None
    if not isinstance(data, dict):
        raise BadBody(f"the body must be a JSON object, not {json_type(data)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadBody(
            f"unknown field {json.dumps(unknown[0][:40])}; the fields are {', '.join(fields)}"
        )
    for name, value in data.items():
        field = fields[name]
        if not field.accepts(value):
            raise BadBody(f"{name} must be {field.describe()}, not {json_type(value)}")
    return data

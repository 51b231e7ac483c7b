"""A renderer for the subset of Helm's Go templates that controller/chart uses.

The Helm binary is not installable here, so tests render the chart with this.  It is strict
where Helm is lenient: an unknown action, function or keyword raises, and printing a missing
value raises (Helm would print nothing), so a typo in the chart fails the tests.

Supported: text, ``{{- ... -}}`` trimming, comments, ``if``/``else``/``end``, ``range`` over a
list (``.`` is the item, ``$`` the top), ``define``/``include``, pipelines of ``.Values...``,
``.Release...``, ``.Chart...``, ``$``, string and integer literals, and the functions include,
toYaml, toJson, nindent, indent, quote, default, not, eq, join, has.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.DOTALL)


class TemplateError(ValueError):
    """The chart uses something this renderer does not support, or refers to a missing value."""


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipeline: str


@dataclass
class _If:
    pipeline: str
    then: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class _Range:
    pipeline: str
    body: list[Any] = field(default_factory=list)


@dataclass
class _Define:
    name: str
    body: list[Any] = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) tokens, with Go's whitespace trimming applied."""
    tokens: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            tokens.append(("action", body))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = source[position:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    return tokens


def _parse(tokens: list[tuple[str, str]], where: str) -> tuple[list[Any], dict[str, _Define]]:
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = []
    current = root
    defines: dict[str, _Define] = {}
    for kind, value in tokens:
        if kind == "text":
            if value:
                current.append(_Text(value))
            continue
        keyword, _, rest = value.partition(" ")
        if keyword == "if":
            node: Any = _If(rest.strip())
            current.append(node)
            stack.append((node, current))
            current = node.then
        elif keyword == "range":
            node = _Range(rest.strip())
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif keyword == "else":
            if not stack or not isinstance(stack[-1][0], _If) or rest.strip():
                raise TemplateError(f"{where}: unsupported else: {value!r}")
            current = stack[-1][0].otherwise
        elif keyword == "define":
            name = json.loads(rest.strip())
            node = _Define(name)
            defines[name] = node
            stack.append((node, current))
            current = node.body
        elif keyword == "end":
            if not stack:
                raise TemplateError(f"{where}: end without a block")
            _, current = stack.pop()
        elif keyword in ("with", "template", "block", "break", "continue"):
            raise TemplateError(f"{where}: the renderer does not support {keyword!r}")
        else:
            current.append(_Action(value))
    if stack:
        raise TemplateError(f"{where}: unclosed block")
    return root, defines


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, Mapping | list | tuple) and not value
    )


def _go_string(value: Any) -> str:
    if value is None:
        raise TemplateError("printing a missing value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        raise TemplateError(f"printing a {type(value).__name__} needs toYaml: {value!r}")
    return str(value)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return "\n".join(pad + line for line in text.split("\n"))


def _quote(*values: Any) -> str:
    return " ".join(json.dumps(_go_string(v)) for v in values)


class Chart:
    """A chart directory: Chart.yaml, values.yaml, templates/, crds/."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata = yaml.safe_load((path / "Chart.yaml").read_text())
        self.values = yaml.safe_load((path / "values.yaml").read_text())
        self.defines: dict[str, _Define] = {}
        self.templates: dict[str, list[Any]] = {}
        for template in sorted((path / "templates").iterdir()):
            tree, defines = _parse(_lex(template.read_text()), template.name)
            self.defines.update(defines)
            if not template.name.startswith("_") and template.suffix in (".yaml", ".yml"):
                self.templates[template.name] = tree
        self._functions: dict[str, Callable[..., Any]] = {
            "include": self._include,
            "toYaml": _to_yaml,
            "nindent": lambda width, text: "\n" + _indent(width, text),
            "indent": _indent,
            "quote": _quote,
            "default": lambda fallback, value=None: value if _truthy(value) else fallback,
            "not": lambda value: not _truthy(value),
            "eq": lambda a, b: a == b,
            "toJson": lambda value: json.dumps(value),
            "join": lambda separator, items: separator.join(_go_string(i) for i in items or []),
            "has": lambda item, items: item in (items or []),
        }
        self._root: Any = None

    def crds(self) -> list[dict[str, Any]]:
        documents: list[dict[str, Any]] = []
        for crd_file in sorted((self.path / "crds").glob("*.yaml")):
            documents.extend(d for d in yaml.safe_load_all(crd_file.read_text()) if d)
        return documents

    def render(
        self,
        values: Mapping[str, Any] | None = None,
        release: str = "jupyter-mig",
        namespace: str = "jupyter-mig",
    ) -> list[dict[str, Any]]:
        """Every manifest the templates produce (CRDs not included), as parsed YAML."""
        context = {
            "Values": _merge(copy.deepcopy(self.values), values or {}),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {
                "Name": self.metadata["name"],
                "Version": self.metadata["version"],
                "AppVersion": self.metadata["appVersion"],
            },
        }
        manifests: list[dict[str, Any]] = []
        self._root = context
        for name, tree in self.templates.items():
            text = self._execute(tree, context, name)
            try:
                manifests.extend(d for d in yaml.safe_load_all(text) if d)
            except yaml.YAMLError as err:
                raise TemplateError(f"{name} renders invalid YAML: {err}\n{text}") from None
        return manifests

    def _execute(self, tree: list[Any], dot: Any, where: str) -> str:
        out: list[str] = []
        for node in tree:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(_go_string(self._pipeline(node.pipeline, dot, where)))
            elif isinstance(node, _If):
                branch = (
                    node.then
                    if _truthy(self._pipeline(node.pipeline, dot, where))
                    else node.otherwise
                )
                out.append(self._execute(branch, dot, where))
            elif isinstance(node, _Range):
                items = self._pipeline(node.pipeline, dot, where)
                if not isinstance(items, list | tuple | type(None)):
                    raise TemplateError(f"{where}: range over a {type(items).__name__}")
                out.extend(self._execute(node.body, item, where) for item in items or [])
        return "".join(out)

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include of undefined template {name!r}")
        return self._execute(self.defines[name].body, dot, name)

    def _pipeline(self, pipeline: str, dot: Any, where: str) -> Any:
        result: Any = None
        for position, command in enumerate(_split_pipes(pipeline)):
            words = shlex.split(command, posix=False)
            if not words:
                raise TemplateError(f"{where}: empty command in {pipeline!r}")
            args = [self._argument(word, dot, where) for word in words[1:]]
            if position > 0:
                args.append(result)
            head = words[0]
            if head in self._functions:
                result = self._functions[head](*args)
            elif args:
                raise TemplateError(f"{where}: {head!r} is not a function in {pipeline!r}")
            else:
                result = self._argument(head, dot, where)
        return result

    def _argument(self, word: str, dot: Any, where: str) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word == ".":
            return dot
        if word == "$":
            return self._root
        if word.startswith((".", "$.")):
            value = self._root if word.startswith("$") else dot
            for key in word.removeprefix("$").strip(".").split("."):
                value = value.get(key) if isinstance(value, Mapping) else None
            return value
        raise TemplateError(f"{where}: unsupported word {word!r}")


def _split_pipes(pipeline: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in pipeline:
        if char == '"':
            quoted = not quoted
        if char == "|" and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base

"""Which package may import which (docs/architecture.md), read from every module's imports.

Every ``import`` counts, also one inside a function (the project imports heavy things lazily).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jupyter_mig"
TESTS = ROOT / "tests"

#: The parts that talk to each other only through the API server or HTTP, never by import.
PARTS = frozenset({"controller", "agent", "notebook", "hub", "simnode"})
#: The ground floor: shared by the parts, importing none of them.
GROUND = frozenset(
    {"mig", "errors", "api", "slices", "kernels", "kube", "nvml", "podresources", "deviceplugin"}
)
#: What each ground-floor package may import of the project (besides itself).
GROUND_ALLOWED: dict[str, frozenset[str]] = {
    "mig": frozenset(),
    "errors": frozenset(),
    "kube": frozenset({"errors"}),
    "api": frozenset({"mig", "errors"}),
    "slices": frozenset({"api", "mig", "errors"}),
    "kernels": frozenset({"api", "mig", "errors", "slices"}),
    "deviceplugin": frozenset({"nvml", "errors"}),
    "nvml": frozenset({"mig", "errors"}),
    "podresources": frozenset(),
}
#: Development infrastructure: no runtime package imports it.
DEVELOPMENT = "devcluster"


def _package_of(path: Path) -> str:
    """``controller`` for jupyter_mig/controller/x.py, ``cli`` for jupyter_mig/cli.py."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module ``source`` imports (absolute names; relative imports resolved)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _test_module_names() -> frozenset[str]:
    """Top-level names a test helper is importable by (``support``, ``chart_render``, ...)."""
    names = {"tests"}
    for folder in (TESTS, *(p for p in TESTS.iterdir() if p.is_dir())):
        if (folder / "__init__.py").is_file():
            names.add(folder.name)  # a package: importable by its own name only
        else:
            names |= {path.stem for path in folder.glob("*.py")}
    return frozenset(names)


def violations(package: str, imports: Iterator[str], test_names: frozenset[str]) -> list[str]:
    """What is wrong with ``package`` importing ``imports``."""
    found = []
    for name in imports:
        top = name.split(".")[0]
        if top in test_names:
            found.append(f"imports the tests' {name}")
            continue
        if top != "jupyter_mig" or "." not in name:
            continue
        target = name.split(".")[1]
        if target == package or target.startswith("__"):
            continue
        if target == DEVELOPMENT:
            found.append(f"imports development infrastructure {name}")
        elif package in PARTS and target in PARTS:
            found.append(f"part {package} imports part {name}")
        elif package in GROUND and target not in GROUND_ALLOWED[package]:
            found.append(f"ground-floor {package} imports {name}")
    return found


def _runtime_modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if _package_of(p) != DEVELOPMENT and "_pb2" not in p.name
    )


@pytest.mark.parametrize("path", _runtime_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_allowed_directions(path: Path) -> None:
    names = imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert violations(_package_of(path), names, _test_module_names()) == []


def test_devcluster_imports_nothing_of_the_runtime() -> None:
    for path in (PACKAGE / DEVELOPMENT).rglob("*.py"):
        names = imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py")
        project = {n.split(".")[1] for n in names if n.startswith("jupyter_mig.")}
        assert project <= {DEVELOPMENT, "errors"}, path


@pytest.mark.parametrize(
    ("package", "source", "problem"),
    [
        ("controller", "def f():\n    from jupyter_mig.agent import kube\n", "part controller"),
        ("hub", "import jupyter_mig.notebook.client\n", "part hub imports part"),
        ("mig", "from jupyter_mig.api import constants\n", "ground-floor mig"),
        ("kube", "from jupyter_mig.controller import manager\n", "ground-floor kube"),
        ("agent", "from jupyter_mig import devcluster\n", "development infrastructure"),
        ("simnode", "from support.net import free_port\n", "the tests' support"),
    ],
)
def test_the_check_sees_a_forbidden_import(package: str, source: str, problem: str) -> None:
    module = f"jupyter_mig.{package}.x"
    found = violations(package, imported_modules(source, module, False), _test_module_names())
    assert found and all(problem in line for line in found), found


def test_relative_imports_are_resolved() -> None:
    source = "from ..agent import kube\nfrom . import informer\n"
    names = set(imported_modules(source, "jupyter_mig.controller.manager", False))
    assert {"jupyter_mig.agent.kube", "jupyter_mig.controller.informer"} <= names

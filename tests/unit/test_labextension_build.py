"""The committed prebuilt labextension matches its sources and is wired into the wheel."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
LABEXTENSION = ROOT / "labextension"
OUTPUT = ROOT / "jupyter_mig" / "labextension"


def _fingerprint_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "labextension_fingerprint", LABEXTENSION / "scripts" / "fingerprint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_build_matches_the_sources() -> None:
    fingerprint = _fingerprint_module()
    now = fingerprint.fingerprints()
    recorded = fingerprint.recorded()
    assert now["sources"] == recorded["sources"], (
        "labextension sources changed since the last build: run labextension/scripts/build.sh"
    )
    assert now["output"] == recorded["output"], (
        "jupyter_mig/labextension differs from what labextension/scripts/build.sh produced: "
        "rebuild it instead of editing the output"
    )


def test_build_output_is_a_prebuilt_extension_of_our_package() -> None:
    source = json.loads((LABEXTENSION / "package.json").read_text())
    built = json.loads((OUTPUT / "package.json").read_text())
    assert built["name"] == source["name"]
    assert "jupyter-mig" in source["name"]
    load = built["jupyterlab"]["_build"]["load"]
    assert (OUTPUT / load).is_file()


def test_wheel_ships_the_extension_and_install_json_under_the_npm_name() -> None:
    name = json.loads((LABEXTENSION / "package.json").read_text())["name"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    target = f"share/jupyter/labextensions/{name}"
    assert shared["jupyter_mig/labextension"] == target
    assert shared["install.json"] == f"{target}/install.json"
    install = json.loads((ROOT / "install.json").read_text())
    assert install["packageName"] == pyproject["project"]["name"]

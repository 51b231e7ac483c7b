"""The documented Zero to JupyterHub values (examples/z2jh-values.yaml) as a test hub's config.

Zero to JupyterHub runs each ``hub.extraConfig`` snippet, in the order of their keys, in its
``jupyterhub_config.py``, where ``z2jh.get_config`` reads the values.  The test hubs do the same
with a stand-in ``z2jh`` module over the same file, so the documented configuration is the tested
one; only the addresses (and the restart timeout) are the test's own.  What the chart itself turns
into hub configuration that matters here is done as the chart does: ``singleuser.profileList``
(read by the snippet) and the user pods' PriorityClass from ``scheduling.podPriority``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

VALUES_FILE = Path(__file__).resolve().parents[2] / "examples" / "z2jh-values.yaml"
#: The PriorityClass the chart gives user pods when ``scheduling.podPriority.enabled``.
PRIORITY_CLASS = "jupyter-mig-test-default-priority"

Z2JH_STANDIN = '''
"""Stand-in for Zero to JupyterHub's z2jh module: get_config over the values file."""
import json

_VALUES = json.loads({values!r})


def get_config(key, default=None):
    value = _VALUES
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value
'''


def load_values(**addresses: Any) -> dict[str, Any]:
    """The documented values, with ``custom.jupyter-mig`` entries replaced by ``addresses``."""
    values: dict[str, Any] = yaml.safe_load(VALUES_FILE.read_text())
    values["custom"]["jupyter-mig"].update(addresses)
    return values


def hub_config(values: dict[str, Any], directory: Path) -> str:
    """Config text to append to a test hub's ``jupyterhub_config.py`` (writes ``z2jh.py``)."""
    (directory / "z2jh.py").write_text(Z2JH_STANDIN.format(values=json.dumps(values)))
    lines = [f"import sys\nsys.path.insert(0, {str(directory)!r})  # the z2jh stand-in\n"]
    priority = values.get("scheduling", {}).get("podPriority", {})
    if priority.get("enabled"):
        lines.append(f"c.KubeSpawner.priority_class_name = {PRIORITY_CLASS!r}\n")
    for name, snippet in sorted(values["hub"]["extraConfig"].items()):
        lines.append(f"# hub.extraConfig.{name}\n{snippet}\n")
    return "\n".join(lines)


def default_priority(values: dict[str, Any]) -> int | None:
    """The priority value of user pods, or None when the values enable no pod priority."""
    priority = values.get("scheduling", {}).get("podPriority", {})
    return int(priority.get("defaultPriority", 0)) if priority.get("enabled") else None

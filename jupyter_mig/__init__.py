"""jupyter-mig: GPU slices by size on Kubernetes, from notebooks and ordinary pods.

This module stays light: the controller and agent images import the package without Jupyter,
so the notebook-side names load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GpuSlicePicker": "jupyter_mig.notebook.widget",
    "load_ipython_extension": "jupyter_mig.notebook.magic",
    "unload_ipython_extension": "jupyter_mig.notebook.magic",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jupyter_mig' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Found by jupyter_server through jupyter-config/jupyter_server_config.d/jupyter_mig.json."""
    return [{"module": "jupyter_mig.notebook.extension"}]

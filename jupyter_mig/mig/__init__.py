"""The pure MIG domain: models, layouts, size requests and the planner.  No I/O here."""

from jupyter_mig.mig.layout import Instance, LayoutError, enumerate_layouts, is_valid, layout_errors
from jupyter_mig.mig.models import MODELS, GpuModel, ModelError, ModelRegistry, Profile, get_model
from jupyter_mig.mig.planner import (
    Assignment,
    Demand,
    GpuSnapshot,
    NodeSnapshot,
    ObservedInstance,
    Plan,
    plan_round,
)
from jupyter_mig.mig.sizes import SizeError, SizeRequest, parse_size, resolve, resolve_for_model

__all__ = [
    "MODELS",
    "Assignment",
    "Demand",
    "GpuModel",
    "GpuSnapshot",
    "Instance",
    "LayoutError",
    "ModelError",
    "ModelRegistry",
    "NodeSnapshot",
    "ObservedInstance",
    "Plan",
    "Profile",
    "SizeError",
    "SizeRequest",
    "enumerate_layouts",
    "get_model",
    "is_valid",
    "layout_errors",
    "parse_size",
    "plan_round",
    "resolve",
    "resolve_for_model",
]

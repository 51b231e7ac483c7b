"""The sim node's device plugin: which MIG devices the node advertises, from the simulated GPUs.

Like the NVIDIA device plugin under ``mig.strategy=mixed``, each MIG device (a GPU instance with
its compute instance) becomes one device of the extended resource
``nvidia.com/mig-<profile resource name>``, identified by its MIG UUID.  The plugin reads the
devices at start and again only when asked (``DIR/device-plugin.refresh``), so between a layout
change and a refresh the node advertises stale devices, as a real node does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from jupyter_mig.api import constants as c
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml.simgpu import read_devices

REFRESH_FILE = "device-plugin.refresh"

#: resource name -> MIG UUIDs, sorted.
DeviceTable = dict[str, list[str]]


def read_device_table(state_dir: str | os.PathLike[str]) -> DeviceTable:
    """Every usable MIG device in the simulated GPUs' state, by extended resource."""
    gpus, _busy = read_devices(state_dir)
    table: DeviceTable = {}
    for gpu in gpus:
        model = MODELS.get(gpu["model"])
        for instance in gpu["instances"]:
            if not instance["mig_uuid"]:
                continue  # a GI without compute instance is no device
            profile = model.by_id[instance["profile_id"]]
            resource = f"{c.MIG_RESOURCE_PREFIX}{profile.resource_name}"
            table.setdefault(resource, []).append(instance["mig_uuid"])
    return {resource: sorted(ids) for resource, ids in sorted(table.items())}


def refresh_stamp(state_dir: str | os.PathLike[str]) -> float | None:
    """The mtime of the refresh request file (None before the first request)."""
    try:
        return (Path(state_dir) / REFRESH_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


def node_capacity(
    advertised: DeviceTable, on_node: Iterable[str], base: dict[str, str]
) -> dict[str, str]:
    """Node capacity (= allocatable): ``base`` plus one count per MIG resource.

    MIG resources the Node shows now (``on_node``) but the plugin no longer advertises stay at
    ``"0"``, as a kubelet keeps a resource whose plugin reports no healthy device.
    """
    capacity = dict(base)
    for resource in on_node:
        if resource.startswith(c.MIG_RESOURCE_PREFIX):
            capacity[resource] = "0"
    for resource, ids in advertised.items():
        capacity[resource] = str(len(ids))
    return capacity

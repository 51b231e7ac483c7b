"""What the kernel provisioner and the hub service agree on: API paths, fields, ports, labels.

The connection key travels in the create request (server → hub service, with the server's own
token) and from there only into a Secret that the kernel pod mounts: never into the pod spec.
"""

from __future__ import annotations

import re
from typing import Final

from jupyter_mig.api.constants import GROUP

#: The provisioner's name under the ``jupyter_client.kernel_provisioners`` entry point.
PROVISIONER_NAME: Final = "jupyter-mig-gpu-slice"
#: The hub service's kernel API, under its prefix: ``POST`` here, ``GET``/``DELETE`` below it.
KERNELS_PATH: Final = "api/kernels"

#: The kernel's channels, in the order of their ports.
PORT_NAMES: Final = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: Launches of one kernel (restarts) cycle through this many sets of ports.
PORT_SETS: Final = 100


def kernel_ports(launch: int) -> dict[str, int]:
    """The fixed ports of a kernel pod's ``launch``-th start: 52001-52005, then 52011-52015, ...

    Each pod has its own address, so ports never collide between kernels; they change from one
    launch of a kernel to the next because jupyter_server rebuilds a browser's channels to a
    restarted kernel only when its ports changed (its address is not compared).
    """
    base = 52001 + 10 * (launch % PORT_SETS)
    return {name: base + i for i, name in enumerate(PORT_NAMES)}


#: Labels (selectors) and annotations (the exact names) of kernel pods and their Secrets.
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
COMPONENT_VALUE: Final = "gpu-kernel"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "jupyter-mig"
USER_LABEL: Final = f"{GROUP}/kernel-user"
SERVER_LABEL: Final = f"{GROUP}/kernel-server"
KERNEL_ID_LABEL: Final = f"{GROUP}/kernel-id"
USER_ANNOTATION: Final = f"{GROUP}/user"
SERVER_ANNOTATION: Final = f"{GROUP}/server"
SIZE_ANNOTATION: Final = f"{GROUP}/gpu-slice"
PROFILE_ANNOTATION: Final = f"{GROUP}/gpu-profile"
#: Selects every kernel pod (and Secret) jupyter-mig made.
KERNEL_SELECTOR: Final = (
    f"{COMPONENT_LABEL}={COMPONENT_VALUE},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
)

#: Where the pod finds its connection file (the mounted Secret), and the Secret's key.
CONNECTION_DIR: Final = "/etc/jupyter-mig-kernel"
CONNECTION_KEY: Final = "connection.json"
CONNECTION_ENV: Final = "JUPYTER_MIG_KERNEL_CONNECTION"
#: A kernel pod's own kernel id (the pod's slice is in the ``JUPYTER_MIG_SIZE``/``SLICE`` names).
KERNEL_ID_ENV: Final = "JUPYTER_MIG_KERNEL_ID"

#: jupyter_client's kernel ids are UUIDs; only those become part of a resource name.
_KERNEL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class KernelIdError(ValueError):
    """A kernel id that is not a lower-case UUID."""


def kernel_object_name(kernel_id: str) -> str:
    """The name of a kernel's pod and Secret: ``kernel-<uuid>``, from an allow-listed id."""
    if not isinstance(kernel_id, str) or not _KERNEL_ID.match(kernel_id):
        raise KernelIdError(
            "kernel_id must be a lower-case UUID (as jupyter_client makes them), "
            f"not {str(kernel_id)[:40]!r}"
        )
    return f"kernel-{kernel_id}"

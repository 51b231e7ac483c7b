"""Names that the controller, the agent, the sim nodes and the notebook side agree on.

See docs/protocol.md for what each one means on the wire.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "jupyter-mig.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "MigNode"
LIST_KIND: Final = "MigNodeList"
PLURAL: Final = "mignodes"
SINGULAR: Final = "mignode"
SHORT_NAME: Final = "mign"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: Admins opt a node in with this label (value :data:`PARTITIONING_DYNAMIC`).
PARTITIONING_LABEL: Final = "jupyter-mig.io/partitioning"
PARTITIONING_DYNAMIC: Final = "dynamic"
OPT_IN_SELECTOR: Final = f"{PARTITIONING_LABEL}={PARTITIONING_DYNAMIC}"

#: A pod with this annotation set to "true" is planned at once, like a JupyterHub server.
INTERACTIVE_ANNOTATION: Final = "jupyter-mig.io/interactive"
#: JupyterHub single-user servers carry ``component=singleuser-server``: interactive too.
SINGLEUSER_LABEL: Final = "component"
SINGLEUSER_VALUE: Final = "singleuser-server"
#: On a pod bound to a simulated node: run the pod's command as a local process.
SIM_EXEC_ANNOTATION: Final = "jupyter-mig.io/sim-exec"

#: GPU feature discovery's product label (model lookup until the agent publishes a table).
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
#: Extended resources for MIG devices are ``nvidia.com/mig-<profile resource name>``.
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"

#: Field manager names for server-side apply and update bookkeeping.
CONTROLLER_FIELD_MANAGER: Final = "jupyter-mig-controller"
AGENT_FIELD_MANAGER: Final = "jupyter-mig-agent"

#: Bound service-account tokens carry the node of the pod they were issued for (k8s >= 1.30).
NODE_NAME_EXTRA: Final = "authentication.kubernetes.io/node-name"

# Condition types (metav1.Condition) on MigNode status.
CONDITION_READY: Final = "Ready"
CONDITION_APPLYING: Final = "Applying"
CONDITION_DEGRADED: Final = "Degraded"
CONDITION_TYPES: Final = (CONDITION_READY, CONDITION_APPLYING, CONDITION_DEGRADED)

# Condition reasons (CamelCase, as metav1.Condition requires).
REASON_APPLIED: Final = "Applied"  # Ready=True: the observed layout is the desired one
REASON_NOT_APPLIED: Final = "NotApplied"  # Ready=False: status differs from spec
REASON_APPLYING: Final = "ApplyingSpec"  # Applying=True: a generation is in flight
REASON_IDLE: Final = "Idle"  # Applying=False
REASON_AS_EXPECTED: Final = "AsExpected"  # Degraded=False
REASON_IN_USE_IN_THE_WAY: Final = "InUseInstanceInTheWay"  # Degraded=True: hard rule held
REASON_NVML_ERROR: Final = "NvmlError"  # Degraded=True
REASON_INVALID_SPEC: Final = "InvalidSpec"  # Degraded=True: layout refused, nothing applied
REASON_PROFILE_UNKNOWN: Final = "ProfileUnknown"  # Degraded=True: profileId not on this GPU
REASON_DEVICE_PLUGIN: Final = "DevicePluginRefreshFailed"  # Degraded=True

# Bounds the schema enforces (and renderers respect).
MAX_GPUS: Final = 16
MAX_INSTANCES: Final = 16
MAX_CONDITIONS: Final = 8

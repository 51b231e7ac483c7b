"""The one way the project talks to Kubernetes: controller, agent and sim node use it alike.

- :mod:`.client`: credentials (:func:`new_api_client`), requests and watches on plain dicts
  (:class:`Kube`), one timeout convention, one error type (:class:`KubeError`, :class:`Gone`
  for 410).
- :mod:`.watch`: :class:`ListWatch`, list then watch with resourceVersion resume and 410
  handling.
- :mod:`.events`: core/v1 Events, one body builder.

It imports nothing of the project but :mod:`jupyter_mig.errors`.
"""

from jupyter_mig.kube.client import (
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    TRANSPORT_ERRORS,
    Gone,
    Kube,
    KubeError,
    new_api_client,
)
from jupyter_mig.kube.events import event_object, post_event
from jupyter_mig.kube.watch import ListWatch

__all__ = [
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "TRANSPORT_ERRORS",
    "Gone",
    "Kube",
    "KubeError",
    "ListWatch",
    "event_object",
    "new_api_client",
    "post_event",
]

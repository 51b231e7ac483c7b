"""Checks against a live API server (imports the Kubernetes client inside the functions)."""

from __future__ import annotations

from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.errors import UserError

CRD_MISSING = (
    f"the {c.KIND} CRD is not installed ({c.CRD_NAME} {c.VERSION}); "
    "run `jupyter-mig crds | kubectl apply -f -`"
)


def require_crds(api_client: Any) -> None:
    """Fail fast at start when the cluster does not serve ``mignodes.jupyter-mig.io/v1alpha1``.

    ``api_client`` is a ``kubernetes.client.ApiClient``.  Raises :class:`UserError` when the
    resource is not served; other API errors (unreachable server, forbidden) propagate.
    """
    from kubernetes import client

    try:
        resources = client.CustomObjectsApi(api_client).get_api_resources(c.GROUP, c.VERSION)
    except client.ApiException as err:
        if err.status == 404:
            raise UserError(CRD_MISSING) from None
        raise
    served = {r.name for r in (resources.resources or [])}
    if c.PLURAL not in served:
        raise UserError(CRD_MISSING)

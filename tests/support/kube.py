"""The MigNode CRD in a test cluster."""

from __future__ import annotations

import contextlib
from typing import Any

from jupyter_mig.api import constants as c
from jupyter_mig.api.crd import crd_manifests
from jupyter_mig.kube.client import Kube
from support.waiting import wait_for


def install_crds(api_client: Any, timeout: float = 60.0) -> None:
    """Create the MigNode CRD (an existing one is kept) and wait until it is Established."""
    from kubernetes import client

    extensions = client.ApiextensionsV1Api(api_client)
    for manifest in crd_manifests():
        with contextlib.suppress(client.ApiException):
            extensions.create_custom_resource_definition(manifest)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(c.CRD_NAME)
        return any(
            cond.type == "Established" and cond.status == "True"
            for cond in (crd.status.conditions or [])
        )

    wait_for("the MigNode CRD to be established", established, timeout)


def events_about(
    kube: Kube, namespace: str, name: str, component: str = c.CONTROLLER_FIELD_MANAGER
) -> list[dict[str, Any]]:
    """The Events about object ``name`` in ``namespace`` that ``component`` reported."""
    listed = kube.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        query={"fieldSelector": f"involvedObject.name={name}"},
    )
    return [
        e
        for e in listed.get("items") or ()
        if (e.get("source") or {}).get("component") == component
    ]

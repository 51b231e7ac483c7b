"""MigNode status rows for tests: what an agent would report for a GPU with a layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jupyter_mig.api.mignode import GpuStatus, ObservedInstance
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import GpuModel


def observed_gpu(
    index: int,
    model: GpuModel,
    layout: Sequence[Instance],
    pod_of: Callable[[int], str | None] = lambda n: f"ns/pod-{n}" if n % 2 == 0 else None,
) -> GpuStatus:
    """GPU ``index`` with ``layout`` applied; instance ``n`` held by ``pod_of(n)``."""
    instances = tuple(
        ObservedInstance(
            start=inst.start,
            profile_id=inst.profile_id,
            profile=model.by_id[inst.profile_id].name,
            uuid=f"MIG-{index}-{n}",
            pod=pod_of(n),
        )
        for n, inst in enumerate(layout)
    )
    return GpuStatus(
        index=index,
        uuid=f"GPU-{index}",
        model_name=model.name,
        product=model.products[0],
        mig_enabled=True,
        model=model,
        instances=instances,
    )

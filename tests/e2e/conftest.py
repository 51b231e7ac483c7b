"""Fixtures of the end-to-end tests: the chart's RBAC installed once, a fresh system per test.

``release`` (session): the MigNode CRD and one release of the chart's ServiceAccounts, roles,
bindings and admission policies, removed at the end.  ``system`` (per test): an
:class:`e2e_harness.System` in the test's own namespace; its processes, nodes and pods are
removed afterwards, and a broken invariant found after the test's last wait still fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import Release, System, install_release, uninstall_release

from jupyter_mig.devcluster import DevCluster


@pytest.fixture(scope="session")
def release(cluster: DevCluster) -> Iterator[Release]:
    installed = install_release(cluster)
    try:
        yield installed
    finally:
        uninstall_release(cluster, installed)


@pytest.fixture
def system(
    cluster: DevCluster, release: Release, namespace: str, tmp_path: Path
) -> Iterator[System]:
    started = System(cluster, release, namespace, tmp_path)
    try:
        yield started
        started.check()
        assert started.monitor.checks > 0, (
            f"the invariant monitor never completed a round: {started.notes}"
        )
    finally:
        started.close()

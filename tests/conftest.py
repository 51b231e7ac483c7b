"""Shared fixtures.  The real local control plane for ``@pytest.mark.cluster`` tests.

``cluster`` (session scope) is a :class:`jupyter_mig.devcluster.DevCluster`, started once per
test run and stopped at the end:

    cluster.kubeconfig                   admin kubeconfig (Path)
    cluster.server, cluster.ca_file      https://127.0.0.1:PORT and the CA
    cluster.api_client(token=None)       kubernetes.client.ApiClient (admin, or as ``token``)
    cluster.mint_token(ns, sa)           a bound ServiceAccount token (creates ns and sa)
    cluster.kubeconfig_for_token(token)  a kubeconfig file for that token
    cluster.kubeconfig_for_user(user, groups)  a client-certificate kubeconfig, e.g. a kubelet's
    cluster.create_namespace(name)       and wait for its default ServiceAccount
    cluster.logs                         DIR/logs, the component logs

``namespace`` (function scope) is a fresh namespace name, deleted after the test.

``crds`` (module scope) installs the MigNode CRD and waits until it is Established (it is left
installed: other tests share it).

Helpers shared by the tests (ports, HTTP, processes, waiting, the hub's test configuration) are
in ``tests/support``.

The binaries are built (``tests/cluster``; ~7 min the first time on a quiet machine) after
collection, before any test runs and outside the per-test timeout, when a selected test is marked
``cluster``.  The cluster runs in ``tests/artifacts/devcluster/pytest-<pid>`` (its logs stay
there for diagnosis until a later run cleans it up), or in ``$JUPYTER_MIG_DEVCLUSTER_DIR``: a
cluster already running there is reused and left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kube import install_crds

from jupyter_mig import devcluster
from jupyter_mig.errors import UserError

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts" / "devcluster"
_BUILD_ERROR = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def log(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"devcluster: {message}")

    try:
        if not devcluster.binaries_fresh():
            devcluster.build(log=log)
    except UserError as err:
        session.config.stash[_BUILD_ERROR] = str(err)
        log(f"build failed: {err}")


def _remove_dead_runs(base: Path) -> None:
    """Clusters of earlier test runs whose pytest died: stop them, remove their directories."""
    for child in base.glob("pytest-*"):
        pid = child.name.removeprefix("pytest-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(UserError, OSError):
                devcluster.down(child)
                shutil.rmtree(child)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[devcluster.DevCluster]:
    error = request.config.stash.get(_BUILD_ERROR, None)
    if error is not None:
        pytest.fail(f"the local control plane could not be built: {error}", pytrace=False)
    env_dir = os.environ.get("JUPYTER_MIG_DEVCLUSTER_DIR")
    if env_dir:
        path = Path(env_dir)
        owned = devcluster.running(path) is None
    else:
        # One directory per test run: two runs in one checkout do not share (or stop) a cluster.
        _remove_dead_runs(ARTIFACT_DIR)
        path = ARTIFACT_DIR / f"pytest-{os.getpid()}"
        owned = True
    try:
        started = devcluster.up(path)
    except UserError as err:
        pytest.fail(f"the local control plane did not start: {err}", pytrace=False)
    try:
        yield started
    finally:
        if owned:
            devcluster.down(path)


@pytest.fixture(scope="module")
def crds(cluster: devcluster.DevCluster) -> None:
    """The MigNode CRD, installed once (left installed: other tests share it)."""
    with cluster.api_client() as api:
        install_crds(api)


@pytest.fixture
def namespace(cluster: devcluster.DevCluster) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount exists), deleted after the test."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    with cluster.api_client() as api, contextlib.suppress(client.ApiException):
        client.CoreV1Api(api).delete_namespace(name)

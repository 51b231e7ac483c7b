"""Development infrastructure, not part of the runtime: ``jupyter-mig devcluster``, the real local
Kubernetes control plane (from a source checkout) that the tests and the local demo run against.
No runtime package (controller, agent, notebook, hub, simnode, ...) imports it; a test
(``tests/unit/test_import_directions.py``) checks that.

The official ``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` of
``k8s.io/kubernetes`` and a small etcd server are built from ``tests/cluster`` (a Go module) into
``tests/cluster/.cache/bin`` and started as plain processes on free loopback ports, with real
TLS, service-account signing keys, ``Node,RBAC`` authorization and a static admin token.
Everything a cluster needs lives in one directory ``DIR``:

    DIR/kubeconfig          admin kubeconfig (static token in group system:masters)
    DIR/state.json          ports, pids, token: what ``env``/``down``/the test fixture read
    DIR/logs/*.log          one log per component (kept by ``down``, for diagnosis)
    DIR/pki/, DIR/etcd/     certificates and keys, etcd's data (removed by ``down``)

``up`` is idempotent on a running DIR; ``up`` and ``down`` clean up what a killed run left
(they stop every process of ours whose command line refers to DIR).  Every wait has a timeout.

The Python API (``up``, ``down``, ``running``, ``build``, :class:`DevCluster`) is what the
pytest fixture ``cluster`` in ``tests/conftest.py`` and the local demo use.  Its parts:

    common.py         versions, paths (tests/cluster, its .cache), the file lock, log helpers
    binaries.py       the builds of the binaries (control plane; kubelet and kubectl) and stamps
    processes.py      the processes of a DIR (find, stop in order) and free ports
    pki.py            certificates, keys, tokens, kubeconfigs
    cluster.py        :class:`DevCluster` (state.json) and its client/test helpers
    control_plane.py  ``up``, ``down``, ``running``: start and stop the components
    node.py           real GPU nodes (``up --gpu-nodes N``): kubelet, containerd, CNI, NVIDIA's
                      device plugin on simulated GPUs; their clean stop
    host.py           what a node makes on the machine: cgroups, mounts, bridges (and removes)
    images.py         the pause and busybox images, built here as archives containerd imports
    cli.py            the ``jupyter-mig devcluster`` subcommand
"""

from jupyter_mig.devcluster.binaries import (
    GO_FALLBACKS,
    binaries_fresh,
    build,
    build_stamp,
    find_go,
)
from jupyter_mig.devcluster.cli import add_arguments, run
from jupyter_mig.devcluster.cluster import DevCluster
from jupyter_mig.devcluster.common import (
    BIN,
    COMPONENTS,
    DEFAULT_DIR,
    KUBERNETES_VERSION,
    NODE_BIN,
)
from jupyter_mig.devcluster.control_plane import down, running, up
from jupyter_mig.devcluster.pki import kubeconfig_text
from jupyter_mig.devcluster.processes import dir_processes, port_free

__all__ = [
    "BIN",
    "COMPONENTS",
    "DEFAULT_DIR",
    "GO_FALLBACKS",
    "KUBERNETES_VERSION",
    "NODE_BIN",
    "DevCluster",
    "add_arguments",
    "binaries_fresh",
    "build",
    "build_stamp",
    "dir_processes",
    "down",
    "find_go",
    "kubeconfig_text",
    "port_free",
    "run",
    "running",
    "up",
]

"""What every part of the devcluster shares: versions, paths, logging, the file lock."""

from __future__ import annotations

import contextlib
import fcntl
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from jupyter_mig.errors import UserError

KUBERNETES_VERSION = "v1.37.2"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "tests" / "cluster"
CACHE = SRC / ".cache"
BIN = CACHE / "bin"
#: The Go module of a GPU node's kubelet and kubectl (same Kubernetes version as SRC).
NODE_SRC = REPO / "tests" / "node"
NODE_BIN = NODE_SRC / ".cache" / "bin"
DEFAULT_DIR = REPO / ".devcluster"


Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{what} is locked by another process for over {timeout:.0f}s "
                        f"(lock file {path}); wait for it to finish, or stop it"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int, pattern: str | None = None) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    chosen = text
    if pattern is not None:
        rx = re.compile(pattern, re.IGNORECASE)
        matched = [line for line in text if rx.search(line)]
        chosen = matched or text
    return "\n".join("    " + line[:400] for line in chosen[-lines:])

"""The processes of a cluster directory: find them by command line, stop them in order; and
free loopback ports."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from jupyter_mig.devcluster.common import COMPONENTS
from jupyter_mig.errors import UserError

STOP_TIMEOUT_S = 15.0


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own zombie children
        return False
    return True


def refers_to(pid: int, cluster_dir: Path) -> bool:
    """Is ``pid`` one of our components (by program name) started for ``cluster_dir``?"""
    argv = proc_cmdline(pid)
    if not argv or os.path.basename(argv[0]) not in COMPONENTS:
        return False
    needle = str(cluster_dir) + os.sep
    return any(needle in arg for arg in argv[1:])


def dir_processes(cluster_dir: Path) -> list[int]:
    """Every live process of ours whose command line refers to ``cluster_dir``."""
    cluster_dir = cluster_dir.resolve()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            pid = int(entry)
            if refers_to(pid, cluster_dir) and alive(pid):
                found.append(pid)
    return sorted(found)


def stop_pids(pids: Sequence[int], timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the pids still alive after that."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        live = [pid for pid in pids if alive(pid)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if alive(pid)]
            time.sleep(0.1)
        if not live:
            return []
    return [pid for pid in pids if alive(pid)]


def stop_in_order(pids: set[int] | Sequence[int]) -> None:
    """Clients before servers (scheduler, controller-manager, apiserver, etcd): an apiserver
    whose etcd is gone, or with watchers attached, takes long to stop gracefully."""
    order = {name: rank for rank, name in enumerate(reversed(COMPONENTS))}
    stages: dict[int, list[int]] = {}
    for pid in pids:
        argv = proc_cmdline(pid)
        rank = order.get(os.path.basename(argv[0]) if argv else "", len(order))
        stages.setdefault(rank, []).append(pid)
    for rank in sorted(stages):
        left = stop_pids(sorted(stages[rank]))
        if left:
            raise UserError(f"processes {left} did not stop even after SIGKILL; stop them by hand")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True

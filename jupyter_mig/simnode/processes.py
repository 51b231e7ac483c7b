"""Containers as local processes: start with the pod's environment, watch, stop.

Each container runs under :mod:`jupyter_mig.simnode.container` in its own session (process
group = its pid), so stopping a pod reaches every process it started, and a sim node that is
killed leaves its containers running, as a kubelet restart does.  A process is recognised after
such a restart by its pid plus its start time from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jupyter_mig.simnode.pods import NODE_IP

#: Variables of the sim node's own environment that a container keeps (the rest is the pod's).
INHERITED_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")
POD_IP_ENV = "JUPYTER_MIG_POD_IP"

_FIELD_PATHS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "metadata.name": lambda pod, ip: pod["metadata"]["name"],
    "metadata.namespace": lambda pod, ip: pod["metadata"]["namespace"],
    "metadata.uid": lambda pod, ip: pod["metadata"]["uid"],
    "spec.nodeName": lambda pod, ip: pod["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda pod, ip: pod["spec"].get("serviceAccountName", ""),
    "status.podIP": lambda pod, ip: ip,
    "status.hostIP": lambda pod, ip: NODE_IP,
}
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion in command and args (``$$`` escapes a dollar)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def container_env(
    pod: Mapping[str, Any], spec: Mapping[str, Any], ip: str, devices: list[str]
) -> dict[str, str]:
    """The container's environment: a little of the host's, the pod's, and what a GPU pod gets.

    ``PATH`` starts with this Python's directory so ``python`` and ``jupyter`` resolve to the
    environment jupyter-mig runs in.  Only literal values and ``fieldRef`` sources are
    supported; other ``valueFrom`` sources are left out.
    """
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env["HOSTNAME"] = pod["metadata"]["name"]
    env[POD_IP_ENV] = ip
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(devices) if devices else "void"
    for item in spec.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        field_ref = (item.get("valueFrom") or {}).get("fieldRef") or {}
        resolve = _FIELD_PATHS.get(field_ref.get("fieldPath", ""))
        if resolve is not None:
            env[item["name"]] = resolve(pod, ip)
    return env


def command_line(spec: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command + args`` with ``$(VAR)`` expanded; empty when the image's entrypoint is meant."""
    if not spec.get("command"):
        return []
    return [expand(str(part), env) for part in [*spec["command"], *(spec.get("args") or [])]]


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # exited, not yet reaped: as good as gone
    return int(fields[19])


class Processes:
    """The container processes of one sim node."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._returncodes: dict[int, int] = {}  # of children that ended, until asked

    def start(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log_file: Path,
        exit_file: Path,
    ) -> tuple[int, int | None]:
        """Start ``argv``; returns ``(pid, start time)``."""
        with contextlib.suppress(FileNotFoundError):
            exit_file.unlink()
        wrapper = [sys.executable, "-m", "jupyter_mig.simnode.container", str(exit_file), "--"]
        with open(log_file, "ab") as log:
            child = subprocess.Popen(
                [*wrapper, *argv],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[child.pid] = child
        return child.pid, proc_start_time(child.pid)

    def alive(self, pid: int, start_time: int | None) -> bool:
        child = self._children.get(pid)
        if child is not None:
            returncode = child.poll()
            if returncode is None:
                return True
            del self._children[pid]
            self._returncodes[pid] = 128 - returncode if returncode < 0 else returncode
            return False
        return start_time is not None and proc_start_time(pid) == start_time

    def signal(self, pid: int, start_time: int | None, signum: int, group: bool) -> None:
        """Signal the process (or its whole group) if it is still the one we started."""
        if not self.alive(pid, start_time):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)

    def terminate(self, pid: int, start_time: int | None) -> None:
        """SIGTERM to the wrapper, which passes it on to the command."""
        self.signal(pid, start_time, signal.SIGTERM, group=False)

    def kill(self, pid: int, start_time: int | None) -> None:
        self.signal(pid, start_time, signal.SIGKILL, group=True)

    def exit_code(self, pid: int, exit_file: Path) -> int:
        """How a container that is no longer :meth:`alive` ended: what the wrapper recorded,
        else the wrapper's own status (when it was our child), else 137 (killed)."""
        returncode = self._returncodes.pop(pid, None)
        try:
            return int(exit_file.read_text().strip())
        except (OSError, ValueError):
            return 137 if returncode is None else returncode

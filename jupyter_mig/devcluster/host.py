"""What a GPU node makes on the machine outside its directories: cgroups (v1 hierarchies),
mounts, network devices.  Each has a remover that raises when something is left."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from jupyter_mig.errors import UserError

CGROUP_FS = Path("/sys/fs/cgroup")


# -- cgroups ---------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, ..., name=systemd)."""
    try:
        return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def make_cgroup(path: str) -> None:
    """``path`` in every hierarchy, with cpuset's CPUs and memory nodes copied from above
    (a new cpuset cgroup starts empty on cgroup v1)."""
    for hierarchy in cgroup_hierarchies():
        current = hierarchy
        for part in path.strip("/").split("/"):
            current = current / part
            current.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (current / knob).read_text().strip():
                        (current / knob).write_text((current.parent / knob).read_text())


def _cgroup_dirs(path: str) -> list[Path]:
    """``path`` and the cgroups below it in every hierarchy, deepest first; the kubelet adds
    and removes pod cgroups meanwhile, so one that vanishes during the walk is skipped."""
    found = []
    for hierarchy in cgroup_hierarchies():
        for directory, _subdirs, _files in os.walk(hierarchy / path.strip("/")):
            found.append(Path(directory))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(path: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(path):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in (directory / "cgroup.procs").read_text().split()}
    return pids


def remove_cgroup(path: str) -> None:
    """Remove ``path`` and everything below it (deepest first), and its parent when empty."""
    for directory in _cgroup_dirs(path):
        with contextlib.suppress(OSError):
            directory.rmdir()
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / path.strip("/")
        with contextlib.suppress(OSError):
            top.parent.rmdir()  # /jupyter-mig, once no node of any cluster uses it


# -- mounts and network devices ---------------------------------------------------------------


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below ``roots``, deepest first."""
    found = []
    prefixes = [str(r) for r in roots]
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_all(*roots: Path) -> None:
    for _ in range(5):  # stacked mounts: repeat until none is left
        points = mounts_under(*roots)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
    left = mounts_under(*roots)
    if left:
        raise UserError(f"mounts left after unmounting: {left}; unmount them by hand")


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def delete_link(name: str) -> None:
    if link_exists(name):
        subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=30, check=False)
    if link_exists(name):
        raise UserError(f"network device {name} is left; delete it with `ip link delete {name}`")


def make_bridge(name: str, address: str, subnet: str, owner: str) -> None:
    """Bridge ``name`` with ``address`` (CIDR) in ``subnet``, unless it exists; a subnet that
    another interface already uses is refused (``owner`` names who asked)."""
    if not link_exists(name):
        taken = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "to", subnet],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout.split()  # fmt: skip
        if taken:
            raise UserError(
                f"{owner}: its pod subnet {subnet} is in use on {taken[1]}: stop the "
                "cluster that uses it, or start this one in another --dir"
            )
        for command in (
            ["ip", "link", "add", "name", name, "type", "bridge"],
            ["ip", "addr", "add", address, "dev", name],
            ["ip", "link", "set", name, "up"],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:
                raise UserError(f"{' '.join(command)} failed: {done.stderr.strip()}")

"""Container images built here, without a registry: the pod sandbox's pause image and the test
workload's busybox image, each a one-layer image archive (``docker save`` format) that
``ctr -n k8s.io images import`` loads into a node's containerd.

- ``pause``: a static C program of a few lines (sleep until SIGTERM/SIGINT, reap children),
  compiled with the machine's C compiler; the image every pod sandbox runs.
- ``busybox``: Debian's statically linked busybox (package ``busybox-static``) with its applets
  as links, tagged ``docker.io/library/busybox:latest`` so that manifests naming
  ``busybox:latest`` run unchanged (with ``imagePullPolicy: IfNotPresent`` or ``Never``).

The archives are reproducible (fixed timestamps, sorted entries) and rebuilt only when their
inputs change (``tests/node/.cache/images``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_mig.devcluster.common import REPO
from jupyter_mig.errors import UserError

IMAGES_DIR = REPO / "tests" / "node" / ".cache" / "images"
PAUSE_IMAGE = "localhost/jupyter-mig/pause:1"
BUSYBOX_IMAGE = "docker.io/library/busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")
#: The applets a test workload uses, as links to /bin/busybox.
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "env", "ls", "printenv", "true", "false", "wc")

PAUSE_SOURCE = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


@dataclass(frozen=True)
class Image:
    name: str
    archive: Path


def _entry(name: str, *, mode: int = 0o755, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.mtime, info.uid, info.gid = mode, kind, 0, 0, 0
    return info


def _layer(files: dict[str, bytes], links: dict[str, str]) -> bytes:
    """A layer tar: ``files`` (path -> executable bytes) and ``links`` (path -> target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in [*files, *links]} - {"."})
        for directory in dirs:
            tar.addfile(_entry(directory + "/", kind=tarfile.DIRTYPE))
        for path in sorted(files):
            info = _entry(path)
            info.size = len(files[path])
            tar.addfile(info, io.BytesIO(files[path]))
        for path in sorted(links):
            info = _entry(path, mode=0o777, kind=tarfile.SYMTYPE)
            info.linkname = links[path]
            tar.addfile(info)
    return out.getvalue()


def write_archive(path: Path, name: str, layer: bytes, config: Mapping[str, object]) -> None:
    """A one-layer image archive in ``docker save`` format, written atomically."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [layer_name]}]
    members = {
        config_name: config_bytes,
        layer_name: layer,
        "manifest.json": json.dumps(manifest).encode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member in sorted(members):
            info = _entry(member, mode=0o644)
            info.size = len(members[member])
            tar.addfile(info, io.BytesIO(members[member]))
    os.replace(tmp, path)


def _stamped(path: Path, stamp: str) -> bool:
    stamp_file = path.with_suffix(".stamp")
    return path.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp


def pause_image(images_dir: Path = IMAGES_DIR) -> Image:
    archive = images_dir / "pause.tar"
    stamp = hashlib.sha256(PAUSE_SOURCE.encode()).hexdigest()
    if not _stamped(archive, stamp):
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise UserError("no C compiler (cc) to build the pause image: install gcc")
        with tempfile.TemporaryDirectory() as tmp:
            source, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
            source.write_text(PAUSE_SOURCE)
            built = subprocess.run(
                [cc, "-static", "-Os", "-s", "-o", str(binary), str(source)],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if built.returncode != 0:
                raise UserError(
                    f"building the pause program failed ({cc} -static): {built.stderr.strip()} "
                    "(static linking needs libc6-dev)"
                )
            layer = _layer({"pause": binary.read_bytes()}, {})
        write_archive(archive, PAUSE_IMAGE, layer, {"Entrypoint": ["/pause"]})
        archive.with_suffix(".stamp").write_text(stamp)
    return Image(PAUSE_IMAGE, archive)


def busybox_image(images_dir: Path = IMAGES_DIR, binary: Path = BUSYBOX_BINARY) -> Image:
    archive = images_dir / "busybox.tar"
    if not binary.is_file():
        raise UserError(
            f"{binary} is missing: install Debian's busybox-static (scripts/setup.sh does)"
        )
    data = binary.read_bytes()
    stamp = hashlib.sha256(data + " ".join(BUSYBOX_APPLETS).encode()).hexdigest()
    if not _stamped(archive, stamp):
        layer = _layer(
            {"bin/busybox": data}, {f"bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS}
        )
        config = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
        write_archive(archive, BUSYBOX_IMAGE, layer, config)
        archive.with_suffix(".stamp").write_text(stamp)
    return Image(BUSYBOX_IMAGE, archive)


def node_images() -> list[Image]:
    """Every image a GPU node imports at start."""
    return [pause_image(), busybox_image()]

"""Builds of the Go binaries: the control plane from the Go module ``tests/cluster``, a node's
kubelet and kubectl from ``tests/node`` (the same ``k8s.io/kubernetes`` version).  Both share
one Go build cache (``tests/cluster/.cache/gocache``), so the node build compiles only what the
control plane does not use.  A build stamp (a hash of the module's files and the link flags)
says when to rebuild."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_mig.devcluster.common import (
    BIN,
    CACHE,
    COMPONENTS,
    KUBERNETES_VERSION,
    NODE_BIN,
    NODE_SRC,
    SRC,
    Log,
    file_lock,
    log_stderr,
    log_tail,
)
from jupyter_mig.errors import UserError


@dataclass(frozen=True)
class GoBuild:
    """One Go module's binaries: where from, which packages, where to."""

    what: str
    src: Path
    packages: tuple[str, ...]
    binaries: tuple[str, ...]  # in bin_dir, after renames
    bin_dir: Path
    first_time: str  # how long a build from an empty cache takes
    renames: tuple[tuple[str, str], ...] = ()
    sources: tuple[str, ...] = ("go.mod", "go.sum")

    @property
    def cache(self) -> Path:
        return self.bin_dir.parent


CONTROL_PLANE = GoBuild(
    what="the control-plane build",
    src=SRC,
    packages=(
        ".",  # tests/cluster/main.go: the etcd server
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
    ),
    binaries=COMPONENTS,
    bin_dir=BIN,
    first_time="~7 min on 2 quiet cores",
    renames=(("cluster", "etcd"),),
    sources=("go.mod", "go.sum", "main.go"),
)
NODE = GoBuild(
    what="the kubelet build",
    src=NODE_SRC,
    packages=("k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kubectl"),
    binaries=("kubelet", "kubectl"),
    bin_dir=NODE_BIN,
    first_time="~8 min on 2 quiet cores after the control plane's",
)
MIN_GO = (1, 26)
GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")  # when `go` is not on PATH


BUILD_TIMEOUT_S = float(os.environ.get("JUPYTER_MIG_BUILD_TIMEOUT_S", "3600"))


def _ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def build_stamp(spec: GoBuild = CONTROL_PLANE) -> str:
    """Hash of what the binaries are built from: rebuild only when this changes."""
    digest = hashlib.sha256()
    for name in spec.sources:
        path = spec.src / name
        if not path.is_file():
            raise UserError(
                f"{path} is missing: devcluster needs a source checkout of jupyter-mig "
                f"(the Go module {spec.src.relative_to(spec.src.parents[1])})"
            )
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_ldflags().encode())
    return digest.hexdigest()


def binaries_fresh(bin_dir: Path | None = None, spec: GoBuild = CONTROL_PLANE) -> bool:
    bin_dir = bin_dir or spec.bin_dir
    stamp = bin_dir / ".stamp"
    if not stamp.is_file() or stamp.read_text().strip() != build_stamp(spec):
        return False
    return all(os.access(bin_dir / name, os.X_OK) for name in spec.binaries)


def find_go() -> str:
    go = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
    if go is None:
        raise UserError(
            "no Go toolchain found (`go` is not on PATH): install Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]} and put it on PATH; the control plane is built from "
            "the Kubernetes Go modules (tests/cluster/go.mod)"
        )
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(
            f"`{go} env GOVERSION` failed ({err}): is the Go toolchain broken?"
        ) from None
    match = re.match(r"go(\d+)\.(\d+)", out)
    if match is None or (int(match[1]), int(match[2])) < MIN_GO:
        raise UserError(
            f"{go} is {out or 'an unknown version'}; tests/cluster needs Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]} (Kubernetes {KUBERNETES_VERSION}): install a newer Go"
        )
    return go


def build(
    *,
    force: bool = False,
    log: Log = log_stderr,
    timeout: float = BUILD_TIMEOUT_S,
    spec: GoBuild = CONTROL_PLANE,
) -> Path:
    """Build ``spec``'s binaries into its ``.cache/bin`` unless they are up to date.

    Returns the bin directory.  Concurrent callers wait for one build (file lock).  The build
    log is ``.cache/build.log`` next to the bin directory.
    """
    if not force and binaries_fresh(spec=spec):
        return spec.bin_dir
    with file_lock(spec.cache / "build.lock", timeout, spec.what):
        if not force and binaries_fresh(spec=spec):
            return spec.bin_dir
        go = find_go()
        stamp = build_stamp(spec)
        tmp = spec.cache / f"bin.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = spec.cache / "build.log"
        env = dict(os.environ)
        env.update(GOCACHE=str(CACHE / "gocache"), GOTOOLCHAIN="local", GOWORK="off")
        env.setdefault("GOFLAGS", "")
        cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", _ldflags()]
        cmd += ["-o", str(tmp) + os.sep, *spec.packages]
        log(
            f"building {', '.join(spec.binaries)} {KUBERNETES_VERSION} (the first build takes "
            f"{spec.first_time}; log: {log_path})"
        )
        start = time.monotonic()
        total = _count_packages(go, env, spec, timeout=min(timeout / 2, 600))
        with open(log_path, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, cwd=spec.src, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            next_note = start + 60
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if now - start > timeout:
                        _kill_group(proc.pid)
                        proc.wait(timeout=30)
                        raise UserError(
                            f"{spec.what} did not finish in {timeout:.0f}s "
                            f"(see {log_path}); raise JUPYTER_MIG_BUILD_TIMEOUT_S on a slow "
                            "machine"
                        )
                    if now >= next_note:
                        done = f"{_count_lines(log_path) - 1}/{total or '?'}"
                        log(f"still building ({now - start:.0f}s, {done} packages) ...")
                        next_note = now + 60
                    time.sleep(1)
            except BaseException:
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait(timeout=30)
                raise
        if proc.returncode != 0:
            tail = log_tail(log_path, 15, pattern=r"error|cannot|go: |\.go:\d+")
            raise UserError(
                f"{spec.what} failed (go build exit {proc.returncode}); "
                f"full log: {log_path}; last errors:\n{tail}\n"
                "If modules could not be downloaded, check that the Go module proxy is reachable "
                "(go env GOPROXY)."
            )
        for built, name in spec.renames:
            (tmp / built).rename(tmp / name)
        spec.bin_dir.mkdir(parents=True, exist_ok=True)
        for name in spec.binaries:
            os.replace(tmp / name, spec.bin_dir / name)
        (spec.bin_dir / ".stamp").write_text(stamp + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"built in {time.monotonic() - start:.0f}s into {spec.bin_dir}")
    return spec.bin_dir


def build_node(*, force: bool = False, log: Log = log_stderr) -> Path:
    """The kubelet and kubectl of GPU nodes (``tests/node``), built unless up to date."""
    return build(force=force, log=log, spec=NODE)


def _count_packages(go: str, env: Mapping[str, str], spec: GoBuild, timeout: float) -> int | None:
    """How many packages the build compiles (for progress; also downloads the modules)."""
    try:
        out = subprocess.run(
            [go, "list", "-deps", *spec.packages], cwd=spec.src, env=env, capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return len(out.stdout.split()) if out.returncode == 0 else None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

"""Build of the control-plane binaries from the Go module ``tests/cluster``; the build stamp
(a hash of ``go.mod``, ``go.sum``, ``main.go`` and the link flags) says when to rebuild."""

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
from pathlib import Path

from jupyter_mig.devcluster.common import (
    BIN,
    CACHE,
    COMPONENTS,
    KUBERNETES_VERSION,
    SRC,
    Log,
    file_lock,
    log_stderr,
    log_tail,
)
from jupyter_mig.errors import UserError

GO_PACKAGES = (
    ".",  # tests/cluster/main.go: the etcd server
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler",
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


def build_stamp() -> str:
    """Hash of what the binaries are built from: rebuild only when this changes."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        path = SRC / name
        if not path.is_file():
            raise UserError(
                f"{path} is missing: devcluster needs a source checkout of jupyter-mig "
                "(the Go module tests/cluster)"
            )
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_ldflags().encode())
    return digest.hexdigest()


def binaries_fresh(bin_dir: Path | None = None) -> bool:
    bin_dir = bin_dir or BIN
    stamp = bin_dir / ".stamp"
    if not stamp.is_file() or stamp.read_text().strip() != build_stamp():
        return False
    return all(os.access(bin_dir / name, os.X_OK) for name in COMPONENTS)


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


def build(*, force: bool = False, log: Log = log_stderr, timeout: float = BUILD_TIMEOUT_S) -> Path:
    """Build the four binaries into ``tests/cluster/.cache/bin`` unless they are up to date.

    Returns the bin directory.  Concurrent callers wait for one build (file lock).  The build
    log is ``tests/cluster/.cache/build.log``.
    """
    if not force and binaries_fresh():
        return BIN
    with file_lock(CACHE / "build.lock", timeout, "the control-plane build"):
        if not force and binaries_fresh():
            return BIN
        go = find_go()
        stamp = build_stamp()
        tmp = CACHE / f"bin.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = CACHE / "build.log"
        env = dict(os.environ)
        env.update(GOCACHE=str(CACHE / "gocache"), GOTOOLCHAIN="local", GOWORK="off")
        env.setdefault("GOFLAGS", "")
        cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", _ldflags()]
        cmd += ["-o", str(tmp) + os.sep, *GO_PACKAGES]
        log(
            f"building kube-apiserver, kube-controller-manager, kube-scheduler {KUBERNETES_VERSION}"
            f" and etcd (the first build takes ~7 min on 2 quiet cores; log: {log_path})"
        )
        start = time.monotonic()
        total = _count_packages(go, env, timeout=min(timeout / 2, 600))
        with open(log_path, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, cwd=SRC, env=env, stdout=out, stderr=subprocess.STDOUT,
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
                            f"the control-plane build did not finish in {timeout:.0f}s "
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
                f"the control-plane build failed (go build exit {proc.returncode}); "
                f"full log: {log_path}; last errors:\n{tail}\n"
                "If modules could not be downloaded, check that the Go module proxy is reachable "
                "(go env GOPROXY)."
            )
        (tmp / "cluster").rename(tmp / "etcd")
        BIN.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            os.replace(tmp / name, BIN / name)
        (BIN / ".stamp").write_text(stamp + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"built in {time.monotonic() - start:.0f}s into {BIN}")
    return BIN


def _count_packages(go: str, env: Mapping[str, str], timeout: float) -> int | None:
    """How many packages the build compiles (for progress; also downloads the modules)."""
    try:
        out = subprocess.run(
            [go, "list", "-deps", *GO_PACKAGES], cwd=SRC, env=env, capture_output=True,
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

"""Simulated MIG GPUs with the real NVML semantics, for nodes without a MIG GPU.

State lives in a directory so that the agent, the sim node and tests (separate processes) see
one GPU, and a restarted agent sees what it left behind:

- ``DIR/nvml.json``: GPUs, GPU instances (placement, GI id, MIG UUID), busy MIG UUIDs and
  per-operation latency.  Read and written under ``fcntl.flock`` of ``DIR/nvml.lock``, replaced
  atomically.
- ``DIR/nvml-faults.json`` (optional): injected faults, see :func:`inject_fault`.

Creation is checked with :func:`jupyter_mig.mig.layout.layout_errors` (overlap, max count,
compute budget, one ``+me``), so the simulated GPU refuses exactly what the planner must avoid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import MODELS, GpuModel
from jupyter_mig.nvml.base import (
    ERRORS_BY_CODE,
    GpuInfo,
    GpuInstance,
    InsufficientResources,
    InUse,
    InvalidArgument,
    NotFound,
    NotSupported,
    NvmlBackend,
    NvmlError,
    Uninitialized,
)

STATE_FILE = "nvml.json"
LOCK_FILE = "nvml.lock"
FAULTS_FILE = "nvml-faults.json"
STATE_VERSION = 1

#: Operations that latency and faults can name.
OPERATIONS = ("gpus", "profile_table", "instances", "create_instance", "destroy_instance")

_ERROR_CLASSES: dict[str, type[NvmlError]] = {NvmlError.__name__: NvmlError} | {
    cls.__name__: cls for cls in ERRORS_BY_CODE.values()
}


# ----------------------------------------------------------------------------------------------
# State directory: locking, atomic JSON, initialisation and out-of-band helpers
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold the state lock; every process touching DIR goes through here."""
    with open(directory / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` in one step, so a reader (or a kill -9) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_gpu(index: int, model: GpuModel) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-{uuid.uuid4()}",
        "model": model.name,
        "product": model.products[0] if model.products else model.name,
        "mig_enabled": True,
        "instances": [],
    }


def init_state(
    directory: str | os.PathLike[str],
    model: str,
    gpus: int,
    latency: dict[str, float] | None = None,
) -> None:
    """Create DIR with ``gpus`` MIG-enabled GPUs of ``model``, or check an existing one.

    Idempotent so a restarted sim node resumes: an existing state with the same model and GPU
    count is kept (instances included), only the latency is updated.  A different model or GPU
    count is refused (ValueError) rather than silently thrown away.
    """
    gpu_model = MODELS.get(model)
    if gpus < 1:
        raise ValueError(f"a simulated node needs at least one GPU, not {gpus}")
    for operation in latency or {}:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown NVML operation {operation!r}; known: {OPERATIONS}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root, exclusive=True):
        path = root / STATE_FILE
        if path.exists():
            state = _read_json(path)
            have = [(g["model"], g["index"]) for g in state["gpus"]]
            want = [(gpu_model.name, i) for i in range(gpus)]
            if have != want:
                raise ValueError(
                    f"{path} holds {len(have)} x {have[0][0] if have else '?'}, not "
                    f"{gpus} x {gpu_model.name}; use another --state directory or delete it"
                )
        else:
            state = {
                "version": STATE_VERSION,
                "gpus": [_new_gpu(i, gpu_model) for i in range(gpus)],
                "busy": [],
            }
        state["latency"] = dict(latency or state.get("latency", {}))
        write_json_atomic(path, state)


def reboot(directory: str | os.PathLike[str]) -> None:
    """Simulate a node reboot: every MIG instance is gone and nothing is busy.

    MIG layouts do not survive a reboot on real GPUs; the agent must restore its last spec.
    """
    root = Path(directory)
    with _locked(root, exclusive=True):
        state = _load(root)
        for gpu in state["gpus"]:
            gpu["instances"] = []
        state["busy"] = []
        write_json_atomic(root / STATE_FILE, state)


def set_busy(directory: str | os.PathLike[str], mig_uuids: Iterable[str]) -> None:
    """Mark exactly these MIG devices as having processes (the sim kubelet's running pods).

    A busy device refuses destruction with :class:`InUse`, as a GI with processes does.
    """
    root = Path(directory)
    with _locked(root, exclusive=True):
        state = _load(root)
        state["busy"] = sorted(set(mig_uuids))
        write_json_atomic(root / STATE_FILE, state)


def read_devices(
    directory: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], set[str]]:
    """``(gpus, busy MIG UUIDs)`` straight from the state, for the sim node's device plugin.

    Bypasses latency and injected faults: those model the agent's NVML calls, not the device
    plugin's.  Each GPU dict has ``index``, ``uuid``, ``model``, ``product`` and ``instances``
    (dicts with ``id``, ``profile_id``, ``start``, ``size``, ``mig_uuid``).
    """
    root = Path(directory)
    with _locked(root, exclusive=False):
        state = _load(root)
    return state["gpus"], set(state["busy"])


def inject_fault(
    directory: str | os.PathLike[str],
    operation: str,
    error: str = "NvmlError",
    nth: int = 1,
    times: int = 1,
) -> None:
    """Make the ``nth`` next call of ``operation`` (and ``times - 1`` after it) fail.

    ``error`` is a class name from :mod:`jupyter_mig.nvml.base` (``InsufficientResources``,
    ``InUse``, ``NvmlError``, ...), so the agent sees the class the real backend would raise.
    Faults live in ``DIR/nvml-faults.json`` and are consumed by whichever process makes the
    call, so a test can inject into a separately running agent.  ``operation`` ``"*"`` matches
    every operation.
    """
    if operation != "*" and operation not in OPERATIONS:
        raise ValueError(f"unknown NVML operation {operation!r}; known: {OPERATIONS}")
    if error not in _ERROR_CLASSES:
        raise ValueError(f"unknown NVML error {error!r}; known: {sorted(_ERROR_CLASSES)}")
    if nth < 1 or times < 1:
        raise ValueError("nth and times must be >= 1")
    root = Path(directory)
    with _locked(root, exclusive=True):
        path = root / FAULTS_FILE
        faults = _read_json(path) if path.exists() else []
        faults.append({"operation": operation, "error": error, "skip": nth - 1, "times": times})
        write_json_atomic(path, faults)


def clear_faults(directory: str | os.PathLike[str]) -> None:
    root = Path(directory)
    with _locked(root, exclusive=True), contextlib.suppress(FileNotFoundError):
        (root / FAULTS_FILE).unlink()


def _load(root: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = _read_json(root / STATE_FILE)
    except FileNotFoundError:
        raise Uninitialized(
            f"no simulated GPUs in {root} (no {STATE_FILE}); start `jupyter-mig sim-node "
            f"--state {root}` first",
            "init",
        ) from None
    if state.get("version") != STATE_VERSION:
        raise Uninitialized(f"{root / STATE_FILE}: unknown state version", "init")
    return state


def _take_fault(root: Path, operation: str) -> NvmlError | None:
    """Consume a matching injected fault, if any (called with the lock held)."""
    path = root / FAULTS_FILE
    if not path.exists():
        return None
    faults: list[dict[str, Any]] = _read_json(path)
    for fault in faults:
        if fault["operation"] not in ("*", operation):
            continue
        if fault["skip"] > 0:
            fault["skip"] -= 1
            continue
        fault["times"] -= 1
        remaining = [f for f in faults if f["times"] > 0]
        write_json_atomic(path, remaining)
        cls = _ERROR_CLASSES[fault["error"]]
        return cls(f"injected fault in {operation}", operation)
    write_json_atomic(path, faults)
    return None


# ----------------------------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------------------------


class SimNvml(NvmlBackend):
    """Simulated GPUs whose state lives in ``directory`` (see :func:`init_state`)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not (self.directory / STATE_FILE).exists():
            _load(self.directory)  # raises Uninitialized with the fix in the message

    @contextlib.contextmanager
    def _operation(self, name: str, mutating: bool) -> Iterator[dict[str, Any]]:
        """Latency, fault injection and the lock around one NVML call; yields the state."""
        exclusive = mutating or (self.directory / FAULTS_FILE).exists()
        with _locked(self.directory, exclusive=exclusive):
            state = _load(self.directory)
            delay = float(state.get("latency", {}).get(name, 0.0))
            fault = _take_fault(self.directory, name) if exclusive else None
        if delay > 0:
            time.sleep(delay)
        if fault is not None:
            raise fault
        with _locked(self.directory, exclusive=mutating):
            state = _load(self.directory)
            yield state
            if mutating:
                write_json_atomic(self.directory / STATE_FILE, state)

    @staticmethod
    def _gpu(state: dict[str, Any], gpu_index: int, operation: str) -> dict[str, Any]:
        for gpu in state["gpus"]:
            if gpu["index"] == gpu_index:
                return gpu  # type: ignore[no-any-return]
        raise InvalidArgument(f"no GPU with index {gpu_index}", operation)

    def gpus(self) -> list[GpuInfo]:
        with self._operation("gpus", mutating=False) as state:
            return [
                GpuInfo(
                    index=gpu["index"],
                    uuid=gpu["uuid"],
                    product=gpu["product"],
                    model=gpu["model"],
                    mig_enabled=gpu["mig_enabled"],
                    memory_mib=MODELS.get(gpu["model"]).full_profile.memory_mib,
                    pci_bus_id=f"00000000:{0x10 + gpu['index']:02X}:00.0",
                )
                for gpu in state["gpus"]
            ]

    def profile_table(self, gpu_index: int) -> GpuModel:
        with self._operation("profile_table", mutating=False) as state:
            gpu = self._gpu(state, gpu_index, "profile_table")
            if not gpu["mig_enabled"]:
                raise NotSupported(f"MIG mode is off on GPU {gpu_index}", "profile_table")
            return MODELS.get(gpu["model"])

    def instances(self, gpu_index: int) -> list[GpuInstance]:
        with self._operation("instances", mutating=False) as state:
            gpu = self._gpu(state, gpu_index, "instances")
            return sorted(
                (_to_instance(gpu_index, raw) for raw in gpu["instances"]),
                key=lambda inst: inst.start,
            )

    def create_instance(self, gpu_index: int, profile_id: int, start: int) -> GpuInstance:
        op = "create_instance"
        with self._operation(op, mutating=True) as state:
            gpu = self._gpu(state, gpu_index, op)
            if not gpu["mig_enabled"]:
                raise NotSupported(f"MIG mode is off on GPU {gpu_index}", op)
            model = MODELS.get(gpu["model"])
            profile = model.by_id.get(profile_id)
            if profile is None:
                raise NotSupported(f"{model.name} has no GPU instance profile {profile_id}", op)
            if start not in profile.starts:
                raise InvalidArgument(f"{profile.name} cannot be placed at {start}", op)
            existing = [Instance(raw["start"], raw["profile_id"]) for raw in gpu["instances"]]
            errors = layout_errors(model, [*existing, Instance(start, profile_id)])
            if errors:
                raise InsufficientResources(
                    f"{profile.name}@{start} does not fit on GPU {gpu_index}: {errors[0]}", op
                )
            used_ids = {raw["id"] for raw in gpu["instances"]}
            raw = {
                "id": min(i for i in range(1, len(used_ids) + 2) if i not in used_ids),
                "profile_id": profile_id,
                "start": start,
                "size": profile.size,
                "mig_uuid": f"MIG-{uuid.uuid4()}",
                "compute_instances": 1,
            }
            gpu["instances"].append(raw)
            return _to_instance(gpu_index, raw)

    def destroy_instance(self, gpu_index: int, gpu_instance_id: int) -> None:
        op = "destroy_instance"
        with self._operation(op, mutating=True) as state:
            gpu = self._gpu(state, gpu_index, op)
            for raw in gpu["instances"]:
                if raw["id"] == gpu_instance_id:
                    if raw["mig_uuid"] in state["busy"]:
                        raise InUse(f"{raw['mig_uuid']} has processes on it", op)
                    gpu["instances"].remove(raw)
                    return
            raise NotFound(f"GPU {gpu_index} has no GPU instance {gpu_instance_id}", op)


def _to_instance(gpu_index: int, raw: dict[str, Any]) -> GpuInstance:
    return GpuInstance(
        gpu_index=gpu_index,
        id=raw["id"],
        profile_id=raw["profile_id"],
        start=raw["start"],
        size=raw["size"],
        mig_uuid=raw["mig_uuid"],
        compute_instances=raw["compute_instances"],
    )

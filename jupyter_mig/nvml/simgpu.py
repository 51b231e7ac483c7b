"""Simulated MIG GPUs: our own ``libnvidia-ml.so.1`` and the state it keeps per node.

The library (C source in ``libsim/``) exports the NVML calls the agent and NVIDIA's device
plugin make, so :mod:`jupyter_mig.nvml.real` runs unchanged on a machine without a MIG GPU.
Its profile tables are generated here from :data:`jupyter_mig.mig.models.BUILTIN_MODELS` (one
source of truth) into ``tables.h``; the library is rebuilt with the machine's C compiler
whenever the source or the tables change.

A node's GPUs live in ``DIR/nvml.state`` (format described in ``libsim/nvml_sim.c``), changed
only under ``flock`` of ``DIR/nvml.lock`` and replaced atomically, so the agent, the sim node
and tests (separate processes) see one GPU.  The library finds DIR through
``JUPYTER_MIG_NVML_SIM_DIR``.  The helpers below change what no NVML call can: a reboot,
processes on a MIG device, injected faults and latency, pending MIG mode, a driver reload.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import BUILTIN_MODELS, MODELS, GpuModel, Profile

ENV_DIR = "JUPYTER_MIG_NVML_SIM_DIR"
STATE_FILE = "nvml.state"
LOCK_FILE = "nvml.lock"
STATE_FORMAT = 1
LIBRARY_NAME = "libnvidia-ml.so.1"

#: Fields per line kind (the kind included); see libsim/nvml_sim.c.
_FIELDS = {
    "table": 2,
    "driver": 3,
    "gen": 2,
    "stale": 2,
    "gpu": 6,
    "gi": 6,
    "ci": 6,
    "ghost": 6,
    "busy": 2,
    "fault": 5,
    "latency": 3,
}

SOURCE_DIR = Path(__file__).parent / "libsim"
BUILD_DIR = SOURCE_DIR / "build"

# NVML return codes the helpers name (nvml.h).
NVML_ERROR_UNKNOWN = 999
NVML_ERROR_GPU_IS_LOST = 15

#: ``NVML_GPU_INSTANCE_PROFILE_*`` index (nvml.h) by (media kind, compute slices).
_PROFILE_INDEX = {
    ("none", 1): 0x0,
    ("none", 2): 0x1,
    ("none", 3): 0x2,
    ("none", 4): 0x3,
    ("none", 7): 0x4,
    ("none", 8): 0x5,
    ("none", 6): 0x6,
    ("me", 1): 0x7,
    ("me", 2): 0x8,
    ("gfx", 1): 0xA,
    ("gfx", 2): 0xB,
    ("gfx", 4): 0xC,
    ("no_me", 1): 0xD,
    ("no_me", 2): 0xE,
    ("all_me", 1): 0xF,
    ("all_me", 2): 0x10,
    ("gfx", 3): 0x11,
}
_PROFILE_1_SLICE_REV2 = 0x9  # a 1-slice profile with twice the memory (1g.20gb)

#: (architecture as nvml.h numbers it, CUDA capability, SMs per compute slice, PCI device id)
#: by the model name's family.
_HARDWARE = {
    "A30": (7, (8, 0), 14, 0x20B710DE),
    "A100": (7, (8, 0), 14, 0x20B210DE),
    "H100": (9, (9, 0), 16, 0x233010DE),
    "H200": (9, (9, 0), 16, 0x233510DE),
    "GH200": (9, (9, 0), 16, 0x234210DE),
    "B200": (10, (10, 0), 20, 0x290110DE),
    "RTXPRO6000": (10, (12, 0), 47, 0x2BB510DE),
}

DRIVER_VERSION = "580.95.05"
CUDA_VERSION = 13000


def profile_index(model: GpuModel, profile: Profile) -> int:
    """The nvml.h profile index NVML lists ``profile`` under (its ``info.id`` is separate)."""
    if profile.media == "none" and profile.compute == 1:
        smaller = [p for p in model.profiles if p.media == "none" and p.compute == 1]
        if any(p.size < profile.size for p in smaller):
            return _PROFILE_1_SLICE_REV2
    try:
        return _PROFILE_INDEX[(profile.media, profile.compute)]
    except KeyError:
        raise UserError(f"{model.name}: no nvml.h profile index for {profile.name}") from None


def gpu_memory_mib(model: GpuModel) -> int:
    """A whole GPU's memory as NVML reports it (e.g. 81920 MiB on an A100-80GB).  NVIDIA's
    device plugin names MIG resources from each profile's share of it (``7g.80gb``)."""
    return model.memory_gib * 1024 if model.memory_gib else model.full_profile.memory_mib


def table_digest() -> str:
    """Names the profile tables: a state and a library must agree on it."""
    data = json.dumps([m.to_json() for m in BUILTIN_MODELS], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def render_tables() -> str:
    """``tables.h``: every built-in model as the C library's constant tables."""
    media = {"none": "JM_NONE", "me": "JM_ME", "all_me": "JM_ALL_ME", "no_me": "JM_NO_ME"}
    models = []
    for model in BUILTIN_MODELS:
        arch, (major, minor), sms, pci = _HARDWARE[model.name.split("-")[0]]
        product = (model.products[0] if model.products else model.name).replace("-", " ", 1)
        profiles = [
            f"{{{p.nvml_id}, {profile_index(model, p)}, {p.compute}, {p.size}, {p.max_count}, "
            f'{len(p.starts)}, {p.memory_mib}ULL, "{p.name}", {media.get(p.media, "JM_GFX")}, '
            f"{{{', '.join(map(str, p.starts))}}}}}"
            for p in model.profiles
        ]
        models.append(
            f'  {{"{model.name}", "{product}", {model.grid}, {model.compute_budget}, {arch}, '
            f"{sms}, {pci:#x}U, {major}, {minor}, {gpu_memory_mib(model)}ULL, "
            f"{len(profiles)},\n   {{" + ",\n    ".join(profiles) + "}}"
        )
    body = ",\n".join(models)
    return f"""/* Generated by jupyter_mig/nvml/simgpu.py from jupyter_mig/mig/models.py. */
#define JM_TABLE_DIGEST "{table_digest()}"
#define JM_DRIVER_VERSION "{DRIVER_VERSION}"
#define JM_NVML_VERSION "13.{DRIVER_VERSION}"
#define JM_CUDA_VERSION {CUDA_VERSION}
enum {{ JM_NONE, JM_ME, JM_ALL_ME, JM_NO_ME, JM_GFX }};
typedef struct {{
    unsigned id, index, compute, size, max_count, nstarts;
    unsigned long long memory_mib;
    const char *name;
    unsigned media;
    unsigned starts[16];
}} jm_profile;
typedef struct {{
    const char *name, *product;
    unsigned grid, budget, arch, sm_per_slice, pci_device_id;
    int cc_major, cc_minor;
    unsigned long long memory_mib;
    unsigned nprofiles;
    jm_profile profiles[16];
}} jm_model;
static const jm_model JM_MODELS[] = {{
{body}
}};
#define JM_MODEL_COUNT {len(models)}U
"""


_CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-fvisibility=hidden"]


def _build_stamp(tables: str) -> str:
    source = (SOURCE_DIR / "nvml_sim.c").read_bytes()
    return hashlib.sha256(source + tables.encode() + " ".join(_CFLAGS).encode()).hexdigest()


def library_path(build_dir: Path = BUILD_DIR) -> Path:
    """The built library, (re)built first when the C source or the profile tables changed."""
    tables = render_tables()
    stamp = _build_stamp(tables)
    library = build_dir / LIBRARY_NAME
    stamp_file = build_dir / "stamp"
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
            return library
        compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise UserError("no C compiler to build the simulated NVML library: install gcc")
        (build_dir / "tables.h").write_text(tables)
        tmp = build_dir / f".{LIBRARY_NAME}.{os.getpid()}.tmp"
        command = [
            compiler,
            *_CFLAGS,
            "-shared",
            f"-Wl,-soname,{LIBRARY_NAME}",
            f"-I{build_dir}",
            "-o",
            str(tmp),
            str(SOURCE_DIR / "nvml_sim.c"),
            "-lpthread",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise UserError(f"building {LIBRARY_NAME} failed:\n{result.stderr.strip()}")
        tmp.replace(library)
        stamp_file.write_text(stamp)
    return library


@functools.cache
def load_library() -> None:
    """Load the library into this process under its soname, before nvidia-ml-py asks for it
    (once per process: a loaded library stays).

    ``pynvml`` opens ``libnvidia-ml.so.1`` by name; the dynamic loader answers with an already
    loaded object of that soname, so ``pynvml`` itself stays unmodified.
    """
    ctypes.CDLL(str(library_path()), mode=ctypes.RTLD_GLOBAL)


# ----------------------------------------------------------------------------------------------
# The state directory
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a reader (or a kill -9) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_lines(path: Path, lines: Iterable[list[str]]) -> None:
    write_atomic(path, "".join(" ".join(line) + "\n" for line in lines))


def _read(directory: Path) -> list[list[str]]:
    path = directory / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"no simulated GPUs in {directory}: make them with `jupyter-mig nvml-sim init "
            f"{directory} --gpu MODEL --gpus N`"
        ) from None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != ["jupyter-mig-nvml-sim", str(STATE_FORMAT)]:
        raise UserError(f"{path} is not a simulated-GPU state; make it again with nvml-sim init")
    for number, line in enumerate(lines[1:], start=2):
        if _FIELDS.get(line[0]) != len(line):
            raise UserError(
                f"{path} line {number} is corrupt ({' '.join(line)[:60]}); make the state "
                "again with `jupyter-mig nvml-sim init`"
            )
    tables = [line for line in lines if line[0] == "table"]
    if tables != [["table", table_digest()]]:
        raise UserError(
            f"{path} was made for another profile table than jupyter_mig/mig/models.py "
            "has now; make it again with `jupyter-mig nvml-sim init`"
        )
    return lines


def _edit(directory: str | os.PathLike[str], change: Callable[[list[list[str]]], None]) -> None:
    """Read DIR's state, let ``change`` edit its lines in place, write it back (locked)."""
    root = Path(directory)
    with _locked(root):
        lines = _read(root)
        change(lines)
        _write_lines(root / STATE_FILE, lines)


def init_state(
    directory: str | os.PathLike[str],
    model: str,
    gpus: int,
    latency: dict[str, float] | None = None,
) -> None:
    """Make DIR hold ``gpus`` MIG-enabled GPUs of ``model`` without instances, or keep it.

    Idempotent so a restarted sim node resumes: a state with the same model and GPU count is
    kept (instances included), only the latency is replaced.  Anything else is refused with one
    line and nothing written.
    """
    gpu_model = MODELS.get(model)  # ModelError (a ValueError): one line
    if gpu_model.name not in {m.name for m in BUILTIN_MODELS}:
        raise UserError(f"{model}: the simulated GPUs know only the built-in models")
    if gpus < 1:
        raise UserError(f"a simulated node needs at least one GPU, not {gpus}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / STATE_FILE
    with _locked(root):
        if path.exists():
            lines = _read(root)
            have = [(line[1], line[2]) for line in lines if line[0] == "gpu"]
            want = [(str(i), gpu_model.name) for i in range(gpus)]
            if have != want:
                raise UserError(
                    f"{path} holds {len(have)} x {have[0][1] if have else '?'}, not {gpus} x "
                    f"{gpu_model.name}; use another directory or delete it"
                )
            lines = [line for line in lines if line[0] != "latency"]
        else:
            lines = [
                ["jupyter-mig-nvml-sim", str(STATE_FORMAT)],
                ["table", table_digest()],
                ["driver", "0", "0"],
                ["gen", "0"],
                ["stale", "0"],
                *(
                    ["gpu", str(i), gpu_model.name, f"GPU-{uuid.uuid4()}", "1", "1"]
                    for i in range(gpus)
                ),
            ]
        lines += [["latency", call, f"{seconds:g}"] for call, seconds in (latency or {}).items()]
        _write_lines(path, lines)


def reboot(directory: str | os.PathLike[str]) -> None:
    """A node reboot: every MIG instance is gone and nothing is busy (MIG layouts do not
    survive a reboot; the agent must restore its last spec)."""

    def change(lines: list[list[str]]) -> None:
        lines[:] = [line for line in lines if line[0] not in ("gi", "ci", "ghost", "busy")]

    _edit(directory, change)


def set_busy(directory: str | os.PathLike[str], mig_uuids: Iterable[str]) -> None:
    """Exactly these MIG devices have processes (the sim kubelet's running pods): destroying
    their compute instance answers IN_USE."""
    busy = sorted(set(mig_uuids))

    def change(lines: list[list[str]]) -> None:
        lines[:] = [line for line in lines if line[0] != "busy"] + [["busy", u] for u in busy]

    _edit(directory, change)


def inject_fault(
    directory: str | os.PathLike[str],
    call: str,
    code: int = NVML_ERROR_UNKNOWN,
    nth: int = 1,
    times: int = 1,
) -> None:
    """Make the ``nth`` next ``call`` (an NVML symbol such as
    ``nvmlDeviceCreateGpuInstanceWithPlacement``, ``nvmlInit`` or ``*``) and ``times - 1``
    after it return ``code``; ``times=-1`` forever.  Consumed by whichever process calls, so a
    test can inject into a running agent."""
    if not (call == "*" or call.startswith("nvml")):
        raise UserError(f"{call!r}: name an NVML call (nvml...) or '*'")
    if nth < 1 or times == 0 or times < -1:
        raise UserError("nth must be >= 1 and times >= 1 (or -1: forever)")
    _edit(
        directory, lambda lines: lines.append(["fault", call, str(code), str(nth - 1), str(times)])
    )


def clear_faults(directory: str | os.PathLike[str]) -> None:
    def change(lines: list[list[str]]) -> None:
        lines[:] = [line for line in lines if line[0] != "fault"]

    _edit(directory, change)


def _set_field(
    directory: str | os.PathLike[str], kind: str, key: list[str], field: int, value: str
) -> None:
    """Set position ``field`` of the ``kind`` line whose fields start with ``key``."""

    def change(lines: list[list[str]]) -> None:
        for line in lines:
            if line[0] == kind and line[1 : 1 + len(key)] == key:
                line[field] = value
                return
        raise UserError(f"no {kind} {' '.join(key)} in {directory}")

    _edit(directory, change)


def set_stale_enumeration(directory: str | os.PathLike[str], stale: bool = True) -> None:
    """Destroyed MIG devices stay listed by ``nvmlDeviceGetMigDeviceHandleByIndex`` to NVML
    sessions opened before the destroy (as reported for long-lived sessions)."""
    _set_field(directory, "stale", [], 1, "1" if stale else "0")


def hold_gpu_instance(
    directory: str | os.PathLike[str], gpu: int, gi_id: int, held: bool = True
) -> None:
    """Another holder (DCGM, an exporter) keeps the GI open: ``nvmlGpuInstanceDestroy``
    answers IN_USE even after its compute instances are gone."""
    _set_field(directory, "gi", [str(gpu), str(gi_id)], 5, "1" if held else "0")


def set_mig_mode(directory: str | os.PathLike[str], gpu: int, current: bool, pending: bool) -> None:
    """MIG mode now and after the next GPU reset (they differ while a change is pending)."""

    def change(lines: list[list[str]]) -> None:
        for line in lines:
            if line[0] == "gpu" and line[1] == str(gpu):
                line[4:6] = ["1" if current else "0", "1" if pending else "0"]

    _edit(directory, change)


def reload_driver(directory: str | os.PathLike[str], code: int = NVML_ERROR_GPU_IS_LOST) -> None:
    """A driver reload: every NVML session opened before it gets ``code`` from every call
    until it shuts down and initialises again."""

    def change(lines: list[list[str]]) -> None:
        for line in lines:
            if line[0] == "driver":
                line[1:3] = [str(int(line[1]) + 1), str(code)]

    _edit(directory, change)


def set_latency(directory: str | os.PathLike[str], latency: dict[str, float]) -> None:
    """Seconds each named NVML call (or ``*``) takes, replacing the previous latencies."""

    def change(lines: list[list[str]]) -> None:
        lines[:] = [line for line in lines if line[0] != "latency"] + [
            ["latency", call, f"{seconds:g}"] for call, seconds in latency.items()
        ]

    _edit(directory, change)


def state_lines(directory: str | os.PathLike[str]) -> list[list[str]]:
    """The state's lines split in fields (for tests and diagnostics), read under the lock."""
    root = Path(directory)
    with _locked(root):
        return _read(root)


@contextlib.contextmanager
def session_env(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Point this process's library at DIR while the block opens NVML."""
    previous = os.environ.get(ENV_DIR)
    os.environ[ENV_DIR] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_DIR, None)
        else:
            os.environ[ENV_DIR] = previous


def read_devices(
    directory: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], set[str]]:
    """``(gpus, busy MIG UUIDs)`` straight from the state, for the sim node's device plugin.

    Read from the file, not through NVML: one sim-node process serves several nodes, and a
    process's NVML session sees one node.  Bypasses latency and faults, which model the
    agent's NVML calls.  Each GPU dict has ``index``, ``uuid``, ``model``, ``product`` and
    ``instances`` (dicts with ``id``, ``profile_id``, ``start``, ``size`` and ``mig_uuid``,
    the UUID of the GI's first compute instance or None), sorted by start.
    """
    lines = state_lines(directory)
    gpus: list[dict[str, Any]] = []
    instances: dict[tuple[str, str], dict[str, Any]] = {}
    first_ci: dict[tuple[str, str], int] = {}
    for kind, *fields in lines[1:]:
        if kind == "gpu":
            model = MODELS.get(fields[1])
            product = model.products[0] if model.products else model.name
            gpus.append(
                {
                    "index": int(fields[0]),
                    "uuid": fields[2],
                    "model": model.name,
                    "product": product,
                    "instances": [],
                }
            )
        elif kind == "gi":
            profile = MODELS.get(gpus[int(fields[0])]["model"]).by_id[int(fields[2])]
            instance = {
                "id": int(fields[1]),
                "profile_id": profile.nvml_id,
                "start": int(fields[3]),
                "size": profile.size,
                "mig_uuid": None,
            }
            instances[(fields[0], fields[1])] = instance
            gpus[int(fields[0])]["instances"].append(instance)
        elif kind == "ci" and (fields[0], fields[1]) in instances:
            key = (fields[0], fields[1])
            if int(fields[2]) < first_ci.get(key, 1 << 31):
                first_ci[key] = int(fields[2])
                instances[key]["mig_uuid"] = fields[4]
    for gpu in gpus:
        gpu["instances"].sort(key=lambda instance: instance["start"])
    return gpus, {fields[0] for kind, *fields in lines if kind == "busy"}

"""Our ``libnvidia-ml.so.1`` through nvidia-ml-py alone: no project code between them.

Each check runs in a fresh Python process that imports only ``pynvml`` and ``ctypes``, with the
library on ``LD_LIBRARY_PATH`` (how any NVML consumer would find it) and the node's state
through ``JUPYTER_MIG_NVML_SIM_DIR``.  What it must show is what NVML shows on the hardware
(``mig-profiles.md``): profile ids behind profile indexes, placements, overlap refused with
INSUFFICIENT_RESOURCES, a MIG UUID per compute instance, a GI with CIs refusing destruction,
and one process seeing another's change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jupyter_mig.cli import main
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import simgpu

PRELUDE = """
import json, sys
from ctypes import byref, c_uint
import pynvml as n

def code(call, *args):
    try:
        call(*args)
        return 0
    except n.NVMLError as err:
        return err.value

n.nvmlInit()
gpu = n.nvmlDeviceGetHandleByIndex(0)
out = {}
"""


def run_pynvml(state: Path, body: str) -> Any:
    """Run ``body`` (after PRELUDE) with only pynvml; it fills ``out``, printed as JSON."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(simgpu.library_path().parent)
    env[simgpu.ENV_DIR] = str(state)
    script = PRELUDE + textwrap.dedent(body) + "\nn.nvmlShutdown()\nprint(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-I", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


PROFILES = """
out["name"] = n.nvmlDeviceGetName(gpu)
out["mode"] = n.nvmlDeviceGetMigMode(gpu)
out["memory"] = n.nvmlDeviceGetMemoryInfo(gpu).total >> 20
out["profiles"] = {}
index = 0
while True:
    try:
        info = n.nvmlDeviceGetGpuInstanceProfileInfo(gpu, index)
    except n.NVMLError_NotSupported:
        index += 1
        continue
    except n.NVMLError_InvalidArgument:
        break
    count = c_uint(0)
    n.nvmlDeviceGetGpuInstancePossiblePlacements(gpu, info.id, None, byref(count))
    buffer = (n.c_nvmlGpuInstancePlacement_t * count.value)()
    n.nvmlDeviceGetGpuInstancePossiblePlacements(gpu, info.id, buffer, byref(count))
    out["profiles"][info.name] = [
        info.id, index, info.sliceCount, info.instanceCount, info.memorySizeMB,
        [[p.start, p.size] for p in buffer[: count.value]],
    ]
    index += 1
out["last_index"] = index
"""


@pytest.mark.parametrize(
    ("model", "name"),
    [("A100-80GB", "NVIDIA A100-SXM4-80GB"), ("H100-80GB", "NVIDIA H100-80GB-HBM3")],
)
def test_profiles_and_placements_are_the_models_table(
    tmp_path: Path, model: str, name: str
) -> None:
    simgpu.init_state(tmp_path, model, gpus=1)
    seen = run_pynvml(tmp_path, PROFILES)
    table = MODELS.get(model)
    assert seen["name"] == name and seen["mode"] == [1, 1]
    assert seen["memory"] == table.memory_gib * 1024 == simgpu.gpu_memory_mib(table)
    assert seen["last_index"] == 0x12  # INVALID_ARGUMENT past the last nvml.h index
    expected = {
        f"MIG {p.name}": [
            p.nvml_id,
            simgpu.profile_index(table, p),
            p.compute,
            p.max_count,
            p.memory_mib,
            [[s, p.size] for s in p.starts],
        ]
        for p in table.profiles
    }
    assert seen["profiles"] == expected
    # The indexes nvml.h defines: 1g.10gb is NVML_GPU_INSTANCE_PROFILE_1_SLICE (0), id 19.
    assert seen["profiles"]["MIG 1g.10gb"][:2] == [19, 0]
    assert seen["profiles"]["MIG 1g.10gb+me"][:2] == [20, 7]
    assert seen["profiles"]["MIG 1g.20gb"][:2] == [15, 9]
    assert seen["profiles"]["MIG 7g.80gb"][:2] == [0, 4]


CREATE = """
def create(profile, start, size):
    placement = n.c_nvmlGpuInstancePlacement_t(start, size)
    return n.nvmlDeviceCreateGpuInstanceWithPlacement(gpu, profile, byref(placement))

three = create(9, 4, 4)                       # 3g.40gb at slice 4
info = n.nvmlGpuInstanceGetInfo(three)
out["gi"] = [info.id, info.profileId, info.placement.start, info.placement.size]
out["overlap"] = code(create, 14, 4, 2)       # 2g.20gb over it
out["illegal_start"] = code(create, 14, 1, 2)
out["unknown_profile"] = code(create, 4, 0, 8)  # 4 is an index (7g), not an id
ci_profile = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
    three, n.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
out["ci_profile"] = [ci_profile.id, ci_profile.sliceCount, ci_profile.instanceCount]
out["ci_too_big"] = code(
    n.nvmlGpuInstanceGetComputeInstanceProfileInfo, three,
    n.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
ci = n.nvmlGpuInstanceCreateComputeInstance(three, ci_profile.id)
ci_info = n.nvmlComputeInstanceGetInfo(ci)
mig = ci_info.device
out["mig_uuid"] = n.nvmlDeviceGetUUID(mig)
out["mig"] = [
    n.nvmlDeviceIsMigDeviceHandle(mig).value, n.nvmlDeviceGetGpuInstanceId(mig),
    n.nvmlDeviceGetComputeInstanceId(mig), n.nvmlDeviceGetName(mig),
    n.nvmlDeviceGetMemoryInfo(mig).total >> 20,
    n.nvmlDeviceGetUUID(n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig))
    == n.nvmlDeviceGetUUID(gpu),
]
out["slots"] = n.nvmlDeviceGetMaxMigDeviceCount(gpu)
out["slot0"] = n.nvmlDeviceGetUUID(n.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0))
out["slot1"] = code(n.nvmlDeviceGetMigDeviceHandleByIndex, gpu, 1)
out["by_uuid"] = n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByUUID(out["mig_uuid"]))
out["gi_with_ci"] = code(n.nvmlGpuInstanceDestroy, three)
"""

DESTROY = """
three = n.nvmlDeviceGetGpuInstanceById(gpu, int(sys.argv[1]))
buffer = (n.c_nvmlComputeInstance_t * 2)()
count = c_uint(2)
n.nvmlGpuInstanceGetComputeInstances(three, 2, buffer, byref(count))
out["cis"] = count.value
n.nvmlComputeInstanceDestroy(buffer[0])
n.nvmlGpuInstanceDestroy(three)
out["gone"] = code(n.nvmlDeviceGetGpuInstanceById, gpu, int(sys.argv[1]))
"""


@pytest.mark.parametrize("model", ["A100-80GB", "H100-80GB"])
def test_create_overlap_uuids_and_destroy_order(tmp_path: Path, model: str) -> None:
    simgpu.init_state(tmp_path, model, gpus=1)
    seen = run_pynvml(tmp_path, CREATE)
    gi_id, profile_id, start, size = seen["gi"]
    assert (profile_id, start, size) == (9, 4, 4)
    assert seen["overlap"] == 23  # NVML_ERROR_INSUFFICIENT_RESOURCES
    assert seen["illegal_start"] == 2  # NVML_ERROR_INVALID_ARGUMENT
    assert seen["unknown_profile"] == 3  # NVML_ERROR_NOT_SUPPORTED
    assert seen["ci_profile"] == [2, 3, 1] and seen["ci_too_big"] == 3
    assert seen["mig_uuid"].startswith("MIG-") and len(seen["mig_uuid"]) == 40
    memory = MODELS.get(model).profile("3g.40gb").memory_mib
    product = "NVIDIA A100-SXM4-80GB" if model == "A100-80GB" else "NVIDIA H100-80GB-HBM3"
    assert seen["mig"] == [1, gi_id, 0, f"{product} MIG 3g.40gb", memory, True]
    assert seen["slots"] == 7 and seen["slot0"] == seen["mig_uuid"] and seen["slot1"] == 6
    assert seen["by_uuid"] == seen["mig_uuid"]
    assert seen["gi_with_ci"] == 19  # NVML_ERROR_IN_USE: compute instances first
    # A second process sees the first one's instances, and destroys them in order.
    gone = run_pynvml(tmp_path, DESTROY.replace("sys.argv[1]", str(gi_id)))
    assert gone == {"cis": 1, "gone": 6}  # NVML_ERROR_NOT_FOUND afterwards


def test_struct_versions_are_checked(tmp_path: Path) -> None:
    simgpu.init_state(tmp_path, "A100-80GB", gpus=1)
    seen = run_pynvml(
        tmp_path,
        """
        info = n.c_nvmlGpuInstanceProfileInfo_v2_t()
        fn = n._nvmlGetFunctionPointer("nvmlDeviceGetGpuInstanceProfileInfoV")
        out["v2"] = fn(gpu, 0, byref(info))
        info.version = 0x01000098
        out["v1_in_v2"] = fn(gpu, 0, byref(info))
        out["v1"] = n.nvmlDeviceGetGpuInstanceProfileInfo(gpu, 0, version=1).id
        memory = n.nvmlDeviceGetMemoryInfo(gpu, version=n.nvmlMemory_v2)
        out["memory_v2"] = memory.total >> 20
        out["memory_bad"] = code(n.nvmlDeviceGetMemoryInfo, gpu, 0x01000028)
        """,
    )
    assert seen == {"v2": 0, "v1_in_v2": 25, "v1": 19, "memory_v2": 81920, "memory_bad": 25}


def test_a_missing_state_or_another_table_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(simgpu.library_path().parent))
    env[simgpu.ENV_DIR] = str(tmp_path / "nothing")
    script = (
        "import pynvml\ntry:\n    pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n"
        "    print(e.value)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "9"  # NVML_ERROR_DRIVER_NOT_LOADED
    assert done.stderr.count("\n") == 1 and "jupyter-mig nvml-sim init" in done.stderr
    simgpu.init_state(tmp_path, "A100-80GB", gpus=1)
    state = tmp_path / simgpu.STATE_FILE
    state.write_text(state.read_text().replace(simgpu.table_digest(), "0123456789abcdef"))
    env[simgpu.ENV_DIR] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "18"  # NVML_ERROR_LIB_RM_VERSION_MISMATCH
    assert done.stderr.count("\n") == 1 and "jupyter-mig nvml-sim lib" in done.stderr


def test_the_command_line_makes_state_and_names_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["nvml-sim", "lib"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path.name == "libnvidia-ml.so.1" and path.is_file()
    assert main(["nvml-sim", "init", str(tmp_path / "n"), "--gpu", "H100-80GB", "--gpus", "2"]) == 0
    capsys.readouterr()
    state = (tmp_path / "n" / simgpu.STATE_FILE).read_text()
    cases = [
        (["--gpu", "B999", "--gpus", "1"], tmp_path / "other", "unknown GPU model 'B999'"),
        (["--gpu", "A100-80GB", "--gpus", "2"], tmp_path / "n", "holds 2 x H100-80GB"),
        (["--gpu", "A100-80GB", "--gpus", "0"], tmp_path / "zero", "at least one GPU"),
    ]
    for flags, directory, message in cases:
        assert main(["nvml-sim", "init", str(directory), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "other").exists() and not (tmp_path / "zero").exists()
    assert (tmp_path / "n" / simgpu.STATE_FILE).read_text() == state

"""The NVML backend (:mod:`jupyter_mig.nvml.real`) on our ``libnvidia-ml.so.1``.

Everything goes through nvidia-ml-py's own ctypes calls into the C library, so the symbols,
struct versions, by-reference arguments and bytes/str conversions are the ones a real node
exercises.  Faults come from the library's switches (:mod:`jupyter_mig.nvml.simgpu`).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from jupyter_mig.agent.runner import LazyNvml
from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import (
    InsufficientResources,
    InUse,
    InvalidArgument,
    NotFound,
    NotSupported,
    NvmlBackend,
    NvmlError,
    Uninitialized,
    open_backend,
    open_simulated,
    simgpu,
)

A100 = MODELS.get("A100-80GB")


def pid(name: str) -> int:
    return A100.profile(name).nvml_id


@pytest.fixture
def gpu_dir(tmp_path: Path) -> Path:
    simgpu.init_state(tmp_path, "A100-80GB", gpus=2)
    return tmp_path


@pytest.fixture
def nvml(gpu_dir: Path) -> Iterator[NvmlBackend]:
    with open_simulated(gpu_dir) as backend:
        yield backend


def test_gpus_are_mapped_to_their_model(nvml: NvmlBackend) -> None:
    gpus = nvml.gpus()
    assert [(g.index, g.model, g.product, g.mig_enabled) for g in gpus] == [
        (0, "A100-80GB", "NVIDIA-A100-SXM4-80GB", True),
        (1, "A100-80GB", "NVIDIA-A100-SXM4-80GB", True),
    ]
    assert gpus[0].memory_mib == 81920  # as NVML reports an A100-80GB
    assert gpus[0].uuid.startswith("GPU-") and gpus[0].uuid != gpus[1].uuid


def test_discovered_table_is_the_built_in_one(nvml: NvmlBackend) -> None:
    table = nvml.profile_table(0)
    assert (table.name, table.grid, table.compute_budget) == ("A100-80GB", 8, 7)
    assert sorted(table.profiles, key=lambda p: p.nvml_id) == sorted(
        A100.profiles, key=lambda p: p.nvml_id
    )


def test_create_makes_a_device_with_a_mig_uuid_and_refuses_overlap(nvml: NvmlBackend) -> None:
    made = nvml.create_instance(0, pid("3g.40gb"), 4)
    assert (made.profile_id, made.start, made.size, made.compute_instances) == (9, 4, 4, 1)
    assert made.mig_uuid and made.mig_uuid.startswith("MIG-")
    one = nvml.create_instance(0, pid("1g.10gb"), 0)
    assert nvml.instances(0) == [one, made]
    with pytest.raises(InsufficientResources):
        nvml.create_instance(0, pid("2g.20gb"), 4)
    with pytest.raises(InvalidArgument):
        nvml.create_instance(0, pid("2g.20gb"), 1)
    with pytest.raises(NotSupported):
        nvml.create_instance(0, 4, 0)  # 4 is a profile *index* (7g), never an id here


def test_every_refusal_matches_the_pure_layout_rules(nvml: NvmlBackend) -> None:
    """Filling a GPU greedily: the library accepts exactly what layout_errors accepts."""
    for profile in sorted(A100.profiles, key=lambda p: p.size):
        for start in profile.starts:
            current = [Instance(i.start, i.profile_id) for i in nvml.instances(0)]
            if not layout_errors(A100, [*current, Instance(start, profile.nvml_id)]):
                nvml.create_instance(0, profile.nvml_id, start)
            else:
                with pytest.raises(InsufficientResources):
                    nvml.create_instance(0, profile.nvml_id, start)
    assert nvml.instances(0)


def test_busy_devices_refuse_destruction_and_ids_are_reused(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    made = nvml.create_instance(0, pid("1g.10gb"), 0)
    assert made.mig_uuid
    simgpu.set_busy(gpu_dir, [made.mig_uuid])
    with pytest.raises(InUse):
        nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == [made]
    simgpu.set_busy(gpu_dir, [])
    nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == []
    with pytest.raises(NotFound):
        nvml.destroy_instance(0, made.id)
    again = nvml.create_instance(0, pid("1g.10gb"), 2)
    assert again.id == made.id and again.mig_uuid != made.mig_uuid


def test_state_survives_a_new_process_and_reboot_clears_it(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    made = nvml.create_instance(1, pid("2g.20gb"), 2)
    code = (
        "import sys; from jupyter_mig.nvml import open_backend\n"
        "print([i.mig_uuid for i in open_backend('sim:' + sys.argv[1]).instances(1)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(gpu_dir)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == repr([made.mig_uuid])
    simgpu.init_state(gpu_dir, "A100-80GB", gpus=2)  # a restarted sim node keeps instances
    with open_backend(f"sim:{gpu_dir}") as again:
        assert again.instances(1) == [made]
    simgpu.reboot(gpu_dir)
    assert nvml.instances(1) == []


def test_bad_state_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    simgpu.init_state(tmp_path, "A100-80GB", gpus=2)
    before = (tmp_path / simgpu.STATE_FILE).read_text()
    with pytest.raises(UserError, match="A100-80GB"):
        simgpu.init_state(tmp_path, "H100-80GB", gpus=2)
    with pytest.raises(UserError):
        simgpu.init_state(tmp_path, "A100-80GB", gpus=3)
    with pytest.raises(ValueError, match="unknown GPU model"):
        simgpu.init_state(tmp_path / "new", "B999", gpus=1)
    assert not (tmp_path / "new").exists()
    assert (tmp_path / simgpu.STATE_FILE).read_text() == before
    with pytest.raises(Uninitialized, match="Driver Not Loaded"):
        open_simulated(tmp_path / "nothing")
    (tmp_path / simgpu.STATE_FILE).write_text(before.replace(" 1 1\n", "\n", 1))
    with pytest.raises(UserError, match="corrupt"):
        simgpu.set_busy(tmp_path, [])
    with pytest.raises(Uninitialized):
        open_simulated(tmp_path)


def test_fault_injected_here_hits_another_process(gpu_dir: Path) -> None:
    simgpu.inject_fault(gpu_dir, "nvmlDeviceGetCount_v2", times=2)
    code = (
        "import sys\n"
        "from jupyter_mig.nvml import open_backend, NvmlError\n"
        "nvml = open_backend('sim:' + sys.argv[1])\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        nvml.gpus(); print('ok')\n"
        "    except NvmlError as err:\n"
        "        print(err.code)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(gpu_dir)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["999", "999", "ok"]
    with pytest.raises(UserError):
        simgpu.inject_fault(gpu_dir, "reset_gpu")


def _create_one(directory: str, start: int) -> None:
    open_simulated(directory).create_instance(0, pid("1g.10gb"), start)


def test_concurrent_processes_never_lose_an_update(gpu_dir: Path, nvml: NvmlBackend) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_create_one, args=(str(gpu_dir), s)) for s in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(i.start for i in nvml.instances(0)) == list(range(6))


# -- the six defects of the review (issue 8), each on a library switch -----------------------


def test_an_empty_mig_slot_answering_invalid_argument_is_no_failure(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    """nvml.h allows INVALID_ARGUMENT for an empty nvmlDeviceGetMigDeviceHandleByIndex slot."""
    made = nvml.create_instance(0, pid("1g.10gb"), 0)
    simgpu.inject_fault(gpu_dir, "nvmlDeviceGetMigDeviceHandleByIndex", code=2, times=-1)
    assert nvml.instances(0) == [made]


def test_the_mig_uuid_comes_from_the_compute_instance_not_a_stale_slot(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    """A long-lived session still lists a destroyed MIG device; a new GI reuses its id."""
    simgpu.set_stale_enumeration(gpu_dir)
    old = nvml.create_instance(0, pid("1g.10gb"), 0)
    with open_simulated(gpu_dir) as other:  # another process's session does the swap
        other.destroy_instance(0, old.id)
        new = other.create_instance(0, pid("1g.10gb"), 0)
    assert new.id == old.id and new.mig_uuid != old.mig_uuid
    assert [gi.mig_uuid for gi in nvml.instances(0)] == [new.mig_uuid]


def test_a_gpu_instance_held_by_another_client_is_left_whole(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    """GI destroy answers IN_USE after its CIs are gone: the slice must stay a device."""
    made = nvml.create_instance(0, pid("2g.20gb"), 0)
    simgpu.hold_gpu_instance(gpu_dir, 0, made.id)
    with pytest.raises(InUse):
        nvml.destroy_instance(0, made.id)
    (after,) = nvml.instances(0)
    assert after.compute_instances == 1 and after.mig_uuid is not None
    simgpu.hold_gpu_instance(gpu_dir, 0, made.id, held=False)
    nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == []


def test_no_compute_profile_is_an_nvml_error_and_leaves_no_gpu_instance(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    simgpu.inject_fault(gpu_dir, "nvmlGpuInstanceGetComputeInstanceProfileInfoV", code=3, times=-1)
    with pytest.raises(NvmlError):
        nvml.create_instance(0, pid("1g.10gb"), 0)
    simgpu.clear_faults(gpu_dir)
    assert nvml.instances(0) == []


def test_a_driver_reload_makes_the_agent_reopen_nvml(gpu_dir: Path) -> None:
    nvml = LazyNvml(lambda: open_simulated(gpu_dir))
    assert len(nvml.gpus()) == 2
    simgpu.reload_driver(gpu_dir)  # the open session now answers GPU_IS_LOST
    with pytest.raises(NvmlError):
        nvml.gpus()
    assert len(nvml.gpus()) == 2  # the next call opened a new session
    nvml.close()


def test_profiles_past_an_old_bindings_count_are_found(
    nvml: NvmlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older nvidia-ml-py knows fewer profile indexes than the driver enumerates."""
    monkeypatch.setattr(pynvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 9)
    assert "1g.20gb" in {p.name for p in nvml.profile_table(0).profiles}  # index 9


def test_a_pending_mig_mode_change_is_not_mig_mode(gpu_dir: Path, nvml: NvmlBackend) -> None:
    """MIG on now but off after the next reset: the agent must not lay the GPU out."""
    simgpu.set_mig_mode(gpu_dir, 1, current=True, pending=False)
    assert [g.mig_enabled for g in nvml.gpus()] == [True, False]


def test_a_gpu_instance_destroyed_while_listing_is_skipped(
    gpu_dir: Path, nvml: NvmlBackend
) -> None:
    """Another process destroys a listed GI: its handle then answers INVALID_ARGUMENT."""
    first = nvml.create_instance(0, pid("1g.10gb"), 0)
    nvml.create_instance(0, pid("1g.10gb"), 1)
    simgpu.inject_fault(gpu_dir, "nvmlGpuInstanceGetInfo", code=2)  # the first GI's stale handle
    assert len(nvml.instances(0)) == 1
    assert first in nvml.instances(0)

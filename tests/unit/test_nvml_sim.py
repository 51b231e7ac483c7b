"""The simulated NVML backend: real MIG semantics, shared state, faults, reboot."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jupyter_mig.mig.layout import Instance, layout_errors
from jupyter_mig.mig.models import MODELS
from jupyter_mig.nvml import open_backend
from jupyter_mig.nvml.base import (
    InsufficientResources,
    InUse,
    InvalidArgument,
    NotFound,
    NotSupported,
    NvmlError,
    Uninitialized,
)
from jupyter_mig.nvml.sim import (
    SimNvml,
    clear_faults,
    init_state,
    inject_fault,
    read_devices,
    reboot,
    set_busy,
)

A100 = MODELS.get("A100-80GB")


def pid(name: str) -> int:
    return A100.profile(name).nvml_id


@pytest.fixture
def gpu_dir(tmp_path: Path) -> Path:
    init_state(tmp_path, "A100-80GB", gpus=2)
    return tmp_path


def test_gpus_report_the_configured_model(gpu_dir: Path) -> None:
    gpus = SimNvml(gpu_dir).gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert {g.model for g in gpus} == {"A100-80GB"}
    assert all(g.product in A100.products and g.mig_enabled for g in gpus)
    assert len({g.uuid for g in gpus}) == 2
    assert SimNvml(gpu_dir).profile_table(1) == A100


def test_create_returns_a_device_with_a_mig_uuid(gpu_dir: Path) -> None:
    nvml = SimNvml(gpu_dir)
    made = nvml.create_instance(0, pid("3g.40gb"), 4)
    assert (made.start, made.size, made.profile_id, made.compute_instances) == (4, 4, 9, 1)
    assert made.mig_uuid is not None and made.mig_uuid.startswith("MIG-")
    assert uuid.UUID(made.mig_uuid.removeprefix("MIG-")).version == 4
    assert nvml.instances(0) == [made]
    assert nvml.instances(1) == []


def test_overlap_max_count_and_media_rules_refuse_creation(gpu_dir: Path) -> None:
    nvml = SimNvml(gpu_dir)
    nvml.create_instance(0, pid("4g.40gb"), 0)
    with pytest.raises(InsufficientResources):
        nvml.create_instance(0, pid("2g.20gb"), 2)  # overlaps the 4g
    nvml.create_instance(0, pid("1g.10gb+me"), 4)
    with pytest.raises(InsufficientResources):
        nvml.create_instance(0, pid("1g.10gb+me"), 5)  # one +me per GPU
    with pytest.raises(InvalidArgument):
        nvml.create_instance(0, pid("3g.40gb"), 2)  # 3g starts at 0 or 4 only
    with pytest.raises(NotSupported):
        nvml.create_instance(0, 77, 0)
    with pytest.raises(InvalidArgument):
        nvml.instances(5)
    remaining = [Instance(i.start, i.profile_id) for i in nvml.instances(0)]
    assert layout_errors(A100, remaining) == []
    assert len(remaining) == 2


def test_every_refusal_matches_the_pure_layout_rules(gpu_dir: Path) -> None:
    """Filling a GPU greedily: the backend accepts exactly what layout_errors accepts."""
    nvml = SimNvml(gpu_dir)
    for profile in sorted(A100.profiles, key=lambda p: p.size):
        for start in profile.starts:
            current = [Instance(i.start, i.profile_id) for i in nvml.instances(0)]
            fits = not layout_errors(A100, [*current, Instance(start, profile.nvml_id)])
            if fits:
                nvml.create_instance(0, profile.nvml_id, start)
            else:
                with pytest.raises(InsufficientResources):
                    nvml.create_instance(0, profile.nvml_id, start)
    assert nvml.instances(0)


def test_busy_devices_refuse_destruction(gpu_dir: Path) -> None:
    nvml = SimNvml(gpu_dir)
    made = nvml.create_instance(0, pid("1g.10gb"), 0)
    assert made.mig_uuid
    set_busy(gpu_dir, [made.mig_uuid])
    with pytest.raises(InUse) as caught:
        nvml.destroy_instance(0, made.id)
    assert caught.value.code == 19
    assert nvml.instances(0) == [made]
    set_busy(gpu_dir, [])
    nvml.destroy_instance(0, made.id)
    assert nvml.instances(0) == []
    with pytest.raises(NotFound):
        nvml.destroy_instance(0, made.id)


def test_gpu_instance_ids_are_reused_like_nvml(gpu_dir: Path) -> None:
    nvml = SimNvml(gpu_dir)
    first = nvml.create_instance(0, pid("1g.10gb"), 0)
    second = nvml.create_instance(0, pid("1g.10gb"), 1)
    assert first.id != second.id
    nvml.destroy_instance(0, first.id)
    third = nvml.create_instance(0, pid("1g.10gb"), 2)
    assert third.id == first.id
    assert third.mig_uuid != first.mig_uuid


def test_state_survives_a_new_process_and_reboot_clears_it(gpu_dir: Path) -> None:
    made = SimNvml(gpu_dir).create_instance(1, pid("2g.20gb"), 2)
    assert made.mig_uuid
    set_busy(gpu_dir, [made.mig_uuid])
    code = (
        "import sys; from jupyter_mig.nvml import open_backend\n"
        "print([i.mig_uuid for i in open_backend('sim:' + sys.argv[1]).instances(1)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(gpu_dir)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == repr([made.mig_uuid])
    init_state(gpu_dir, "A100-80GB", gpus=2)  # a restarted sim node keeps the instances
    assert open_backend(f"sim:{gpu_dir}").instances(1) == [made]
    reboot(gpu_dir)
    assert SimNvml(gpu_dir).instances(1) == []
    gpus, busy = read_devices(gpu_dir)
    assert busy == set() and all(g["instances"] == [] for g in gpus)


def test_init_refuses_to_change_a_node(gpu_dir: Path) -> None:
    with pytest.raises(ValueError, match="A100-80GB"):
        init_state(gpu_dir, "H100-80GB", gpus=2)
    with pytest.raises(ValueError):
        init_state(gpu_dir, "A100-80GB", gpus=3)
    with pytest.raises(ValueError, match="unknown NVML operation"):
        init_state(gpu_dir, "A100-80GB", gpus=2, latency={"reset": 1.0})


def test_missing_state_is_uninitialized(tmp_path: Path) -> None:
    with pytest.raises(Uninitialized, match="sim-node"):
        SimNvml(tmp_path / "nothing")


def test_injected_fault_fails_the_nth_call_with_the_real_error_class(gpu_dir: Path) -> None:
    inject_fault(gpu_dir, "create_instance", "InsufficientResources", nth=2)
    nvml = SimNvml(gpu_dir)
    nvml.instances(0)  # other operations do not count
    nvml.create_instance(0, pid("1g.10gb"), 0)
    with pytest.raises(InsufficientResources, match="injected"):
        nvml.create_instance(0, pid("1g.10gb"), 1)
    assert len(nvml.instances(0)) == 1  # the failed call changed nothing
    nvml.create_instance(0, pid("1g.10gb"), 1)  # the fault is consumed
    assert (
        not (gpu_dir / "nvml-faults.json").exists()
        or json.loads((gpu_dir / "nvml-faults.json").read_text()) == []
    )


def test_fault_injected_here_hits_another_process(gpu_dir: Path) -> None:
    inject_fault(gpu_dir, "*", "NvmlError", times=2)
    code = (
        "import sys\n"
        "from jupyter_mig.nvml.sim import SimNvml\n"
        "from jupyter_mig.nvml.base import NvmlError\n"
        "nvml = SimNvml(sys.argv[1])\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        nvml.gpus(); print('ok')\n"
        "    except NvmlError as err:\n"
        "        print(type(err).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(gpu_dir)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["NvmlError", "NvmlError", "ok"]
    inject_fault(gpu_dir, "gpus", "InUse")
    clear_faults(gpu_dir)
    assert SimNvml(gpu_dir).gpus()


def test_inject_fault_rejects_unknown_names(gpu_dir: Path) -> None:
    with pytest.raises(ValueError):
        inject_fault(gpu_dir, "reset_gpu")
    with pytest.raises(ValueError):
        inject_fault(gpu_dir, "gpus", "Exploded")
    with pytest.raises(NvmlError):  # NvmlError itself is injectable, and the base of all
        inject_fault(gpu_dir, "gpus")
        SimNvml(gpu_dir).gpus()


def _create_one(directory: str, start: int) -> None:
    SimNvml(directory).create_instance(0, pid("1g.10gb"), start)


def test_concurrent_processes_never_lose_an_update(gpu_dir: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_create_one, args=(str(gpu_dir), s)) for s in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(i.start for i in SimNvml(gpu_dir).instances(0)) == list(range(6))

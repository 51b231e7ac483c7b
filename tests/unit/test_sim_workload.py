"""Simulator workloads: the synthetic generator, openb CSV parsing and the share mapping."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import MODELS
from jupyter_mig.mig.sizes import parse_size, resolve_for_model
from jupyter_mig.sim.engine import ClusterSpec
from jupyter_mig.sim.workload import (
    SYNTHETIC_MIX,
    openb,
    parse_openb,
    share_request,
    synthetic,
)

A100 = MODELS.get("A100-80GB")
A30 = MODELS.get("A30-24GB")
TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces" / "openb"
HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
HEADER += "deletion_time,scheduled_time\n"


def profile_for_milli(milli: int, model: str = "A100-80GB") -> str:
    m = MODELS.get(model)
    profile = resolve_for_model(parse_size(share_request(milli, 1000, m)), m)
    assert profile is not None
    return profile.name


@pytest.mark.parametrize(
    ("milli", "profile"),
    [
        (50, "1g.10gb"),
        (142, "1g.10gb"),  # 142/1000 <= 1/7
        (143, "2g.20gb"),  # just over 1/7
        (320, "3g.40gb"),
        (470, "4g.40gb"),
        (571, "4g.40gb"),
        (572, "7g.80gb"),  # no 5g profile: rounds up to the whole GPU
        (810, "7g.80gb"),
        (1000, "7g.80gb"),
    ],
)
def test_share_maps_to_the_smallest_covering_profile(milli: int, profile: str) -> None:
    assert profile_for_milli(milli) == profile


def test_share_mapping_on_a_four_slice_part() -> None:
    assert profile_for_milli(250, "A30-24GB") == "1g.6gb"
    assert profile_for_milli(470, "A30-24GB") == "2g.12gb"
    assert profile_for_milli(510, "A30-24GB") == "4g.24gb"


def test_synthetic_workload_is_seeded_and_hits_the_load() -> None:
    cluster = ClusterSpec(A100, 4, 8)
    first = synthetic(cluster, 3000, 0.8, seed=5, max_duration=86400)
    again = synthetic(cluster, 3000, 0.8, seed=5, max_duration=86400)
    other = synthetic(cluster, 3000, 0.8, seed=6, max_duration=86400)
    assert first.pods == again.pods
    assert first.pods != other.pods
    assert first.offered_load == pytest.approx(0.8, rel=0.1)
    arrivals = [p.arrival for p in first.pods]
    assert arrivals == sorted(arrivals)
    sizes = {p.requests for p in first.pods}
    assert sizes == {("1g",), ("2g",), ("3g",), ("4g",), ("7g",), ("7g", "7g")}
    two_gpu = sum(1 for p in first.pods if len(p.requests) == 2) / len(first.pods)
    assert two_gpu == pytest.approx(SYNTHETIC_MIX[-1].weight, abs=0.02)


def test_synthetic_skips_pods_wider_than_a_node() -> None:
    cluster = ClusterSpec(A100, 4, 1)
    workload = synthetic(cluster, 500, 0.8, seed=1, max_duration=86400)
    assert all(len(p.requests) == 1 for p in workload.pods)


def rows(text: str) -> list[str]:
    return io.StringIO(text).readlines()


GOOD = (
    HEADER
    + "p0,1000,100,1,250,,LS,Running,100,400,100\n"
    + "p1,1000,100,0,0,,BE,Running,150,900,150\n"
    + "p2,1000,100,2,1000,,BE,Running,200,260,200\n"
    + "p3,1000,100,8,1000,,BE,Running,300,310,300\n"
)


def test_openb_mapping_skips_and_replays_scaled_times() -> None:
    cluster = ClusterSpec(A100, 2, 4)
    trace = parse_openb(rows(GOOD), "t.csv")
    workload = openb(trace, "t.csv", cluster, load=1.0, time_scale=10.0, max_duration=86400, seed=0)
    assert [p.name for p in workload.pods] == ["p0", "p2"]  # p1: no GPU; p3: 8 GPUs > 4
    p0, p2 = workload.pods
    assert p0.requests == ("2g",) and p0.interactive  # 0.25 GPU -> 2/7; qos LS
    assert p2.requests == ("7g", "7g") and not p2.interactive
    assert (p0.arrival, p2.arrival) == (0.0, 10.0)  # (200 - 100) / 10
    assert (p0.duration, p2.duration) == (300.0, 60.0)  # lifetimes are not scaled
    assert any("skipped 1 without GPUs and 1 needing more than 4" in s for s in workload.summary)


def test_openb_resampled_arrivals_and_capped_lifetimes() -> None:
    cluster = ClusterSpec(A100, 2, 4)
    trace = parse_openb(rows(GOOD), "t.csv")
    workload = openb(trace, "t.csv", cluster, load=1.0, time_scale=None, max_duration=100, seed=0)
    assert [p.duration for p in workload.pods] == [100.0, 60.0]
    assert workload.pods[0].arrival < workload.pods[1].arrival


def test_openb_without_times_draws_lifetimes_and_refuses_time_scale() -> None:
    text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,500\nb,1,1,1,1000\n"
    trace = parse_openb(rows(text), "m.csv")
    cluster = ClusterSpec(A100, 1, 8)
    workload = openb(trace, "m.csv", cluster, load=1.0, time_scale=None, max_duration=1e6, seed=0)
    assert all(p.duration >= 1.0 for p in workload.pods)
    with pytest.raises(UserError, match="no creation_time"):
        openb(trace, "m.csv", cluster, load=1.0, time_scale=2.0, max_duration=1e6, seed=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("name,num_gpu\n", "missing column 'gpu_milli'"),
        ("name,num_gpu,gpu_milli,creation_time\n", "only one of"),
        ("name,num_gpu,gpu_milli\na,1\n", "line 2: expected 3 fields, got 2"),
        ("name,num_gpu,gpu_milli\na,one,500\n", "line 2: num_gpu: expected a whole number"),
        ("name,num_gpu,gpu_milli\na,-1,500\n", "line 2: num_gpu: must be between 0 and 64"),
        ("name,num_gpu,gpu_milli\na,1,1500\n", "line 2: gpu_milli: must be between 0 and 1000"),
        ("name,num_gpu,gpu_milli\na,1,0\n", "line 2: gpu_milli: must be 1-1000"),
        ("name,num_gpu,gpu_milli\na,1,5\na,1,5\n", "line 3: name: duplicate pod name 'a'"),
        ("name,num_gpu,gpu_milli\n,1,5\n", "line 2: name: empty pod name"),
        ("name,num_gpu,gpu_milli\na,0,0\n", "no pod asks for a GPU"),
        (
            "name,num_gpu,gpu_milli,creation_time,deletion_time\na,1,5,10,x\n",
            "line 2: deletion_time: expected seconds",
        ),
        (
            "name,num_gpu,gpu_milli,creation_time,deletion_time\na,1,5,10,5\n",
            "line 2: deletion_time: earlier than creation_time",
        ),
        ('name,num_gpu,gpu_milli\n"a,1,5\n', "t.csv"),
    ],
)
def test_malformed_csv_names_line_and_field(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_openb(rows(text), "t.csv")


@pytest.mark.skipif(not TRACES.is_dir(), reason="openb traces not present")
def test_real_openb_files_parse() -> None:
    for name in ("openb_pod_list_default.csv", "openb_pod_list_multigpu20.csv"):
        with open(TRACES / name, encoding="utf-8", newline="") as handle:
            trace = parse_openb(handle, name)
        assert sum(1 for r in trace if r.num_gpu) > 7000

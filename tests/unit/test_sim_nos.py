"""The nos baselines: where the faithful ``nos-greedy`` departs from the tidy ordered variant,
and nos's shipped tables (issue 12)."""

from __future__ import annotations

from collections import Counter

import pytest

from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance
from jupyter_mig.mig.models import MODELS, GpuModel
from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.sim.engine import ClusterSpec, Decision, GpuView, PodView, Timing, simulate
from jupyter_mig.sim.nos import NosGreedyPolicy, shipped_geometries
from jupyter_mig.sim.policies import make_policy
from jupyter_mig.sim.workload import synthetic

A100 = MODELS.get("A100-80GB")


def pid(model: GpuModel, name: str) -> int:
    return model.profile(name).nvml_id


def pod(name: str, size: str, profile: str) -> PodView:
    return PodView(name, (parse_size(size),), (pid(A100, profile),), 0, False, 0.0)


def created(decision: Decision) -> Counter[str]:
    return Counter(
        A100.by_id[i.profile_id].name for change in decision.changes.values() for i in change.create
    )


def fresh(spec: str, seed: int = 0) -> NosGreedyPolicy:
    policy = make_policy(spec, A100, seed=seed)
    assert isinstance(policy, NosGreedyPolicy)
    policy.initial_layout(A100)  # a run starts here
    return policy


def test_every_pending_pod_is_tried_again_on_every_node_over_carving() -> None:
    # 4 nodes, each GPU holding a used 4g: only {4g, 3g} gives a 3g, one per GPU.  The first 3g
    # pod is added on node 1; the second lacks a 3g, so nos visits node 2, where the first pod is
    # added again (and takes the new 3g), and so on: four 3g carved for two pods.
    four = Instance(0, pid(A100, "4g.40gb"))
    gpus = [GpuView(f"node-{n}", 0, A100, (four,), (), busy=False) for n in range(1, 5)]
    waiting = [pod("a", "3g", "3g.40gb"), pod("b", "3g", "3g.40gb")]
    assert created(fresh("nos-greedy").plan(gpus, waiting)) == {"3g.40gb": 4}
    assert created(fresh("nos-greedy-ordered").plan(gpus, waiting)) == {"3g.40gb": 2}


def test_ties_between_geometries_are_broken_at_random_but_reproducibly() -> None:
    # One 1g pod, one GPU with a free 7g: every geometry holding a 1g scores 1.
    gpus = [GpuView("node-1", 0, A100, (), (Instance(0, pid(A100, "7g.80gb")),), busy=False)]
    waiting = [pod("a", "1g", "1g.10gb")]
    shapes = {
        frozenset(created(fresh("nos-greedy", seed).plan(gpus, waiting)).items())
        for seed in range(12)
    }
    assert len(shapes) > 1
    again = [created(fresh("nos-greedy", 5).plan(gpus, waiting)) for _ in range(2)]
    assert again[0] == again[1]
    # The ordered variant takes the first geometry in list order: the most instances.
    assert created(fresh("nos-greedy-ordered").plan(gpus, waiting)) == {"1g.10gb": 7}


def test_a_nodes_gpus_are_visited_in_random_order() -> None:
    # Eight GPUs with a free 7g each and one 3g pod: the GPU that is re-carved depends on the seed.
    seven = (Instance(0, pid(A100, "7g.80gb")),)
    gpus = [GpuView("node-1", i, A100, (), seven, busy=False) for i in range(8)]
    waiting = [pod("a", "3g", "3g.40gb")]
    chosen = {tuple(fresh("nos-greedy", seed).plan(gpus, waiting).changes) for seed in range(12)}
    assert len(chosen) > 1
    assert list(fresh("nos-greedy-ordered").plan(gpus, waiting).changes) == [("node-1", 0)]


def test_starting_layouts() -> None:
    seven = pid(A100, "7g.80gb")
    assert fresh("nos-greedy").initial_layout(A100) == (Instance(0, seven),)
    assert fresh("nos-shipped").initial_layout(A100) == (Instance(0, seven),)
    assert fresh("nos-greedy-ordered").initial_layout(A100) == ()


def test_shipped_tables_name_profiles_an_80gb_card_lacks() -> None:
    table = shipped_geometries(A100)
    assert len(table) == 12
    phantoms = {p for g in table for p, _ in g if p < 0}
    assert len(phantoms) == 2  # 7g.79gb and 3g.20gb
    assert all(pid(A100, "7g.80gb") not in dict(g) for g in table)
    with pytest.raises(UserError, match="no table for H100-80GB"):
        make_policy("nos-shipped", MODELS.get("H100-80GB"))


def test_shipped_nos_never_creates_a_whole_gpu_instance() -> None:
    seven = pid(A100, "7g.80gb")
    one = pid(A100, "1g.10gb")
    gpus = [GpuView("node-1", 0, A100, (), (Instance(6, one),), busy=False)]
    waiting = [PodView("a", (parse_size("7g"),), (seven,), 0, False, 0.0)]
    assert fresh("nos-shipped").plan(gpus, waiting).changes == {}
    assert created(fresh("nos-greedy").plan(gpus, waiting)) == {"7g.80gb": 1}
    # Over a run, only the starting 7g instances serve whole-GPU pods.
    cluster = ClusterSpec(A100, 2, 2)
    workload = synthetic(cluster, 200, 1.0, seed=1, max_duration=86400)
    runs = [
        simulate(cluster, workload.pods, make_policy(spec, A100), Timing(), audit=True)
        for spec in ("nos-shipped", "nos-greedy")
    ]
    assert runs[0].placed < runs[1].placed


def test_a_run_is_reproducible_for_its_seed() -> None:
    cluster = ClusterSpec(A100, 2, 4)
    workload = synthetic(cluster, 300, 1.0, seed=2, max_duration=86400)
    policy = make_policy("nos-greedy", A100, seed=3)
    first = simulate(cluster, workload.pods, policy, Timing())
    second = simulate(cluster, workload.pods, policy, Timing())  # the same object, re-seeded
    assert first.bind_times == second.bind_times
    assert (first.creates, first.destroys) == (second.creates, second.destroys)

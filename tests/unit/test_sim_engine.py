"""The simulator engine and its policies: timing semantics, hard rules, invariants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_mig.errors import UserError
from jupyter_mig.mig.layout import Instance, is_valid
from jupyter_mig.mig.models import MODELS, GpuModel
from jupyter_mig.mig.sizes import parse_size
from jupyter_mig.sim.engine import (
    Batching,
    ClusterSpec,
    Decision,
    GpuChange,
    GpuView,
    PodSpec,
    PodView,
    SimulationError,
    Timing,
    percentile,
    simulate,
)
from jupyter_mig.sim.nos import (
    NOS_BATCHING,
    NosGreedyPolicy,
    _create_unplaced,
    apply_geometry,
    nos_geometries,
)
from jupyter_mig.sim.policies import DYNAMIC_BATCHING, DynamicPolicy, make_policy, static_layout
from jupyter_mig.sim.workload import synthetic

A100 = MODELS.get("A100-80GB")
A30 = MODELS.get("A30-24GB")
ALL_POLICIES = (
    "dynamic",
    "nos-greedy",
    "static:all-1g",
    "static:balanced",
    "static:all-3g",
    "nos-greedy-ordered",
)


def pid(model: GpuModel, name: str) -> int:
    return model.profile(name).nvml_id


# -- timing semantics ---------------------------------------------------------------------------


def test_dynamic_first_pod_waits_batch_ops_and_refresh() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    timing = Timing(op_latency=1.5, refresh_delay=5.0)
    pods = [PodSpec("a", 10.0, 100.0, ("3g",))]
    result = simulate(cluster, pods, DynamicPolicy(spares=0), timing)
    # Idle window, one create, device-plugin refresh.
    assert result.bind_times["a"] == pytest.approx(10.0 + DYNAMIC_BATCHING.idle + 1.5 + 5.0)
    assert (result.creates, result.destroys, result.rounds) == (1, 0, 1)
    # With a spare 3g beside it (the default), the GPU's one reconfiguration has two creates.
    spared = simulate(cluster, pods, DynamicPolicy(spares=1), timing)
    assert spared.bind_times["a"] == pytest.approx(10.0 + DYNAMIC_BATCHING.idle + 2 * 1.5 + 5.0)
    assert (spared.creates, spared.destroys, spared.rounds) == (2, 0, 1)


def test_dynamic_reuses_a_free_instance_without_waiting() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    pods = [PodSpec("a", 0.0, 50.0, ("2g",)), PodSpec("b", 60.0, 50.0, ("2g",))]
    result = simulate(cluster, pods, DynamicPolicy(spares=0), Timing())  # count a's create only
    assert result.bind_times["b"] == 60.0  # a's instance is still there: kube-scheduler binds b
    assert result.creates == 1


def test_batch_max_window_bounds_a_stream_of_arrivals() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    policy = DynamicPolicy(batching=Batching(idle=2.0, max_wait=5.0))
    # A 1g pod every second keeps the idle window open; the max window closes the batch at t=5.
    pods = [PodSpec(f"p{i}", float(i), 1000.0, ("1g",)) for i in range(7)]
    result = simulate(cluster, pods, policy, Timing(op_latency=1.0, refresh_delay=0.0))
    first_round = 5.0
    assert min(result.bind_times.values()) > first_round
    assert result.placed == 7


def test_nos_barrier_delays_a_second_plan() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    timing = Timing(op_latency=1.0, refresh_delay=5.0)
    pods = [PodSpec("a", 0.0, 1000.0, ("1g",)), PodSpec("b", 11.0, 1000.0, ("3g",))]
    result = simulate(cluster, pods, NosGreedyPolicy(faithful=False), timing)
    # a: batch ready at 10 (idle), nos carves the whole GPU into 7 x 1g: ready at 10 + 7 + 5.
    assert result.bind_times["a"] == pytest.approx(22.0)
    # b: its batch is ready at 21 while the first plan is in flight, so it is dropped and
    # retried 10 s later; the new batch waits its own idle window before planning.
    planned = 21.0 + NOS_BATCHING.requeue + NOS_BATCHING.idle
    second_ops = result.creates + result.destroys - 7
    assert result.rounds == 2
    assert result.bind_times["b"] == pytest.approx(planned + second_ops * 1.0 + 5.0)


def test_pod_that_never_fits_waits_its_whole_life() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    pods = [PodSpec("big", 5.0, 300.0, ("7g",))]
    policy = make_policy("static:all-1g", A100)
    result = simulate(cluster, pods, policy, Timing())
    assert (result.placed, result.unplaced) == (0, 1)
    assert result.waits == (300.0,)


def test_utilization_is_time_averaged_over_the_arrival_window() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    pods = [PodSpec("a", 0.0, 50.0, ("1g",)), PodSpec("b", 100.0, 10.0, ("1g",))]
    result = simulate(cluster, pods, make_policy("static:all-1g", A100), Timing())
    # One of 7 compute slices held for 50 of the 100 s between first and last arrival.
    assert result.utilization == pytest.approx(1 / 7 * 50 / 100)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 95) == 7.0


# -- hard rules: a policy that breaks them is stopped ----------------------------------------


Decide = Callable[[Sequence[GpuView], Sequence[PodView]], Decision]


@dataclass(frozen=True)
class _Scripted:
    """A policy that answers every round with ``decide(gpus, waiting)``."""

    decide: Decide
    name: str = "scripted"
    batching: Batching | None = DYNAMIC_BATCHING

    def initial_layout(self, model: GpuModel) -> tuple[Instance, ...]:
        return (Instance(0, pid(model, "1g.10gb")), Instance(1, pid(model, "1g.10gb")))

    def plan(self, gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        return self.decide(gpus, waiting)


def _run_scripted(decide: Decide) -> None:
    cluster = ClusterSpec(A100, 1, 1)
    pods = [PodSpec("holder", 0.0, 100.0, ("1g",)), PodSpec("want", 1.0, 100.0, ("7g",))]
    simulate(cluster, pods, _Scripted(decide), Timing())


def test_destroying_an_instance_in_use_is_refused() -> None:
    def destroy_used(gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        gpu = gpus[0]
        return Decision({(gpu.node, 0): GpuChange(destroy=gpu.used)})

    with pytest.raises(SimulationError, match="in use"):
        _run_scripted(destroy_used)


def test_an_invalid_layout_is_refused() -> None:
    def overlap(gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        gpu = gpus[0]
        return Decision({(gpu.node, 0): GpuChange(create=(Instance(0, pid(A100, "7g.80gb")),))})

    with pytest.raises(SimulationError, match="invalid layout"):
        _run_scripted(overlap)


def test_placing_a_pod_on_a_held_instance_is_refused() -> None:
    def steal(gpus: Sequence[GpuView], waiting: Sequence[PodView]) -> Decision:
        gpu = gpus[0]
        return Decision(placements={waiting[0].name: ((gpu.node, 0, gpu.used[0]),)})

    with pytest.raises(SimulationError, match="not free"):
        _run_scripted(steal)


# -- invariants over whole runs -----------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["A100-80GB", "A30-24GB", "RTXPRO6000-96GB"])
@pytest.mark.parametrize("load", [0.6, 1.4])
def test_every_policy_keeps_the_invariants(model_name: str, load: float) -> None:
    model = MODELS.get(model_name)
    cluster = ClusterSpec(model, 2, 3)
    workload = synthetic(cluster, 150, load, seed=7, max_duration=86400)
    for spec in ALL_POLICIES:
        # audit=True re-checks after every event: no instance held twice, every layout valid,
        # advertised capacity consistent; the engine refuses any destroy of an in-use instance.
        result = simulate(cluster, workload.pods, make_policy(spec, model), Timing(), audit=True)
        assert result.placed + result.unplaced == result.pods == len(workload.pods)
        assert 0.0 <= result.utilization <= 1.0
        if spec.startswith("static:"):
            assert (result.creates, result.destroys, result.rounds) == (0, 0, 0)


SIZES = ("1g", "2g", "3g", "4g", "7g", "10gb", "20gb", "40gb")


@st.composite
def workloads(draw: st.DrawFn) -> list[PodSpec]:
    count = draw(st.integers(1, 25))
    pods = []
    for i in range(count):
        sizes = draw(st.lists(st.sampled_from(SIZES), min_size=1, max_size=3))
        pods.append(
            PodSpec(
                f"p{i}",
                draw(st.floats(0, 200)),
                draw(st.floats(0, 150)),
                tuple(sizes),
                priority=draw(st.integers(0, 1)),
                interactive=draw(st.booleans()),
            )
        )
    return pods


@settings(max_examples=40, deadline=None)
@given(pods=workloads(), spec=st.sampled_from(ALL_POLICIES), gpus=st.integers(1, 3))
def test_random_workloads_keep_the_invariants(pods: list[PodSpec], spec: str, gpus: int) -> None:
    cluster = ClusterSpec(A100, 2, gpus)
    result = simulate(cluster, pods, make_policy(spec, A100), Timing(), audit=True)
    assert result.placed + result.unplaced == len(pods)
    for name, bound in result.bind_times.items():
        pod = next(p for p in pods if p.name == name)
        assert pod.arrival <= bound <= pod.arrival + pod.duration


def test_dynamic_beats_static_layouts_and_reacts_faster_than_nos() -> None:
    cluster = ClusterSpec(A100, 2, 4)
    workload = synthetic(cluster, 400, 0.5, seed=3, max_duration=86400)
    results = {
        spec: simulate(cluster, workload.pods, make_policy(spec, A100), Timing())
        for spec in ALL_POLICIES
    }
    dynamic = results["dynamic"]
    for spec in ALL_POLICIES[2:5]:
        assert dynamic.placed > results[spec].placed
    # A 2 s batching window against nos's 10 s idle window, 60 s timeout and plan barrier.
    assert dynamic.wait_percentile(90) < results["nos-greedy"].wait_percentile(90)


# -- static layouts ------------------------------------------------------------------------------


def test_named_static_layouts() -> None:
    def shape(layout: tuple[Instance, ...], model: GpuModel) -> Counter[str]:
        return Counter(model.by_id[i.profile_id].name for i in layout)

    assert shape(static_layout("all-1g", A100), A100) == {"1g.10gb": 7}
    assert shape(static_layout("all-3g", A100), A100) == {"3g.40gb": 2}
    assert shape(static_layout("balanced", A100), A100) == {
        "1g.10gb": 2,
        "2g.20gb": 1,
        "3g.40gb": 1,
    }
    assert shape(static_layout("balanced", A30), A30) == {"1g.6gb": 2, "2g.12gb": 1}
    assert shape(static_layout("2x1g+2g+3g", A100), A100) == shape(
        static_layout("balanced", A100), A100
    )
    for name in ("all-1g", "all-3g", "balanced", "1g*3+4g"):
        assert is_valid(A100, static_layout(name, A100))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("static:7g+1g", "does not fit"),
        ("static:all-99g", "no GPU model|no profile"),
        ("static:1g+", "cannot read"),
        ("greedy", "unknown policy"),
        ("static:", "unknown policy"),
    ],
)
def test_bad_policy_names(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_policy(spec, A100)


# -- nos-greedy ----------------------------------------------------------------------------------


def test_nos_geometries_are_the_maximal_multisets_of_the_model() -> None:
    geometries = nos_geometries(A100)
    named = [{A100.by_id[p].name: c for p, c in g} for g in geometries]
    assert len(geometries) == 14  # 19 placements-level layouts collapse to 14 multisets
    assert {"7g.80gb": 1} in named
    assert {"4g.40gb": 1, "3g.40gb": 1} in named
    assert all("1g.20gb" not in g for g in named)  # not a profile nos knows
    for geometry in geometries:
        wanted = [p for p, c in geometry for _ in range(c)]
        created = _create_unplaced(A100, (), wanted)
        assert sorted(i.profile_id for i in created) == sorted(wanted)
        assert is_valid(A100, created)
    assert [dict(g) for g in nos_geometries(A30)] == [
        {pid(A30, "1g.6gb"): 4},
        {pid(A30, "1g.6gb"): 2, pid(A30, "2g.12gb"): 1},
        {pid(A30, "2g.12gb"): 2},
        {pid(A30, "4g.24gb"): 1},
    ]


def test_nos_agent_recreates_free_devices_and_never_touches_used_ones() -> None:
    one = pid(A100, "1g.10gb")
    used = (Instance(0, one),)
    free = tuple(Instance(s, one) for s in range(1, 7))
    view = GpuView("n", 0, A100, used, free, busy=False)
    change = apply_geometry(view, Counter({one: 4, pid(A100, "3g.40gb"): 1}))
    assert not set(change.destroy) & set(used)
    assert set(change.destroy) == set(free)  # a create on the GPU recreates every free device
    assert is_valid(A100, (*used, *change.create))
    assert Counter(i.profile_id for i in (*used, *change.create)) == {
        one: 4,
        pid(A100, "3g.40gb"): 1,
    }


def test_nos_creates_nothing_when_no_creation_order_fits() -> None:
    one, four = pid(A100, "1g.10gb"), pid(A100, "4g.40gb")
    # A used 1g at slice 0 leaves no room for a 4g, whatever the order.
    assert _create_unplaced(A100, (Instance(0, one),), [four, one, one]) == ()


def test_dynamic_policy_plans_only_idle_gpus() -> None:
    one = pid(A100, "1g.10gb")
    gpus = [
        GpuView("n1", 0, A100, (), (), busy=True),
        GpuView("n1", 1, A100, (Instance(0, one),), (), busy=False),
    ]
    waiting = [PodView("p", (parse_size("3g"),), (pid(A100, "3g.40gb"),), 0, False, 0.0)]
    decision = DynamicPolicy().plan(gpus, waiting)
    assert set(decision.changes) == {("n1", 1)}
    assert [(n, g) for n, g, _ in decision.placements["p"]] == [("n1", 1)]


def test_dynamic_can_start_like_nos_with_a_whole_gpu_instance() -> None:
    cluster = ClusterSpec(A100, 1, 1)
    pods = [PodSpec("whole", 1.0, 50.0, ("7g",)), PodSpec("small", 60.0, 50.0, ("3g",))]
    empty = simulate(cluster, pods, make_policy("dynamic", A100, dynamic_spares=0), Timing())
    whole = simulate(
        cluster,
        pods,
        make_policy("dynamic", A100, dynamic_start_whole=True, dynamic_spares=0),
        Timing(),
    )
    assert empty.bind_times["whole"] > 1.0
    assert whole.bind_times["whole"] == 1.0  # the 7g is already there
    assert (whole.creates, whole.destroys) == (1, 1)  # the 3g replaces the free 7g

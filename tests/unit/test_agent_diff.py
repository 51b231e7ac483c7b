"""Properties of the agent's pure diff: the hard rules hold for every layout pair."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_mig.agent.diff import GpuDiff, diff_gpu
from jupyter_mig.mig.layout import Instance, is_valid, layout_errors
from jupyter_mig.mig.models import BUILTIN_MODELS, MODELS, GpuModel

Scenario = tuple[GpuModel, tuple[Instance, ...], frozenset[Instance], tuple[Instance, ...]]


@st.composite
def layouts(draw: st.DrawFn, model: GpuModel) -> tuple[Instance, ...]:
    """A valid layout grown from random placements (every valid layout is reachable)."""
    options = sorted(Instance(start, p.nvml_id) for p in model.profiles for start in p.starts)
    layout: list[Instance] = []
    for pick in draw(st.lists(st.sampled_from(options), max_size=12)):
        if pick not in layout and is_valid(model, (*layout, pick)):
            layout.append(pick)
    return tuple(sorted(layout))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A model, an observed layout with some instances in use, and a desired layout."""
    model = draw(st.sampled_from(BUILTIN_MODELS))
    observed = draw(layouts(model))
    in_use = frozenset(i for i in observed if draw(st.booleans()))
    # Desired layouts often keep observed instances, as real specs do.
    desired: list[Instance] = [i for i in observed if draw(st.booleans())]
    for pick in draw(layouts(model)):
        if pick not in desired and is_valid(model, (*desired, pick)):
            desired.append(pick)
    return model, observed, in_use, tuple(desired)


def _apply(observed: tuple[Instance, ...], diff: GpuDiff) -> set[Instance]:
    after = set(observed)
    assert set(diff.destroy) <= after
    after -= set(diff.destroy)
    assert not after & set(diff.create)
    return after | set(diff.create)


@settings(max_examples=200)
@given(scenarios())
def test_never_destroys_an_in_use_instance(case: Scenario) -> None:
    model, observed, in_use, desired = case
    diff = diff_gpu(model, observed, in_use, desired)
    assert not in_use & set(diff.destroy)
    assert set(diff.blocked) == in_use - set(desired)


@settings(max_examples=200)
@given(scenarios())
def test_reaches_the_desired_layout_when_nothing_in_use_blocks(case: Scenario) -> None:
    model, observed, in_use, desired = case
    kept_in_use = in_use & set(desired)
    diff = diff_gpu(model, observed, kept_in_use, desired)
    assert diff.complete
    assert _apply(observed, diff) == set(desired)


@settings(max_examples=200)
@given(scenarios())
def test_every_result_is_valid_and_churns_nothing_shared(case: Scenario) -> None:
    model, observed, in_use, desired = case
    diff = diff_gpu(model, observed, in_use, desired)
    after = _apply(observed, diff)
    assert layout_errors(model, after) == []
    assert not set(observed) & set(desired) & set(diff.destroy)
    assert set(diff.create) | set(diff.deferred) == set(desired) - set(observed)
    # Whatever is deferred really does not fit beside what stands after the apply.
    for instance in diff.deferred:
        assert not is_valid(model, (*after, instance))


@settings(max_examples=200)
@given(scenarios())
def test_desired_against_itself_is_empty(case: Scenario) -> None:
    model, _, in_use, desired = case
    assert diff_gpu(model, desired, in_use & set(desired), desired) == GpuDiff()


@settings(max_examples=200)
@given(scenarios())
def test_applying_twice_changes_nothing_the_second_time(case: Scenario) -> None:
    model, observed, in_use, desired = case
    first = diff_gpu(model, observed, in_use, desired)
    second = diff_gpu(model, tuple(_apply(observed, first)), in_use, desired)
    assert not second.changes
    assert (second.blocked, second.deferred) == (first.blocked, first.deferred)


def test_invalid_spec_applies_nothing() -> None:
    model = MODELS.get("A100-80GB")
    observed = (Instance(0, 19), Instance(1, 19))
    overlapping = (Instance(0, 9), Instance(2, 14))  # 3g@0 spans slices 0-3, 2g@2 overlaps it
    diff = diff_gpu(model, observed, frozenset(), overlapping)
    assert diff.invalid
    assert not diff.changes


def test_in_use_instance_in_the_way_defers_what_overlaps_and_creates_the_rest() -> None:
    model = MODELS.get("A100-80GB")
    one_g, three_g = 19, 9
    held, free = Instance(0, one_g), Instance(5, one_g)
    diff = diff_gpu(model, (held, free), {held}, (Instance(0, three_g), Instance(4, three_g)))
    assert diff.destroy == (free,)
    assert diff.blocked == (held,)
    assert diff.create == (Instance(4, three_g),)
    assert diff.deferred == (Instance(0, three_g),)

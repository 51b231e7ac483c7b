"""Workloads for the simulator: a seeded synthetic mix (the default) and openb pod traces.

Both describe a pod by its per-GPU share of compute and map it to a MIG size request the same way:
``k = ceil(share x compute budget)`` compute slices, requested as ``"<k>g"``, which resolves to the
smallest profile with at least ``k`` compute slices (least memory among those).  On a 7-slice
part a 0.47 GPU share becomes ``4g``, and 0.65 or 0.81 become ``7g`` (there is no 5g or 6g): the
rounding waste is reported with every trace run.

Load: unless a trace's own times are replayed, arrivals are a Poisson process whose rate makes the
offered load — compute slices requested x seconds held, per second, over the cluster's compute
slices — equal to ``load``.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jupyter_mig.errors import UserError
from jupyter_mig.mig.models import GpuModel
from jupyter_mig.mig.sizes import parse_size, resolve_for_model
from jupyter_mig.sim.engine import ClusterSpec, PodSpec


@dataclass(frozen=True)
class SliceClass:
    """One line of the synthetic size mix."""

    label: str
    weight: float  # fraction of pods
    gpus: int  # GPUs per pod (all on one node)
    sevenths: int  # per-GPU compute share, in sevenths of a GPU
    median_minutes: float  # median lifetime (log-normal, sigma DURATION_SIGMA)
    interactive: float  # fraction that are interactive notebooks


#: The built-in mix: a notebook-heavy cluster — many small interactive slices, fewer large
#: batch/training pods, a few two-GPU jobs.
SYNTHETIC_MIX: tuple[SliceClass, ...] = (
    SliceClass("1g notebook", 0.40, 1, 1, 30, 0.8),
    SliceClass("2g notebook", 0.20, 1, 2, 45, 0.6),
    SliceClass("3g job", 0.15, 1, 3, 60, 0.4),
    SliceClass("4g job", 0.07, 1, 4, 60, 0.3),
    SliceClass("full-GPU job", 0.15, 1, 7, 90, 0.2),
    SliceClass("2-GPU job", 0.03, 2, 7, 120, 0.0),
)
DURATION_SIGMA = 1.0
MIN_DURATION = 1.0  # seconds; openb has a few zero-length pods

#: Lifetimes for a trace without time columns (openb ``multigpu*``): log-normal with the default
#: openb trace's median (540 s) and 90th percentile (6,574 s).
TRACE_MEDIAN_SECONDS = 540.0
TRACE_SIGMA = math.log(6574 / 540) / 1.2816


@dataclass(frozen=True)
class Workload:
    pods: list[PodSpec]
    summary: list[str]  # human-readable lines: what was generated or read, and how it was mapped
    offered_load: float


def share_request(numerator: int, denominator: int, model: GpuModel) -> str:
    """``"<k>g"`` for a per-GPU compute share ``numerator/denominator`` (``k`` rounded up)."""
    return f"{-(-numerator * model.compute_budget // denominator)}g"


def _compute(request: str, model: GpuModel) -> int:
    profile = resolve_for_model(parse_size(request), model)
    assert profile is not None  # k never exceeds the compute budget
    return profile.compute


def _arrivals(rng: random.Random, work: Sequence[float], capacity: int, load: float) -> list[float]:
    """Poisson arrival times giving ``load`` for pods whose slice-seconds are ``work``."""
    mean = sum(work) / len(work)
    rate = load * capacity / mean
    times = []
    now = 0.0
    for _ in work:
        now += rng.expovariate(rate)
        times.append(now)
    return times


def _offered(pods: Sequence[PodSpec], work: Sequence[float], capacity: int) -> float:
    span = max(p.arrival for p in pods) - min(p.arrival for p in pods)
    return sum(work) / (span * capacity) if span > 0 else 0.0


def synthetic(
    cluster: ClusterSpec, count: int, load: float, seed: int, max_duration: float
) -> Workload:
    """``count`` pods drawn from :data:`SYNTHETIC_MIX`, arriving at ``load``."""
    model = cluster.model
    rng = random.Random(seed)
    weights = [c.weight for c in SYNTHETIC_MIX]
    drafts = []
    for i in range(count):
        cls = rng.choices(SYNTHETIC_MIX, weights)[0]
        if cls.gpus > cluster.gpus_per_node:
            continue
        minutes = rng.lognormvariate(math.log(cls.median_minutes), DURATION_SIGMA)
        duration = min(max(minutes * 60, MIN_DURATION), max_duration)
        request = share_request(cls.sevenths, 7, model)
        drafts.append((f"pod-{i + 1:05d}", duration, (request,) * cls.gpus, cls, rng.random()))
    if not drafts:
        raise UserError("--count: the synthetic workload needs at least one pod")
    work = [d * _compute(r[0], model) * len(r) for _, d, r, _, _ in drafts]
    times = _arrivals(rng, work, cluster.compute_slices, load)
    pods = [
        PodSpec(name, at, duration, requests, interactive=draw < cls.interactive)
        for (name, duration, requests, cls, draw), at in zip(drafts, times, strict=True)
    ]
    mix = ", ".join(
        f"{c.weight:.0%} {share_request(c.sevenths, 7, model)}"
        + (f" x {c.gpus}" if c.gpus > 1 else "")
        for c in SYNTHETIC_MIX
    )
    summary = [
        f"workload: {len(pods)} synthetic pods (seed {seed}): {mix}; "
        f"log-normal lifetimes (medians 30-120 min), Poisson arrivals"
    ]
    return Workload(pods, summary, _offered(pods, work, cluster.compute_slices))


# --------------------------------------------------------------------------------------------
# openb traces (Alibaba cluster-trace-gpu-v2023)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRow:
    name: str
    line: int
    num_gpu: int
    gpu_milli: int
    creation: float | None
    deletion: float | None
    qos: str


_REQUIRED = ("name", "num_gpu", "gpu_milli")
_TIMES = ("creation_time", "deletion_time")


def parse_openb(lines: Iterable[str], source: str) -> list[TraceRow]:
    """Rows of an openb pod list; raise :class:`UserError` naming the line and field."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{source}: empty file; expected an openb pod list (name,...)") from None
    except csv.Error as err:
        raise UserError(f"{source} line 1: not valid CSV ({err})") from None
    for column in _REQUIRED:
        if column not in header:
            raise UserError(
                f"{source}: missing column {column!r}; an openb pod list needs "
                f"{', '.join(_REQUIRED)} (and optionally {', '.join(_TIMES)})"
            )
    timed = [c in header for c in _TIMES]
    if any(timed) and not all(timed):
        raise UserError(f"{source}: has only one of {' and '.join(_TIMES)}; give both or neither")
    col = {name: header.index(name) for name in header}
    rows: list[TraceRow] = []
    seen: set[str] = set()
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not f.strip() for f in record):
                continue
            if len(record) != len(header):
                raise UserError(
                    f"{source} line {line}: expected {len(header)} fields, got {len(record)}"
                )

            def field(name: str, record: list[str] = record) -> str:
                return record[col[name]].strip()

            where = f"{source} line {line}"
            name = field("name")
            if not name:
                raise UserError(f"{where}: name: empty pod name")
            if name in seen:
                raise UserError(f"{where}: name: duplicate pod name {name!r}")
            seen.add(name)
            num_gpu = _integer(field("num_gpu"), f"{where}: num_gpu", 0, 64)
            milli = _integer(field("gpu_milli"), f"{where}: gpu_milli", 0, 1000)
            if num_gpu and not milli:
                raise UserError(f"{where}: gpu_milli: must be 1-1000 for a pod with GPUs, got 0")
            creation = deletion = None
            if all(timed):
                creation = _seconds(field("creation_time"), f"{where}: creation_time")
                deletion = _seconds(field("deletion_time"), f"{where}: deletion_time")
                if deletion < creation:
                    raise UserError(f"{where}: deletion_time: earlier than creation_time")
            qos = field("qos") if "qos" in col else ""
            rows.append(TraceRow(name, line, num_gpu, milli, creation, deletion, qos))
    except csv.Error as err:
        raise UserError(f"{source} line {reader.line_num}: not valid CSV ({err})") from None
    if not any(r.num_gpu for r in rows):
        raise UserError(f"{source}: no pod asks for a GPU (num_gpu > 0)")
    return rows


def _integer(text: str, where: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{where}: expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise UserError(f"{where}: must be between {low} and {high}, got {value}")
    return value


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where}: expected seconds >= 0, got {text!r}")
    return value


def openb(
    rows: Sequence[TraceRow],
    source: str,
    cluster: ClusterSpec,
    *,
    load: float,
    time_scale: float | None,
    max_duration: float,
    seed: int,
) -> Workload:
    """Map trace rows to pods (see the module docstring) and give them arrival times.

    ``time_scale``: replay the trace's own creation times divided by it; else resample Poisson
    arrivals at ``load`` in trace order.  Lifetimes are the trace's (at most ``max_duration``).
    """
    model = cluster.model
    rng = random.Random(seed)
    timed = rows[0].creation is not None
    if time_scale is not None and not timed:
        raise UserError(
            f"--time-scale: {source} has no creation_time/deletion_time columns to replay; "
            "leave --time-scale out to resample arrivals at --load"
        )
    cpu_only = [r for r in rows if r.num_gpu == 0]
    too_wide = [r for r in rows if r.num_gpu > cluster.gpus_per_node]
    kept = sorted(
        (r for r in rows if 0 < r.num_gpu <= cluster.gpus_per_node),
        key=lambda r: (r.creation or 0.0, r.line),
    )
    if not kept:
        raise UserError(f"{source}: no pod fits on a node of {cluster.gpus_per_node} GPUs")
    drafts = []
    mix: Counter[str] = Counter()
    asked = granted = 0.0
    for row in kept:
        request = share_request(row.gpu_milli, 1000, model)
        profile = resolve_for_model(parse_size(request), model)
        assert profile is not None
        mix[profile.name if row.num_gpu == 1 else f"{row.num_gpu} x {profile.name}"] += 1
        asked += row.num_gpu * row.gpu_milli / 1000
        granted += row.num_gpu * profile.compute / model.compute_budget
        if row.creation is not None and row.deletion is not None:
            lifetime = row.deletion - row.creation
        else:
            lifetime = rng.lognormvariate(math.log(TRACE_MEDIAN_SECONDS), TRACE_SIGMA)
        duration = min(max(lifetime, MIN_DURATION), max_duration)
        drafts.append((row, (request,) * row.num_gpu, duration, profile.compute * row.num_gpu))
    work = [duration * compute for _, _, duration, compute in drafts]
    if time_scale is not None:
        first = min(r.creation or 0.0 for r, _, _, _ in drafts)
        times = [((r.creation or 0.0) - first) / time_scale for r, _, _, _ in drafts]
        how = f"trace arrival times compressed {time_scale:g}x"
    else:
        times = _arrivals(rng, work, cluster.compute_slices, load)
        how = f"Poisson arrivals in trace order (seed {seed})"
    pods = [
        PodSpec(row.name, at, duration, requests, interactive=row.qos == "LS")
        for (row, requests, duration, _), at in zip(drafts, times, strict=True)
    ]
    shown = ", ".join(f"{n} {name}" for name, n in sorted(mix.items(), key=lambda x: -x[1]))
    summary = [
        f"workload: {source}: {len(pods)} GPU pods; skipped {len(cpu_only)} without GPUs and "
        f"{len(too_wide)} needing more than {cluster.gpus_per_node} GPUs",
        f"mapping: {shown}; rounding waste {1 - asked / granted:.0%} of granted compute",
        f"time: {how}; lifetimes "
        + ("from the trace" if timed else "log-normal, median 540 s, p90 6,574 s")
        + f", capped at {max_duration:g} s",
    ]
    return Workload(pods, summary, _offered(pods, work, cluster.compute_slices))

"""Rendering simulation results: the table, the JSON document and the PNG plot."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from jupyter_mig.sim.engine import RunResult


def result_json(result: RunResult) -> dict[str, Any]:
    """One policy's result, in the documented ``--json`` shape."""
    return {
        "policy": result.policy,
        "pods": result.pods,
        "placed": result.placed,
        "unplaced": result.unplaced,
        "wait_seconds": {
            "p50": round(result.wait_percentile(50), 3),
            "p95": round(result.wait_percentile(95), 3),
            "p99": round(result.wait_percentile(99), 3),
        },
        "utilization": round(result.utilization, 6),
        "ops": {"create": result.creates, "destroy": result.destroys},
        "rounds": result.rounds,
        "simulated_seconds": round(result.end, 3),
    }


def results_json(results: Sequence[RunResult]) -> dict[str, Any] | list[dict[str, Any]]:
    """One object for one policy, a list for several."""
    docs = [result_json(r) for r in results]
    return docs[0] if len(docs) == 1 else docs


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f}s"
    if seconds < 6000:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def table(results: Sequence[RunResult]) -> str:
    """A fixed-width comparison table, one row per policy."""
    head = (
        f"{'policy':<18} {'pods':>6} {'placed':>7} {'placed%':>8} {'unplaced':>8} "
        f"{'wait p50':>8} {'p95':>7} {'p99':>7} {'util':>6} {'creates':>8} {'destroys':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        share = r.placed / r.pods if r.pods else 0.0
        lines.append(
            f"{r.policy:<18} {r.pods:>6} {r.placed:>7} {share:>8.1%} {r.unplaced:>8} "
            f"{_duration(r.wait_percentile(50)):>8} {_duration(r.wait_percentile(95)):>7} "
            f"{_duration(r.wait_percentile(99)):>7} {r.utilization:>6.1%} "
            f"{r.creates:>8} {r.destroys:>8}"
        )
    return "\n".join(lines)


def plot(results: Sequence[RunResult], title: str, file_format: str = "png") -> bytes:
    """Utilization and pending pods over time, one line per policy, in ``file_format``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), dpi=100)
    util_ax, pending_ax = fig.subplots(2, 1, sharex=True)
    for r in results:
        hours = [t / 3600 for t in r.timeline.times]
        util_ax.plot(hours, [100 * u for u in r.timeline.utilization], label=r.policy, lw=1.2)
        pending_ax.plot(hours, list(r.timeline.pending), label=r.policy, lw=1.2)
    util_ax.set_ylabel("compute slices held (%)")
    util_ax.set_ylim(0, 100)
    util_ax.grid(alpha=0.3)
    util_ax.legend(loc="lower right", fontsize="small")
    util_ax.set_title(title, fontsize="medium")
    pending_ax.set_ylabel("pending pods")
    pending_ax.set_xlabel("simulated time (hours)")
    pending_ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=file_format)
    return buffer.getvalue()

"""The controller's Prometheus metrics, in a registry of their own (one per controller)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pending_demand = Gauge(
            "jupyter_mig_pending_demand",
            "MIG devices asked for by unschedulable pending pods, by profile.",
            ["profile"],
            registry=r,
        )
        self.rounds = Counter(
            "jupyter_mig_rounds",
            "Planning rounds run (rounds with unchanged input are skipped).",
            registry=r,
        )
        self.round_duration = Histogram(
            "jupyter_mig_round_duration_seconds",
            "Time to plan a round and write its specs.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.plan_duration = Histogram(
            "jupyter_mig_plan_duration_seconds",
            "Time to decide a round (snapshot, demands, planner, specs), without the writes.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.operations = Counter(
            "jupyter_mig_operations",
            "GPU-instance operations written to MigNode specs, by kind (create, destroy).",
            ["kind"],
            registry=r,
        )
        self.spec_writes = Counter(
            "jupyter_mig_spec_writes",
            "MigNode spec writes, by result (written, conflict, error).",
            ["result"],
            registry=r,
        )
        self.events = Counter(
            "jupyter_mig_events", "Events posted on pods, by reason.", ["reason"], registry=r
        )
        self.pending_to_bound = Histogram(
            "jupyter_mig_pending_to_bound_seconds",
            "From pod creation to binding, for MIG pods the controller worked for.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.leader = Gauge(
            "jupyter_mig_leader", "1 while this replica holds the leader lease.", registry=r
        )
        self.nodes = Gauge("jupyter_mig_nodes", "Opted-in nodes by state.", ["state"], registry=r)
        self._profiles: set[str] = set()

    def set_pending_demand(self, by_profile: Mapping[str, int]) -> None:
        """Set the gauge; profiles nobody asks for any more disappear."""
        for profile in self._profiles - set(by_profile):
            self.pending_demand.remove(profile)
        for profile, count in by_profile.items():
            self.pending_demand.labels(profile).set(count)
        self._profiles = set(by_profile)

    def set_node_states(self, counts: Mapping[str, int], states: tuple[str, ...]) -> None:
        for state in states:
            self.nodes.labels(state).set(counts.get(state, 0))

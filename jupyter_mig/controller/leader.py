"""Leader election through a ``coordination.k8s.io/v1`` Lease, as a state machine.

Only the leader plans; every replica serves the read-only endpoints.  The rules follow
client-go's: a lease is free when it has no holder or when its record has not changed for
``lease_duration`` seconds *as measured on this replica's own clock* (so clock skew between
replicas does not matter); the leader renews every retry period and steps down as soon as it has
gone ``renew_deadline`` without a successful renewal — before anyone else may take over, because
the deadline is shorter than the lease.  Writes carry the Lease's resourceVersion, so two
candidates cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(self, identity: str, lease_duration: float, renew_deadline: float) -> None:
        if not 0 < renew_deadline < lease_duration:
            raise ValueError("the renew deadline must be positive and shorter than the lease")
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # monotonic time of our last landed write

    def desired(
        self, current: Mapping[str, Any] | None, now: float, wall: datetime
    ) -> dict[str, Any] | None:
        """The Lease spec to write now, or None while another replica holds the lease.

        ``current`` is the Lease's spec (None when there is no Lease); ``now`` is monotonic.
        """
        spec = dict(current) if current is not None else None
        if spec != self._observed:
            self._observed = spec
            self._observed_at = now
        holder = (spec or {}).get("holderIdentity") or ""
        mine = holder == self.identity
        if holder and not mine and now < self._observed_at + self.lease_duration:
            self._renewed_at = None
            return None
        stamp = micro_time(wall)
        transitions = int((spec or {}).get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": (spec or {}).get("acquireTime") if mine else stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions if mine or spec is None else transitions + 1,
        }

    def landed(self, spec: Mapping[str, Any], now: float) -> None:
        """Our write succeeded: we lead until ``now + renew_deadline`` unless we renew again."""
        self._observed = dict(spec)
        self._observed_at = now
        self._renewed_at = now

    def is_leader(self, now: float) -> bool:
        return self._renewed_at is not None and now - self._renewed_at < self.renew_deadline

    def step_down(self) -> None:
        self._renewed_at = None

    def released(self, wall: datetime) -> dict[str, Any]:
        """The spec that hands the lease back at shutdown, so a follower takes over at once."""
        stamp = micro_time(wall)
        return {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": int((self._observed or {}).get("leaseTransitions") or 0),
        }

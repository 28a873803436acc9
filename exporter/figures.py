"""Per-provider figures for the landing page: what happened since the exporter started.

Built by :meth:`~viber_exporter.metrics.Metrics.figures` from the outcome counters'
own numbers (every label combination summed), not parsed back from metric samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Latency:
    """One latency histogram's count, sum and cumulative buckets (upper bound, count)."""

    count: float = 0.0
    total: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)

    def quantile(self, q: float) -> float | None:
        """Estimated like PromQL's histogram_quantile: linear inside the bucket."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in sorted(self.buckets):
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower
                inside = cumulative - below
                share = (rank - below) / inside if inside else 0.0
                return lower + (upper - lower) * share
            lower, below = upper, cumulative
        return lower

    def add(self, bounds: tuple[float, ...], counts: Sequence[float], total: float) -> None:
        """Add one series (counts per bucket, not cumulative) to these figures."""
        cumulative = dict(self.buckets) if self.buckets else dict.fromkeys(bounds, 0.0)
        running = 0.0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            cumulative[bound] = cumulative.get(bound, 0.0) + running
        self.buckets = sorted(cumulative.items())
        self.count += running
        self.total += total


@dataclass(frozen=True)
class Rates:
    """Shares of the messages that reached an outcome (None: none did)."""

    delivery: float | None
    read_through: float | None  # read ÷ delivered
    failure: float | None


def rates(transitions: Mapping[str, float]) -> Rates:
    """Delivered and failed (failed or expired) as shares of the messages that reached
    one of those outcomes; read as a share of the delivered ones (a read message counts
    as delivered too, as the counters count it)."""
    delivered = transitions.get("delivered", 0.0)
    failed = transitions.get("failed", 0.0) + transitions.get("expired", 0.0)
    read = transitions.get("read", 0.0)
    settled = delivered + failed
    return Rates(
        delivery=delivered / settled if settled else None,
        read_through=min(1.0, read / delivered) if delivered else None,
        failure=failed / settled if settled else None,
    )


@dataclass
class Figures:
    transitions: dict[str, float] = field(default_factory=dict)
    #: (declared label, value) → transitions by status
    by_label: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    cost: dict[tuple[str, str], float] = field(default_factory=dict)  # (currency, channel)
    delivery: Latency = field(default_factory=Latency)
    read: Latency = field(default_factory=Latency)

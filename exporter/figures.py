"""Per-provider figures for the landing page, read from the exporter's own metrics."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry


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


@dataclass
class Figures:
    transitions: dict[str, float] = field(default_factory=dict)
    cost: dict[tuple[str, str], float] = field(default_factory=dict)  # (currency, channel)
    delivery: Latency = field(default_factory=Latency)
    read: Latency = field(default_factory=Latency)


def figures(registry: CollectorRegistry) -> dict[str, Figures]:
    """Since the exporter started: transitions by status, cost by currency and channel,
    and the delivery and read latency histograms, per provider instance."""
    found: dict[str, Figures] = defaultdict(Figures)
    # a provider's series are summed: with declared labels (or countries) it has several
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in registry.collect():
        for s in family.samples:
            provider = s.labels.get("provider")
            if provider is None:
                continue
            f = found[provider]
            if s.name == "viber_message_status_transitions_total":
                f.transitions[s.labels["status"]] = (
                    f.transitions.get(s.labels["status"], 0.0) + s.value
                )
            elif s.name == "viber_message_cost_total":
                key = (s.labels["currency"], s.labels["channel"])
                f.cost[key] = f.cost.get(key, 0.0) + s.value
            for kind in ("delivery", "read"):
                latency = getattr(f, kind)
                base = f"viber_message_{kind}_latency_seconds"
                if s.name == f"{base}_count":
                    latency.count += s.value
                elif s.name == f"{base}_sum":
                    latency.total += s.value
                elif s.name == f"{base}_bucket":
                    buckets[provider, kind][float(s.labels["le"])] += s.value
    for (provider, kind), cumulative in buckets.items():
        getattr(found[provider], kind).buckets = sorted(cumulative.items())
    return dict(found)

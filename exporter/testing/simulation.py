"""Simulated message lifecycles for the mock providers, and their ground truth.

Each message gets a planned fate when it is created (delivered, read, failed with a
reason, expired, or never settling), with delays drawn from log-normal distributions,
a price, and possibly an SMS fallback. Its status at any moment follows from the plan
and the clock, so the ground truth of a run can be computed exactly.
"""

from __future__ import annotations

import json
import math
import random
import threading
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

FATES = ("read", "delivered", "failed", "expired", "pending")
ROUTEE_REASONS = (
    "Not Viber User",
    "Opted Out",
    "System Failure",
    "Message Rejected",
    "Unsupported Equipment",
)
ROUTEE_FAILED = ("UNDELIVERED", "UNDELIVERED", "UNDELIVERED", "FAILED", "UNSENT")
BSG_FAILED = ("not_viber_user", "rejected", "undeliverable", "failed", "undelivered")
COUNTRIES = ("GR", "CY", "UA", "RO", "BG")


@dataclass(frozen=True)
class Mix:
    """Relative weights of each fate, and the shape of the delays (seconds)."""

    read: float = 0.5
    delivered: float = 0.25
    failed: float = 0.15
    expired: float = 0.05
    pending: float = 0.05
    delivery_median: float = 3.0
    read_median: float = 6.0  # after delivery
    final_median: float = 4.0  # time to a failure or expiry
    sigma: float = 0.6  # log-normal spread
    visible_after: float = 0.5  # ids are unknown to the provider for up to this long
    sms_fallback: float = 0.6  # share of failures re-sent as SMS (BSG, Routee failover flows)
    failover: float = 0.0  # share of Routee messages sent as a Viber→SMS failover flow
    delivery_sigma: float | None = None  # the delivery delay's own spread (else sigma)
    read_sigma: float | None = None  # the read delay's own spread (else sigma)
    expire_after: float | None = None  # expiry exactly this long after sending (a TTL)

    def weights(self) -> list[float]:
        return [self.read, self.delivered, self.failed, self.expired, self.pending]

    @classmethod
    def reference(
        cls,
        *,
        delivery_median: float = 3.0,
        delivery_p95: float = 60.0,
        read_median: float = 1200.0,
        read_p95: float = 6 * 3600.0,
        read_share: float = 0.55,
        failed: float = 0.10,
        expired: float = 0.03,
        never: float = 0.02,
        ttl: float = 24 * 3600.0,
    ) -> Mix:
        """The reference workload of docs/benchmarks.md ("calls per message"): log-normal
        delays given by their median and 95th percentile, ``read_share`` of delivered
        messages read, expiry at the TTL, no SMS fallbacks."""
        delivered = 1.0 - failed - expired - never
        return cls(
            read=delivered * read_share,
            delivered=delivered * (1.0 - read_share),
            failed=failed,
            expired=expired,
            pending=never,
            delivery_median=delivery_median,
            read_median=read_median,
            final_median=delivery_median,  # failures come as fast as deliveries
            sigma=spread(delivery_median, delivery_p95),
            delivery_sigma=spread(delivery_median, delivery_p95),
            read_sigma=spread(read_median, read_p95),
            expire_after=ttl,
            sms_fallback=0.0,
        )


def spread(median: float, p95: float) -> float:
    """The log-normal sigma whose median and 95th percentile are these."""
    return math.log(p95 / median) / 1.6448536269514722


@dataclass
class Plan:
    """One simulated message: what happens to it and when (absolute times)."""

    provider: str  # "routee" or "bsg"
    id: str
    reference: str
    created: float
    visible_at: float
    fate: str
    delivered_at: float | None = None
    read_at: float | None = None
    final_at: float | None = None  # failed/expired
    failure: int = 0  # index into the reason tables
    price: float = 0.0
    sms_price: float | None = None
    flow: bool = False  # a Routee failover flow (registered with tracking = "failover")
    country: str = "GR"
    campaign: str | None = None  # the campaign it was sent in (Routee campaigns)

    #: the SMS leg of a fallback: scheduled for a second after the failure, then sent,
    #: delivered two seconds later
    LEG_SENT_AFTER: ClassVar[float] = 1.0
    LEG_DELIVERED_AFTER: ClassVar[float] = 3.0

    def leg(self, now: float) -> str | None:
        """The fallback leg's status at ``now``: None, scheduled, sent or delivered."""
        if self.sms_price is None or self.final_at is None or now < self.final_at:
            return None
        if now < self.final_at + self.LEG_SENT_AFTER:
            return "scheduled"
        return "sent" if now < self.final_at + self.LEG_DELIVERED_AFTER else "delivered"

    def phase(self, now: float) -> str:
        """The normalised status at ``now``: pending, delivered, read, failed or expired."""
        if self.read_at is not None and now >= self.read_at:
            return "read"
        if self.final_at is not None and now >= self.final_at:
            return self.fate
        if self.delivered_at is not None and now >= self.delivered_at:
            return "delivered"
        return "pending"


@dataclass
class Simulation:
    """Creates plans and answers for them; thread-safe."""

    mix: Mix = field(default_factory=Mix)
    seed: int | None = None
    plans: dict[tuple[str, str], Plan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._next_id = 100000
        self.campaigns: dict[str, list[Plan]] = {}

    def _delay(self, median: float, sigma: float | None = None) -> float:
        return median * math.exp(self._rng.gauss(0.0, self.mix.sigma if sigma is None else sigma))

    def create(self, provider: str, now: float, fate: str | None = None) -> Plan:
        with self._lock:
            self._next_id += 1
            number = self._next_id
            fate = fate or self._rng.choices(FATES, self.mix.weights())[0]
            if provider == "routee":  # a real version-4 UUID, as Routee's tracking ids are
                message_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            else:
                message_id = str(number)
            plan = Plan(
                provider=provider,
                id=message_id,
                reference=f"ref{number}",
                created=now,
                visible_at=now + self._rng.uniform(0, self.mix.visible_after),
                fate=fate,
                failure=self._rng.randrange(len(ROUTEE_REASONS)),
                price=round(self._rng.choice((0.012, 0.02, 0.035, 0.04)), 4),
                country=self._rng.choice(COUNTRIES),
            )
            mix = self.mix
            if fate in ("read", "delivered"):
                plan.delivered_at = now + self._delay(mix.delivery_median, mix.delivery_sigma)
            if fate == "read":
                plan.read_at = (plan.delivered_at or now) + self._delay(
                    mix.read_median, mix.read_sigma
                )
            plan.flow = provider == "routee" and self._rng.random() < mix.failover
            if fate == "expired" and mix.expire_after is not None:
                plan.final_at = now + mix.expire_after
            elif fate in ("failed", "expired"):
                plan.final_at = now + self._delay(mix.final_median)
                if (
                    (provider == "bsg" or plan.flow)
                    and fate == "failed"
                    and self._rng.random() < self.mix.sms_fallback
                ):
                    plan.sms_price = 0.05
            self.plans[(provider, message_id)] = plan
            if provider == "bsg":
                self.plans[("bsg-ref", plan.reference)] = plan
            return plan

    def create_campaign(
        self, provider: str, now: float, count: int, fate: str | None = None
    ) -> tuple[str, list[Plan]]:
        """Send ``count`` messages as one campaign; returns its id and their plans."""
        with self._lock:
            if provider == "routee":  # a campaignTrackingId is a UUID; BSG's campaign_id a number
                campaign = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            else:
                campaign = str(self._rng.randrange(10**8, 10**9))
        plans = [self.create(provider, now, fate) for _ in range(count)]
        with self._lock:
            for plan in plans:
                plan.campaign = campaign
            self.campaigns.setdefault(campaign, []).extend(plans)
        return campaign, plans

    def campaign(self, campaign: str) -> list[Plan] | None:
        with self._lock:
            plans = self.campaigns.get(campaign)
            return list(plans) if plans is not None else None

    def save(self, path: Path) -> None:
        """Write the world (every plan, and where ids go on) to ``path``, atomically."""
        with self._lock:
            data = {
                "next_id": self._next_id,
                "plans": [asdict(p) for (kind, _), p in self.plans.items() if kind != "bsg-ref"],
            }
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(path)

    def load(self, path: Path) -> int:
        """Read back what :meth:`save` wrote (a missing file is an empty world); returns
        how many plans were loaded."""
        if not path.exists():
            return 0
        data = json.loads(path.read_text(encoding="utf-8"))
        with self._lock:
            self._next_id = max(self._next_id, int(data["next_id"]))
            for item in data["plans"]:
                plan = Plan(**item)
                self.plans[(plan.provider, plan.id)] = plan
                if plan.campaign is not None:
                    self.campaigns.setdefault(plan.campaign, []).append(plan)
                if plan.provider == "bsg":
                    self.plans[("bsg-ref", plan.reference)] = plan
        return len(data["plans"])

    def find(self, provider: str, key: str) -> Plan | None:
        with self._lock:
            return self.plans.get((provider, key))

    def all(self) -> list[Plan]:
        with self._lock:
            return [p for (kind, _), p in self.plans.items() if kind != "bsg-ref"]

    def truth(self, now: float, only: set[tuple[str, str]] | None = None) -> dict[str, Any]:
        """What a perfect exporter would have counted by ``now``, per provider
        (``only``: just these ``(provider, id)``, e.g. the registrations that succeeded)."""
        result: dict[str, Any] = {}
        for plan in self.all():
            if only is not None and (plan.provider, plan.id) not in only:
                continue
            t = result.setdefault(
                plan.provider,
                {
                    "messages": 0,
                    "transitions": Counter(),
                    "failures": Counter(),
                    "delivery_latency_sum": 0.0,
                    "delivery_latency_count": 0,
                    "read_latency_count": 0,
                    "cost": {"viber": 0.0, "sms": 0.0},
                    "sms_fallbacks": 0,
                    "fallback_delivered": 0,
                },
            )
            t["messages"] += 1
            phase = plan.phase(now)
            if now < plan.visible_at:
                continue
            t["transitions"]["pending"] += 1
            t["cost"]["viber"] += plan.price
            if plan.delivered_at is not None and now >= plan.delivered_at:
                t["transitions"]["delivered"] += 1
                t["delivery_latency_count"] += 1
                t["delivery_latency_sum"] += plan.delivered_at - plan.created
            if phase == "read":
                t["transitions"]["read"] += 1
                t["read_latency_count"] += 1
            if phase in ("failed", "expired"):
                t["transitions"][phase] += 1
                t["failures"][failure_reason(plan)] += 1
                leg = plan.leg(now)
                if leg in ("sent", "delivered"):  # a fallback counts once its leg is sent
                    t["sms_fallbacks"] += 1
                    t["cost"]["sms"] += plan.sms_price or 0.0
                if leg == "delivered":
                    t["fallback_delivered"] += 1
        for t in result.values():
            t["transitions"] = dict(t["transitions"])
            t["failures"] = dict(t["failures"])
        return result


def failure_reason(plan: Plan) -> str:
    """The normalised reason the exporter should report for a failed/expired plan."""
    if plan.provider == "routee":
        if plan.fate == "expired":
            return "ttl_expired"
        return ROUTEE_REASONS[plan.failure].lower().replace(" ", "_")
    return "expired" if plan.fate == "expired" else BSG_FAILED[plan.failure]

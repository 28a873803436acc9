"""The adaptive schedule (``polling.schedule = "adaptive"``): poll when events happen.

Every few minutes the poller estimates, for each provider instance, two distributions
from the messages in its store (so what is learned survives restarts and is shared by
replicas): how long after sending a message leaves ``pending`` (delivered, failed or
expired), and how long after delivery it is read. Both are Kaplan-Meier estimates, so
messages still waiting count for as long as they have waited (without that, the newest
messages would teach that every event is quick).

From them it plans the poll ages of each phase within ``polling.adaptive_budget``
(expected provider calls per message):

- **pending**: polls every :data:`FRESH` seconds (a delivery is counted at most that late)
  for as long as deliveries are still likely, then ever sparser;
- **delivered**: one unbroken chain of polls at most 10 % of the read's age + 60 s apart
  (the freshness target of docs/benchmarks.md) over the ages that hold the most reads the
  remaining budget can cover, sparse polls before and after it.

A pending message is polled up to ``max_age``, a delivered one up to the end of its read
window (the final look), whatever the plan. Until :data:`MIN_EVENTS` deliveries have been
seen and as many delivered messages followed to the end of their read window (a day, by
default), the instance follows its fixed schedule.

Pure functions and immutable data, like the accounting rules they feed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: the step of the pending phase's chain: a delivery is seen at most this late
FRESH = 20.0
#: a read at age a is seen within READ_RELATIVE * a + READ_ABSOLUTE (the read target)
READ_RELATIVE = 0.1
READ_ABSOLUTE = 60.0
#: the chain of the pending phase stops once this share of its events has happened
PENDING_COVER = 0.95
#: outside the chains each step is one of these times the age (the plan tries each)
SPARSE = (1.0, 2.0, 3.0)
#: deliveries seen, and delivered messages followed through their read window, before
#: a plan replaces the fixed schedule
MIN_EVENTS = 50
#: the most recent messages of an instance the distributions are estimated from
SAMPLE = 20_000
#: a new plan replaces the current one only when it is this much better (a share)
KEEP_MARGIN = 0.03
#: a new plan aims this share under the budget: the current one is kept up to the
#: budget, and a message that was planned by two plans costs a little more than either
HEADROOM = 0.02
#: how often the plan is recomputed (seconds), and how often while there is none yet
REPLAN_EVERY = 600.0
REPLAN_COLD = 60.0


@dataclass(frozen=True)
class Survival:
    """A Kaplan-Meier estimate: the share of messages still waiting for the event at
    each age. ``floor`` is what is left after the last event seen: messages for which
    the event never came (or had not come when they were last seen)."""

    times: tuple[float, ...]
    left: tuple[float, ...]  # the survival just after each of ``times``
    samples: int
    events: int

    @classmethod
    def estimate(cls, observations: Iterable[tuple[float, bool]]) -> Survival:
        """``observations``: (age, True) for an event at that age, (age, False) for a
        message last seen waiting at that age (censored)."""
        ordered = sorted(observations, key=lambda o: (o[0], not o[1]))  # events first
        at_risk = len(ordered)
        survival = 1.0
        times: list[float] = []
        left: list[float] = []
        events = 0
        i = 0
        while i < len(ordered):
            age = ordered[i][0]
            happened = removed = 0
            while i < len(ordered) and ordered[i][0] == age:
                happened += ordered[i][1]
                removed += 1
                i += 1
            if happened:
                survival *= 1.0 - happened / at_risk
                times.append(age)
                left.append(survival)
                events += happened
            at_risk -= removed
        return cls(tuple(times), tuple(left), len(ordered), events)

    def at(self, age: float) -> float:
        """The share still waiting at ``age``."""
        i = bisect_right(self.times, age)
        return 1.0 if i == 0 else self.left[i - 1]

    @property
    def floor(self) -> float:
        return self.left[-1] if self.left else 1.0

    def happened(self, start: float, end: float) -> float:
        """The share of all messages whose event falls in (start, end]."""
        return self.at(start) - self.at(end)


@dataclass(frozen=True)
class SchedulePlan:
    """Poll ages (seconds since sending, and since delivery) and what they should cost."""

    pending: tuple[float, ...]
    delivered: tuple[float, ...]
    expected_calls: float
    #: the share of deliveries seen within FRESH, of reads within the read target
    delivery_cover: float
    read_cover: float
    learned_from: int

    def wait(self, age: float, *, delivered: bool) -> float:
        """Seconds from ``age`` to the next planned poll."""
        ages = self.delivered if delivered else self.pending
        i = bisect_right(ages, age)
        if i < len(ages):
            return ages[i] - age
        # past the watch's end (a final look that failed): the plan's last step
        if len(ages) > 1:
            return ages[-1] - ages[-2]
        return ages[-1] if ages and ages[-1] > 0 else READ_ABSOLUTE

    def describe(self) -> dict[str, object]:
        return {
            "pending": [round(a, 1) for a in self.pending],
            "delivered": [round(a, 1) for a in self.delivered],
            "expected_calls_per_message": round(self.expected_calls, 2),
            "delivery_cover": round(self.delivery_cover, 3),
            "read_cover": round(self.read_cover, 3),
            "learned_from": self.learned_from,
        }


def _sparse(start: float, end: float, first: float, factor: float) -> list[float]:
    """Ages after ``start`` up to ``end``, each step ``factor`` times the age (at least
    ``first``)."""
    ages: list[float] = []
    age = start
    while age < end:
        age = min(end, age + max(first, factor * age))
        ages.append(age)
    return ages


def _calls(ages: Sequence[float], waiting: Survival) -> float:
    """Expected polls of one message: poll k happens if the event had not been seen at
    the poll before it (the first always)."""
    previous = 0.0
    total = 0.0
    for age in ages:
        total += waiting.at(previous)
        previous = age
    return total


def _covered(ages: Sequence[float], waiting: Survival, step: float | None) -> float:
    """Share of all messages whose event a poll sees within the target: within ``step``
    seconds (pending), or within READ_RELATIVE * age + READ_ABSOLUTE (``step`` None)."""
    previous = 0.0
    total = 0.0
    for age in ages:
        # the earliest event age this poll sees within the target
        earliest = age - step if step is not None else (age - READ_ABSOLUTE) / (1 + READ_RELATIVE)
        total += waiting.happened(max(previous, earliest), age)
        previous = age
    return total


def _read_ages(start: float, stop: float, end: float, factor: float) -> list[float]:
    """Sparse polls up to ``start``, a chain within the read target up to ``stop``, then
    sparse polls up to ``end``."""
    ages = _sparse(0.0, start, READ_ABSOLUTE, factor) if start > 0 else []
    age = start
    while age < stop:
        age = min(end, age + READ_RELATIVE * age + READ_ABSOLUTE)
        ages.append(age)
    if age < end:
        ages += _sparse(age, end, READ_ABSOLUTE, factor)
    return ages


def plan(
    seen: Observations,
    *,
    budget: float,
    max_age: float,
    read_window: float,
    current: SchedulePlan | None = None,
) -> SchedulePlan | None:
    """The poll ages that see the most events within their targets for at most
    ``budget`` expected calls per message (or the cheapest, when none is that cheap);
    None while there is too little to learn from.

    The ``current`` plan is kept (with its figures renewed) while it stays within the
    budget and within KEEP_MARGIN of the best one's coverage: a message follows
    whichever plan is current at each poll, so a plan that changed at every look would
    cost the union of their polls.
    """
    if seen.delivery.events < MIN_EVENTS or seen.followed < MIN_EVENTS:
        return None
    aim = budget * (1 - HEADROOM)
    candidates = [_plan(seen, aim, max_age, read_window, factor) for factor in SPARSE]
    within = [c for c in candidates if c.expected_calls <= aim]
    if within:
        best = max(
            within, key=lambda c: (round(c.delivery_cover, 2), c.read_cover, -c.expected_calls)
        )
    else:
        best = min(candidates, key=lambda c: c.expected_calls)
    if current is not None:
        kept = _scored(current.pending, current.delivered, seen)
        if (
            kept.expected_calls <= max(budget, best.expected_calls)
            and kept.delivery_cover >= best.delivery_cover - KEEP_MARGIN
            and kept.read_cover >= best.read_cover - KEEP_MARGIN
        ):
            return kept
    return best


def _plan(
    seen: Observations, budget: float, max_age: float, read_window: float, factor: float
) -> SchedulePlan:
    pending, delivery, read = seen.pending, seen.delivery, seen.read
    # Pending: the chain runs until PENDING_COVER of the deliveries have happened, or
    # until it would take more than half the budget.
    delivering = 1.0 - delivery.floor
    chain: list[float] = []
    age = 0.0
    while age < max_age:
        age = min(max_age, age + FRESH)
        chain.append(age)
        still = (delivery.at(age) - delivery.floor) / delivering if delivering else 0.0
        if still <= 1.0 - PENDING_COVER or _calls(chain, pending) > budget / 2:
            break
    pending_ages = tuple(chain + _sparse(chain[-1], max_age, FRESH, factor))
    spent = _calls(pending_ages, pending)
    share = seen.delivered_share
    left = max(0.0, budget - spent) / share if share > 0 else 0.0
    # Delivered: the chain [start, stop] covering the most reads within what is left.
    best = tuple(_read_ages(0.0, 0.0, read_window, factor))
    best_cover = _covered(best, read, None)
    starts = [0.0, *(READ_ABSOLUTE * 1.5**k for k in range(40))]
    for start in (s for s in starts if s < read_window / 2):
        low, high = start, read_window
        if _calls(_read_ages(start, low, read_window, factor), read) > left:
            continue
        for _ in range(30):  # the furthest stop within the budget
            middle = (low + high) / 2
            if _calls(_read_ages(start, middle, read_window, factor), read) <= left:
                low = middle
            else:
                high = middle
        ages = tuple(_read_ages(start, low, read_window, factor))
        cover = _covered(ages, read, None)
        if cover > best_cover:
            best, best_cover = ages, cover
    return _scored(pending_ages, best, seen)


def _scored(
    pending_ages: tuple[float, ...], delivered_ages: tuple[float, ...], seen: Observations
) -> SchedulePlan:
    """A plan with what it should cost and cover on what was seen."""
    delivering = 1.0 - seen.delivery.floor
    reading = 1.0 - seen.read.floor
    return SchedulePlan(
        pending=pending_ages,
        delivered=delivered_ages,
        expected_calls=_calls(pending_ages, seen.pending)
        + seen.delivered_share * _calls(delivered_ages, seen.read),
        delivery_cover=_covered(pending_ages, seen.delivery, FRESH) / delivering
        if delivering
        else 1.0,
        read_cover=_covered(delivered_ages, seen.read, None) / reading if reading else 1.0,
        learned_from=seen.pending.samples,
    )


def observations(
    rows: Iterable[tuple[float, float | None, float | None, str, float | None]],
    now: float,
    read_window: float,
) -> Observations:
    """The phases' observations from stored messages ``(sent_at, delivered_at, read_at,
    status, settled_at)``, and the share of them delivered.

    Pending ends at delivery (its provider time), or at a failure or expiry (when it was
    seen); a message still pending is censored at its age (now, or when it was settled
    without an answer). ``delivery`` is the same with only deliveries as events (a
    failure censors). Delivered ends at the read; an unread one is censored at its age,
    at most the read window.
    """
    pending: list[tuple[float, bool]] = []
    delivery: list[tuple[float, bool]] = []
    read: list[tuple[float, bool]] = []
    delivered = followed = 0
    for sent_at, delivered_at, read_at, status, settled_at in rows:
        last = settled_at if settled_at is not None else now
        if delivered_at is not None:
            delivered += 1
            pending.append((max(0.0, delivered_at - sent_at), True))
            delivery.append(pending[-1])
            if read_at is not None:
                read.append((max(0.0, read_at - delivered_at), True))
                followed += 1
            else:
                read.append((min(read_window, max(0.0, last - delivered_at)), False))
                followed += last - delivered_at >= read_window
        elif status in ("failed", "expired"):
            pending.append((max(0.0, last - sent_at), True))
            delivery.append((pending[-1][0], False))
        else:
            pending.append((max(0.0, last - sent_at), False))
            delivery.append(pending[-1])
    share = delivered / len(pending) if pending else 0.0
    return Observations(
        Survival.estimate(pending),
        Survival.estimate(delivery),
        Survival.estimate(read),
        share,
        followed,
    )


@dataclass(frozen=True)
class Observations:
    """What the plan is made from (:func:`observations`)."""

    pending: Survival
    delivery: Survival
    read: Survival
    delivered_share: float
    #: delivered messages followed to their end (read, or unread for the read window):
    #: until there are MIN_EVENTS of them, late reads are not known well enough to plan
    followed: int = 0

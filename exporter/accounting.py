"""How an answer from a provider changes a message's state, and what gets counted.

These functions are pure: they change the given :class:`MessageState` in place and
return the events to count. The store persists the state first; only then are the
events turned into metrics (SPEC §3: a crash may lose an event, never double it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from datetime import datetime

from .adaptive import SchedulePlan
from .backoff import backoff
from .config.model import PollingSettings
from .events import (
    AnswerProblem,
    Cost,
    Event,
    FallbackOutcome,
    Latency,
    SmsFallback,
    StatusChanged,
    Transition,
    WatchExpired,
)
from .model import PRICE_CEILING, PROVIDER_FAILURES, Observation, Outcome, Status, snake_case
from .store.rows import Counted, MessageState, SentSource
from .store.rows import watch_end as _watch_end


@dataclass(frozen=True)
class Policy(PollingSettings):
    """How one instance polls now: its polling configuration and, on an adaptive
    instance, the plan it has learned (live state, owned by the instance; the
    configuration stays what was configured). Every rule here takes either."""

    plan: SchedulePlan | None = None

    @classmethod
    def of(cls, settings: PollingSettings, plan: SchedulePlan | None) -> Policy:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(settings)}, plan=plan)

    def first_wait(self) -> float:
        return self.plan.pending[0] if self.plan is not None else self.step(0)


UNKNOWN_CURRENCY = "XXX"  # ISO 4217's code for "no currency"
NOT_FOUND_REASON = "not_found"
MESSAGE_RETRY_BASE = 1.0
TIME_SLACK = 300.0  # a provider time this far ahead of our clock is not believed
SENT_SLACK = 60.0  # a delivery this long before the sent time means a clock or zone problem
#: a provider time this long before the message's registration is not believed (year 1,
#: 1970): a year and a month, so a provider whose clock runs a year behind still counts
PAST_LIMIT = 400 * 86400.0
#: the deadline poll comes this long after a pending message's validity ends, so the
#: provider has had a moment to mark it expired
DEADLINE_SLACK = 60.0

# A status implies the ones before it: a message first seen `read` was delivered,
# and anything the provider reports on was accepted (pending) first.
_IMPLIED: dict[Status, tuple[Status, ...]] = {
    Status.PENDING: (Status.PENDING,),
    Status.DELIVERED: (Status.PENDING, Status.DELIVERED),
    Status.READ: (Status.PENDING, Status.DELIVERED, Status.READ),
    Status.FAILED: (Status.PENDING, Status.FAILED),
    Status.EXPIRED: (Status.PENDING, Status.EXPIRED),
    Status.UNKNOWN: (Status.PENDING, Status.UNKNOWN),
}


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def observe(
    state: MessageState,
    obs: Observation,
    now: float,
    policy: PollingSettings,
    *,
    polled: bool = True,
) -> list[Event]:
    """Apply a provider's observation (from a poll, or a callback with ``polled=False``)."""
    events: list[Event] = [
        AnswerProblem(state.provider, "unreadable_field", name) for name in obs.problems
    ]
    events += [
        AnswerProblem(state.provider, "inconsistent_answer", name) for name in obs.inconsistencies
    ]
    if obs.ttl is not None:
        state.ttl = obs.ttl  # the provider's own validity outranks the registration's
    if polled:
        state.polls += 1
        state.last_poll_at = now
    state.errors = 0
    state.last_error = None
    earliest = state.registered_at - PAST_LIMIT
    if obs.sent_at is not None and state.sent_source == SentSource.REGISTERED:
        given = obs.sent_at.timestamp()
        if given < earliest:  # keep the registration time: a year-1 send time is no truth
            events.append(AnswerProblem(state.provider, "time_out_of_range", "sent_at"))
        else:
            sent = _trusted(state, "sent_at", given, now, events)
            state.sent_at, state.sent_source = sent, SentSource.PROVIDER
    if obs.country and not state.country:
        state.country = obs.country
    obs = _believable_prices(state, obs, events)
    _add_cost(state, obs, events)  # first, so a status change carries the price
    _fallback(state, obs, events)
    # Delivered, then expired (Routee's expireOnDelivery: the TTL passed with no SEEN):
    # the message was delivered; it settles as delivered and is no failure.
    settled = obs.settled or (state.status is Status.DELIVERED and obs.status is Status.EXPIRED)
    if not state.status.is_final:
        _enter(state, obs, now, earliest, events)
    if state.watched:
        _schedule(state, now, policy, events, settled=settled)
    return events


def _trusted(
    state: MessageState,
    name: str,
    value: float,
    now: float,
    events: list[Event],
    earliest: float | None = None,
) -> float:
    """A provider time, checked: one ahead of our clock (a wrong ``timezone``?) is
    counted and replaced by now, an honest upper bound; so is one before ``earliest``
    (:data:`PAST_LIMIT` before the registration: no time of a watched message is that old)."""
    if value > now + TIME_SLACK:
        events.append(AnswerProblem(state.provider, "time_in_future", name))
        return now
    if earliest is not None and value < earliest:
        events.append(AnswerProblem(state.provider, "time_out_of_range", name))
        return now
    return value


def _believable_prices(state: MessageState, obs: Observation, events: list[Event]) -> Observation:
    """The observation without prices over :data:`PRICE_CEILING` (each one counted):
    a price of 1e308 is an answer problem, not money spent."""
    legs_over = any(leg.price is not None and leg.price > PRICE_CEILING for leg in obs.fallbacks)
    main_over = obs.price is not None and obs.price > PRICE_CEILING
    if not (main_over or legs_over):
        return obs
    events.append(AnswerProblem(state.provider, "price_out_of_range", "price"))
    legs = tuple(
        replace(leg, price=None) if leg.price is not None and leg.price > PRICE_CEILING else leg
        for leg in obs.fallbacks
    )
    return replace(obs, price=None if main_over else obs.price, fallbacks=legs)


def _since_sent(state: MessageState, name: str, at: float, events: list[Event]) -> float:
    """Seconds from sent to ``at`` (a latency), never negative; a time well before the
    message was sent is counted (another sign of a wrong ``timezone``)."""
    if at < state.sent_at - SENT_SLACK:
        events.append(AnswerProblem(state.provider, "time_before_sent", name))
    return max(0.0, at - state.sent_at)


def _enter(
    state: MessageState, obs: Observation, now: float, earliest: float, events: list[Event]
) -> None:
    new = obs.status
    if state.status is Status.DELIVERED and new in (Status.PENDING, Status.UNKNOWN, Status.EXPIRED):
        new = Status.DELIVERED  # never step back from delivered
    state.provider_status = obs.provider_status or state.provider_status
    for status in _IMPLIED[new]:
        flag = Counted.for_status(status)
        if state.counted & flag:
            continue
        state.counted |= flag
        reason = _reason(obs, status)
        if status is Status.DELIVERED:
            given = _ts(obs.delivered_time) or _ts(obs.read_time)
            at = _trusted(state, "delivered_at", given, now, events, earliest) if given else now
            state.delivered_at = at
            latency = _since_sent(state, "delivered_at", at, events)
            events.append(Latency(state.provider, state.id, "delivery", latency, state.labels))
        elif status is Status.READ:
            given = _ts(obs.read_time)
            state.read_at = (
                _trusted(state, "read_at", given, now, events, earliest) if given else now
            )
            latency = _since_sent(state, "read_at", state.read_at, events)
            events.append(Latency(state.provider, state.id, "read", latency, state.labels))
        events.append(
            Transition(state.provider, state.id, status, reason, state.country, state.labels)
        )
    if new is not state.status:
        reason = _reason(obs, new)
        old, state.status, state.reason = state.status, new, reason
        events.append(_changed(state, old, now))


def _changed(state: MessageState, old: Status, now: float) -> StatusChanged:
    """The change just made to ``state``, with what an extension wants to know."""
    latency = None
    if state.status is Status.DELIVERED and state.delivered_at is not None:
        latency = max(0.0, state.delivered_at - state.sent_at)
    elif state.status is Status.READ and state.read_at is not None:
        latency = max(0.0, state.read_at - state.sent_at)
    return StatusChanged(
        state.provider,
        state.id,
        old,
        state.status,
        state.reason,
        provider_status=state.provider_status,
        price=state.price,
        currency=state.currency,
        latency_seconds=latency,
        country=state.country,
        at=now,
        labels=json.loads(state.labels) if state.labels else {},
    )


def _reason(obs: Observation, status: Status) -> str | None:
    """Only failed, expired and unknown carry a reason, in snake_case."""
    if status.is_failure or status is Status.UNKNOWN:
        return snake_case(obs.reason) if obs.reason else "unspecified"
    return None


def _add_cost(state: MessageState, obs: Observation, events: list[Event]) -> None:
    if obs.currency and not state.currency:
        state.currency = obs.currency
    currency = state.currency or obs.currency or UNKNOWN_CURRENCY
    # One rule for price and counter: the stored price is the highest the provider
    # reported, which is what the cost counter holds (a counter never decreases).
    if obs.price is not None:
        state.price = max(obs.price, state.price or 0.0)
        if obs.price > state.cost_viber:  # a counter never decreases: add only the increase
            events.append(
                Cost(
                    state.provider,
                    currency,
                    "viber",
                    obs.price - state.cost_viber,
                    state.country,
                    state.labels,
                )
            )
            state.cost_viber = obs.price
    legs = [leg for leg in obs.fallbacks if leg.sent and leg.price is not None]
    if legs:
        total = sum(leg.price or 0.0 for leg in legs)
        state.sms_price = max(total, state.sms_price or 0.0)
        if total > state.cost_sms:
            leg_currency = legs[0].currency or currency
            events.append(
                Cost(
                    state.provider,
                    leg_currency,
                    legs[0].channel,
                    total - state.cost_sms,
                    state.country,
                    state.labels,
                )
            )
            state.cost_sms = total


def _fallback(state: MessageState, obs: Observation, events: list[Event]) -> None:
    """A fallback counts once its leg is sent; its final outcome counts once too. A leg
    not settled yet (scheduled, or sent and pending) keeps the message polled."""
    if not obs.fallbacks:
        return
    sent = [leg for leg in obs.fallbacks if leg.sent]
    leg = sent[0] if sent else obs.fallbacks[0]
    state.fallback_channel = leg.channel
    state.fallback_status = leg.outcome.value if leg.outcome is not None else None
    if not leg.sent:
        return
    if not state.counted & Counted.SMS_FALLBACK:
        state.counted |= Counted.SMS_FALLBACK
        events.append(SmsFallback(state.provider, state.labels))
    final = leg.outcome is not None and leg.outcome is not Status.PENDING
    if final and not state.counted & Counted.FALLBACK_OUTCOME:
        state.counted |= Counted.FALLBACK_OUTCOME
        assert leg.outcome is not None
        events.append(FallbackOutcome(state.provider, leg.channel, leg.outcome, state.labels))


def _leg_pending(state: MessageState) -> bool:
    return state.fallback_status == Status.PENDING.value


def _schedule(
    state: MessageState,
    now: float,
    policy: PollingSettings,
    events: list[Event],
    *,
    settled: bool = False,
) -> None:
    """Pick the next poll after an answer, or settle the message."""
    if state.status.is_final:
        # A final Viber status whose fallback leg is still out: keep polling (until
        # max_age) so the leg's price and outcome are counted.
        end = state.sent_at + policy.max_age
        if _leg_pending(state) and now < end:
            state.next_poll = min(now + wait(state, now, policy), end)
            return
        _settle(state, now)
        return
    if settled:
        _settle(state, now)
        return
    end = watch_end(state, policy)
    if now >= end:  # this answer was the final look
        if state.status is Status.DELIVERED:
            _settle(state, now)
        else:
            _expire_watch(state, now, events)
        return
    if policy.push_first and state.status is Status.DELIVERED:
        # The read (or its absence) will be pushed; the final look catches a lost report.
        state.next_poll = end
        return
    # The last scheduled poll is at the watch's end, never before it.
    state.next_poll = before_deadline(
        expiry_deadline(state, policy), now, min(now + wait(state, now, policy), end)
    )


def expiry_deadline(state: MessageState, policy: PollingSettings) -> float | None:
    """When a pending message's validity ends (``sent_at`` + its ``ttl``: the
    provider's, else the registration's, else the instance's), or None: no deadline
    known, or the message is no longer pending."""
    ttl = state.ttl if state.ttl is not None else policy.ttl
    if ttl is None or state.status is not Status.PENDING:
        return None
    return state.sent_at + ttl


def before_deadline(deadline: float | None, now: float, next_poll: float) -> float:
    """``next_poll``, or earlier: one poll just after ``deadline`` when the schedule
    would next look later than that (so an expiry is seen at the provider's deadline,
    not at the schedule's next step, which late in a watch can be hours away)."""
    if deadline is None:
        return next_poll
    at = deadline + DEADLINE_SLACK
    return at if now < at < next_poll else next_poll


def wait(state: MessageState, now: float, policy: PollingSettings) -> float:
    """The wait before the message's next poll: from the adaptive plan, by the age of
    the event awaited (since sending while pending, since delivery once delivered),
    else the fixed schedule's step for the polls done."""
    # only ever set on a planned instance (PollingSettings.planned)
    plan = policy.plan if isinstance(policy, Policy) else None
    if plan is None or state.status.is_final:
        return policy.step(state.polls)
    if state.status is Status.DELIVERED and state.delivered_at is not None:
        return plan.wait(now - state.delivered_at, delivered=True)
    return plan.wait(now - state.sent_at, delivered=False)


def _settle(state: MessageState, now: float) -> None:
    state.next_poll = None
    state.settled_at = now


def _expire_watch(state: MessageState, now: float, events: list[Event]) -> None:
    if not state.counted & Counted.WATCH_EXPIRED:
        state.counted |= Counted.WATCH_EXPIRED
        events.append(WatchExpired(state.provider, state.labels))
    _settle(state, now)


def watch_end(state: MessageState, policy: PollingSettings) -> float:
    """When the message's watch ends: ``read_window`` after delivery, else ``max_age``
    after sending (:data:`~viber_exporter.store.rows.WATCH_END_CASES`). The poll at (or
    after) this time is the final look."""
    return _watch_end(state, policy.read_window, policy.max_age)


def give_up_at(state: MessageState, policy: PollingSettings) -> float:
    """When to stop waiting for the final look's answer: ``final_look_grace`` after the
    watch's end, or after the registration for a message registered later than that."""
    return max(watch_end(state, policy), state.registered_at) + policy.final_look_grace


def give_up(state: MessageState, now: float, policy: PollingSettings) -> list[Event] | None:
    """End a watch whose final look found no answer within ``final_look_grace``.

    Returns the events, or None when the message no longer needs it (an answer came
    meanwhile, or the policy changed). A delivered message settles as delivered; any
    other unsettled one counts as a watch expiry. The reason stays on the message.
    """
    if not state.watched or now < give_up_at(state, policy):
        return None
    what = "read window" if state.status is Status.DELIVERED else "max_age"
    reason = (
        f"watch ended without a final answer: the provider gave none within "
        f"final_look_grace ({policy.final_look_grace:g}s) after the {what} ended"
    )
    if state.last_error:
        reason += f"; last error: {state.last_error}"
    state.last_error = reason[:500]
    events: list[Event] = []
    if state.status is Status.DELIVERED or state.status.is_final:
        _settle(state, now)  # delivered, or final with its fallback leg unanswered
    else:
        _expire_watch(state, now, events)
    return events


def not_found(state: MessageState, now: float, policy: PollingSettings) -> list[Event]:
    """The provider does not know the id: retry within the grace period, then give up."""
    state.polls += 1
    state.last_poll_at = now
    state.errors = 0
    state.last_error = "the provider does not know this id (yet)"
    events: list[Event] = []
    if state.status is Status.PENDING and now - state.sent_at >= policy.not_found_grace:
        flag = Counted.UNKNOWN
        if not state.counted & flag:
            state.counted |= flag
            events.append(
                Transition(
                    state.provider,
                    state.id,
                    Status.UNKNOWN,
                    NOT_FOUND_REASON,
                    state.country,
                    state.labels,
                )
            )
        old, state.status, state.reason = state.status, Status.UNKNOWN, NOT_FOUND_REASON
        events.append(_changed(state, old, now))
        _settle(state, now)
        return events
    _schedule(state, now, policy, events)
    return events


def call_failed(
    state: MessageState,
    outcome: Outcome,
    message: str,
    now: float,
    policy: PollingSettings,
    rng: random.Random,
    *,
    provider_wide: bool = False,
) -> list[Event]:
    """A call that gave no answer about the message: keep it and retry.

    When the provider itself is failing (rate limits, 5xx, timeouts, refused
    connections, bad credentials) the message keeps its place: the whole provider is
    paused with backoff, which bounds the calls, and the message stays overdue, so
    ``viber_poll_lag_seconds`` shows the outage. When the answer points at the message
    (client error, unreadable answer) it backs off on its own, so one message the
    provider always chokes on moves to the back of the queue.

    A watch never ends here, even past its end: only an answer ends it (the final
    look), or :func:`give_up` once ``final_look_grace`` has passed without one.
    """
    state.last_error = f"{outcome.value}: {message}"[:500]
    if outcome is Outcome.RATE_LIMITED:
        return []
    state.errors += 1
    state.last_poll_at = now
    if outcome not in PROVIDER_FAILURES and not provider_wide:
        cap = wait(state, now, policy)  # never later than the schedule would have polled
        state.next_poll = now + backoff(state.errors, MESSAGE_RETRY_BASE, cap, rng)
    return []

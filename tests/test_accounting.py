"""The pure state-transition rules of SPEC §2 and §3."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import requests

from viber_exporter import accounting, campaigns
from viber_exporter.config.model import PollingSettings
from viber_exporter.events import (
    Cost,
    Latency,
    SmsFallback,
    StatusChanged,
    Transition,
    WatchExpired,
)
from viber_exporter.model import Fallback, Observation, Outcome, Status
from viber_exporter.store.rows import MessageState, SentSource

from .children import Child, callback, routee_report

POLICY = PollingSettings(
    tick=1, schedule=(10.0, 30.0, 60.0), max_age=1000.0, read_window=100.0, not_found_grace=50.0,
    retention=0, max_watched=10, final_look_grace=500.0,
)


def message(**kwargs) -> MessageState:
    values = {"provider": "p", "id": "m", "registered_at": 0.0, "sent_at": 0.0, "sent_source": SentSource.GIVEN, "next_poll": 10.0}
    values.update(kwargs)
    return MessageState(**values)


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def kinds(events):
    return [(type(e).__name__, getattr(e, "status", getattr(e, "kind", None))) for e in events]


def test_read_first_seen_counts_pending_delivered_and_read_once():
    state = message()
    events = accounting.observe(state, Observation(Status.READ, "SEEN", read_at=ts(7)), 20.0, POLICY)
    transitions = [e.status for e in events if isinstance(e, Transition)]
    assert transitions == [Status.PENDING, Status.DELIVERED, Status.READ]
    latencies = {e.kind: e.seconds for e in events if isinstance(e, Latency)}
    assert latencies == {"delivery": 7.0, "read": 7.0}
    assert not state.watched and state.settled_at == 20.0
    again = accounting.observe(state, Observation(Status.READ, "SEEN"), 30.0, POLICY)
    assert not [e for e in again if isinstance(e, Transition | Latency)]


def test_delivered_time_is_kept_from_the_first_poll_that_saw_it():
    state = message()
    accounting.observe(state, Observation(Status.DELIVERED, delivered_at=ts(5)), 10.0, POLICY)
    assert state.delivered_at == 5.0 and state.next_poll == 40.0  # schedule step 2 after one poll
    events = accounting.observe(state, Observation(Status.READ, delivered_at=ts(9), read_at=ts(12)), 40.0, POLICY)
    assert state.delivered_at == 5.0
    assert [e.seconds for e in events if isinstance(e, Latency)] == [12.0]


def test_delivered_is_polled_until_the_read_window_closes():
    state = message()
    accounting.observe(state, Observation(Status.DELIVERED), 10.0, POLICY)
    assert state.delivered_at == 10.0, "no provider time: the time of the poll"
    for now in (40.0, 100.0):
        accounting.observe(state, Observation(Status.DELIVERED), now, POLICY)
    assert state.next_poll == 110.0, "the last poll is at delivered + read_window, not before"
    assert state.watched, "the window closes only on an answer"
    assert accounting.observe(state, Observation(Status.DELIVERED), 110.0, POLICY) == []
    assert not state.watched and state.status is Status.DELIVERED


def test_the_final_look_counts_a_read_seen_after_the_window_closed():
    state = message()
    accounting.observe(state, Observation(Status.DELIVERED, delivered_at=ts(10)), 10.0, POLICY)
    # The provider was down from 50 to 400: the final look comes long after the window (110).
    failed = accounting.call_failed(state, Outcome.SERVER_ERROR, "HTTP 503", 120.0, POLICY, random.Random(1))
    assert failed == [] and state.watched, "a failed call never ends a watch"
    events = accounting.observe(state, Observation(Status.READ, read_at=ts(105)), 400.0, POLICY)
    assert [e.status for e in events if isinstance(e, Transition)] == [Status.READ]
    assert [e.seconds for e in events if isinstance(e, Latency)] == [105.0]
    assert not state.watched


def test_give_up_only_after_final_look_grace():
    delivered = message()
    accounting.observe(delivered, Observation(Status.DELIVERED, delivered_at=ts(10)), 10.0, POLICY)
    assert accounting.give_up_at(delivered, POLICY) == 10.0 + 100.0 + 500.0
    assert accounting.give_up(delivered, 609.0, POLICY) is None and delivered.watched
    delivered.last_error = "server_error: HTTP 503"
    assert accounting.give_up(delivered, 610.0, POLICY) == [], "delivered: settles, nothing counted"
    assert not delivered.watched and delivered.status is Status.DELIVERED
    assert "final_look_grace" in delivered.last_error and "HTTP 503" in delivered.last_error

    pending = message()
    assert accounting.give_up(pending, 1499.0, POLICY) is None
    assert accounting.give_up(pending, 1500.0, POLICY) == [WatchExpired("p")]
    assert not pending.watched and pending.status is Status.PENDING

    late = message(registered_at=5000.0)  # registered after its max_age had passed
    assert accounting.give_up_at(late, POLICY) == 5500.0, "the grace counts from the registration"


def test_no_step_back_from_delivered_and_expired_after_delivery_is_delivered():
    """Routee's expireOnDelivery: delivered, then the TTL passed with no SEEN. The message
    was delivered: it settles as delivered, no failure, the provider status visible."""
    state = message()
    accounting.observe(state, Observation(Status.DELIVERED), 10.0, POLICY)
    accounting.observe(state, Observation(Status.PENDING), 20.0, POLICY)
    assert state.status is Status.DELIVERED
    events = accounting.observe(state, Observation(Status.EXPIRED, "EXPIRED", reason="ttl_expired"), 30.0, POLICY)
    assert not [e for e in events if isinstance(e, Transition)], "not counted as expired"
    assert (state.status, state.provider_status, state.reason) == (Status.DELIVERED, "EXPIRED", None)
    assert not state.watched, "settled: it cannot become read any more"


def test_a_settled_observation_ends_the_watch():
    state = message()
    accounting.observe(state, Observation(Status.DELIVERED, "EXPIRED", settled=True), 10.0, POLICY)
    assert state.status is Status.DELIVERED and not state.watched


def test_cost_only_grows_and_sms_legs_count_once():
    state = message()
    first = accounting.observe(state, Observation(Status.PENDING, price=0.02, currency="EUR"), 10.0, POLICY)
    assert [(e.channel, e.amount, e.currency) for e in first if isinstance(e, Cost)] == [("viber", 0.02, "EUR")]
    assert not [e for e in accounting.observe(state, Observation(Status.PENDING, price=0.01), 20.0, POLICY) if isinstance(e, Cost)]
    more = accounting.observe(state, Observation(Status.PENDING, price=0.05), 30.0, POLICY)
    assert [e.amount for e in more if isinstance(e, Cost)] == [pytest.approx(0.03)]
    legs = (Fallback("sms", 0.04, "EUR"),)
    sms = accounting.observe(state, Observation(Status.FAILED, price=0.05, fallbacks=legs), 40.0, POLICY)
    assert sorted(type(e).__name__ for e in sms if isinstance(e, SmsFallback | Cost)) == ["Cost", "SmsFallback"]
    assert not [e for e in accounting.observe(state, Observation(Status.FAILED, price=0.05, fallbacks=legs), 50.0, POLICY) if isinstance(e, SmsFallback | Cost)]


def test_missing_currency_is_xxx():
    events = accounting.observe(message(), Observation(Status.PENDING, price=1.0), 10.0, POLICY)
    assert [e.currency for e in events if isinstance(e, Cost)] == ["XXX"]


def test_provider_sent_time_replaces_only_the_registration_fallback():
    fallback = message(sent_source=SentSource.REGISTERED, sent_at=100.0)
    accounting.observe(fallback, Observation(Status.PENDING, sent_at=ts(90)), 110.0, POLICY)
    assert (fallback.sent_at, fallback.sent_source) == (90.0, SentSource.PROVIDER)
    given = message(sent_at=100.0)
    accounting.observe(given, Observation(Status.PENDING, sent_at=ts(90)), 110.0, POLICY)
    assert given.sent_at == 100.0


def test_latency_is_never_negative():
    events = accounting.observe(message(sent_at=100.0), Observation(Status.DELIVERED, delivered_at=ts(50)), 110.0, POLICY)
    assert [e.seconds for e in events if isinstance(e, Latency)] == [0.0]


def test_max_age_caps_next_poll_and_the_final_look_expires_the_watch():
    state = message()
    accounting.observe(state, Observation(Status.PENDING), 995.0, POLICY)
    assert state.next_poll == 1000.0
    events = accounting.observe(state, Observation(Status.PENDING), 1000.0, POLICY)
    assert events == [WatchExpired("p")] and not state.watched


def test_the_final_look_past_max_age_counts_what_it_sees():
    state = message()
    accounting.observe(state, Observation(Status.PENDING), 995.0, POLICY)
    events = accounting.observe(state, Observation(Status.FAILED, reason="opted_out", price=0.02), 1300.0, POLICY)
    assert [(e.status, e.reason) for e in events if isinstance(e, Transition)] == [(Status.FAILED, "opted_out")]
    assert [e.amount for e in events if isinstance(e, Cost)] == [0.02]
    assert not [e for e in events if isinstance(e, WatchExpired)], "it had an answer"


def test_not_found_within_grace_then_unknown_not_found():
    state = message()
    assert accounting.not_found(state, 10.0, POLICY) == []
    assert state.watched and state.status is Status.PENDING
    events = accounting.not_found(state, 60.0, POLICY)
    assert [(e.status, e.reason) for e in events if isinstance(e, Transition)] == [(Status.UNKNOWN, "not_found")]
    assert any(isinstance(e, StatusChanged) for e in events)
    assert not state.watched and state.reason == "not_found"


def test_message_level_failures_back_off_per_message():
    state = message(next_poll=10.0)
    rng = random.Random(1)
    delays = []
    for _ in range(6):
        accounting.call_failed(state, Outcome.INVALID_RESPONSE, "not JSON", 10.0, POLICY, rng)
        delays.append(state.next_poll - 10.0)
    assert delays[0] <= 1.0 and delays[3] >= 4.0, "grows exponentially"
    assert max(delays) <= 10.0, "never longer than the message's schedule step"
    assert state.last_error == "invalid_response: not JSON" and state.errors == 6


@pytest.mark.parametrize("outcome", [Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.TIMEOUT,
                                     Outcome.CONNECTION_ERROR, Outcome.AUTH_ERROR])
def test_provider_failures_leave_the_message_overdue(outcome):
    state = message(next_poll=10.0)
    accounting.call_failed(state, outcome, "down", 50.0, POLICY, random.Random(1))
    assert state.next_poll == 10.0, "still overdue: the provider pause bounds the calls, the lag shows the outage"
    assert state.last_error == f"{outcome.value}: down"


def test_unknown_status_keeps_polling_and_counts_once():
    state = message()
    events = accounting.observe(state, Observation(Status.UNKNOWN, "WHAT"), 10.0, POLICY)
    assert kinds([e for e in events if isinstance(e, Transition)]) == [("Transition", Status.PENDING), ("Transition", Status.UNKNOWN)]
    assert state.watched
    assert not [e for e in accounting.observe(state, Observation(Status.UNKNOWN, "WHAT"), 20.0, POLICY) if isinstance(e, Transition)]


def test_a_fallback_counts_when_its_leg_is_sent_and_polling_goes_on_until_the_leg_settles():
    from viber_exporter.events import FallbackOutcome

    state = message()
    scheduled = (Fallback("sms", None, None, "scheduled", Status.PENDING, sent=False),)
    events = accounting.observe(state, Observation(Status.FAILED, reason="not_viber_user", fallbacks=scheduled), 10.0, POLICY)
    assert not [e for e in events if isinstance(e, SmsFallback)], "a leg not sent yet is no fallback"
    assert state.watched, "but it may still go out: keep polling"
    refused = (Fallback("sms", None, None, "rejected", Status.FAILED, sent=False),)
    events = accounting.observe(state, Observation(Status.FAILED, reason="not_viber_user", fallbacks=refused), 40.0, POLICY)
    assert not [e for e in events if isinstance(e, SmsFallback)] and not state.watched, "refused: never a fallback"

    state = message()
    sent = (Fallback("sms", 0.05, "EUR", "sent", Status.PENDING, sent=True),)
    events = accounting.observe(state, Observation(Status.FAILED, reason="not_viber_user", fallbacks=sent), 10.0, POLICY)
    assert [type(e).__name__ for e in events if isinstance(e, SmsFallback | FallbackOutcome)] == ["SmsFallback"]
    assert [(e.channel, e.amount) for e in events if isinstance(e, Cost)] == [("sms", 0.05)]
    assert state.watched and state.next_poll == 40.0, "the leg is out: keep polling for its outcome"
    done = (Fallback("sms", 0.05, "EUR", "delivered", Status.DELIVERED, sent=True),)
    events = accounting.observe(state, Observation(Status.FAILED, reason="not_viber_user", fallbacks=done), 20.0, POLICY)
    assert [(e.channel, e.outcome) for e in events if isinstance(e, FallbackOutcome)] == [("sms", Status.DELIVERED)]
    assert not [e for e in events if isinstance(e, SmsFallback | Cost | Transition)], "each counted once"
    assert not state.watched
    late = message()
    accounting.observe(late, Observation(Status.FAILED, reason="x", fallbacks=sent), 10.0, POLICY)
    accounting.observe(late, Observation(Status.FAILED, reason="x", fallbacks=sent), 1000.0, POLICY)
    assert not late.watched, "a leg that never settles is followed until max_age only"


def test_provider_times_in_the_future_or_before_sending_are_counted_and_not_believed():
    from viber_exporter.events import AnswerProblem

    state = message(sent_at=1000.0)
    events = accounting.observe(state, Observation(Status.DELIVERED, delivered_at=ts(1000 + 7200)), 1010.0, POLICY)
    assert [(e.problem, e.detail) for e in events if isinstance(e, AnswerProblem)] == [("time_in_future", "delivered_at")]
    assert state.delivered_at == 1010.0, "the poll's time: an honest upper bound"
    early = message(sent_at=10_000.0)
    events = accounting.observe(early, Observation(Status.READ, read_at=ts(10_000 - 7200)), 10_010.0, POLICY)
    assert ("time_before_sent", "delivered_at") in [(e.problem, e.detail) for e in events if isinstance(e, AnswerProblem)]
    assert all(e.seconds == 0.0 for e in events if isinstance(e, Latency))


def test_unreadable_optional_fields_are_counted_and_the_status_still_used():
    from viber_exporter.events import AnswerProblem

    state = message()
    events = accounting.observe(state, Observation(Status.DELIVERED, problems=("time_dr",)), 10.0, POLICY)
    assert [(e.problem, e.detail) for e in events if isinstance(e, AnswerProblem)] == [("unreadable_field", "time_dr")]
    assert state.status is Status.DELIVERED


# -- the deadline poll (a pending message's validity) ---------------------------------------

LONG_STEPS = PollingSettings(
    tick=1, schedule=(10.0, 3600.0), max_age=86400.0, read_window=100.0, not_found_grace=50.0,
    retention=0, max_watched=10, final_look_grace=500.0,
)


def test_a_pending_message_gets_one_poll_just_after_its_validity_ends():
    state = message(sent_at=0.0, next_poll=10.0)
    accounting.observe(state, Observation(Status.PENDING, ttl=600.0), 10.0, LONG_STEPS)
    assert state.ttl == 600.0 and state.next_poll == 600.0 + accounting.DEADLINE_SLACK, "not at 3610"
    accounting.observe(state, Observation(Status.PENDING), 660.0, LONG_STEPS)
    assert state.next_poll == 660.0 + 3600.0, "after the deadline: the schedule again"


def test_the_deadline_comes_from_the_provider_else_the_registration_else_the_instance():
    instance = PollingSettings(**{**LONG_STEPS.__dict__, "ttl": 1200.0})
    registered = message(ttl=900.0)
    accounting.observe(registered, Observation(Status.PENDING), 10.0, instance)
    assert registered.next_poll == 900.0 + accounting.DEADLINE_SLACK
    provider = message(ttl=900.0)
    accounting.observe(provider, Observation(Status.PENDING, ttl=300.0), 10.0, instance)
    assert provider.next_poll == 300.0 + accounting.DEADLINE_SLACK
    default = message()
    accounting.observe(default, Observation(Status.PENDING), 10.0, instance)
    assert default.next_poll == 1200.0 + accounting.DEADLINE_SLACK
    unset = message()
    accounting.observe(unset, Observation(Status.PENDING), 10.0, LONG_STEPS)
    assert unset.next_poll == 10.0 + 3600.0, "no ttl anywhere: today's schedule"


def test_only_a_pending_message_waits_for_its_deadline():
    delivered = message(ttl=600.0)
    accounting.observe(delivered, Observation(Status.DELIVERED, delivered_at=ts(5)), 10.0, LONG_STEPS)
    assert delivered.next_poll == 5.0 + 100.0, "its read window, never the deadline (660)"
    sooner = message(ttl=5000.0)
    accounting.observe(sooner, Observation(Status.PENDING), 10.0, POLICY)
    assert sooner.next_poll == 10.0 + 30.0, "the schedule looks sooner anyway"


def test_a_campaign_is_swept_just_after_the_next_deadline_of_a_pending_message():
    from viber_exporter.store.rows import CampaignState

    campaign = CampaignState("p", "c", registered_at=0.0, sent_at=0.0, discover_until=0.0, polls=5)
    campaigns.campaign_swept(campaign, 100.0, LONG_STEPS, found=3, earliest=150.0, complete=True,
                              deadlines=(10.0, 700.0, 900.0))
    assert campaign.next_poll == 700.0 + accounting.DEADLINE_SLACK, "the first deadline still ahead"
    campaigns.campaign_swept(campaign, 100.0, LONG_STEPS, found=3, earliest=150.0, complete=True)
    assert campaign.next_poll > 3600.0


def test_the_core_derives_times_and_reasons_from_what_the_provider_said():
    """(1.3) ``at`` is the time of the status: a delivery time for ``delivered``, a read
    time for ``read`` (and the delivery's, for a read first seen); a reason is kept for a
    failure only, in snake_case; explicit delivered_at/read_at win."""
    delivered = message()
    accounting.observe(delivered, Observation(Status.DELIVERED, "DELIVERED", reason="NO_ERROR", at=ts(4)), 20.0, POLICY)
    assert (delivered.delivered_at, delivered.read_at, delivered.reason) == (4.0, None, None)
    read = message()
    accounting.observe(read, Observation(Status.READ, "SEEN", at=ts(9)), 20.0, POLICY)
    assert (read.delivered_at, read.read_at) == (9.0, 9.0), "read first seen: delivered by then"
    both = message()
    accounting.observe(both, Observation(Status.READ, "SEEN", delivered_at=ts(3), at=ts(9)), 20.0, POLICY)
    assert (both.delivered_at, both.read_at) == (3.0, 9.0)
    failed = message()
    events = accounting.observe(failed, Observation(Status.FAILED, "REJECTED", reason="Not Viber-User", at=ts(5)),
                                20.0, POLICY)
    assert failed.reason == "not_viber_user" and failed.delivered_at is None
    assert [e.reason for e in events if isinstance(e, Transition) and e.status is Status.FAILED] == ["not_viber_user"]
    no_reason = message()
    accounting.observe(no_reason, Observation(Status.EXPIRED, "EXPIRED"), 20.0, POLICY)
    assert no_reason.reason == "unspecified"


def test_provider_times_and_prices_out_of_range_are_answer_problems_and_reads_still_work(child: Child):
    ids = [f"0a047b46-a4dd-4ca8-b817-a6a1340000{n:02d}" for n in range(4)]
    year_one = routee_report(ids[0], status={"name": "DELIVERED", "updatedDate": "0001-01-01T00:00:00+23:59"})
    huge = routee_report(ids[1], price=1.7e308)
    assert callback(child, [year_one, huge, routee_report(ids[2])]).status_code == 200
    for message_id in ids[:3]:
        answer = requests.get(f"{child.url}/api/v1/messages/routee/{message_id}", timeout=5)
        assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    first = requests.get(f"{child.url}/api/v1/messages/routee/{ids[0]}", timeout=5).json()
    assert first["delivered_at"] >= first["registered_at"], "a year-1 delivery time is not believed"
    assert requests.get(f"{child.url}/api/v1/messages/routee/{ids[1]}", timeout=5).json()["price"] is None
    assert requests.get(f"{child.url}/api/v1/messages", timeout=5).status_code == 200
    assert child.metric('viber_provider_answer_problems_total{problem="time_out_of_range",provider="routee"}') == 1
    assert child.metric('viber_provider_answer_problems_total{problem="unreadable_field",provider="routee"}') == 1
    # The batch's events were counted, the sane price included, and latency is sane.
    assert child.metric('viber_message_status_transitions_total{provider="routee",status="delivered"}') == 3
    assert child.metric('viber_message_cost_total{channel="viber",currency="EUR",provider="routee"}') == 0.04
    assert child.metric('viber_message_delivery_latency_seconds_sum{provider="routee"}') < 60

"""The polling engine end to end: real scheduler, real SQLite file, real HTTP server."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from viber_exporter.engine import Registration, RegistrationError
from viber_exporter.model import Status

from .conftest import sample, wait_for, wait_ticks


def at(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def test_lifecycle_to_settled_metrics(fake_server, make_config, run_exporter, clock):
    _, api = fake_server
    api.messages["m1"] = {"status": "QUEUED"}
    exporter = run_exporter(make_config())
    sent = clock.time() - 5
    exporter.register([Registration("fake", "m1", sent_at=sent)])
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="pending") == 1)
    api.messages["m1"] = {"status": "DELIVERED", "delivered_at": at(sent + 3), "price": 0.035}
    wait_for(lambda: exporter.store.get("fake", "m1").status is Status.DELIVERED)
    api.messages["m1"] = {"status": "SEEN", "read_at": at(sent + 4), "price": 0.035}
    wait_for(lambda: exporter.store.get("fake", "m1").status is Status.READ)
    state = exporter.store.get("fake", "m1")
    assert not state.watched, "read is final: polling stops"
    calls = len(api.calls_for("m1"))
    wait_ticks(exporter, "fake")  # the poller ran on: it had its chance to poll again
    assert len(api.calls_for("m1")) == calls, "no polls after a final status"
    for status, expected in [("pending", 1), ("delivered", 1), ("read", 1), ("failed", 0)]:
        assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status=status) == expected
    assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="fake") == 1
    assert sample(exporter, "viber_message_delivery_latency_seconds_sum", provider="fake") == pytest.approx(3)
    assert sample(exporter, "viber_message_read_latency_seconds_sum", provider="fake") == pytest.approx(4)
    assert sample(exporter, "viber_message_cost_total", provider="fake", currency="EUR", channel="viber") == pytest.approx(0.035)
    assert sample(exporter, "viber_messages", provider="fake", status="read") == 1
    assert sample(exporter, "viber_messages_watched", provider="fake") == 0
    assert sample(exporter, "viber_provider_requests_total", provider="fake", outcome="ok") == calls


def test_first_seen_read_counts_delivered_too(fake_server, make_config, run_exporter, clock):
    _, api = fake_server
    sent = clock.time() - 10
    api.messages["r1"] = {"status": "seen", "read_at": at(sent + 9)}  # lower case: compared case-insensitively
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "r1", sent_at=sent)])
    wait_for(lambda: exporter.store.get("fake", "r1").status is Status.READ)
    for status in ("pending", "delivered", "read"):
        assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status=status) == 1
    assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="fake") == 1
    assert sample(exporter, "viber_message_delivery_latency_seconds_sum", provider="fake") == pytest.approx(9)


def test_failures_by_reason_and_sms_fallback_cost(fake_server, make_config, run_exporter):
    _, api = fake_server
    api.messages["f1"] = {"status": "FAILED", "reason": "not_viber_user", "price": 0.01, "sms": [{"price": 0.05}]}
    api.messages["f2"] = {"status": "EXPIRED", "reason": "ttl_expired"}
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "f1"), Registration("fake", "f2")])
    wait_for(lambda: exporter.store.counts()[1].get("fake") == 0)
    assert sample(exporter, "viber_message_failures_total", provider="fake", reason="not_viber_user") == 1
    assert sample(exporter, "viber_message_failures_total", provider="fake", reason="ttl_expired") == 1
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="expired") == 1
    assert sample(exporter, "viber_message_sms_fallbacks_total", provider="fake") == 1
    assert sample(exporter, "viber_message_cost_total", provider="fake", currency="EUR", channel="sms") == pytest.approx(0.05)


def test_restart_mid_life_loses_nothing_and_double_counts_nothing(fake_server, make_config, run_exporter):
    _, api = fake_server
    ids = [f"m{i}" for i in range(30)]
    for message_id in ids:
        api.messages[message_id] = {"status": "DELIVERED", "price": 0.02}
    config = make_config()
    first = run_exporter(config)
    first.register([Registration("fake", i) for i in ids])
    wait_for(lambda: sample(first, "viber_message_status_transitions_total", provider="fake", status="delivered") == 30)
    first.stop(timeout=5)

    # While it was down, a third of the messages were read.
    for message_id in ids[:10]:
        api.messages[message_id] = {"status": "SEEN", "price": 0.02}
    second = run_exporter(config)
    assert sample(second, "viber_messages_watched", provider="fake") == 30, "every unsettled message resumes"
    wait_for(lambda: sample(second, "viber_message_status_transitions_total", provider="fake", status="read") == 10)
    polls = sum(second.store.get("fake", i).polls for i in ids[10:])
    # more polls of the still-delivered ones (proven by their count) must not count again
    wait_for(lambda: sum(second.store.get("fake", i).polls for i in ids[10:]) >= polls + 20)
    assert sample(second, "viber_message_status_transitions_total", provider="fake", status="delivered") == 0
    assert sample(second, "viber_message_status_transitions_total", provider="fake", status="pending") == 0
    assert sample(second, "viber_message_cost_total", provider="fake", currency="EUR", channel="viber") == 0
    assert sample(second, "viber_message_delivery_latency_seconds_count", provider="fake") == 0
    assert sample(second, "viber_message_read_latency_seconds_count", provider="fake") == 10
    assert sample(second, "viber_messages", provider="fake", status="read") == 10
    assert sample(second, "viber_messages", provider="fake", status="delivered") == 20


def test_concurrency_is_used_and_never_exceeded(fake_server, make_config, run_exporter):
    _, api = fake_server
    api.delay = 0.05
    ids = [f"c{i}" for i in range(40)]
    for message_id in ids:
        api.messages[message_id] = {"status": "SEEN"}
    exporter = run_exporter(make_config(provider={"concurrency": 3}))
    exporter.register([Registration("fake", i) for i in ids])
    wait_for(lambda: len(api.calls) >= 40)
    assert api.max_in_flight == 3, "concurrency is both used and never exceeded"


def test_rate_limit_spaces_calls_evenly(fake_server, make_config, virtual_exporter):
    """In virtual time: the limit is exact in the provider's seconds, on any machine."""
    _, api = fake_server
    ids = [f"r{i}" for i in range(60)]
    for message_id in ids:
        api.messages[message_id] = {"status": "SEEN"}
    exporter, _clock, tick = virtual_exporter(make_config(provider={"concurrency": 1, "rate_limit": 20}))
    exporter.register([Registration("fake", i) for i in ids])
    while len(api.calls) < 60:
        tick(1.0)
    starts = sorted(c.started for c in api.calls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 20 - 1e-9, "never faster than rate_limit"
    assert starts[-1] - starts[0] <= (60 - 1) / 20 + 1.0, "and not much slower"


def test_429_with_retry_after_pauses_the_instance(fake_server, make_config, virtual_exporter):
    _, api = fake_server
    for i in range(5):
        api.messages[f"q{i}"] = {"status": "SEEN"}
    api.faults.append((429, json.dumps({"error": "slow down"}), {"Retry-After": "7"}))
    exporter, _clock, tick = virtual_exporter(make_config(provider={"concurrency": 1}))
    exporter.register([Registration("fake", f"q{i}") for i in range(5)])
    while sum(1 for c in api.calls if c.status == 200) < 5:
        tick(0.5)
    [limited] = [c for c in api.calls if c.status == 429]
    after = [c.started for c in api.calls if c.started > limited.started]
    assert min(after) - limited.ended >= 7.0, "nothing was called during the Retry-After pause"
    assert sample(exporter, "viber_provider_requests_total", provider="fake", outcome="rate_limited") == 1
    assert exporter.instances["fake"].health.up, "a 429 is not an outage"


def test_malformed_json_and_unknown_status_are_counted_and_retried(fake_server, make_config, run_exporter):
    _, api = fake_server
    api.messages["bad"] = {"status": "QUEUED"}
    api.messages["odd"] = {"status": "WEIRD_NEW_STATUS"}
    api.faults.append((200, "{not json", {}))
    exporter = run_exporter(make_config(provider={"concurrency": 1}))
    exporter.register([Registration("fake", "bad")])
    wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="fake", outcome="invalid_response") == 1)
    wait_for(lambda: exporter.store.get("fake", "bad").polls >= 1)
    assert exporter.store.get("fake", "bad").watched, "retried, not dropped"
    exporter.register([Registration("fake", "odd")])
    wait_for(lambda: exporter.store.get("fake", "odd").status is Status.UNKNOWN)
    state = exporter.store.get("fake", "odd")
    assert state.watched, "unknown keeps polling until max_age"
    assert state.provider_status == "WEIRD_NEW_STATUS"
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="unknown") == 1


def test_max_age_closes_unsettled_messages(fake_server, make_config, run_exporter, clock):
    _, api = fake_server
    api.messages["old"] = {"status": "QUEUED"}
    exporter = run_exporter(make_config(polling={"max_age": "1s"}))
    exporter.register([Registration("fake", "old", sent_at=clock.time() - 0.5)])
    wait_for(lambda: not exporter.store.get("fake", "old").watched, timeout=5)
    assert sample(exporter, "viber_message_watch_expired_total", provider="fake") == 1
    assert exporter.store.get("fake", "old").status is Status.PENDING


def test_not_found_grace_then_unknown(fake_server, make_config, run_exporter):
    _, api = fake_server
    exporter = run_exporter(make_config(polling={"not_found_grace": "1s"}))
    exporter.register([Registration("fake", "ghost"), Registration("fake", "late")])
    wait_for(lambda: len(api.calls_for("late")) >= 2)
    api.messages["late"] = {"status": "DELIVERED"}  # appears within the grace period
    wait_for(lambda: not exporter.store.get("fake", "ghost").watched, timeout=5)
    ghost = exporter.store.get("fake", "ghost")
    assert (ghost.status, ghost.reason) == (Status.UNKNOWN, "not_found")
    assert exporter.store.get("fake", "late").status is Status.DELIVERED
    assert sample(exporter, "viber_provider_requests_total", provider="fake", outcome="not_found") >= 2
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="unknown") == 1


def test_outage_backs_off_sets_down_and_recovers(fake_server, make_config, virtual_exporter):
    _, api = fake_server
    api.messages["o1"] = {"status": "QUEUED"}
    api.outage = (503, "<html>down</html>", {})
    exporter, clock, tick = virtual_exporter(make_config(provider={"concurrency": 1}))
    exporter.register([Registration("fake", "o1")])
    health = exporter.instances["fake"].health
    for _ in range(300):  # 30 s at a 100 ms tick
        tick(0.1)
    assert not health.up
    # Every 100 ms without backoff: 300 calls. Exponential backoff (1, 2, 4, 8 … s): a few.
    assert len(api.calls) <= 8, len(api.calls)
    lag = health.lag(clock.time())
    assert lag > 20, "the failing message stays overdue: the lag shows the outage"
    tick(5.0)
    assert health.lag(clock.time()) > lag, "the lag grows during the outage"
    api.outage = None
    for _ in range(700):  # at most the backoff cap (60 s) until the next try
        if health.up and health.lag(clock.time()) == 0:
            break
        tick(0.1)
    assert health.up and exporter.store.get("fake", "o1").watched
    assert health.lag(clock.time()) == 0
    assert sample(exporter, "viber_provider_requests_total", provider="fake", outcome="server_error") >= 1


def test_timeouts_and_refused_connections_are_outcomes(fake_server, make_config, run_exporter):
    server, api = fake_server
    api.messages["t1"] = {"status": "QUEUED"}
    api.delay = 1.5
    exporter = run_exporter(make_config(provider={"timeout": "200ms", "concurrency": 1}))
    exporter.register([Registration("fake", "t1")])
    wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="fake", outcome="timeout") >= 1)
    server.stop()
    wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="fake", outcome="connection_error") >= 1, timeout=10)
    assert exporter.store.get("fake", "t1").watched
    assert exporter.poller.running


def test_a_provider_answering_garbage_backs_off_provider_wide_and_goes_down(fake_server, make_config, virtual_exporter):
    """HTTP 200 with an error page for every call: after a few, the whole instance backs off."""
    _, api = fake_server
    api.outage = (200, "<html><body>Service temporarily unavailable</body></html>", {})
    exporter, _clock, tick = virtual_exporter(make_config(provider={"concurrency": 4}))
    exporter.register([Registration("fake", f"g{i}") for i in range(50)])
    for _ in range(600):  # 60 virtual seconds; each message due every 100 ms
        tick(0.1)
    health = exporter.instances["fake"].health
    assert not health.up, "garbage is not an answer: the provider shows down"
    assert len(api.calls) <= 80, f"{len(api.calls)} calls: backing off, not hammering"
    assert sample(exporter, "viber_provider_requests_total", provider="fake", outcome="invalid_response") == len(api.calls)
    api.outage = None
    for i in range(50):
        api.messages[f"g{i}"] = {"status": "SEEN"}
    for _ in range(900):
        if exporter.store.total_watched() == 0:
            break
        tick(0.1)
    assert health.up and exporter.store.total_watched() == 0, "recovers and settles everything"


# -- the deadline poll -------------------------------------------------------------------------


def deadline_run(builtin_host, path, strategy: str, *, ttl_source: str):
    """A run where every message expires at its 2 h TTL while the schedule, after its
    first steps, would not look again for 6 h: only the deadline poll sees it in time."""
    from viber_exporter.testing.simulation import Mix
    from viber_exporter.testing.virtualtime import VirtualRun

    mix = Mix(read=0, delivered=0, failed=0, expired=1, pending=0, visible_after=0.0, expire_after=7200.0)
    polling = {"tick": "5s", "schedule": ["10s", "6h"], "max_age": "48h", "read_window": "1h"}
    routee = {"rate_limit": 1000, "campaign_page_size": 100}
    bsg = {"rate_limit": 1000}
    if strategy == "adaptive":
        polling |= {"schedule": "adaptive", "adaptive_budget": 2}
    if strategy == "push_first":
        routee |= {"push_first": True, "callback_token": "t0ken", "push_schedule": ["10s", "6h"]}
    if ttl_source == "instance":
        bsg |= {"ttl": "2h"}
    return VirtualRun(builtin_host, path, mix=mix, seed=3, polling=polling, routee=routee, bsg=bsg)


@pytest.mark.parametrize(("strategy", "provider", "ttl_source"), [
    ("fixed", "routee", "provider"),  # Routee's answers state the ttl
    ("fixed", "bsg", "instance"),  # BSG's do not: the instance's ttl setting
    ("adaptive", "routee", "provider"),
    ("push_first", "routee", "provider"),
    ("campaign", "routee", "provider"),
])
def test_an_expiry_is_seen_just_after_the_deadline_on_every_strategy(builtin_host, tmp_path, strategy, provider, ttl_source):
    run = deadline_run(builtin_host, tmp_path / "s.db", strategy, ttl_source=ttl_source)
    try:
        start = run.clock.time()
        if strategy == "campaign":
            _, plans = run.send_campaign(provider, 5)
        else:
            plans = run.send(provider, 5)
        while run.clock.time() - start < 7200 + 600:
            run.tick(5)
        expired = run.value("viber_message_status_transitions_total", provider=provider, status="expired")
        assert expired == 5, f"{strategy}: expiries at 2 h seen within 10 min, not at the 6 h step"
        for plan in plans:
            stored = run.exporter.store.get(provider, plan.id)
            assert stored.status is Status.EXPIRED and stored.last_poll_at - plan.final_at < 120
    finally:
        run.close()


def test_a_registration_ttl_sets_the_deadline(builtin_host, tmp_path):
    """A ttl given at registration (BSG's answers state none) brings the poll forward."""
    run = deadline_run(builtin_host, tmp_path / "s.db", "fixed", ttl_source="registration")
    try:
        plan = run.mock.simulation.create("bsg", run.clock.time(), None)
        run.exporter.register_items([{"provider": "bsg", "id": plan.id, "ttl": "2h"}])
        assert run.exporter.store.get("bsg", plan.id).ttl == 7200.0
        start = run.clock.time()
        while run.clock.time() - start < 7200 + 600:
            run.tick(5)
        assert run.exporter.store.get("bsg", plan.id).status is Status.EXPIRED
        for bad in ("0s", "forever", "90d", -5):
            with pytest.raises(RegistrationError) as info:
                run.exporter.register_items([{"provider": "bsg", "id": "42", "ttl": bad}])
            assert "ttl" in info.value.details[0][1]
    finally:
        run.close()


def test_a_poller_that_stops_ticking_shows_a_growing_lag_and_an_old_last_tick(fake_server, make_config, virtual_exporter):
    """The lag is computed at scrape time from the earliest due poll the poller last
    read: when ticks stop (a hung tick, a stopped scheduler), it grows instead of
    keeping the 0 of the last tick, and the last tick's time stays where it was."""
    _, api = fake_server
    api.messages["h1"] = {"status": "QUEUED"}
    exporter, clock, tick = virtual_exporter(make_config(polling={"schedule": ["10s"]}))
    exporter.register([Registration("fake", "h1")])
    tick(11.0)  # nothing due yet (the first poll is 10 s after registration)
    tick(1.0)  # the first poll: pending, next poll 10 s later
    assert len(api.calls) == 1
    ticked = sample(exporter, "viber_poller_last_tick_timestamp_seconds", provider="fake")
    assert ticked == pytest.approx(clock.time() - 1.0, abs=0.5)
    assert sample(exporter, "viber_poll_lag_seconds", provider="fake") == 0
    clock.advance(300.0)  # no tick runs any more
    assert sample(exporter, "viber_poll_lag_seconds", provider="fake") == pytest.approx(291.0, abs=1.0)
    assert sample(exporter, "viber_poller_last_tick_timestamp_seconds", provider="fake") == ticked
    tick(1.0)  # ticking again catches up
    assert sample(exporter, "viber_poll_lag_seconds", provider="fake") == 0

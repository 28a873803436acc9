"""``exporter/instance.py``: the guarded provider call and a provider instance's live
state through outages, rate limits, odd networks and expiring tokens."""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from viber_exporter.engine import Exporter, Registration
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer
from viber_exporter.testing.mock import Faults, MockProviders
from viber_exporter.testing.virtualtime import VirtualRun

from .children import QUICK, mock_config, running
from .conftest import sample, wait_for


@pytest.fixture
def host(builtin_host: PluginHost) -> PluginHost:
    return builtin_host


def calls(exporter: Exporter, provider: str) -> float:
    return sum(sample(exporter, "viber_provider_requests_total", provider=provider, outcome=o)
               for o in ("ok", "not_found", "rate_limited", "auth_error", "client_error", "server_error",
                         "timeout", "connection_error", "invalid_response"))


def test_provider_outage_5xx_timeouts_refused_then_recovery(host, tmp_path, clock):
    mock = MockProviders(QUICK, seed=5)
    mock_server = BackgroundServer(mock, "127.0.0.1", 0)
    mock_server.start()
    port = mock_server.port
    exporter = running(host, mock_config(mock_server.url, tmp_path / "s.db", timeout="300ms"))
    try:
        plans = [mock.simulation.create("bsg", clock.time()) for _ in range(20)]
        for plan in plans:
            plan.delivered_at = plan.read_at = plan.final_at = None  # stays pending during the outage
        exporter.register([Registration("bsg", p.id) for p in plans])
        wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="bsg", outcome="ok") >= 20)
        before = calls(exporter, "bsg")
        started = time.monotonic()
        def seen(outcome: str) -> bool:
            return sample(exporter, "viber_provider_requests_total", provider="bsg", outcome=outcome) >= 1

        health = exporter.instances["bsg"].health
        pauses = health.pauses
        mock.faults = Faults(outage=True)  # 5xx
        wait_for(lambda: sample(exporter, "viber_provider_up", provider="bsg") == 0, timeout=5)
        wait_for(lambda: health.pauses >= pauses + 2, timeout=30)  # backed off twice
        mock.faults = Faults(slow_rate=1.0, slow_seconds=1.0)  # timeouts
        wait_for(lambda: seen("timeout"), timeout=30)  # the backoff decides when the next call comes
        mock_server.stop()  # refused connections
        wait_for(lambda: seen("connection_error"), timeout=40)
        # The lag grows while the provider cannot answer (waited on, not sampled once: a
        # slow machine may reach this line before the oldest due message is 3 s late).
        wait_for(lambda: sample(exporter, "viber_poll_lag_seconds", provider="bsg") > 3, timeout=30)
        outage_calls = calls(exporter, "bsg") - before
        outage_pauses = health.pauses - pauses
        outage_seconds = time.monotonic() - started
        for outcome in ("server_error", "timeout", "connection_error"):
            assert sample(exporter, "viber_provider_requests_total", provider="bsg", outcome=outcome) >= 1, outcome
        # 20 messages due every 200 ms would be ~100 calls per second without backoff;
        # with it, at most the calls in flight (`concurrency`) per backoff step, however
        # long the outage took on this machine: a bound on steps, not on seconds.
        concurrency = exporter.instances["bsg"].config.concurrency
        assert outage_calls <= concurrency * (outage_pauses + 1), (outage_calls, outage_pauses, outage_seconds)
        # Recovery, on the same port; every message settles, none lost.
        mock_server = BackgroundServer(mock, "127.0.0.1", port)
        mock_server.start()
        mock.faults = Faults()
        recovered = time.monotonic()
        for plan in plans:
            plan.read_at = plan.delivered_at = clock.time()
        wait_for(lambda: sample(exporter, "viber_provider_up", provider="bsg") == 1, timeout=70)
        wait_for(lambda: exporter.store.counts()[1].get("bsg", 0) == 0, timeout=30)
        drained = time.monotonic() - recovered
        assert sample(exporter, "viber_poll_lag_seconds", provider="bsg") == 0
        assert sample(exporter, "viber_message_status_transitions_total", provider="bsg", status="read") == 20
        print(f"outage of {outage_seconds:.1f}s: {outage_calls:.0f} calls; drained {drained:.1f}s after recovery")
    finally:
        exporter.stop()
        mock_server.stop()


def test_a_rate_limiting_provider_is_not_hammered(host, tmp_path):
    """In virtual time, so the pace is measured in the provider's seconds, not the machine's."""
    run = VirtualRun(host, tmp_path / "s.db", mix=QUICK, seed=2, polling={"tick": "1s", "schedule": ["200ms"]},
                     bsg={"rate_limit": 1000, "concurrency": 4})
    run.set_faults(Faults(rate_limit=5, retry_after=1))
    try:
        run.send("bsg", count=100, fate="pending")
        run.run(20, tick=1.0)  # the pace adapts to the provider's limit
        start = run.clock.time()
        run.run(20, tick=1.0)
        window = [c for c in list(run.mock.calls) if c[1] == "bsg" and c[0] >= start]
        rate = len(window) / 20.0
        # 429s come in bursts: the calls already in flight (at most `concurrency`) when
        # the first came back, all at one instant; then the instance backs off. How many
        # of the 4 were in flight is up to the threads (one run in a few dozen met 11
        # 429s in 3 bursts), so the bound is on bursts and their size, with room.
        bursts = Counter(c[0] for c in window if c[2] == 429)
        print(f"rate-limited provider: {rate:.1f} calls/s, 429 bursts in 20 s: {sorted(bursts.values())}")
        # Not hammered (at most the limit, and a second's slack) and not collapsed to the
        # floor (MIN_RATE, 0.2/s). Where inside that the pace settles depends on how the
        # threads are scheduled even in virtual time (1.9/s seen on a loaded machine):
        # bench/, not a test, measures it.
        assert 1 <= rate <= 5 + 1, f"{rate:.1f} calls/s against a 5/s limit"
        assert max(bursts.values(), default=0) <= 4, "only calls already in flight meet a 429"
        assert len(bursts) <= 8 and sum(bursts.values()) <= 16, (
            f"429s in 20 s: {sorted(bursts.values())}: the pace settled around the limit")
        assert run.value("viber_provider_requests_total", provider="bsg", outcome="rate_limited") >= 1
    finally:
        run.close()


def silent_server() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.listen(50)  # accepts into the backlog, never answers
    return sock


@pytest.mark.parametrize("kind", ["unresolvable", "tls_error", "never_answers"])
def test_odd_networks_are_outcomes_not_crashes(host, tmp_path, kind):
    silent = silent_server()
    plain = MockProviders(QUICK)
    plain_server = BackgroundServer(plain, "127.0.0.1", 0)
    plain_server.start()
    base_url, outcome = {
        "unresolvable": ("http://viber-exporter-test.invalid", "connection_error"),
        "tls_error": (plain_server.url.replace("http://", "https://"), "connection_error"),
        "never_answers": (f"http://127.0.0.1:{silent.getsockname()[1]}", "timeout"),
    }[kind]
    exporter = running(host, mock_config(base_url, tmp_path / "s.db", timeout="300ms"))
    try:
        exporter.register([Registration("bsg", "12345")])
        wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="bsg", outcome=outcome) >= 1, timeout=15)
        first = calls(exporter, "bsg")
        wait_for(lambda: calls(exporter, "bsg") > first, timeout=15)  # still ticking: not stuck
        assert exporter.poller.running and exporter.store.get("bsg", "12345").watched
    finally:
        exporter.stop()
        plain_server.stop()
        silent.close()


def test_token_expiry_storm(host, tmp_path):
    """Tokens that live one (virtual) second, under continuous polling: no auth_error."""
    run = VirtualRun(host, tmp_path / "s.db", mix=QUICK, seed=4, polling={"tick": "1s", "schedule": ["200ms"]},
                     routee={"rate_limit": 20, "concurrency": 1})
    run.set_faults(Faults(token_lifetime=1))
    try:
        run.send("routee", count=30, fate="pending")
        run.run(10, tick=1.0)
        assert len(run.mock.tokens) >= 5, "tokens expired and were replaced"
        assert run.value("viber_provider_requests_total", provider="routee", outcome="ok") >= 100
        assert run.value("viber_provider_requests_total", provider="routee", outcome="auth_error") == 0
        assert run.exporter.instances["routee"].health.up
    finally:
        run.close()

"""A watch ends only on an answer: the final look, through the real poller and the mock
providers over real HTTP, in virtual time (issue "Truth under faults")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.mock import Faults
from viber_exporter.testing.simulation import Mix
from viber_exporter.testing.virtualtime import VirtualRun

POLLING = {"tick": "5s", "schedule": ["5s", "10s", "20s"], "read_window": "60s", "max_age": "120s",
           "not_found_grace": "60s", "final_look_grace": "1h"}


@pytest.fixture
def run(builtin_host: PluginHost, tmp_path: Path) -> Iterator[VirtualRun]:
    virtual = VirtualRun(builtin_host, tmp_path / "state.db", mix=Mix(visible_after=0.0), seed=3,
                         polling=POLLING, routee={"concurrency": 1}, bsg={"concurrency": 1})
    yield virtual
    virtual.close()


def transitions(run: VirtualRun, provider: str, status: str) -> float:
    return run.value("viber_message_status_transitions_total", provider=provider, status=status)


@pytest.mark.parametrize("provider", ["routee", "bsg"])
def test_a_read_inside_the_window_survives_an_outage_longer_than_the_window(run, provider):
    [plan] = run.send(provider, fate="read")
    plan.delivered_at = plan.created + 2
    plan.read_at = plan.created + 55  # inside the 60 s read window
    run.run(20, tick=5)
    assert run.exporter.store.get(provider, plan.id).status is Status.DELIVERED
    run.set_faults(Faults(outage=True))
    run.run(200, tick=5)  # the window (until created + 62) closes during the outage
    state = run.exporter.store.get(provider, plan.id)
    assert state.watched and state.status is Status.DELIVERED, "no answer, so the watch goes on"
    assert transitions(run, provider, "read") == 0
    run.set_faults(Faults())
    assert run.run_until_settled(tick=5, limit=300)
    assert transitions(run, provider, "read") == 1, "the final look after recovery saw the read"
    assert run.value("viber_message_read_latency_seconds_count", provider=provider) == 1
    assert run.value("viber_message_watch_expired_total", provider=provider) == 0


@pytest.mark.parametrize("provider", ["routee", "bsg"])
def test_a_final_status_survives_an_outage_longer_than_max_age(run, provider):
    [failed, pending] = run.send(provider, fate="failed") + run.send(provider, fate="pending")
    failed.final_at = failed.created + 100  # before max_age (120 s), during the outage
    run.run(10, tick=5)
    run.set_faults(Faults(outage=True))
    run.run(400, tick=5)
    assert run.exporter.store.get(provider, failed.id).watched, "max_age passed without an answer"
    assert run.value("viber_message_watch_expired_total", provider=provider) == 0
    run.set_faults(Faults())
    assert run.run_until_settled(tick=5, limit=300)
    assert transitions(run, provider, "failed") == 1
    assert run.exporter.store.get(provider, failed.id).status is Status.FAILED
    assert run.value("viber_message_watch_expired_total", provider=provider) == 1, "only the one that never settles"
    assert run.exporter.store.get(provider, pending.id).status is Status.PENDING


def test_a_429_storm_and_garbage_at_the_window_end_lose_nothing(run):
    plans = run.send("bsg", count=4, fate="read") + run.send("routee", count=4, fate="read")
    for plan in plans:
        plan.delivered_at, plan.read_at = plan.created + 1, plan.created + 58
    run.run(50, tick=5)
    run.set_faults(Faults(rate_limit=0.2, retry_after=30, malformed_rate=0.5))
    run.run(150, tick=5)
    run.set_faults(Faults())
    assert run.run_until_settled(tick=5, limit=600)
    for provider in ("bsg", "routee"):
        assert transitions(run, provider, "read") == 4


def test_no_answer_within_final_look_grace_ends_the_watch_with_its_reason(run, caplog):
    [delivered] = run.send("bsg", fate="delivered")
    [pending] = run.send("bsg", fate="pending")
    delivered.delivered_at = delivered.created + 1
    run.run(20, tick=5)
    run.set_faults(Faults(outage=True))
    with caplog.at_level(logging.WARNING, logger="viber_exporter.poller"):
        run.run(3600 + 60 + 30, tick=30)  # past the read window's end + final_look_grace
        assert not run.exporter.store.get("bsg", delivered.id).watched
        assert run.exporter.store.get("bsg", pending.id).watched, "its max_age (120 s) + 1 h is later"
        run.run(120, tick=30)
    for plan, status in ((delivered, Status.DELIVERED), (pending, Status.PENDING)):
        state = run.exporter.store.get("bsg", plan.id)
        assert not state.watched and state.status is status
        assert "final_look_grace" in state.last_error and "server_error" in state.last_error
    assert run.value("viber_message_watch_expired_total", provider="bsg") == 1, "the delivered one just settles"
    assert transitions(run, "bsg", "read") == 0
    assert any("ended without a final answer" in r.getMessage() for r in caplog.records)

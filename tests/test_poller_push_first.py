"""Push-first: pushed reports settle messages, polls are only the safety net, and the
final look still happens. The real poller polls the mock Routee over HTTP in virtual
time; reports arrive through the exporter's callback handling (the plugin's parser)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.config.load import parse_config
from viber_exporter.errors import ConfigError
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.mock import exporter_config
from viber_exporter.testing.simulation import Mix, Plan
from viber_exporter.testing.virtualtime import VirtualRun

TOKEN = "push-first-callback-token"
POLLING = {"tick": "5s", "schedule": ["5s"], "push_schedule": ["30s", "2m", "10m"], "read_window": "1h",
           "max_age": "2h", "final_look_grace": "1h"}


@pytest.fixture
def run(builtin_host: PluginHost, tmp_path: Path) -> Iterator[VirtualRun]:
    virtual = VirtualRun(builtin_host, tmp_path / "state.db", mix=Mix(visible_after=0.0), seed=11, polling=POLLING,
                         routee={"push_first": True, "callback_token": TOKEN, "concurrency": 1})
    yield virtual
    virtual.close()


def push(run: VirtualRun, plan: Plan, at: float) -> None:
    """The mock pushes this message's status as it is at ``at`` (the clock moves there)."""
    run.clock.advance_to(at - run.clock.time() + run.clock.monotonic())
    body = json.dumps(run.mock.routee_callback(plan, at)).encode()
    run.exporter.receive_callback("routee", CallbackRequest.of(body, query={"token": TOKEN}))


def polls(run: VirtualRun, plan: Plan) -> int:
    return run.exporter.store.get("routee", plan.id).polls


def status(run: VirtualRun, plan: Plan) -> Status:
    return run.exporter.store.get("routee", plan.id).status


def counted(run: VirtualRun, name: str) -> float:
    return run.value("viber_message_status_transitions_total", provider="routee", status=name)


def test_pushes_settle_messages_and_polls_catch_the_lost_ones(run):
    start = run.clock.time()
    read, unread, failed, read_lost, delivered_lost = (run.send("routee", fate=f)[0] for f in
                                                        ("read", "delivered", "failed", "read", "delivered"))
    for plan in (read, unread, read_lost, delivered_lost):
        plan.delivered_at = start + 2
    read.read_at, read_lost.read_at = start + 600, start + 900
    failed.final_at = start + 3
    push(run, read, start + 2)
    push(run, unread, start + 2)
    push(run, read_lost, start + 2)  # its read report will be lost
    push(run, failed, start + 3)
    # delivered_lost: its delivered report is lost; the safety net polls it at 30 s
    run.run(40, tick=5)
    assert status(run, failed) is Status.FAILED and polls(run, failed) == 0, "settled by its push alone"
    assert status(run, delivered_lost) is Status.DELIVERED and polls(run, delivered_lost) == 1
    for plan in (read, unread, read_lost):
        assert polls(run, plan) == 0, "a pushed delivered waits for its read report"
    push(run, read, start + 600)
    assert status(run, read) is Status.READ and not run.exporter.store.get("routee", read.id).watched
    # The read window (1 h after delivery) ends: one poll each, the final look.
    run.run(3700 - (run.clock.time() - start), tick=5)
    assert status(run, read_lost) is Status.READ, "the final look found the read whose report was lost"
    assert polls(run, read_lost) == 1 and polls(run, unread) == 1 and polls(run, delivered_lost) == 2
    assert polls(run, read) == 0
    assert run.exporter.store.total_watched() == 0
    assert counted(run, "delivered") == 4 and counted(run, "read") == 2 and counted(run, "failed") == 1
    truth = run.truth()["routee"]["transitions"]
    assert {s: counted(run, s) for s in ("delivered", "read", "failed")} == {
        s: truth.get(s, 0) for s in ("delivered", "read", "failed")}


def test_a_message_whose_reports_never_come_is_polled_on_the_push_schedule(run):
    [plan] = run.send("routee", fate="pending")
    start = plan.created
    polled_at = []
    for _ in range(int(900 / 5)):
        before = polls(run, plan)
        run.tick(5)
        if polls(run, plan) > before:
            polled_at.append(run.clock.time() - 5 - start)
    # 30 s, then 2 min, then 10 min after each answer, on the 5 s tick
    assert [round(t / 5) * 5 for t in polled_at] == [30, 150, 750]


def test_push_first_needs_callbacks(builtin_host, tmp_path):
    text = exporter_config("http://127.0.0.1:1", tmp_path / "s.db", routee={"push_first": True})
    with pytest.raises(ConfigError) as info:
        parse_config(text, builtin_host.provider_types(), environ={})
    assert dict(info.value.problems)["providers.routee.push_first"].startswith("needs callback_token")

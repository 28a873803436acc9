"""When more messages are due than the rate limit allows, the oldest due poll goes
first (earliest ``next_poll``), so a backlog drains and nobody starves."""

from __future__ import annotations

from pathlib import Path

from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.simulation import Mix
from viber_exporter.testing.virtualtime import VirtualRun


def test_a_backlog_drains_first_due_first_served(builtin_host: PluginHost, tmp_path: Path):
    run = VirtualRun(builtin_host, tmp_path / "state.db", mix=Mix(visible_after=0.0), seed=5,
                     polling={"tick": "1s", "schedule": ["5s", "1m", "10m"], "max_age": "1h"},
                     bsg={"rate_limit": 5, "concurrency": 1})
    polls: list[tuple[str, float, float]] = []  # (id, due at, polled at)
    provider = run.exporter.instances["bsg"].provider
    fetch = provider.fetch

    def recording_fetch(message_id: str):
        due = run.exporter.store.get("bsg", message_id).next_poll
        polls.append((message_id, due, run.clock.time()))
        return fetch(message_id)

    provider.fetch = recording_fetch  # type: ignore[method-assign]
    try:
        run.send("bsg", count=150, fate="pending")  # 30 s of calls at 5/s, all due at once
        for _ in range(120):  # then one more message a second, polls again after 1 and 10 minutes
            run.send("bsg", fate="pending")
            run.tick(1.0)
        lag = run.exporter.instances["bsg"].health.lag(run.clock.time())
    finally:
        run.close()

    assert len(polls) > 400
    assert lag == 0, "the backlog drained: nothing is overdue at the end"
    for index, (message_id, due, polled) in enumerate(polls):
        # The backlog when this poll fell due: polls due by then that had not happened yet.
        backlog = sum(1 for _, d, p in polls if d <= due and p >= due)
        waited = sum(1 for _, _, p in polls[:index] if p >= due)
        assert waited <= backlog, (message_id, waited, backlog)
        assert polled - due <= backlog / 5 + 1.5, "it waited no longer than that backlog takes at 5/s"

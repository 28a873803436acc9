"""``exporter/errorlog.py``: poll errors in the log without flooding it."""

from __future__ import annotations

import logging

from viber_exporter.clock import ManualClock
from viber_exporter.engine import Registration
from viber_exporter.errorlog import ErrorLog

from .conftest import sample


def test_error_log_is_rate_limited_with_a_count(caplog):
    clock = ManualClock()
    errors = ErrorLog("bsg", interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="viber_exporter.poller"):
        for second in range(30):
            clock.advance_to(float(second))
            errors.error("server_error", f"HTTP 500 #{second}")
        errors.flush()
        assert [r.getMessage() for r in caplog.records] == ["provider bsg: poll failed: server_error: HTTP 500 #0"]
        clock.advance_to(61.0)
        errors.flush()
        errors.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == "provider bsg: 29 more poll error(s) in the last 60s (last: server_error: HTTP 500 #29)"
    assert len(messages) == 2


def test_an_outage_does_not_flood_the_log(fake_server, make_config, virtual_exporter, caplog):
    """Ticked by the test: every call of a tick, and its log line, is done when tick() returns."""
    _, api = fake_server
    api.outage = (500, "{}", {})
    exporter, _, tick = virtual_exporter(make_config(provider={"concurrency": 4}))
    exporter.register([Registration("fake", f"o{i}") for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="viber_exporter.poller"):
        for _ in range(100):  # 10 virtual seconds
            tick(0.1)
    failures = sample(exporter, "viber_provider_requests_total", provider="fake", outcome="server_error")
    lines = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert failures >= 3 and len(lines) == 1, (failures, [r.getMessage() for r in lines])
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 1, "the up→down change is logged once"

"""Heron (a feed): the contract kit, and a real exporter draining the mock over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer
from viber_exporter_heron import HeronProvider
from viber_exporter_heron_mock import API_KEY, HeronMock, report
from werkzeug import Request

from viber_exporter import ProviderContract, Status
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer


class TestHeronContract(ProviderContract):
    provider_class = HeronProvider
    valid_ids = ("hm-1", "hm-2", "hm-3")
    invalid_settings = ({"interval": "often", "base_url": "nope"}, frozenset({"interval", "base_url"}))

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"api_key": API_KEY, "base_url": base_url, "interval": "1s"}

    def respond_feed(self, httpserver: HTTPServer, statuses: Mapping[str, str]) -> None:
        mock = HeronMock()
        mock.add(report(message_id, raw, done_at="2026-11-30T10:00:05Z") for message_id, raw in statuses.items())
        httpserver.expect_request("/v1/reports").respond_with_handler(lambda request: mock.answer(request))


@pytest.fixture
def heron(tmp_path) -> Iterator[tuple[Exporter, HeronMock]]:
    mock = HeronMock()
    server = BackgroundServer(mock, "127.0.0.1", 0)
    server.start()
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "heron"})
    config = parse_config(f"""
[exporter]
state_path = {json.dumps(str(tmp_path / "s.db"))}
[providers.heron]
plugin = "heron"
api_key = "{API_KEY}"
base_url = "{server.url}"
interval = "100ms"
""", host.provider_types(), {})
    exporter = Exporter(config, host, registry=CollectorRegistry())
    exporter.start()
    yield exporter, mock
    exporter.stop()
    server.stop()


def value(exporter: Exporter, name: str, **labels: str) -> float:
    return exporter.registry.get_sample_value(name, labels) or 0.0


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_the_feed_is_drained_each_report_counts_once_and_the_balance_shows(heron):
    exporter, mock = heron
    exporter.register([Registration("heron", "hm-1"), Registration("heron", "hm-2")])
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mock.add([report("hm-1", "DELIVERED", done_at=now), report("hm-2", "REJECTED", error="EC_ABSENT_SUBSCRIBER")])
    wait(lambda: value(exporter, "viber_message_status_transitions_total", provider="heron", status="failed") == 1)
    mock.add([report("hm-1", "SEEN", done_at=now), report("hm-9", "DELIVERED", done_at=now)])
    wait(lambda: exporter.store.get("heron", "hm-1").status is Status.READ)
    wait(lambda: exporter.store.get("heron", "hm-9") is not None)
    calls = mock.calls
    wait(lambda: mock.calls >= calls + 3)  # more drains, nothing new
    assert value(exporter, "viber_message_status_transitions_total", provider="heron", status="delivered") == 2
    assert value(exporter, "viber_message_status_transitions_total", provider="heron", status="read") == 1
    assert value(exporter, "viber_message_failures_total", provider="heron", reason="ec_absent_subscriber") == 1
    assert abs(value(exporter, "viber_message_cost_total", provider="heron", currency="EUR", channel="viber") - 0.036) < 1e-9
    wait(lambda: value(exporter, "viber_provider_balance", provider="heron", currency="EUR") == 41.5)
    assert value(exporter, "viber_provider_up", provider="heron") == 1


def test_a_broken_feed_answer_is_an_outcome_not_a_crash(heron):
    exporter, mock = heron
    mock.add([{"messageId": "hm-3", "status": "garbage"}])
    wait(lambda: value(exporter, "viber_provider_requests_total", provider="heron", outcome="invalid_response") >= 1)
    assert exporter.poller.running


def test_the_mock_refuses_a_wrong_key():
    mock = HeronMock()
    request = Request.from_values("/v1/reports", headers={"Authorization": "App nope"})
    assert mock.answer(request).status_code == 401

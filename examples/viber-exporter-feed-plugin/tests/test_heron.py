"""Heron (a feed): the contract kit, and a real exporter draining the mock over HTTP
(viber_exporter.testing: nothing private)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from viber_exporter_heron import HeronProvider
from viber_exporter_heron_mock import API_KEY, HeronMock, report
from werkzeug import Request

from viber_exporter import ProviderContract
from viber_exporter.testing import RunningExporter, run_exporter, serve


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
def heron(tmp_path) -> Iterator[tuple[RunningExporter, HeronMock]]:
    mock = HeronMock()
    with serve(mock) as url, run_exporter(HeronProvider, tmp_path, f"""
[providers.heron]
plugin = "heron"
api_key = "{API_KEY}"
base_url = "{url}"
interval = "100ms"
""") as exporter:
        yield exporter, mock


def test_the_feed_is_drained_each_report_counts_once_and_the_balance_shows(heron):
    exporter, mock = heron
    exporter.register("heron", "hm-1", "hm-2")
    mock.add([report("hm-1", "DELIVERED"), report("hm-2", "REJECTED", error="EC_ABSENT_SUBSCRIBER")])
    exporter.wait_for(lambda: exporter.metric(
        "viber_message_status_transitions_total", provider="heron", status="failed") == 1)
    mock.add([report("hm-1", "SEEN"), report("hm-9", "DELIVERED")])
    exporter.wait_for(lambda: (exporter.message("heron", "hm-1") or {}).get("status") == "read")
    exporter.wait_for(lambda: exporter.message("heron", "hm-9") is not None)
    calls = mock.calls
    exporter.wait_for(lambda: mock.calls >= calls + 3)  # more drains, nothing new
    assert exporter.metric("viber_message_status_transitions_total", provider="heron", status="delivered") == 2
    assert exporter.metric("viber_message_status_transitions_total", provider="heron", status="read") == 1
    assert exporter.metric("viber_message_failures_total", provider="heron", reason="ec_absent_subscriber") == 1
    cost = exporter.metric("viber_message_cost_total", provider="heron", currency="EUR", channel="viber")
    assert abs(cost - 0.036) < 1e-9
    exporter.wait_for(lambda: exporter.metric("viber_provider_balance", provider="heron", currency="EUR") == 41.5)
    assert exporter.metric("viber_provider_up", provider="heron") == 1


def test_an_unreadable_report_costs_only_itself(heron):
    exporter, mock = heron
    mock.add([{"messageId": "hm-3", "status": "garbage"}, report("hm-4", "DELIVERED")])
    exporter.wait_for(lambda: exporter.metric(
        "viber_provider_answer_problems_total", provider="heron", problem="unreadable_report") == 1)
    exporter.wait_for(lambda: (exporter.message("heron", "hm-4") or {}).get("status") == "delivered")
    assert exporter.metric("viber_provider_requests_total", provider="heron", outcome="invalid_response") == 0
    assert exporter.provider("heron")["recent_errors"][0]["message_id"] == "(feed)"


def test_the_mock_refuses_a_wrong_key():
    mock = HeronMock()
    request = Request.from_values("/v1/reports", headers={"Authorization": "App nope"})
    assert mock.answer(request).status_code == 401

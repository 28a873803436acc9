"""Parrot plugin tests: the viber-exporter contract kit, and a real exporter polling a
Parrot mock over HTTP (viber_exporter.testing: nothing private)."""

from __future__ import annotations

from typing import Any

from pytest_httpserver import HTTPServer
from viber_exporter_example import ParrotProvider
from werkzeug import Response

from viber_exporter.testing import run_exporter
from viber_exporter.testing.contract import ProviderContract

MESSAGE = "pm_0123456789abcdef"


def parrot_message(message_id: str, state: str) -> dict[str, Any]:
    return {"id": message_id, "state": state, "failure": {"code": "NOT_ON_VIBER"},
            "sent_at": "2026-11-20T10:00:00Z", "state_changed_at": "2026-11-20T10:00:20Z",
            "charge": {"amount": "0.015", "currency": "EUR"}}


class TestParrotContract(ProviderContract):
    provider_class = ParrotProvider
    valid_ids = (MESSAGE,)
    invalid_ids = ("", "pm_123", "0123456789abcdef", "pm_0123456789ABCDEF")
    invalid_settings = ({"base_url": "not a url"}, frozenset({"base_url"}))

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"token": "secret-token", "base_url": base_url}

    def respond_status(self, httpserver: HTTPServer, message_id: str, raw_status: str) -> None:
        httpserver.expect_request(f"/v2/messages/{message_id}", headers={"Authorization": "Token secret-token"}) \
            .respond_with_json(parrot_message(message_id, raw_status))

    def respond_error(self, httpserver: HTTPServer, message_id: str, kind: str) -> None:
        answers = {
            "not_found": Response('{"error": "unknown_message"}', 404),
            "unauthorized": Response('{"error": "bad_token"}', 401),
            "rate_limited": Response('{"error": "slow_down"}', 429, {"Retry-After": "5"}),
            "server_error": Response('{"error": "oops"}', 503),
            "malformed": Response("<html>maintenance</html>", 200),
        }
        httpserver.expect_request(f"/v2/messages/{message_id}").respond_with_response(answers[kind])


def test_a_failure_counts_under_its_code_with_its_charge(httpserver: HTTPServer, tmp_path) -> None:
    TestParrotContract().respond_status(httpserver, MESSAGE, "failed")
    config = f"""
[providers.parrot]
plugin = "parrot"
token = "secret-token"
base_url = "{httpserver.url_for("").rstrip("/")}"
"""
    with run_exporter(ParrotProvider, tmp_path, config) as exporter:
        exporter.register("parrot", MESSAGE)
        exporter.wait_for(lambda: (exporter.message("parrot", MESSAGE) or {}).get("status") == "failed")
        assert exporter.message("parrot", MESSAGE)["reason"] == "not_on_viber", "the code, in snake_case"
        assert exporter.metric("viber_message_failures_total", provider="parrot", reason="not_on_viber") == 1
        assert exporter.metric("viber_message_cost_total", provider="parrot", currency="EUR", channel="viber") == 0.015

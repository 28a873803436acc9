"""Kestrel (push-only): the contract kit, and a real exporter fed by a mock sender
(viber_exporter.testing: nothing private)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from viber_exporter_kestrel import KestrelProvider, signature
from viber_exporter_kestrel_mock import KestrelSender

from viber_exporter import CallbackRequest, ProviderContract
from viber_exporter.testing import RunningExporter, run_exporter

SECRET = "kestrel-webhook-secret-42"
MESSAGE = "k_0123456789ab"


class TestKestrelContract(ProviderContract):
    provider_class = KestrelProvider
    valid_ids = (MESSAGE,)
    invalid_ids = ("", "k_1", "0123456789ab", "k_0123456789ab!")
    invalid_settings = ({"webhook_secret": 42}, frozenset({"webhook_secret"}))
    callback_token = None  # Kestrel signs; there is no callback_token

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"webhook_secret": SECRET}

    def callback_request(self, message_id: str, raw_status: str) -> CallbackRequest:
        body = json.dumps({"message_id": message_id, "event": raw_status,
                           "occurred_at": "2026-11-30T10:00:05Z", "cost": {"amount": "0.011", "currency": "USD"}}).encode()
        headers = KestrelSender("http://unused", SECRET).signed_headers(body)
        return CallbackRequest.of(body, headers=headers)

    def unauthenticated_callback(self, message_id: str, raw_status: str) -> CallbackRequest:
        signed = self.callback_request(message_id, raw_status)
        tampered = signed.body.replace(b'"event"', b'"event" ')  # a changed body breaks the signature
        return CallbackRequest.of(tampered, headers=dict(signed.headers))


def test_old_signatures_are_refused_as_replays():
    provider = TestKestrelContract().provider("http://unused")
    body = b'{"message_id": "k_0123456789ab", "event": "read"}'
    old = str(int(time.time()) - 3600)
    request = CallbackRequest.of(body, headers={"X-Kestrel-Timestamp": old,
                                                "X-Kestrel-Signature": signature(SECRET, old, body)})
    assert not provider.authenticate_callback(request, None)


@pytest.fixture
def running(tmp_path) -> Iterator[tuple[RunningExporter, str]]:
    config = f"""
[providers.kestrel]
plugin = "kestrel"
webhook_secret = "{SECRET}"
"""
    with run_exporter(KestrelProvider, tmp_path, config) as exporter:
        yield exporter, f"{exporter.url}/api/v1/callbacks/kestrel"


def test_signed_webhooks_drive_the_counts_and_nothing_is_ever_polled(running):
    exporter, webhook = running
    exporter.register("kestrel", MESSAGE)
    sender = KestrelSender(webhook, SECRET)
    sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30))
    assert sender.send(MESSAGE, "sent", sent_at=sent).status_code == 202
    answer = sender.send(MESSAGE, "delivered", sent_at=sent, cost={"amount": "0.011", "currency": "USD"})
    assert (answer.status_code, answer.content) == (202, b""), "Kestrel's expected answer"
    assert sender.send(MESSAGE, "read", sent_at=sent).status_code == 202
    assert sender.send("k_otherotherother", "failed", error={"code": "NOT_VIBER_USER"}).status_code == 202
    assert exporter.message("kestrel", MESSAGE)["status"] == "read"
    for status, count in (("pending", 2), ("delivered", 1), ("read", 1), ("failed", 1)):
        assert exporter.metric("viber_message_status_transitions_total", provider="kestrel", status=status) == count
    assert exporter.metric("viber_message_failures_total", provider="kestrel", reason="not_viber_user") == 1
    assert exporter.metric("viber_message_cost_total", provider="kestrel", currency="USD", channel="viber") == 0.011
    assert 25 <= exporter.metric("viber_message_read_latency_seconds_sum", provider="kestrel") <= 40
    assert exporter.metric("viber_provider_requests_total", provider="kestrel", outcome="ok") == 0, "never polled"
    # Forged and replayed webhooks are refused and change nothing.
    forged = sender.session.post(webhook, data=b'{"message_id": "k_0123456789ab", "event": "failed"}',
                                 headers={"X-Kestrel-Timestamp": str(int(time.time())), "X-Kestrel-Signature": "v1=00"},
                                 timeout=5)
    assert forged.status_code == 401
    assert sender.send(MESSAGE, "failed", timestamp=time.time() - 3600).status_code == 401
    assert exporter.message("kestrel", MESSAGE)["status"] == "read"
    assert exporter.metric("viber_callbacks_total", provider="kestrel", outcome="rejected") == 2

"""A mock Kestrel: it signs status changes and POSTs them to an exporter's webhook,
as the real service would (tests and demos of the push-only example)."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from viber_exporter_kestrel import signature


class KestrelSender:
    def __init__(self, webhook_url: str, secret: str) -> None:
        self.webhook_url = webhook_url
        self.secret = secret
        self.session = requests.Session()

    def signed_headers(self, body: bytes, timestamp: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if timestamp is None else timestamp))
        return {
            "Content-Type": "application/json",
            "X-Kestrel-Timestamp": stamp,
            "X-Kestrel-Signature": signature(self.secret, stamp, body),
        }

    def report(self, message_id: str, event: str, **extra: Any) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"message_id": message_id, "event": event, "occurred_at": now, **extra}

    def send(self, message_id: str, event: str, *, timestamp: float | None = None,
             **extra: Any) -> requests.Response:
        body = json.dumps(self.report(message_id, event, **extra)).encode()
        return self.session.post(self.webhook_url, data=body,
                                 headers=self.signed_headers(body, timestamp), timeout=10)

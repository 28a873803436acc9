"""viber-exporter plugin for Kestrel, a fictional push-only CPaaS provider.

Kestrel has no status lookup. For every status change it POSTs JSON to the webhook
URL::

    {"message_id": "k_…", "event": "sent|delivered|read|failed|expired",
     "occurred_at": "2026-11-30T10:00:05Z", "sent_at": "…",
     "error": {"code": "NOT_VIBER_USER"}, "cost": {"amount": "0.011", "currency": "USD"}}

signed with the account's webhook secret: ``X-Kestrel-Timestamp: <unix seconds>`` and
``X-Kestrel-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``. Kestrel
expects ``202 Accepted`` with an empty body and retries anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping

from viber_exporter import (
    CallbackReply,
    CallbackRequest,
    InvalidCallback,
    Observation,
    Provider,
    Report,
    Secret,
    Setting,
    Status,
    StatusMap,
    field,
    hookimpl,
    iso_time,
    price,
)

MESSAGE_ID = re.compile(r"k_[0-9A-Za-z]{8,32}")
MAX_AGE = 300.0  # seconds: older signed reports are replays

STATUS_MAP = StatusMap({
    "sent": Status.PENDING, "delivered": Status.DELIVERED, "read": Status.READ,
    "failed": Status.FAILED, "expired": Status.EXPIRED,
})


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Kestrel's signature of a webhook."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


class KestrelProvider(Provider):
    """No lookup API (no fetch): statuses come only from webhooks (parse_callback)."""

    plugin_name = "kestrel"
    status_map = STATUS_MAP
    settings_spec = (Setting("webhook_secret", "secret", "Kestrel webhook signing secret."),)

    #: the wall clock the signature's age is checked against (tests may replace it)
    now: Callable[[], float] = staticmethod(time.time)

    def check_id(self, message_id: str) -> str | None:
        if not MESSAGE_ID.fullmatch(message_id):
            return "a Kestrel message id is k_ and 8 to 32 letters or digits"
        return None

    def authenticate_callback(self, request: CallbackRequest, token: Secret | None) -> bool:
        stamp = request.headers.get("X-Kestrel-Timestamp", "")
        given = request.headers.get("X-Kestrel-Signature", "")
        if not stamp.isdigit() or abs(self.now() - int(stamp)) > MAX_AGE:
            return False
        expected = signature(self.settings.webhook_secret.reveal(), stamp, request.body)
        return hmac.compare_digest(given.encode(), expected.encode())

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        data = request.json()
        if not isinstance(data, Mapping):
            raise InvalidCallback("the webhook body is not an object")
        message_id, event = data.get("message_id"), data.get("event")
        if not isinstance(message_id, str) or self.check_id(message_id):
            raise InvalidCallback("message_id is missing or not a Kestrel id")
        if not isinstance(event, str) or not event:
            raise InvalidCallback("event is missing")
        observation = Observation(
            status=STATUS_MAP.map(event),
            provider_status=event,
            reason=field(data, "error", "code") or event,
            at=iso_time(data.get("occurred_at"), "occurred_at"),
            sent_at=iso_time(data.get("sent_at"), "sent_at"),
            price=price(field(data, "cost", "amount"), "cost.amount"),
            currency=field(data, "cost", "currency"),
        )
        return CallbackReply([Report(message_id, observation)], status=202, body=b"")


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(KestrelProvider)

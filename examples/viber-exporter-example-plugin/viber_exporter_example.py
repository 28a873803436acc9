"""viber-exporter plugin for Parrot Messaging, a fictional CPaaS provider.

Parrot's API: ``GET {base_url}/v2/messages/{id}`` with ``Authorization: Token <token>``
answers ``{"id", "state", "failure": {"code"}, "sent_at", "state_changed_at",
"charge": {"amount", "currency"}}``; unknown ids give 404 ``{"error": "unknown_message"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from viber_exporter import (
    Observation,
    Provider,
    Setting,
    Status,
    StatusMap,
    field,
    hookimpl,
    invalid,
    iso_time,
    json_body,
    price,
    raise_for_status,
)

MESSAGE_ID = re.compile(r"pm_[0-9a-f]{16}")

# Compared case-insensitively by construction: "SEEN" and "seen" both map to read.
STATUS_MAP = StatusMap({
    "accepted": Status.PENDING, "sending": Status.PENDING, "delivered": Status.DELIVERED,
    "seen": Status.READ, "failed": Status.FAILED, "expired": Status.EXPIRED,
})


class ParrotProvider(Provider):
    plugin_name = "parrot"
    status_map = STATUS_MAP
    # Declared settings: check-config validates them (every problem with its key path),
    # `viber-exporter plugins --settings` lists them, and self.settings.token reads them.
    settings_spec = (
        Setting("token", "secret", "Parrot API token (or token_file)."),
        Setting("base_url", "url", "Parrot API base URL.", default="https://api.parrot.example"),
    )
    default_rate_limit = 5  # Parrot allows 5 calls per second per account

    def check_id(self, message_id: str) -> str | None:
        if not MESSAGE_ID.fullmatch(message_id):
            return "a Parrot message id is pm_ and 16 hex digits, e.g. pm_0123456789abcdef"
        return None

    def fetch(self, message_id: str) -> Observation:
        response = self.http.request(
            "GET",
            f"{self.settings.base_url}/v2/messages/{message_id}",
            headers={"Authorization": f"Token {self.settings.token.reveal()}"},
        )
        # A 404 is "no such message" only with Parrot's own error code; any other 404 is
        # a wrong base_url (client_error). 401/403 → auth_error, 429 → rate_limited, 5xx …
        raise_for_status(response, not_found=_unknown_message(response.content))
        return parse_message(json_body(response))  # not JSON → invalid_response


def _unknown_message(body: bytes) -> bool:
    try:
        return bool(json.loads(body).get("error") == "unknown_message")
    except (ValueError, AttributeError):
        return False


def parse_message(body: Any) -> Observation:
    """What Parrot said, as it said it: the core keeps the reason of a failure only,
    in snake_case, and takes ``at`` as the time of the status (plugin API 1.3)."""
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise invalid("answer has no state")
    raw = body["state"]
    code = field(body, "failure", "code")
    return Observation(
        status=STATUS_MAP.map(raw),
        provider_status=raw,
        reason=code if isinstance(code, str) else raw,
        at=iso_time(body.get("state_changed_at"), "state_changed_at"),
        sent_at=iso_time(body.get("sent_at"), "sent_at"),
        price=price(field(body, "charge", "amount"), "charge.amount"),
        currency=field(body, "charge", "currency"),
    )


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(ParrotProvider)

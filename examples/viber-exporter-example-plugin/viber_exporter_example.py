"""viber-exporter plugin for Parrot Messaging, a fictional CPaaS provider.

Parrot's API: ``GET {base_url}/v2/messages/{id}`` with ``Authorization: Token <token>``
answers ``{"id", "state", "failure": {"code"}, "sent_at", "state_changed_at",
"charge": {"amount", "currency"}}``; unknown ids give 404 ``{"error": "unknown_message"}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter import ConfigTable, Observation, Provider, Status, hookimpl, snake_case
from exporter.http import json_body, raise_for_status
from exporter.parsing import field, invalid, iso_time, price
from exporter.secrets import Secret

MESSAGE_ID = re.compile(r"pm_[0-9a-f]{16}")

STATUS_MAP = {
    "accepted": Status.PENDING,
    "sending": Status.PENDING,
    "delivered": Status.DELIVERED,
    "seen": Status.READ,
    "failed": Status.FAILED,
    "expired": Status.EXPIRED,
}


@dataclass(frozen=True)
class ParrotSettings:
    token: Secret
    base_url: str


class ParrotProvider(Provider):
    plugin_name = "parrot"
    status_map = STATUS_MAP
    settings: ParrotSettings

    @classmethod
    def parse_settings(cls, table: ConfigTable) -> ParrotSettings:
        # Read every key through the table: problems are collected with their key
        # paths, and keys nobody reads are reported as unknown.
        return ParrotSettings(
            token=table.secret("token") or Secret(""),
            base_url=table.url("base_url", "https://api.parrot.example"),
        )

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
        raise_for_status(response)  # 404 → not_found, 401/403 → auth_error, 429, 5xx …
        return parse_message(json_body(response))  # not JSON → invalid_response


def parse_message(body: Any) -> Observation:
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise invalid("answer has no state")
    raw = body["state"]
    status = STATUS_MAP.get(raw.lower(), Status.UNKNOWN)
    changed = iso_time(body.get("state_changed_at"), "state_changed_at")
    code = field(body, "failure", "code")
    return Observation(
        status=status,
        provider_status=raw,
        reason=snake_case(code if isinstance(code, str) else raw) if status.is_failure or status is Status.UNKNOWN else None,
        sent_at=iso_time(body.get("sent_at"), "sent_at"),
        delivered_at=changed if status is Status.DELIVERED else None,
        read_at=changed if status is Status.READ else None,
        price=price(field(body, "charge", "amount"), "charge.amount"),
        currency=field(body, "charge", "currency"),
    )


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(ParrotProvider)


"""What a registration is: a message to watch, or a campaign whose messages to watch.

A registration request's items are read here into one of two types, each checked for
its shape (:func:`parse_item`); whether a configured instance takes it (its ids, its
fields, the time bounds, the declared labels) is checked once, by the engine, for
items from the API and from Python alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .durations import parse_duration
from .errors import ViberExporterError

MAX_ITEMS = 10_000  # registrations per request, and reports per pushed request
ITEM_KEYS = frozenset({"provider", "id", "campaign", "sent_at", "fields", "ttl", "labels"})
MAX_FIELDS = 16
MAX_FIELD_LENGTH = 256
MAX_TTL = 30 * 86400.0  # a validity longer than a month is no deadline worth a poll
FUTURE_SLACK = 3600.0  # sent_at may be at most this far ahead of our clock


class RegistrationError(ViberExporterError):
    """A registration batch had invalid items; nothing was stored."""

    def __init__(self, details: list[tuple[int, str]]) -> None:
        self.details = details
        super().__init__(f"{len(details)} invalid item(s); nothing was stored")


@dataclass(frozen=True)
class MessageRegistration:
    """One message to watch, by the id its provider gave it."""

    provider: str
    id: str
    sent_at: float | None = None
    #: plugin-defined registration fields (e.g. BSG's ``reference``)
    fields: Mapping[str, str] = field(default_factory=dict)
    #: the message's validity in seconds from sending
    ttl: float | None = None
    #: declared message labels, as given
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CampaignRegistration:
    """A campaign whose messages to watch, found by listing it."""

    provider: str
    campaign: str
    sent_at: float | None = None
    #: its messages' validity in seconds from sending
    ttl: float | None = None
    #: declared message labels, as given: they apply to each of its messages
    labels: Mapping[str, str] | None = None


AnyRegistration = MessageRegistration | CampaignRegistration

#: the name a message registration had before campaigns were a type of their own
Registration = MessageRegistration


@dataclass(frozen=True)
class RegistrationResult:
    accepted: int
    duplicates: int


def parse_item(item: Any) -> AnyRegistration | str:
    """One item of a registration request as its type, or why its shape is wrong."""
    if not isinstance(item, dict):
        return "each message must be an object with provider and id"
    unknown = set(item) - ITEM_KEYS
    if unknown:
        allowed = ", ".join(sorted(ITEM_KEYS))
        return f"unknown field(s): {', '.join(sorted(unknown))} (allowed: {allowed})"
    provider = item.get("provider")
    if not isinstance(provider, str) or not provider:
        return "provider is required (a configured provider instance name)"
    sent_at = ttl = None
    try:
        if item.get("sent_at") is not None:
            sent_at = parse_sent_at(item["sent_at"])
        if item.get("ttl") is not None:
            ttl = parse_ttl(item["ttl"])
    except ValueError as e:
        return str(e)
    labels = item.get("labels")
    if "campaign" in item:
        campaign = item["campaign"]
        if "id" in item:
            return "give either id (one message) or campaign (all of a campaign's), not both"
        if not isinstance(campaign, str) or not campaign:
            return "campaign must be the provider's campaign id, as a string"
        if item.get("fields"):
            return "a campaign takes no fields"
        return CampaignRegistration(provider, campaign, sent_at, ttl, labels)
    message_id = item.get("id")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return 'id must be a string: give it in quotes, e.g. "12345"'
    if not isinstance(message_id, str) or not message_id:
        return "id is required (the provider's message id, as a string)"
    fields = item.get("fields") or {}
    if (
        not isinstance(fields, dict)
        or len(fields) > MAX_FIELDS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_FIELD_LENGTH
            for k, v in fields.items()
        )
    ):
        return f"fields must be an object of at most {MAX_FIELDS} string values"
    return MessageRegistration(provider, message_id, sent_at, fields, ttl, labels)


def parse_ttl(value: Any) -> float:
    """A registration's ``ttl``: a duration (``"24h"``) or seconds, positive, at most
    30 days."""
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ValueError(f"ttl {e}") from None
    if not 0 < seconds <= MAX_TTL:
        raise ValueError("ttl must be longer than 0 and at most 30 days")
    return seconds


def parse_sent_at(value: Any) -> float:
    """An RFC 3339 time with a zone, as epoch seconds (its range is checked when the
    registration is: :func:`sent_at_problem`)."""
    if not isinstance(value, str):
        raise ValueError('sent_at must be an RFC 3339 time string, e.g. "2026-11-23T10:00:00Z"')
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError('sent_at needs a zone ("Z" or an offset like "+02:00")')
        return parsed.timestamp()
    except ValueError as e:
        if "zone" in str(e):
            raise
        raise ValueError(f"sent_at is not an RFC 3339 time: {value[:40]!r}") from None
    except OverflowError:
        raise ValueError(f"sent_at is out of range: {value[:40]!r}") from None

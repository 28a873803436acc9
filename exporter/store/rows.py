"""A watched message's stored row (and a campaign's), and when a watch ends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from ..model import Status


class SentSource(IntEnum):
    """Where a message's sent time came from; a better source replaces a worse one."""

    REGISTERED = 0  # fallback: the time we were told about it
    PROVIDER = 1  # the provider's own send time
    GIVEN = 2  # `sent_at` given at registration


class Counted(IntFlag):
    """What has already been counted for a message (persisted: exactly-once across restarts)."""

    NONE = 0
    PENDING = 1
    DELIVERED = 2
    READ = 4
    FAILED = 8
    EXPIRED = 16
    UNKNOWN = 32
    WATCH_EXPIRED = 64
    SMS_FALLBACK = 128
    FALLBACK_OUTCOME = 256

    @classmethod
    def for_status(cls, status: Status) -> Counted:
        return cls[status.name]


@dataclass(slots=True)
class MessageState:
    """One row of the watched set. ``next_poll`` is None once the message is settled."""

    provider: str
    id: str
    registered_at: float
    sent_at: float
    sent_source: SentSource
    status: Status = Status.PENDING
    provider_status: str | None = None
    reason: str | None = None
    delivered_at: float | None = None
    read_at: float | None = None
    price: float | None = None
    currency: str | None = None
    sms_price: float | None = None
    cost_viber: float = 0.0
    cost_sms: float = 0.0
    counted: Counted = Counted.NONE
    country: str | None = None
    polls: int = 0
    errors: int = 0
    last_poll_at: float | None = None
    next_poll: float | None = None
    last_error: str | None = None
    settled_at: float | None = None
    #: plugin-defined registration fields, as a JSON object (None: none)
    extra: str | None = None
    #: the fallback leg's channel and normalised status (None: no leg sent)
    fallback_channel: str | None = None
    fallback_status: str | None = None
    #: the campaign it was found in (None: registered alone): polled with its campaign
    campaign: str | None = None
    #: its validity in seconds from ``sent_at``: the provider's, else the registration's
    #: (None: the instance's ``ttl`` setting, if any)
    ttl: float | None = None
    #: its message labels as registered, already bounded (a JSON object; None: none)
    labels: str | None = None

    @property
    def watched(self) -> bool:
        return self.next_poll is not None

    @property
    def fields(self) -> dict[str, str]:
        """The plugin-defined registration fields."""
        return dict(json.loads(self.extra)) if self.extra else {}


# -- when a watch ends: once, in Python and in SQL ---------------------------------------
#: A watch ends ``read_window`` after delivery, else ``max_age`` after sending. Each case
#: is (the SQL condition a row meets, its time column, the window added to it); the two
#: conditions exclude each other and cover every row, so the store can ask for each with
#: its own index. :func:`watch_end` reads the same cases.
WATCH_END_CASES: tuple[tuple[str, str, str], ...] = (
    ("status = 'delivered' AND delivered_at IS NOT NULL", "delivered_at", "read_window"),
    ("NOT (status = 'delivered' AND delivered_at IS NOT NULL)", "sent_at", "max_age"),
)

#: the same rule as one SQL expression over a row; its parameters are the windows of
#: WATCH_END_CASES in order (``read_window``, ``max_age``)
WATCH_END_SQL = (
    f"CASE WHEN {WATCH_END_CASES[0][0]} THEN {WATCH_END_CASES[0][1]} + ? "
    f"ELSE {WATCH_END_CASES[1][1]} + ? END"
)


def watch_end(state: MessageState, read_window: float, max_age: float) -> float:
    """When the message's watch ends (the rule of WATCH_END_CASES). The poll at (or
    after) this time is its final look."""
    if state.status is Status.DELIVERED and state.delivered_at is not None:
        return state.delivered_at + read_window
    return state.sent_at + max_age


@dataclass(slots=True)
class CampaignState:
    """A watched campaign: all its pages are read while any of its messages is watched,
    or while its late messages may still appear (until ``discover_until``)."""

    provider: str
    id: str
    registered_at: float
    sent_at: float
    discover_until: float
    next_poll: float | None = None  # None once it needs no more sweeps
    polls: int = 0  # sweeps that read every page
    errors: int = 0  # sweeps in a row that failed
    messages: int = 0  # messages found in it so far
    last_poll_at: float | None = None
    last_error: str | None = None
    settled_at: float | None = None
    #: the validity given at registration, for the messages found in it
    ttl: float | None = None
    #: the labels given at registration (bounded, JSON), for the messages found in it
    labels: str | None = None

    @property
    def watched(self) -> bool:
        return self.next_poll is not None

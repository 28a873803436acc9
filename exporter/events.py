"""The events a stored change produces: counted into metrics after the commit, and
handed to the plugins' hooks (``StatusChanged``)."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Status


@dataclass(frozen=True, slots=True)
class Transition:
    """The message entered ``status`` for the first time."""

    provider: str
    message_id: str
    status: Status
    reason: str | None
    country: str | None
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class Latency:
    provider: str
    message_id: str
    kind: str  # "delivery" or "read"
    seconds: float
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class Cost:
    provider: str
    currency: str
    channel: str
    amount: float
    country: str | None
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class SmsFallback:
    provider: str
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class WatchExpired:
    provider: str
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class FallbackOutcome:
    """A fallback leg reached its final status."""

    provider: str
    channel: str
    outcome: Status
    labels: str | None = None  # the message's stored labels (JSON)


@dataclass(frozen=True, slots=True)
class AnswerProblem:
    """Part of an answer could not be trusted: an optional field unreadable (``field``
    names it), or a time in the future or before the message was sent."""

    provider: str
    problem: str  # "unreadable_field", "time_in_future", "time_before_sent"
    detail: str


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The stored status changed (for the ``message_status_changed`` hook)."""

    provider: str
    message_id: str
    old_status: Status
    new_status: Status
    reason: str | None
    provider_status: str | None = None
    price: float | None = None
    currency: str | None = None
    latency_seconds: float | None = None
    country: str | None = None
    at: float = 0.0


Event = (
    Transition
    | Latency
    | Cost
    | SmsFallback
    | WatchExpired
    | StatusChanged
    | FallbackOutcome
    | AnswerProblem
)

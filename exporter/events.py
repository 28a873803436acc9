"""The events a stored change produces: counted into metrics after the commit, and
handed to the plugins' hooks (``StatusChanged``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    """A message entered a new normalised status: what the ``status_changed`` hook
    receives (plugin API 1.3), one object per change, stored and counted already.
    New fields may be added in a minor version; read the ones you need."""

    #: the provider instance name (the ``provider`` label)
    provider: str
    #: the provider's id of the message
    message_id: str
    #: the status before and now (:class:`Status` is a ``str`` enum: ``"delivered"``)
    old_status: Status
    new_status: Status
    #: snake_case reason for ``failed``/``expired``/``unknown``, else None
    reason: str | None
    #: the provider's own status text, e.g. ``"DELIVERED"``
    provider_status: str | None = None
    #: the Viber leg's price so far and its ISO 4217 currency (None: not reported yet)
    price: float | None = None
    currency: str | None = None
    #: for ``delivered`` and ``read``: seconds since sending, as counted in the
    #: latency histograms; else None
    latency_seconds: float | None = None
    #: the recipient's country code when the provider gives one
    country: str | None = None
    #: when the change was recorded (epoch seconds)
    at: float = 0.0
    #: the message's declared labels, as stored (bounded)
    labels: Mapping[str, str] = field(default_factory=dict)


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

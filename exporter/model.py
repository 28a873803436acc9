"""The normalised vocabulary every provider plugin speaks (SPEC §2).

Plugins turn a provider's answer into an :class:`Observation` or raise a
:class:`FetchError` carrying an :class:`Outcome`; the core does everything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple


class Status(StrEnum):
    """A message's normalised status (binding values)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """Final statuses stop polling at once."""
        return self in (Status.READ, Status.FAILED, Status.EXPIRED)

    @property
    def is_failure(self) -> bool:
        """Statuses counted in ``viber_message_failures_total``."""
        return self in (Status.FAILED, Status.EXPIRED)


class Outcome(StrEnum):
    """The result of one provider API call (binding values of the ``outcome`` label)."""

    OK = "ok"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    AUTH_ERROR = "auth_error"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    INVALID_RESPONSE = "invalid_response"


# Outcomes that say the provider itself is unwell: they pause the whole provider
# instance (with backoff) and set viber_provider_up to 0.
PROVIDER_FAILURES = frozenset(
    {Outcome.AUTH_ERROR, Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR}
)
# Outcomes that prove the provider answered an authorised call.
PROVIDER_ANSWERS = frozenset({Outcome.OK, Outcome.NOT_FOUND, Outcome.CLIENT_ERROR})


class FetchError(Exception):
    """A provider call that did not yield an observation.

    :param outcome: how the call ended; becomes the ``outcome`` label.
    :param message: what happened, for logs and the message's ``last_error``.
        Never put a secret in it.
    :param retry_after: seconds the provider asked us to wait (429 Retry-After).
    :param provider_wide: the failure concerns the whole provider instance, whatever
        the outcome (e.g. a ``client_error`` that means a wrong ``base_url``).
    """

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        retry_after: float | None = None,
        *,
        provider_wide: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.retry_after = retry_after
        #: the failure is about the provider or our configuration (a wrong base_url, a
        #: blocked account), not this message: the whole instance pauses and goes down.
        #: Defaults to what the outcome says (5xx, timeouts, refused connections, auth).
        self.provider_wide = (
            outcome in PROVIDER_FAILURES if provider_wide is None else provider_wide
        )


_NON_WORD = re.compile(r"[^a-z0-9]+")


def snake_case(text: str, max_length: int = 64) -> str:
    """``"Not Viber User"`` → ``"not_viber_user"``; empty input gives ``"unspecified"``."""
    words = _NON_WORD.sub("_", text.strip().lower()).strip("_")
    return words[:max_length].rstrip("_") or "unspecified"


@dataclass(frozen=True, slots=True)
class Fallback:
    """A leg the provider re-sent over another channel (BSG ``alt_route``, a Routee
    failover flow's SMS message).

    ``sent`` says whether the leg actually went out (a leg still scheduled, or refused
    before sending, is not a fallback yet); ``outcome`` is its normalised status when the
    plugin knows it (``pending`` while it may still change). The core counts a fallback
    once its leg is sent, keeps polling while the leg is pending (up to ``max_age``) and
    counts the leg's final outcome once.
    """

    channel: str = "sms"
    price: float | None = None
    currency: str | None = None
    status: str | None = None
    outcome: Status | None = None
    sent: bool = True


#: The most a single message may cost, in any currency's main unit (a million: far above
#: any real price, even in currencies with small units). A provider price above it is
#: not believed: dropped and counted in ``viber_provider_answer_problems_total``.
PRICE_CEILING = 1_000_000.0


_NO_FIELDS: Mapping[str, str] = MappingProxyType({})


def _check_time(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"Observation.{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True)
class Observation:
    """What a provider says about one message right now.

    Pass what the provider said; the core derives the rest. Times are the provider's
    own timestamps where it has them (timezone-aware), else ``None`` and the core uses
    the time of the poll: give the one time of the status as ``at`` (1.3), or
    ``delivered_at``/``read_at`` when the provider states them apart. ``reason`` is
    the provider's failure code or text, as it is: the core keeps it only for
    ``failed``, ``expired`` and ``unknown`` and writes it in snake_case (see
    :func:`snake_case`). ``price`` is the Viber leg's price; each :class:`Fallback`
    carries its own.
    """

    # Fields after ``country`` are keyword-only in spirit: pass them by name.

    status: Status
    provider_status: str = ""
    reason: str | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    price: float | None = None
    currency: str | None = None
    fallbacks: tuple[Fallback, ...] = field(default_factory=tuple)
    country: str | None = None
    #: the provider says this message will not change any more (e.g. Routee's
    #: delivered-then-expired): polling stops even though the status is not final
    settled: bool = False
    #: optional fields the plugin could not read and dropped or repaired (their names);
    #: the status was still usable, and the core counts and logs each
    problems: tuple[str, ...] = ()
    #: (1.2) parts of the answer that contradict each other (e.g. a total that is not
    #: the sum of its parts), by name: counted as ``inconsistent_answer`` and logged
    inconsistencies: tuple[str, ...] = ()
    #: (1.2) the message's validity in seconds from its send time, as the provider
    #: states it (Routee's ``ttl``): a pending message gets one poll just after it ends
    ttl: float | None = None
    #: (1.2) plugin-defined registration fields this answer implies, stored with a
    #: message that a pushed report registers (e.g. a Routee failover flow's
    #: ``tracking = "failover"``, so its later polls ask the right endpoint)
    fields: Mapping[str, str] = field(default_factory=dict)
    #: (1.3) when the provider says the message reached ``status`` (timezone-aware):
    #: the core takes it as the delivery time of a ``delivered`` answer and the read
    #: time of a ``read`` one, so a plugin passes the provider's one status time as it
    #: is (``delivered_at`` and ``read_at``, when given, win)
    at: datetime | None = None

    @property
    def delivered_time(self) -> datetime | None:
        """The delivery time this answer states (for a ``read`` answer too, if given)."""
        if self.delivered_at is not None:
            return self.delivered_at
        return self.at if self.status is Status.DELIVERED else None

    @property
    def read_time(self) -> datetime | None:
        """The read time this answer states."""
        if self.read_at is not None:
            return self.read_at
        return self.at if self.status is Status.READ else None

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            raise TypeError(f"Observation.status must be a Status, got {self.status!r}")
        for name in ("sent_at", "delivered_at", "read_at", "at"):
            _check_time(name, getattr(self, name))
        for price in [self.price, *(leg.price for leg in self.fallbacks)]:
            if price is not None and (not math.isfinite(price) or price < 0):
                raise ValueError(f"prices must be finite and non-negative, got {price!r}")
        if self.ttl is not None and (not math.isfinite(self.ttl) or self.ttl <= 0):
            raise ValueError(
                f"Observation.ttl must be a positive number of seconds, got {self.ttl!r}"
            )


class Report(NamedTuple):
    """A delivery report the provider pushed (a callback) or handed out (a feed):
    which message it is about, and what it says. A named pair, so plugins written for
    the ``(message id, observation)`` pairs of before 1.0 keep working."""

    message_id: str
    observation: Observation


class BadReport(NamedTuple):
    """(1.3) A report a feed handed out that the plugin could not read, in place of its
    :class:`Report`: the other reports of the same answer still count, and this one is
    counted as ``viber_provider_answer_problems_total{problem="unreadable_report"}``
    and shown among the instance's recent errors. Never put a secret in ``error``."""

    error: str
    message_id: str | None = None


class Page(NamedTuple):
    """One page of a campaign's listing (:meth:`Provider.fetch_campaign`): a report
    per message on it, and how many messages the provider says the whole campaign has
    (None when it does not say). The total lets the core tell a sweep that missed
    messages (pages that shifted while it read them) from one that saw them all."""

    reports: Sequence[Report]
    total: int | None = None


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A watched message as :meth:`Provider.fetch_message` sees it: its id, the
    plugin-defined fields it was registered with, and its sent time (epoch seconds)."""

    id: str
    fields: Mapping[str, str] = field(default_factory=lambda: _NO_FIELDS)
    sent_at: float | None = None

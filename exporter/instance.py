"""A provider instance's live state, and the one guarded call every provider call makes.

A :class:`ProviderInstance` is built from one ``[providers.NAME]`` table and lives until
a reload changes that table: the plugin object, its health (up, backoff, recent
errors), the balance last read, the adaptive plan it has learned, the pace of its
calls and its rate-limited error log. The engine builds and replaces instances; the
poller and the HTTP views read and update them; the configuration they were built
from stays frozen.

:meth:`ProviderInstance.call` is the only place a provider call is made: lookups,
batches, campaign pages, feed drains and credential checks alike. It times the call,
turns every exception into an outcome (a plugin bug is an invalid answer, never a dead
job), and feeds the request metrics, the health and its backoff, the pace and the
error log, the same way for every kind of call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .accounting import Policy
from .adaptive import SchedulePlan
from .clock import Clock
from .config.model import ProviderConfig
from .errorlog import ErrorLog
from .health import ProviderHealth
from .metrics import Metrics
from .model import FetchError, Outcome
from .provider import Balance, Provider
from .ratelimit import RateLimiter
from .secrets import redact

log = logging.getLogger("viber_exporter.poller")

T = TypeVar("T")


@dataclass(frozen=True)
class Called(Generic[T]):
    """How one provider call ended: its value, or the failure it became."""

    value: T | None
    failure: FetchError | None = None

    @property
    def outcome(self) -> Outcome:
        return self.failure.outcome if self.failure is not None else Outcome.OK


@dataclass(eq=False)
class ProviderInstance:
    """A configured, running provider instance and everything live about it."""

    config: ProviderConfig
    provider: Provider
    clock: Clock
    metrics: Metrics
    health: ProviderHealth = field(init=False)
    limiter: RateLimiter = field(init=False)
    error_log: ErrorLog = field(init=False)
    #: what the provider's balance endpoint last said (None: not read, or no such call)
    balance: Balance | None = field(default=None, init=False)
    _policy: Policy = field(init=False)

    def __post_init__(self) -> None:
        self.health = ProviderHealth(self.clock)
        self.limiter = RateLimiter(self.config.rate_limit, self.clock)
        self.error_log = ErrorLog(self.name, clock=self.clock)
        self._policy = Policy.of(self.config.polling, None)

    @property
    def name(self) -> str:
        return self.config.name

    # -- the schedule ------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """How the instance polls now: its polling configuration and its current plan."""
        return self._policy

    @property
    def plan(self) -> SchedulePlan | None:
        return self._policy.plan

    @plan.setter
    def plan(self, plan: SchedulePlan | None) -> None:
        self._policy = Policy.of(self.config.polling, plan)

    # -- calls -------------------------------------------------------------------------
    def may_call(self, deadline: float, stopping: threading.Event) -> bool:
        """Wait for the pace's next slot; False when paused (backing off), stopping, or
        the slot would come after ``deadline``."""
        if stopping.is_set() or self.health.paused():
            return False
        return self.limiter.acquire(deadline, stopping) and not self.health.paused()

    def call(self, subject: str, what: str, call: Callable[[], T]) -> Called[T]:
        """Make one provider call and account for it. ``subject`` names what it was
        about in the recent errors (message ids, ``campaign ID``, ``(verify)``);
        ``what`` prefixes its line in the error log (empty for a lookup).

        A call that raises ``StopIteration`` made no call (a paged listing that ended):
        it is passed on, not counted."""
        started = time.perf_counter()  # a call's latency is real time, whatever the clock
        bug: Exception | None = None
        try:
            called: Called[T] = Called(call())
        except StopIteration:
            raise
        except FetchError as e:
            called = Called(None, e)
        except Exception as e:  # a plugin bug is an unreadable answer, never a dead job
            # its text is not shown: a careless plugin may have put a secret in it
            bug = e
            called = Called(
                None, FetchError(Outcome.INVALID_RESPONSE, f"plugin error: {type(e).__name__}")
            )
        self._account(subject, what, called, time.perf_counter() - started, bug)
        return called

    def bad_report(self, subject: str, error: str) -> None:
        """One report of an answer could not be read (the others were used): counted
        as an answer problem, shown in the recent errors and the error log."""
        detail = redact(error)
        self.metrics.answer_problems.labels(self.name, "unreadable_report").inc()
        self.health.note_error(subject, Outcome.INVALID_RESPONSE, detail)
        self.error_log.error("unreadable_report", f"{subject}: {detail}")

    def _account(
        self, subject: str, what: str, called: Called[T], seconds: float, bug: Exception | None
    ) -> None:
        outcome, failure = called.outcome, called.failure
        self.metrics.request(self.name, outcome, seconds)
        health = self.health
        was_up = health.up
        health.record(
            outcome,
            failure.retry_after if failure is not None else None,
            provider_wide=failure is not None and failure.provider_wide,
        )
        if outcome is Outcome.RATE_LIMITED:
            self.limiter.slow_down()
        elif outcome in (Outcome.OK, Outcome.NOT_FOUND):
            self.limiter.speed_up()
        detail = redact(failure.message) if failure is not None else ""
        if failure is not None and outcome is not Outcome.NOT_FOUND:
            self.error_log.error(outcome.value, f"{what}: {detail}" if what else detail, bug)
            health.note_error(subject, outcome, detail)
        if was_up and not health.up:
            log.warning(
                "provider %s is down (%s: %s); backing off", self.name, outcome.value, detail
            )
        elif health.up and not was_up:
            log.info("provider %s is answering again", self.name)

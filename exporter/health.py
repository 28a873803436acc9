"""A provider instance's health: up/down, last success, and the pause that backs off.

Failures that say the provider is unwell (5xx, timeouts, refused connections, bad
credentials, and answers that are mostly unreadable) pause the whole instance with
exponential backoff and jitter, so an outage costs a bounded number of calls; a 429
pauses it for its Retry-After.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass

from .backoff import backoff
from .clock import SYSTEM_CLOCK, Clock
from .model import PROVIDER_ANSWERS, PROVIDER_FAILURES, Outcome

RECENT_ERRORS = 20
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
RETRY_AFTER_CAP = 3600.0
GARBAGE_WINDOW = 20  # the last answers looked at …
GARBAGE_SHARE = 0.8  # … of which this share unreadable means the provider answers garbage


@dataclass(frozen=True)
class RecentError:
    """One failed call, for the landing page and the providers API (already redacted)."""

    at: float
    message_id: str
    outcome: str
    message: str


class ProviderHealth:
    def __init__(self, clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None) -> None:
        self.up = True  # "0 after failures": nothing has failed yet
        self.last_success: float | None = None
        #: the earliest next poll of a watched message, as the poller last read it: the
        #: lag is computed from it at scrape time, so a tick that hangs (or a scheduler
        #: that stopped) shows as a growing lag instead of the last value it set
        self.next_due: float | None = None
        #: when the poller last completed a tick (the exporter's clock), and how many it
        #: has completed (tests wait on it: proof that the poller ran)
        self.last_tick: float | None = None
        self.ticks = 0
        #: how many times a failing provider paused the instance (each backoff step)
        self.pauses = 0
        self.oldest_pending_sent: float | None = None  # sent time of the oldest pending message
        self.recent_errors: deque[RecentError] = deque(maxlen=RECENT_ERRORS)
        self._level = 0
        self._paused_until = 0.0
        self._answers: deque[bool] = deque(maxlen=GARBAGE_WINDOW)  # True: unreadable
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()

    def paused(self) -> bool:
        return self._clock.monotonic() < self._paused_until

    def pause_remaining(self) -> float:
        return max(0.0, self._paused_until - self._clock.monotonic())

    def backoff(self, level: int) -> float:
        return backoff(level, BACKOFF_BASE, BACKOFF_CAP, self._rng)

    def mostly_garbage(self) -> bool:
        """Whether most of the recent answers were unreadable."""
        return len(self._answers) >= GARBAGE_WINDOW // 2 and (
            sum(self._answers) >= GARBAGE_SHARE * len(self._answers)
        )

    def lag(self, now: float) -> float:
        """How far behind schedule the most overdue poll is (0 when keeping up)."""
        return max(0.0, now - self.next_due) if self.next_due is not None else 0.0

    def note_error(self, message_id: str, outcome: Outcome, message: str) -> None:
        self.recent_errors.append(
            RecentError(self._clock.time(), message_id, outcome.value, message)
        )

    def record(
        self, outcome: Outcome, retry_after: float | None = None, *, provider_wide: bool = False
    ) -> None:
        with self._lock:
            now = self._clock.monotonic()
            if outcome in (Outcome.OK, Outcome.NOT_FOUND):
                self.last_success = self._clock.time()
            if provider_wide and outcome not in PROVIDER_FAILURES | {Outcome.RATE_LIMITED}:
                outcome = Outcome.SERVER_ERROR  # handled as the provider being unwell
            if outcome in PROVIDER_ANSWERS or outcome is Outcome.INVALID_RESPONSE:
                self._answers.append(outcome is Outcome.INVALID_RESPONSE)
                if outcome is Outcome.INVALID_RESPONSE and self.mostly_garbage():
                    # Most answers are unreadable (HTTP 200 with an error page, say): the
                    # provider is unwell, not one message. Back off provider-wide.
                    outcome = Outcome.SERVER_ERROR
            if outcome in PROVIDER_ANSWERS:
                self.up = True
                self._level = 0
            elif outcome is Outcome.RATE_LIMITED:
                wait = retry_after if retry_after is not None else self.backoff(self._level + 1)
                self._paused_until = max(self._paused_until, now + min(wait, RETRY_AFTER_CAP))
            elif outcome in PROVIDER_FAILURES:
                self.up = False
                # Calls already in flight when the pause began do not deepen it.
                if now >= self._paused_until:
                    self.pauses += 1
                    self._level += 1
                    wait = self.backoff(self._level)
                    if retry_after is not None:
                        wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
                    self._paused_until = now + wait

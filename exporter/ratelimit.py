"""A thread-safe pacing limiter: at most ``rate`` calls per second, evenly spaced.

The pace adapts to the provider (additive increase, multiplicative decrease, as in TCP
congestion control): each 429 halves it, each answered call adds about one call per
second per second — a tenth of that around the pace that drew the last 429 — never
above the configured ``rate_limit``. A provider that limits at N calls per second is
then called just under N, not hammered at ``rate_limit``.
"""

from __future__ import annotations

import threading

from .clock import SYSTEM_CLOCK, Clock

MIN_RATE = 0.2  # calls per second; the pace never stops altogether
NEAR_CEILING = 0.8  # from this share of the pace that drew the last 429 on …
GENTLE = 0.1  # … the pace grows this much slower


class RateLimiter:
    """Hands out call slots ``1/rate`` seconds apart; waiting callers sleep outside the lock."""

    def __init__(self, rate: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_rate = rate
        self.rate = rate
        self.ceiling: float | None = None  # the pace that drew the last 429
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, deadline: float, stop: threading.Event) -> bool:
        """Wait for a slot; False if it would come after ``deadline`` or ``stop`` is set."""
        with self._lock:
            now = self.clock.monotonic()
            slot = max(now, self._next)
            if slot > deadline:
                return False
            self._next = slot + 1.0 / self.rate
        if slot > now:
            self.clock.wait(stop, slot - now)
        return not stop.is_set()

    def slow_down(self) -> None:
        """The provider said 429: remember the pace that was too fast, and halve it."""
        with self._lock:
            current = min(self.rate, self.max_rate)
            self.ceiling = current
            self.rate = max(MIN_RATE, current / 2)

    def speed_up(self) -> None:
        """An answered call: creep back towards ``rate_limit`` (+1 call/s per second), and
        only gently (a tenth of that) around the pace that last drew a 429, so the pace
        settles just under a provider's own limit instead of bouncing off it; well past
        it (the provider's limit grew), at full speed again."""
        with self._lock:
            if self.rate < self.max_rate:
                near = (
                    self.ceiling is not None
                    and NEAR_CEILING * self.ceiling <= self.rate <= self.ceiling / NEAR_CEILING
                )
                step = (GENTLE if near else 1.0) / self.rate
                self.rate = min(self.max_rate, self.rate + step)

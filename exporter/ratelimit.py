"""A thread-safe pacing limiter: at most ``rate`` calls per second, evenly spaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Hands out call slots ``1/rate`` seconds apart; waiting callers sleep outside the lock."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, deadline: float, stop: threading.Event) -> bool:
        """Wait for a slot; False if it would come after ``deadline`` or ``stop`` is set."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            if slot > deadline:
                return False
            self._next = slot + self.interval
        if slot > now:
            stop.wait(slot - now)
        return not stop.is_set()

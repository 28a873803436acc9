"""The exporter's one source of time, injectable so tests can move it.

Everything that reads the time — timestamps on messages, provider pauses, the pace of
calls, the length of a tick — asks a :class:`Clock`. Production uses
:class:`SystemClock`; tests use :class:`ManualClock`, whose time moves only when the
test (or a wait inside the exporter) moves it, so a simulated day runs in seconds and
a test behaves the same on any date and on a slow machine.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps: sent, delivered, next poll)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (pauses, pacing, deadlines)."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` unless ``event`` is set first; return whether it is set."""


class SystemClock:
    """Real time; ``offset`` shifts the wall clock (tests run the suite a year ahead)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


class ManualClock:
    """Virtual time: it stands still until :meth:`advance` or a :meth:`wait` moves it.

    A wait does not sleep: it moves the clock to the end of the wait, as a discrete-event
    simulation does, so a rate limiter paced at 10 calls per second makes 10 calls per
    *simulated* second however fast the machine is.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._start = start
        self._elapsed = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._start + self._elapsed

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._elapsed += max(0.0, seconds)

    def advance_to(self, monotonic: float) -> None:
        with self._lock:
            self._elapsed = max(self._elapsed, monotonic)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if not event.is_set():
            self.advance_to(self.monotonic() + max(0.0, seconds))
        return event.is_set()


SYSTEM_CLOCK = SystemClock()

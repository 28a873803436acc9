"""The last hour, a minute at a time: what the landing page's small charts draw.

Kept in memory by this process (like the counters), in fixed rings: nothing here grows
with the number of messages, and drawing a chart asks no store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

#: minutes a trend covers (one point a minute)
MINUTES = 60

#: what is traced per provider instance
KINDS = ("delivered", "read", "failed", "errors")


class Ring:
    """Counts per minute for the last ``MINUTES`` minutes."""

    __slots__ = ("counts", "minute")

    def __init__(self) -> None:
        self.counts = [0] * MINUTES
        self.minute: int | None = None  # the newest minute written

    def add(self, minute: int, amount: int) -> None:
        self._advance(minute)
        if self.minute is not None and minute > self.minute - MINUTES:
            self.counts[minute % MINUTES] += amount

    def _advance(self, minute: int) -> None:
        if self.minute is None:
            self.minute = minute
            return
        if minute <= self.minute:
            return
        for passed in range(self.minute + 1, min(minute, self.minute + MINUTES) + 1):
            self.counts[passed % MINUTES] = 0
        self.minute = minute

    def total(self, minute: int) -> int:
        """The sum over the ``MINUTES`` minutes up to ``minute`` (every slot holds one
        of them once the ring is advanced there)."""
        self._advance(minute)
        return sum(self.counts)

    def series(self, minute: int) -> list[int]:
        """The counts of the ``MINUTES`` minutes up to ``minute``, oldest first."""
        self._advance(minute)
        return [
            self.counts[m % MINUTES] if self.minute is not None and m > self.minute - MINUTES else 0
            for m in range(minute - MINUTES + 1, minute + 1)
        ]


@dataclass(frozen=True)
class Trend:
    """One instance's last hour: a point a minute per kind, oldest first."""

    delivered: list[int]
    read: list[int]
    failed: list[int]
    errors: list[int]

    def total(self, kind: str) -> int:
        return sum(getattr(self, kind))


class Trends:
    """Per provider instance and kind, the last hour in rings (thread-safe)."""

    def __init__(self, time: Callable[[], float]) -> None:
        self._time = time
        self._rings: dict[tuple[str, str, str], Ring] = {}
        self._lock = threading.Lock()

    def add(self, provider: str, kind: str, amount: int = 1, part: str = "") -> None:
        """Count ``amount`` now. ``part`` names a share of the instance's messages (a
        declared label's value, ``NAME=VALUE``); the instance as a whole is ``""``."""
        minute = int(self._time() // 60)
        key = (provider, part, kind)
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = Ring()
            ring.add(minute, amount)

    def totals(self, provider: str, part: str = "") -> dict[str, int]:
        """Each kind's sum over the last hour (what a table row needs, without series)."""
        minute = int(self._time() // 60)
        with self._lock:
            return {
                kind: ring.total(minute) if (ring := self._rings.get((provider, part, kind))) else 0
                for kind in KINDS
            }

    def of(self, provider: str, part: str = "") -> Trend:
        minute = int(self._time() // 60)
        with self._lock:
            series = {
                kind: (
                    self._rings[(provider, part, kind)].series(minute)
                    if (provider, part, kind) in self._rings
                    else [0] * MINUTES
                )
                for kind in KINDS
            }
        return Trend(**series)

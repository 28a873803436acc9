"""Poll errors in the log without flooding it during an outage: at most one line per
provider per interval, then a summary with the count of the ones held back."""

from __future__ import annotations

import logging
import threading

from .clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("viber_exporter.poller")

INTERVAL = 60.0


class ErrorLog:
    def __init__(
        self, provider: str, interval: float = INTERVAL, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.provider = provider
        self.interval = interval
        self.clock = clock
        self._window_start: float | None = None
        self._held = 0
        self._last = ""
        self._lock = threading.Lock()

    def error(self, outcome: str, message: str, exc_info: BaseException | None = None) -> None:
        """Log this error if none was logged in the current interval; else count it."""
        with self._lock:
            now = self.clock.monotonic()
            if self._window_start is not None and now - self._window_start < self.interval:
                self._held += 1
                self._last = f"{outcome}: {message}"
                return
            held, last = self._take(now)
        self._summary(held, last)
        log.warning(
            "provider %s: poll failed: %s: %s", self.provider, outcome, message, exc_info=exc_info
        )

    def flush(self) -> None:
        """Write the summary of held-back errors once their interval is over."""
        with self._lock:
            now = self.clock.monotonic()
            if (
                not self._held
                or self._window_start is None
                or now - self._window_start < self.interval
            ):
                return
            held, last = self._take(None)
        self._summary(held, last)

    def _take(self, window_start: float | None) -> tuple[int, str]:
        held, last = self._held, self._last
        self._window_start, self._held, self._last = window_start, 0, ""
        return held, last

    def _summary(self, held: int, last: str) -> None:
        if held:
            log.warning(
                "provider %s: %d more poll error(s) in the last %gs (last: %s)",
                self.provider,
                held,
                self.interval,
                last,
            )

"""Waiting for SIGTERM, SIGINT and SIGHUP without missing one.

The signals are *blocked* from the first line of ``run``/``demo``, before any thread
starts (threads inherit the mask), and taken with ``sigwait`` in the main thread: a
signal that arrives while the exporter is still starting stays pending instead of
killing the process with its default action, and one that arrives while the main
thread is busy is not lost (a Python handler putting into a queue can be, if the main
thread is blocked in the queue when the handler should run).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP = frozenset({signal.SIGTERM, signal.SIGINT})
HANDLED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class SignalWaiter:
    """Takes the blocked signals one at a time (see :func:`signals_blocked`)."""

    def wait(
        self, on_reload: Callable[[], object] | None = None, timeout: float | None = None
    ) -> signal.Signals | None:
        """Block until SIGTERM or SIGINT and return it; run ``on_reload`` on each SIGHUP
        (in this thread). With ``timeout``, None when no stop signal came in time."""
        while True:
            if timeout is None:
                signum = signal.sigwait(HANDLED)
            else:
                info = signal.sigtimedwait(HANDLED, timeout)
                if info is None:
                    return None
                signum = info.si_signo
            if signum == signal.SIGHUP:
                if on_reload is not None:
                    log.info("received SIGHUP, reloading the configuration")
                    try:
                        on_reload()
                    except Exception:  # a failed reload must never stop the exporter
                        log.exception(
                            "reloading on SIGHUP failed; the running configuration is kept"
                        )
                continue
            received = signal.Signals(signum)
            log.info("received %s, stopping", received.name)
            return received


@contextlib.contextmanager
def signals_blocked() -> Iterator[SignalWaiter]:
    """Block SIGTERM, SIGINT and SIGHUP in this thread, and so in every thread started
    inside the block, until it ends. Call it in the main thread before anything starts."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield SignalWaiter()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

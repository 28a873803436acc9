"""The polling loop: one APScheduler job per provider instance, every ``tick``.

A tick asks the store for due messages and polls them with at most ``concurrency``
calls in flight and at most ``rate_limit`` calls per second, until nothing is due,
the tick's time is used up, or the provider is paused. Nothing escapes a tick.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .clock import Clock
from .config import PollingSettings, ProviderConfig
from .errorlog import ErrorLog
from .health import ProviderHealth
from .metrics import Metrics
from .model import FetchError, Observation, Outcome
from .provider import Provider
from .ratelimit import RateLimiter
from .recorder import PollResult, Recorder
from .secrets import redact
from .state import MessageState
from .store import Store

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
MAX_TICK = 60.0  # seconds one tick may run while there is due work


@dataclass
class ProviderInstance:
    """A configured, running provider: its config, plugin object and health."""

    config: ProviderConfig
    provider: Provider
    health: ProviderHealth

    @property
    def name(self) -> str:
        return self.config.name


class ProviderPoller:
    """Polls one provider instance's due messages."""

    def __init__(
        self,
        instance: ProviderInstance,
        store: Store,
        recorder: Recorder,
        metrics: Metrics,
        clock: Clock,
        stopping: threading.Event,
    ) -> None:
        self.instance = instance
        self.name = instance.name
        self.policy: PollingSettings = instance.config.polling
        self.store = store
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.stopping = stopping
        config = instance.config
        self.batch_limit = max(
            config.concurrency * 4,
            min(
                config.concurrency * 32,
                math.ceil(config.rate_limit * self.policy.tick) + config.concurrency,
            ),
        )
        self.limiter = RateLimiter(config.rate_limit, clock)
        self.executor = ThreadPoolExecutor(
            config.concurrency, thread_name_prefix=f"poll-{self.name}"
        )
        self.idle = threading.Event()
        self.idle.set()
        #: the longest a tick keeps going while work is due (a virtual-time run uses its tick)
        self.max_tick = max(self.policy.tick, MAX_TICK)
        self.error_log = ErrorLog(self.name, clock=clock)

    def tick(self) -> None:
        """One scheduled run; logs and swallows every error so the job never dies."""
        self.idle.clear()
        try:
            self._tick()
        except Exception:
            log.exception("polling %s failed; will retry next tick", self.name)
        finally:
            self.idle.set()

    def _tick(self) -> None:
        # Keep going while work is due: stopping at the next tick boundary would leave
        # the provider idle until the scheduler's next run during a catch-up. The cap
        # only makes a very long sweep hand the job back now and then.
        deadline = self.clock.monotonic() + self.max_tick
        health = self.instance.health
        self._give_up()
        while (
            not self.stopping.is_set() and not health.paused() and self.clock.monotonic() < deadline
        ):
            due = self.store.due(self.name, self.clock.time(), self.batch_limit)
            if not due:
                break
            results = self._poll(due, deadline)
            if not results:
                break  # nothing could be done before the deadline or the pause
            self.recorder.record_polls(self.name, self.policy, results)
            self._update_lag()
        self._update_lag()
        self.error_log.flush()

    def _give_up(self) -> None:
        """End the watches whose final look found no answer within ``final_look_grace``.

        Runs every tick, paused or not: during a long outage this is what ends them.
        """
        while not self.stopping.is_set():
            # Just past give_up_at (accounting), which re-checks each message.
            cutoff = self.clock.time() - self.policy.final_look_grace
            overdue = self.store.ended_before(
                self.name,
                delivered_before=cutoff - self.policy.read_window,
                sent_before=cutoff - self.policy.max_age,
                registered_before=cutoff,
                limit=self.batch_limit,
            )
            if not overdue:
                return
            ended = self.recorder.record_give_ups(self.name, self.policy, overdue)
            if ended:
                log.warning(
                    "provider %s: %d watch(es) ended without a final answer: none within "
                    "final_look_grace (%gs) after the watch ended; see each message's last_error",
                    self.name,
                    ended,
                    self.policy.final_look_grace,
                )
            if len(overdue) < self.batch_limit or not ended:
                return

    def _update_lag(self) -> None:
        if self.stopping.is_set():
            return
        oldest = self.store.oldest_next_poll(self.name)
        now = self.clock.time()
        self.instance.health.overdue_since = oldest if oldest is not None and oldest < now else None

    def _poll(self, due: Sequence[MessageState], deadline: float) -> list[PollResult]:
        # Every due message is asked, also past its watch's end: that is its final look.
        results: list[PollResult] = []
        to_call = [state.id for state in due]
        size = self.instance.provider.batch_size
        chunks = [to_call[i : i + size] for i in range(0, len(to_call), size)]
        futures: list[Future[list[PollResult]]] = [
            self.executor.submit(self._call, chunk, deadline) for chunk in chunks
        ]
        for future in futures:
            results.extend(future.result())
        return results

    def _call(self, ids: list[str], deadline: float) -> list[PollResult]:
        """One provider call (one id, or a batch); an empty list means it was skipped."""
        health = self.instance.health
        if (
            self.stopping.is_set()
            or health.paused()
            or not self.limiter.acquire(deadline, self.stopping)
        ):
            return []
        if health.paused():
            return []
        started = time.perf_counter()  # call latency is real time, whatever the clock
        answers, outcome, retry_after, bug = self._fetch(ids)
        self.metrics.request(self.name, outcome, time.perf_counter() - started)
        was_up = health.up
        health.record(outcome, retry_after)
        if outcome is Outcome.RATE_LIMITED:
            self.limiter.slow_down()
        elif outcome in (Outcome.OK, Outcome.NOT_FOUND):
            self.limiter.speed_up()
        if outcome not in (Outcome.OK, Outcome.NOT_FOUND):
            failure = next((a for a in answers.values() if isinstance(a, FetchError)), None)
            detail = redact(failure.message) if failure else outcome.value
            self.error_log.error(outcome.value, detail, exc_info=bug)
            health.note_error(",".join(ids), outcome, detail)
        self._log_health_change(was_up, health.up, answers)
        return [self._result(message_id, answers.get(message_id)) for message_id in ids]

    def _fetch(
        self, ids: list[str]
    ) -> tuple[dict[str, Observation | FetchError], Outcome, float | None, Exception | None]:
        """Call the plugin; every exception becomes an outcome (a plugin bug is also returned)."""
        provider = self.instance.provider
        try:
            if len(ids) == 1 and provider.batch_size == 1:
                return {ids[0]: provider.fetch(ids[0])}, Outcome.OK, None, None
            return dict(provider.fetch_many(ids)), Outcome.OK, None, None
        except FetchError as e:
            return dict.fromkeys(ids, e), e.outcome, e.retry_after, None
        except Exception as e:  # a plugin bug is an invalid answer, never a dead poller
            error = FetchError(Outcome.INVALID_RESPONSE, f"plugin error: {type(e).__name__}: {e}")
            return dict.fromkeys(ids, error), error.outcome, None, e

    @staticmethod
    def _result(message_id: str, answer: Observation | FetchError | None) -> PollResult:
        if answer is None:
            return PollResult(message_id, Outcome.NOT_FOUND, error="missing from the batch answer")
        if isinstance(answer, Observation):
            return PollResult(message_id, Outcome.OK, answer)
        return PollResult(message_id, answer.outcome, error=answer.message)

    def _log_health_change(
        self, was_up: bool, is_up: bool, answers: dict[str, Observation | FetchError]
    ) -> None:
        if was_up and not is_up:
            error = next((a for a in answers.values() if isinstance(a, FetchError)), None)
            detail = f"{error.outcome.value}: {redact(error.message)}" if error else "failed"
            log.warning("provider %s is down (%s); backing off", self.name, detail)
        elif is_up and not was_up:
            log.info("provider %s is answering again", self.name)

    def shutdown(self, timeout: float) -> bool:
        """Stop taking work; wait up to ``timeout`` for the running tick. True if it ended."""
        ended = self.idle.wait(timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)
        return ended


class Poller:
    """Runs the per-provider tick jobs and the retention purge on a BackgroundScheduler."""

    def __init__(
        self,
        instances: Sequence[ProviderInstance],
        store: Store,
        recorder: Recorder,
        metrics: Metrics,
        polling: PollingSettings,
        clock: Clock,
    ) -> None:
        self.store = store
        self.polling = polling
        self.clock = clock
        self.stopping = threading.Event()
        self.pollers = {
            i.name: ProviderPoller(i, store, recorder, metrics, clock, self.stopping)
            for i in instances
        }
        self.scheduler = BackgroundScheduler(
            executors={"default": JobExecutor(max_workers=len(self.pollers) + 2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running) and not self.stopping.is_set()

    def start(self) -> None:
        start = datetime.now(UTC)
        for name, poller in self.pollers.items():
            self.scheduler.add_job(
                poller.tick,
                "interval",
                seconds=poller.policy.tick,
                id=f"poll:{name}",
                name=f"poll {name}",
                next_run_time=start,
            )
        self.scheduler.add_job(
            self.purge,
            "interval",
            seconds=PURGE_INTERVAL,
            id="purge",
            name="retention purge",
            next_run_time=start,
        )
        self.scheduler.start()

    def purge(self) -> None:
        try:
            removed = self.store.purge_settled(self.clock.time() - self.polling.retention)
            if removed:
                log.info(
                    "forgot %d messages settled more than %gs ago", removed, self.polling.retention
                )
        except Exception:
            log.exception("retention purge failed")

    def stop(self, timeout: float = 8.0) -> None:
        """Stop ticking; running ticks finish what is in flight or are abandoned (state stays)."""
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        for name, poller in self.pollers.items():
            if not poller.shutdown(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "abandoned an unfinished poll of %s; it will be repeated after restart", name
                )

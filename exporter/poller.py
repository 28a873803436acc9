"""The polling loop: APScheduler jobs per provider instance.

Every ``tick`` an instance asks the store for due messages and polls them with at most
``concurrency`` calls in flight and at most ``rate_limit`` calls per second, until
nothing is due, the tick's time is used up, or the provider is paused; each answer is
recorded as soon as it arrives. Beside the tick, an instance may have a ``verify`` job
(credentials and balance) and a ``drain`` job (a provider's report feed). Nothing
escapes a job.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from . import adaptive
from .accounting import Policy
from .clock import Clock
from .config.model import PollingSettings
from .errors import StoreError, WatchedSetFull
from .instance import ProviderInstance
from .leadership import HEARTBEAT, Leadership
from .model import BadReport, FetchError, MessageRef, Observation, Outcome, Report
from .provider import DEFAULT_DRAIN_INTERVAL
from .recorder import PollResult, Recorder
from .store.base import Store
from .store.rows import MessageState

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
MAX_TICK = 60.0  # seconds one tick may run while there is due work
#: seconds answers that follow the first one are gathered for, to be written together
COALESCE = 0.02


class Sweeper(Protocol):
    """Sweeps an instance's due campaigns (:class:`~viber_exporter.campaigns.CampaignSweeper`)."""

    def sweep_due(self, go_on: Callable[[], bool]) -> None: ...


#: builds an instance's sweeper: (instance, store, recorder, stopping, max_watched)
SweeperFactory = Callable[
    [ProviderInstance, Store, Recorder, threading.Event, Callable[[], int]], Sweeper
]


class ProviderPoller:
    """Polls one provider instance's due messages, verifies it and drains its feed."""

    def __init__(
        self,
        instance: ProviderInstance,
        store: Store,
        recorder: Recorder,
        clock: Clock,
        stopping: threading.Event,
        leadership: Leadership,
        max_watched: Callable[[], int],
        sweeper: SweeperFactory | None = None,
    ) -> None:
        self.instance = instance
        #: what the plugin can do (read once: a class does not change)
        self.caps = instance.provider.capabilities()
        self.leadership = leadership
        self.name = instance.name
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.stopping = stopping
        #: polling.max_watched now (it may change on a reload), for reports a feed or a
        #: campaign sweep brings about messages not registered yet
        self.max_watched = max_watched
        config = instance.config
        tick = config.polling.tick
        self.batch_limit = max(
            config.concurrency * 4,
            min(
                config.concurrency * 32,
                math.ceil(config.rate_limit * tick) + config.concurrency,
            ),
        )
        self.executor = ThreadPoolExecutor(
            config.concurrency, thread_name_prefix=f"poll-{self.name}"
        )
        self.idle = threading.Event()
        self.idle.set()
        #: the longest a tick keeps going while work is due (a virtual-time run uses its tick)
        self.max_tick = max(tick, MAX_TICK)
        self.campaigns = (
            sweeper(instance, store, recorder, stopping, max_watched) if sweeper else None
        )
        self.started = False
        self._store_failing = False
        self._replan_at = -math.inf

    @property
    def policy(self) -> Policy:
        """How the instance polls now (its configuration and its adaptive plan)."""
        return self.instance.policy

    # -- jobs ------------------------------------------------------------------------
    def start(self) -> None:
        """Let the plugin prepare (``Provider.start``); a failure is logged, not fatal."""
        if self.started:
            return
        self.started = True
        try:
            self.instance.provider.start()
        except Exception:
            log.exception("provider %s failed to start; polling it anyway", self.name)

    def leads(self) -> bool:
        """True while this replica is the one that polls this instance."""
        return self.leadership.leads(self.name)

    def tick(self) -> None:
        """One scheduled run; logs and swallows every error so the job never dies."""
        if not self.leads():
            return
        self.idle.clear()
        try:
            self._tick()
            self._store_failing = False
        except StoreError as e:
            # The database is away: polling pauses (nothing polled can be recorded)
            # and resumes at the first tick after it is back.
            if not self._store_failing:
                log.warning("polling %s paused: %s", self.name, e)
            self._store_failing = True
        except Exception:
            log.exception("polling %s failed; will retry next tick", self.name)
        finally:
            self.instance.health.last_tick = self.clock.time()
            self.instance.health.ticks += 1
            self.idle.set()

    def verify(self) -> None:
        """Check credentials (and read the balance) with the plugin's cheap call."""
        provider = self.instance.provider
        if not self.caps.verify or not self.leads():
            return  # the plugin checks nothing, or another replica checks
        called = self.instance.call("(verify)", "credential check", provider.verify)
        if called.value is not None:
            self.instance.balance = called.value

    def drain(self) -> None:
        """Apply the reports the provider's feed has for us since last time (not while
        the instance backs off: a feed that fails or answers garbage pauses like any
        other call)."""
        if not self.leads() or self.instance.health.paused():
            return
        provider = self.instance.provider
        called = self.instance.call("(feed)", "drain", lambda: list(provider.drain()))
        reports: list[Report] = []
        for item in called.value or []:
            if isinstance(item, BadReport):  # one unreadable report costs only itself
                self.instance.bad_report(item.message_id or "(feed)", item.error)
            else:
                reports.append(item)
        if not reports:
            return
        try:
            self.recorder.record_reports(
                self.name, self.policy, reports, max_watched=self.max_watched()
            )
        except WatchedSetFull:
            # A feed hands each report out once: keep those about watched messages.
            known = [r for r in reports if self.store.get(self.name, r.message_id) is not None]
            log.warning(
                "provider %s: the watched set is full; dropped %d drained report(s) "
                "about messages not registered",
                self.name,
                len(reports) - len(known),
            )
            self.recorder.record_reports(self.name, self.policy, known)

    # -- a tick ----------------------------------------------------------------------
    def _tick(self) -> None:
        # Keep going while work is due: stopping at the next tick boundary would leave
        # the provider idle until the scheduler's next run during a catch-up. The cap
        # only makes a very long sweep hand the job back now and then.
        deadline = self.clock.monotonic() + self.max_tick
        health = self.instance.health
        try:
            self._replan()
        except StoreError:
            raise
        except Exception:  # a planning bug must not stop polling: keep the current plan
            log.exception("provider %s: could not plan the adaptive schedule", self.name)
        self._give_up()
        if not self.caps.lookup:
            # push-only: its messages settle from reports (or give up); nothing is overdue
            self.instance.health.oldest_pending_sent = self.store.oldest_pending(self.name)
            return
        while (
            not self.stopping.is_set()
            and not health.paused()
            and self.clock.monotonic() < deadline
            and self.leads()
        ):
            due = self.store.due(self.name, self.clock.time(), self.batch_limit)
            if not due:
                break
            if not self._poll(due, deadline):
                break  # nothing could be done before the deadline or the pause
            self._update_lag()
        if self.campaigns is not None and self.instance.provider.tracks_campaigns():
            self.campaigns.sweep_due(lambda: self.clock.monotonic() < deadline and self.leads())
        self._update_lag()
        self.instance.error_log.flush()

    def _replan(self) -> None:
        """Renew the adaptive plan (``schedule = "adaptive"``) every REPLAN_EVERY
        seconds from the messages in the store."""
        settings = self.instance.config.polling
        now = self.clock.time()
        if not settings.planned or now < self._replan_at:
            return
        old = self.instance.plan
        # until there is a plan, look again soon: messages polled meanwhile follow the
        # fixed schedule
        wait = adaptive.REPLAN_EVERY if old else adaptive.REPLAN_COLD
        self._replan_at = now + wait
        rows = self.store.recent_outcomes(self.name, adaptive.SAMPLE)
        plan = adaptive.plan(
            adaptive.observations(rows, now, settings.read_window),
            budget=settings.adaptive_budget,
            max_age=settings.max_age,
            read_window=settings.read_window,
            current=old,
        )
        if plan is None:
            if old is None:
                log.debug("provider %s: too little to learn a schedule from yet", self.name)
            return
        self.instance.plan = plan
        if old is None or (old.pending, old.delivered) != (plan.pending, plan.delivered):
            log.info("provider %s: adaptive schedule %s", self.name, plan.describe())

    def _give_up(self) -> None:
        """End the watches whose final look found no answer within ``final_look_grace``.

        Runs every tick, paused or not: during a long outage this is what ends them.
        """
        while not self.stopping.is_set():
            # Just past give_up_at (accounting), which re-checks each message.
            cutoff = self.clock.time() - self.policy.final_look_grace
            overdue = self.store.ended_before(
                self.name,
                cutoff,
                read_window=self.policy.read_window,
                max_age=self.policy.max_age,
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
        health = self.instance.health
        health.next_due = self.store.oldest_next_poll(self.name)
        health.oldest_pending_sent = self.store.oldest_pending(self.name)

    def _poll(self, due: Sequence[MessageState], deadline: float) -> int:
        """Poll these messages (every due one, also past its watch's end: that is its
        final look); record answers as they arrive. Returns how many got a call."""
        size = self.caps.batch
        refs = [MessageRef(s.id, s.fields, s.sent_at) for s in due]
        chunks = [refs[i : i + size] for i in range(0, len(refs), size)]
        # Each call puts its results on one queue as it ends; this thread records them
        # a batch per wake-up, so one slow call does not hold back the others' results
        # (and a wake-up costs O(1), not a look at every call still in flight).
        answers: queue.SimpleQueue[Future[list[PollResult]]] = queue.SimpleQueue()
        for chunk in chunks:
            self.executor.submit(self._call, chunk, deadline).add_done_callback(answers.put)
        called, remaining = 0, len(chunks)
        while remaining:
            done = [answers.get()]
            # Answers that arrive soon after the first are written with it: a store
            # transaction per handful of answers was most of a poll's CPU at low
            # concurrency. Real time on purpose: this paces writes, not the schedule.
            until = time.monotonic() + COALESCE
            with contextlib.suppress(queue.Empty):
                while len(done) < remaining:
                    wait = until - time.monotonic()
                    done.append(answers.get(timeout=wait) if wait > 0 else answers.get_nowait())
            remaining -= len(done)
            # a call cancelled by a shutdown made no call
            results = [r for future in done if not future.cancelled() for r in future.result()]
            if results:
                self.recorder.record_polls(self.name, self.policy, results)
                called += len(results)
        return called

    def _call(self, refs: list[MessageRef], deadline: float) -> list[PollResult]:
        """One provider call (one id, or a batch); an empty list means it was skipped."""
        if not self.instance.may_call(deadline, self.stopping):
            return []
        ids = [ref.id for ref in refs]
        called = self.instance.call(",".join(ids), "", lambda: self._fetch(refs))
        if called.failure is not None:
            answers: dict[str, Observation | FetchError] = dict.fromkeys(ids, called.failure)
        else:
            answers = called.value or {}
        return [self._result(message_id, answers.get(message_id)) for message_id in ids]

    def _fetch(self, refs: list[MessageRef]) -> dict[str, Observation | FetchError]:
        """The plugin's answer for these messages. A batch whose every answer is a
        failure about the whole provider is that failure (the provider is unwell, not
        each message)."""
        provider = self.instance.provider
        if len(refs) == 1 and self.caps.batch == 1:
            return {refs[0].id: provider.fetch_message(refs[0])}
        answers = dict(provider.fetch_many([ref.id for ref in refs]))
        failures = [a for a in answers.values() if isinstance(a, FetchError) and a.provider_wide]
        if failures and len(failures) == len(refs):
            raise failures[0]
        return answers

    @staticmethod
    def _result(message_id: str, answer: Observation | FetchError | None) -> PollResult:
        if answer is None:
            return PollResult(message_id, Outcome.NOT_FOUND, error="missing from the batch answer")
        if isinstance(answer, Observation):
            return PollResult(message_id, Outcome.OK, answer)
        return PollResult(
            message_id, answer.outcome, error=answer.message, provider_wide=answer.provider_wide
        )

    def shutdown(self, timeout: float) -> bool:
        """Stop taking work; wait up to ``timeout`` for the running tick. True if it ended."""
        ended = self.idle.wait(timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)
        return ended


class Poller:
    """Runs each instance's jobs and the retention purge on a BackgroundScheduler.

    :meth:`update` applies a reload: an unchanged instance keeps its poller (and so its
    pacing and error log); new ones get jobs, removed ones lose theirs.
    """

    def __init__(
        self,
        instances: Iterable[ProviderInstance],
        store: Store,
        recorder: Recorder,
        polling: PollingSettings,
        clock: Clock,
        leadership: Leadership | None = None,
        *,
        sweeper: SweeperFactory | None = None,
    ) -> None:
        self.store = store
        self.sweeper = sweeper
        self.leadership = leadership or Leadership(store)
        self.recorder = recorder
        self.polling = polling
        self.clock = clock
        self.stopping = threading.Event()
        self.pollers: dict[str, ProviderPoller] = {}
        self._started = False
        self.scheduler = BackgroundScheduler(
            executors={"default": JobExecutor(max_workers=64)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        for instance in instances:
            self.pollers[instance.name] = self._poller(instance)

    def _poller(self, instance: ProviderInstance) -> ProviderPoller:
        return ProviderPoller(
            instance,
            self.store,
            self.recorder,
            self.clock,
            self.stopping,
            self.leadership,
            lambda: self.polling.max_watched,
            self.sweeper,
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running) and not self.stopping.is_set()

    def start(self) -> None:
        self._started = True
        now = datetime.now(UTC)
        if self.store.shared:
            self.heartbeat()  # take the leases that are free before the first tick
            self._every(self.heartbeat, HEARTBEAT, "leases", "polling leases")
        self._every(self.purge, PURGE_INTERVAL, "purge", "retention purge", first=now)
        for poller in self.pollers.values():
            self._schedule(poller)
        self.scheduler.start()

    def _every(
        self,
        job: Callable[[], None],
        seconds: float,
        job_id: str,
        name: str,
        first: datetime | None = None,
    ) -> None:
        """Run ``job`` every ``seconds`` (first at ``first``, else one interval from now)."""
        extra = {} if first is None else {"next_run_time": first}
        self.scheduler.add_job(job, "interval", seconds=seconds, id=job_id, name=name, **extra)

    def _schedule(self, poller: ProviderPoller) -> None:
        poller.start()
        name, provider = poller.name, poller.instance.provider
        now = datetime.now(UTC)
        self._every(poller.tick, poller.policy.tick, f"poll:{name}", f"poll {name}", now)
        # without a verify_interval, the credentials are checked once, at start
        verify_every = provider.verify_interval or 10 * 365 * 86400.0
        self._every(poller.verify, verify_every, f"verify:{name}", f"verify {name}", now)
        # a feed's interval may be the instance's own (set from its settings)
        drain_every = provider.drain_interval or DEFAULT_DRAIN_INTERVAL
        if poller.caps.feed:
            first_drain = now + timedelta(seconds=0.1)
            self._every(poller.drain, drain_every, f"drain:{name}", f"drain {name}", first_drain)

    def _unschedule(self, name: str) -> None:
        for kind in ("poll", "verify", "drain"):
            job = self.scheduler.get_job(f"{kind}:{name}")
            if job is not None:
                job.remove()

    def update(self, instances: Iterable[ProviderInstance], polling: PollingSettings) -> None:
        """Reconcile the pollers with a reloaded set of instances."""
        self.polling = polling
        wanted = {instance.name: instance for instance in instances}
        for name, poller in list(self.pollers.items()):
            if wanted.get(name) is not poller.instance:
                if self._started:
                    self._unschedule(name)
                if not poller.shutdown(8.0):
                    log.warning("abandoned an unfinished poll of %s during a reload", name)
                del self.pollers[name]
        for name, instance in wanted.items():
            if name not in self.pollers:
                poller = self.pollers[name] = self._poller(instance)
                if self._started and not self.stopping.is_set():
                    self._schedule(poller)

    def heartbeat(self) -> None:
        """Renew the polling leases and recount what other replicas changed; an
        instance this replica has just taken over is polled at once, not at its next
        tick (which may be ``tick`` seconds away)."""
        gained = self.leadership.beat(sorted(self.pollers))
        for name in gained:
            job = self.scheduler.get_job(f"poll:{name}")
            if job is not None and self.scheduler.running:
                job.modify(next_run_time=datetime.now(UTC))
        try:
            self.store.refresh_counts()
        except StoreError as e:
            log.debug("cannot recount the watched set: %s", e)

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
        try:
            self.leadership.release()
        except StoreError as e:
            log.warning("could not hand over the polling leases (they expire by themselves): %s", e)

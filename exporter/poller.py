"""The polling loop: APScheduler jobs per provider instance.

Every ``tick`` an instance asks the store for due messages and polls them with at most
``concurrency`` calls in flight and at most ``rate_limit`` calls per second, until
nothing is due, the tick's time is used up, or the provider is paused; each answer is
recorded as soon as it arrives. Beside the tick, an instance may have a ``verify`` job
(credentials and balance) and a ``drain`` job (a provider's report feed). Nothing
escapes a job.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from . import accounting, adaptive
from .clock import Clock
from .errorlog import ErrorLog
from .errors import StoreError, WatchedSetFull
from .leadership import HEARTBEAT, Leadership
from .metrics import Metrics
from .model import FetchError, MessageRef, Observation, Outcome
from .provider import Provider
from .ratelimit import RateLimiter
from .recorder import PollResult, Recorder
from .secrets import redact
from .settings import PollingSettings
from .state import CampaignState, MessageState
from .store import Store

if TYPE_CHECKING:
    from .engine import ProviderInstance

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
MAX_TICK = 60.0  # seconds one tick may run while there is due work


class ProviderPoller:
    """Polls one provider instance's due messages, verifies it and drains its feed."""

    def __init__(
        self,
        instance: ProviderInstance,
        store: Store,
        recorder: Recorder,
        metrics: Metrics,
        clock: Clock,
        stopping: threading.Event,
        leadership: Leadership,
    ) -> None:
        self.instance = instance
        self.leadership = leadership
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
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self.started = False
        self._store_failing = False
        self._replan_at = -math.inf
        #: polling.max_watched, for reports drained from a feed (set by the Poller)
        self.recorder_max_watched: int | None = None

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
            self.idle.set()

    def verify(self) -> None:
        """Check credentials (and read the balance) with the plugin's cheap call."""
        provider = self.instance.provider
        if type(provider).verify is Provider.verify or not self.leads():
            return  # the plugin checks nothing, or another replica checks
        started = time.perf_counter()
        try:
            balance = provider.verify()
            outcome, retry_after, error, wide = Outcome.OK, None, None, False
        except FetchError as e:
            balance, outcome, retry_after, error = None, e.outcome, e.retry_after, e.message
            wide = e.provider_wide
        except Exception as e:  # a plugin bug is an unreadable answer, never a dead job
            log.exception("provider %s: verify failed", self.name)
            balance, outcome, retry_after = None, Outcome.INVALID_RESPONSE, None
            error = f"plugin error in verify: {type(e).__name__}"
            wide = False
        self.metrics.request(self.name, outcome, time.perf_counter() - started)
        health = self.instance.health
        was_up = health.up
        health.record(outcome, retry_after, provider_wide=wide)
        if balance is not None:
            self.instance.balance = balance
        if error is not None:
            detail = redact(error)
            health.note_error("(verify)", outcome, detail)
            self.error_log.error(outcome.value, f"credential check: {detail}")
        self._log_health_change(was_up, health.up, f"{outcome.value}: {redact(error or '')}")

    def drain(self) -> None:
        """Apply the reports the provider's feed has for us since last time."""
        if not self.leads():
            return
        started = time.perf_counter()
        try:
            reports = list(self.instance.provider.drain())
            outcome = Outcome.OK
        except FetchError as e:
            reports, outcome = [], e.outcome
            self.instance.health.record(e.outcome, e.retry_after)
            self.error_log.error(e.outcome.value, f"drain: {redact(e.message)}")
        except Exception as e:
            log.exception("provider %s: drain failed", self.name)
            reports, outcome = [], Outcome.INVALID_RESPONSE
            self.error_log.error(outcome.value, f"drain: plugin error {type(e).__name__}")
        self.metrics.request(self.name, outcome, time.perf_counter() - started)
        if outcome is Outcome.OK:
            self.instance.health.record(outcome)
        if not reports:
            return
        max_watched = self.recorder_max_watched
        try:
            self.recorder.record_reports(self.name, self.policy, reports, max_watched=max_watched)
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
        if not self.instance.provider.polls:
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
        if self.instance.provider.tracks_campaigns():
            self._sweep_campaigns(deadline)
        self._update_lag()
        self.error_log.flush()

    def _replan(self) -> None:
        """Renew the adaptive plan (``schedule = "adaptive"``) every REPLAN_EVERY
        seconds from the messages in the store."""
        settings = self.instance.config.polling
        now = self.clock.time()
        if not settings.planned or now < self._replan_at:
            return
        # until there is a plan, look again soon: messages polled meanwhile follow the
        # fixed schedule
        wait = adaptive.REPLAN_EVERY if self.policy.plan else adaptive.REPLAN_COLD
        self._replan_at = now + wait
        rows = self.store.recent_outcomes(self.name, adaptive.SAMPLE)
        old = self.policy.plan
        plan = adaptive.plan(
            adaptive.observations(rows, now, settings.read_window),
            budget=settings.adaptive_budget,
            max_age=settings.max_age,
            read_window=settings.read_window,
            current=old,
        )
        if plan is None:
            if self.policy.plan is None:
                log.debug("provider %s: too little to learn a schedule from yet", self.name)
            return
        self.policy = replace(settings, plan=plan)
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
        health = self.instance.health
        health.next_due = self.store.oldest_next_poll(self.name)
        health.oldest_pending_sent = self.store.oldest_pending(self.name)

    def _poll(self, due: Sequence[MessageState], deadline: float) -> int:
        """Poll these messages (every due one, also past its watch's end: that is its
        final look); record answers as they arrive. Returns how many got a call."""
        size = self.instance.provider.batch_size
        refs = [MessageRef(s.id, s.fields, s.sent_at) for s in due]
        chunks = [refs[i : i + size] for i in range(0, len(refs), size)]
        pending: set[Future[list[PollResult]]] = {
            self.executor.submit(self._call, chunk, deadline) for chunk in chunks
        }
        called = 0
        while pending:
            # Record each answer as it comes (a batch per wake-up): one slow call does
            # not hold back the others' results.
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            results = [result for future in done for result in future.result()]
            if results:
                self.recorder.record_polls(self.name, self.policy, results)
                called += len(results)
        return called

    # -- campaigns ---------------------------------------------------------------------
    def _sweep_campaigns(self, deadline: float) -> None:
        health = self.instance.health
        while (
            not self.stopping.is_set()
            and not health.paused()
            and self.clock.monotonic() < deadline
            and self.leads()
        ):
            due = self.store.due_campaigns(self.name, self.clock.time(), 16)
            if not due:
                return
            for campaign in due:
                if not self._sweep(campaign, deadline):
                    return  # out of time, paused or stopping: the rest waits

    def _sweep(self, campaign: CampaignState, deadline: float) -> bool:
        """Read every page of one campaign and account for each message on it; returns
        False when the sweep could not finish (deadline, pause, stop)."""
        health = self.instance.health
        answers: dict[str, Observation] = {}
        totals: list[int] = []
        pages = iter(self.instance.provider.fetch_campaign(campaign.id))
        failure: FetchError | None = None
        try:
            while True:
                # A sweep started is finished (only a stop or a pause ends it early): its
                # pages may take longer than a tick, and one begun again from page 0 next
                # tick would never end.
                if (
                    self.stopping.is_set()
                    or health.paused()
                    or not self.limiter.acquire(math.inf, self.stopping)
                ):
                    return False
                started = time.perf_counter()
                try:
                    page = next(pages)
                except StopIteration:
                    break
                except FetchError as e:
                    failure = e
                except Exception as e:  # a plugin bug is an invalid answer, never a dead poller
                    log.warning("provider %s: campaign listing failed", self.name, exc_info=True)
                    failure = FetchError(
                        Outcome.INVALID_RESPONSE, f"plugin error: {type(e).__name__}"
                    )
                outcome = failure.outcome if failure is not None else Outcome.OK
                self.metrics.request(self.name, outcome, time.perf_counter() - started)
                was_up = health.up
                health.record(
                    outcome,
                    failure.retry_after if failure else None,
                    provider_wide=bool(failure and failure.provider_wide),
                )
                if outcome is Outcome.RATE_LIMITED:
                    self.limiter.slow_down()
                elif outcome in (Outcome.OK, Outcome.NOT_FOUND):
                    self.limiter.speed_up()
                if failure is not None:
                    if outcome is not Outcome.NOT_FOUND:
                        detail = redact(failure.message)
                        self.error_log.error(outcome.value, f"campaign {campaign.id}: {detail}")
                        health.note_error(f"campaign {campaign.id}", outcome, detail)
                        self._log_health_change(was_up, health.up, f"{outcome.value}: {detail}")
                    break
                for report in page.reports:
                    answers[report.message_id] = report.observation
                if page.total is not None:
                    totals.append(page.total)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        return self._finish_sweep(campaign, answers, totals, failure)

    def _finish_sweep(
        self,
        campaign: CampaignState,
        answers: dict[str, Observation],
        totals: list[int],
        failure: FetchError | None,
    ) -> bool:
        now = self.clock.time()
        policy = self.policy
        if failure is not None and failure.outcome is not Outcome.NOT_FOUND:
            # Apply what the pages before the failure said; wait for a whole sweep to
            # tell which messages are missing.
            self._record_sweep(campaign, answers, ())
            with self._rng_lock:
                accounting.campaign_failed(
                    campaign, failure.outcome, redact(failure.message), now, policy, self._rng
                )
            self.store.save_campaign(campaign)
            return True
        watched = self.store.campaign_watched(self.name, campaign.id).ids
        # A sweep saw every message only if it found as many as the provider says the
        # campaign has: pages can shift while they are read (an item moved to a page
        # already read), and a message missed that way is not "not found".
        consistent = not totals or len(answers) >= max(totals)
        unseen = watched - answers.keys() if consistent else set()
        self._record_sweep(campaign, answers, unseen)
        after = self.store.campaign_watched(
            self.name, campaign.id, policy.read_window, policy.max_age, default_ttl=policy.ttl
        )
        found = len(after.ids | answers.keys())
        accounting.campaign_swept(
            campaign,
            now,
            policy,
            found=max(found, campaign.messages),
            earliest=after.earliest,
            final_look=after.final_look,
            deadlines=after.deadlines,
            complete=True,
        )
        self.store.save_campaign(campaign)
        return True

    def _record_sweep(
        self, campaign: CampaignState, answers: dict[str, Observation], unseen: Iterable[str]
    ) -> None:
        try:
            self.recorder.record_campaign(
                campaign,
                self.policy,
                answers,
                unseen,
                max_watched=self.recorder_max_watched or 10**12,
            )
        except WatchedSetFull as e:
            self.error_log.error("full", f"campaign {campaign.id}: {e}")

    def _call(self, refs: list[MessageRef], deadline: float) -> list[PollResult]:
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
        ids = [ref.id for ref in refs]
        started = time.perf_counter()  # call latency is real time, whatever the clock
        answers, outcome, retry_after, bug = self._fetch(refs)
        self.metrics.request(self.name, outcome, time.perf_counter() - started)
        was_up = health.up
        failure = next((a for a in answers.values() if isinstance(a, FetchError)), None)
        provider_wide = failure is not None and failure.provider_wide and len(answers) == len(refs)
        health.record(outcome, retry_after, provider_wide=provider_wide)
        if outcome is Outcome.RATE_LIMITED:
            self.limiter.slow_down()
        elif outcome in (Outcome.OK, Outcome.NOT_FOUND):
            self.limiter.speed_up()
        if outcome not in (Outcome.OK, Outcome.NOT_FOUND):
            detail = redact(failure.message) if failure else outcome.value
            self.error_log.error(outcome.value, detail, exc_info=bug)
            health.note_error(",".join(ids), outcome, detail)
        detail = f"{failure.outcome.value}: {redact(failure.message)}" if failure else "failed"
        self._log_health_change(was_up, health.up, detail)
        return [self._result(message_id, answers.get(message_id)) for message_id in ids]

    def _fetch(
        self, refs: list[MessageRef]
    ) -> tuple[dict[str, Observation | FetchError], Outcome, float | None, Exception | None]:
        """Call the plugin; every exception becomes an outcome (a plugin bug is also returned)."""
        provider = self.instance.provider
        ids = [ref.id for ref in refs]
        try:
            if len(refs) == 1 and provider.batch_size == 1:
                return {ids[0]: provider.fetch_message(refs[0])}, Outcome.OK, None, None
            return dict(provider.fetch_many(ids)), Outcome.OK, None, None
        except FetchError as e:
            return dict.fromkeys(ids, e), e.outcome, e.retry_after, None
        except Exception as e:  # a plugin bug is an invalid answer, never a dead poller
            # Its text is not shown: a careless plugin may have put a secret in it.
            error = FetchError(Outcome.INVALID_RESPONSE, f"plugin error: {type(e).__name__}")
            return dict.fromkeys(ids, error), error.outcome, None, e

    @staticmethod
    def _result(message_id: str, answer: Observation | FetchError | None) -> PollResult:
        if answer is None:
            return PollResult(message_id, Outcome.NOT_FOUND, error="missing from the batch answer")
        if isinstance(answer, Observation):
            return PollResult(message_id, Outcome.OK, answer)
        return PollResult(
            message_id, answer.outcome, error=answer.message, provider_wide=answer.provider_wide
        )

    def _log_health_change(self, was_up: bool, is_up: bool, detail: str) -> None:
        if was_up and not is_up:
            log.warning("provider %s is down (%s); backing off", self.name, detail)
        elif is_up and not was_up:
            log.info("provider %s is answering again", self.name)

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
        metrics: Metrics,
        polling: PollingSettings,
        clock: Clock,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.leadership = leadership or Leadership(store)
        self.recorder = recorder
        self.metrics = metrics
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
        poller = ProviderPoller(
            instance,
            self.store,
            self.recorder,
            self.metrics,
            self.clock,
            self.stopping,
            self.leadership,
        )
        poller.recorder_max_watched = self.polling.max_watched
        return poller

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
        if provider.drain_interval:
            first_drain = now + timedelta(seconds=0.1)
            self._every(
                poller.drain, provider.drain_interval, f"drain:{name}", f"drain {name}", first_drain
            )

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
            self.pollers[name].recorder_max_watched = polling.max_watched

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

"""Campaigns: a registration that stands for all of a campaign's messages.

A campaign is registered by its id (:class:`~viber_exporter.registration.CampaignRegistration`),
stored with its own row and schedule, and *swept*: every page of the provider's
listing of it is read (``Provider.fetch_campaign``), each message on it is accounted
for as if polled alone (new ones are stored as part of the campaign), and the
campaign is scheduled again from what its messages still wait for. This module holds
the sweep and the rules of a campaign's schedule; the store keeps its row and the
recorder applies each sweep's answers.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterable, Sequence

from .accounting import DEADLINE_SLACK, MESSAGE_RETRY_BASE, Policy, before_deadline
from .backoff import backoff
from .config.model import PollingSettings
from .errors import WatchedSetFull
from .instance import ProviderInstance
from .model import PROVIDER_FAILURES, FetchError, Observation, Outcome
from .recorder import Recorder
from .secrets import redact
from .store.base import Store
from .store.rows import CampaignState

#: campaigns read from the store at a time
DUE_BATCH = 16


class CampaignSweeper:
    """Sweeps one provider instance's due campaigns (for its poller, each tick)."""

    def __init__(
        self,
        instance: ProviderInstance,
        store: Store,
        recorder: Recorder,
        stopping: threading.Event,
        max_watched: Callable[[], int],
    ) -> None:
        self.instance = instance
        self.name = instance.name
        self.store = store
        self.recorder = recorder
        self.stopping = stopping
        self.max_watched = max_watched
        self._rng = random.Random()

    def sweep_due(self, go_on: Callable[[], bool]) -> None:
        """Sweep the due campaigns while ``go_on()`` (time left, still leading)."""
        clock = self.instance.clock
        while go_on() and not self.stopping.is_set() and not self.instance.health.paused():
            due = self.store.due_campaigns(self.name, clock.time(), DUE_BATCH)
            if not due:
                return
            for campaign in due:
                if not self.sweep(campaign):
                    return  # paused or stopping: the rest waits

    def sweep(self, campaign: CampaignState) -> bool:
        """Read every page of one campaign and account for each message on it; returns
        False when the sweep could not finish (a pause or a stop)."""
        instance = self.instance
        answers: dict[str, Observation] = {}
        totals: list[int] = []
        pages = iter(instance.provider.fetch_campaign(campaign.id))
        failure: FetchError | None = None
        subject = f"campaign {campaign.id}"
        try:
            while True:
                # A sweep started is finished (only a stop or a pause ends it early): its
                # pages may take longer than a tick, and one begun again from page 0 next
                # tick would never end.
                if not instance.may_call(math.inf, self.stopping):
                    return False
                try:
                    called = instance.call(subject, subject, lambda: next(pages))
                except StopIteration:
                    break
                if called.failure is not None:
                    failure = called.failure
                    break
                page = called.value
                assert page is not None
                for report in page.reports:
                    answers[report.message_id] = report.observation
                if page.total is not None:
                    totals.append(page.total)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        self._finish(campaign, answers, totals, failure)
        return True

    def _finish(
        self,
        campaign: CampaignState,
        answers: dict[str, Observation],
        totals: list[int],
        failure: FetchError | None,
    ) -> None:
        now = self.instance.clock.time()
        policy = self.instance.policy
        if failure is not None and failure.outcome is not Outcome.NOT_FOUND:
            # Apply what the pages before the failure said; wait for a whole sweep to
            # tell which messages are missing.
            self._record(campaign, policy, answers, ())
            campaign_failed(
                campaign, failure.outcome, redact(failure.message), now, policy, self._rng
            )
            self.store.save_campaign(campaign)
            return
        watched = self.store.campaign_watched(self.name, campaign.id).ids
        # A sweep saw every message only if it found as many as the provider says the
        # campaign has: pages can shift while they are read (an item moved to a page
        # already read), and a message missed that way is not "not found".
        consistent = not totals or len(answers) >= max(totals)
        unseen = watched - answers.keys() if consistent else set()
        self._record(campaign, policy, answers, unseen)
        after = self.store.campaign_watched(
            self.name, campaign.id, policy.read_window, policy.max_age, default_ttl=policy.ttl
        )
        found = len(after.ids | answers.keys())
        campaign_swept(
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

    def _record(
        self,
        campaign: CampaignState,
        policy: Policy,
        answers: dict[str, Observation],
        unseen: Iterable[str],
    ) -> None:
        try:
            self.recorder.record_campaign(
                campaign, policy, answers, unseen, max_watched=self.max_watched()
            )
        except WatchedSetFull as e:
            self.instance.error_log.error("full", f"campaign {campaign.id}: {e}")


# -- the rules of a campaign's schedule --------------------------------------------------
def campaign_swept(
    campaign: CampaignState,
    now: float,
    policy: PollingSettings,
    *,
    found: int,
    earliest: float | None,
    complete: bool,
    final_look: float | None = None,
    deadlines: Sequence[float] = (),
) -> None:
    """Schedule a campaign after a sweep that read (``complete``) or did not read all
    its pages. ``found``: messages of it stored so far; ``earliest``: the earliest next
    poll among its watched messages; ``final_look``: their earliest watch end;
    ``deadlines``: the validity deadlines of its pending messages, in order.

    One sweep answers for every message, so the campaign follows its own schedule
    (:func:`campaign_step` of its sweeps) and waits that long for a message that wants
    an earlier poll. Only a final look does not wait: the sweep comes at most half of
    ``final_look_grace`` after the earliest watch end (which would otherwise end
    without an answer), so the final looks of messages delivered close together are
    taken by one sweep. While late messages may still appear (until
    ``discover_until``) it is swept even with none watched; after that, and with none
    watched, it is settled.
    """
    campaign.last_poll_at = now
    campaign.messages = max(campaign.messages, found)
    if complete:
        campaign.polls += 1
        campaign.errors = 0
        campaign.last_error = None
    step = campaign_step(policy, campaign.polls)
    candidates = []
    if earliest is not None:
        due = max(earliest, now + step)
        if final_look is not None:
            due = min(due, max(final_look, now) + policy.final_look_grace / 2)
        candidates.append(due)
    if now < campaign.discover_until:
        candidates.append(min(now + step, campaign.discover_until))  # one more look at the end
    if candidates:
        # A sweep just after the next validity deadline of a pending message, as for
        # one message (:func:`~viber_exporter.accounting.before_deadline`).
        upcoming = next((d for d in deadlines if d + DEADLINE_SLACK > now), None)
        candidates.append(before_deadline(upcoming, now, min(candidates)))
        campaign.next_poll = min(candidates)
        return
    campaign.next_poll = None
    campaign.settled_at = now
    if not found:
        campaign.last_error = (
            "no message of this campaign appeared within not_found_grace "
            f"({policy.not_found_grace:g}s) after its registration"
        )


def campaign_step(policy: PollingSettings, sweeps: int) -> float:
    """The wait after a campaign's ``sweeps`` complete sweeps: the schedule's steps, then
    (where a single message's last step repeats) doubling, up to a quarter of
    ``max_age``. A sweep costs one call per page however many of its messages are still
    watched, so the tail, which is mostly final looks, is swept rarely."""
    schedule = policy.schedule
    if sweeps < len(schedule):
        return schedule[sweeps]
    last = schedule[-1]
    return max(last, min(last * 2.0 ** (sweeps - len(schedule) + 1), policy.max_age / 4))


def campaign_failed(
    campaign: CampaignState,
    outcome: Outcome,
    message: str,
    now: float,
    policy: PollingSettings,
    rng: random.Random,
) -> None:
    """A sweep that stopped on a failed call. As for one message (:func:`~viber_exporter.accounting.call_failed`):
    when the provider is failing it keeps its place (the instance is paused with
    backoff); otherwise it backs off on its own, never later than its schedule."""
    campaign.last_error = f"{outcome.value}: {message}"[:500]
    campaign.last_poll_at = now
    if outcome is Outcome.RATE_LIMITED:
        return
    campaign.errors += 1
    if outcome not in PROVIDER_FAILURES:
        cap = campaign_step(policy, campaign.polls)
        campaign.next_poll = now + backoff(campaign.errors, MESSAGE_RETRY_BASE, cap, rng)

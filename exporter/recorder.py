"""The one path every answer takes into the store and the metrics.

Polls and pushed delivery reports both end here: the state change is computed from
the row as stored *now* (inside the write transaction), committed, and only then
counted and announced to ``message_status_changed`` hooks.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import accounting
from .clock import Clock
from .config.model import PollingSettings
from .events import AnswerProblem, Event, StatusChanged
from .metrics import Metrics
from .model import Observation, Outcome, Report
from .secrets import redact
from .store.base import Store, Update
from .store.rows import CampaignState, MessageState, SentSource

log = logging.getLogger(__name__)


_CLOCK_HINT = "; check the instance's timezone setting and the clocks"
_PROBLEM_TEXT = {
    "unreadable_field": "could not be read; the rest of the answer was used",
    "time_in_future": "is in the future" + _CLOCK_HINT,
    "time_before_sent": "is before the message was sent" + _CLOCK_HINT,
    "time_out_of_range": "is more than 400 days before the registration; ignored",
    "price_out_of_range": "is over the per-message price ceiling; ignored",
    "inconsistent_answer": "disagrees with the rest of the answer (the parts were counted)",
}


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one provider call said about one due message."""

    message_id: str
    outcome: Outcome
    observation: Observation | None = None
    error: str = ""
    provider_wide: bool = False


class Recorder:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        on_change: Callable[[StatusChanged], None],
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.on_change = on_change
        self.clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._logged: set[tuple[str, str, str]] = set()

    def record_polls(
        self, provider: str, policy: PollingSettings, results: Sequence[PollResult]
    ) -> None:
        now = self.clock.time()
        updates = [(r.message_id, self._poll_update(r, now, policy)) for r in results]
        self._commit(provider, updates)

    def record_give_ups(
        self, provider: str, policy: PollingSettings, message_ids: Sequence[str]
    ) -> int:
        """End these watches without an answer (see :func:`accounting.give_up`); return
        how many ended (a message answered meanwhile is left alone)."""
        now = self.clock.time()
        # A set, not a count: the store may run an update twice (a transaction redone
        # after losing a race with another replica).
        ended: set[str] = set()

        def update(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            events = None if state is None else accounting.give_up(state, now, policy)
            if state is None or events is None:
                return None, []
            ended.add(state.id)
            return state, events

        self._commit(provider, [(message_id, update) for message_id in message_ids])
        return len(ended)

    def record_reports(
        self,
        provider: str,
        policy: PollingSettings,
        reports: Sequence[Report],
        *,
        max_watched: int | None = None,
    ) -> None:
        """Apply pushed or drained reports; a message not yet watched is registered from
        its report (WatchedSetFull, storing nothing, beyond ``max_watched``)."""
        now = self.clock.time()
        updates = [
            (r.message_id, self._report_update(provider, r.message_id, r.observation, now, policy))
            for r in reports
        ]
        self._commit(provider, updates, max_watched=max_watched)

    def record_campaign(
        self,
        campaign: CampaignState,
        policy: PollingSettings,
        answers: Mapping[str, Observation],
        unseen: Iterable[str],
        *,
        max_watched: int,
    ) -> None:
        """Apply one sweep of a campaign: each message answered is accounted for as a
        poll of it alone (a new one is stored first, as part of the campaign); each
        watched one the sweep did not list (``unseen``) as a poll the provider could not
        answer. Raises WatchedSetFull, storing nothing, when the new ones would not fit."""
        now = self.clock.time()
        provider = campaign.provider

        def missing(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            if state is None or not state.watched:
                return None, []
            return state, accounting.not_found(state, now, policy)

        updates: list[tuple[str, Update]] = [
            (i, self._report_update(provider, i, obs, now, policy, campaign=campaign))
            for i, obs in answers.items()
        ]
        updates += [(message_id, missing) for message_id in unseen]
        self._commit(provider, updates, max_watched=max_watched)

    def _commit(
        self,
        provider: str,
        updates: Sequence[tuple[str, Update]],
        *,
        max_watched: int | None = None,
    ) -> None:
        if not updates:
            return
        events = self.store.apply(provider, updates, max_watched=max_watched)  # persist first …
        self.metrics.record(events)  # … count second, then tell the plugins
        for event in events:
            if isinstance(event, StatusChanged):
                self.on_change(event)
            elif isinstance(event, AnswerProblem):
                self._log_once(event)

    def _log_once(self, problem: AnswerProblem) -> None:
        """Each kind of answer problem is logged once per provider and field."""
        key = (problem.provider, problem.problem, problem.detail)
        with self._rng_lock:
            if key in self._logged:
                return
            self._logged.add(key)
        what = _PROBLEM_TEXT.get(problem.problem, "was not trusted")
        log.warning(
            "provider %s: %s in an answer %s (counted in "
            "viber_provider_answer_problems_total, logged once)",
            problem.provider,
            problem.detail,
            what,
        )

    def _poll_update(self, result: PollResult, now: float, policy: PollingSettings) -> Update:
        def update(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            if state is None or not state.watched:
                return None, []  # deleted, or settled by a callback, while the call ran
            events: list[Event]
            if result.outcome is Outcome.OK and result.observation is not None:
                events = accounting.observe(state, result.observation, now, policy)
            elif result.outcome is Outcome.NOT_FOUND:
                events = accounting.not_found(state, now, policy)
            else:
                with self._rng_lock:
                    events = accounting.call_failed(
                        state,
                        result.outcome,
                        redact(result.error),
                        now,
                        policy,
                        self._rng,
                        provider_wide=result.provider_wide,
                    )
            return state, events

        return update

    def _report_update(
        self,
        provider: str,
        message_id: str,
        obs: Observation,
        now: float,
        policy: PollingSettings,
        *,
        campaign: CampaignState | None = None,
    ) -> Update:
        """A pushed or drained report, or (``campaign``) an item of a campaign's sweep,
        which counts as a poll of the message. A message not stored yet is stored from
        it (as part of the campaign, when there is one)."""

        def update(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            if state is None:
                state = MessageState(
                    provider=provider,
                    id=message_id,
                    registered_at=now,
                    # the provider's own send time, when it gives one, replaces this
                    sent_at=campaign.sent_at if campaign else now,
                    sent_source=SentSource.REGISTERED,
                    next_poll=now + policy.first_wait(),
                    campaign=campaign.id if campaign else None,
                    # what the answer says the message is (e.g. a failover flow), so
                    # its later polls ask the right endpoint
                    extra=json.dumps(dict(obs.fields), sort_keys=True) if obs.fields else None,
                    ttl=campaign.ttl if campaign else None,
                    # a campaign's labels apply to its messages; a pushed report of a
                    # message nobody registered has none
                    labels=campaign.labels if campaign else None,
                )
            elif campaign is not None and not state.watched:
                return None, []  # settled already (a report may have settled it meanwhile)
            return state, accounting.observe(state, obs, now, policy, polled=campaign is not None)

        return update

"""The one path every answer takes into the store and the metrics.

Polls and pushed delivery reports both end here: the state change is computed from
the row as stored *now* (inside the write transaction), committed, and only then
counted and announced to ``message_status_changed`` hooks.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from . import accounting
from .clock import Clock
from .config import PollingSettings
from .metrics import Metrics
from .model import Observation, Outcome
from .pluginhost import PluginHost
from .secrets import redact
from .state import Event, MessageState, SentSource, StatusChanged
from .store import Store, Update

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one provider call said about one due message."""

    message_id: str
    outcome: Outcome
    observation: Observation | None = None
    error: str = ""


class Recorder:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        host: PluginHost,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.host = host
        self.clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

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
        ended = 0

        def update(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            nonlocal ended
            events = None if state is None else accounting.give_up(state, now, policy)
            if events is None:
                return None, []
            ended += 1
            return state, events

        self._commit(provider, [(message_id, update) for message_id in message_ids])
        return ended

    def record_callback(
        self,
        provider: str,
        policy: PollingSettings,
        reports: Sequence[tuple[str, Observation]],
    ) -> None:
        """Apply pushed reports; a message not yet watched is registered from its report."""
        now = self.clock.time()
        updates = [
            (message_id, self._callback_update(provider, message_id, obs, now, policy))
            for message_id, obs in reports
        ]
        self._commit(provider, updates)

    def _commit(self, provider: str, updates: Sequence[tuple[str, Update]]) -> None:
        if not updates:
            return
        events = self.store.apply(provider, updates)  # persist first …
        self.metrics.record(events)  # … count second
        for event in events:
            if isinstance(event, StatusChanged):
                self.host.notify_status_changed(
                    provider=event.provider,
                    message_id=event.message_id,
                    old_status=event.old_status.value,
                    new_status=event.new_status.value,
                    reason=event.reason,
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
                        state, result.outcome, redact(result.error), now, policy, self._rng
                    )
            return state, events

        return update

    def _callback_update(
        self, provider: str, message_id: str, obs: Observation, now: float, policy: PollingSettings
    ) -> Update:
        def update(state: MessageState | None) -> tuple[MessageState | None, list[Event]]:
            if state is None:
                state = MessageState(
                    provider=provider,
                    id=message_id,
                    registered_at=now,
                    sent_at=now,
                    sent_source=SentSource.REGISTERED,
                    next_poll=now + policy.step(0),
                )
            return state, accounting.observe(state, obs, now, policy, polled=False)

        return update

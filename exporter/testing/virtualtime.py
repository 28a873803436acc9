"""The real exporter against the mock providers, in virtual time.

A :class:`VirtualRun` shares one :class:`~exporter.clock.ManualClock` between the mock
Routee and BSG APIs (served over real HTTP on loopback) and an :class:`Exporter` whose
provider pollers are ticked directly, one simulated tick at a time. Waits inside the
exporter (the rate limiter's pacing) move the clock instead of sleeping, so a simulated
day runs in seconds and gives the same answer on a fast or a slow machine. Tests use it
to compare the exporter's counters with the mock's ground truth; ``bench/`` uses it to
count provider calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ..clock import ManualClock
from ..config.load import parse_config
from ..engine import Exporter
from ..httpserver import BackgroundServer
from ..pluginhost import PluginHost
from ..registration import CampaignRegistration, MessageRegistration
from .mock import Faults, MockProviders, exporter_config
from .simulation import Mix, Plan

#: Counter-like sample suffixes that add up across restarts.
_ADDITIVE = ("_total", "_count", "_sum", "_bucket")


class VirtualRun:
    """Mock providers and an exporter on one virtual clock; ``close()`` when done."""

    def __init__(
        self,
        host: PluginHost,
        state_path: Path,
        *,
        mix: Mix | None = None,
        seed: int | None = None,
        polling: Mapping[str, Any] | None = None,
        routee: Mapping[str, Any] | None = None,
        bsg: Mapping[str, Any] | None = None,
        start: float = 1_800_000_000.0,
        extra: str = "",
    ) -> None:
        """``extra``: more TOML after the generated configuration (e.g. label tables)."""
        self.clock = ManualClock(start)
        self.host = host
        self.mock = MockProviders(mix, seed=seed, clock=self.clock.time)
        self.server = BackgroundServer(self.mock, "127.0.0.1", 0, name="mock")
        self.server.start()
        text = exporter_config(self.server.url, state_path, polling=polling, routee=routee, bsg=bsg)
        text += extra
        self.config = parse_config(text, host.provider_types(), environ={})
        self.exporter = self._exporter()
        self.registered: set[tuple[str, str]] = set()
        self._banked: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def _exporter(self) -> Exporter:
        return Exporter(self.config, self.host, registry=CollectorRegistry(), clock=self.clock)

    # -- driving ---------------------------------------------------------------------
    def send(self, provider: str, count: int = 1, fate: str | None = None) -> list[Plan]:
        """Have the mock "send" messages now and register them, as an application would."""
        now = self.clock.time()
        plans = [self.mock.simulation.create(provider, now, fate) for _ in range(count)]
        self.exporter.register(
            [
                MessageRegistration(
                    p.provider,
                    p.id,
                    sent_at=p.created,
                    fields={"tracking": "failover"} if p.flow else {},
                )
                for p in plans
            ]
        )
        self.registered.update((p.provider, p.id) for p in plans)
        return plans

    def send_campaign(
        self, provider: str, count: int, fate: str | None = None
    ) -> tuple[str, list[Plan]]:
        """Have the mock send ``count`` messages as one campaign now, and register the
        campaign (not its messages), as an application would."""
        campaign, plans = self.mock.simulation.create_campaign(
            provider, self.clock.time(), count, fate
        )
        self.exporter.register(
            [CampaignRegistration(provider, campaign, sent_at=self.clock.time())]
        )
        self.registered.update((p.provider, p.id) for p in plans)
        return campaign, plans

    def set_faults(self, faults: Faults) -> None:
        self.mock.faults = faults

    def tick(self, seconds: float) -> None:
        tick(self.exporter, self.clock, seconds)

    def run(self, seconds: float, tick: float) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            self.tick(tick)

    def run_until_settled(self, tick: float, limit: float) -> bool:
        """Tick until no message is watched; False if that took longer than ``limit``."""
        end = self.clock.monotonic() + limit
        store = self.exporter.store
        while store.total_watched() or sum(store.campaign_counts().values()):
            if self.clock.monotonic() >= end:
                return False
            self.tick(tick)
        return True

    def restart(self) -> None:
        """Stop the exporter cleanly and start a new one on the same state; its counters
        start at zero, so the old ones are banked for :meth:`value`."""
        self._bank(self.exporter.registry)
        self.exporter.stop(timeout=5)
        self.exporter = self._exporter()

    def close(self) -> None:
        if not self.exporter.store.closed:
            self.exporter.stop(timeout=5)
        self.server.stop()

    # -- reading ---------------------------------------------------------------------
    def _bank(self, registry: CollectorRegistry) -> None:
        for key, value in _additive_samples(registry).items():
            self._banked[key] = self._banked.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        """A counter's total over every exporter process of the run (restarts included)."""
        key = (name, frozenset(labels.items()))
        return self._banked.get(key, 0.0) + _additive_samples(self.exporter.registry).get(key, 0.0)

    def truth(self) -> dict[str, Any]:
        """The mock's ground truth now, for the registered messages."""
        return self.mock.simulation.truth(self.clock.time(), only=self.registered)


def tick(exporter: Exporter, clock: ManualClock, seconds: float) -> None:
    """One tick of every provider poller of an exporter that was not started, then move
    the clock to ``seconds`` after the tick began (a tick paced by the rate limit may
    already have used them up)."""
    end = clock.monotonic() + seconds
    for poller in exporter.poller.pollers.values():
        poller.max_tick = seconds  # as APScheduler would start the next tick by then
        poller.tick()
    clock.advance_to(end)


def _additive_samples(
    registry: CollectorRegistry,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.endswith(_ADDITIVE)
    }

"""The running exporter: store, provider instances, metrics, recorder and poller together.

The HTTP server and the command line sit on top of :class:`Exporter`; tests drive it
directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from .clock import SYSTEM_CLOCK, Clock
from .config import Config
from .errors import ViberExporterError, WatchedSetFull
from .health import ProviderHealth
from .http import ProviderHttp
from .metrics import MAX_REASONS, Metrics, ProviderSnapshot, StateCollector
from .model import Observation
from .pluginhost import PluginHost
from .poller import Poller, ProviderInstance
from .recorder import Recorder
from .store import Store

log = logging.getLogger(__name__)


class RegistrationError(ViberExporterError):
    """A registration batch had invalid items; nothing was stored."""

    def __init__(self, details: list[tuple[int, str]]) -> None:
        self.details = details
        super().__init__(f"{len(details)} invalid item(s); nothing was stored")


@dataclass(frozen=True)
class Registration:
    provider: str
    id: str
    sent_at: float | None = None


@dataclass(frozen=True)
class RegistrationResult:
    accepted: int
    duplicates: int


class Exporter:
    def __init__(
        self,
        config: Config,
        host: PluginHost,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.host = host
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.store = Store(config.exporter.state_path)
        self.metrics = Metrics(self.registry, config.metrics)
        self.instances = self._instances(config, {})
        self.registry.register(StateCollector(self.store, self.snapshots, clock.time))
        self.recorder = Recorder(self.store, self.metrics, host, clock)
        self.poller = self._poller()
        self._lifecycle = threading.Lock()

    def _instances(
        self, config: Config, current: dict[str, ProviderInstance]
    ) -> dict[str, ProviderInstance]:
        """Provider instances for ``config``, reusing each current one whose config is unchanged."""
        instances = {}
        for name, pc in config.providers.items():
            if not pc.enabled:
                continue
            existing = current.get(name)
            if existing is not None and existing.config == pc:
                instances[name] = existing
                continue
            provider = pc.type.cls(name, pc.settings, ProviderHttp(pc.timeout, pc.concurrency))
            instances[name] = ProviderInstance(pc, provider, ProviderHealth(self.clock))
            self.metrics.add_provider(name)
            self.metrics.seed_reasons(name, self.store.failure_reasons(name, MAX_REASONS))
        return instances

    def _poller(self) -> Poller:
        instances = list(self.instances.values())
        return Poller(
            instances, self.store, self.recorder, self.metrics, self.config.polling, self.clock
        )

    def reload(self, config: Config) -> None:
        """Apply a new, valid config. The store and the counters survive; a removed
        instance's messages stay stored but are not polled."""
        old_exporter, new_exporter = self.config.exporter, config.exporter
        restart_only = [
            key
            for key, old, new in (
                ("exporter.listen", old_exporter.listen, new_exporter.listen),
                ("exporter.state_path", old_exporter.state_path, new_exporter.state_path),
                ("exporter.tls_*", old_exporter.tls, new_exporter.tls),
                ("metrics", self.config.metrics, config.metrics),
            )
            if old != new
        ]
        if restart_only:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart_only))
            kept = replace(
                new_exporter,
                listen_host=old_exporter.listen_host,
                listen_port=old_exporter.listen_port,
                state_path=old_exporter.state_path,
                tls=old_exporter.tls,
            )
            config = replace(config, metrics=self.config.metrics, exporter=kept)
        with self._lifecycle:
            running = self.poller.running
            self.poller.stop()
            old = self.instances
            self.config = config
            self.instances = self._instances(config, old)
            for name, instance in old.items():
                if self.instances.get(name) is not instance:
                    instance.provider.close()
            self.poller = self._poller()
            if running:
                self.poller.start()
        logging.getLogger().setLevel(config.exporter.log_level.upper())
        log.info(
            "now polling %d provider instance(s): %s",
            len(self.instances),
            ", ".join(self.instances),
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.poller.start()
        log.info(
            "polling %d provider instance(s): %s", len(self.instances), ", ".join(self.instances)
        )

    def stop(self, timeout: float = 8.0) -> None:
        with self._lifecycle:
            self.poller.stop(timeout)
        for instance in self.instances.values():
            instance.provider.close()
        self.store.close()

    @property
    def ready(self) -> bool:
        return not self.store.closed and self.poller.running

    def snapshots(self) -> list[ProviderSnapshot]:
        return [
            ProviderSnapshot(
                name,
                i.config.plugin,
                i.config.type.version,
                i.health.up,
                i.health.last_success,
                i.health.overdue_since,
            )
            for name, i in self.instances.items()
        ]

    # -- registration ------------------------------------------------------------------
    def check_registration(self, provider: str, message_id: object) -> str | None:
        """Why this item cannot be registered, or None."""
        instance = self.instances.get(provider)
        if instance is None:
            configured = self.config.providers.get(provider)
            if configured is not None:
                return f"provider {provider!r} is disabled"
            known = ", ".join(sorted(self.instances)) or "none"
            return f"unknown provider {provider!r} (configured: {known})"
        if not isinstance(message_id, str):
            return "id must be a string"
        problem = instance.provider.check_id(message_id)
        return f"invalid id for {provider}: {problem}" if problem else None

    def register(self, items: Sequence[Registration]) -> RegistrationResult:
        """Validate the whole batch, then store it durably. Raises RegistrationError,
        WatchedSetFull or StoreError, storing nothing."""
        details = [
            (index, problem)
            for index, item in enumerate(items)
            if (problem := self.check_registration(item.provider, item.id)) is not None
        ]
        if details:
            for item in items:
                if item.provider in self.instances:
                    self.metrics.registrations.labels(item.provider, "rejected").inc()
            raise RegistrationError(details)
        by_provider: dict[str, list[tuple[str, float | None]]] = {}
        for item in items:
            by_provider.setdefault(item.provider, []).append((item.id, item.sent_at))
        batches = {
            provider: (pairs, self.instances[provider].config.polling.step(0))
            for provider, pairs in by_provider.items()
        }
        counts = self.store.register(batches, self.clock.time(), self.config.polling.max_watched)
        for provider, (new, dup) in counts.items():
            self.metrics.registrations.labels(provider, "accepted").inc(new)
            self.metrics.registrations.labels(provider, "duplicate").inc(dup)
        return RegistrationResult(
            sum(new for new, _ in counts.values()), sum(dup for _, dup in counts.values())
        )

    def ingest_reports(self, provider: str, reports: Sequence[tuple[str, Observation]]) -> None:
        """Feed pushed delivery reports through the same accounting path as polls.

        Reports about messages not stored yet register them, within ``max_watched``
        (WatchedSetFull otherwise, storing nothing).
        """
        instance = self.instances[provider]
        new = {
            message_id for message_id, _ in reports if self.store.get(provider, message_id) is None
        }
        limit = self.config.polling.max_watched
        if new and self.store.total_watched() + len(new) > limit:
            raise WatchedSetFull(f"the watched set is full (polling.max_watched = {limit})")
        self.recorder.record_callback(provider, instance.config.polling, reports)

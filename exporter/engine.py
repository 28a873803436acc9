"""The running exporter: store, provider instances, metrics, recorder and poller together.

Every rule that a request or a poll can touch lives here or below: the HTTP handlers
and the command line call these methods and nothing else, so a rule is written once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from . import exposition
from . import labels as labels_module
from .accounting import Policy
from .callbacks import CallbackReply, CallbackRequest
from .campaigns import CampaignSweeper
from .clock import SYSTEM_CLOCK, Clock
from .config.model import Config
from .durations import format_duration
from .errors import Refused, StoreError, ViberExporterError, WatchedSetFull
from .figures import Figures
from .http import ProviderHttp
from .instance import ProviderInstance
from .leadership import Leadership, holder_for, shown
from .metrics import MAX_REASONS, Metrics, ProviderSnapshot, StateCollector
from .model import Report, Status
from .pluginhost import PluginHost
from .poller import Poller
from .provider import CallbackNotSupported, InvalidCallback
from .recorder import Recorder
from .registration import FUTURE_SLACK, AnyRegistration, CampaignRegistration, parse_item

# where they were defined before registration.py: code written against the engine
# imports them from here
from .registration import MAX_ITEMS as MAX_ITEMS
from .registration import MessageRegistration as MessageRegistration
from .registration import Registration as Registration
from .registration import RegistrationError as RegistrationError
from .registration import RegistrationResult as RegistrationResult
from .secrets import redact
from .store.base import NewCampaign, NewMessage
from .store.location import open_store
from .store.rows import MessageState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: nothing, with ``problems``; or it applied the config, and the
    keys in ``restart_needed`` wait for the next restart."""

    problems: tuple[tuple[str, str], ...] = ()
    restart_needed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Live:
    """The configuration and the instances built from it, swapped together so that a
    request never sees the new config with the old instances (or the reverse)."""

    config: Config
    instances: Mapping[str, ProviderInstance]


class Exporter:
    def __init__(
        self,
        config: Config,
        host: PluginHost,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.host = host
        self.clock = clock
        if registry is None:
            registry = CollectorRegistry()
            # process_* (CPU, memory, descriptors, start time), as exporters commonly serve
            ProcessCollector(registry=registry)
        self.registry = registry
        state_url = config.exporter.state_url
        self.store = open_store(state_url.reveal() if state_url else config.exporter.state_path)
        self.metrics = Metrics(self.registry, config.metrics, self.clock.time)
        #: the declared labels' kept values, as the store holds them (None: none declared)
        self.label_bounds = (
            labels_module.Bounds(config.metrics.labels, self.store.label_values())
            if config.metrics.labels.declared
            else None
        )
        self.status_hook = host.status_hook(
            lambda: self.metrics.hook_dropped.labels("message_status_changed").inc()
        )
        self.recorder = Recorder(self.store, self.metrics, self.status_hook.submit, clock)
        instances, problems = self._build(config, {})
        if problems:
            self._close_new(instances, {})
            raise ViberExporterError("; ".join(f"{key}: {message}" for key, message in problems))
        self._live = Live(config, instances)
        self.registry.register(
            StateCollector(
                self.store,
                self.snapshots,
                lambda: self.config.polling.max_watched,
                lambda: self.ready,
                config.metrics.labels.names,
                self.metrics.messages,
            )
        )
        self.leadership = Leadership(self.store, holder=holder_for(config.exporter.replica))
        self.poller = Poller(
            instances.values(),
            self.store,
            self.recorder,
            config.polling,
            clock,
            self.leadership,
            sweeper=CampaignSweeper,
        )
        self._lifecycle = threading.Lock()

    # -- what requests see ---------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self._live.config

    @property
    def instances(self) -> Mapping[str, ProviderInstance]:
        return self._live.instances

    @property
    def live(self) -> Live:
        """The config and its instances as one consistent snapshot."""
        return self._live

    def counts(self) -> tuple[dict[tuple[str, Status], int], dict[str, int]]:
        """Messages per (provider, status) and watched per provider (from memory)."""
        return self.store.counts()

    def campaign_counts(self) -> dict[str, int]:
        """Watched campaigns per provider (from memory)."""
        return self.store.campaign_counts()

    @property
    def replica(self) -> str:
        """This replica's name (``exporter.replica_name`` as it was at start: a reload
        does not rename the lease holder)."""
        return shown(self.leadership.holder)

    def polled_by(self, provider: str) -> str | None:
        """The name of the replica that polls ``provider`` (None: nobody now)."""
        return self.leadership.polled_by(provider)

    def polled_here(self, provider: str) -> bool:
        """Whether this replica is the one that polls ``provider``."""
        return self.leadership.leads(provider)

    def figures(self) -> dict[str, Figures]:
        """What happened since start-up, per provider instance (the landing page's)."""
        return self.metrics.figures()

    def scrape(self, accept: str) -> tuple[bytes, str]:
        """``/metrics``: the body and content type for this ``Accept`` header."""
        return exposition.render(self.registry, self.metrics.cached, accept)

    # -- building and reloading ----------------------------------------------------------
    def _build(
        self, config: Config, current: Mapping[str, ProviderInstance]
    ) -> tuple[dict[str, ProviderInstance], list[tuple[str, str]]]:
        """Instances for ``config``: each unchanged current one is reused as it is (with
        its health); the others are built. Returns them and what failed to build."""
        instances: dict[str, ProviderInstance] = {}
        problems: list[tuple[str, str]] = []
        for name, pc in config.providers.items():
            if not pc.enabled:
                continue
            existing = current.get(name)
            if existing is not None and existing.config == pc:
                instances[name] = existing
                continue
            try:
                http = ProviderHttp(pc.timeout, pc.concurrency, self.clock)
                provider = pc.type.cls(name, pc.settings, http)
            except Exception as e:  # a plugin bug is reported, never half-applied
                log.exception("plugin %s could not start instance %s", pc.plugin, name)
                problems.append(
                    (f"providers.{name}", redact(f"plugin {pc.plugin!r} failed: {e!r}")[:300])
                )
                continue
            instances[name] = ProviderInstance(pc, provider, self.clock, self.metrics)
        return instances, problems

    def _adopt(self, instances: Mapping[str, ProviderInstance]) -> None:
        """Create the metric series of new instances (all at 0, SPEC §4)."""
        for name, instance in instances.items():
            self.metrics.add_provider(name, instance.provider.recipient_reasons)
            self.metrics.seed_reasons(name, self.store.failure_reasons(name, MAX_REASONS))
        if self.label_bounds is not None:
            self._label_series()

    @staticmethod
    def _close_new(
        instances: Mapping[str, ProviderInstance], keep: Mapping[str, ProviderInstance]
    ) -> None:
        for name, instance in instances.items():
            if keep.get(name) is not instance:
                instance.provider.close()

    def reload(self, config: Config) -> ReloadOutcome:
        """Apply a new, valid config, all or nothing.

        Everything new is built first; if any provider instance fails to build, nothing
        changes and the problems are returned. Otherwise the config and the instances are
        swapped at once: unchanged instances keep their health, pacing and error log;
        changed or removed ones are closed. The store and the counters survive; a removed
        instance's messages stay stored but are not polled.
        """
        old = self._live
        old_exporter, new_exporter = old.config.exporter, config.exporter
        restart_only = [
            key
            for key, before, after in (
                ("exporter.listen", old_exporter.listen, new_exporter.listen),
                ("exporter.state_path", old_exporter.state_path, new_exporter.state_path),
                ("exporter.state_url", old_exporter.state_url, new_exporter.state_url),
                ("exporter.tls_*", old_exporter.tls, new_exporter.tls),
                (
                    "exporter.threads, max_connections, *_timeout",
                    old_exporter.server,
                    new_exporter.server,
                ),
                ("metrics", old.config.metrics, config.metrics),
            )
            if before != after
        ]
        if restart_only:
            kept = replace(
                new_exporter,
                listen_host=old_exporter.listen_host,
                listen_port=old_exporter.listen_port,
                state_path=old_exporter.state_path,
                state_url=old_exporter.state_url,
                tls=old_exporter.tls,
                server=old_exporter.server,
            )
            config = replace(config, metrics=old.config.metrics, exporter=kept)
        with self._lifecycle:
            instances, problems = self._build(config, old.instances)
            if problems:
                self._close_new(instances, old.instances)
                return ReloadOutcome(problems=tuple(problems))
            self._adopt({n: i for n, i in instances.items() if n not in old.instances})
            self._live = Live(config, instances)
            self.poller.update(instances.values(), config.polling)
            self._close_new(old.instances, instances)
        logging.getLogger().setLevel(config.exporter.log_level.upper())
        if restart_only:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart_only))
        log.info("now polling %d provider instance(s): %s", len(instances), ", ".join(instances))
        return ReloadOutcome(restart_needed=tuple(restart_only))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._adopt(self.instances)
        self.poller.start()
        log.info(
            "polling %d provider instance(s): %s", len(self.instances), ", ".join(self.instances)
        )

    def stop(self, timeout: float = 8.0) -> None:
        with self._lifecycle:
            self.poller.stop(timeout)
        self.status_hook.stop()
        for instance in self.instances.values():
            instance.provider.close()
        self.store.close()

    @property
    def ready(self) -> bool:
        return self.poller.running and self.store.available()

    def snapshots(self) -> list[ProviderSnapshot]:
        now = self.clock.time()
        return [
            ProviderSnapshot(
                name,
                i.config.plugin,
                i.config.type.version,
                i.health.up,
                i.health.last_success,
                i.health.lag(now),
                i.balance,
                i.provider,
                max(0.0, now - i.health.oldest_pending_sent)
                if i.health.oldest_pending_sent is not None
                else 0.0,
                self.leadership.leads(name),
                i.health.last_tick,
            )
            for name, i in self.instances.items()
        ]

    # -- registration ------------------------------------------------------------------
    def _problem(self, item: AnyRegistration, now: float) -> str | None:
        """Why a configured instance cannot take this registration, or None: every
        registration is checked here, once, whether it came from the API or from Python."""
        instance = self.instances.get(item.provider)
        if instance is None:
            if item.provider in self.config.providers:
                return f"provider {item.provider!r} is disabled"
            known = ", ".join(sorted(self.instances)) or "none"
            return f"unknown provider {item.provider!r} (configured: {known})"
        plugin = instance.provider
        if isinstance(item, CampaignRegistration):
            if not plugin.capabilities().campaigns:
                plugin_name = instance.config.plugin
                return f"provider {item.provider!r} ({plugin_name}) does not track campaigns"
            problem = plugin.check_campaign(item.campaign)
            if problem:
                return f"invalid campaign id for {item.provider}: {problem}"
        else:
            problem = plugin.check_id(item.id)
            if problem:
                return f"invalid id for {item.provider}: {problem}"
            problem = plugin.check_fields(item.fields) if item.fields else None
            if problem:
                return f"invalid fields for {item.provider}: {problem}"
        return self._sent_at_problem(item.sent_at, instance, now) or labels_module.problem(
            self.config.metrics.labels, item.labels
        )

    def register_items(self, items: Sequence[Any]) -> RegistrationResult:
        """Read raw request items (provider, id or campaign, sent_at, ttl, fields,
        labels) and store them. Raises RegistrationError (nothing stored),
        WatchedSetFull or StoreError."""
        parsed = [parse_item(item) for item in items]
        shape = [(index, p) for index, p in enumerate(parsed) if isinstance(p, str)]
        valid = [(index, p) for index, p in enumerate(parsed) if not isinstance(p, str)]
        providers = [item.get("provider") for item in items if isinstance(item, dict)]
        return self._register(valid, shape, providers)

    def register(self, items: Sequence[AnyRegistration]) -> RegistrationResult:
        """Validate the whole batch, then store it durably. Raises RegistrationError,
        WatchedSetFull or StoreError, storing nothing."""
        return self._register(list(enumerate(items)), [], [item.provider for item in items])

    def _register(
        self,
        items: Sequence[tuple[int, AnyRegistration]],
        problems: Sequence[tuple[int, str]],
        providers: Sequence[object],
    ) -> RegistrationResult:
        now = self.clock.time()
        details = [*problems]
        details += [(i, p) for i, item in items if (p := self._problem(item, now)) is not None]
        if details:
            self._rejected(providers)
            raise RegistrationError(sorted(details))
        instances = self.instances
        by_provider: dict[str, list[NewMessage]] = {}
        campaigns: dict[str, list[NewCampaign]] = {}
        for _, item in items:
            if isinstance(item, CampaignRegistration):
                discovery = instances[item.provider].config.polling.not_found_grace
                campaigns.setdefault(item.provider, []).append(
                    NewCampaign(item.campaign, item.sent_at, discovery, item.ttl, item.labels)
                )
                continue
            extra = json.dumps(dict(item.fields), sort_keys=True) if item.fields else None
            by_provider.setdefault(item.provider, []).append(
                NewMessage(item.id, item.sent_at, extra, item.ttl, item.labels)
            )
        batches = {
            provider: (pairs, self.policy(provider).first_wait())
            for provider, pairs in by_provider.items()
        }
        campaign_batches = {
            provider: (wanted, instances[provider].config.polling.step(0))
            for provider, wanted in campaigns.items()
        }
        try:
            counts = self.store.register(
                batches,
                self.clock.time(),
                self.config.polling.max_watched,
                campaign_batches,
                self.label_bounds,
            )
        except WatchedSetFull:
            for _, item in items:
                self.metrics.registrations.labels(item.provider, "full").inc()
            raise
        for provider, (new, dup) in counts.items():
            self.metrics.registrations.labels(provider, "accepted").inc(new)
            self.metrics.registrations.labels(provider, "duplicate").inc(dup)
        if self.label_bounds is not None:
            self._label_series(campaigns=bool(campaign_batches))
        return RegistrationResult(
            sum(new for new, _ in counts.values()), sum(dup for _, dup in counts.values())
        )

    @staticmethod
    def _sent_at_problem(
        sent_at: float | None, instance: ProviderInstance, now: float
    ) -> str | None:
        """Why ``sent_at`` is out of range, or None: at most ``max_age`` ago (an older
        message's watch would be over before it began) and at most an hour ahead of our
        clock."""
        if sent_at is None:
            return None
        max_age = instance.config.polling.max_age
        if sent_at > now + FUTURE_SLACK:
            return "sent_at is in the future (more than an hour ahead of the exporter's clock)"
        if sent_at < now - max_age:
            return (
                f"sent_at is more than polling.max_age ({format_duration(max_age)}) ago: "
                "its watch would be over before it began"
            )
        return None

    def _label_series(self, campaigns: bool = True) -> None:
        """The series of every label combination the store holds, at 0 until counted:
        its messages', and its watched campaigns' (their messages are found later)."""
        combinations = {(provider, stored) for provider, _, stored in self.store.labelled_counts()}
        if campaigns:
            combinations |= self.store.campaign_labels()
        self.metrics.add_label_combinations(combinations)

    def _rejected(self, providers: Sequence[object]) -> None:
        """A refused batch counts once per item of a configured, enabled instance."""
        for provider in providers:
            if isinstance(provider, str) and provider in self.instances:
                self.metrics.registrations.labels(provider, "rejected").inc()

    # -- messages ----------------------------------------------------------------------
    def get_message(self, provider: str, message_id: str) -> MessageState | None:
        return self.store.get(provider, message_id)

    def delete_message(self, provider: str, message_id: str) -> bool:
        return self.store.delete(provider, message_id)

    def list_messages(
        self,
        *,
        provider: str | None = None,
        status: Status | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[MessageState]:
        return self.store.page(provider=provider, status=status, after=after, limit=limit)

    # -- pushed reports ----------------------------------------------------------------
    def receive_callback(
        self,
        provider: str,
        request: CallbackRequest,
        read_body: Callable[[], bytes] | None = None,
    ) -> CallbackReply:
        """Authenticate, parse and apply one pushed request; raises Refused with the
        answer the caller gets (every refusal counts as ``rejected``).

        With ``read_body``, ``request`` comes without its body, which is read only
        once the request is known to be authentic: at once for a ``?token=``, after
        reading it for a plugin that verifies a signature of the body."""
        live = self._live
        instance = live.instances.get(provider)
        config = live.config.providers.get(provider)
        plugin = instance.provider if instance is not None else None
        if config is None or plugin is None:
            raise Refused(404, f"no enabled provider instance {provider!r}")
        if config.callback_token is None and not plugin.signs_callbacks():
            raise Refused(
                404, f"callbacks are not enabled for provider {provider!r} (set its callback_token)"
            )

        def refuse(status: int, message: str, **kwargs: Any) -> Refused:
            self.metrics.callbacks.labels(provider, "rejected").inc()
            return Refused(status, message, **kwargs)

        signs = plugin.signs_callbacks()
        if read_body is not None and signs:
            request = replace(request, body=read_body())
        try:
            authentic = plugin.authenticate_callback(request, config.callback_token)
        except Exception:
            log.warning("plugin %s failed to authenticate a callback", provider, exc_info=True)
            authentic = False
        if not authentic:
            raise refuse(401, "missing or wrong callback credentials (?token= or signature)")
        if read_body is not None and not signs:
            request = replace(request, body=read_body())
        try:
            answer = plugin.parse_callback(request)
        except CallbackNotSupported as e:
            raise Refused(404, str(e)) from e
        except InvalidCallback as e:
            raise refuse(400, f"callback not understood: {e}") from e
        except Exception as e:  # a plugin bug is the caller's 400, never our 500
            log.warning("plugin %s failed to parse a callback", provider, exc_info=True)
            raise refuse(400, f"callback not understood: {type(e).__name__}") from e
        reply = answer if isinstance(answer, CallbackReply) else CallbackReply(tuple(answer))
        reports = [_report(r) for r in reply.reports]
        if len(reports) > MAX_ITEMS:
            raise refuse(413, f"at most {MAX_ITEMS} reports per request, got {len(reports)}")
        for index, report in enumerate(reports):
            problem = plugin.check_id(report.message_id)
            if problem:
                raise refuse(400, f"report {index}: not a message id of {provider}: {problem}")
        try:
            self.ingest_reports(provider, reports)
        except WatchedSetFull as e:
            raise refuse(429, str(e), headers={"Retry-After": "60"}) from e
        except StoreError as e:
            raise Refused(
                503,
                "the state store could not save the report; please retry",
                headers={"Retry-After": "5"},
            ) from e
        self.metrics.callbacks.labels(provider, "accepted").inc()
        return replace(reply, reports=tuple(reports))

    def ingest_reports(self, provider: str, reports: Sequence[Report]) -> None:
        """Feed pushed or drained reports through the same accounting path as polls.

        Reports about messages not stored yet register them, within ``max_watched``
        (WatchedSetFull otherwise, storing nothing; checked inside the store transaction).
        """
        self.recorder.record_reports(
            provider, self.policy(provider), reports, max_watched=self.config.polling.max_watched
        )

    def policy(self, provider: str) -> Policy:
        """How the instance polls now: its polling settings and its adaptive plan."""
        return self.instances[provider].policy


def _report(item: Any) -> Report:
    """A Report from what a plugin returned (a Report, or a (message id, observation) pair)."""
    if isinstance(item, Report):
        return item
    message_id, observation = item
    return Report(str(message_id), observation)

"""Every binding metric of SPEC §4.

Counters and histograms are fed by events after each commit: the outcome families
(which carry the declared message labels, so they can hold tens of thousands of series)
are :mod:`.exposition`'s cached families, the others prometheus_client objects. Gauges
come from :class:`StateCollector`, which reads only in-memory state (the store's counts
and each provider's health), so a scrape never touches the database or the network and
costs the same with 10 or 1,000,000 messages.
"""

from __future__ import annotations

import logging
import threading
import time as _time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import labels as labels_module
from .config.model import MetricsSettings
from .events import (
    AnswerProblem,
    Cost,
    Event,
    FallbackOutcome,
    Latency,
    SmsFallback,
    StatusChanged,
    Transition,
    WatchExpired,
)
from .exposition import CachedCounter, CachedFamily, CachedGauge, CachedHistogram
from .figures import Figures
from .model import PRICE_CEILING, Outcome, Status
from .provider import Balance, Provider
from .store.base import Store
from .trends import Trends
from .version import __version__

log = logging.getLogger(__name__)

# A ``*_created`` series per counter and histogram child (64 more series for two
# providers) that Prometheus's text format ingests as ordinary gauges and nothing here
# uses: a restart shows as ``process_start_time_seconds`` and as counter resets.
disable_created_metrics()  # type: ignore[no-untyped-call]

MAX_REASONS = 50
MAX_COUNTRIES = 300
OTHER = "other"
REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# "full": refused with 429 because the watched set was at polling.max_watched
REGISTRATION_OUTCOMES = ("accepted", "duplicate", "rejected", "full")
CALLBACK_OUTCOMES = ("accepted", "rejected")
FALLBACK_OUTCOMES = ("delivered", "read", "failed", "expired", "unknown")
ANSWER_PROBLEMS = (
    "unreadable_field",
    "time_in_future",
    "time_before_sent",
    "time_out_of_range",
    "price_out_of_range",
    "inconsistent_answer",
    "unreadable_report",
)
LABEL_CACHE = 10_000  # stored label sets remembered decoded (bounded: combinations are)
_EXEMPLAR_ID_MAX = 100  # OpenMetrics allows 128 characters for all exemplar labels together


class BoundedLabel:
    """Keeps a label's distinct values under a limit; later newcomers become ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def seed(self, values: Iterable[str]) -> None:
        """Reserve places for values known to matter (e.g. from before a restart)."""
        with self._lock:
            for value in values:
                if len(self._seen) >= self.limit:
                    return
                self._seen.add(value)

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


#: money is counted in integer millionths of the currency's main unit, so a sum of
#: prices reads as the prices do (0.012 + 0.02 is 0.032, not 0.032000000000000001)
MICRO = 1_000_000


#: the statuses the landing page's charts trace, and the trend each goes to
TRACED = {"delivered": "delivered", "read": "read", "failed": "failed", "expired": "failed"}


class Metrics:
    """The counters and histograms, registered in ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        settings: MetricsSettings,
        time: Callable[[], float] = _time.time,
    ) -> None:
        #: the last hour a minute at a time, for the landing page's charts
        self.trends = Trends(time)
        self.country_label = "country" in settings.extra_labels
        #: the declared message labels, after every other label of the outcome metrics
        self.label_names = settings.labels.names
        declared = list(self.label_names)
        extra = ["country"] if self.country_label else []
        extra_declared = [*extra, *declared]
        self._countries = BoundedLabel(MAX_COUNTRIES)
        self._label_cache: dict[str | None, tuple[str, ...]] = {}
        self._request_children: dict[tuple[str, Outcome], tuple[Counter, Histogram]] = {}
        self._combinations: set[tuple[str, str]] = set()
        self._reasons: dict[str, BoundedLabel] = {}
        self._recipient_reasons: dict[str, frozenset[str]] = {}
        self.transitions = CachedCounter(
            "viber_message_status_transitions",
            "Messages that entered each status.",
            ["provider", "status", *extra_declared],
            registry=registry,
        )
        self.failures = CachedCounter(
            "viber_message_failures",
            "Messages that ended failed or expired, by reason.",
            ["provider", "reason", *extra_declared],
            registry=registry,
        )
        self.delivery_latency = CachedHistogram(
            "viber_message_delivery_latency_seconds",
            "Time from sent to delivered.",
            ["provider", *declared],
            buckets=settings.latency_buckets,
            registry=registry,
        )
        self.read_latency = CachedHistogram(
            "viber_message_read_latency_seconds",
            "Time from sent to read.",
            ["provider", *declared],
            buckets=settings.latency_buckets,
            registry=registry,
        )
        self.cost = CachedCounter(
            "viber_message_cost",
            "Money spent on messages, in the currency's main unit.",
            ["provider", "currency", "channel", *extra_declared],
            registry,
            scale=MICRO,
        )
        self.sms_fallbacks = CachedCounter(
            "viber_message_sms_fallbacks",
            "Messages the provider re-sent as SMS.",
            ["provider", *declared],
            registry=registry,
        )
        self.failures_by_side = CachedCounter(
            "viber_message_failures_by_side",
            "Messages that ended failed or expired, by whose side the reason is on: "
            "recipient (not a Viber user, opted out, out of reach) or provider.",
            ["provider", "side", *declared],
            registry=registry,
        )
        self.fallback_outcomes = CachedCounter(
            "viber_message_fallback_outcomes",
            "Fallback legs (e.g. SMS re-sends) by their final status.",
            ["provider", "channel", "outcome", *declared],
            registry=registry,
        )
        self.answer_problems = Counter(
            "viber_provider_answer_problems",
            "Provider answers with a part that could not be trusted (an unreadable optional "
            "field, a time in the future or before sending); the rest was used.",
            ["provider", "problem"],
            registry=registry,
        )
        self.watch_expired = CachedCounter(
            "viber_message_watch_expired",
            "Messages that reached max_age without a final status.",
            ["provider", *declared],
            registry=registry,
        )
        #: viber_messages: StateCollector sets it on every scrape and yields it
        self.messages = CachedGauge(
            "viber_messages",
            "Messages held in the state store, by current status.",
            ["provider", "status", *declared],
        )
        #: rendered from their text cache by exposition.render
        self.cached: tuple[CachedFamily, ...] = (
            self.transitions,
            self.failures,
            self.delivery_latency,
            self.read_latency,
            self.cost,
            self.sms_fallbacks,
            self.failures_by_side,
            self.fallback_outcomes,
            self.watch_expired,
            self.messages,
        )
        self.requests = Counter(
            "viber_provider_requests",
            "Provider API calls by outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "viber_provider_request_duration_seconds",
            "Provider API call latency.",
            ["provider"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.registrations = Counter(
            "viber_watch_registrations",
            "Message registrations by outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.callbacks = Counter(
            "viber_callbacks",
            "Pushed delivery reports by outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.hook_dropped = Counter(
            "viber_plugin_hook_events_dropped",
            "Events not handed to a plugin hook because its queue was full (a slow plugin).",
            ["hook"],
            registry=registry,
        )
        self.hook_dropped.labels("message_status_changed")
        self.reload_successful = Gauge(
            "viber_exporter_config_last_reload_successful",
            "1 if the last configuration reload succeeded.",
            registry=registry,
        )
        self.reload_success_time = Gauge(
            "viber_exporter_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load.",
            registry=registry,
        )
        # We only get here with a valid configuration: the first load succeeded.
        self.reload_successful.set(1)
        self.reload_success_time.set_to_current_time()

    def _extra(self, country: str | None) -> list[str]:
        if not self.country_label:
            return []
        return [self._countries(country.upper()) if country else ""]

    def labels_of(self, stored: str | None) -> tuple[str, ...]:
        """A message's declared label values (stored bounded), in declaration order."""
        if not self.label_names:
            return ()
        cached = self._label_cache.get(stored)
        if cached is None:
            cached = labels_module.decode(stored, self.label_names)
            if len(self._label_cache) < LABEL_CACHE:
                self._label_cache[stored] = cached
        return cached

    def seed_reasons(self, provider: str, reasons: Iterable[str]) -> None:
        """Give the reasons already stored their label again after a restart (most frequent first)."""
        self._reasons.setdefault(provider, BoundedLabel(MAX_REASONS)).seed(reasons)

    def add_provider(self, provider: str, recipient_reasons: frozenset[str] = frozenset()) -> None:
        """Create every provider × status/outcome series at 0, so rate() works from the
        start (with every declared label empty: a labelled combination's series appear
        with its first event, as a counter's first increase)."""
        extra = self._extra(None)
        empty = self.labels_of(None)
        self._reasons.setdefault(provider, BoundedLabel(MAX_REASONS))
        self._recipient_reasons[provider] = recipient_reasons
        for side in ("recipient", "provider"):
            self.failures_by_side.labels(provider, side, *empty)
        for status in Status:
            self.transitions.labels(provider, status.value, *extra, *empty)
        for outcome in Outcome:
            self.requests.labels(provider, outcome.value)
        for registration in REGISTRATION_OUTCOMES:
            self.registrations.labels(provider, registration)
        for callback in CALLBACK_OUTCOMES:
            self.callbacks.labels(provider, callback)
        for leg_outcome in FALLBACK_OUTCOMES:
            self.fallback_outcomes.labels(provider, "sms", leg_outcome, *empty)
        for problem in ANSWER_PROBLEMS:
            self.answer_problems.labels(provider, problem)
        for metric in (
            self.delivery_latency,
            self.read_latency,
            self.sms_fallbacks,
            self.watch_expired,
        ):
            metric.labels(provider, *empty)
        self.request_duration.labels(provider)

    def add_label_combinations(self, combinations: Iterable[tuple[str, str]]) -> None:
        """Create the series of new (provider, stored labels) combinations at 0 when their
        first message is registered, so ``rate()`` sees their first events (a series that
        appears with a value hides its first increase)."""
        if not self.label_names:
            return
        for provider, stored in combinations:
            if (provider, stored) in self._combinations:
                continue
            self._combinations.add((provider, stored))
            labels = self.labels_of(stored)
            extra = self._extra(None)
            for status in Status:
                self.transitions.labels(provider, status.value, *extra, *labels)
            for side in ("recipient", "provider"):
                self.failures_by_side.labels(provider, side, *labels)
            for leg_outcome in FALLBACK_OUTCOMES:
                self.fallback_outcomes.labels(provider, "sms", leg_outcome, *labels)
            for metric in (
                self.delivery_latency,
                self.read_latency,
                self.sms_fallbacks,
                self.watch_expired,
            ):
                metric.labels(provider, *labels)

    def record(self, events: Iterable[Event]) -> None:
        """Count events produced by a committed change: each one, even if another
        could not be counted (the change is stored; its events must not be lost)."""
        for event in events:
            try:
                self._count(event)
            except Exception:
                log.exception("could not count %s", type(event).__name__)

    def _count(self, event: Event) -> None:
        if isinstance(event, AnswerProblem):
            self.answer_problems.labels(event.provider, event.problem).inc()
            return
        if isinstance(event, StatusChanged):
            return  # for the plugins' hooks, not a metric
        labels = self.labels_of(event.labels)
        if isinstance(event, Transition):
            if event.status.value in TRACED:
                kind = TRACED[event.status.value]
                self.trends.add(event.provider, kind)
                # per declared label value too (bounded: kept values and "other" only)
                for name, value in zip(self.label_names, labels, strict=True):
                    self.trends.add(event.provider, kind, part=f"{name}={value}")
            extra = self._extra(event.country)
            self.transitions.labels(event.provider, event.status.value, *extra, *labels).inc()
            if event.status.is_failure:
                reasons = self._reasons.setdefault(event.provider, BoundedLabel(MAX_REASONS))
                self.failures.labels(
                    event.provider, reasons(event.reason or "unspecified"), *extra, *labels
                ).inc()
                recipient = self._recipient_reasons.get(event.provider, frozenset())
                side = "recipient" if event.reason in recipient else "provider"
                self.failures_by_side.labels(event.provider, side, *labels).inc()
        elif isinstance(event, Latency):
            histogram = self.delivery_latency if event.kind == "delivery" else self.read_latency
            exemplar = {"message_id": event.message_id[:_EXEMPLAR_ID_MAX]}
            histogram.labels(event.provider, *labels).observe(event.seconds, exemplar=exemplar)
        elif isinstance(event, Cost):
            extra = self._extra(event.country)
            if 0 <= event.amount <= PRICE_CEILING:  # also NaN: accounting drops these first
                self.cost.labels(
                    event.provider, event.currency, event.channel, *extra, *labels
                ).inc(event.amount)
        elif isinstance(event, SmsFallback):
            self.sms_fallbacks.labels(event.provider, *labels).inc()
        elif isinstance(event, WatchExpired):
            self.watch_expired.labels(event.provider, *labels).inc()
        elif isinstance(event, FallbackOutcome):
            self.fallback_outcomes.labels(
                event.provider, event.channel, event.outcome.value, *labels
            ).inc()

    def figures(self) -> dict[str, Figures]:
        """Since start-up, per provider instance: transitions by status, cost by
        currency and channel, and the delivery and read latency histograms."""
        found: dict[str, Figures] = defaultdict(Figures)
        first = 3 if self.country_label else 2  # where the declared labels start
        for (provider, status, *rest), value in self.transitions.items():
            figures = found[provider]
            counts = figures.transitions
            counts[status] = counts.get(status, 0.0) + value
            if not value:  # a series created at 0 adds nothing to a label's figures
                continue
            for name, label_value in zip(self.label_names, rest[first - 2 :], strict=False):
                by = figures.by_label.setdefault((name, label_value), {})
                by[status] = by.get(status, 0.0) + value
        for (provider, currency, channel, *_), value in self.cost.items():
            cost = found[provider].cost
            cost[currency, channel] = cost.get((currency, channel), 0.0) + value
        for histogram, kind in ((self.delivery_latency, "delivery"), (self.read_latency, "read")):
            # summed per provider first: one Latency.add per provider, not per series
            summed: dict[str, tuple[list[float], list[float]]] = {}
            for (provider, *_), buckets, total in histogram.items():
                entry = summed.get(provider)
                if entry is None:
                    summed[provider] = (list(buckets), [total])
                    continue
                so_far = entry[0]
                for i, count in enumerate(buckets):
                    so_far[i] += count
                entry[1][0] += total
            for provider, (per_bucket, totals) in summed.items():
                getattr(found[provider], kind).add(histogram.bounds, per_bucket, totals[0])
        return dict(found)

    def request(self, provider: str, outcome: Outcome, seconds: float) -> None:
        # Every provider call lands here: the children are looked up once, not through
        # labels() (argument checks and a lock) each time.
        children = self._request_children.get((provider, outcome))
        if children is None:
            children = self._request_children[(provider, outcome)] = (
                self.requests.labels(provider, outcome.value),
                self.request_duration.labels(provider),
            )
        children[0].inc()
        children[1].observe(seconds)
        if outcome not in (Outcome.OK, Outcome.NOT_FOUND):
            self.trends.add(provider, "errors")


@dataclass(frozen=True)
class ProviderSnapshot:
    """What the gauges need to know about one configured provider instance."""

    name: str
    plugin: str
    version: str
    up: bool
    last_success: float | None
    lag: float  # seconds the most overdue poll is behind (viber_poll_lag_seconds)
    balance: Balance | None = None
    provider: Provider | None = None  # for the plugin's own metrics
    oldest_pending: float = 0.0  # age of the oldest message still pending, seconds
    #: this replica polls the instance; only then does it export the store-wide gauges
    leader: bool = True
    #: when the poller last completed a tick (None: not yet)
    last_tick: float | None = None


class StateCollector(Collector):
    """The gauges, built fresh from in-memory state on every scrape."""

    def __init__(
        self,
        store: Store,
        providers: Callable[[], Sequence[ProviderSnapshot]],
        max_watched: Callable[[], int] = lambda: 0,
        ready: Callable[[], bool] = lambda: True,
        label_names: Sequence[str] = (),
        messages: CachedGauge | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.max_watched = max_watched
        self.ready = ready
        self.label_names = tuple(label_names)
        #: viber_messages, kept as text between scrapes (with labels: thousands of series)
        self.messages = messages or CachedGauge(
            "viber_messages",
            "Messages held in the state store, by current status.",
            ["provider", "status", *self.label_names],
        )

    def _messages(
        self,
        totals: dict[tuple[str, ...], float],
        provider: str,
        counts: Mapping[tuple[str, Status], int],
        labelled: Mapping[tuple[str, Status, str], int],
    ) -> None:
        """``viber_messages`` of one provider: by status, and by the declared labels (the
        messages without labels under empty values)."""
        empty = ("",) * len(self.label_names)
        mine = {(status, empty): counts.get((provider, status), 0) for status in Status}
        for (name, status, stored), count in labelled.items():
            if name != provider:
                continue
            values = labels_module.decode(stored, self.label_names)
            mine[(status, empty)] -= count
            mine[(status, values)] = mine.get((status, values), 0) + count
        for (status, values), count in mine.items():
            if count or values == empty:
                totals[(provider, status.value, *values)] = count

    def describe(self) -> Iterable[Metric]:
        return list(self._families([], describe=True))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.providers()))

    def _families(
        self, providers: Sequence[ProviderSnapshot], describe: bool = False
    ) -> Iterable[Metric]:
        watched = GaugeMetricFamily(
            "viber_messages_watched", "Messages still being polled.", labels=["provider"]
        )
        messages: dict[tuple[str, ...], float] = {}
        up = GaugeMetricFamily(
            "viber_provider_up",
            "1 while the provider answers authorised calls, 0 after failures.",
            labels=["provider"],
        )
        last_success = GaugeMetricFamily(
            "viber_provider_last_success_timestamp_seconds",
            "Time of the last successful provider call.",
            labels=["provider"],
        )
        lag = GaugeMetricFamily(
            "viber_poll_lag_seconds",
            "How far behind schedule the most overdue poll is.",
            labels=["provider"],
        )
        info = GaugeMetricFamily(
            "viber_provider_info",
            "Configured provider instances.",
            labels=["provider", "plugin", "version"],
        )
        pending = GaugeMetricFamily(
            "viber_oldest_pending_seconds",
            "Age of the oldest watched message still pending (0: none).",
            labels=["provider"],
        )
        balance = GaugeMetricFamily(
            "viber_provider_balance",
            "The account balance the provider reports.",
            labels=["provider", "currency"],
        )
        campaigns = GaugeMetricFamily(
            "viber_campaigns_watched",
            "Campaigns still swept (their messages count in viber_messages_watched once found).",
            labels=["provider"],
        )
        last_tick = GaugeMetricFamily(
            "viber_poller_last_tick_timestamp_seconds",
            "When the poller last completed a tick for this provider instance.",
            labels=["provider"],
        )
        leader = GaugeMetricFamily(
            "viber_exporter_leader",
            "1 on the replica that polls this provider instance, 0 on the others.",
            labels=["provider"],
        )
        counts, watched_counts = self.store.counts()
        labelled = self.store.labelled_counts() if self.label_names else {}
        campaign_counts = self.store.campaign_counts()
        for p in providers:
            leader.add_metric([p.name], 1.0 if p.leader else 0.0)
            info.add_metric([p.name, p.plugin, p.version], 1.0)
            if not p.leader:
                # Store-wide and polling gauges come from the leader alone, so a sum or
                # max over replicas counts each message once.
                continue
            watched.add_metric([p.name], watched_counts.get(p.name, 0))
            campaigns.add_metric([p.name], campaign_counts.get(p.name, 0))
            self._messages(messages, p.name, counts, labelled)
            up.add_metric([p.name], 1.0 if p.up else 0.0)
            last_success.add_metric([p.name], p.last_success or 0.0)
            lag.add_metric([p.name], p.lag)
            if p.last_tick is not None:
                last_tick.add_metric([p.name], p.last_tick)
            pending.add_metric([p.name], p.oldest_pending)
            if p.balance is not None:
                balance.add_metric([p.name, p.balance.currency], p.balance.amount)
        build = GaugeMetricFamily(
            "viber_exporter_build_info", "The exporter's version.", labels=["version"]
        )
        build.add_metric([__version__], 1.0)
        limit = GaugeMetricFamily(
            "viber_exporter_max_watched", "polling.max_watched: the watched set's limit."
        )
        limit.add_metric([], float(self.max_watched()))
        ready = GaugeMetricFamily(
            "viber_exporter_ready",
            "1 while /-/ready answers 200 (store reachable and writable, scheduler running).",
        )
        ready.add_metric([], 1.0 if providers and self.ready() else 0.0)
        if not describe:
            self.messages.replace(messages)
        yield from (watched, campaigns)
        yield from self.messages.describe() if describe else self.messages.collect()
        yield from (up, last_success, lag, last_tick, pending, info)
        yield balance
        yield leader
        yield from (build, limit, ready)
        for p in providers:
            yield from _plugin_metrics(p)


def _plugin_metrics(snapshot: ProviderSnapshot) -> Iterable[Metric]:
    """A plugin's own metric families; a plugin bug costs its metrics, never the scrape."""
    if snapshot.provider is None:
        return []
    try:
        return list(snapshot.provider.metrics())
    except Exception:
        log.exception("plugin metrics of provider %s failed", snapshot.name)
        return []

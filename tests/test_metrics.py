"""Metrics: binding names and labels, pre-initialised series, exemplars, bounded labels."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from viber_exporter import exposition
from viber_exporter import labels as labels_module
from viber_exporter.config.model import MetricsSettings
from viber_exporter.engine import Registration
from viber_exporter.events import (
    Cost,
    FallbackOutcome,
    Latency,
    SmsFallback,
    Transition,
    WatchExpired,
)
from viber_exporter.exposition import CachedCounter
from viber_exporter.labels import DeclaredLabel, LabelSettings
from viber_exporter.metrics import MAX_REASONS, Metrics
from viber_exporter.model import Outcome, Status

from .conftest import sample, wait_for

BINDING = {
    "viber_messages_watched": ("gauge", {"provider"}),
    "viber_messages": ("gauge", {"provider", "status"}),
    "viber_message_status_transitions": ("counter", {"provider", "status"}),
    "viber_message_failures": ("counter", {"provider", "reason"}),
    "viber_message_delivery_latency_seconds": ("histogram", {"provider"}),
    "viber_message_read_latency_seconds": ("histogram", {"provider"}),
    "viber_message_cost": ("counter", {"provider", "currency", "channel"}),
    "viber_message_sms_fallbacks": ("counter", {"provider"}),
    "viber_message_watch_expired": ("counter", {"provider"}),
    "viber_provider_requests": ("counter", {"provider", "outcome"}),
    "viber_provider_request_duration_seconds": ("histogram", {"provider"}),
    "viber_provider_up": ("gauge", {"provider"}),
    "viber_provider_last_success_timestamp_seconds": ("gauge", {"provider"}),
    "viber_poll_lag_seconds": ("gauge", {"provider"}),
    "viber_watch_registrations": ("counter", {"provider", "outcome"}),
    "viber_callbacks": ("counter", {"provider", "outcome"}),
    "viber_provider_info": ("gauge", {"provider", "plugin", "version"}),
    "viber_exporter_build_info": ("gauge", {"version"}),
}


def test_every_binding_metric_with_exact_labels_and_zero_series_from_start(make_config, run_exporter):
    exporter = run_exporter(make_config())
    text = generate_latest(exporter.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in BINDING.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    assert "_created" not in text, "no *_created series: nothing uses them"
    for status in Status:
        assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status=status.value) == 0
        assert sample(exporter, "viber_messages", provider="fake", status=status.value) == 0
    for outcome in Outcome:
        assert exporter.registry.get_sample_value(
            "viber_provider_requests_total", {"provider": "fake", "outcome": outcome.value}) == 0
    for outcome in ("accepted", "duplicate", "rejected"):
        assert exporter.registry.get_sample_value(
            "viber_watch_registrations_total", {"provider": "fake", "outcome": outcome}) == 0
    assert sample(exporter, "viber_provider_info", provider="fake", plugin="fake", version="0.0") == 1
    assert sample(exporter, "viber_provider_up", provider="fake") == 1


def test_latency_exemplars_carry_the_message_id_in_openmetrics(fake_server, make_config, run_exporter):
    _, api = fake_server
    api.messages["ex1"] = {"status": "SEEN"}
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "ex1")])
    wait_for(lambda: sample(exporter, "viber_message_read_latency_seconds_count", provider="fake") == 1)
    text = generate_openmetrics(exporter.registry).decode()
    assert '# {message_id="ex1"}' in text
    assert "message_id" not in generate_latest(exporter.registry).decode(), "never a label, only an exemplar"


def test_scrape_reads_memory_only(make_config, run_exporter):
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", f"id{i}") for i in range(20)])
    exporter.poller.stop(timeout=5)

    class NoDatabase:
        def __getattr__(self, name):
            raise AssertionError("a scrape touched the database")

    real, exporter.store._db = exporter.store._db, NoDatabase()
    try:
        assert sample(exporter, "viber_messages", provider="fake", status="pending") == 20
        assert sample(exporter, "viber_messages_watched", provider="fake") == 20
        generate_openmetrics(exporter.registry)
    finally:
        exporter.store._db = real


def test_reasons_are_bounded_per_provider():
    registry = CollectorRegistry()
    metrics = Metrics(registry, MetricsSettings())
    metrics.add_provider("p")
    events = [Transition("p", f"m{i}", Status.FAILED, f"reason_{i}", None) for i in range(MAX_REASONS + 5)]
    metrics.record(events)
    values = [s for f in registry.collect() if f.name == "viber_message_failures" for s in f.samples if s.name.endswith("_total")]
    reasons = {s.labels["reason"] for s in values}
    assert len(reasons) == MAX_REASONS + 1 and "other" in reasons
    assert registry.get_sample_value("viber_message_failures_total", {"provider": "p", "reason": "other"}) == 5


def test_country_label_is_optional_and_bounded():
    registry = CollectorRegistry()
    metrics = Metrics(registry, MetricsSettings(extra_labels=("country",)))
    metrics.add_provider("p")
    metrics.record([Transition("p", "m", Status.DELIVERED, None, "gr"), Cost("p", "EUR", "viber", 0.5, "GR")])
    assert registry.get_sample_value(
        "viber_message_status_transitions_total", {"provider": "p", "status": "delivered", "country": "GR"}) == 1
    assert registry.get_sample_value(
        "viber_message_cost_total", {"provider": "p", "currency": "EUR", "channel": "viber", "country": "GR"}) == 0.5
    assert registry.get_sample_value(
        "viber_message_status_transitions_total", {"provider": "p", "status": "pending", "country": ""}) == 0


def test_reason_labels_survive_a_restart(make_config, run_exporter):
    from viber_exporter.store.rows import Counted

    first = run_exporter(make_config())
    first.register([Registration("fake", f"m{i}") for i in range(55)])

    def fail(reason):
        def update(state):
            state.status, state.reason, state.next_poll = Status.FAILED, reason, None
            state.counted |= Counted.FAILED
            return state, []
        return update

    # "popular" is the most frequent stored reason; 54 others occur once each.
    first.store.apply("fake", [(f"m{i}", fail("popular" if i < 5 else f"rare_{i}")) for i in range(55)])
    first.stop(timeout=5)
    second = run_exporter(make_config())
    labels = second.metrics._reasons["fake"]
    assert labels("popular") == "popular", "seeded from the store before anything new arrives"
    for i in range(60):
        labels(f"new_{i}")
    assert labels("popular") == "popular"
    assert labels("brand_new") == "other"


def test_cost_sums_print_as_the_prices_do():
    """Float sums drift (0.1 + 0.2 = 0.30000000000000004); the exposed cost does not."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, MetricsSettings())
    metrics.add_provider("p")
    prices = [0.0333] * 100 + [0.012, 0.02, 0.035] * 7
    metrics.record([Cost("p", "EUR", "viber", price, None) for price in prices])
    text = generate_latest(registry).decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("viber_message_cost_total{")]
    assert line.endswith(" 3.799"), line
    float_sum = 0.0
    for price in prices:
        float_sum += price
    assert repr(float_sum) != "3.799", "the float sum drifts, so the test means something"


def _labelled_metrics() -> tuple[CollectorRegistry, Metrics]:
    settings = MetricsSettings(
        extra_labels=("country",),
        labels=LabelSettings((DeclaredLabel("kind"), DeclaredLabel("template", max_values=1000))),
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings)
    metrics.add_provider("p", frozenset({"not_viber_user"}))
    return registry, metrics


def _random_events(rng: random.Random, count: int) -> list:
    # label values a scrape must escape: quotes, backslashes, newlines, non-ASCII
    values = ["otp", "", 'say "hi"', "back\\slash", "two\nlines", "καλημέρα", "other"]
    events = []
    for n in range(count):
        stored = labels_module.encode({"kind": rng.choice(values), "template": rng.choice(values)})
        provider, message = "p", f"m{n}"
        country = rng.choice([None, "GR", "de"])
        kind = rng.randrange(7)
        if kind == 0:
            events.append(Transition(provider, message, rng.choice(list(Status)), rng.choice([None, "not_viber_user", "x"]),
                                     country, stored))
        elif kind == 1:
            events.append(Latency(provider, message, rng.choice(["delivery", "read"]), rng.uniform(0, 5000), stored))
        elif kind == 2:
            events.append(Cost(provider, rng.choice(["EUR", "USD"]), rng.choice(["viber", "sms"]),
                               rng.choice([0.012, 0.02, 0.0333]), country, stored))
        elif kind == 3:
            events.append(SmsFallback(provider, stored))
        elif kind == 4:
            events.append(WatchExpired(provider, stored))
        elif kind == 5:
            events.append(FallbackOutcome(provider, "sms", rng.choice([Status.DELIVERED, Status.FAILED]), stored))
        else:
            events.append(Transition(provider, message, Status.FAILED, "x", country, stored))
    return events


def _parsed(text: str, openmetrics: bool) -> dict:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    result = {}
    for family in parse(text):
        samples = {(s.name, frozenset(s.labels.items())): (s.value, s.exemplar and (s.exemplar.labels, s.exemplar.value))
                   for s in family.samples}
        assert len(samples) == len(family.samples), f"{family.name}: a series twice"
        result[family.name] = (family.type, family.documentation, samples)
    return result


def test_a_scrape_says_exactly_what_prometheus_client_would_in_both_formats():
    """/metrics renders the outcome families from a per-series text cache; after every
    batch of events the scrape parses to the very families, samples, values and
    exemplars prometheus_client's own encoders write from the same registry."""
    registry, metrics = _labelled_metrics()
    rng = random.Random(5)
    for _ in range(6):
        metrics.add_label_combinations([("p", labels_module.encode({"kind": "otp", "template": str(rng.random())}))])
        metrics.record(_random_events(rng, 300))
        metrics.messages.replace({("p", "pending", "otp", ""): rng.randrange(9), ("p", "read", "", ""): 1})
        for accept, encode, openmetrics in (
            ("", generate_latest, False),
            ("application/openmetrics-text; version=1.0.0", generate_openmetrics, True),
        ):
            body, content_type = exposition.render(registry, metrics.cached, accept)
            assert content_type.startswith("application/openmetrics-text") == openmetrics
            expected = encode(registry).decode()
            if not openmetrics:  # viber_messages is StateCollector's, not registered here
                expected += generate_latest(_One(metrics.messages)).decode()
            else:
                expected = expected.removesuffix("# EOF\n") + generate_openmetrics(_One(metrics.messages)).decode()
            assert _parsed(body.decode(), openmetrics) == _parsed(expected, openmetrics)
    assert any("καλημέρα" in line for line in body.decode().splitlines())


class _One:
    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        return self.collector.collect()


def test_a_series_is_formatted_again_only_when_it_changed(monkeypatch):
    registry, metrics = _labelled_metrics()
    metrics.add_label_combinations([("p", labels_module.encode({"kind": str(n)})) for n in range(50)])
    formatted = []
    real = CachedCounter._series_text
    monkeypatch.setattr(CachedCounter, "_series_text", lambda self, key, om: formatted.append(key) or real(self, key, om))
    exposition.render(registry, metrics.cached, "")
    assert len(formatted) > 50 * len(Status), "the first scrape formats every series"
    formatted.clear()
    exposition.render(registry, metrics.cached, "")
    assert formatted == [], "nothing changed: nothing formatted"
    metrics.record([Transition("p", "m", Status.DELIVERED, None, None, labels_module.encode({"kind": "7"}))])
    body, _ = exposition.render(registry, metrics.cached, "")
    assert formatted == [("p", "delivered", "", "7", "")]
    assert 'viber_message_status_transitions_total{country="",kind="7",provider="p",status="delivered",template=""} 1.0' \
        in body.decode()


def test_a_scrape_while_events_are_counted_misses_none():
    registry, metrics = _labelled_metrics()
    events = [Transition("p", f"m{n}", Status.DELIVERED, None, None, labels_module.encode({"kind": str(n % 10)}))
              for n in range(20_000)]
    done = threading.Event()

    def count():
        for start in range(0, len(events), 100):
            metrics.record(events[start:start + 100])
        done.set()

    worker = threading.Thread(target=count)
    worker.start()
    while not done.is_set():
        exposition.render(registry, metrics.cached, "application/openmetrics-text")
    worker.join()
    body, _ = exposition.render(registry, metrics.cached, "application/openmetrics-text")
    total = sum(s.value for f in openmetrics_families(body.decode()) for s in f.samples
                if s.name == "viber_message_status_transitions_total" and s.labels["status"] == "delivered")
    assert total == 20_000


def test_the_landing_figures_sum_every_labelled_series():
    _, metrics = _labelled_metrics()
    metrics.record([Latency("p", "a", "delivery", 4.0, labels_module.encode({"kind": "otp"})),
                    Latency("p", "b", "delivery", 4.0, labels_module.encode({"kind": "marketing"})),
                    Latency("p", "c", "delivery", 400.0, None)])
    delivery = metrics.figures()["p"].delivery
    assert (delivery.count, delivery.total) == (3, 408.0)
    assert delivery.quantile(0.5) is not None and delivery.quantile(0.5) <= 5, "two of three within 5 s"

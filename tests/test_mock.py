"""The bundled mock providers: both APIs as documented, quirks, faults and ground truth."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry

from viber_exporter.clock import SYSTEM_CLOCK, ManualClock
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.http import ProviderHttp
from viber_exporter.model import FetchError, Outcome, Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer
from viber_exporter.testing.mock import BSG_API_KEY, Faults, MockProviders, exporter_config
from viber_exporter.testing.simulation import Mix

from .conftest import sample, wait_for

FAST = Mix(delivery_median=0.3, read_median=0.3, final_median=0.3, sigma=0.3, visible_after=0.0)


@pytest.fixture
def host(builtin_host: PluginHost) -> PluginHost:
    return builtin_host


@pytest.fixture
def mock() -> Iterator[tuple[MockProviders, str]]:
    app = MockProviders(FAST, seed=7)
    server = BackgroundServer(app, "127.0.0.1", 0)
    server.start()
    yield app, server.url
    server.stop()


@pytest.fixture
def virtual_mock() -> Iterator[tuple[MockProviders, str, ManualClock]]:
    """The mock on a virtual clock: time moves only when the test moves it."""
    clock = ManualClock()
    app = MockProviders(FAST, seed=7, clock=clock.time)
    server = BackgroundServer(app, "127.0.0.1", 0)
    server.start()
    yield app, server.url, clock
    server.stop()


def config_text(url: str, state, **bsg: str) -> str:
    return exporter_config(url, state, polling={"tick": "100ms", "schedule": ["200ms"], "not_found_grace": "5s",
                                                "read_window": "5s"},
                           routee={"rate_limit": 500}, bsg={"rate_limit": 500, **bsg})


def providers(host, url, tmp_path, clock=SYSTEM_CLOCK, **extra):
    config = parse_config(config_text(url, tmp_path / "s.db", **extra), host.provider_types(), {})
    return {name: pc.type.cls(name, pc.settings, ProviderHttp(2.0, clock=clock)) for name, pc in config.providers.items()}


def create(url: str, provider: str, fate: str | None = None, count: int = 1) -> list[dict[str, str]]:
    body = {"provider": provider, "count": count, **({"fate": fate} if fate else {})}
    return requests.post(f"{url}/mock/messages", json=body, timeout=5).json()["messages"]


def test_routee_lifecycle_and_quirks(virtual_mock, host, tmp_path):
    app, url, clock = virtual_mock
    routee = providers(host, url, tmp_path, clock=clock)["routee"]
    [message] = create(url, "routee", "read")
    assert routee.check_id(message["id"]) is None
    plan = app.simulation.find("routee", message["id"])
    now = clock.time()
    plan.visible_at, plan.delivered_at, plan.read_at = now + 0.3, now + 0.8, now + 1.2  # 404019006 first
    with pytest.raises(FetchError) as info:
        routee.fetch(message["id"])
    assert info.value.outcome is Outcome.NOT_FOUND
    seen = []
    for _ in range(4):
        clock.advance(0.35)
        seen.append(routee.fetch(message["id"]).status)
    assert seen == [Status.PENDING, Status.PENDING, Status.DELIVERED, Status.READ]


def test_bsg_quirks(mock, host, tmp_path, clock):
    app, url = mock
    bsg = providers(host, url, tmp_path)["bsg"]
    [expired] = create(url, "bsg", "expired")
    app.simulation.find("bsg", expired["id"]).final_at = clock.time() - 1
    raw = requests.get(f"{url}/rest/viber/{expired['id']}", headers={"X-API-KEY": BSG_API_KEY}, timeout=5).json()
    assert raw["time_dr"] and raw["status"] == "expired", "time_dr filled for an expired message"
    assert len(raw["time_in"]) == 19 and "T" not in raw["time_in"], "zone-less YYYY-MM-DD HH:MM:SS"
    obs = bsg.fetch(expired["id"])
    assert obs.status is Status.EXPIRED and obs.delivered_at is None
    prices = set()
    for message in create(url, "bsg", "failed", count=20):
        plan = app.simulation.find("bsg", message["id"])
        plan.final_at = clock.time() - 1
        body = requests.get(f"{url}/rest/viber/{message['id']}", headers={"X-API-KEY": BSG_API_KEY}, timeout=5).json()
        prices.add(type(body["price"]))
        if plan.sms_price:
            assert body["alt_route"][0]["price"] == "0.0500"
            assert bsg.fetch(message["id"]).fallbacks[0].price == 0.05
    assert prices == {str, float}, "prices come as numbers and as numeric strings"
    by_reference = providers(host, url, tmp_path, lookup="reference")["bsg"]
    assert by_reference.fetch(app.simulation.find("bsg", expired["id"]).reference).status is Status.EXPIRED
    wrong = requests.get(f"{url}/rest/viber/1", headers={"X-API-KEY": "nope"}, timeout=5).json()
    assert wrong["error"] == 1
    missing = requests.get(f"{url}/rest/viber/999", headers={"X-API-KEY": BSG_API_KEY}, timeout=5).json()
    assert missing["error"] == "40"


@pytest.mark.parametrize(
    ("faults", "outcome"),
    [
        (Faults(outage=True), Outcome.SERVER_ERROR),
        (Faults(error_rate=1.0), Outcome.SERVER_ERROR),
        (Faults(malformed_rate=1.0), Outcome.INVALID_RESPONSE),
        (Faults(slow_rate=1.0, slow_seconds=3.0), Outcome.TIMEOUT),
    ],
)
def test_fault_injection(mock, host, tmp_path, faults, outcome):
    app, url = mock
    for name, provider in providers(host, url, tmp_path).items():
        provider.http.timeout = 1.0
        [message] = create(url, name)
        app.faults = faults
        with pytest.raises(FetchError) as info:
            provider.fetch(message["id"])
        assert info.value.outcome is outcome, name
        app.faults = Faults()


def test_rate_limit_with_retry_after_and_runtime_fault_changes(virtual_mock, host, tmp_path):
    _, url, clock = virtual_mock
    answer = requests.post(f"{url}/mock/faults", json={"rate_limit": 2, "retry_after": 3, "bogus": 1}, timeout=5).json()
    assert answer["rate_limit"] == 2 and "bogus" not in answer
    bsg = providers(host, url, tmp_path, clock=clock)["bsg"]
    [message] = create(url, "bsg")
    outcomes = []
    for _ in range(4):  # within one (virtual) second: two answers, then 429s
        try:
            bsg.fetch(message["id"])
            outcomes.append("ok")
        except FetchError as e:
            outcomes.append((e.outcome, e.retry_after))
    assert outcomes == ["ok", "ok", (Outcome.RATE_LIMITED, 3.0), (Outcome.RATE_LIMITED, 3.0)]
    clock.advance(1.5)
    assert bsg.fetch(message["id"]).status is not None, "a new second, new calls"


def test_token_expiry_is_survived(virtual_mock, host, tmp_path):
    app, url, clock = virtual_mock
    app.faults = Faults(token_lifetime=1)
    routee = providers(host, url, tmp_path, clock=clock)["routee"]
    [message] = create(url, "routee")
    for _ in range(4):
        routee.fetch(message["id"])
        clock.advance(0.4)
    assert len(app.tokens) >= 2


def test_exporter_run_matches_the_mock_ground_truth(mock, host, tmp_path, clock):
    app, url = mock
    config = parse_config(config_text(url, tmp_path / "s.db"), host.provider_types(), {})
    exporter = Exporter(config, host, registry=CollectorRegistry())
    exporter.start()
    try:
        for provider in ("routee", "bsg"):
            for fate in ("read", "delivered", "failed", "expired"):
                messages = create(url, provider, fate, count=5)
                exporter.register([Registration(provider, m["id"]) for m in messages])
        # Everything settles: final, or delivered with the 5 s read window closed.
        wait_for(lambda: exporter.store.total_watched() == 0, timeout=30)
        truth = app.simulation.truth(clock.time())
        for provider in ("routee", "bsg"):
            t = truth[provider]
            for status in ("pending", "delivered", "read", "failed", "expired"):
                got = sample(exporter, "viber_message_status_transitions_total", provider=provider, status=status)
                assert got == t["transitions"].get(status, 0), (provider, status)
            for reason, count in t["failures"].items():
                assert sample(exporter, "viber_message_failures_total", provider=provider, reason=reason) == count
            assert sample(exporter, "viber_message_cost_total", provider=provider, currency="EUR", channel="viber") == pytest.approx(t["cost"]["viber"])
            assert sample(exporter, "viber_message_cost_total", provider=provider, currency="EUR", channel="sms") == pytest.approx(t["cost"]["sms"])
            assert sample(exporter, "viber_message_sms_fallbacks_total", provider=provider) == t["sms_fallbacks"]
            assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider=provider) == t["delivery_latency_count"]
    finally:
        exporter.stop()

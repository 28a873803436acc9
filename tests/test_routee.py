"""The Routee plugin against a fake Routee served over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer
from werkzeug import Response

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.errors import ConfigError
from viber_exporter.http import ProviderHttp
from viber_exporter.model import FetchError, Outcome, Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.plugins.routee import RouteeProvider
from viber_exporter.provider import InvalidCallback

from .conftest import QuickHTTPServer, sample, toml_table, wait_for
from .fake_routee import APP_ID, APP_SECRET, FakeRoutee, error, flow, tracking
from .fuzzing import FUZZ, ROUTEE, assert_clean, json_values, routee_like

TRACKING = "0a047b46-a4dd-4ca8-b817-a6a134dd1234"


@pytest.fixture
def routee() -> Iterator[tuple[HTTPServer, FakeRoutee]]:
    server = QuickHTTPServer(threaded=True)
    server.start()
    fake = FakeRoutee()
    server.expect_request("/oauth/token", method="POST").respond_with_handler(fake.handle_token)
    server.expect_request(re.compile(r"/viber/tracking/.*"), method="GET").respond_with_handler(fake.handle_tracking)
    server.expect_request("/accounts/me/balance", method="GET").respond_with_handler(fake.handle_balance)
    server.expect_request(re.compile(r"/failover/tracking/.*"), method="GET").respond_with_handler(fake.handle_failover)
    yield server, fake
    server.clear()
    if server.is_running():
        server.stop()


def routee_config(server: HTTPServer, state: Path, **provider: Any) -> str:
    url = server.url_for("").rstrip("/")
    values = {"plugin": "routee", "application_id": APP_ID, "application_secret": APP_SECRET, "currency": "EUR",
              "base_url": url, "token_url": f"{url}/oauth/token", "concurrency": 4, "rate_limit": 1000, "timeout": "2s",
              **provider}
    return f"""
[exporter]
state_path = {json.dumps(str(state))}
[polling]
tick = "100ms"
schedule = ["100ms"]
not_found_grace = "1h"
[providers.routee]
{toml_table(values)}
"""


@pytest.fixture
def provider(routee, builtin_host, tmp_path) -> RouteeProvider:
    server, _ = routee
    config = parse_config(routee_config(server, tmp_path / "s.db"), builtin_host.provider_types(), {})
    return RouteeProvider("routee", config.providers["routee"].settings, ProviderHttp(timeout=1.0, pool_size=8))


def test_config_validation_reports_every_problem(builtin_host):
    text = '[providers.r]\nplugin = "routee"\ncurrency = "euro"\nbase_url = "nope"\ntoken_url = "ftp://x"\nextra = 1\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, builtin_host.provider_types(), {})
    paths = {path for path, _ in info.value.problems}
    assert {"providers.r.application_id", "providers.r.application_secret", "providers.r.currency",
            "providers.r.base_url", "providers.r.token_url", "providers.r.extra"} <= paths


def test_secret_file_and_defaults(builtin_host, tmp_path):
    (tmp_path / "secret").write_text(APP_SECRET)
    text = f'[providers.r]\nplugin = "routee"\napplication_id = "a"\napplication_secret_file = "{tmp_path / "secret"}"\ncurrency = "USD"\n'
    settings = parse_config(text, builtin_host.provider_types(), {}).providers["r"].settings
    assert settings.application_secret.reveal() == APP_SECRET
    assert (settings.base_url, settings.token_url) == ("https://connect.routee.net", "https://auth.routee.net/oauth/token")
    assert APP_SECRET not in repr(settings)


@pytest.mark.parametrize("bad", ["", "x" * 65, "abc/def", "abc def", "ä"])
def test_ids_are_validated(provider, bad):
    assert "tracking id" in provider.check_id(bad)


def test_ids_accepted(provider):
    assert provider.check_id(TRACKING) is None


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        ("QUEUED", Status.PENDING, None),
        ("Delivered", Status.DELIVERED, None),
        ("SEEN", Status.READ, None),
        ("UNDELIVERED", Status.FAILED, "not_viber_user"),
        ("failed", Status.FAILED, "not_viber_user"),
        ("UNSENT", Status.FAILED, "not_viber_user"),
        ("EXPIRED", Status.EXPIRED, "not_viber_user"),
        ("BRAND_NEW", Status.UNKNOWN, "not_viber_user"),
    ],
)
def test_every_status(routee, provider, raw, status, reason):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, raw, reason="Not Viber User")
    obs = provider.fetch(TRACKING)
    assert (obs.status, obs.reason, obs.provider_status) == (status, reason, raw)
    assert (obs.price, obs.currency, obs.country) == (0.035, "EUR", "GR")


@pytest.mark.parametrize(
    ("detailed", "reason"),
    [("Not Viber User", "not_viber_user"), ("Opted Out", "opted_out"), ("System Failure", "system_failure"),
     ("Message Rejected", "message_rejected"), ("Timed Out", "timed_out"),
     ("Unsupported Equipment", "unsupported_equipment"), ("TTL Expired", "ttl_expired"), (None, "undelivered")],
)
def test_every_reason(routee, provider, detailed, reason):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "UNDELIVERED", reason=detailed)
    assert provider.fetch(TRACKING).reason == reason


@pytest.mark.parametrize(
    ("date", "epoch"),
    [("2019-07-05T10:28:44.996Z", 1562322524.996), ("2019-07-05T10:28:44.44Z", 1562322524.44),
     ("2019-07-05T10:28:49Z", 1562322529.0), ("2019-07-05T10:28:49", 1562322529.0),
     ("2019-07-05T12:28:49+02:00", 1562322529.0)],
)
def test_each_date_form(routee, provider, date, epoch):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "DELIVERED", date=date)
    assert provider.fetch(TRACKING).delivered_at.timestamp() == pytest.approx(epoch)
    fake.messages[TRACKING] = tracking(TRACKING, "SEEN", date=date)
    obs = provider.fetch(TRACKING)
    assert obs.read_at.timestamp() == pytest.approx(epoch) and obs.delivered_at is None


@pytest.mark.parametrize("shape", ["list", "page"])
def test_list_and_page_shapes(routee, provider, shape):
    _, fake = routee
    item = tracking(TRACKING, "SEEN")
    fake.messages[TRACKING] = [item] if shape == "list" else {"content": [item], "totalElements": 1, "number": 0, "size": 20}
    assert provider.fetch(TRACKING).status is Status.READ
    fake.messages[TRACKING] = {"content": [], "totalElements": 0}
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.NOT_FOUND


def test_token_fetched_once_and_reused_across_concurrent_polls(routee, provider):
    _, fake = routee
    fake.delay = 0.01
    for i in range(40):
        fake.messages[f"id-{i}"] = tracking(f"id-{i}", "QUEUED")
    threads = [threading.Thread(target=provider.fetch, args=(f"id-{i}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.token_requests == 1
    assert len(fake.lookups) == 40


def test_token_refreshed_before_expiry(routee, provider):
    _, fake = routee
    fake.expires_in = 1  # short-lived: refreshed at half its life (the 60 s margin does not fit)
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    provider.fetch(TRACKING)
    time.sleep(0.6)
    provider.fetch(TRACKING)
    assert fake.token_requests == 2
    assert all(code == 200 for _, code in fake.lookups), "never used an expired token"


def test_revoked_token_is_replaced_once_and_the_call_retried(routee, provider):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    provider.fetch(TRACKING)
    fake.expire_all_tokens()
    assert provider.fetch(TRACKING).status is Status.PENDING
    assert fake.token_requests == 2
    assert [code for _, code in fake.lookups] == [200, 401, 200]


def test_403_after_a_fresh_token_is_auth_error(routee, provider):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    fake.faults.extend([error(403, "403000001", "insufficient scope"), error(403, "403000001", "insufficient scope")])
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.AUTH_ERROR and "insufficient scope" in info.value.message
    assert fake.token_requests == 2, "one new token, one retry, then give up"


@pytest.mark.parametrize(
    ("response", "outcome", "retry_after"),
    [
        (lambda: error(429, "429000000", "too many"), Outcome.RATE_LIMITED, None),
        (lambda: Response("{}", 429, headers={"Retry-After": "7"}), Outcome.RATE_LIMITED, 7.0),
        (lambda: error(500, "500000000", "boom"), Outcome.SERVER_ERROR, None),
        (lambda: error(400, "400019001", "bad id"), Outcome.CLIENT_ERROR, None),
        (lambda: Response("<html>not found</html>", 404), Outcome.CLIENT_ERROR, None),
        (lambda: Response("{not json", 200), Outcome.INVALID_RESPONSE, None),
        (lambda: Response(json.dumps({"trackingId": TRACKING}), 200), Outcome.INVALID_RESPONSE, None),
    ],
)
def test_error_answers_become_outcomes(routee, provider, response, outcome, retry_after):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    provider.fetch(TRACKING)  # get a token first
    fake.faults.append(response())
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is outcome
    assert info.value.retry_after == retry_after


def test_not_found_code_and_bad_credentials(routee, provider):
    _, fake = routee
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.NOT_FOUND
    fake.valid_secret = "something-else"
    fake.expire_all_tokens()
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.AUTH_ERROR
    assert APP_SECRET not in info.value.message


def test_timeout(routee, provider):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    provider.fetch(TRACKING)
    fake.delay = 1.5
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.TIMEOUT


def test_callback_parsing(provider):
    body = {
        "trackingId": TRACKING, "campaignTrackingId": "c", "to": "+30", "from": "S", "groups": [], "country": "GR",
        "status": {"name": "DELIVERED", "reason": {"detailedStatus": "Delivered", "description": "…"},
                   "updatedDate": "2019-07-05T10:28:44.996Z"},
        "body": {"text": "hi"}, "ttl": 0, "applicationName": "default", "price": 0.035,
        "direction": "Outbound", "originatingService": "Viber", "createdAt": "2019-07-05T10:28:44.566Z",
    }
    [(tracking_id, obs)] = provider.parse_callback(CallbackRequest.of(json.dumps(body).encode()))
    assert tracking_id == TRACKING
    assert obs.status is Status.DELIVERED and obs.price == 0.035 and obs.currency == "EUR"
    assert obs.sent_at.timestamp() == pytest.approx(1562322524.566)
    assert obs.delivered_at.timestamp() == pytest.approx(1562322524.996)
    failed = body | {"status": {"name": "Undelivered", "reason": {"detailedStatus": "Opted Out"}, "updatedDate": "2019-07-05T10:29:00Z"}}
    [(_, obs)] = provider.parse_callback(CallbackRequest.of(json.dumps([failed]).encode()))
    assert (obs.status, obs.reason) == (Status.FAILED, "opted_out")
    for bad in (b"{", b"[1]", json.dumps({"status": {"name": "SEEN"}}).encode(), json.dumps(body | {"status": {}}).encode()):
        with pytest.raises(InvalidCallback):
            provider.parse_callback(CallbackRequest.of(bad))


def run_exporter(host: PluginHost, text: str) -> Exporter:
    exporter = Exporter(parse_config(text, host.provider_types(), {}), host, registry=CollectorRegistry())
    exporter.start()
    return exporter


def test_poller_run_matches_ground_truth(routee, builtin_host, tmp_path, clock):
    """Registration to settled metrics through the real poller; counts equal the fake's truth."""
    server, fake = routee
    fake.expires_in = 2  # tokens expire (and are refreshed) during the run
    truth = {
        "a1": ("SEEN", None, 0.035), "a2": ("SEEN", None, 0.04), "a3": ("DELIVERED", None, 0.035),
        "a4": ("UNDELIVERED", "Not Viber User", 0.0), "a5": ("EXPIRED", "TTL Expired", 0.01),
        "a6": ("UNSENT", "Opted Out", None), "a7": ("FAILED", "Not Viber User", 0.02),
    }
    sent = float(int(clock.time()) - 100)  # whole seconds: the fake's dates have no fraction
    exporter = run_exporter(builtin_host, routee_config(server, tmp_path / "s.db", concurrency=3))
    try:
        exporter.register([Registration("routee", f"{i}-x", sent_at=sent) for i in truth])
        # First the ids are not visible yet (404019006), then everything is QUEUED, then final.
        wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="routee", outcome="not_found") >= 7)
        for i in truth:
            fake.messages[f"{i}-x"] = tracking(f"{i}-x", "QUEUED", price=None)
        wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="routee", status="pending") == 7)
        for i, (status, reason, price) in truth.items():
            fake.messages[f"{i}-x"] = tracking(f"{i}-x", status, reason=reason, price=price,
                                               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent + 30)))
        wait_for(lambda: exporter.store.counts()[0].get(("routee", Status.DELIVERED), 0) == 1
                 and exporter.store.counts()[1]["routee"] == 1, timeout=15)
        time.sleep(2.5)  # the token expires at least once more while a3 is still polled
        expected = {"pending": 7, "delivered": 3, "read": 2, "failed": 3, "expired": 1, "unknown": 0}
        for status, count in expected.items():
            assert sample(exporter, "viber_message_status_transitions_total", provider="routee", status=status) == count, status
        assert sample(exporter, "viber_message_failures_total", provider="routee", reason="not_viber_user") == 2
        assert sample(exporter, "viber_message_failures_total", provider="routee", reason="opted_out") == 1
        assert sample(exporter, "viber_message_failures_total", provider="routee", reason="ttl_expired") == 1
        assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="routee") == 3
        assert sample(exporter, "viber_message_delivery_latency_seconds_sum", provider="routee") == pytest.approx(90)
        assert sample(exporter, "viber_message_cost_total", provider="routee", currency="EUR", channel="viber") == pytest.approx(0.035 * 2 + 0.04 + 0.01 + 0.02)
        assert fake.token_requests >= 2
        assert sample(exporter, "viber_provider_requests_total", provider="routee", outcome="auth_error") == 0
    finally:
        exporter.stop()


def test_bad_credentials_take_the_provider_down_and_lose_nothing(routee, builtin_host, tmp_path):
    server, fake = routee
    fake.valid_secret = "rotated"
    fake.messages["b-1"] = tracking("b-1", "SEEN")
    exporter = run_exporter(builtin_host, routee_config(server, tmp_path / "s.db", concurrency=1))
    try:
        exporter.register([Registration("routee", "b-1")])
        wait_for(lambda: sample(exporter, "viber_provider_up", provider="routee") == 0)
        assert sample(exporter, "viber_provider_requests_total", provider="routee", outcome="auth_error") >= 1
        assert exporter.store.get("routee", "b-1").watched
        fake.valid_secret = APP_SECRET  # credentials work again
        wait_for(lambda: exporter.store.get("routee", "b-1").status is Status.READ, timeout=15)
        assert sample(exporter, "viber_provider_up", provider="routee") == 1
    finally:
        exporter.stop()


# -- conformance with Routee's documents (issue "Provider truth") ----------------------------


def test_a_list_without_the_queried_id_is_refused_not_another_message(routee, provider):
    _, fake = routee
    other = tracking("ffffffff-0000-0000-0000-000000000000", "SEEN", price=0.9)
    fake.messages[TRACKING] = [other]
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is Outcome.INVALID_RESPONSE
    fake.messages[TRACKING] = other
    with pytest.raises(FetchError):
        provider.fetch(TRACKING)


def test_delivered_then_expired_is_a_delivered_message(routee, provider):
    _, fake = routee
    body = tracking(TRACKING, "EXPIRED", reason="TTL Expired") | {"expireOnDelivery": True,
                                                                   "expiredOnDeliveryAt": "2026-11-30T10:00:00Z"}
    fake.messages[TRACKING] = body
    obs = provider.fetch(TRACKING)
    assert (obs.status, obs.provider_status, obs.reason, obs.settled) == (Status.DELIVERED, "EXPIRED", None, True)
    fake.messages[TRACKING] = tracking(TRACKING, "EXPIRED", reason="TTL Expired")
    assert provider.fetch(TRACKING).status is Status.EXPIRED, "never delivered: a real expiry"


def test_optional_fields_are_repaired_or_dropped_not_the_answer(routee, provider):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "DELIVERED", date=1764496800123) | {"price": "lots", "country": "Greece"}
    obs = provider.fetch(TRACKING)
    assert obs.status is Status.DELIVERED
    assert obs.delivered_at.timestamp() == pytest.approx(1764496800.123), "epoch milliseconds"
    assert obs.price is None and set(obs.problems) == {"status.date", "price"}
    assert obs.country == "GR", "Routee documents country names; the label takes ISO codes"
    fake.messages[TRACKING] = tracking(TRACKING, "SEEN", date="yesterday")
    seen = provider.fetch(TRACKING)
    assert seen.status is Status.READ and seen.read_at is None and seen.problems == ("status.date",)


@pytest.mark.parametrize(("status", "headers", "outcome"), [
    (503, {"Retry-After": "9"}, Outcome.SERVER_ERROR), (500, {}, Outcome.SERVER_ERROR), (504, {}, Outcome.TIMEOUT),
    (401, {}, Outcome.AUTH_ERROR), (400, {}, Outcome.AUTH_ERROR), (429, {"Retry-After": "4"}, Outcome.RATE_LIMITED),
])
def test_the_token_endpoint_s_own_failures_are_not_bad_credentials(routee, provider, status, headers, outcome):
    _, fake = routee
    fake.messages[TRACKING] = tracking(TRACKING, "QUEUED")
    body = json.dumps({"error": "invalid_client", "error_description": "Bad client credentials"})
    fake.token_faults.append(Response(body, status, headers=headers, content_type="application/json"))
    with pytest.raises(FetchError) as info:
        provider.fetch(TRACKING)
    assert info.value.outcome is outcome
    if "Retry-After" in headers:
        assert info.value.retry_after == float(headers["Retry-After"])
    if outcome is Outcome.AUTH_ERROR:
        assert "Bad client credentials" in info.value.message, "Routee's own description is kept"


def test_a_failed_token_fetch_is_not_repeated_by_every_waiting_poll(routee, provider):
    _, fake = routee
    fake.delay = 0.05
    for i in range(20):
        fake.messages[f"id-{i}"] = tracking(f"id-{i}", "QUEUED")
    fake.token_faults.append(Response("{}", 503))
    outcomes = []

    def poll(i: int) -> None:
        try:
            provider.fetch(f"id-{i}")
            outcomes.append("ok")
        except FetchError as e:
            outcomes.append(e.outcome.value)

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.token_requests == 1 and outcomes == ["server_error"] * 20


def test_verify_reads_the_balance_and_the_currency_defaults_to_the_account_s(routee, builtin_host, tmp_path):
    from viber_exporter.provider import Balance

    server, fake = routee
    config = parse_config(routee_config(server, tmp_path / "s.db", currency=""), builtin_host.provider_types(), {})
    provider = RouteeProvider("routee", config.providers["routee"].settings, ProviderHttp(timeout=1.0))
    fake.messages[TRACKING] = tracking(TRACKING, "DELIVERED", price=0.035)
    assert provider.fetch(TRACKING).currency == "EUR", "asked once from /accounts/me/balance"
    assert provider.verify() == Balance(120.5, "EUR")
    fake.valid_secret = "rotated"
    fake.expire_all_tokens()
    provider.oauth.tokens.invalidate(provider.oauth.tokens.get())
    with pytest.raises(FetchError) as info:
        provider.verify()
    assert info.value.outcome is Outcome.AUTH_ERROR


def test_failover_flows_bring_the_sms_leg(routee, provider):
    _, fake = routee
    fake.flows[TRACKING] = flow(TRACKING, "UNDELIVERED", "Queued")
    assert provider.check_fields({"tracking": "failover"}) is None
    assert provider.check_fields({"tracking": "campaign"})
    from viber_exporter.model import MessageRef

    ref = MessageRef(TRACKING, {"tracking": "failover"})
    obs = provider.fetch_message(ref)
    assert (obs.status, obs.reason, obs.country) == (Status.FAILED, "not_viber_user", "GR")
    [leg] = obs.fallbacks
    assert (leg.sent, leg.outcome) == (False, Status.PENDING), "queued: not sent yet"
    fake.flows[TRACKING] = flow(TRACKING, "UNDELIVERED", "Delivered", sms_price=0.06)
    [leg] = provider.fetch_message(ref).fallbacks
    assert (leg.sent, leg.outcome, leg.price, leg.currency) == (True, Status.DELIVERED, 0.06, "EUR")


def test_failover_flows_through_the_poller_count_the_fallback_once(routee, builtin_host, tmp_path):
    server, fake = routee
    exporter = run_exporter(builtin_host, routee_config(server, tmp_path / "s.db"))
    try:
        fake.flows[TRACKING] = flow(TRACKING, "UNDELIVERED", "Sent")
        exporter.register([Registration("routee", TRACKING, fields={"tracking": "failover"})])
        wait_for(lambda: sample(exporter, "viber_message_sms_fallbacks_total", provider="routee") == 1)
        assert exporter.store.get("routee", TRACKING).watched, "the SMS leg is still out"
        fake.flows[TRACKING] = flow(TRACKING, "UNDELIVERED", "Delivered")
        wait_for(lambda: not exporter.store.get("routee", TRACKING).watched)
        assert sample(exporter, "viber_message_fallback_outcomes_total", provider="routee", channel="sms", outcome="delivered") == 1
        assert sample(exporter, "viber_message_cost_total", provider="routee", currency="EUR", channel="sms") == pytest.approx(0.05)
        assert sample(exporter, "viber_message_sms_fallbacks_total", provider="routee") == 1
    finally:
        exporter.stop()


def iso_ago(seconds: float) -> str:
    """A Routee time ``seconds`` before the exporter's clock (never a literal date)."""
    from viber_exporter.clock import SYSTEM_CLOCK

    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(SYSTEM_CLOCK.time() - seconds))


FLOW_ID = "30830fad-21ed-49b0-89d0-bbada2fd5640"
VIBER_LEG = "0a047b46-a4dd-4ca8-b817-a6a134dd1234"


def documented_failover_report() -> dict[str, Any]:
    """Routee's own failover-callback example (docs.routee.net "Failover callbacks"),
    field for field, with its 2019 dates moved to a minute ago. Its totalPrice (0.036)
    is not the sum of its legs (0.035 + 0.036): the example itself is inconsistent."""
    return {
        "trackingId": FLOW_ID,
        "messages": [
            {"type": "Viber", "trackingId": VIBER_LEG, "to": "+306912345678", "from": "Routeetest", "country": "GR",
             "ttl": 10, "expireOnDelivery": False, "expiredOnDeliveryAt": None,
             "status": {"name": "DELIVERED", "reason": {"detailedStatus": "Delivered",
                                                        "description": "The message was delivered to its recipient."},
                        "updatedDate": iso_ago(55)},
             "body": {"text": "This is a test, please ignore!", "imageUrl": "https://example.com/image.png",
                      "action": {"caption": "Go", "targetUrl": "https://www.routee.net/"}},
             "label": "labelName", "failoverOnStatuses": ["EXPIRED", "FAILED", "UNDELIVERED"], "order": 1,
             "inboundUrl": "https://your-server.com/inbound", "price": 0.035, "createdAt": iso_ago(56)},
            {"type": "Sms", "messageId": "82a91dc3-e842-41eb-86e5-07d55eb51234",
             "smsId": "1274d238-38b7-4c56-b49a-9b70d25c1234", "to": "+306912345678", "from": "Routee", "country": "GR",
             "operator": "Vodafone", "ttl": 15,
             "status": {"name": "Delivered", "reason": {"detailedStatus": "Delivered",
                                                        "description": "The SMS was sent and it was delivered to its recipient."},
                        "updatedDate": iso_ago(50)},
             "body": "Hello from failover", "price": 0.036, "label": "labelName", "order": 2, "part": 1, "parts": 1,
             "latency": 4, "failoverOnStatuses": ["Undelivered", "Failed"], "createdAt": iso_ago(55)},
        ],
        "terminationChannel": "Sms", "status": "Succeeded", "statusCode": None, "totalPrice": 0.036,
        "originatingService": "Failover", "applicationId": "5b223c27e4b04b9cdaa71234",
        "createdAt": iso_ago(56), "updatedAt": iso_ago(50),
    }


def test_the_documented_failover_callback_is_read_as_its_flow(routee, builtin_host, tmp_path):
    """Through the real HTTP API: one message keyed on the flow's trackingId (no phantom
    for a leg), its Viber status and price, the SMS leg as a fallback with its own price,
    the totalPrice that disagrees with the legs counted as an answer problem; the flow
    is registered as a failover flow, so its later polls ask /failover/tracking/."""
    from viber_exporter.server import HttpServer

    server, fake = routee
    exporter = run_exporter(builtin_host, routee_config(server, tmp_path / "s.db", callback_token="cb-t0ken"))
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    try:
        answer = requests.post(f"{http.url}/api/v1/callbacks/routee", params={"token": "cb-t0ken"},
                               json=documented_failover_report(), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"accepted": 1}
        stored = exporter.store.get("routee", FLOW_ID)
        assert stored is not None and exporter.store.get("routee", VIBER_LEG) is None, "no phantom leg"
        assert (stored.status, stored.fields) == (Status.DELIVERED, {"tracking": "failover"})
        assert (stored.price, stored.sms_price, stored.fallback_status) == (0.035, 0.036, "delivered")
        assert stored.ttl == 600.0, "a failover leg's ttl is in minutes"
        assert sample(exporter, "viber_message_cost_total", provider="routee", currency="EUR", channel="viber") == 0.035
        assert sample(exporter, "viber_message_cost_total", provider="routee", currency="EUR", channel="sms") == 0.036
        assert sample(exporter, "viber_message_sms_fallbacks_total", provider="routee") == 1
        assert sample(exporter, "viber_provider_answer_problems_total", provider="routee", problem="inconsistent_answer") == 1
        assert sample(exporter, "viber_message_status_transitions_total", provider="routee", status="unknown") == 0
        fake.flows[FLOW_ID] = documented_failover_report()
        wait_for(lambda: any(r.path == f"/failover/tracking/{FLOW_ID}" for r, _ in server.log))
        assert not any(r.path.startswith("/viber/tracking/") for r, _ in server.log)
    finally:
        http.stop()
        exporter.stop()


def test_the_older_failover_shapes_are_read(routee, provider):
    """An older revision of the failover pages: the Viber leg's status as status.status
    and status.date, and expireOnDelivery / expiredOnDeliveryAt inside status."""
    from viber_exporter.plugins.routee import flow_observation

    older = documented_failover_report()
    viber, sms = older["messages"]
    viber["status"] = {"status": "DELIVERED", "date": iso_ago(40)}
    sms["status"] = {"status": "Network Error", "date": iso_ago(30)}
    obs = flow_observation(older, "EUR")
    assert obs.status is Status.DELIVERED and obs.delivered_at is not None
    [leg] = obs.fallbacks
    assert (leg.status, leg.outcome, leg.sent) == ("Network Error", Status.FAILED, True), "Routee's Network Error"
    viber["status"] = {"status": "EXPIRED", "date": iso_ago(20), "expireOnDelivery": True,
                       "expiredOnDeliveryAt": iso_ago(20)}
    viber.pop("expiredOnDeliveryAt")
    obs = flow_observation(older, "EUR")
    assert (obs.status, obs.settled, obs.reason) == (Status.DELIVERED, True, None), "delivered, then expired"


def test_a_flow_whose_prices_add_up_has_no_inconsistency(provider):
    from viber_exporter.plugins.routee import flow_observation

    consistent = documented_failover_report() | {"totalPrice": 0.071}
    assert flow_observation(consistent, "EUR").inconsistencies == ()
    without = {k: v for k, v in documented_failover_report().items() if k != "totalPrice"}
    assert flow_observation(without, "EUR").inconsistencies == ()


def test_a_pending_status_dates_the_send_and_ttl_is_read_in_seconds(provider):
    from viber_exporter.plugins.routee import observation

    queued = tracking(TRACKING, "QUEUED", date=iso_ago(30))
    obs = observation(queued, "EUR")
    assert obs.sent_at is not None and obs.ttl == 3600.0
    assert observation(tracking(TRACKING, "DELIVERED"), "EUR").sent_at is None, "only a pending status dates the send"


@FUZZ
@given(body=json_values | routee_like, status=st.sampled_from([200, 200, 200, 400, 401, 403, 404, 429, 500, 503]))
def test_routee_any_answer_is_an_observation_or_an_outcome(body, status):
    assert_clean(RouteeProvider, ROUTEE, status, json.dumps(body).encode(), "0a047b46-a4dd-4ca8-b817-a6a134dd1234")

"""The BSG plugin against a fake BSG served over real HTTP, quirks included."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.errors import ConfigError
from viber_exporter.http import ProviderHttp
from viber_exporter.model import FetchError, Outcome, Status
from viber_exporter.plugins.bsg import STATUS_MAP, BsgProvider
from viber_exporter.provider import Balance, InvalidCallback

from .conftest import QuickHTTPServer, sample, toml_table, wait_for
from .fuzzing import BSG, FUZZ, assert_clean, bsg_like, json_values

API_KEY = "live_bsg-key-sentinel-31"


class FakeBsg:
    """Serves /rest/viber/{id} and /rest/viber/reference/{ref} as providers.md §2 shows them."""

    def __init__(self) -> None:
        self.by_id: dict[str, Any] = {}
        self.by_reference: dict[str, Any] = {}
        self.faults: deque[Response] = deque()
        self.not_found_http = 200  # BSG's HTTP status for error 40 is unknown: test both
        self.delay = 0.0
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        if request.path == "/rest/common/balance":
            return self.balance_answer(request)
        with self._lock:
            self.requests.append(request.path)
            fault = self.faults.popleft() if self.faults else None
        if self.delay:
            time.sleep(self.delay)
        if fault is not None:
            return fault
        if request.headers.get("X-API-KEY") != API_KEY:
            return Response(json.dumps({"error": 1, "errorDescription": "Invalid API key"}), 200, content_type="application/json")
        key = request.path.rsplit("/", 1)[-1]
        table = self.by_reference if "/reference/" in request.path else self.by_id
        body = table.get(key)
        if body is None:
            return Response(json.dumps({"error": "40", "errorDescription": "Message not found"}), self.not_found_http,
                            content_type="application/json")
        return Response(json.dumps(body), 200, content_type="application/json")


    balance: dict[str, Any] = {"error": 0, "errorDescription": "No errors", "amount": "-4.09", "currency": "EUR", "limit": "7"}

    def balance_answer(self, request: Request) -> Response:
        if request.headers.get("X-API-KEY") != API_KEY:
            return Response(json.dumps({"error": 1, "errorDescription": "Invalid API key"}), 200, content_type="application/json")
        return Response(json.dumps(self.balance), 200, content_type="application/json")


def status_body(status: str, *, price: Any = "0.02", error: Any = "0", time_dr: str = "2016-01-01 00:01:01",
                alt_route: list[dict[str, Any]] | None = None, reference: str = "ref1",
                time_in: str = "2016-01-01 00:00:01", time_sent: str = "2016-01-01 00:00:02") -> dict[str, Any]:
    body = {"error": error, "errorDescription": "No errors", "id": "380972920000", "msisdn": "380972920000",
            "reference": reference, "time_in": time_in, "time_sent": time_sent,
            "time_dr": time_dr, "status": status, "price": price, "currency": "EUR"}
    if alt_route is not None:
        body["alt_route"] = alt_route
    return body


@pytest.fixture
def bsg() -> Iterator[tuple[HTTPServer, FakeBsg]]:
    server = QuickHTTPServer(threaded=True)
    server.start()
    fake = FakeBsg()
    server.expect_request(re.compile(r"/rest/(viber/.*|common/balance)"), method="GET").respond_with_handler(fake.handle)
    yield server, fake
    server.clear()
    if server.is_running():
        server.stop()


def bsg_config(server: HTTPServer, state: Path, **provider: Any) -> str:
    values = {"plugin": "bsg", "api_key": API_KEY, "base_url": server.url_for("").rstrip("/"),
              "concurrency": 4, "rate_limit": 1000, "timeout": "1s", **provider}
    return f"""
[exporter]
state_path = {json.dumps(str(state))}
[polling]
tick = "100ms"
schedule = ["100ms"]
[providers.bsg]
{toml_table(values)}
"""


def make_provider(server, host, tmp_path, **settings) -> BsgProvider:
    config = parse_config(bsg_config(server, tmp_path / "s.db", **settings), host.provider_types(), {})
    return BsgProvider("bsg", config.providers["bsg"].settings, ProviderHttp(timeout=1.0))


@pytest.fixture
def provider(bsg, builtin_host, tmp_path) -> BsgProvider:
    return make_provider(bsg[0], builtin_host, tmp_path)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_config_validation_reports_every_problem(builtin_host):
    text = '[providers.b]\nplugin = "bsg"\nlookup = "phone"\ntimezone = "Mars/Olympus"\nbase_url = "x"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, builtin_host.provider_types(), {})
    paths = {path for path, _ in info.value.problems}
    assert {"providers.b.api_key", "providers.b.lookup", "providers.b.timezone", "providers.b.base_url"} <= paths


def test_defaults_and_key_file(builtin_host, tmp_path):
    (tmp_path / "key").write_text(API_KEY + "\n")
    text = f'[providers.b]\nplugin = "bsg"\napi_key_file = "{tmp_path / "key"}"\n'
    settings = parse_config(text, builtin_host.provider_types(), {}).providers["b"].settings
    assert (settings.api_key.reveal(), settings.base_url, settings.lookup) == (API_KEY, "https://api.bsg.world", "id")
    assert settings.timezone == ZoneInfo("UTC")


def test_ids_per_lookup_mode(bsg, builtin_host, tmp_path, provider):
    assert provider.check_id("217") is None
    assert "digits" in provider.check_id("ext_id_19")
    by_ref = make_provider(bsg[0], builtin_host, tmp_path, lookup="reference")
    assert by_ref.check_id("extid19") is None
    assert by_ref.check_id("ext_id_19") is None, "BSG's own examples use underscores"
    for bad in ("", "x" * 33, "a/b", "a b"):
        assert "reference" in by_ref.check_id(bad)


def test_both_lookup_modes_use_their_paths_and_the_key_header(bsg, builtin_host, tmp_path, provider):
    _, fake = bsg
    fake.by_id["217"] = status_body("delivered")
    fake.by_reference["ref19"] = status_body("read", reference="ref19")
    assert provider.fetch("217").status is Status.DELIVERED
    by_ref = make_provider(bsg[0], builtin_host, tmp_path, lookup="reference")
    assert by_ref.fetch("ref19").status is Status.READ
    assert fake.requests == ["/rest/viber/217", "/rest/viber/reference/ref19"]


@pytest.mark.parametrize(("error", "price_value"), [(0, 0.23), ("0", "0.02"), ("0", 0), (0, "1")])
def test_numeric_and_string_error_and_price(bsg, provider, error, price_value):
    _, fake = bsg
    fake.by_id["1"] = status_body("sent", error=error, price=price_value)
    obs = provider.fetch("1")
    assert obs.price == float(price_value) and obs.currency == "EUR"


@pytest.mark.parametrize(("raw", "expected"), [*sorted(STATUS_MAP.items()), ("unknown", Status.UNKNOWN), ("Brand_New", Status.UNKNOWN)])
def test_every_status(bsg, provider, raw, expected):
    _, fake = bsg
    fake.by_id["1"] = status_body(raw.upper() if raw == "read" else raw)  # compared case-insensitively
    obs = provider.fetch("1")
    assert obs.status is expected
    if expected.is_failure or expected is Status.UNKNOWN:
        assert obs.reason == raw.lower()
    else:
        assert obs.reason is None


def test_times_and_time_dr_only_for_delivered_or_read(bsg, provider):
    _, fake = bsg
    fake.by_id["1"] = status_body("delivered")
    obs = provider.fetch("1")
    assert obs.sent_at.timestamp() == utc("2016-01-01 00:00:02")
    assert obs.delivered_at.timestamp() == utc("2016-01-01 00:01:01")
    fake.by_id["1"] = status_body("expired")
    obs = provider.fetch("1")
    assert obs.delivered_at is None and obs.read_at is None and obs.reason == "expired"
    body = status_body("sent")
    body["time_sent"] = ""
    fake.by_id["1"] = body
    assert provider.fetch("1").sent_at.timestamp() == utc("2016-01-01 00:00:01"), "time_in when time_sent is empty"


def test_non_utc_timezone(bsg, builtin_host, tmp_path):
    _, fake = bsg
    kyiv = make_provider(bsg[0], builtin_host, tmp_path, timezone="Europe/Kyiv")
    fake.by_id["1"] = status_body("read")
    obs = kyiv.fetch("1")
    assert obs.delivered_at.timestamp() == utc("2016-01-01 00:01:01") - 2 * 3600  # UTC+2 in winter
    assert obs.read_at is None, "time_dr is the delivery time; BSG gives no read time"


def test_alt_route_fallbacks(bsg, provider):
    _, fake = bsg
    fake.by_id["1"] = status_body("failed", alt_route=[{"channel": "sms", "id": "9", "status": "delivered", "price": "0.05"}])
    obs = provider.fetch("1")
    assert [(f.channel, f.price, f.currency, f.status) for f in obs.fallbacks] == [("sms", 0.05, "EUR", "delivered")]
    fake.by_id["1"] = status_body("failed", alt_route=[{"channel": "sms", "id": "string", "status": "scheduled", "price": "string"}])
    assert [f.price for f in provider.fetch("1").fallbacks] == [None], "BSG's own placeholder price"


@pytest.mark.parametrize("http_status", [200, 404])
def test_error_40_is_not_found_at_either_http_status(bsg, provider, http_status):
    _, fake = bsg
    fake.not_found_http = http_status
    with pytest.raises(FetchError) as info:
        provider.fetch("404")
    assert info.value.outcome is Outcome.NOT_FOUND


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (lambda: Response(json.dumps({"error": 1, "errorDescription": "Invalid API key"}), 200), Outcome.AUTH_ERROR),
        (lambda: Response(json.dumps({"error": "7", "errorDescription": "Invalid parameters"}), 200), Outcome.CLIENT_ERROR),
        (lambda: Response(json.dumps({"message": "Too many"}), 429, headers={"Retry-After": "3"}), Outcome.RATE_LIMITED),
        (lambda: Response("<html>oops</html>", 500), Outcome.SERVER_ERROR),
        (lambda: Response(json.dumps({"code": 401, "message": "Unauthorized"}), 401), Outcome.AUTH_ERROR),
        (lambda: Response("{broken", 200), Outcome.INVALID_RESPONSE),
        (lambda: Response("[]", 200), Outcome.INVALID_RESPONSE),
        (lambda: Response(json.dumps({"error": "zero"}), 200), Outcome.INVALID_RESPONSE),
        (lambda: Response(json.dumps({k: v for k, v in status_body("read").items() if k != "status"}), 200), Outcome.INVALID_RESPONSE),
    ],
)
def test_error_answers_become_outcomes(bsg, provider, response, outcome):
    _, fake = bsg
    fake.by_id["1"] = status_body("read")
    fake.faults.append(response())
    with pytest.raises(FetchError) as info:
        provider.fetch("1")
    assert info.value.outcome is outcome
    if outcome is Outcome.RATE_LIMITED:
        assert info.value.retry_after == 3.0


def test_invalid_key_and_timeout(bsg, builtin_host, tmp_path):
    _, fake = bsg
    fake.by_id["1"] = status_body("read")
    wrong = make_provider(bsg[0], builtin_host, tmp_path, api_key="live_wrong")
    with pytest.raises(FetchError) as info:
        wrong.fetch("1")
    assert info.value.outcome is Outcome.AUTH_ERROR
    fake.delay = 1.5
    with pytest.raises(FetchError) as info:
        make_provider(bsg[0], builtin_host, tmp_path).fetch("1")
    assert info.value.outcome is Outcome.TIMEOUT


def test_callback_parsing(bsg, builtin_host, tmp_path, provider):
    body = status_body("delivered") | {"id": "217"}
    [(message_id, obs)] = provider.parse_callback(CallbackRequest.of(json.dumps(body).encode()))
    assert message_id == "217" and obs.status is Status.DELIVERED and obs.price == 0.02
    by_ref = make_provider(bsg[0], builtin_host, tmp_path, lookup="reference")
    [(message_id, _)] = by_ref.parse_callback(CallbackRequest.of(json.dumps([body]).encode()))
    assert message_id == "ref1"
    for bad in (b"nope", b"[3]", json.dumps(body | {"id": "abc"}).encode(), json.dumps(body | {"status": None}).encode()):
        with pytest.raises(InvalidCallback):
            provider.parse_callback(CallbackRequest.of(bad))


def test_poller_run_matches_ground_truth(bsg, builtin_host, tmp_path, clock):
    """Registration to settled metrics through the real poller; counts equal the fake's truth."""
    _, fake = bsg
    base = int(clock.time()) - 600  # BSG's example dates are years old and would exceed max_age

    def at(offset: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + offset))

    truth = {  # id: (status, price, time_dr, sms legs)
        "101": ("read", "0.02", at(32), []),
        "102": ("delivered", 0.03, at(62), []),
        "103": ("rejected", "0.01", at(5), []),
        "104": ("expired", "0", at(600), [{"channel": "sms", "id": "9", "status": "delivered", "price": "0.05"}]),
        "105": ("not_viber_user", 0, "", [{"channel": "sms", "id": "8", "status": "delivered", "price": 0.06}]),
        "106": ("undelivered", "0.01", "", []),
    }
    config = parse_config(bsg_config(bsg[0], tmp_path / "s.db"), builtin_host.provider_types(), {})
    exporter = Exporter(config, builtin_host, registry=CollectorRegistry())
    exporter.start()
    try:
        exporter.register([Registration("bsg", i) for i in truth])  # no sent_at: BSG's time_sent is used
        wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="bsg", outcome="not_found") >= 6)
        for i in truth:
            fake.by_id[i] = status_body("sent", price=None, time_in=at(1), time_sent=at(2))
        wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="bsg", status="pending") == 6)
        for i, (status, price_value, time_dr, legs) in truth.items():
            fake.by_id[i] = status_body(status, price=price_value, time_dr=time_dr, alt_route=legs, time_in=at(1), time_sent=at(2))
        wait_for(lambda: exporter.store.counts()[1]["bsg"] == 1, timeout=15)  # only the delivered one still polls
        expected = {"pending": 6, "delivered": 2, "read": 1, "failed": 3, "expired": 1, "unknown": 0}
        for status, count in expected.items():
            assert sample(exporter, "viber_message_status_transitions_total", provider="bsg", status=status) == count, status
        for reason in ("rejected", "expired", "not_viber_user", "undelivered"):
            assert sample(exporter, "viber_message_failures_total", provider="bsg", reason=reason) == 1, reason
        # sent = time_sent (base + 2); delivered at base + 32 (read) and base + 62: 30 s + 60 s.
        assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="bsg") == 2
        assert sample(exporter, "viber_message_delivery_latency_seconds_sum", provider="bsg") == pytest.approx(90)
        # BSG has no read time: the read counts at the poll that first saw it (an upper
        # bound, here ~600 s after sending), never at time_dr (the delivery).
        read_sum = sample(exporter, "viber_message_read_latency_seconds_sum", provider="bsg")
        assert 598 <= read_sum <= 700, read_sum
        assert sample(exporter, "viber_message_cost_total", provider="bsg", currency="EUR", channel="viber") == pytest.approx(0.07)
        assert sample(exporter, "viber_message_cost_total", provider="bsg", currency="EUR", channel="sms") == pytest.approx(0.11)
        assert sample(exporter, "viber_message_sms_fallbacks_total", provider="bsg") == 2
        state = exporter.store.get("bsg", "101")
        assert state.sent_at == base + 2, "keyed on the queried id, sent time from BSG"
    finally:
        exporter.stop()


# -- conformance with BSG's documents (issue "Provider truth") -------------------------------


def test_object_answers_without_an_error_field_are_accepted(bsg, provider):
    """Every captured answer has "error", but one without it is read by its HTTP status."""
    _, fake = bsg
    body = status_body("delivered")
    del body["error"], body["errorDescription"]
    fake.by_id["5"] = body
    assert provider.fetch("5").status is Status.DELIVERED


@pytest.mark.parametrize(("error", "outcome", "wide"), [
    # 2 and 3 swap meanings between BSG's two errors pages (blocked / not enough
    # parameters): per request on a lookup, never a pause of the whole instance.
    (2, Outcome.CLIENT_ERROR, False), ("3", Outcome.CLIENT_ERROR, False), (47, Outcome.CLIENT_ERROR, False),
    (11, Outcome.RATE_LIMITED, True), (5, Outcome.SERVER_ERROR, True),
    (4, Outcome.CLIENT_ERROR, True), (1, Outcome.AUTH_ERROR, True), (7, Outcome.CLIENT_ERROR, False),
])
def test_bsg_error_codes(bsg, provider, error, outcome, wide):
    _, fake = bsg
    fake.faults.append(Response(json.dumps({"error": error, "errorDescription": "x"}), 200))
    with pytest.raises(FetchError) as info:
        provider.fetch("1")
    assert (info.value.outcome, info.value.provider_wide) == (outcome, wide)


def test_a_404_without_an_error_body_is_not_found_and_an_html_404_is_the_base_url(bsg, provider):
    _, fake = bsg
    fake.faults.append(Response("", 404))
    with pytest.raises(FetchError) as empty:
        provider.fetch("1")
    assert empty.value.outcome is Outcome.NOT_FOUND, "an unknown id ends after not_found_grace, not max_age"
    fake.faults.append(Response(json.dumps({"code": 404, "message": "Not Found"}), 404, content_type="application/json"))
    with pytest.raises(FetchError) as spec:
        provider.fetch("1")
    assert spec.value.outcome is Outcome.NOT_FOUND
    fake.faults.append(Response("<html>Not Found</html>", 404, content_type="text/html"))
    with pytest.raises(FetchError) as page:
        provider.fetch("1")
    assert page.value.outcome is Outcome.CLIENT_ERROR and page.value.provider_wide
    assert "base_url" in page.value.message


def test_one_unreadable_optional_field_does_not_cost_the_answer(bsg, provider):
    _, fake = bsg
    fake.by_id["6"] = status_body("read", price="0,02", time_dr="2016-01-01T00:01:01+00:00", time_sent="soon")
    obs = provider.fetch("6")
    assert obs.status is Status.READ
    assert obs.price == 0.02, "a decimal comma is repaired"
    assert obs.delivered_at.timestamp() == utc("2016-01-01 00:01:01"), "an offset time is read"
    assert obs.sent_at.timestamp() == utc("2016-01-01 00:00:01"), "an unreadable time_sent falls back to time_in"
    assert set(obs.problems) == {"price", "time_dr", "time_sent"}


def test_sms_fallback_counts_only_when_its_leg_was_sent(bsg, provider):
    _, fake = bsg
    fake.by_id["7"] = status_body("failed", alt_route=[{"channel": "sms", "id": "9", "status": "scheduled", "price": "string"}])
    [leg] = provider.fetch("7").fallbacks
    assert (leg.sent, leg.outcome, leg.price) == (False, Status.PENDING, None)
    fake.by_id["7"] = status_body("failed", alt_route=[{"channel": "SMS", "id": "9", "status": "sent", "price": "0.05"}])
    [leg] = provider.fetch("7").fallbacks
    assert (leg.sent, leg.outcome, leg.price, leg.channel) == (True, Status.PENDING, 0.05, "sms")
    fake.by_id["7"] = status_body("failed", alt_route=[{"channel": "sms", "id": "9", "status": "rejected"}])
    assert not provider.fetch("7").fallbacks[0].sent, "refused before sending: no fallback"


def test_the_sms_leg_is_followed_to_its_outcome_through_the_poller(bsg, builtin_host, tmp_path, clock):
    _, fake = bsg
    config = parse_config(bsg_config(bsg[0], tmp_path / "s.db"), builtin_host.provider_types(), {})
    exporter = Exporter(config, builtin_host, registry=CollectorRegistry())
    exporter.start()
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(clock.time() - 5))
    times = {"time_in": now, "time_sent": now}
    try:
        leg = {"channel": "sms", "id": "9", "status": "scheduled"}
        fake.by_id["8"] = status_body("failed", alt_route=[leg], **times)
        exporter.register([Registration("bsg", "8")])
        wait_for(lambda: exporter.store.get("bsg", "8").status is Status.FAILED)
        assert sample(exporter, "viber_message_sms_fallbacks_total", provider="bsg") == 0, "not sent yet"
        fake.by_id["8"] = status_body("failed", alt_route=[{**leg, "status": "sent", "price": "0.05"}], **times)
        wait_for(lambda: sample(exporter, "viber_message_sms_fallbacks_total", provider="bsg") == 1)
        assert exporter.store.get("bsg", "8").watched, "the leg is out: its outcome is awaited"
        fake.by_id["8"] = status_body("failed", alt_route=[{**leg, "status": "delivered", "price": "0.05"}], **times)
        wait_for(lambda: not exporter.store.get("bsg", "8").watched)
        assert sample(exporter, "viber_message_fallback_outcomes_total", provider="bsg", channel="sms", outcome="delivered") == 1
        assert sample(exporter, "viber_message_cost_total", provider="bsg", currency="EUR", channel="sms") == pytest.approx(0.05)
        assert sample(exporter, "viber_message_sms_fallbacks_total", provider="bsg") == 1
    finally:
        exporter.stop()


def test_a_wrong_timezone_shows_as_answer_problems(bsg, builtin_host, tmp_path, caplog, clock):
    """Times four hours ahead (BSG in UTC+4 read as UTC): counted and logged once, with a hint."""
    _, fake = bsg
    config = parse_config(bsg_config(bsg[0], tmp_path / "s.db"), builtin_host.provider_types(), {})
    exporter = Exporter(config, builtin_host, registry=CollectorRegistry())
    exporter.start()
    ahead = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(clock.time() + 4 * 3600))
    try:
        for i in ("21", "22"):
            fake.by_id[i] = status_body("delivered", time_in=ahead, time_sent=ahead, time_dr=ahead)
        exporter.register([Registration("bsg", "21"), Registration("bsg", "22")])
        wait_for(lambda: sample(exporter, "viber_provider_answer_problems_total", provider="bsg", problem="time_in_future") >= 4)
        hints = [r for r in caplog.records if "timezone" in r.getMessage()]
        assert len({r.getMessage() for r in hints}) == len(hints) and hints, "each kind logged once"
        assert sample(exporter, "viber_message_delivery_latency_seconds_sum", provider="bsg") < 60
    finally:
        exporter.stop()


def test_verify_reads_the_balance_and_refuses_a_blocked_account(bsg, provider):
    _, fake = bsg
    assert provider.verify() == Balance(-4.09, "EUR")
    for code in (2, "3"):  # on the balance check, which takes no parameters: blocked
        fake.balance = {"error": code, "errorDescription": "User blocked"}
        with pytest.raises(FetchError) as info:
            provider.verify()
        assert info.value.outcome is Outcome.AUTH_ERROR and info.value.provider_wide


def test_a_test_key_is_warned_about_at_start(bsg, builtin_host, tmp_path, caplog):
    test_key = make_provider(bsg[0], builtin_host, tmp_path, api_key="test_abcdef")
    test_key.start()
    assert any("test_ key" in r.getMessage() and "random data" in r.getMessage() for r in caplog.records)


def test_callbacks_in_id_mode_never_key_on_the_phone_number(provider):
    body = status_body("delivered")  # BSG's examples: id == msisdn
    with pytest.raises(InvalidCallback, match="phone number"):
        provider.parse_callback(CallbackRequest.of(json.dumps(body)))
    [(message_id, _)] = provider.parse_callback(CallbackRequest.of(json.dumps(body | {"id": "4711"})))
    assert message_id == "4711"


def test_a_per_request_error_2_leaves_the_instance_up_and_other_messages_polled(bsg, builtin_host, tmp_path):
    """Error 2 on one lookup fails that lookup only: the instance stays up and the other
    messages are still answered (BSG's errors pages disagree on what 2 means)."""
    server, fake = bsg
    fake.by_id["1"] = {"error": 2, "errorDescription": "Not enough parameters"}
    fake.by_id["2"] = status_body("delivered")
    exporter = Exporter(parse_config(bsg_config(server, tmp_path / "s.db"), builtin_host.provider_types(), {}),
                        builtin_host, registry=CollectorRegistry())
    exporter.start()
    try:
        exporter.register([Registration("bsg", "1"), Registration("bsg", "2")])
        wait_for(lambda: exporter.store.get("bsg", "2").status is Status.DELIVERED)
        wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="bsg", outcome="client_error") >= 2)
        assert sample(exporter, "viber_provider_up", provider="bsg") == 1
        assert "error 2" in exporter.store.get("bsg", "1").last_error
    finally:
        exporter.stop()


def test_a_reference_with_underscores_is_looked_up_as_bsg_examples_use_it(bsg, builtin_host, tmp_path):
    server, fake = bsg
    fake.by_reference["ext_id_19"] = status_body("read", reference="ext_id_19")
    provider = make_provider(server, builtin_host, tmp_path, lookup="reference")
    assert provider.check_id("ext_id_19") is None
    assert provider.fetch("ext_id_19").status is Status.READ
    assert "/rest/viber/reference/ext_id_19" in fake.requests


@FUZZ
@given(body=json_values | bsg_like, status=st.sampled_from([200, 200, 200, 404, 401, 429, 500]))
def test_bsg_any_answer_is_an_observation_or_an_outcome(body, status):
    assert_clean(BsgProvider, BSG, status, json.dumps(body).encode(), "217")

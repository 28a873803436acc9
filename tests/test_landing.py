"""The landing page's pieces: trend rings, rates, per-label figures, the API reference
page, and the page itself behind authentication."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import bcrypt
import requests
from werkzeug.test import Client

from viber_exporter.clock import ManualClock
from viber_exporter.figures import rates
from viber_exporter.trends import MINUTES, Trends
from viber_exporter.web.apidocs import api_docs_page
from viber_exporter.web.app import WebApp, openapi_document
from viber_exporter.web.landing import ago, sparkline

from .conftest import sample, wait_for
from .test_web import messages, post


def test_a_trend_keeps_the_last_hour_a_minute_at_a_time():
    clock = ManualClock(1_000_000 * 60.0)
    trends = Trends(clock.time)
    trends.add("p", "delivered", 2)
    clock.advance(30 * 60)
    trends.add("p", "delivered")
    trends.add("p", "errors", 5)
    trend = trends.of("p")
    assert len(trend.delivered) == MINUTES and trend.delivered[-1] == 1 and trend.delivered[-31] == 2
    assert trend.total("delivered") == 3 and trend.total("errors") == 5 and trend.total("failed") == 0
    clock.advance(30 * 60)  # the first minute is now 60 minutes old: out of the hour
    assert trends.of("p").total("delivered") == 1
    clock.advance(3 * 3600)  # a long quiet spell clears everything
    assert trends.of("p").total("delivered") == 0 and trends.of("unknown").total("errors") == 0
    trends.add("p", "failed")
    clock.advance(-90)  # a report counted a little late still lands in its minute
    trends.add("p", "failed")
    assert trends.of("p").total("failed") == 2


def test_rates_are_shares_of_the_messages_with_an_outcome():
    r = rates({"delivered": 90, "read": 45, "failed": 6, "expired": 4, "pending": 1000, "unknown": 7})
    assert (r.delivery, r.read_through, r.failure) == (0.9, 0.5, 0.1)
    nothing = rates({"pending": 3})
    assert (nothing.delivery, nothing.read_through, nothing.failure) == (None, None, None)
    assert rates({"delivered": 1, "read": 2}).read_through == 1.0, "never over 100 %"


def test_small_pieces_of_the_page():
    chart = sparkline([0] * 58 + [3, 1], "delivered", "deliveries")
    assert "deliveries: 4 in the last hour, at most 3 a minute" in chart and chart.count("<svg") == 1
    assert 'points="0.0,29.0' in chart, "an empty minute sits on the baseline"
    assert ago(None, 100.0) == "—"
    assert ">42 s ago<" in ago(58.0, 100.0) and 'title="1970-01-01T00:00:58Z"' in ago(58.0, 100.0)
    assert ">3.5 min ago<" in ago(0.0, 210.0) and ">just now<" in ago(99.5, 100.0)


def test_figures_per_declared_label(make_config, serve, fake_server, clock):
    _, api = fake_server
    api.messages.update({"o1": {"status": "DELIVERED"}, "o2": {"status": "FAILED"}, "m1": {"status": "DELIVERED"}})
    config = make_config(extra='[metrics.labels.kind]\nvalues = ["otp", "marketing"]\n')
    exporter, url = serve(config)
    items = [{"provider": "fake", "id": i, "labels": {"kind": k}} for i, k in (("o1", "otp"), ("o2", "otp"), ("m1", "marketing"))]
    assert post(url, {"messages": items}).status_code == 200
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="failed", kind="otp") == 1)
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered", kind="marketing") == 1)
    page = requests.get(url + "/", timeout=5).text
    assert "By label <code>kind</code>" in page
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>fake</td><td>(\w+)</td>.*?</tr>", page)}
    # last hour · since start: delivery, read-through, failure
    assert rows["otp"].count("<td class=n>50.0 % · 50.0 %</td>") == 2, rows["otp"]
    assert "<td class=n>0.0 % · 0.0 %</td>" in rows["otp"], "delivered, nothing read yet"
    assert "<td class=n>100.0 % · 100.0 %</td>" in rows["marketing"] and "0.0 % · 0.0 %" in rows["marketing"]
    trend = exporter.metrics.trends.of("fake", "kind=otp")
    assert (trend.total("delivered"), trend.total("failed")) == (1, 1), "a trend per label value"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("href"):
            self.hrefs.append(values["href"] or "")
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag in ("script", "link", "img") and (values.get("src") or values.get("href")):
            self.sources.append(values.get("src") or values.get("href") or "")


def test_the_api_reference_page_lists_every_path_once_with_its_methods():
    document = openapi_document()
    page = api_docs_page(document)
    for path, operations in document["paths"].items():
        methods = " ".join(m.upper() for m in operations if m != "parameters")
        assert page.count(f"<code>{methods} {path}</code>") == 1, path
        for method, operation in operations.items():
            if method != "parameters":
                assert operation["summary"] in page or operation["summary"].replace("'", "&#x27;") in page
    assert "GET POST PUT /api/v1/callbacks/{provider}" in page or "POST PUT GET /api/v1/callbacks/{provider}" in page
    links = _Links()
    links.feed(page)
    assert not links.sources, "nothing loaded from elsewhere (no CDN)"
    for href in links.hrefs:
        if href.startswith("#"):
            assert href[1:] in links.ids, f"{href} points nowhere"
    assert {f"schema-{name}" for name in document["components"]["schemas"]} <= links.ids


def test_the_pages_need_credentials_once_basic_auth_is_set(make_config, serve):
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    _, url = serve(make_config(extra=f'[exporter.basic_auth_users]\nops = "{hashed}"\n'))
    for path in ("/", "/api/v1/docs"):
        assert requests.get(url + path, timeout=5).status_code == 401, path
        answer = requests.get(url + path, auth=("ops", "s3cret-pass"), timeout=5)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html"), path
    page = requests.get(url + "/", auth=("ops", "s3cret-pass"), timeout=5).text
    assert "s3cret" not in page and hashed not in page
    token = base64.b64encode(b"ops:s3cret-pass").decode()
    # the page's own refresh fetches the same URL: the browser sends the same credentials
    assert requests.get(url + "/", headers={"Authorization": f"Basic {token}", "Accept": "text/html"},
                        timeout=5).text.count('id="live"') == 1


def test_a_trend_s_totals_agree_with_its_series():
    clock = ManualClock(1_000_000 * 60.0)
    trends = Trends(clock.time)
    for step in range(150):  # two and a half hours, a count every minute
        trends.add("p", "delivered", step % 7, part="kind=otp")
        clock.advance(60)
    series = trends.of("p", "kind=otp").delivered
    assert trends.totals("p", "kind=otp")["delivered"] == sum(series) == sum(s % 7 for s in range(91, 150)), "the hour up to this minute"
    assert trends.totals("p")["delivered"] == 0, "the instance as a whole is its own series"


def test_landing_page_figures_explanations_and_grouped_errors(make_config, serve, fake_server, clock):
    _, api = fake_server
    sent = datetime.fromtimestamp(clock.time() - 30, UTC).isoformat()
    for n in range(3):
        api.messages[f"d{n}"] = {"status": "DELIVERED", "price": 0.0333}
    exporter, url = serve(make_config())
    body = {"messages": [{"provider": "fake", "id": f"d{n}", "sent_at": sent} for n in range(3)]}
    assert post(url, body).status_code == 200
    wait_for(lambda: sample(exporter, "viber_message_delivery_latency_seconds_count", provider="fake") == 3)
    api.outage = (500, "oops", {})
    post(url, messages("e1", "e2", "e3"))
    wait_for(lambda: len(requests.get(f"{url}/api/v1/providers", timeout=5).json()["providers"][0]["recent_errors"]) >= 3)
    wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="fake", outcome="server_error") >= 3)
    page = requests.get(url + "/", timeout=5).text
    assert '<meta name="viewport"' in page, "laid out for phones too"
    assert '<noscript><meta http-equiv="refresh"' in page and "<script>" in page, "refreshes with or without script"
    assert page.count("<b>100.0 %</b>") == 1, "3 of 3 delivered in the last hour (the failures box reads 0.0 %)"
    assert "<b>0.0 %</b>" in page and "since start 100.0 %" in page and "stored 100.0 %" in page
    assert "deliveries: 3 in the last hour" in page, "the deliveries chart"
    errors = sample(exporter, "viber_provider_requests_total", provider="fake", outcome="server_error")
    assert f"provider errors: {errors:g} in the last hour" in page or "provider errors: " in page
    assert page.count("<svg") == 3, "three charts for the one instance"
    assert "EUR 0.0999 (viber 0.0999)" in page, "cost per currency and channel, without float artefacts"
    assert "delivery latency" in page and "p50 " in page and "p95 " in page
    watched = requests.get(f"{url}/api/v1/providers", timeout=5).json()["providers"][0]["watched"]
    assert f"watched</dt><dd>{watched:,} messages, 0 campaigns" in page
    assert "<th>message id(s)</th>" in page and "<th class=n>times</th>" in page
    last_success = re.search(r'last success <time datetime="([^"]+)" title="\1">(just now|[\d.]+ (s|min|h) ago)</time>', page)
    assert last_success, "relative times, the exact one on hover"
    # One row for the repeated error, with how often it happened.
    error_rows = [row for row in page.split("<tr>") if "server_error" in row]
    assert len(error_rows) == 1, error_rows
    assert "This is the demo" not in page


def test_the_landing_page_shows_a_notice_when_given(make_config, run_exporter):
    exporter = run_exporter(make_config())
    page = Client(WebApp(exporter, notice="This is the demo: `viber-exporter run` <b>")).get("/").get_data(as_text=True)
    assert '<p class="notice">This is the demo: <code>viber-exporter run</code> &lt;b&gt;</p>' in page

"""The HTTP server on a free port: every endpoint and every error case of SPEC §6."""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from werkzeug.test import Client

from viber_exporter.errors import StoreError
from viber_exporter.web.app import URLS, WebApp, openapi_document

from .conftest import SENTINEL, sample, wait_for

TOKEN = "api-token-sentinel-42"


def post(url: str, body: Any, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return requests.post(f"{url}/api/v1/messages", data=data, headers=headers, timeout=10, **kwargs)


def messages(*ids: str, provider: str = "fake") -> dict[str, Any]:
    return {"messages": [{"provider": provider, "id": i} for i in ids]}


def assert_error(response: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in json.dumps(body), (word, body)
    return body


def test_metrics_in_both_formats_and_health(make_config, serve, fake_server):
    _, api = fake_server
    api.messages["m1"] = {"status": "SEEN"}
    exporter, url = serve(make_config())
    assert post(url, messages("m1")).status_code == 200
    wait_for(lambda: sample(exporter, "viber_message_read_latency_seconds_count", provider="fake") == 1)
    classic = requests.get(f"{url}/metrics", timeout=5)
    assert classic.headers["Content-Type"].startswith("text/plain")
    assert "viber_messages_watched" in classic.text and "# {" not in classic.text
    om = requests.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=5)
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert '# {message_id="m1"}' in om.text and om.text.rstrip().endswith("# EOF")
    assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 200
    assert requests.get(f"{url}/-/ready", timeout=5).status_code == 200
    exporter.poller.stop(timeout=5)
    assert requests.get(f"{url}/-/ready", timeout=5).status_code == 503


def test_registration_success_duplicates_and_durability(make_config, serve, clock):
    exporter, url = serve(make_config())
    sent = datetime.fromtimestamp(clock.time() - 600, UTC)
    in_kyiv = sent.astimezone(timezone(timedelta(hours=2))).isoformat()
    body = {"messages": [{"provider": "fake", "id": "a1", "sent_at": sent.isoformat().replace("+00:00", "Z")},
                         {"provider": "fake", "id": "a2", "sent_at": in_kyiv}, {"provider": "fake", "id": "a1"}]}
    response = post(url, body)
    assert response.json() == {"accepted": 2, "duplicates": 1}
    assert exporter.store.get("fake", "a2").sent_at == exporter.store.get("fake", "a1").sent_at
    assert post(url, messages("a1")).json() == {"accepted": 0, "duplicates": 1}
    assert sample(exporter, "viber_watch_registrations_total", provider="fake", outcome="accepted") == 2
    assert sample(exporter, "viber_watch_registrations_total", provider="fake", outcome="duplicate") == 2


def test_bad_item_in_the_middle_stores_nothing(make_config, serve):
    exporter, url = serve(make_config())
    body = {"messages": [{"provider": "fake", "id": "ok1"}, {"provider": "fake", "id": "not valid!"},
                         {"provider": "ghost", "id": "x"}, {"provider": "fake", "id": "ok2", "sent_at": "yesterday"},
                         {"provider": "fake", "id": "ok3", "sentAt": "2026-11-20T10:00:00Z"}, {"provider": "fake", "id": "ok4"}]}
    result = assert_error(post(url, body), 400, "nothing was stored")
    assert [d["index"] for d in result["details"]] == [1, 2, 3, 4]
    assert "letters and digits" in result["details"][0]["error"]
    assert "ghost" in result["details"][1]["error"]
    assert "sent_at" in result["details"][2]["error"]
    assert "sentAt" in result["details"][3]["error"]
    assert exporter.store.get("fake", "ok1") is None and exporter.store.get("fake", "ok4") is None
    # The whole batch was refused: each of its items for a configured instance counts.
    assert sample(exporter, "viber_watch_registrations_total", provider="fake", outcome="rejected") == 5


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"{nope", ["not valid JSON"]), ({"msgs": []}, ["messages"]), ({"messages": []}, ["empty"]),
     ({"messages": ["x"]}, ["object"]), ({"messages": [{"provider": "fake"}]}, ["id is required"]),
     ({"messages": [{"provider": "fake", "id": "a", "sent_at": "2026-11-20T10:00:00"}]}, ["zone"]),
     ({"messages": [{"provider": "fake", "id": "a", "sent_at": "2999-01-01T00:00:00Z"}]}, ["future"])],
)
def test_malformed_bodies_are_400(make_config, serve, body, words):
    _, url = serve(make_config())
    assert_error(post(url, body), 400, *words)


def test_size_limits_and_full_watched_set(make_config, serve):
    exporter, url = serve(make_config(polling={"max_watched": 3}))
    assert_error(post(url, messages(*[f"m{i}" for i in range(10_001)])), 413, "10000")
    assert_error(post(url, b"{" + b" " * (10 * 1024 * 1024 + 10) + b"}"), 413, "MiB")
    assert post(url, messages("a", "b")).status_code == 200
    full = assert_error(post(url, messages("c", "d")), 429, "max_watched")
    assert exporter.store.get("fake", "c") is None
    assert full and post(url, messages("c")).status_code == 200


def test_store_failure_is_503_and_acknowledges_nothing(make_config, serve, monkeypatch):
    exporter, url = serve(make_config())

    def broken(*args, **kwargs):
        raise StoreError("disk full")

    monkeypatch.setattr(exporter.store, "register", broken)
    assert_error(post(url, messages("a")), 503, "nothing was stored")


def test_write_auth_with_api_token(make_config, serve):
    config = make_config(exporter={"api_token": TOKEN})
    exporter, url = serve(config)
    assert_error(post(url, messages("a")), 401, "Bearer")
    assert_error(post(url, messages("a"), token="wrong"), 401, "wrong API token")
    assert post(url, messages("a"), token=TOKEN).status_code == 200
    assert_error(requests.delete(f"{url}/api/v1/messages/fake/a", timeout=5), 401)
    assert requests.delete(f"{url}/api/v1/messages/fake/a", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 204
    # With a token set, reads need it too (one rule for every route but health and callbacks).
    assert_error(requests.get(f"{url}/api/v1/messages", timeout=5), 401, "Bearer")
    assert requests.get(f"{url}/api/v1/messages", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
    # No client is exempt when a token is set, loopback or not.
    client = Client(WebApp(exporter))
    remote = client.post("/api/v1/messages", json=messages("b"), environ_overrides={"REMOTE_ADDR": "203.0.113.9"},
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert remote.status_code == 200


def test_without_token_only_loopback_writes_and_forwarded_for_is_ignored(make_config, serve):
    exporter, url = serve(make_config())
    assert post(url, messages("a")).status_code == 200  # from 127.0.0.1
    client = Client(WebApp(exporter))
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}):
        response = client.post("/api/v1/messages", json=messages("b"), headers=headers,
                               environ_overrides={"REMOTE_ADDR": "203.0.113.9"})
        assert response.status_code == 403
        assert "api_token" in response.get_json()["error"]
    assert client.delete("/api/v1/messages/fake/a", environ_overrides={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    ipv6 = client.post("/api/v1/messages", json=messages("c"), environ_overrides={"REMOTE_ADDR": "::1"})
    assert ipv6.status_code == 200
    assert exporter.store.get("fake", "b") is None


def test_get_delete_and_list_with_filters_and_cursor(make_config, serve, fake_server):
    _, api = fake_server
    api.messages["r1"] = {"status": "FAILED", "reason": "opted_out", "price": 0.01}
    exporter, url = serve(make_config())
    post(url, messages("r1", *[f"p{i}" for i in range(5)]))
    wait_for(lambda: exporter.store.get("fake", "r1").status.value == "failed")
    one = requests.get(f"{url}/api/v1/messages/fake/r1", timeout=5).json()
    assert (one["status"], one["reason"], one["price"], one["currency"], one["watched"]) == ("failed", "opted_out", 0.01, "EUR", False)
    assert one["polls"] >= 1 and one["provider_status"] == "FAILED" and one["settled_at"]
    assert_error(requests.get(f"{url}/api/v1/messages/fake/nope", timeout=5), 404, "nope")
    page = requests.get(f"{url}/api/v1/messages", params={"limit": 2}, timeout=5).json()
    assert [m["id"] for m in page["messages"]] == ["p0", "p1"] and page["next"]
    seen = [m["id"] for m in page["messages"]]
    while page["next"]:
        page = requests.get(f"{url}/api/v1/messages", params={"limit": 2, "after": page["next"]}, timeout=5).json()
        seen += [m["id"] for m in page["messages"]]
    assert seen == ["p0", "p1", "p2", "p3", "p4", "r1"]
    failed = requests.get(f"{url}/api/v1/messages", params={"status": "failed", "provider": "fake"}, timeout=5).json()
    assert [m["id"] for m in failed["messages"]] == ["r1"]
    for params, word in [({"status": "lost"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"after": "garbage"}, "cursor")]:
        assert_error(requests.get(f"{url}/api/v1/messages", params=params, timeout=5), 400, word)
    assert requests.delete(f"{url}/api/v1/messages/fake/p0", timeout=5).status_code == 204
    assert_error(requests.delete(f"{url}/api/v1/messages/fake/p0", timeout=5), 404)
    assert sample(exporter, "viber_messages_watched", provider="fake") == 4


def test_providers_endpoint_and_landing_page(make_config, serve, fake_server):
    _, api = fake_server
    api.outage = (500, "oops", {})
    _, url = serve(make_config())
    post(url, messages("e1"))
    wait_for(lambda: requests.get(f"{url}/api/v1/providers", timeout=5).json()["providers"][0]["recent_errors"])
    [provider] = requests.get(f"{url}/api/v1/providers", timeout=5).json()["providers"]
    assert provider["name"] == "fake" and provider["plugin"] == "fake" and provider["up"] is False
    assert provider["watched"] == 1 and provider["messages"]["pending"] == 1
    assert provider["recent_errors"][0]["outcome"] == "server_error"
    page = requests.get(url + "/", timeout=5)
    assert page.headers["Content-Type"].startswith("text/html")
    for text in ("viber-exporter", "0.1.0", "fake", "down", "server_error", "/metrics", "/api/v1/openapi.json",
                 'href="/api/v1/docs"', "GET POST PUT /api/v1/callbacks/{provider}"):
        assert text in page.text, text
    assert SENTINEL not in page.text and SENTINEL not in json.dumps(provider)
    assert provider["polled_here"] and provider["polled_by"] == f"{socket.gethostname()}:0", "host and listen port"
    assert "polled by " + provider["polled_by"] + " (this replica)" in page.text


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


def test_callbacks(make_config, serve, fake_server, clock):
    _, api = fake_server
    exporter, url = serve(make_config(provider={"callback_token": "cb-secret"}))
    endpoint = f"{url}/api/v1/callbacks/fake"
    delivered = datetime.fromtimestamp(clock.time() - 60, UTC).isoformat()  # inside the 1 h read window
    report = {"id": "cb1", "status": "DELIVERED", "price": 0.02, "delivered_at": delivered}
    assert_error(requests.post(endpoint, json=report, timeout=5), 401, "token")
    assert_error(requests.post(endpoint + "?token=nope", json=report, timeout=5), 401)
    assert_error(requests.post(endpoint + "?token=cb-secret", data=b"{junk", timeout=5), 400, "not understood")
    assert sample(exporter, "viber_callbacks_total", provider="fake", outcome="rejected") == 3
    assert requests.post(endpoint + "?token=cb-secret", json=report, timeout=5).json() == {"accepted": 1}
    state = exporter.store.get("fake", "cb1")
    assert state is not None and state.status.value == "delivered" and state.watched, "registered from the callback"
    # The poll then sees the same status: it must count once.
    api.messages["cb1"] = {"status": "DELIVERED", "price": 0.02}
    wait_for(lambda: exporter.store.get("fake", "cb1").polls >= 2)
    requests.post(endpoint + "?token=cb-secret", json=report, timeout=5)
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered") == 1
    assert sample(exporter, "viber_message_cost_total", provider="fake", currency="EUR", channel="viber") == pytest.approx(0.02)
    assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="fake") == 1
    assert sample(exporter, "viber_callbacks_total", provider="fake", outcome="accepted") == 2
    assert_error(requests.post(f"{url}/api/v1/callbacks/ghost?token=x", json=report, timeout=5), 404, "ghost")


def test_callbacks_disabled_without_token(make_config, serve):
    _, url = serve(make_config())
    assert_error(requests.post(f"{url}/api/v1/callbacks/fake?token=", json={}, timeout=5), 404, "callback_token")


def test_unknown_paths_and_methods_answer_json(make_config, serve):
    _, url = serve(make_config())
    assert_error(requests.get(f"{url}/api/v1/nothing", timeout=5), 404, "no such endpoint")
    assert_error(requests.put(f"{url}/api/v1/messages", timeout=5), 405, "PUT")
    assert requests.get(f"{url}/nothing", timeout=5).status_code == 404


def test_openapi_is_served_and_matches_the_routes(make_config, serve):
    _, url = serve(make_config())
    served = requests.get(f"{url}/api/v1/openapi.json", timeout=5).json()
    assert served == openapi_document()
    spec_ops = {(path, method.upper()) for path, ops in served["paths"].items() for method in ops if method != "parameters"}
    route_ops = set()
    for rule in URLS.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = rule.rule.replace("<provider>", "{provider}").replace("<path:message_id>", "{id}")
            route_ops |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert spec_ops == route_ops


def test_callbacks_for_new_messages_respect_max_watched(make_config, serve):
    exporter, url = serve(make_config(polling={"max_watched": 1}, provider={"callback_token": "cb"}))
    endpoint = f"{url}/api/v1/callbacks/fake?token=cb"
    assert requests.post(endpoint, json={"id": "n1", "status": "QUEUED"}, timeout=5).status_code == 200
    full = requests.post(endpoint, json={"id": "n2", "status": "QUEUED"}, timeout=5)
    assert full.status_code == 429 and "max_watched" in full.json()["error"]
    assert exporter.store.get("fake", "n2") is None
    assert requests.post(endpoint, json={"id": "n1", "status": "DELIVERED"}, timeout=5).status_code == 200, "known ones still update"


def test_unknown_paths_and_methods_answer_json_everywhere(make_config, run_exporter):
    client = Client(WebApp(run_exporter(make_config())))
    missing = client.get("/nosuch")
    assert missing.status_code == 404 and missing.json == {"error": "no such endpoint"}
    wrong = client.post("/metrics")
    assert wrong.status_code == 405 and wrong.json["error"] == "method POST not allowed here"
    assert wrong.headers["Allow"] and "GET" in wrong.headers["Allow"]
    assert client.delete("/").headers["Content-Type"].startswith("application/json")

"""The HTTP server on a free port: every endpoint and every error case of SPEC §6."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import bcrypt
import pytest
import requests
from werkzeug.test import Client

from viber_exporter import provider as provider_module
from viber_exporter.config.load import parse_config
from viber_exporter.errors import StoreError
from viber_exporter.server import HttpServer
from viber_exporter.web import app as web_module
from viber_exporter.web.app import BasicAuth, WebApp

from .children import (
    CALLBACK_TOKEN,
    Child,
    callback_to,
    hashed,
    mock_config,
    rfc3339,
    routee_report,
    running,
)
from .conftest import SENTINEL, config_text, sample, wait_for, wait_ticks

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


def test_unknown_paths_and_methods_answer_json(make_config, serve):
    _, url = serve(make_config())
    assert_error(requests.get(f"{url}/api/v1/nothing", timeout=5), 404, "no such endpoint")
    assert_error(requests.put(f"{url}/api/v1/messages", timeout=5), 405, "PUT")
    assert requests.get(f"{url}/nothing", timeout=5).status_code == 404


def test_unknown_paths_and_methods_answer_json_everywhere(make_config, run_exporter):
    client = Client(WebApp(run_exporter(make_config())))
    missing = client.get("/nosuch")
    assert missing.status_code == 404 and missing.json == {"error": "no such endpoint"}
    wrong = client.post("/metrics")
    assert wrong.status_code == 405 and wrong.json["error"] == "method POST not allowed here"
    assert wrong.headers["Allow"] and "GET" in wrong.headers["Allow"]
    assert client.delete("/").headers["Content-Type"].startswith("application/json")


def test_sent_at_out_of_range_is_a_400_naming_it_and_nothing_is_stored(child: Child):
    now = time.time()
    for value, word in [("0001-01-01T00:00:00+23:59", "max_age"), ("1970-01-01T00:00:00Z", "max_age"),
                        (rfc3339(now - 3 * 86400), "max_age"), (rfc3339(now + 7200), "future"),
                        ("9999-12-31T23:59:59-23:59", "future"), ("2026-02-30T00:00:00Z", "not an RFC 3339")]:
        body = {"messages": [{"provider": "bsg", "id": "100"}, {"provider": "bsg", "id": "101", "sent_at": value}]}
        answer = requests.post(f"{child.url}/api/v1/messages", json=body, timeout=10)
        assert answer.status_code == 400, value
        assert answer.json()["details"][0]["index"] == 1 and word in answer.json()["details"][0]["error"], value
    assert requests.get(f"{child.url}/api/v1/messages/bsg/100", timeout=5).status_code == 404
    ok = {"messages": [{"provider": "bsg", "id": "102", "sent_at": rfc3339(now - 3600)}]}
    assert requests.post(f"{child.url}/api/v1/messages", json=ok, timeout=10).status_code == 200


def test_deeply_nested_json_is_a_400_on_every_route_that_reads_json(child: Child, caplog):
    deep = b"[" * 5000 + b"]" * 5000
    for path, params in [("/api/v1/messages", {}), ("/api/v1/callbacks/routee", {"token": CALLBACK_TOKEN})]:
        answer = requests.post(f"{child.url}{path}", params=params, data=deep, timeout=10,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, path
        assert "error" in answer.json()
    assert "Traceback" not in child.stop()


def test_with_basic_auth_users_every_route_but_health_and_callbacks_needs_them(limited):
    server = limited(users={"prom": hashed("pw", 4)})
    for path in ("/", "/metrics", "/api/v1/providers", "/api/v1/messages", "/api/v1/openapi.json", "/api/v1/docs"):
        answer = requests.get(f"{server.url}{path}", timeout=5)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic"), path
        assert requests.get(f"{server.url}{path}", auth=("prom", "pw"), timeout=5).status_code == 200, path
        assert requests.get(f"{server.url}{path}", auth=("prom", "nope"), timeout=5).status_code == 401, path
    for path in ("/-/healthy", "/-/ready"):
        assert requests.get(f"{server.url}{path}", timeout=5).status_code == 200
    assert callback_to(server, [routee_report("0a047b46-a4dd-4ca8-b817-a6a134dd1234")]).status_code == 200
    # A write from loopback needs a basic-auth user too while no api_token is set.
    body = {"messages": [{"provider": "bsg", "id": "9"}]}
    assert requests.post(f"{server.url}/api/v1/messages", json=body, timeout=5).status_code == 401
    assert requests.post(f"{server.url}/api/v1/messages", json=body, auth=("prom", "pw"), timeout=5).status_code == 200


def test_unknown_users_cost_a_check_at_the_configured_cost_and_checks_run_one_at_a_time():
    from viber_exporter.secrets import Secret

    users = {"prom": Secret(hashed("pw", 6))}
    auth = BasicAuth()
    assert auth._dummy(users).startswith(b"$2b$06$")
    auth._checking.acquire()  # a check in progress
    auth.WAIT = 0.2
    request = type("R", (), {"authorization": type("A", (), {"type": "basic", "username": "nobody", "password": "x"})()})()
    from viber_exporter.web.app import AuthBusy

    with pytest.raises(AuthBusy):
        auth.check(request, users)  # type: ignore[arg-type]
    auth._checking.release()
    assert auth.check(request, users) is False  # type: ignore[arg-type]


def test_ready_is_503_while_writes_fail_and_every_503_says_when_to_retry(limited):
    server = limited()
    store = server.app.exporter.store
    body = {"messages": [{"provider": "bsg", "id": str(n)} for n in range(2000)]}
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    answer = requests.post(f"{server.url}/api/v1/messages", json=body, timeout=10)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert requests.get(f"{server.url}/-/ready", timeout=5).status_code == 503
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert requests.post(f"{server.url}/api/v1/messages", json=body, timeout=10).status_code == 200
    assert requests.get(f"{server.url}/-/ready", timeout=5).status_code == 200


def test_a_full_disk_at_runtime_answers_503_and_acknowledges_nothing_unstored(builtin_host, tmp_path):
    exporter = running(builtin_host, mock_config("http://127.0.0.1:9", tmp_path / "s.db"))
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    try:
        def post(ids):
            body = {"messages": [{"provider": "bsg", "id": i} for i in ids]}
            return requests.post(f"{server.url}/api/v1/messages", json=body, timeout=10)

        assert post(["1", "2"]).status_code == 200
        # A real SQLITE_FULL: cap the database at the pages it has now.
        pages = exporter.store._db.execute("PRAGMA page_count").fetchone()[0]
        exporter.store._db.execute(f"PRAGMA max_page_count = {pages}")
        refused = [str(n) for n in range(1000, 3000)]
        answer = post(refused)
        assert answer.status_code == 503 and "nothing was stored" in answer.json()["error"]
        assert exporter.store.get("bsg", "1") is not None and exporter.store.get("bsg", "2") is not None
        assert all(exporter.store.get("bsg", i) is None for i in refused[:50])
        assert sample(exporter, "viber_messages_watched", provider="bsg") == 2
        wait_ticks(exporter, "bsg")
        assert exporter.poller.running, "polling survives write failures"
        exporter.store._db.execute("PRAGMA max_page_count = 1073741823")
        assert post(refused[:10]).status_code == 200
    finally:
        server.stop()
        exporter.stop()


def test_tokens_are_compared_in_constant_time(make_config, serve, monkeypatch):
    seen = []
    real = web_module.hmac.compare_digest

    def spy(a, b):
        seen.append(True)
        return real(a, b)

    monkeypatch.setattr(web_module.hmac, "compare_digest", spy)
    monkeypatch.setattr(provider_module.hmac, "compare_digest", spy)
    _, url = serve(make_config(exporter={"api_token": "tok-ct"}, provider={"callback_token": "cb-ct"}))
    requests.post(f"{url}/api/v1/messages", json={"messages": [{"provider": "fake", "id": "a"}]},
                  headers={"Authorization": "Bearer nope"}, timeout=5)
    requests.post(f"{url}/api/v1/callbacks/fake?token=nope", json={}, timeout=5)
    assert len(seen) == 2


def test_basic_auth_on_metrics(fake_server, fake_host, run_exporter, tmp_path):
    hashed = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=4)).decode()
    text = config_text(tmp_path / "auth.db", fake_server[0].url_for("").rstrip("/"))
    text += f'\n[exporter.basic_auth_users]\nprometheus = "{hashed}"\n'
    exporter = run_exporter(parse_config(text, fake_host.provider_types(), {}))
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    try:
        refused = requests.get(f"{http.url}/metrics", timeout=5)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(f"{http.url}/metrics", auth=("prometheus", "wrong"), timeout=5).status_code == 401
        assert requests.get(f"{http.url}/metrics", auth=("nobody", "scrape-pw"), timeout=5).status_code == 401
        for _ in range(3):  # verified once, then remembered
            accepted = requests.get(f"{http.url}/metrics", auth=("prometheus", "scrape-pw"), timeout=5)
            assert accepted.status_code == 200 and "viber_messages_watched" in accepted.text
        assert requests.get(f"{http.url}/-/healthy", timeout=5).status_code == 200, "only /metrics is protected"
    finally:
        http.stop()



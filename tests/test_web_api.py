"""``exporter/web/api.py`` and ``web/views.py``: registering, reading and deleting messages
and the providers' view over HTTP, with every error case of SPEC §6."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests

from viber_exporter.errors import StoreError
from viber_exporter.server import HttpServer

from .children import (
    Child,
    mock_config,
    rfc3339,
    running,
)
from .conftest import SENTINEL, sample, wait_for, wait_ticks
from .test_web import assert_error, messages, post


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

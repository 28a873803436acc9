"""``exporter/web/app.py`` (and ``server.py``) on a free port: routes, health, `/metrics`,
authentication, and answers to unknown paths, bad bodies and failing writes. The
request helpers here are shared by the other web tests."""

from __future__ import annotations

import json
from typing import Any

import bcrypt
import pytest
import requests
from werkzeug.test import Client

from viber_exporter import provider as provider_module
from viber_exporter.config.load import parse_config
from viber_exporter.server import HttpServer
from viber_exporter.web import app as web_module
from viber_exporter.web.app import BasicAuth, WebApp

from .children import (
    CALLBACK_TOKEN,
    Child,
    callback_to,
    hashed,
    routee_report,
)
from .conftest import config_text, sample, wait_for

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



"""ProviderHttp: outcomes of transport failures, Retry-After, and the proxy environment."""

from __future__ import annotations

import pytest
import requests

from viber_exporter.http import (
    ProviderHttp,
    describe_transport_error,
    outcome_for_status,
    raise_for_status,
    retry_after_seconds,
)
from viber_exporter.model import FetchError, Outcome


def test_proxies_come_from_the_environment_once_per_host_and_honour_no_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "api.bsg.world")
    http = ProviderHttp(1.0)
    assert http.session.trust_env is False
    assert http.proxies_for("https://connect.routee.net/viber/tracking/x") == {"https": "http://proxy.internal:3128"}
    assert http.proxies_for("https://api.bsg.world/rest/viber/1") == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://other:1")
    assert http.proxies_for("https://connect.routee.net/other") == {"https": "http://proxy.internal:3128"}, "cached"


def test_ca_bundle_from_the_environment(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert ProviderHttp(1.0).session.verify == str(bundle)


@pytest.mark.parametrize(("status", "outcome"), [(200, Outcome.OK), (400, Outcome.CLIENT_ERROR), (401, Outcome.AUTH_ERROR),
                                                 (403, Outcome.AUTH_ERROR), (404, Outcome.CLIENT_ERROR), (408, Outcome.TIMEOUT),
                                                 (429, Outcome.RATE_LIMITED), (500, Outcome.SERVER_ERROR), (504, Outcome.TIMEOUT)])
def test_outcome_for_status(status, outcome):
    assert outcome_for_status(status) is outcome


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0", 0.0), ("soon", None), ("", None),
                                                 ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after(header, seconds):
    response = requests.Response()
    response.headers["Retry-After"] = header
    assert retry_after_seconds(response) == seconds


def response(status: int) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    return answer


def test_a_404_is_not_found_only_when_the_plugin_says_so():
    """A wrong base_url answers 404 too: guessing not_found would settle every message as unknown."""
    with pytest.raises(FetchError) as guessed:
        raise_for_status(response(404))
    assert guessed.value.outcome is Outcome.CLIENT_ERROR and "base_url" in guessed.value.message
    with pytest.raises(FetchError) as stated:
        raise_for_status(response(404), not_found=True)
    assert stated.value.outcome is Outcome.NOT_FOUND
    raise_for_status(response(200), not_found=True)


@pytest.mark.parametrize(("url", "cause"), [
    ("http://viber-exporter-test.invalid/x", "does not resolve"),
    ("http://127.0.0.1:9/x", "refused"),
])
def test_transport_errors_are_short_sentences_naming_host_and_cause(url, cause):
    http = ProviderHttp(2.0)
    with pytest.raises(FetchError) as info:
        http.request("GET", url, headers={"X-API-KEY": "k3y-that-must-not-show"})
    message = info.value.message
    host = url.split("/")[2]
    assert message.startswith(f"cannot reach {host}:") and cause in message, message
    assert "k3y" not in message and "HTTPConnectionPool" not in message and len(message) < 120


def test_describe_transport_error_reads_the_cause_chain():
    inner = OSError("[Errno -2] Name or service not known")
    outer = requests.ConnectionError("Max retries exceeded with url: /x?api_key=SECRET (Caused by ...)")
    outer.__cause__ = inner
    text = describe_transport_error(outer, "https://user:pw@api.example.test/x")
    assert text == "cannot reach api.example.test: its name does not resolve (DNS)"


# The direct path (urllib3's pool, no session preparation) must answer and send exactly
# what the session path does: a call with allow_redirects=True always takes the session.

def _exchange(httpserver, *, direct: bool, **kwargs):
    from werkzeug import Response

    seen = {}

    def handler(request):
        seen.update(method=request.method, query=request.query_string.decode(), body=request.get_data(),
                    headers={k.lower(): v for k, v in request.headers.items()})
        return Response('{"status": "délivré"}', status=201, content_type="application/json; charset=utf-8",
                        headers={"X-Trace": "t1"})

    httpserver.expect_request("/v1/thing").respond_with_handler(handler)
    http = ProviderHttp(5.0)
    answer = http.request("POST", httpserver.url_for("/v1/thing"), **kwargs, **({} if direct else {"allow_redirects": True}))
    return http, answer, seen


@pytest.mark.parametrize("kwargs", [
    {"headers": {"X-API-KEY": "k"}, "params": {"page": 2, "skip": None, "ids": ["a", "b"]}},
    {"json": {"api_key": "k", "n": [1, 2]}},
    {"data": b"raw=1", "headers": {"Content-Type": "text/plain", "User-Agent": None}},
])
def test_the_direct_path_sends_and_answers_what_the_session_does(httpserver, kwargs):
    http, direct, seen_direct = _exchange(httpserver, direct=True, **kwargs)
    httpserver.clear()
    _, session, seen_session = _exchange(httpserver, direct=False, **kwargs)
    for name in ("content-type", "user-agent", "accept", "accept-encoding", "content-length", "x-api-key"):
        assert seen_direct["headers"].get(name) == seen_session["headers"].get(name), name
    assert {k: seen_direct[k] for k in ("method", "query", "body")} == {k: seen_session[k] for k in ("method", "query", "body")}
    assert (direct.status_code, direct.content, direct.json(), direct.text, direct.encoding, direct.headers["x-trace"]) == \
        (session.status_code, session.content, session.json(), session.text, session.encoding, session.headers["X-Trace"])
    assert direct.url == session.url and direct.request.method == "POST" and direct.ok
    assert len(http.session.get_adapter("http://").poolmanager.pools) == 0, "the direct path was not taken"
    assert len(http._pool.pools) == 1


def test_the_direct_path_keeps_cookies_and_decodes_gzip(httpserver):
    import gzip

    from werkzeug import Response

    httpserver.expect_request("/login").respond_with_response(Response("{}", headers={"Set-Cookie": "sid=abc; Path=/"}))
    httpserver.expect_request("/z", headers={"Cookie": "sid=abc"}).respond_with_response(
        Response(gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}))
    http = ProviderHttp(5.0)
    http.request("GET", httpserver.url_for("/login"))
    assert http.session.cookies.get("sid") == "abc"
    assert http.request("GET", httpserver.url_for("/z")).json() == {"ok": True}


def test_the_direct_path_turns_a_slow_answer_into_a_timeout(httpserver):
    import threading

    from werkzeug import Response

    release = threading.Event()

    def slow(request):
        release.wait(10)
        return Response("{}")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    http = ProviderHttp(0.2)
    try:
        with pytest.raises(FetchError) as info:
            http.request("GET", httpserver.url_for("/slow"))
    finally:
        release.set()
    assert info.value.outcome is Outcome.TIMEOUT and "within 0.2s" in info.value.message

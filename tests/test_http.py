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

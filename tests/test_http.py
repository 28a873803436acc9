"""ProviderHttp: outcomes of transport failures, Retry-After, and the proxy environment."""

from __future__ import annotations

import pytest
import requests

from exporter.http import ProviderHttp, outcome_for_status, retry_after_seconds
from exporter.model import Outcome


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
                                                 (403, Outcome.AUTH_ERROR), (404, Outcome.NOT_FOUND), (408, Outcome.TIMEOUT),
                                                 (429, Outcome.RATE_LIMITED), (500, Outcome.SERVER_ERROR), (504, Outcome.TIMEOUT)])
def test_outcome_for_status(status, outcome):
    assert outcome_for_status(status) is outcome


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0", 0.0), ("soon", None), ("", None),
                                                 ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after(header, seconds):
    response = requests.Response()
    response.headers["Retry-After"] = header
    assert retry_after_seconds(response) == seconds

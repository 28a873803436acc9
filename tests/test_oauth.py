"""``exporter/oauth.py``: OAuth2 client credentials against a real token endpoint."""

from __future__ import annotations

import json
import threading
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from viber_exporter import (
    ClientCredentials,
    FetchError,
    Outcome,
    ProviderHttp,
    Secret,
)
from viber_exporter.clock import ManualClock


class TokenEndpoint:
    def __init__(self) -> None:
        self.requests = 0
        self.answers: list[Response] = []
        self.issued: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests += 1
            if self.answers:
                return self.answers.pop(0)
            token = f"tok-{self.requests}"
            self.issued.append(token)
        time.sleep(0.05)  # slow enough for waiting threads to pile up
        return Response(json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 600}),
                        content_type="application/json")


@pytest.fixture
def oauth(httpserver: HTTPServer):
    endpoint = TokenEndpoint()
    httpserver.expect_request("/token", method="POST").respond_with_handler(endpoint)
    clock = ManualClock()
    client = ClientCredentials(ProviderHttp(2.0), httpserver.url_for("/token"), "app", Secret("app-secret-x"), clock=clock)
    return client, endpoint, clock, httpserver


def test_client_credentials_fetch_once_share_and_refresh_before_expiry(oauth):
    client, endpoint, clock, _ = oauth
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(client.token().reveal())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert endpoint.requests == 1 and set(tokens) == {"tok-1"}
    clock.advance(600 - 61)
    assert client.token().reveal() == "tok-1"
    clock.advance(2)  # within a minute of expiry: replaced early
    assert client.token().reveal() == "tok-2"


def test_client_credentials_retry_once_with_a_new_token_on_401(oauth):
    client, _, _, server = oauth
    seen: list[str] = []

    def resource(request: Request) -> Response:
        seen.append(request.headers["Authorization"])
        return Response("{}", 401 if len(seen) == 1 else 200)

    server.expect_request("/thing").respond_with_handler(resource)
    assert client.request("GET", server.url_for("/thing")).status_code == 200
    assert seen == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.parametrize(("status", "headers", "outcome"), [
    (401, {}, Outcome.AUTH_ERROR), (400, {}, Outcome.AUTH_ERROR), (503, {"Retry-After": "7"}, Outcome.SERVER_ERROR),
    (500, {}, Outcome.SERVER_ERROR), (429, {"Retry-After": "3"}, Outcome.RATE_LIMITED), (504, {}, Outcome.TIMEOUT),
])
def test_token_endpoint_failures_have_their_own_outcomes(oauth, status, headers, outcome):
    client, endpoint, _, _ = oauth
    body = json.dumps({"error": "invalid_client", "error_description": "Bad credentials for app-secret-x"})
    endpoint.answers.append(Response(body, status, headers=headers, content_type="application/json"))
    with pytest.raises(FetchError) as info:
        client.token()
    assert info.value.outcome is outcome
    if outcome is Outcome.AUTH_ERROR:
        assert "Bad credentials" in info.value.message, "the provider's own description is kept"
    assert "app-secret-x" not in info.value.message
    if "Retry-After" in headers:
        assert info.value.retry_after == float(headers["Retry-After"])


def test_a_failed_token_fetch_answers_every_waiting_caller_without_asking_again(oauth):
    client, endpoint, clock, _ = oauth
    endpoint.answers.append(Response("{}", 503))
    errors = []

    def call() -> None:
        try:
            client.token()
        except FetchError as e:
            errors.append(e.outcome)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert endpoint.requests == 1 and errors == [Outcome.SERVER_ERROR] * 6
    clock.advance(3)
    assert client.token().reveal() == "tok-2", "asked again once the failure's hold ran out"

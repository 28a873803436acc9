"""Fuzzed input: provider answers, configuration, and the HTTP API (Hypothesis).

Any JSON a provider sends gives an observation or a FetchError, never another
exception; any TOML gives a Config or a ConfigError; the API never answers 5xx and
every 4xx carries a JSON error.
"""

from __future__ import annotations

import json
import os
from datetime import UTC
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.config.load import parse_config
from viber_exporter.configtable import ConfigTable, Problems
from viber_exporter.errors import ConfigError
from viber_exporter.http import ProviderHttp
from viber_exporter.model import FetchError, Observation
from viber_exporter.pluginhost import PluginHost
from viber_exporter.plugins.bsg import BsgProvider
from viber_exporter.plugins.routee import RouteeProvider
from viber_exporter.web.app import WebApp, openapi_document

# VIBER_EXPORTER_FUZZ_EXAMPLES raises the count for a longer run (docs/reliability.md).
EXAMPLES = int(os.environ.get("VIBER_EXPORTER_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
statuses = st.sampled_from(["QUEUED", "DELIVERED", "SEEN", "FAILED", "EXPIRED", "read", "sent", "delivered", "rejected", "", "??"])
# Mostly well-formed values with the odd bad one, so fuzzing reaches the deep parsing paths.
good_iso = st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T10:00:00.12Z", "2026-11-20T10:00:00"])
good_bsg_time = st.sampled_from(["2026-11-20 10:00:00", "2026-11-20 10:00:30", "", "0000-00-00 00:00:00"])
bad_time = st.sampled_from(["yesterday", "2026-13-45T99:00:00Z", "2026-11-20 25:00:00"]) | scalars
times = st.one_of(good_iso, good_bsg_time, good_iso, good_bsg_time, bad_time)
good_price = st.sampled_from(["0.02", "0.0350", 0.035, 0, "0", 1])
prices = st.one_of(good_price, good_price, good_price, st.sampled_from(["-1", "NaN", "inf", "1e309", "", "free"]) | scalars)

routee_like = st.fixed_dictionaries({
    "trackingId": st.just("0a047b46-a4dd-4ca8-b817-a6a134dd1234") | scalars,
    "status": st.fixed_dictionaries({"status": statuses | scalars, "date": times,
                                     "reason": st.fixed_dictionaries({"detailedStatus": st.text(max_size=20) | scalars}) | scalars}) | scalars,
    "price": prices, "country": scalars,
}, optional={"content": json_values, "createdAt": times})
bsg_like = st.fixed_dictionaries({
    "error": st.one_of(st.sampled_from([0, "0"]), st.sampled_from([0, "0"]), st.sampled_from([1, "40", 40, "7", "x", None]) | scalars),
    "status": statuses | scalars, "price": prices, "currency": scalars,
    "time_in": times, "time_sent": times, "time_dr": times,
}, optional={"alt_route": st.lists(st.fixed_dictionaries({"price": prices, "status": scalars, "channel": scalars}) | json_values, max_size=3) | json_values})


class CannedHttp(ProviderHttp):
    """Answers every request with one canned response (the plugin's parsing is under test)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(1.0)
        self.status, self.body = status, body

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        if "oauth" in url:
            response._content = json.dumps({"access_token": "tok", "expires_in": 3600}).encode()
        else:
            response._content = self.body
        response.headers["Content-Type"] = "application/json"
        return response


def provider(cls: type, table: dict[str, Any], status: int, body: bytes) -> Any:
    settings_ = cls.parse_settings(ConfigTable(table, "p", Problems()))
    return cls("p", settings_, CannedHttp(status, body))


ROUTEE = {"application_id": "a", "application_secret": "s", "currency": "EUR", "base_url": "http://x", "token_url": "http://x/oauth"}
BSG = {"api_key": "k", "base_url": "http://x"}


def assert_clean(cls: type, table: dict[str, Any], status: int, body: bytes, message_id: str) -> None:
    try:
        result = provider(cls, table, status, body).fetch(message_id)
    except FetchError:
        return
    assert isinstance(result, Observation)


@FUZZ
@given(body=json_values | routee_like, status=st.sampled_from([200, 200, 200, 400, 401, 403, 404, 429, 500, 503]))
def test_routee_any_answer_is_an_observation_or_an_outcome(body, status):
    assert_clean(RouteeProvider, ROUTEE, status, json.dumps(body).encode(), "0a047b46-a4dd-4ca8-b817-a6a134dd1234")


@FUZZ
@given(body=json_values | bsg_like, status=st.sampled_from([200, 200, 200, 404, 401, 429, 500]))
def test_bsg_any_answer_is_an_observation_or_an_outcome(body, status):
    assert_clean(BsgProvider, BSG, status, json.dumps(body).encode(), "217")


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_an_observation_or_an_outcome(raw):
    assert_clean(RouteeProvider, ROUTEE, 200, raw, "abc-1")
    assert_clean(BsgProvider, BSG, 200, raw, "217")


@FUZZ
@given(body=json_values | routee_like | st.lists(routee_like, max_size=3))
def test_callbacks_parse_or_are_refused(body):
    from viber_exporter.provider import InvalidCallback

    for cls, table in ((RouteeProvider, ROUTEE), (BsgProvider, BSG)):
        try:
            reports = provider(cls, table, 200, b"").parse_callback(CallbackRequest.of(json.dumps(body).encode()))
        except InvalidCallback:
            continue
        assert all(isinstance(obs, Observation) for _, obs in reports)


# -- configuration -----------------------------------------------------------------------

HOST = PluginHost()
HOST.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
keys = st.sampled_from(["listen", "state_path", "api_token", "tick", "schedule", "max_age", "plugin", "concurrency",
                        "rate_limit", "timeout", "api_key", "base_url", "lookup", "timezone", "currency",
                        "application_id", "application_secret", "enabled", "extra_labels", "latency_buckets"]) | st.text(min_size=1, max_size=8)
toml_scalars = st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=4)
tables = st.dictionaries(keys, toml_values, max_size=8)


def render(document: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in document.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines)


@FUZZ
@given(document=st.fixed_dictionaries({}, optional={"exporter": tables, "polling": tables, "metrics": tables,
                                                    "providers.a": tables, "providers.b": tables}))
def test_any_toml_document_is_a_config_or_a_config_error(document):
    try:
        parse_config(render(document), HOST.provider_types(), {})
    except ConfigError as e:
        problems = e.problems
    else:
        return
    assert problems
    assert all(isinstance(m, str) and m for _, m in problems)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text):
    with pytest.raises(ConfigError):
        parse_config(text, HOST.provider_types(), {})


# -- HTTP API ------------------------------------------------------------------------------

item = st.fixed_dictionaries({}, optional={"provider": st.sampled_from(["fake", "ghost"]) | scalars,
                                           "id": st.text(max_size=20) | scalars, "sent_at": times, "extra": scalars})
bodies = json_values | st.fixed_dictionaries({"messages": st.lists(item | json_values, max_size=5) | json_values})
paths = st.sampled_from(["/api/v1/messages", "/api/v1/messages/fake/abc", "/api/v1/messages/ghost/x%00y",
                         "/api/v1/providers", "/api/v1/callbacks/fake", "/api/v1/openapi.json", "/api/v1/nope", "/-/reload"])
query = st.dictionaries(st.sampled_from(["provider", "status", "limit", "after", "token"]), st.text(max_size=12), max_size=4)


@pytest.fixture(scope="module")
def api_client(tmp_path_factory, fake_host_module):
    from viber_exporter.engine import Exporter

    from .conftest import config_text

    state = tmp_path_factory.mktemp("fuzz") / "s.db"
    config = parse_config(config_text(state, "http://127.0.0.1:9", provider={"callback_token": "cb"}),
                          fake_host_module.provider_types(), {})
    exporter = Exporter(config, fake_host_module)
    yield Client(WebApp(exporter))
    exporter.stop()


@pytest.fixture(scope="module")
def fake_host_module():
    from .fakeprovider import FakePlugin

    host = PluginHost()
    host.register(FakePlugin(), "fake-plugin", package="tests", version="0", builtin=False)
    return host


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]), path=paths, params=query, body=bodies)
def test_api_never_answers_5xx_and_every_4xx_is_json(api_client, method, path, params, body):
    response = api_client.open(path, method=method, query_string=params, data=json.dumps(body),
                               content_type="application/json")
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400 and path.startswith("/api/"):
        assert isinstance(response.get_json()["error"], str)


# -- straight from the OpenAPI description --------------------------------------------------

OPENAPI = openapi_document()


def resolved(schema: Any) -> Any:
    """The schema with its #/components references inlined (for hypothesis-jsonschema)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return resolved(OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
        return {k: resolved(v) for k, v in schema.items() if k != "example"}
    if isinstance(schema, list):
        return [resolved(v) for v in schema]
    return schema


def operations() -> list[tuple[str, str, Any]]:
    found = []
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            found.append((path, method.upper(), resolved(body) if body else None))
    return found


def from_schema(schema: Any) -> st.SearchStrategy[Any]:
    """Values valid for the JSON Schema subset the OpenAPI description uses.

    (hypothesis-jsonschema would do this, but its current release does not work with
    the current Hypothesis; the description uses only these keywords.)
    """
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type", "object")
    if isinstance(kinds, list):
        return st.one_of([from_schema({**schema, "type": kind}) for kind in kinds])
    if kinds == "null":
        return st.none()
    if kinds == "boolean":
        return st.booleans()
    if kinds == "integer":
        return st.integers(schema.get("minimum", -(10**9)), schema.get("maximum", 10**9))
    if kinds == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kinds == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        return st.text(max_size=40)
    if kinds == "array":
        return st.lists(from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 5))
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {k: from_schema(v) for k, v in properties.items() if k in required},
        optional={k: from_schema(v) for k, v in properties.items() if k not in required},
    )


@st.composite
def openapi_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], Any]:
    path, method, body_schema = draw(st.sampled_from(operations()))
    provider = draw(st.sampled_from(["fake", "ghost"]) | st.text(min_size=1, max_size=8))
    path = path.replace("{provider}", quote(provider, safe=""))  # as a client would send them
    path = path.replace("{id}", quote(draw(st.text(min_size=1, max_size=12)), safe=""))
    params = draw(query)
    if body_schema:
        # Valid bodies per the schema half the time, anything the other half.
        body = draw(from_schema(body_schema) | json_values) if body_schema != {} else draw(json_values)
    else:
        body = draw(st.none() | json_values)
    return path, method, params, body


@FUZZ
@given(request=openapi_requests())
def test_every_documented_operation_never_answers_5xx(api_client, request):
    path, method, params, body = request
    response = api_client.open(path, method=method, query_string=params,
                               data=None if body is None else json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (path, method, response.get_data(as_text=True))
    if response.status_code >= 400:
        assert isinstance(response.get_json()["error"], str), (path, method)

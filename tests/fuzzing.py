"""Hypothesis strategies for provider answers and a canned ``ProviderHttp``, shared by
the fuzz tests in each module's test file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from viber_exporter.configtable import ConfigTable, Problems
from viber_exporter.http import ProviderHttp
from viber_exporter.model import FetchError, Observation

# VIBER_EXPORTER_FUZZ_EXAMPLES raises the count for a longer run (docs/reliability.md).
EXAMPLES = int(os.environ.get("VIBER_EXPORTER_FUZZ_EXAMPLES", "250"))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def FUZZ(test: Callable[..., None]) -> Callable[..., None]:
    """A fuzz test: Hypothesis at the suite's size, marked ``fuzz`` so ``-m fuzz`` runs them all."""
    return pytest.mark.fuzz(_SETTINGS(test))  # type: ignore[no-any-return]


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

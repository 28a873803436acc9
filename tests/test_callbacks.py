"""Pushed delivery reports (``exporter/callbacks.py`` and the callback route): tokens,
caps, ``max_watched``, and any body parsed or refused."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.errors import Refused
from viber_exporter.model import Observation
from viber_exporter.plugins.bsg import BsgProvider
from viber_exporter.plugins.routee import RouteeProvider

from .children import Child, callback, routee_report
from .conftest import sample, wait_for
from .fuzzing import BSG, FUZZ, ROUTEE, json_values, provider, routee_like
from .test_plugin_api import PushOnly, config_for, host_with, signed
from .test_web import assert_error


def test_a_callback_has_the_registration_item_cap(child: Child):
    reports = [routee_report(f"0a047b46-a4dd-4ca8-b817-{n:012d}") for n in range(10_001)]
    answer = callback(child, reports)
    assert answer.status_code == 413 and "10000" in answer.json()["error"]
    assert requests.get(f"{child.url}/api/v1/messages", timeout=5).json()["messages"] == []
    assert callback(child, reports[:10_000]).status_code == 200


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


def test_callbacks_for_new_messages_respect_max_watched(make_config, serve):
    exporter, url = serve(make_config(polling={"max_watched": 1}, provider={"callback_token": "cb"}))
    endpoint = f"{url}/api/v1/callbacks/fake?token=cb"
    assert requests.post(endpoint, json={"id": "n1", "status": "QUEUED"}, timeout=5).status_code == 200
    full = requests.post(endpoint, json={"id": "n2", "status": "QUEUED"}, timeout=5)
    assert full.status_code == 429 and "max_watched" in full.json()["error"]
    assert exporter.store.get("fake", "n2") is None
    assert requests.post(endpoint, json={"id": "n1", "status": "DELIVERED"}, timeout=5).status_code == 200, "known ones still update"


def test_concurrent_callbacks_for_new_messages_never_exceed_max_watched(tmp_path):
    """The limit is checked inside the store transaction, as for registrations."""
    from prometheus_client import CollectorRegistry

    from viber_exporter.engine import Exporter

    host = host_with(PushOnly)
    config = config_for(tmp_path, host, "pushonly")
    from dataclasses import replace
    config = replace(config, polling=replace(config.polling, max_watched=5))
    exporter = Exporter(config, host, registry=CollectorRegistry())
    outcomes: list[int] = []
    barrier = threading.Barrier(20)

    def push(i: int) -> None:
        body = json.dumps({"id": f"n{i}", "event": "queued"}).encode()
        barrier.wait()
        try:
            exporter.receive_callback("p", CallbackRequest.of(body, headers=signed(body)))
            outcomes.append(200)
        except Refused as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(outcomes) == [200] * 5 + [429] * 15
        assert exporter.store.total_watched() == 5
    finally:
        exporter.stop()

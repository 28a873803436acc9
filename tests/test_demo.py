"""`viber-exporter demo` as a newcomer runs it: metrics within 15 s, clean exit on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .children import SCRIPT, answers, free_port, spawned, stop
from .conftest import wait_for

pytestmark = pytest.mark.slow


def values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def shows_everything(url: str) -> bool:
    try:
        text = requests.get(f"{url}/metrics", timeout=2).text
    except requests.RequestException:
        return False
    samples = values(text)

    def total(name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)

    return all(
        total("viber_message_status_transitions_total", provider=p, status="delivered") > 0
        and total("viber_message_delivery_latency_seconds_count", provider=p) > 0
        and total("viber_message_cost_total", provider=p, channel="viber") > 0
        for p in ("routee", "bsg")
    )


def test_demo_shows_metrics_within_15_seconds_and_stops_cleanly(tmp_path):
    port = free_port()
    started = time.monotonic()
    with spawned("demo", "--listen", f"127.0.0.1:{port}", cwd=tmp_path) as process:
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() - started < 15 and not shows_everything(url):
            time.sleep(0.5)
        assert shows_everything(url), "transitions, latency and cost for both plugins within 15 s"
        page = requests.get(f"{url}/", timeout=5).text
        assert "This is the demo" in page and page.count("<svg") >= 6, "the banner, and charts for both instances"
        output = stop(process, signal.SIGINT)
    assert process.returncode == 0, output
    assert "demo stopped" in output and "/metrics" in output
    assert "Traceback" not in output


def run_demo_until(tmp_path: Path, state: Path, enough) -> tuple[dict, str]:
    """Runs ``demo --state`` until ``enough(samples)`` holds, stops it with SIGTERM and
    returns the last metrics seen and the demo's output."""
    port = free_port()
    samples: dict = {}
    with spawned("demo", "--listen", f"127.0.0.1:{port}", "--state", str(state), cwd=tmp_path) as process:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                samples = values(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except requests.RequestException:
                samples = {}
            if samples and enough(samples):
                break
            time.sleep(0.3)
        output = stop(process)
    assert process.returncode == 0, output
    return samples, output


def total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_demo_restarted_on_its_state_goes_on_with_the_same_world(tmp_path):
    state = tmp_path / "demo.db"

    def accepted(samples: dict, count: int) -> bool:
        return all(total(samples, "viber_watch_registrations_total", provider=p, outcome="accepted") >= count
                   for p in ("routee", "bsg"))

    first, _ = run_demo_until(tmp_path, state, lambda s: accepted(s, 6))
    assert accepted(first, 6)
    world = tmp_path / "demo.db.mock.json"
    assert state.exists() and world.exists()

    # The second run polls what the first stored (the mock still knows those ids) and
    # registers new messages whose ids do not collide with the stored ones.
    def polled_and_registered(samples: dict) -> bool:
        return accepted(samples, 6) and total(samples, "viber_provider_requests_total", outcome="ok") >= 10

    second, output = run_demo_until(tmp_path, state, polled_and_registered)
    assert polled_and_registered(second), second
    assert "simulated messages resumed" in output
    assert total(second, "viber_watch_registrations_total", outcome="duplicate") == 0
    assert total(second, "viber_provider_requests_total", outcome="not_found") == 0
    assert total(second, "viber_message_status_transitions_total", status="unknown") == 0


def test_demo_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([str(SCRIPT), "demo", "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=20, env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}, check=False)
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_the_demo_listens_on_an_ipv6_address(tmp_path):
    port = free_port()
    process = subprocess.Popen([str(SCRIPT), "demo", "--listen", f"[::]:{port}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=30)
        assert requests.get(f"http://[::1]:{port}/metrics", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0, out

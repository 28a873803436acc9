"""End to end: mock providers with a failure burst → exporter → a real Prometheus.

Every PromQL expression of the dashboard, the recording rules and the alerts must
parse and return data, and the failure-spike alert must become pending or firing.
Skips without a `prometheus` binary unless VIBER_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from viber_exporter.clock import SYSTEM_CLOCK
from viber_exporter.config import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer, HttpServer
from viber_exporter.testing.mock import MockProviders, exporter_config
from viber_exporter.testing.simulation import Mix

from .conftest import wait_for
from .test_cli import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "grafana"))
import generate  # noqa: E402  (grafana/generate.py)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BURST = Mix(read=0.2, delivered=0.1, failed=0.6, expired=0.1, pending=0.0, delivery_median=0.5,
            read_median=0.5, final_median=0.5, sigma=0.3, visible_after=0.0)
# Grafana's template variables, as Grafana would substitute them for a 5-minute view.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "5m", "$provider": ".*"}


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("prometheus is required (VIBER_EXPORTER_REQUIRE_E2E=1): apt-get install prometheus")
        pytest.skip("prometheus not installed (Debian package prometheus)")
    return path


@pytest.fixture
def stack(tmp_path) -> Iterator[tuple[str, Exporter, MockProviders]]:
    binary = prometheus_binary()
    mock = MockProviders(BURST, seed=3)
    mock_server = BackgroundServer(mock, "127.0.0.1", 0)
    mock_server.start()
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    url = mock_server.url
    text = exporter_config(url, tmp_path / "state.db", polling={"tick": "200ms", "schedule": ["300ms"], "read_window": "2s"},
                           routee={"rate_limit": 500}, bsg={"rate_limit": 500})
    config = parse_config(text, host.provider_types(), {})
    exporter = Exporter(config, host)
    server = HttpServer(exporter, "127.0.0.1", 0)
    exporter.start()
    server.start()
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {generate.ROOT / "prometheus" / "viber-exporter.rules.yml"}
scrape_configs:
  - job_name: viber-exporter
    static_configs:
      - targets: ["127.0.0.1:{server.port}"]
""")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    prometheus = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{prometheus}/-/ready") == 200 or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stderr.read() if process.stderr else "prometheus exited"
        yield prometheus, exporter, mock
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.stop()
        exporter.stop()
        mock_server.stop()


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=1).status_code
    except requests.RequestException:
        return 0


def instant(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_exprs() -> list[tuple[str, str]]:
    data = json.loads((generate.ROOT / "dashboards" / "viber-delivery-overview.json").read_text())
    return [(p["title"], t["expr"]) for p in data["panels"] for t in p.get("targets", [])]


def test_every_query_returns_data_and_the_failure_spike_alert_goes_off(stack):
    prometheus, exporter, mock = stack
    # Counters must be seen at 0 first: a value already reached at the first scrape is no increase.
    wait_for(lambda: instant(prometheus, 'viber_exporter_build_info{job="viber-exporter"}'), timeout=30)
    time.sleep(1.5)
    for _ in range(8):  # the burst arrives over a few seconds, as real traffic would
        for provider in ("routee", "bsg"):
            plans = [mock.simulation.create(provider, SYSTEM_CLOCK.time()) for _ in range(5)]
            exporter.register([Registration(provider, p.id, sent_at=p.created) for p in plans])
        time.sleep(0.5)
    wait_for(lambda: exporter.store.total_watched() == 0, timeout=40)

    def everything_answers() -> bool:
        exprs = [e for _, e in dashboard_exprs()] + list(generate.RECORDING_RULES) + [a.value for a in generate.ALERTS]
        return all(instant(prometheus, substitute(e)) for e in exprs)

    wait_for(everything_answers, timeout=60, interval=1)
    for title, expr in dashboard_exprs():
        assert instant(prometheus, substitute(expr)), title
    for record in generate.RECORDING_RULES:
        assert instant(prometheus, record), record
    for alert in generate.ALERTS:
        instant(prometheus, alert.expr)  # parses (fires or not)
        assert instant(prometheus, alert.value), alert.name

    def spike_state() -> str | None:
        alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        states = {a["state"] for a in alerts if a["labels"]["alertname"] == "ViberFailureSpike"}
        return next(iter(states & {"pending", "firing"}), None)

    try:
        state = wait_for(spike_state, timeout=30, interval=1)
    except AssertionError:
        diagnostics = {e: instant(prometheus, e) for e in (
            "viber:message_settled:increase10m", 'viber_message_status_transitions_total{provider="bsg",status="failed"}[1m]')}
        rules = requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()
        raise AssertionError(f"no pending/firing ViberFailureSpike: {diagnostics} {json.dumps(rules)[:3000]}") from None
    assert state in ("pending", "firing")

"""End to end: mock providers → exporter → two real Prometheus servers.

One Prometheus loads our rule file, the other does not (as for a Grafana-only user).
Every dashboard query and every Grafana alert query must answer on both, every
recording rule and alert expression on the first; and the delivery SLO's burn-rate
(failure) alert, the provider-garbage and exporter-down alerts must go off. The scrape
job is not called viber-exporter (as with a ServiceMonitor, which names the job after
its Service): the rules are rendered for its selector, with each alert's ``for`` cut to
zero (the PromQL is untouched; the ``for`` durations are covered by the promtool unit
tests). Skips without a
`prometheus` binary unless VIBER_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from viber_exporter.clock import SYSTEM_CLOCK
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer, HttpServer
from viber_exporter.testing.mock import Faults, MockProviders, exporter_config
from viber_exporter.testing.simulation import Mix

from ..children import free_port
from ..conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "grafana"))
import generate  # noqa: E402  (grafana/generate.py)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BURST = Mix(read=0.2, delivered=0.1, failed=0.6, expired=0.1, pending=0.0, delivery_median=0.5,
            read_median=0.5, final_median=0.5, sigma=0.3, visible_after=0.0)
# Grafana's template variables, as Grafana would substitute them for a 5-minute view.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "5m", "$provider": ".*", "$instance": ".*", "$job": ".*",
                 "$cluster": ".*", "$breakdown": "kind"}
#: the scrape job, and the rules rendered for it
JOB = "viber-exporter-svc"
STACK = generate.StackConfig(selector=f'job="{JOB}"')


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("prometheus is required (VIBER_EXPORTER_REQUIRE_E2E=1): apt-get install prometheus")
        pytest.skip("prometheus not installed (Debian package prometheus)")
    return path


def quick_rules(path: Path) -> Path:
    """The rules rendered for this job, with every alert's ``for`` set to 0s."""
    rules = generate.prometheus_rules(STACK)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules))
    return path


@dataclass
class Stack:
    with_rules: str
    without_rules: str
    exporter: Exporter
    server: HttpServer
    mock: MockProviders


def start_prometheus(binary: str, workdir: Path, target_port: int, rules: Path | None) -> tuple[subprocess.Popen[str], str]:
    workdir.mkdir()
    port = free_port()
    rule_files = f"rule_files:\n  - {rules}\n" if rules else ""
    (workdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
{rule_files}scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
    process = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{url}/-/ready") == 200 or process.poll() is not None, timeout=30)
    assert process.poll() is None, process.stderr.read() if process.stderr else "prometheus exited"
    return process, url


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    binary = prometheus_binary()
    mock = MockProviders(BURST, seed=3)
    mock_server = BackgroundServer(mock, "127.0.0.1", 0)
    mock_server.start()
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    text = exporter_config(mock_server.url, tmp_path / "state.db", polling={"tick": "200ms", "schedule": ["300ms"], "read_window": "2s"},
                           routee={"rate_limit": 500}, bsg={"rate_limit": 500})
    text += '[metrics.labels.kind]\nvalues = ["otp", "marketing"]\n'  # a declared message label
    exporter = Exporter(parse_config(text, host.provider_types(), {}), host)
    server = HttpServer(exporter, "127.0.0.1", 0)
    exporter.start()
    server.start()
    processes = []
    try:
        ruled, with_rules = start_prometheus(binary, tmp_path / "with", server.port, quick_rules(tmp_path / "quick.rules.yml"))
        processes.append(ruled)
        bare, without_rules = start_prometheus(binary, tmp_path / "without", server.port, None)
        processes.append(bare)
        yield Stack(with_rules, without_rules, exporter, server, mock)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        server.stop()
        if not exporter.store.closed:
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


def instant_sum(prometheus: str, expr: str) -> float:
    return sum(float(r["value"][1]) for r in instant(prometheus, f"sum({expr})"))


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_exprs() -> list[tuple[str, str]]:
    data = json.loads((generate.ROOT / "dashboards" / "viber-delivery-overview.json").read_text())
    return [(p["title"], t["expr"]) for p in data["panels"] for t in p.get("targets", [])]


def grafana_exprs() -> dict[str, str]:
    data = generate.grafana_alerts(STACK)
    return {r["title"]: next(d for d in r["data"] if d["refId"] == "A")["model"]["expr"]
            for g in data["groups"] for r in g["rules"]}


def alert_state(prometheus: str, name: str) -> set[str]:
    alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["state"] for a in alerts if a["labels"]["alertname"] == name}


def send(stack: Stack, rounds: int, per_round: int) -> None:
    for _ in range(rounds):  # the burst arrives over a few seconds, as real traffic would
        for provider in ("routee", "bsg"):
            plans = [stack.mock.simulation.create(provider, SYSTEM_CLOCK.time()) for _ in range(per_round)]
            stack.exporter.register([Registration(provider, p.id, sent_at=p.created, labels={"kind": KINDS[n % 2]})
                                     for n, p in enumerate(plans)])
        time.sleep(0.4)


# Alerts whose value needs data the short run cannot produce (a week of spend history,
# a balance trend, a stalled or refused backlog): they must still parse everywhere.
NEEDS_HISTORY = {"ViberCostSpike", "ViberBalanceLow", "ViberDeliveriesStalled", "ViberPollingStalled",
                 "ViberRegistrationsRefused", "ViberExporterAbsent"}
FAILURE_ALERT = "ViberDeliveryErrorBudgetBurn"
KINDS = ("otp", "marketing")


def test_every_query_answers_with_and_without_the_rule_file_and_the_alerts_go_off(stack):
    wait_for(lambda: instant(stack.with_rules, f'viber_exporter_build_info{{job="{JOB}"}}'), timeout=30)
    wait_for(lambda: instant(stack.without_rules, f'viber_exporter_build_info{{job="{JOB}"}}'), timeout=30)
    time.sleep(1.5)  # counters must be seen at 0 first: a value reached at the first scrape is no increase

    # First the providers answer HTTP 200 with an error page: garbage, then down.
    # The alert wants at least 20 answers in 10 minutes, and garbage backs the instance
    # off (1 s doubling to 60 s): only the calls already in flight when a pause begins
    # add to the count. Answers that take 50 ms keep the concurrent calls in flight on a
    # fast machine too (without it, an idle machine made one call per pause and the
    # 20th answer came after the test gave up).
    stack.mock.faults = Faults(malformed_rate=1.0, latency=0.05)
    send(stack, rounds=4, per_round=5)
    wait_for(lambda: alert_state(stack.with_rules, "ViberProviderGarbage") & {"pending", "firing"}, timeout=180, interval=1)
    # The twin scrapes on its own schedule, so it may cross the threshold a scrape later.
    wait_for(lambda: instant(stack.without_rules, grafana_exprs()["ViberProviderGarbage"]), timeout=30, interval=1)
    wait_for(lambda: alert_state(stack.with_rules, "ViberProviderDown") & {"pending", "firing"}, timeout=60, interval=1)

    # Then they recover, and a burst comes: 60 % failures, two fifths on the provider's side
    # (enough messages for the SLO alert's volume floor of 50 in the hour).
    stack.mock.faults = Faults()
    send(stack, rounds=24, per_round=5)
    wait_for(lambda: stack.exporter.store.total_watched() == 0, timeout=120)

    def dashboards_answer(prometheus: str) -> bool:
        return all(instant(prometheus, substitute(e)) for _, e in dashboard_exprs())

    for prometheus in (stack.with_rules, stack.without_rules):
        wait_for(lambda p=prometheus: dashboards_answer(p), timeout=60, interval=1)
        for title, expr in dashboard_exprs():
            assert instant(prometheus, substitute(expr)), title
        for expr in grafana_exprs().values():
            instant(prometheus, expr)  # evaluates (empty while the alert does not hold)
    for record in generate.RECORDING_RULES:
        assert instant(stack.with_rules, record), record
    for alert in generate.ALERTS:
        instant(stack.with_rules, generate.render(alert.expr, STACK))
        if alert.name not in NEEDS_HISTORY:
            assert instant(stack.with_rules, generate.render(alert.value, STACK)), alert.name
    wait_for(lambda: alert_state(stack.with_rules, FAILURE_ALERT) & {"pending", "firing"}, timeout=30, interval=1)
    firing = requests.get(f"{stack.with_rules}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    labels = next(a["labels"] for a in firing if a["labels"]["alertname"] == FAILURE_ALERT)
    assert labels["job"] == JOB, "the alert says where it comes from"
    # the Grafana twin needs no recording rule
    wait_for(lambda: instant(stack.without_rules, grafana_exprs()[FAILURE_ALERT]), timeout=30, interval=1)
    # Every message counted once, under the label it was registered with.
    settled = {kind: sum(float(r["value"][1]) for r in instant(
        stack.with_rules, f'sum by (provider) (viber_message_status_transitions_total{{job="{JOB}", kind="{kind}", status="pending"}})'))
        for kind in KINDS}
    assert settled["otp"] > 0 and settled["marketing"] > 0
    assert sum(settled.values()) == instant_sum(stack.with_rules, f'viber_message_status_transitions_total{{job="{JOB}", status="pending"}}')

    # The exporter dies: it pages as down, and its frozen counters page nothing else.
    stack.server.stop()
    stack.exporter.stop()
    wait_for(lambda: alert_state(stack.with_rules, "ViberExporterDown") & {"pending", "firing"}, timeout=30, interval=1)
    wait_for(lambda: instant(stack.without_rules, grafana_exprs()["ViberExporterDown"]), timeout=30, interval=1)
    time.sleep(3)
    for name in (FAILURE_ALERT, "ViberProviderGarbage", "ViberProviderDown", "ViberPollingStalled", "ViberPollerStuck"):
        assert not alert_state(stack.with_rules, name), f"{name} still active from a dead exporter's series"

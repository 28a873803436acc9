"""Dashboards, alert rules and recording rules: generated, consistent, and using real metric names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from viber_exporter.engine import Registration
from viber_exporter.model import Status
from viber_exporter.state import (
    AnswerProblem,
    Cost,
    FallbackOutcome,
    Latency,
    SmsFallback,
    Transition,
    WatchExpired,
)

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "viber-delivery-overview.json"
PROM_RULES = GRAFANA / "prometheus" / "viber-exporter.rules.yml"
GRAFANA_ALERTS = GRAFANA / "provisioning" / "alerting" / "viber-exporter.yaml"
REQUIRE_E2E = os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if REQUIRE_E2E:
            pytest.fail("promtool is required (VIBER_EXPORTER_REQUIRE_E2E=1): apt-get install prometheus")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def test_generated_files_are_up_to_date(tmp_path):
    result = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # …and the check really compares: a changed file is reported.
    copy = tmp_path / "grafana"
    shutil.copytree(GRAFANA, copy)
    (copy / "dashboards" / "viber-delivery-overview.json").write_text("{}")
    stale = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check", "--out", str(copy)],
                           capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "viber-delivery-overview.json" in stale.stderr


def test_dashboard_is_provisioning_safe_with_variables_and_panels():
    from grafana_foundation_sdk.models.dashboard import Dashboard

    text = DASHBOARD.read_text()
    data = json.loads(text)
    Dashboard.from_json(data)  # the SDK's own schema model accepts it
    assert data["uid"] == "viber-delivery-overview" and data["title"] == "Viber delivery overview"
    assert "__inputs" not in data and "DS_PROMETHEUS" not in text
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["provider"]["multi"] is True and variables["provider"]["query"].startswith("label_values(")
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(set(refs)) == len(refs), panel["title"]
    titles = {p["title"] for p in panels}
    for wanted in ("Messages in the store by status", "Delivery success ratio", "Delivery latency p50 / p95", "Spend over the range",
                   "Transitions by status", "Provider-side failure ratio", "Failures by reason", "Delivery and read latency",
                   "Cost by provider, currency and channel", "SMS fallbacks", "Watch expiries", "Provider up",
                   "Calls by outcome", "Call latency p95", "Poll lag", "Time since last success", "Calls per settled message",
                   "Oldest pending message", "Provider balance", "Exporters up", "Version", "Last reload successful",
                   "Watched / max_watched", "Watched backlog", "Registrations and callbacks by outcome"):
        assert wanted in titles, wanted
    assert [r["title"] for r in data["panels"] if r["type"] == "row"] == ["Overview", "Messages", "Provider health", "Exporter health"]
    assert variables["instance"]["multi"] is True and "instance" in variables["instance"]["query"]
    for panel in panels:
        for target in panel["targets"]:
            if "viber_" in target["expr"] and "build_info" not in target["expr"]:
                assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
            assert "viber:" not in target["expr"], "dashboards need none of our recording rules"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
    latency = next(p for p in panels if p["title"] == "Delivery and read latency")
    assert all(t.get("exemplar") for t in latency["targets"]), "exemplars on: the slow-delivery runbook relies on them"
    lines = {p["title"] for p in panels if p["fieldConfig"]["defaults"].get("custom", {}).get("thresholdsStyle", {}).get("mode") == "dashed"}
    assert {"Provider-side failure ratio", "Delivery and read latency", "Poll lag"} <= lines, "alert thresholds drawn"
    linked = {p["title"] for p in panels if any("runbooks.md#" in link["url"] for link in p.get("links", []))}
    assert {"Provider up", "Poll lag", "Provider-side failure ratio", "Exporters up"} <= linked
    last_success = next(p for p in panels if p["title"] == "Time since last success")
    assert "> 0" in last_success["targets"][0]["expr"], "a provider that never succeeded shows nothing, not 56 years"


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load(PROM_RULES.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def prometheus_alerts() -> dict[str, dict]:
    groups = yaml.safe_load(PROM_RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


ALERT_NAMES = {"ViberExporterDown", "ViberExporterAbsent", "ViberPollingStalled", "ViberFailureSpike", "ViberSlowDelivery",
               "ViberDeliveriesStalled", "ViberProviderDown", "ViberProviderGarbage", "ViberPollLag",
               "ViberWatchedSetNearlyFull", "ViberRegistrationsRefused", "ViberReloadFailed", "ViberCostSpike",
               "ViberBalanceLow", "ViberNoPoller", "ViberPollerConflict"}


def test_every_grafana_alert_stands_alone_and_matches_its_prometheus_twin():
    grafana = yaml.safe_load(GRAFANA_ALERTS.read_text())
    assert grafana["apiVersion"] == 1
    rules = {r["title"]: r for g in grafana["groups"] for r in g["rules"]}
    twins = prometheus_alerts()
    assert set(rules) == set(twins) == ALERT_NAMES
    for name, rule in rules.items():
        query = next(d for d in rule["data"] if d["refId"] == "A")
        expr = query["model"]["expr"]
        # No recording rule may remain: Grafana cannot count on our rule file. (Evaluated
        # against a Prometheus without it in tests/test_e2e_prometheus.py.)
        assert not re.search(r"viber:[a-z_:0-9]+", expr), (name, expr)
        if not re.search(r"viber:", twins[name]["expr"]):
            assert expr == twins[name]["expr"], name
        assert query["datasourceUid"] == "prometheus"
        assert rule["for"] == twins[name]["for"] and rule["labels"] == twins[name]["labels"]
        assert rule["noDataState"] in ("OK", "NoData", "Alerting") and rule["execErrState"] in ("Error", "Alerting")
        annotations, twin = rule["annotations"], twins[name]["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert annotations["summary"] == twin["summary"] and annotations["runbook_url"] == twin["runbook_url"]
        # In Grafana $value is a string: values come from $values.<ref>.Value.
        assert not re.search(r"\$value\b(?!s)", annotations["description"]), (name, annotations["description"])
        if "$value" in twin["description"]:
            assert "$values.A.Value" in annotations["description"], name


def test_the_generator_inlines_nested_recording_rules():
    sys.path.insert(0, str(GRAFANA))
    import generate

    inlined = generate.inline("viber:message_provider_failure_ratio:ratio10m > 0.2")
    assert "viber:" not in inlined and "viber_message_failures_by_side_total" in inlined


def test_every_runbook_link_has_a_section():
    headings = {line[3:].strip().lower() for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines() if line.startswith("## ")}
    for name, rule in prometheus_alerts().items():
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        assert name.lower() in headings


def test_every_metric_name_under_grafana_exists_in_the_exporter_output(make_config, run_exporter):
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "m1")])
    exporter.metrics.record([
        Transition("fake", "m1", Status.FAILED, "rejected", None), Latency("fake", "m1", "delivery", 1.0),
        Cost("fake", "EUR", "viber", 0.1, None), SmsFallback("fake"), WatchExpired("fake"),
        FallbackOutcome("fake", "sms", Status.DELIVERED), AnswerProblem("fake", "unreadable_field", "price"),
    ])
    lines = generate_latest(exporter.registry).decode().splitlines()
    exposed = {line.split("{")[0].split(" ")[0] for line in lines if line and not line.startswith("#")}
    exposed |= {line.split()[2] for line in lines if line.startswith("# TYPE ")}  # family names (histograms)
    used: set[str] = set()
    for path in GRAFANA.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yml", ".yaml", ".py"):
            used |= set(re.findall(r"\bviber_[a-z0-9_]*[a-z0-9]", path.read_text()))
    used -= {"viber_exporter"}  # the job name in the example scrape config
    assert used, "found no metric names"
    assert used <= exposed, sorted(used - exposed)


@pytest.mark.e2e
@pytest.mark.slow
def test_promtool_checks_and_unit_tests_the_rules():
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(PROM_RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(PROM_RULES.parent.glob("*.rules.test.yml"))
    assert len(tests) == 2, tests  # every alert, and the cost alert's days-long cases
    unit = subprocess.run([tool, "test", "rules", *map(str, tests)],
                          capture_output=True, text=True, check=False, cwd=PROM_RULES.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert unit.stdout.count("SUCCESS") == 2, unit.stdout
    config = subprocess.run([tool, "check", "config", str(GRAFANA / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert config.returncode == 0, config.stdout + config.stderr

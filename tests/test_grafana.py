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
from viber_exporter.events import (
    AnswerProblem,
    Cost,
    FallbackOutcome,
    Latency,
    SmsFallback,
    Transition,
    WatchExpired,
)
from viber_exporter.model import Status

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
    assert data["graphTooltip"] == 1, "a shared crosshair"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("cluster", "job", "instance", "provider"):
        assert variables[name]["multi"] is True and variables[name]["query"].startswith("label_values("), name
        assert variables[name]["allValue"] == ".*", "All also matches series without the label"
    annotations = {a["name"] for a in data["annotations"]["list"]}
    assert {"Exporter restarts", "Configuration reloads"} <= annotations
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, (panel["title"], grid)
    for panel in panels:
        if panel["type"] == "alertlist":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(set(refs)) == len(refs), panel["title"]
    titles = {p["title"] for p in panels}
    for wanted in ("Messages in the store by status", "Delivery success ratio", "Read-through ratio", "Delivery latency p50 / p95",
                   "Spend over the range", "Firing and pending Viber alerts", "Transitions by status",
                   "Provider-side failure ratio (10 min)", "Failures by reason", "Delivery latency", "Read latency",
                   "Read-through ratio (1 h)", "SMS fallbacks and their outcomes", "Watch expiries", "Provider up",
                   "Calls by outcome", "Call latency p95", "Rate-limited calls (429)", "Answer problems", "Poll lag",
                   "Time since the last poll tick", "Time since last success", "Calls per settled message", "Messages waiting",
                   "Provider balance", "Exporters up", "Ready", "Version", "Last reload successful", "Watched / max_watched",
                   "Watched backlog", "Registrations and callbacks by outcome", "Dropped hook events", "Exporter CPU",
                   "Exporter memory and open files"):
        assert wanted in titles, wanted
    assert [r["title"] for r in data["panels"] if r["type"] == "row"] == ["Overview", "Alerts", "Messages", "By message label",
                                                                            "Provider health", "Exporter health"]
    assert variables["filters"]["type"] == "adhoc" and variables["breakdown"]["query"] == "provider"
    for panel in panels:
        for target in panel.get("targets", []):
            if "viber_" in target["expr"] or "process_" in target["expr"] or "up{" in target["expr"]:
                assert 'instance=~"$instance"' in target["expr"] and 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            assert "viber:" not in target["expr"], "dashboards need none of our recording rules"
            assert 'job="' not in target["expr"], "no hard-coded job"
        if panel["type"] == "alertlist":
            continue
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels if p["type"] != "alertlist"}
    assert units["Transitions by status"] == "ops" and units["Calls by outcome"] == "reqps"
    assert units["Spend per hour by provider, currency and channel"] != "none"
    latency = next(p for p in panels if p["title"] == "Delivery latency")
    assert all(t.get("exemplar") for t in latency["targets"]), "exemplars on: the latency runbook relies on them"
    read = next(p for p in panels if p["title"] == "Read latency")
    assert read["fieldConfig"]["defaults"].get("custom", {}).get("thresholdsStyle", {}).get("mode") != "dashed", "no delivery line over reads"
    lines = {p["title"] for p in panels if p.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("thresholdsStyle", {}).get("mode") == "dashed"}
    assert {"Provider-side failure ratio (10 min)", "Delivery latency", "Poll lag", "Time since the last poll tick"} <= lines, "alert thresholds drawn"
    failure = next(p for p in panels if p["title"] == "Provider-side failure ratio (10 min)")
    assert "[10m]" in failure["targets"][0]["expr"], "the window the alerting thinks in"
    up = next(p for p in panels if p["title"] == "Provider up")
    assert up["type"] == "state-timeline"
    texts = {m["options"][k]["text"] for m in up["fieldConfig"]["defaults"]["mappings"] for k in m["options"]}
    assert texts == {"Up", "Down"}
    exporters = next(p for p in panels if p["title"] == "Exporters up")
    assert "count(up" in exporters["targets"][0]["expr"], "one of two replicas down is not green"
    linked = {p["title"] for p in panels if any("runbooks.md#" in link["url"] for link in p.get("links", []))}
    assert {"Provider up", "Poll lag", "Provider-side failure ratio (10 min)", "Exporters up"} <= linked
    last_success = next(p for p in panels if p["title"] == "Time since last success")
    assert "> 0" in last_success["targets"][0]["expr"], "a provider that never succeeded shows nothing, not 56 years"


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load(PROM_RULES.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def prometheus_alerts() -> dict[str, dict]:
    groups = yaml.safe_load(PROM_RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


ALERT_NAMES = {"ViberExporterDown", "ViberExporterAbsent", "ViberExporterNotReady", "ViberPollingStalled", "ViberPollerStuck",
               "ViberDeliveryErrorBudgetBurn", "ViberDeliveryErrorBudgetSlowBurn", "ViberLatencyErrorBudgetBurn",
               "ViberLatencyErrorBudgetSlowBurn", "ViberDeliveriesStalled", "ViberProviderDown", "ViberProviderGarbage",
               "ViberPollLag", "ViberWatchedSetNearlyFull", "ViberRegistrationsRefused", "ViberReloadFailed",
               "ViberCostSpike", "ViberBalanceLow", "ViberNoPoller", "ViberPollerConflict"}


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
        # against a Prometheus without it in tests/system/test_prometheus.py.)
        assert not re.search(r"viber:[a-z_:0-9]+", expr), (name, expr)
        if not re.search(r"viber:", twins[name]["expr"]):
            assert expr == twins[name]["expr"], name
        assert query["datasourceUid"] == "prometheus"
        assert rule["for"] == twins[name]["for"] and rule["labels"] == twins[name]["labels"]
        # A datasource outage raises Grafana's own DatasourceError, with the rule's labels,
        # instead of a page per rule with empty labels.
        assert rule["noDataState"] == "OK" and rule["execErrState"] == "Error"
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

    inlined = generate.inline("viber:slo_delivery_errors:ratio_rate1h > 0.2")
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
    used -= {"viber_rules", "viber_dashboard", "viber_mixin"}  # the generator's own modules
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


# -- the monitoring mixin, other stacks, inhibitions ---------------------------------------------


def render_mixin(snippet: str) -> dict:
    """Evaluate jsonnet against the committed mixin with go-jsonnet (PyPI gojsonnet)."""
    jsonnet = pytest.importorskip("_gojsonnet")
    return json.loads(jsonnet.evaluate_snippet("test", snippet, jpathdir=[str(GRAFANA)]))


def test_the_mixin_renders_exactly_the_committed_rules_and_dashboards():
    mixin = render_mixin("local m = import 'mixin.libsonnet'; {rules: m.prometheusRules, alerts: m.prometheusAlerts, "
                         "dashboards: m.grafanaDashboards, config: m._config}")
    committed = yaml.safe_load(PROM_RULES.read_text())
    assert mixin["rules"]["groups"] + mixin["alerts"]["groups"] == committed["groups"]
    assert mixin["dashboards"] == {"viber-delivery-overview.json": json.loads(DASHBOARD.read_text())}
    assert set(mixin["config"]) >= {"selector", "aggregationLabels", "runbookURLPattern", "deliveryObjective",
                                    "latencyObjective", "latencyThreshold"}


def test_the_mixin_takes_a_stack_of_its_own_through_its_config():
    mixin = render_mixin("""local m = (import 'mixin.libsonnet') + {_config+:: {
        selector: 'job="kube-viber", namespace="messaging"', aggregationLabels: ['cluster'],
        runbookURLPattern: 'https://wiki.example/runbooks/%s', deliveryObjective: '0.995'}};
        {prometheusAlerts: m.prometheusAlerts, prometheusRules: m.prometheusRules}""")
    text = json.dumps(mixin["prometheusAlerts"]) + json.dumps(mixin["prometheusRules"])
    assert 'job=\\"kube-viber\\", namespace=\\"messaging\\"' in text and 'job=\\"viber-exporter\\"' not in text
    assert "by (cluster, provider)" in text and "by (cluster, namespace, job" not in text
    assert "(1 - 0.995)" in text
    urls = {r["annotations"]["runbook_url"] for g in mixin["prometheusAlerts"]["groups"] for r in g["rules"] if "alert" in r}
    assert urls == {f"https://wiki.example/runbooks/{name.lower()}" for name in ALERT_NAMES}
    # …and the Python side renders the same text for the same configuration.
    sys.path.insert(0, str(GRAFANA))
    import generate

    config = generate.StackConfig(selector='job="kube-viber", namespace="messaging"', aggregation=("cluster",),
                                  runbook_url_pattern="https://wiki.example/runbooks/%s", delivery_objective="0.995")
    python = generate.prometheus_rules(config)["groups"]
    assert python == mixin["prometheusRules"]["groups"] + mixin["prometheusAlerts"]["groups"]


@pytest.mark.e2e
def test_the_rules_for_another_job_name_and_clusters_alert_per_cluster(tmp_path):
    """The rules rendered for a ServiceMonitor's job name (not viber-exporter) fire for
    its series, keep cluster, namespace and job in every alert, and do not merge two
    clusters' instances of the same provider name."""
    tool = promtool()
    sys.path.insert(0, str(GRAFANA))
    import generate

    config = generate.StackConfig(selector='job="viber-exporter-svc"')
    (tmp_path / "rules.yml").write_text(generate.dump_yaml(generate.prometheus_rules(config), "rendered for a test"))
    series = []
    for cluster, up in (("eu", "1x30"), ("us", "1x30")):
        labels = f'job="viber-exporter-svc", namespace="messaging", cluster="{cluster}", instance="viber-0:9839"'
        series += [{"series": f"up{{{labels}}}", "values": up},
                   {"series": f'viber_provider_up{{{labels}, provider="routee"}}', "values": "0x30" if cluster == "eu" else "1x30"}]
    runbook = "https://github.com/viber-exporter/viber-exporter/blob/main/docs/runbooks.md#viberproviderdown"
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "10m", "alertname": "ViberProviderDown", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "cluster": "eu", "namespace": "messaging", "job": "viber-exporter-svc",
                           "provider": "routee"},
            "exp_annotations": {"summary": "Provider routee does not answer", "runbook_url": runbook,
                                "description": "The exporter's calls to routee have been failing (server errors, timeouts, refused connections, bad credentials, or answers that are mostly unreadable)."}}]},
            {"eval_time": "10m", "alertname": "ViberExporterAbsent", "exp_alerts": []}],
    }]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    result = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The default rules (job="viber-exporter") see none of it: that is ViberExporterAbsent.
    (tmp_path / "rules.yml").write_text(PROM_RULES.read_text())
    test["tests"][0]["alert_rule_test"] = [{"eval_time": "15m", "alertname": "ViberProviderDown", "exp_alerts": []}]
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    result = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_the_example_alertmanager_config_and_its_inhibitions_are_valid():
    amtool = shutil.which("amtool")
    if amtool is None:
        if REQUIRE_E2E:
            pytest.fail("amtool is required (VIBER_EXPORTER_REQUIRE_E2E=1): apt-get install prometheus-alertmanager")
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    config = GRAFANA / "alertmanager" / "alertmanager.yml"
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load(config.read_text())["inhibit_rules"]
    named = " ".join(str(rule) for rule in rules)
    for alert in ("ViberExporterDown", "ViberProviderDown", "ViberPollerStuck", "ViberProviderGarbage", "ViberPollLag",
                  "ViberDeliveryErrorBudgetSlowBurn"):
        assert alert in named, alert
    for alert in re.findall(r"Viber[A-Za-z]+", named):
        assert alert in ALERT_NAMES or alert in ("ViberDelivery", "ViberLatency"), alert


@pytest.mark.e2e
def test_the_slo_alerts_burn_per_declared_message_label(tmp_path):
    """With message_labels, each label combination's budget burns on its own: a spike
    of failed one-time passcodes pages for kind="otp" while marketing stays quiet."""
    tool = promtool()
    sys.path.insert(0, str(GRAFANA))
    import generate

    config = generate.StackConfig(message_labels=("kind",))
    rules = generate.prometheus_rules(config)
    assert "by (cluster, namespace, job, provider, kind)" in json.dumps(rules)
    (tmp_path / "rules.yml").write_text(generate.dump_yaml(rules, "rendered for a test"))
    labels = 'job="viber-exporter", instance="exp:9839", provider="bsg"'
    series = [{"series": f"up{{{labels.rsplit(', ', 1)[0]}}}", "values": "1x100"}]
    for kind, failed in (("otp", "0+0.05x60 3+10x40"), ("marketing", "0+0.05x100")):
        delivered = "0+9.95x60 597+0x40" if kind == "otp" else "0+9.95x100"
        series += [
            {"series": f'viber_message_status_transitions_total{{{labels}, status="delivered", kind="{kind}"}}', "values": delivered},
            {"series": f'viber_message_status_transitions_total{{{labels}, status="failed", kind="{kind}"}}', "values": failed},
            {"series": f'viber_message_status_transitions_total{{{labels}, status="expired", kind="{kind}"}}', "values": "0x100"},
            {"series": f'viber_message_failures_by_side_total{{{labels}, side="provider", kind="{kind}"}}', "values": failed},
            {"series": f'viber_message_failures_by_side_total{{{labels}, side="recipient", kind="{kind}"}}', "values": "0x100"},
        ]
    runbook = "https://github.com/viber-exporter/viber-exporter/blob/main/docs/runbooks.md#viberdeliveryerrorbudgetburn"
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "75m", "alertname": "ViberDeliveryErrorBudgetBurn", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "job": "viber-exporter", "provider": "bsg", "kind": "otp"},
            "exp_annotations": {"summary": "bsg burns its delivery success error budget fast", "runbook_url": runbook,
                                "description": "24.11% of the messages of bsg in the last hour failed on the provider's or the sender's side (recipient reasons such as not_viber_user are not counted): at this rate the 30-day error budget of the delivery success SLO (0.99) is gone in about two days."}}]}],
    }]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    result = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

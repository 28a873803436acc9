"""Generate the Grafana dashboard, Grafana-managed alert rules and Prometheus rules.

    python grafana/generate.py            # rewrite the generated files
    python grafana/generate.py --check    # exit 1 if a committed file differs

Every alert is defined once (``ALERTS``) and written twice: as a Prometheus alerting
rule and as a Grafana-managed rule whose query is the very same PromQL. Thresholds
live in ``THRESHOLDS``. Needs the ``test`` extra (grafana-foundation-sdk, PyYAML).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    VariableOption,
    VariableRefresh,
)

ROOT = Path(__file__).resolve().parent
DASHBOARD_UID = "viber-delivery-overview"
DATASOURCE_UID = "prometheus"  # the example datasource's uid; alerts need a concrete one
# Where docs/runbooks.md is published; change it to your copy and regenerate.
RUNBOOKS = "https://github.com/viber-exporter/viber-exporter/blob/main/docs/runbooks.md"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
P = 'provider=~"$provider"'

# -- every alert threshold, in one place --------------------------------------------------
THRESHOLDS = {
    "failure_ratio": 0.2,  # (failed + expired) / settled over 10 m
    "failure_min_settled": 20,  # … with at least this many settled messages, so one failure at night does not page
    "slow_delivery_p95_seconds": 300,
    "slow_delivery_min_delivered": 20,
    "poll_lag_seconds": 300,
    "cost_spike_factor": 3,  # spend in the last hour vs. the hourly average of the day before
    "cost_spike_min_amount": 1,
    "balance_horizon_hours": 24,  # page when the balance, at its pace of the last 6 h, runs out within this
}
T = THRESHOLDS

SETTLED = 'status=~"delivered|failed|expired"'
FAILED = 'status=~"failed|expired"'


@dataclass(frozen=True)
class Alert:
    """``expr`` is ``value condition [guard]``: the value is what the alert is about (and
    always returns data while the exporter is scraped), the guard a minimum volume."""

    name: str
    value: str
    condition: str
    guard: str
    duration: str
    severity: str
    summary: str
    description: str

    @property
    def expr(self) -> str:
        return f"{self.value} {self.condition}" + (f" and {self.guard}" if self.guard else "")

    @property
    def runbook(self) -> str:
        return f"{RUNBOOKS}#{self.name.lower()}"


RECORDING_RULES = {
    "viber:message_transitions:rate5m": "sum by (provider, status) (rate(viber_message_status_transitions_total[5m]))",
    "viber:message_settled:increase10m": f"sum by (provider) (increase(viber_message_status_transitions_total{{{SETTLED}}}[10m]))",
    "viber:message_failed:increase10m": f"sum by (provider) (increase(viber_message_status_transitions_total{{{FAILED}}}[10m]))",
    "viber:message_failure_ratio:ratio10m": "viber:message_failed:increase10m / viber:message_settled:increase10m",
    "viber:message_delivery_latency_seconds:p50_30m": "histogram_quantile(0.5, sum by (provider, le) (rate(viber_message_delivery_latency_seconds_bucket[30m])))",
    "viber:message_delivery_latency_seconds:p95_30m": "histogram_quantile(0.95, sum by (provider, le) (rate(viber_message_delivery_latency_seconds_bucket[30m])))",
    "viber:message_cost:increase1h": "sum by (provider, currency, channel) (increase(viber_message_cost_total[1h]))",
}

ALERTS = [
    Alert(
        "ViberFailureSpike",
        "viber:message_failure_ratio:ratio10m",
        f"> {T['failure_ratio']}",
        f"viber:message_settled:increase10m >= {T['failure_min_settled']}",
        "5m", "warning",
        "Many Viber messages of {{ $labels.provider }} fail",
        "{{ $value | humanizePercentage }} of the messages {{ $labels.provider }} settled in the last 10 minutes failed or expired.",
    ),
    Alert(
        "ViberSlowDelivery",
        "viber:message_delivery_latency_seconds:p95_30m",
        f"> {T['slow_delivery_p95_seconds']}",
        f"on (provider) sum by (provider) (increase(viber_message_delivery_latency_seconds_count[30m])) >= {T['slow_delivery_min_delivered']}",
        "15m", "warning",
        "Viber messages of {{ $labels.provider }} are delivered slowly",
        "95 % of the messages {{ $labels.provider }} delivered in the last 30 minutes took up to {{ $value | humanizeDuration }}.",
    ),
    Alert(
        "ViberProviderDown",
        "viber_provider_up",
        "== 0",
        "",
        "5m", "critical",
        "Provider {{ $labels.provider }} does not answer",
        "The exporter's calls to {{ $labels.provider }} have been failing (server errors, timeouts, refused connections or bad credentials).",
    ),
    Alert(
        "ViberPollLag",
        "viber_poll_lag_seconds",
        f"> {T['poll_lag_seconds']}",
        "",
        "10m", "warning",
        "Polling of {{ $labels.provider }} is behind schedule",
        "The most overdue poll of {{ $labels.provider }} is {{ $value | humanizeDuration }} late: statuses on the dashboard are stale.",
    ),
    Alert(
        "ViberCostSpike",
        "sum by (provider, currency) (viber:message_cost:increase1h)",
        f"> {T['cost_spike_factor']} * sum by (provider, currency) (increase(viber_message_cost_total[1d] offset 1h)) / 24",
        f"sum by (provider, currency) (viber:message_cost:increase1h) > {T['cost_spike_min_amount']}",
        "15m", "warning",
        "Viber spend of {{ $labels.provider }} jumped",
        "{{ $labels.provider }} spent {{ $value | printf \"%.2f\" }} {{ $labels.currency }} in the last hour, over {{ $labels.currency }} "
        f"{T['cost_spike_factor']} times the hourly average of the day before.",
    ),
    Alert(
        "ViberBalanceLow",
        f"predict_linear(viber_provider_balance[6h], {T['balance_horizon_hours']} * 3600)",
        "<= 0",
        "",
        "30m", "warning",
        "The {{ $labels.provider }} account runs out of credit",
        "At the pace of the last 6 hours, the {{ $labels.provider }} account ({{ $labels.currency }}) is empty within "
        f"{T['balance_horizon_hours']} hours; Routee answers UNSENT and BSG error 8 when it is.",
    ),
]


# -- dashboard ------------------------------------------------------------------------
def query(expr: str, legend: str = "", *, instant: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


_panel_ids = itertools.count(1)


def stat(title: str, unit: str, *queries: Dataquery, description: str = "") -> Stat:
    panel = Stat().id(next(_panel_ids)).title(title).unit(unit).datasource(DS).height(5).span(6)
    if description:
        panel = panel.description(description)
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def series(title: str, unit: str, *queries: Dataquery, width: int = 12) -> Timeseries:
    panel = Timeseries().id(next(_panel_ids)).title(title).unit(unit).datasource(DS).height(8).span(width).fill_opacity(10)
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def row(title: str) -> Row:
    return Row(title).id(next(_panel_ids))


def quantile(q: float, metric: str, window: str = "$__rate_interval") -> str:
    return f"histogram_quantile({q}, sum by (provider, le) (rate({metric}_bucket{{{P}}}[{window}])))"


def dashboard() -> DashboardBuilder:
    global _panel_ids
    _panel_ids = itertools.count(1)  # stable ids on every run
    transitions = "viber_message_status_transitions_total"
    up_thresholds = ThresholdsConfig().steps([Threshold(color="red", value=None), Threshold(color="green", value=1)])
    return (
        DashboardBuilder("Viber delivery overview")
        .uid(DASHBOARD_UID)
        .tags(["viber", "viber-exporter"])
        .refresh("1m")
        .time("now-6h", "now")
        .with_variable(
            DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
        )
        .with_variable(
            QueryVariable("provider").label("Provider").datasource(DS)
            .query("label_values(viber_provider_info, provider)")
            .multi(True).include_all(True).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_row(row("Overview"))
        .with_panel(stat("Messages by status now", "short", query(f"sum by (status) (viber_messages{{{P}}})", "{{status}}", instant=True)))
        .with_panel(stat(
            "Delivery success ratio", "percentunit",
            query(f'sum(increase({transitions}{{{P}, status="delivered"}}[$__range])) / sum(increase({transitions}{{{P}, {SETTLED}}}[$__range]))', instant=True),
            description="Delivered among settled (delivered, failed or expired) over the time range.",
        ))
        .with_panel(stat(
            "Delivery latency p50 / p95", "s",
            query(f"histogram_quantile(0.5, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p50", instant=True),
            query(f"histogram_quantile(0.95, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p95", instant=True),
        ))
        .with_panel(stat("Spend over the range", "none", query(f"sum by (currency) (increase(viber_message_cost_total{{{P}}}[$__range]))", "{{currency}}", instant=True)))
        .with_row(row("Messages"))
        .with_panel(series("Transitions by status", "short", query(f"sum by (status) (rate({transitions}{{{P}}}[$__rate_interval]))", "{{status}}")))
        .with_panel(series("Failure ratio", "percentunit", query(f"viber:message_failure_ratio:ratio10m{{{P}}}", "{{provider}}")))
        .with_panel(series("Failures by reason", "short", query(f"sum by (provider, reason) (rate(viber_message_failures_total{{{P}}}[$__rate_interval]))", "{{provider}} {{reason}}")))
        .with_panel(series(
            "Delivery and read latency", "s",
            query(quantile(0.5, "viber_message_delivery_latency_seconds"), "delivery p50 {{provider}}"),
            query(quantile(0.95, "viber_message_delivery_latency_seconds"), "delivery p95 {{provider}}"),
            query(quantile(0.5, "viber_message_read_latency_seconds"), "read p50 {{provider}}"),
            query(quantile(0.95, "viber_message_read_latency_seconds"), "read p95 {{provider}}"),
        ))
        .with_panel(series("Cost by provider, currency and channel", "none", query(f"sum by (provider, currency, channel) (rate(viber_message_cost_total{{{P}}}[$__rate_interval])) * 3600", "{{provider}} {{currency}} {{channel}} per hour")))
        .with_panel(series("SMS fallbacks", "short", query(f"sum by (provider) (rate(viber_message_sms_fallbacks_total{{{P}}}[$__rate_interval]))", "{{provider}}"), width=6))
        .with_panel(series("Watch expiries", "short", query(f"sum by (provider) (rate(viber_message_watch_expired_total{{{P}}}[$__rate_interval]))", "{{provider}}"), width=6))
        .with_row(row("Provider health"))
        .with_panel(series("Provider up", "short", query(f"viber_provider_up{{{P}}}", "{{provider}}"), width=8).thresholds(up_thresholds))
        .with_panel(series("Calls by outcome", "reqps", query(f"sum by (provider, outcome) (rate(viber_provider_requests_total{{{P}}}[$__rate_interval]))", "{{provider}} {{outcome}}"), width=8))
        .with_panel(series("Call latency p95", "s", query(quantile(0.95, "viber_provider_request_duration_seconds"), "{{provider}}"), width=8))
        .with_panel(series("Poll lag", "s", query(f"viber_poll_lag_seconds{{{P}}}", "{{provider}}")))
        .with_panel(series("Time since last success", "s", query(f"time() - viber_provider_last_success_timestamp_seconds{{{P}}}", "{{provider}}")))
    )


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard().build()) + "\n"


# -- rules ----------------------------------------------------------------------------
def prometheus_rules() -> dict[str, Any]:
    return {"groups": [
        {"name": "viber-exporter.recording", "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES.items()]},
        {"name": "viber-exporter.alerts", "rules": [
            {"alert": a.name, "expr": a.expr, "for": a.duration, "labels": {"severity": a.severity},
             "annotations": {"summary": a.summary, "description": a.description, "runbook_url": a.runbook}}
            for a in ALERTS
        ]},
    ]}


def grafana_rule(alert: Alert) -> dict[str, Any]:
    """A Grafana-managed twin: query A is the Prometheus expression itself, which returns
    series only while the alert condition holds; C fires for any series A returns (every
    expression here yields non-negative values)."""
    grafana_expr = alert.expr
    for name, expr in RECORDING_RULES.items():  # Grafana cannot rely on recording rules being loaded
        grafana_expr = grafana_expr.replace(name, f"({expr})")
    return {
        "uid": f"viber-{alert.name.removeprefix('Viber').lower()}",
        "title": alert.name,
        "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": 600, "to": 0}, "datasourceUid": DATASOURCE_UID,
             "model": {"refId": "A", "expr": grafana_expr, "instant": True, "intervalMs": 60000, "maxDataPoints": 43200}},
            {"refId": "C", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
             "model": {"refId": "C", "type": "threshold", "expression": "A",
                       "conditions": [{"evaluator": {"type": "gt", "params": [-1]}}]}},
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": alert.duration,
        "labels": {"severity": alert.severity},
        "annotations": {"summary": alert.summary, "description": alert.description, "runbook_url": alert.runbook},
    }


def grafana_alerts() -> dict[str, Any]:
    return {"apiVersion": 1, "groups": [
        {"orgId": 1, "name": "viber-exporter", "folder": "Viber", "interval": "1m", "rules": [grafana_rule(a) for a in ALERTS]},
    ]}


def dump_yaml(data: Any, header: str) -> str:
    return f"# {header}\n# Generated by grafana/generate.py; edit the generator, not this file.\n" + yaml.safe_dump(
        data, sort_keys=False, width=1000, allow_unicode=True
    )


def outputs() -> dict[str, str]:
    return {
        "dashboards/viber-delivery-overview.json": dashboard_json(),
        "prometheus/viber-exporter.rules.yml": dump_yaml(prometheus_rules(), "Prometheus recording and alerting rules for viber-exporter."),
        "provisioning/alerting/viber-exporter.yaml": dump_yaml(grafana_alerts(), "Grafana-managed alert rules for viber-exporter (file provisioning)."),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on any difference")
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write (default: grafana/)")
    args = parser.parse_args(argv)
    stale = []
    for relative, text in outputs().items():
        path = args.out / relative
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current != text:
                stale.append(relative)
                sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), relative, relative, n=1))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

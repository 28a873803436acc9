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
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import (
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
)

ROOT = Path(__file__).resolve().parent
DASHBOARD_UID = "viber-delivery-overview"
DATASOURCE_UID = "prometheus"  # the example datasource's uid; alerts need a concrete one
# Where docs/runbooks.md is published; change it to your copy and regenerate.
RUNBOOKS = "https://github.com/viber-exporter/viber-exporter/blob/main/docs/runbooks.md"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")

# -- every alert threshold, in one place --------------------------------------------------
THRESHOLDS = {
    # provider-side failures (recipient reasons such as not_viber_user left out) / settled, 10 m
    "failure_ratio": 0.2,
    "failure_min_settled": 50,  # … with at least this many settled, so a handful cannot page
    "slow_delivery_p95_seconds": 300,
    "slow_delivery_min_delivered": 20,
    "poll_lag_seconds": 300,
    "stalled_share": 0.1,  # settled in 30 m below this share of what was accepted 30 m before
    "stalled_min_accepted": 20,
    "garbage_share": 0.5,  # unreadable answers among the provider's answers, 10 m
    "garbage_min_calls": 20,
    "watched_share": 0.9,  # of polling.max_watched
    "cost_spike_factor": 3,  # spend in the last hour vs. the same hour yesterday and a week ago
    "cost_spike_min_amount": 1,
    # Optional absolute budget per provider and currency per hour (None: no budget alert).
    "cost_hourly_budget": None,
    "balance_horizon_hours": 24,  # warn when the balance, at its pace of the last 6 h, runs out within this
}
T = THRESHOLDS
JOB = "viber-exporter"  # the scrape job's name (grafana/prometheus/prometheus.yml)
UP = f'up{{job="{JOB}"}}'

SETTLED = 'status=~"delivered|failed|expired"'
FAILED = 'status=~"failed|expired"'
TRANSITIONS = "viber_message_status_transitions_total"
REQUESTS = "viber_provider_requests_total"
PROVIDER_SIDE = 'viber_message_failures_by_side_total{side="provider"}'
ACCEPTED = 'viber_watch_registrations_total{outcome="accepted"}'
FULL = 'viber_watch_registrations_total{outcome="full"}'
INVALID = f'{REQUESTS}{{outcome="invalid_response"}}'
PROGRESS = f'{TRANSITIONS}{{status=~"delivered|read|failed|expired"}}'


def live(expr: str) -> str:
    """Only the series of exporters Prometheus scrapes now: when one dies, its frozen
    counters drop out of every rate, ratio and sum at once (no alert from stale data)."""
    return f"({expr} and on (instance) {UP} == 1)"


@dataclass(frozen=True)
class Alert:
    """``expr`` is ``value condition [and guard …]``: the value is what the alert is about,
    the guards a minimum volume or a second condition. ``value_format`` says how the
    description shows the value (Prometheus and Grafana template it differently)."""

    name: str
    value: str
    condition: str
    guards: tuple[str, ...]
    duration: str
    severity: str
    summary: str
    description: str  # with {value} where the value goes
    value_format: str = "plain"  # plain, percent, duration or number
    no_data: str = "OK"  # Grafana's noDataState (see grafana_rule)
    exec_error: str = "Error"  # Grafana's execErrState

    @property
    def expr(self) -> str:
        return " and ".join([f"{self.value} {self.condition}", *self.guards])

    @property
    def runbook(self) -> str:
        return f"{RUNBOOKS}#{self.name.lower()}"

    def describe(self, flavour: str) -> str:
        """The description as Prometheus (``$value``) or Grafana (``$values.A.Value``,
        since Grafana's ``$value`` is a string) templates it."""
        value = "$value" if flavour == "prometheus" else "$values.A.Value"
        shown = {
            "plain": f"{{{{ {value} }}}}",
            "percent": f"{{{{ humanizePercentage {value} }}}}",
            "duration": f"{{{{ humanizeDuration {value} }}}}",
            "number": f'{{{{ printf "%.2f" {value} }}}}',
        }[self.value_format]
        return self.description.replace("{value}", shown)


RECORDING_RULES = {
    "viber:message_settled:increase10m": f"sum by (provider) ({live(f'increase({TRANSITIONS}{{{SETTLED}}}[10m])')})",
    "viber:message_provider_failures:increase10m": (
        f"sum by (provider) ({live(f'increase({PROVIDER_SIDE}[10m])')})"
    ),
    "viber:message_provider_failure_ratio:ratio10m": (
        "viber:message_provider_failures:increase10m / viber:message_settled:increase10m"
    ),
    "viber:message_delivery_latency_seconds:p95_30m": (
        f"histogram_quantile(0.95, sum by (provider, le) ({live('rate(viber_message_delivery_latency_seconds_bucket[30m])')}))"
    ),
}

COST_1H = f"sum by (provider, currency) ({live('increase(viber_message_cost_total[1h])')})"
ACCEPTED_BEFORE = f"sum by (provider) ({live(f'increase({ACCEPTED}[30m] offset 30m)')})"

ALERTS = [
    Alert(
        "ViberExporterDown", UP, "== 0", (), "5m", "critical",
        "viber-exporter at {{ $labels.instance }} does not answer scrapes",
        "Prometheus has not been able to scrape {{ $labels.instance }} for 5 minutes: its numbers are frozen and no alert below can fire for it.",
        exec_error="Alerting",
    ),
    Alert(
        "ViberExporterAbsent", f"absent({UP})", "== 1", (), "10m", "critical",
        "No viber-exporter is being scraped",
        f'Prometheus has no target of job "{JOB}" at all (removed from the configuration, or service discovery lost it).',
        exec_error="Alerting",
    ),
    Alert(
        "ViberPollingStalled", f"max by (provider) ({live('viber_poll_lag_seconds')})", "> 0",
        (f"sum by (provider) ({live(f'increase({REQUESTS}[15m])')}) == 0",),
        "5m", "critical",
        "Polling of {{ $labels.provider }} has stopped",
        "Messages of {{ $labels.provider }} are due ({value} behind) but the exporter made no call to the provider in 15 minutes: the data is stale.",
        value_format="duration",
    ),
    Alert(
        "ViberFailureSpike", "viber:message_provider_failure_ratio:ratio10m", f"> {T['failure_ratio']}",
        (f"viber:message_settled:increase10m >= {T['failure_min_settled']}",),
        "5m", "warning",
        "Many Viber messages of {{ $labels.provider }} fail on the provider's side",
        "{value} of the messages {{ $labels.provider }} settled in the last 10 minutes failed for reasons on the provider's or the sender's side (recipient reasons such as not_viber_user are not counted).",
        value_format="percent",
    ),
    Alert(
        "ViberSlowDelivery", "viber:message_delivery_latency_seconds:p95_30m", f"> {T['slow_delivery_p95_seconds']}",
        (f"on (provider) sum by (provider) ({live('increase(viber_message_delivery_latency_seconds_count[30m])')}) >= {T['slow_delivery_min_delivered']}",),
        "15m", "warning",
        "Viber messages of {{ $labels.provider }} are delivered slowly",
        "95 % of the messages {{ $labels.provider }} delivered in the last 30 minutes took up to {value}.",
        value_format="duration",
    ),
    Alert(
        "ViberDeliveriesStalled",
        f"sum by (provider) ({live(f'increase({PROGRESS}[30m])')})",
        f"< {T['stalled_share']} * {ACCEPTED_BEFORE}",
        (f"{ACCEPTED_BEFORE} >= {T['stalled_min_accepted']}",),
        "10m", "warning",
        "Messages of {{ $labels.provider }} are accepted but not delivered",
        "Only {value} messages of {{ $labels.provider }} reached a status in the last 30 minutes, against the many registered in the 30 minutes before: deliveries have stalled.",
    ),
    Alert(
        "ViberProviderDown", f"max by (provider) ({live('viber_provider_up')})", "== 0", (), "5m", "critical",
        "Provider {{ $labels.provider }} does not answer",
        "The exporter's calls to {{ $labels.provider }} have been failing (server errors, timeouts, refused connections, bad credentials, or answers that are mostly unreadable).",
        exec_error="Alerting",
    ),
    Alert(
        "ViberProviderGarbage",
        f"sum by (provider) ({live(f'rate({INVALID}[10m])')}) / sum by (provider) ({live(f'rate({REQUESTS}[10m])')})",
        f"> {T['garbage_share']}",
        (f"sum by (provider) ({live(f'increase({REQUESTS}[10m])')}) >= {T['garbage_min_calls']}",),
        "5m", "warning",
        "Provider {{ $labels.provider }} answers garbage",
        "{value} of the answers of {{ $labels.provider }} in the last 10 minutes could not be read (an error page with HTTP 200, a changed format): nothing settles from them.",
        value_format="percent",
    ),
    Alert(
        "ViberNoPoller", f"max by (provider) ({live('viber_exporter_leader')})", "== 0", (), "2m", "critical",
        "No replica polls {{ $labels.provider }}",
        "Every running replica says it does not poll {{ $labels.provider }}: none holds its polling lease (the shared database is unreachable, or the leases cannot be renewed). Its messages' statuses are not updated.",
        exec_error="Alerting",
    ),
    Alert(
        "ViberPollerConflict", f"sum by (provider) ({live('viber_exporter_leader')})", "> 1", (), "5m", "warning",
        "Several replicas poll {{ $labels.provider }} at once",
        "{value} replicas believe they poll {{ $labels.provider }}: the provider's rate limit is spent more than once (counts stay right, every change locks its row). Check that every replica uses the same exporter.state_url.",
    ),
    Alert(
        "ViberPollLag", f"max by (provider) ({live('viber_poll_lag_seconds')})", f"> {T['poll_lag_seconds']}", (),
        "10m", "warning",
        "Polling of {{ $labels.provider }} is behind schedule",
        "The most overdue poll of {{ $labels.provider }} is {value} late: statuses on the dashboard are stale.",
        value_format="duration",
    ),
    Alert(
        "ViberWatchedSetNearlyFull",
        f"sum ({live('viber_messages_watched')}) / max ({live('viber_exporter_max_watched')})",
        f"> {T['watched_share']}", (), "15m", "warning",
        "The watched set is nearly full",
        "{value} of polling.max_watched is in use: registrations will soon be refused with HTTP 429.",
        value_format="percent",
    ),
    Alert(
        "ViberRegistrationsRefused",
        f"sum by (provider) ({live(f'increase({FULL}[10m])')})",
        "> 0", (), "0m", "critical",
        "Registrations for {{ $labels.provider }} are refused",
        "{value} registrations for {{ $labels.provider }} were refused in the last 10 minutes because the watched set is full (polling.max_watched): those messages are not followed.",
        value_format="number",
    ),
    Alert(
        "ViberReloadFailed", f"max by (instance) ({live('viber_exporter_config_last_reload_successful')})", "== 0", (),
        "1m", "warning",
        "A configuration reload of {{ $labels.instance }} failed",
        "The last reload of {{ $labels.instance }} was refused (its problems are in the exporter's log); it runs on its previous configuration, and a restart would fail the same way.",
    ),
    Alert(
        "ViberCostSpike", COST_1H,
        f"> {T['cost_spike_factor']} * sum by (provider, currency) (increase(viber_message_cost_total[1h] offset 1d))",
        (f"{COST_1H} > {T['cost_spike_factor']} * sum by (provider, currency) (increase(viber_message_cost_total[1h] offset 7d))",
         f"{COST_1H} > {T['cost_spike_min_amount']}"),
        "15m", "warning",
        "Viber spend of {{ $labels.provider }} jumped",
        "{{ $labels.provider }} spent {value} {{ $labels.currency }} in the last hour, over "
        f"{T['cost_spike_factor']} times the same hour yesterday and a week ago.",
        value_format="number",
    ),
    Alert(
        "ViberBalanceLow",
        # over the replicas first: the leader, which reads the balance, may change
        f"predict_linear(max by (provider, currency) (viber_provider_balance)[6h:5m], {T['balance_horizon_hours']} * 3600)",
        "<= 0", (), "30m", "warning",
        "The {{ $labels.provider }} account runs out of credit",
        "At the pace of the last 6 hours, the {{ $labels.provider }} account ({{ $labels.currency }}) is empty within "
        f"{T['balance_horizon_hours']} hours; Routee answers UNSENT and BSG error 8 when it is.",
    ),
]
if T["cost_hourly_budget"] is not None:
    ALERTS.append(Alert(
        "ViberCostOverBudget", COST_1H, f"> {T['cost_hourly_budget']}", (), "5m", "warning",
        "Viber spend of {{ $labels.provider }} is over budget",
        "{{ $labels.provider }} spent {value} {{ $labels.currency }} in the last hour, over the hourly budget "
        f"of {T['cost_hourly_budget']}.",
        value_format="number",
    ))


def inline(expr: str) -> str:
    """``expr`` with every recording rule replaced by its definition, recursively, so it
    needs none of our rules loaded (a Grafana alert, a dashboard without the rule file)."""
    changed = True
    while changed:
        changed = False
        for name, definition in RECORDING_RULES.items():
            pattern = re.compile(rf"(?<![\w:]){re.escape(name)}(?![\w:])")
            if pattern.search(expr):
                expr = pattern.sub(f"({definition})".replace("\\", "\\\\"), expr)
                changed = True
    return expr


# -- dashboard ------------------------------------------------------------------------
# Every query filters on both variables; a query over counters of several exporters
# (replicas) sums them, a gauge exported by one of them is read with max.
P = 'provider=~"$provider", instance=~"$instance"'
INSTANCE = 'instance=~"$instance"'


def query(expr: str, legend: str = "", *, instant: bool = False, exemplar: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if exemplar:
        q = q.exemplar(True)
    return q.instant() if instant else q.range()


_panel_ids = itertools.count(1)


def steps(*pairs: tuple[str, float | None]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(color=c, value=v) for c, v in pairs])


NEUTRAL = steps(("blue", None))  # counts and spend: no "bad" level


def runbook_link(alert: str) -> DashboardLink:
    return DashboardLink(f"Runbook: {alert}").url(f"{RUNBOOKS}#{alert.lower()}").target_blank(True)


def stat(title: str, unit: str, *queries: Dataquery, description: str = "",
         thresholds: ThresholdsConfig = NEUTRAL, runbook: str = "") -> Stat:
    panel = (Stat().id(next(_panel_ids)).title(title).unit(unit).datasource(DS).height(5).span(6)
             .thresholds(thresholds))
    if description:
        panel = panel.description(description)
    if runbook:
        panel = panel.links([runbook_link(runbook)])
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def series(title: str, unit: str, *queries: Dataquery, width: int = 12, description: str = "",
           alert_at: float | None = None, thresholds: ThresholdsConfig | None = None, runbook: str = "") -> Timeseries:
    """A time series; ``alert_at`` draws the alert's threshold as a dashed line."""
    panel = (Timeseries().id(next(_panel_ids)).title(title).unit(unit).datasource(DS).height(8).span(width)
             .fill_opacity(10))
    if description:
        panel = panel.description(description)
    if alert_at is not None:
        panel = (panel.thresholds(steps(("green", None), ("red", alert_at)))
                 .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)))
    elif thresholds is not None:
        panel = panel.thresholds(thresholds)
    else:
        panel = panel.thresholds(NEUTRAL)
    if runbook:
        panel = panel.links([runbook_link(runbook)])
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
    up_thresholds = steps(("red", None), ("green", 1))
    ratio_good = steps(("red", None), ("orange", 0.8), ("green", 0.9))
    provider_failures = f'sum by (provider) (rate(viber_message_failures_by_side_total{{{P}, side="provider"}}[$__rate_interval]))'
    settled_rate = f"sum by (provider) (rate({TRANSITIONS}{{{P}, {SETTLED}}}[$__rate_interval]))"
    return (
        DashboardBuilder("Viber delivery overview")
        .uid(DASHBOARD_UID)
        .tags(["viber", "viber-exporter"])
        .refresh("1m")
        .time("now-6h", "now")
        .links([DashboardLink("Runbooks").url(RUNBOOKS).target_blank(True)])
        .with_variable(
            DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
        )
        .with_variable(
            QueryVariable("instance").label("Exporter").datasource(DS)
            .query("label_values(viber_exporter_build_info, instance)")
            .multi(True).include_all(True).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_variable(
            QueryVariable("provider").label("Provider").datasource(DS)
            .query(f"label_values(viber_provider_info{{{INSTANCE}}}, provider)")
            .multi(True).include_all(True).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_row(row("Overview"))
        .with_panel(stat(
            "Messages in the store by status", "short",
            query(f"sum by (status) (max by (provider, status) (viber_messages{{{P}}}))", "{{status}}", instant=True),
            description="Every message the store holds now, watched or settled (settled ones are kept for polling.retention).",
        ))
        .with_panel(stat(
            "Delivery success ratio", "percentunit",
            query(f'sum(increase({TRANSITIONS}{{{P}, status="delivered"}}[$__range])) / sum(increase({TRANSITIONS}{{{P}, {SETTLED}}}[$__range]))', instant=True),
            description="Delivered among settled (delivered, failed or expired) over the time range.",
            thresholds=ratio_good,
        ))
        .with_panel(stat(
            "Delivery latency p50 / p95", "s",
            query(f"histogram_quantile(0.5, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p50", instant=True),
            query(f"histogram_quantile(0.95, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p95", instant=True),
            thresholds=steps(("green", None), ("red", T["slow_delivery_p95_seconds"])), runbook="ViberSlowDelivery",
        ))
        .with_panel(stat("Spend over the range", "none", query(f"sum by (currency) (increase(viber_message_cost_total{{{P}}}[$__range]))", "{{currency}}", instant=True)))
        .with_row(row("Messages"))
        .with_panel(series("Transitions by status", "short", query(f"sum by (status) (rate({TRANSITIONS}{{{P}}}[$__rate_interval]))", "{{status}}"),
                           description="Messages entering each status, per second."))
        .with_panel(series(
            "Provider-side failure ratio", "percentunit",
            query(f"{provider_failures} / {settled_rate}", "{{provider}}"),
            description="Failures for reasons on the provider's or sender's side among settled messages (recipient reasons such as not_viber_user left out); the line is ViberFailureSpike's threshold.",
            alert_at=T["failure_ratio"], runbook="ViberFailureSpike",
        ))
        .with_panel(series("Failures by reason", "short", query(f"sum by (provider, reason) (rate(viber_message_failures_total{{{P}}}[$__rate_interval]))", "{{provider}} {{reason}}"),
                           description="Messages per second ending failed or expired, by reason."))
        .with_panel(series(
            "Delivery and read latency", "s",
            query(quantile(0.5, "viber_message_delivery_latency_seconds"), "delivery p50 {{provider}}", exemplar=True),
            query(quantile(0.95, "viber_message_delivery_latency_seconds"), "delivery p95 {{provider}}", exemplar=True),
            query(quantile(0.5, "viber_message_read_latency_seconds"), "read p50 {{provider}}", exemplar=True),
            query(quantile(0.95, "viber_message_read_latency_seconds"), "read p95 {{provider}}", exemplar=True),
            description="Exemplars link a point to one message (message_id): open it with /api/v1/messages/<provider>/<id>.",
            alert_at=T["slow_delivery_p95_seconds"], runbook="ViberSlowDelivery",
        ))
        .with_panel(series("Cost by provider, currency and channel", "none", query(f"sum by (provider, currency, channel) (rate(viber_message_cost_total{{{P}}}[$__rate_interval])) * 3600", "{{provider}} {{currency}} {{channel}} per hour"),
                           runbook="ViberCostSpike"))
        .with_panel(series("SMS fallbacks", "short", query(f"sum by (provider) (rate(viber_message_sms_fallbacks_total{{{P}}}[$__rate_interval]))", "{{provider}}"), width=6,
                           description="Messages re-sent as SMS, per second."))
        .with_panel(series("Watch expiries", "short", query(f"sum by (provider) (rate(viber_message_watch_expired_total{{{P}}}[$__rate_interval]))", "{{provider}}"), width=6,
                           description="Messages that reached max_age without a final status, per second."))
        .with_row(row("Provider health"))
        .with_panel(series("Provider up", "short", query(f"max by (provider) (viber_provider_up{{{P}}})", "{{provider}}"), width=8,
                           thresholds=up_thresholds, runbook="ViberProviderDown")
                    .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.AREA)))
        .with_panel(series("Calls by outcome", "reqps", query(f"sum by (provider, outcome) (rate({REQUESTS}{{{P}}}[$__rate_interval]))", "{{provider}} {{outcome}}"), width=8,
                           runbook="ViberProviderGarbage"))
        .with_panel(series("Call latency p95", "s", query(quantile(0.95, "viber_provider_request_duration_seconds"), "{{provider}}"), width=8))
        .with_panel(series("Poll lag", "s", query(f"max by (provider) (viber_poll_lag_seconds{{{P}}})", "{{provider}}"),
                           alert_at=T["poll_lag_seconds"], runbook="ViberPollLag"))
        .with_panel(series(
            "Time since last success", "s",
            query(f"time() - max by (provider) (viber_provider_last_success_timestamp_seconds{{{P}}} > 0)", "{{provider}}"),
            description="Empty for a provider that never answered yet.",
        ))
        .with_panel(series(
            "Calls per settled message", "short",
            query(f"sum by (provider) (increase({REQUESTS}{{{P}}}[1h])) / sum by (provider) (increase({TRANSITIONS}{{{P}, {SETTLED}}}[1h]))", "{{provider}}"),
            description="Provider calls in the last hour per message settled in it: what following a message costs against the rate limit.",
        ))
        .with_panel(series("Oldest pending message", "s", query(f"max by (provider) (viber_oldest_pending_seconds{{{P}}})", "{{provider}}"),
                           description="Age of the oldest message the provider has not delivered, failed or expired yet.",
                           runbook="ViberDeliveriesStalled"))
        .with_panel(stat("Provider balance", "none", query(f"max by (provider, currency) (viber_provider_balance{{{P}}})", "{{provider}} {{currency}}", instant=True),
                         description="As the provider reports it (credentials check, every 5 minutes).",
                         thresholds=steps(("red", None), ("orange", 0), ("green", 10)), runbook="ViberBalanceLow"))
        .with_row(row("Exporter health"))
        .with_panel(stat("Exporters up", "short", query(f'sum({UP.replace("}", ", " + INSTANCE + "}")})', instant=True),
                         thresholds=steps(("red", None), ("green", 1)), runbook="ViberExporterDown"))
        .with_panel(stat("Polling replica", "none",
                         query(f"max by (provider, instance) (viber_exporter_leader{{{P}}}) == 1", "{{provider}}: {{instance}}", instant=True),
                         description="The replica that polls each provider instance (several replicas on PostgreSQL share the work; one exporter polls them all).",
                         runbook="ViberNoPoller"))
        .with_panel(stat("Version", "none", query(f"count by (version) (viber_exporter_build_info{{{INSTANCE}}})", "{{version}}", instant=True)))
        .with_panel(stat("Last reload successful", "bool_yes_no", query(f"min(viber_exporter_config_last_reload_successful{{{INSTANCE}}})", instant=True),
                         thresholds=steps(("red", None), ("green", 1)), runbook="ViberReloadFailed"))
        .with_panel(stat("Watched / max_watched", "percentunit",
                         query(f"sum(max by (provider) (viber_messages_watched{{{P}}})) / max(viber_exporter_max_watched{{{INSTANCE}}})", instant=True),
                         thresholds=steps(("green", None), ("orange", 0.75), ("red", T["watched_share"])), runbook="ViberWatchedSetNearlyFull"))
        .with_panel(series("Watched backlog", "short", query(f"max by (provider) (viber_messages_watched{{{P}}})", "{{provider}}"),
                           description="Messages still being polled."))
        .with_panel(series(
            "Registrations and callbacks by outcome", "ops",
            query(f"sum by (provider, outcome) (rate(viber_watch_registrations_total{{{P}}}[$__rate_interval]))", "registrations {{provider}} {{outcome}}"),
            query(f"sum by (provider, outcome) (rate(viber_callbacks_total{{{P}}}[$__rate_interval]))", "callbacks {{provider}} {{outcome}}"),
            runbook="ViberRegistrationsRefused",
        ))
    )


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard().build()) + "\n"


# -- rules ----------------------------------------------------------------------------
def prometheus_rules() -> dict[str, Any]:
    return {"groups": [
        {"name": "viber-exporter.recording", "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES.items()]},
        {"name": "viber-exporter.alerts", "rules": [
            {"alert": a.name, "expr": a.expr, "for": a.duration, "labels": {"severity": a.severity},
             "annotations": {"summary": a.summary, "description": a.describe("prometheus"), "runbook_url": a.runbook}}
            for a in ALERTS
        ]},
    ]}


def grafana_rule(alert: Alert) -> dict[str, Any]:
    """A Grafana-managed twin that stands alone: query A is the Prometheus expression with
    every recording rule inlined (Grafana cannot count on our rule file being loaded),
    and returns series only while the alert condition holds; C fires for any series A
    returns. No data therefore means "all is well" (``noDataState: OK``; a Prometheus
    that lost the exporter altogether is ViberExporterAbsent's business), and a query
    that cannot be evaluated raises Grafana's own error alert (``execErrState: Error``),
    except for the critical alerts, which page (``Alerting``) rather than stay silent."""
    return {
        "uid": f"viber-{alert.name.removeprefix('Viber').lower()}",
        "title": alert.name,
        "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": 600, "to": 0}, "datasourceUid": DATASOURCE_UID,
             "model": {"refId": "A", "expr": inline(alert.expr), "instant": True, "intervalMs": 60000, "maxDataPoints": 43200}},
            {"refId": "C", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
             "model": {"refId": "C", "type": "threshold", "expression": "A",
                       "conditions": [{"evaluator": {"type": "gt", "params": [-1e300]}}]}},
        ],
        "noDataState": alert.no_data,
        "execErrState": alert.exec_error,
        "for": alert.duration,
        "labels": {"severity": alert.severity},
        "annotations": {"summary": alert.summary, "description": alert.describe("grafana"), "runbook_url": alert.runbook},
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

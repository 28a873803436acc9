"""The Grafana dashboard "Viber delivery overview", as code (grafana-foundation-sdk).

Every query filters on the dashboard's variables — ``cluster``, ``job``, ``instance``
and ``provider`` — so the dashboard works whatever the scrape job is called and however
many clusters a central Prometheus holds; a query over counters of several exporters
(replicas) sums them, a gauge one of them exports is read with ``max``. Panels are laid
out explicitly on the 24-column grid.
"""

from __future__ import annotations

import itertools
from typing import TypeVar

import viber_rules as rules
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import (
    AdHocVariable,
    AnnotationQuery,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    TextBoxVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.statetimeline import Panel as StateTimeline
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, VisibilityMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    GridPos,
    Panel,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
)

DASHBOARD_UID = "viber-delivery-overview"
DATASOURCE_UID = "prometheus"  # the example datasource's uid; alerts need a concrete one
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
ALL = VariableOption(selected=True, text="All", value="$__all")

# Every query of the exporter's series carries these matchers.
SCOPE = 'cluster=~"$cluster", job=~"$job", instance=~"$instance"'
P = f'{SCOPE}, provider=~"$provider"'
TRANSITIONS = rules.TRANSITIONS
REQUESTS = rules.REQUESTS
SETTLED = 'status=~"delivered|failed|expired"'


def query(expr: str, legend: str = "", *, instant: bool = False, exemplar: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if exemplar:
        q = q.exemplar(True)
    return q.instant() if instant else q.range()


def steps(*pairs: tuple[str, float | None]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(color=c, value=v) for c, v in pairs])


NEUTRAL = steps(("blue", None))  # counts and spend: no "bad" level


def runbook_link(alert: str) -> DashboardLink:
    return DashboardLink(f"Runbook: {alert}").url(rules.DEFAULT.runbook_url_pattern % alert.lower()).target_blank(True)


class Grid:
    """Places panels left to right on the 24-column grid, starting a new line when a
    panel does not fit (the SDK's own placement let one run past column 24)."""

    def __init__(self) -> None:
        self.x = self.y = self.line = 0
        self.ids = itertools.count(1)

    def place(self, width: int, height: int) -> GridPos:
        if self.x + width > 24:
            self.x, self.y, self.line = 0, self.y + self.line, 0
        pos = GridPos(h=height, w=width, x=self.x, y=self.y)
        self.x += width
        self.line = max(self.line, height)
        return pos

    def row(self, title: str) -> Row:
        self.x, self.y, self.line = 0, self.y + self.line, 0
        pos = self.place(24, 1)
        self.x, self.y, self.line = 0, self.y + 1, 0
        return Row(title).id(next(self.ids)).grid_pos(pos)


GRID = Grid()


PanelT = TypeVar("PanelT", Stat, Timeseries, StateTimeline)


def _finish(panel: PanelT, width: int, height: int, queries: tuple[Dataquery, ...], description: str, runbook: str) -> PanelT:
    panel = panel.id(next(GRID.ids)).datasource(DS).grid_pos(GRID.place(width, height))
    if description:
        panel = panel.description(description)
    if runbook:
        panel = panel.links([runbook_link(runbook)])
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def stat(title: str, unit: str, *queries: Dataquery, width: int = 6, description: str = "",
         thresholds: ThresholdsConfig = NEUTRAL, runbook: str = "", decimals: int | None = None) -> Stat:
    panel = Stat().title(title).unit(unit).thresholds(thresholds)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return _finish(panel, width, 5, queries, description, runbook)


def series(title: str, unit: str, *queries: Dataquery, width: int = 12, description: str = "",
           alert_at: float | None = None, runbook: str = "", decimals: int | None = None) -> Timeseries:
    """A time series; ``alert_at`` draws the alert's threshold as a dashed line (and
    nothing is shaded: a healthy plot stays uncoloured)."""
    panel = Timeseries().title(title).unit(unit).fill_opacity(10)
    if alert_at is not None:
        panel = (panel.thresholds(steps(("green", None), ("red", alert_at)))
                 .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)))
    else:
        panel = panel.thresholds(NEUTRAL)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return _finish(panel, width, 8, queries, description, runbook)


def states(title: str, *queries: Dataquery, mapping: dict[str, tuple[str, str]], width: int = 12,
           description: str = "", runbook: str = "") -> StateTimeline:
    """A state timeline: each value shown by name and colour (e.g. 1 Up green, 0 Down red)."""
    options = {value: ValueMappingResult(text=text, color=color) for value, (text, color) in mapping.items()}
    panel = (StateTimeline().title(title).unit("none").thresholds(NEUTRAL)
             .mappings([ValueMap(options=options)]).show_value(VisibilityMode.NEVER))
    return _finish(panel, width, 8, queries, description, runbook)


class AlertList(Builder[Panel]):
    """Grafana's alert list panel (the SDK has no builder for it): the firing and
    pending alerts of this dashboard's rules, by their folder."""

    def __init__(self, title: str, width: int, height: int) -> None:
        self.panel = Panel(type_val="alertlist", title=title, id_val=next(GRID.ids), grid_pos=GRID.place(width, height),
                           options={"viewMode": "list", "groupMode": "default", "maxItems": 20, "sortOrder": 1,
                                    "dashboardAlerts": False, "alertName": "Viber", "alertInstanceLabelFilter": "",
                                    "stateFilter": {"firing": True, "pending": True, "normal": False, "error": True,
                                                    "noData": False}})

    def build(self) -> Panel:
        return self.panel


def quantile(q: float, metric: str, window: str = "$__rate_interval") -> str:
    return f"histogram_quantile({q}, sum by (provider, le) (rate({metric}_bucket{{{P}}}[{window}])))"


def variable(name: str, label: str, query_text: str) -> QueryVariable:
    # ".*" for All: it also matches series without the label (a Prometheus without
    # clusters has no cluster label at all)
    return (QueryVariable(name).label(label).datasource(DS).query(query_text)
            .multi(True).include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).current(ALL))


def annotation(name: str, expr: str, colour: str) -> AnnotationQuery:
    return (AnnotationQuery().name(name).datasource(DS).enable(True).icon_color(colour)
            .expr(expr).type("prometheus"))


def dashboard() -> DashboardBuilder:
    global GRID
    GRID = Grid()  # stable ids and positions on every run
    up_mapping = {"1": ("Up", "green"), "0": ("Down", "red")}
    ratio_good = steps(("red", None), ("orange", 0.8), ("green", 0.9))
    provider_failures_10m = f'sum by (provider) (increase(viber_message_failures_by_side_total{{{P}, side="provider"}}[10m]))'
    settled_10m = f"sum by (provider) (increase({TRANSITIONS}{{{P}, {SETTLED}}}[10m]))"
    page_burn = 14.4 * (1 - float(rules.DEFAULT.delivery_objective))
    return (
        DashboardBuilder("Viber delivery overview")
        .uid(DASHBOARD_UID)
        .tags(["viber", "viber-exporter"])
        .refresh("1m")
        .time("now-6h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)  # one crosshair across every panel
        .links([DashboardLink("Runbooks").url(rules.RUNBOOKS).target_blank(True)])
        .annotation(annotation("Exporter restarts", f"changes(process_start_time_seconds{{{SCOPE}}}[2m]) > 0", "orange"))
        .annotation(annotation("Configuration reloads",
                               f"changes(viber_exporter_config_last_reload_success_timestamp_seconds{{{SCOPE}}}[2m]) > 0", "blue"))
        .with_variable(
            DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
        )
        .with_variable(variable("cluster", "Cluster", "label_values(viber_exporter_build_info, cluster)"))
        .with_variable(variable("job", "Job", 'label_values(viber_exporter_build_info{cluster=~"$cluster"}, job)'))
        .with_variable(variable("instance", "Exporter", 'label_values(viber_exporter_build_info{cluster=~"$cluster", job=~"$job"}, instance)'))
        .with_variable(variable("provider", "Provider", f"label_values(viber_provider_info{{{SCOPE}}}, provider)"))
        # Message labels ([metrics.labels.NAME]): filter every query by any of them, and
        # break the "By message label" row down by one
        .with_variable(AdHocVariable("filters").label("Label filters").datasource(DS))
        .with_variable(TextBoxVariable("breakdown").label("Break down by").default_value("provider")
                       .current(VariableOption(selected=True, text="provider", value="provider")))
        .with_row(GRID.row("Overview"))
        .with_panel(stat(
            "Messages in the store by status", "short",
            query(f"sum by (status) (max by (provider, status) (viber_messages{{{P}}}))", "{{status}}", instant=True),
            description="Every message the store holds now, watched or settled (settled ones are kept for polling.retention).",
        ))
        .with_panel(stat(
            "Delivery success ratio", "percentunit",
            query(f'sum(increase({TRANSITIONS}{{{P}, status="delivered"}}[$__range])) / sum(increase({TRANSITIONS}{{{P}, {SETTLED}}}[$__range]))', instant=True),
            description="Delivered among settled (delivered, failed or expired) over the time range.",
            thresholds=ratio_good, width=4,
        ))
        .with_panel(stat(
            "Read-through ratio", "percentunit",
            query(f'sum(increase({TRANSITIONS}{{{P}, status="read"}}[$__range])) / sum(increase({TRANSITIONS}{{{P}, status="delivered"}}[$__range]))', instant=True),
            description="Read among delivered over the time range (reads after the read window are not watched for).",
            width=4,
        ))
        .with_panel(stat(
            "Delivery latency p50 / p95", "s",
            query(f"histogram_quantile(0.5, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p50", instant=True),
            query(f"histogram_quantile(0.95, sum by (le) (increase(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__range])))", "p95", instant=True),
            thresholds=steps(("green", None), ("red", float(rules.DEFAULT.latency_threshold))),
            runbook="ViberLatencyErrorBudgetBurn", width=5,
        ))
        .with_panel(stat("Spend over the range", "short",
                         query(f"sum by (currency) (increase(viber_message_cost_total{{{P}}}[$__range]))", "{{currency}}", instant=True),
                         description="In each currency's main unit.", decimals=2, width=5))
        .with_row(GRID.row("Alerts"))
        .with_panel(AlertList("Firing and pending Viber alerts", 24, 6))
        .with_row(GRID.row("Messages"))
        .with_panel(series("Transitions by status", "ops", query(f"sum by (status) (rate({TRANSITIONS}{{{P}}}[$__rate_interval]))", "{{status}}"),
                           description="Messages entering each status, per second."))
        .with_panel(series(
            "Provider-side failure ratio (10 min)", "percentunit",
            query(f"{provider_failures_10m} / {settled_10m}", "{{provider}}"),
            description="Failures for reasons on the provider's or sender's side among settled messages (recipient reasons such as not_viber_user left out), over 10 minutes; the line is the error ratio at which ViberDeliveryErrorBudgetBurn pages (14.4 × the error budget).",
            alert_at=page_burn, runbook="ViberDeliveryErrorBudgetBurn",
        ))
        .with_panel(series("Failures by reason", "ops", query(f"sum by (provider, reason) (rate(viber_message_failures_total{{{P}}}[$__rate_interval]))", "{{provider}} {{reason}}"),
                           description="Messages per second ending failed or expired, by reason."))
        .with_panel(series(
            "Delivery latency", "s",
            query(quantile(0.5, "viber_message_delivery_latency_seconds"), "p50 {{provider}}", exemplar=True),
            query(quantile(0.95, "viber_message_delivery_latency_seconds"), "p95 {{provider}}", exemplar=True),
            description="Exemplars link a point to one message (message_id): open it with /api/v1/messages/<provider>/<id>. The line is the latency SLO's threshold.",
            alert_at=float(rules.DEFAULT.latency_threshold), runbook="ViberLatencyErrorBudgetBurn",
        ))
        .with_panel(series(
            "Read latency", "s",
            query(quantile(0.5, "viber_message_read_latency_seconds"), "p50 {{provider}}", exemplar=True),
            query(quantile(0.95, "viber_message_read_latency_seconds"), "p95 {{provider}}", exemplar=True),
            description="Sent to read.",
        ))
        .with_panel(series(
            "Read-through ratio (1 h)", "percentunit",
            query(f'sum by (provider) (increase({TRANSITIONS}{{{P}, status="read"}}[1h])) / sum by (provider) (increase({TRANSITIONS}{{{P}, status="delivered"}}[1h]))', "{{provider}}"),
            description="Read among delivered, over the last hour at each point.",
        ))
        .with_panel(series("Spend per hour by provider, currency and channel", "short",
                           query(f"sum by (provider, currency, channel) (rate(viber_message_cost_total{{{P}}}[$__rate_interval])) * 3600", "{{provider}} {{currency}} {{channel}}"),
                           description="In each currency's main unit, per hour.", runbook="ViberCostSpike", decimals=3))
        .with_panel(series("SMS fallbacks and their outcomes", "ops",
                           query(f"sum by (provider) (rate(viber_message_sms_fallbacks_total{{{P}}}[$__rate_interval]))", "re-sent as SMS {{provider}}"),
                           query(f"sum by (provider, outcome) (rate(viber_message_fallback_outcomes_total{{{P}}}[$__rate_interval]))", "SMS {{outcome}} {{provider}}"),
                           description="Messages re-sent as SMS, and how those SMS ended, per second.", width=6))
        .with_panel(series("Watch expiries", "ops", query(f"sum by (provider) (rate(viber_message_watch_expired_total{{{P}}}[$__rate_interval]))", "{{provider}}"), width=6,
                           description="Messages that reached max_age without a final status, per second."))
        .with_row(GRID.row("By message label"))
        .with_panel(series(
            "Delivery success by $breakdown (10 min)", "percentunit",
            query(f'sum by ($breakdown) (increase({TRANSITIONS}{{{P}, status="delivered"}}[10m])) / sum by ($breakdown) (increase({TRANSITIONS}{{{P}, {SETTLED}}}[10m]))', "{{$breakdown}}"),
            description="Delivered among settled, per value of the label named in \"Break down by\" (a declared message label such as kind, or provider).",
            width=8,
        ))
        .with_panel(series(
            "Provider-side failures by $breakdown", "ops",
            query(f'sum by ($breakdown) (rate(viber_message_failures_by_side_total{{{P}, side="provider"}}[$__rate_interval]))', "{{$breakdown}}"),
            width=8,
        ))
        .with_panel(series(
            "Delivery latency p95 by $breakdown", "s",
            query(f"histogram_quantile(0.95, sum by ($breakdown, le) (rate(viber_message_delivery_latency_seconds_bucket{{{P}}}[$__rate_interval])))", "{{$breakdown}}"),
            width=8,
        ))
        .with_row(GRID.row("Provider health"))
        .with_panel(states("Provider up", query(f"max by (provider) (viber_provider_up{{{P}}})", "{{provider}}"),
                           mapping=up_mapping, width=8, runbook="ViberProviderDown"))
        .with_panel(series("Calls by outcome", "reqps", query(f"sum by (provider, outcome) (rate({REQUESTS}{{{P}}}[$__rate_interval]))", "{{provider}} {{outcome}}"), width=8,
                           runbook="ViberProviderGarbage"))
        .with_panel(series("Call latency p95", "s", query(quantile(0.95, "viber_provider_request_duration_seconds"), "{{provider}}"), width=8))
        .with_panel(series("Rate-limited calls (429)", "reqps",
                           query(f'sum by (provider) (rate({REQUESTS}{{{P}, outcome="rate_limited"}}[$__rate_interval]))', "{{provider}}"), width=8,
                           description="Sustained 429s: the instance's rate_limit is above what the provider allows (the exporter slows down on its own)."))
        .with_panel(series("Answer problems", "ops",
                           query(f"sum by (provider, problem) (rate(viber_provider_answer_problems_total{{{P}}}[$__rate_interval]))", "{{provider}} {{problem}}"), width=8,
                           description="Answers with a part that was not trusted (unreadable, out of range, inconsistent): the rest of the answer was used."))
        .with_panel(series(
            "Time since last success", "s",
            query(f"time() - max by (provider) (viber_provider_last_success_timestamp_seconds{{{P}}} > 0)", "{{provider}}"),
            description="Empty for a provider that never answered yet.", width=8,
        ))
        .with_panel(series("Poll lag", "s", query(f"max by (provider) (viber_poll_lag_seconds{{{P}}})", "{{provider}}"),
                           alert_at=rules.T["poll_lag_seconds"], runbook="ViberPollLag", width=8))
        .with_panel(series("Time since the last poll tick", "s",
                           query(f"time() - max by (provider) (viber_poller_last_tick_timestamp_seconds{{{P}}})", "{{provider}}"),
                           alert_at=rules.T["poller_tick_age_seconds"], runbook="ViberPollerStuck", width=8,
                           description="How long ago the polling replica completed a tick; it grows when a tick hangs."))
        .with_panel(series(
            "Calls per settled message", "short",
            query(f"sum by (provider) (increase({REQUESTS}{{{P}}}[1h])) / sum by (provider) (increase({TRANSITIONS}{{{P}, {SETTLED}}}[1h]))", "{{provider}}"),
            description="Provider calls in the last hour per message settled in it: what following a message costs against the rate limit.", width=8,
        ))
        .with_panel(series("Messages waiting", "short", query(f'max by (provider) (viber_messages{{{P}, status="pending"}})', "{{provider}}"),
                           description="Messages the provider has not delivered, failed or expired yet (watched or not). A few never settle; a count that only grows while registrations come in means deliveries stalled.",
                           runbook="ViberDeliveriesStalled"))
        .with_panel(stat("Provider balance", "short", query(f"max by (provider, currency) (viber_provider_balance{{{P}}})", "{{provider}} {{currency}}", instant=True),
                         description="As the provider reports it (credentials check, every 5 minutes); credit accounts may show a negative balance.",
                         thresholds=steps(("red", None), ("orange", 0), ("green", 10)), runbook="ViberBalanceLow", decimals=2, width=12))
        .with_row(GRID.row("Exporter health"))
        .with_panel(stat("Exporters up", "percentunit", query(f"sum(up{{{SCOPE}}}) / count(up{{{SCOPE}}})", instant=True),
                         description="Share of the scraped exporters (replicas) that answer: below 100 % when one of several is down.",
                         thresholds=steps(("red", None), ("green", 1)), runbook="ViberExporterDown", width=4))
        .with_panel(stat("Ready", "percentunit", query(f"sum(viber_exporter_ready{{{SCOPE}}}) / count(viber_exporter_ready{{{SCOPE}}})", instant=True),
                         description="Share of the exporters whose /-/ready answers 200 (store reachable and writable, scheduler running).",
                         thresholds=steps(("red", None), ("green", 1)), runbook="ViberExporterNotReady", width=4))
        .with_panel(stat("Polling replica", "none",
                         query(f"max by (provider, instance) (viber_exporter_leader{{{P}}}) == 1", "{{provider}}: {{instance}}", instant=True),
                         description="The replica that polls each provider instance (several replicas on PostgreSQL share the work; one exporter polls them all).",
                         runbook="ViberNoPoller", width=6))
        .with_panel(stat("Version", "none", query(f"count by (version) (viber_exporter_build_info{{{SCOPE}}})", "{{version}}", instant=True), width=5))
        .with_panel(stat("Last reload successful", "bool_yes_no", query(f"min(viber_exporter_config_last_reload_successful{{{SCOPE}}})", instant=True),
                         thresholds=steps(("red", None), ("green", 1)), runbook="ViberReloadFailed", width=5))
        .with_panel(stat("Watched / max_watched", "percentunit",
                         query(f"sum(max by (provider) (viber_messages_watched{{{P}}})) / max(viber_exporter_max_watched{{{SCOPE}}})", instant=True),
                         thresholds=steps(("green", None), ("orange", 0.75), ("red", rules.T["watched_share"])), runbook="ViberWatchedSetNearlyFull", width=4))
        .with_panel(series("Watched backlog", "short", query(f"max by (provider) (viber_messages_watched{{{P}}})", "{{provider}}"),
                           description="Messages still being polled.", width=10))
        .with_panel(series(
            "Registrations and callbacks by outcome", "ops",
            query(f"sum by (provider, outcome) (rate(viber_watch_registrations_total{{{P}}}[$__rate_interval]))", "registrations {{provider}} {{outcome}}"),
            query(f"sum by (provider, outcome) (rate(viber_callbacks_total{{{P}}}[$__rate_interval]))", "callbacks {{provider}} {{outcome}}"),
            description="Rejected callbacks: a wrong token or signature, or a report the plugin could not read.",
            runbook="ViberRegistrationsRefused", width=10,
        ))
        .with_panel(series("Dropped hook events", "ops",
                           query(f"sum by (hook) (rate(viber_plugin_hook_events_dropped_total{{{SCOPE}}}[$__rate_interval]))", "{{hook}}"),
                           description="Events a plugin hook (message_status_changed) could not take because its queue was full.", width=8))
        .with_panel(series("Exporter CPU", "percentunit",
                           query(f"rate(process_cpu_seconds_total{{{SCOPE}}}[$__rate_interval])", "{{instance}}"), width=8,
                           description="Share of one core."))
        .with_panel(series("Exporter memory and open files", "bytes",
                           query(f"process_resident_memory_bytes{{{SCOPE}}}", "RSS {{instance}}"), width=8,
                           description="Resident memory; open file descriptors in the exporter's own /metrics (process_open_fds)."))
    )


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard().build()) + "\n"

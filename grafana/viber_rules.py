"""The recording and alerting rules of viber-exporter, written once for every stack.

Every expression is built with *placeholders* for what differs between Prometheus
stacks — the job selector, the labels aggregations keep (``cluster``, ``namespace``,
``job``: whichever exist), the SLO objectives — and rendered twice from the same text:
with the defaults into the committed YAML (``render``), and as jsonnet ``%`` formats on
``$._config`` into the monitoring mixin (``viber_mixin.py``). So the mixin and the files
cannot drift: a test renders the mixin with a real jsonnet and compares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RUNBOOKS = "https://github.com/viber-exporter/viber-exporter/blob/main/docs/runbooks.md"


@dataclass(frozen=True)
class StackConfig:
    """The mixin's ``_config``: what a deployment may change without editing Python."""

    #: the label matchers that select the exporter's series (a ServiceMonitor names the
    #: job after its Service, so this is rarely the default)
    selector: str = 'job="viber-exporter"'
    #: labels every aggregation keeps where the series have them (a central Prometheus,
    #: Thanos or Mimir holds several clusters' and namespaces' exporters)
    aggregation: tuple[str, ...] = ("cluster", "namespace", "job")
    #: where each alert's runbook is: ``%s`` is the lower-case alert name
    runbook_url_pattern: str = RUNBOOKS + "#%s"
    #: delivery success SLO: delivered (or read) among settled messages, recipient-side
    #: failures (not_viber_user, opted out …) left out. Strings, so every renderer
    #: writes them alike (jsonnet prints 0.99 as 0.98999999999999999)
    delivery_objective: str = "0.99"
    #: delivery latency SLO: the share of deliveries within ``latency_threshold`` seconds
    latency_objective: str = "0.99"
    #: the latency SLO's threshold, as the ``le`` label of a latency bucket (a bucket
    #: boundary of metrics.latency_buckets, as the exporter writes it)
    latency_threshold: str = "300.0"
    #: declared message labels (``[metrics.labels.NAME]``) the SLOs are computed and
    #: alerted per: each combination's budget burns on its own (the SLO rules' series
    #: multiply by the combinations in use, at most metrics.max_label_combinations + 1)
    message_labels: tuple[str, ...] = ()

    def values(self) -> dict[str, str]:
        """Each placeholder's text for this configuration."""
        return {
            "selector": self.selector,
            "aggregation": ", ".join(self.aggregation),
            "deliveryObjective": self.delivery_objective,
            "latencyObjective": self.latency_objective,
            "latencyThreshold": self.latency_threshold,
            "sloLabels": "".join(f", {label}" for label in self.message_labels),
        }


DEFAULT = StackConfig()
#: placeholder name → the mixin's ``_config`` field, for the jsonnet side
JSONNET_FIELDS = {
    "selector": "selector",
    "aggregation": "aggregation",
    "deliveryObjective": "deliveryObjective",
    "latencyObjective": "latencyObjective",
    "latencyThreshold": "latencyThreshold",
    "sloLabels": "sloLabels",
}
_PLACEHOLDER = re.compile(r"<<([A-Za-z]+)>>")


def ph(name: str) -> str:
    assert name in JSONNET_FIELDS, name
    return f"<<{name}>>"


def render(text: str, config: StackConfig = DEFAULT) -> str:
    """The text with every placeholder replaced by ``config``'s value."""
    values = config.values()
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


# -- building blocks ---------------------------------------------------------------------
SEL = ph("selector")
AGG = ph("aggregation")
UP = f"up{{{SEL}}}"


def m(metric: str, matchers: str = "") -> str:
    """A metric of the exporter, selected by the stack's selector (and ``matchers``)."""
    return f"{metric}{{{SEL}{', ' + matchers if matchers else ''}}}"


def by(*labels: str) -> str:
    """``by (<aggregation>, labels…)``: aggregations keep where the series come from."""
    return f"by ({', '.join([AGG, *labels])})"


def live(expr: str) -> str:
    """Only the series of exporters Prometheus scrapes now: when one dies, its frozen
    counters drop out of every rate, ratio and sum at once (no alert from stale data)."""
    return f"({expr} and on ({AGG}, instance) {UP} == 1)"


def per_provider(function: str, expr: str) -> str:
    """``function by (<aggregation>, provider) (live(expr))``."""
    return f"{function} {by('provider')} ({live(expr)})"


TRANSITIONS = "viber_message_status_transitions_total"
REQUESTS = "viber_provider_requests_total"
SETTLED = m(TRANSITIONS, 'status=~"delivered|failed|expired"')
PROGRESS = m(TRANSITIONS, 'status=~"delivered|read|failed|expired"')
PROVIDER_SIDE = m("viber_message_failures_by_side_total", 'side="provider"')
RECIPIENT_SIDE = m("viber_message_failures_by_side_total", 'side="recipient"')
ACCEPTED = m("viber_watch_registrations_total", 'outcome="accepted"')
FULL = m("viber_watch_registrations_total", 'outcome="full"')
INVALID = m(REQUESTS, 'outcome="invalid_response"')
DELIVERED_IN_TIME = m("viber_message_delivery_latency_seconds_bucket", f'le="{ph("latencyThreshold")}"')
DELIVERIES = m("viber_message_delivery_latency_seconds_count")
COST = m("viber_message_cost_total")

# -- every threshold that is not an SLO objective, in one place ---------------------------
THRESHOLDS: dict[str, float | None] = {
    "slo_min_events_1h": 50,  # a burn-rate page needs at least this many settled in 1 h
    "slo_min_events_6h": 100,  # … a ticket this many in 6 h (and 3 d)
    "poll_lag_seconds": 300,
    "poller_tick_age_seconds": 600,  # a poll tick completed within this; else the poller hangs
    "stalled_share": 0.1,  # settled in 30 m below this share of what was accepted in it
    "stalled_min_accepted": 20,
    "garbage_share": 0.5,  # unreadable answers among the provider's answers, 10 m
    "garbage_min_calls": 20,
    "watched_share": 0.9,  # of polling.max_watched
    "cost_spike_factor": 3,  # spend in the last hour vs. the same hour yesterday (and a week ago)
    "cost_spike_min_messages": 50,  # … with at least this many messages registered in the hour
    # Optional absolute budget per provider and currency per hour (None: no budget alert).
    "cost_hourly_budget": None,
    "balance_horizon_hours": 24,  # warn when the balance, at its pace of the last 6 h, runs out within this
}
T = THRESHOLDS

# -- SLOs: the Google SRE workbook's multi-window, multi-burn-rate alerts ------------------
#: (long window, short window, burn-rate factor, severity) — a page when 2 % of a 30-day
#: budget burns in an hour, a ticket when 5 % burns in 6 h or 10 % in 3 days
BURNS = (("1h", "5m", 14.4, "critical"), ("6h", "30m", 6.0, "warning"), ("3d", "6h", 1.0, "warning"))
SLO_WINDOWS = ("5m", "30m", "1h", "6h", "3d")


@dataclass(frozen=True)
class Slo:
    name: str  # delivery, latency
    objective: str  # placeholder of the objective
    title: str
    #: (bad, valid) rate expressions over a window, with {w} for the window
    bad: str
    valid: str

    def ratio(self, window: str) -> str:
        return f"viber:slo_{self.name}_errors:ratio_rate{window}"

    def events(self, window: str) -> str:
        return f"viber:slo_{self.name}_events:rate{window}"

    def budget(self, factor: float) -> str:
        return f"({factor:g} * (1 - {self.objective}))"


def _rate(expr: str, window: str) -> str:
    """A per-second rate for an SLO, per provider instance and per declared message
    label the SLOs are kept for (``message_labels``)."""
    return f"sum by ({AGG}, provider{ph('sloLabels')}) ({live(f'rate({expr}[{window}])')})"


SLOS = (
    Slo(
        "delivery",
        ph("deliveryObjective"),
        "delivery success",
        bad="{provider_side}",
        valid="{settled} - {recipient_side}",
    ),
    Slo(
        "latency",
        ph("latencyObjective"),
        "delivery latency",
        bad="{deliveries} - {in_time}",
        valid="{deliveries}",
    ),
)


def _slo_terms(window: str) -> Mapping[str, str]:
    return {
        "provider_side": _rate(PROVIDER_SIDE, window),
        "recipient_side": _rate(RECIPIENT_SIDE, window),
        "settled": _rate(SETTLED, window),
        "deliveries": _rate(DELIVERIES, window),
        "in_time": _rate(DELIVERED_IN_TIME, window),
    }


def slo_recording_rules() -> dict[str, str]:
    rules: dict[str, str] = {}
    for slo in SLOS:
        for window in SLO_WINDOWS:
            terms = _slo_terms(window)
            rules[slo.events(window)] = slo.valid.format(**terms)
            rules[slo.ratio(window)] = f"({slo.bad.format(**terms)}) / {slo.events(window)}"
    return rules


#: The SLOs' recording rules: evaluated in the same group as the burn-rate alerts, ahead
#: of them, so an alert always reads this evaluation's ratio (rules of different groups
#: see each other's results a cycle late, or early, in no fixed order).
SLO_RECORDING_RULES: dict[str, str] = slo_recording_rules()
#: Recording rules no alert depends on: for dashboards and ad-hoc queries.
PLAIN_RECORDING_RULES: dict[str, str] = {
    "viber:message_provider_failure_ratio:ratio10m": (
        f"{per_provider('sum', f'increase({PROVIDER_SIDE}[10m])')} / "
        f"{per_provider('sum', f'increase({SETTLED}[10m])')}"
    ),
}
RECORDING_RULES: dict[str, str] = {**SLO_RECORDING_RULES, **PLAIN_RECORDING_RULES}


# -- alerts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """``expr`` is a whole PromQL condition; ``value_format`` says how the description
    shows its value (Prometheus and Grafana template it differently)."""

    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str  # with {value} where the value goes
    value_format: str = "plain"  # plain, percent, duration or number
    #: what the value is, for the dashboards and the e2e test: a query that answers
    #: whenever there is data, firing or not (default: none)
    value: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def runbook(self, config: StackConfig = DEFAULT) -> str:
        return config.runbook_url_pattern % self.name.lower()

    def describe(self, flavour: str) -> str:
        """The description as Prometheus (``$value``) or Grafana (``$values.A.Value``,
        since Grafana's ``$value`` is a string) templates it."""
        value = "$value" if flavour == "prometheus" else "$values.A.Value"
        shown = {
            "plain": f"{{{{ {value} }}}}",
            "percent": f"{{{{ humanizePercentage {value} }}}}",
            "duration": f"{{{{ humanizeDuration {value} }}}}",
            "number": f'{{{{ printf "%.0f" {value} }}}}',
            "money": f'{{{{ printf "%.2f" {value} }}}}',
        }[self.value_format]
        return self.description.replace("{value}", shown)


def _burn_alerts(slo: Slo) -> list[Alert]:
    def pair(long: str, short: str, factor: float, floor: float | None) -> str:
        budget = slo.budget(factor)
        guard = f" and {slo.events(long)} * {_seconds(long)} >= {floor:g}" if floor else ""
        return f"{slo.ratio(long)} > {budget} and {slo.ratio(short)} > {budget}{guard}"

    (l1, s1, f1, _), (l2, s2, f2, _), (l3, s3, f3, _) = BURNS
    what = (
        "failed on the provider's or the sender's side (recipient reasons such as not_viber_user are not counted)"
        if slo.name == "delivery"
        else f"took longer than {ph('latencyThreshold')} s to be delivered"
    )
    title = slo.name.capitalize()
    return [
        Alert(
            f"Viber{title}ErrorBudgetBurn",
            pair(l1, s1, f1, T["slo_min_events_1h"]),
            "2m",
            "critical",
            f"{{{{ $labels.provider }}}} burns its {slo.title} error budget fast",
            f"{{value}} of the messages of {{{{ $labels.provider }}}} in the last hour {what}: "
            f"at this rate the 30-day error budget of the {slo.title} SLO ({slo.objective}) is gone in about two days.",
            value_format="percent",
            value=slo.ratio(l1),
        ),
        Alert(
            f"Viber{title}ErrorBudgetSlowBurn",
            f"({pair(l2, s2, f2, T['slo_min_events_6h'])}) or ({pair(l3, s3, f3, T['slo_min_events_6h'])})",
            "15m",
            "warning",
            f"{{{{ $labels.provider }}}} burns its {slo.title} error budget",
            f"{{value}} of the messages of {{{{ $labels.provider }}}} {what} over the last hours to days: "
            f"the {slo.title} SLO ({slo.objective}) runs out of budget before the 30 days are over.",
            value_format="percent",
            value=slo.ratio(l2),
        ),
    ]


def _seconds(window: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]


COST_1H = per_provider("sum", f"increase({COST}[1h])").replace(by("provider"), by("provider", "currency"))
COST_1H_AGO_1D = COST_1H.replace(f"increase({COST}[1h])", f"increase({COST}[1h] offset 1d)")
COST_1H_AGO_7D = COST_1H.replace(f"increase({COST}[1h])", f"increase({COST}[1h] offset 7d)")
ACCEPTED_30M = per_provider("sum", f"increase({ACCEPTED}[30m])")
ACCEPTED_1H = per_provider("sum", f"increase({ACCEPTED}[1h])")

ALERTS: list[Alert] = [
    Alert(
        "ViberExporterDown", f"{UP} == 0", "5m", "critical",
        "viber-exporter at {{ $labels.instance }} does not answer scrapes",
        "Prometheus has not been able to scrape {{ $labels.instance }} for 5 minutes: its numbers are frozen and no alert below can fire for it.",
        value=UP,
    ),
    Alert(
        "ViberExporterAbsent", f"absent({UP}) == 1", "10m", "critical",
        "No viber-exporter is being scraped",
        f"Prometheus has no target matching {SEL} at all (removed from the configuration, service discovery lost it, or the rules' selector does not match the scrape job).",
    ),
    Alert(
        "ViberExporterNotReady",
        f"max {by('instance')} ({live(m('viber_exporter_ready'))}) == 0", "5m", "warning",
        "viber-exporter at {{ $labels.instance }} is not ready",
        "{{ $labels.instance }} answers /-/ready with 503: its state store cannot be reached or written, or its scheduler stopped. Registrations and callbacks get 503 meanwhile.",
        value=f"max {by('instance')} ({live(m('viber_exporter_ready'))})",
    ),
    *_burn_alerts(SLOS[0]),
    *_burn_alerts(SLOS[1]),
    Alert(
        "ViberPollerStuck",
        f"time() - max {by('provider')} ({live(m('viber_poller_last_tick_timestamp_seconds'))}) > {T['poller_tick_age_seconds']}",
        "2m", "critical",
        "The poller of {{ $labels.provider }} has not completed a tick",
        "The poller of {{ $labels.provider }} last completed a tick {value} ago: a tick hangs or the scheduler stopped. Nothing is polled, and the lag of its messages grows.",
        value_format="duration",
        value=f"time() - max {by('provider')} ({live(m('viber_poller_last_tick_timestamp_seconds'))})",
    ),
    Alert(
        "ViberPollingStalled",
        f"max {by('provider')} ({live(m('viber_poll_lag_seconds'))}) > 0 and "
        f"{per_provider('sum', f'increase({m(REQUESTS)}[15m])')} == 0",
        "5m", "critical",
        "Polling of {{ $labels.provider }} has stopped",
        "Messages of {{ $labels.provider }} are due ({value} behind) but the exporter made no call to the provider in 15 minutes: the data is stale.",
        value_format="duration",
        value=f"max {by('provider')} ({live(m('viber_poll_lag_seconds'))})",
    ),
    Alert(
        "ViberDeliveriesStalled",
        f"{per_provider('sum', f'increase({PROGRESS}[30m])')} < {T['stalled_share']} * {ACCEPTED_30M} "
        f"and {ACCEPTED_30M} >= {T['stalled_min_accepted']}",
        "15m", "warning",
        "Messages of {{ $labels.provider }} are accepted but not delivered",
        "Only {value} messages of {{ $labels.provider }} reached a status in the last 30 minutes, while many more were registered in them: messages are waiting and deliveries have stalled.",
        value_format="number",
        value=per_provider("sum", f"increase({PROGRESS}[30m])"),
    ),
    Alert(
        "ViberProviderDown", f"max {by('provider')} ({live(m('viber_provider_up'))}) == 0", "5m", "critical",
        "Provider {{ $labels.provider }} does not answer",
        "The exporter's calls to {{ $labels.provider }} have been failing (server errors, timeouts, refused connections, bad credentials, or answers that are mostly unreadable).",
        value=f"max {by('provider')} ({live(m('viber_provider_up'))})",
    ),
    Alert(
        "ViberProviderGarbage",
        f"{per_provider('sum', f'rate({INVALID}[10m])')} / {per_provider('sum', f'rate({m(REQUESTS)}[10m])')} > {T['garbage_share']} "
        f"and {per_provider('sum', f'increase({m(REQUESTS)}[10m])')} >= {T['garbage_min_calls']}",
        "5m", "warning",
        "Provider {{ $labels.provider }} answers garbage",
        "{value} of the answers of {{ $labels.provider }} in the last 10 minutes could not be read (an error page with HTTP 200, a changed format): nothing settles from them.",
        value_format="percent",
        value=f"{per_provider('sum', f'rate({INVALID}[10m])')} / {per_provider('sum', f'rate({m(REQUESTS)}[10m])')}",
    ),
    Alert(
        "ViberNoPoller", f"max {by('provider')} ({live(m('viber_exporter_leader'))}) == 0", "2m", "critical",
        "No replica polls {{ $labels.provider }}",
        "Every running replica says it does not poll {{ $labels.provider }}: none holds its polling lease (the shared database is unreachable, or the leases cannot be renewed). Its messages' statuses are not updated.",
        value=f"max {by('provider')} ({live(m('viber_exporter_leader'))})",
    ),
    Alert(
        "ViberPollerConflict", f"sum {by('provider')} ({live(m('viber_exporter_leader'))}) > 1", "5m", "warning",
        "Several replicas poll {{ $labels.provider }} at once",
        "{value} replicas believe they poll {{ $labels.provider }}: the provider's rate limit is spent more than once (counts stay right, every change locks its row). Check that every replica uses the same exporter.state_url.",
        value=f"sum {by('provider')} ({live(m('viber_exporter_leader'))})",
    ),
    Alert(
        "ViberPollLag", f"max {by('provider')} ({live(m('viber_poll_lag_seconds'))}) > {T['poll_lag_seconds']}",
        "10m", "warning",
        "Polling of {{ $labels.provider }} is behind schedule",
        "The most overdue poll of {{ $labels.provider }} is {value} late: statuses on the dashboard are stale.",
        value_format="duration",
        value=f"max {by('provider')} ({live(m('viber_poll_lag_seconds'))})",
    ),
    Alert(
        "ViberWatchedSetNearlyFull",
        f"sum {by()} ({live(m('viber_messages_watched'))}) / max {by()} ({live(m('viber_exporter_max_watched'))}) > {T['watched_share']}",
        "15m", "warning",
        "The watched set is nearly full",
        "{value} of polling.max_watched is in use: registrations will soon be refused with HTTP 429.",
        value_format="percent",
        value=f"sum {by()} ({live(m('viber_messages_watched'))}) / max {by()} ({live(m('viber_exporter_max_watched'))})",
    ),
    Alert(
        "ViberRegistrationsRefused",
        f"{per_provider('sum', f'increase({FULL}[10m])')} >= 1",
        "5m", "warning",
        "Registrations for {{ $labels.provider }} are refused",
        "About {value} registrations for {{ $labels.provider }} were refused in the last 10 minutes because the watched set is full (polling.max_watched): those messages are not followed.",
        value_format="number",
        value=per_provider("sum", f"increase({FULL}[10m])"),
    ),
    Alert(
        "ViberReloadFailed", f"max {by('instance')} ({live(m('viber_exporter_config_last_reload_successful'))}) == 0",
        "1m", "warning",
        "A configuration reload of {{ $labels.instance }} failed",
        "The last reload of {{ $labels.instance }} was refused (its problems are in the exporter's log); it runs on its previous configuration, and a restart would fail the same way.",
        value=f"max {by('instance')} ({live(m('viber_exporter_config_last_reload_successful'))})",
    ),
    Alert(
        "ViberCostSpike",
        # against yesterday's same hour; against a week ago's too once there is one, so
        # the alert works from the second day after a deploy
        f"{COST_1H} > {T['cost_spike_factor']} * {COST_1H_AGO_1D} "
        f"and ({COST_1H} > {T['cost_spike_factor']} * {COST_1H_AGO_7D} or {COST_1H} unless {COST_1H_AGO_7D}) "
        f"and on ({AGG}, provider) ({ACCEPTED_1H} >= {T['cost_spike_min_messages']})",
        "15m", "warning",
        "Viber spend of {{ $labels.provider }} jumped",
        "{{ $labels.provider }} spent {value} {{ $labels.currency }} in the last hour, over "
        f"{T['cost_spike_factor']} times the same hour yesterday (and a week ago, when known).",
        value_format="money",
        value=COST_1H,
    ),
    Alert(
        "ViberBalanceLow",
        # over the replicas first: the leader, which reads the balance, may change
        f"predict_linear(max {by('provider', 'currency')} ({live(m('viber_provider_balance'))})[6h:5m], "
        f"{T['balance_horizon_hours']} * 3600) <= 0 "
        f"and max {by('provider', 'currency')} ({live(m('viber_provider_balance'))}) > 0",
        "30m", "warning",
        "The {{ $labels.provider }} account runs out of credit",
        "At the pace of the last 6 hours, the {{ $labels.provider }} account ({{ $labels.currency }}) is empty within "
        f"{T['balance_horizon_hours']} hours; Routee answers UNSENT and BSG error 8 when it is. (A balance already at or below 0, a credit account's normal, does not alert.)",
        value=f"max {by('provider', 'currency')} ({live(m('viber_provider_balance'))})",
    ),
]
if T["cost_hourly_budget"] is not None:
    ALERTS.append(Alert(
        "ViberCostOverBudget", f"{COST_1H} > {T['cost_hourly_budget']}", "5m", "warning",
        "Viber spend of {{ $labels.provider }} is over budget",
        "{{ $labels.provider }} spent {value} {{ $labels.currency }} in the last hour, over the hourly budget "
        f"of {T['cost_hourly_budget']}.",
        value_format="money",
        value=COST_1H,
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


def rule_groups(config: StackConfig | None = None) -> list[dict[str, Any]]:
    """The Prometheus rule groups; with ``config``, rendered, else with placeholders."""

    def text(value: str) -> str:
        return render(value, config) if config is not None else value

    def alert(a: Alert) -> dict[str, Any]:
        return {
            "alert": a.name,
            "expr": text(a.expr),
            "for": a.duration,
            "labels": {"severity": a.severity, **a.labels},
            "annotations": {
                "summary": text(a.summary),
                "description": text(a.describe("prometheus")),
                "runbook_url": a.runbook(config or DEFAULT),
            },
        }

    burns = [a for a in ALERTS if "ErrorBudget" in a.name]
    recording: dict[str, Any] = {"name": "viber-exporter.recording", "rules": [
        {"record": name, "expr": text(expr)} for name, expr in PLAIN_RECORDING_RULES.items()
    ]}
    slo: dict[str, Any] = {"name": "viber-exporter.slo", "rules": [
        *({"record": name, "expr": text(expr)} for name, expr in SLO_RECORDING_RULES.items()),
        *(alert(a) for a in burns),
    ]}
    alerting: dict[str, Any] = {"name": "viber-exporter.alerts", "rules": [alert(a) for a in ALERTS if a not in burns]}
    return [recording, slo, alerting]

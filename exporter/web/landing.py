"""The landing page at ``/``: plain server-rendered HTML, no scripts, no build step."""

from __future__ import annotations

from html import escape
from typing import Any

from ..engine import Exporter
from ..figures import Figures, Latency
from ..model import Status
from ..version import __version__
from .views import providers_json

REFRESH_SECONDS = 10
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:76rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f4f4f4}.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.notice{background:#fff8c5;border:1px solid #d4a72c;padding:.6rem 1rem}
code{background:#f4f4f4;padding:0 .2rem}small,.help{color:#555}
"""


def _cell(value: Any, numeric: bool = False) -> str:
    css = ' class="n"' if numeric else ""
    return f"<td{css}>{escape('—' if value is None else str(value))}</td>"


def _seconds(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _latency(latency: Latency) -> list[str]:
    """count, median and 90th percentile (estimated from the histogram's buckets)."""
    return [
        _cell(f"{latency.count:g}", numeric=True),
        _cell(_seconds(latency.quantile(0.5)), numeric=True),
        _cell(_seconds(latency.quantile(0.9)), numeric=True),
    ]


def _cost(f: Figures) -> str:
    if not f.cost:
        return "—"
    by_currency: dict[str, dict[str, float]] = {}
    for (currency, channel), amount in sorted(f.cost.items()):
        by_currency.setdefault(currency, {})[channel] = amount
    parts = []
    for currency, channels in by_currency.items():
        total = sum(channels.values())
        detail = ", ".join(f"{channel} {amount:.4g}" for channel, amount in channels.items())
        parts.append(f"{currency} {total:.4f} ({detail})")
    return "; ".join(parts)


def _grouped_errors(providers: list[dict[str, Any]]) -> list[str]:
    """One row per provider, outcome and error text, with how often and the last ids:
    an outage repeats the same error for every message polled."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for p in providers:
        for e in p.get("recent_errors", []):  # newest first
            key = (p["name"], e["outcome"], e["message"])
            group = groups.setdefault(key, {"last": e["at"], "count": 0, "ids": []})
            group["count"] += 1
            if e["message_id"] and len(group["ids"]) < 3 and e["message_id"] not in group["ids"]:
                group["ids"].append(e["message_id"])
    return [
        f"<tr>{_cell(g['last'])}{_cell(name)}{_cell(', '.join(g['ids']) or None)}"
        f"{_cell(outcome)}{_cell(message)}{_cell(g['count'], numeric=True)}</tr>"
        for (name, outcome, message), g in sorted(
            groups.items(), key=lambda item: item[1]["last"], reverse=True
        )
    ]


def _schedule_summary(schedule: dict[str, Any] | None) -> str | None:
    """The instance's schedule in a few words (the plan itself is in the providers JSON)."""
    if schedule is None:
        return None
    if schedule["mode"] != "adaptive":
        return str(schedule["mode"]).replace("_", "-")
    plan = schedule["plan"]
    if plan is None:
        return "adaptive: still learning (fixed until then)"
    return (
        f"adaptive: {plan['expected_calls_per_message']:g} calls/message expected "
        f"(budget {schedule['budget']:g}), learned from {plan['learned_from']}"
    )


def landing_page(exporter: Exporter, openapi: dict[str, Any], notice: str | None = None) -> str:
    providers = providers_json(exporter)
    numbers = exporter.figures()
    rows, activity = [], []
    for p in providers:
        if not p["enabled"]:
            health = '<td class="down">disabled</td>'
        elif not p["polled_here"]:
            # several replicas: this one does not poll it, so its health here means nothing
            health = "<td>polled by another replica</td>"
        else:
            health = '<td class="up">up</td>' if p["up"] else '<td class="down">down</td>'
        counts = "".join(_cell(p["messages"][s.value], numeric=True) for s in Status)
        rows.append(
            f"<tr>{_cell(p['name'])}{_cell(p['plugin'])}{health}{_cell(p.get('last_success_at'))}"
            f"{_cell(p['watched'], numeric=True)}{_cell(p.get('poll_lag_seconds'), numeric=True)}"
            f"{_cell(_schedule_summary(p.get('schedule')))}{counts}</tr>"
        )
        f = numbers.get(p["name"], Figures())
        reached = "".join(_cell(f"{f.transitions.get(s.value, 0):g}", numeric=True) for s in Status)
        activity.append(
            f"<tr>{_cell(p['name'])}{reached}{''.join(_latency(f.delivery))}"
            f"{''.join(_latency(f.read))}{_cell(_cost(f))}</tr>"
        )
    status_heads = "".join(f"<th>{s.value}</th>" for s in Status)
    endpoints = "".join(
        f"<li><code>{escape(method.upper())} {escape(path)}</code> — {escape(op.get('summary', ''))}</li>"
        for path, ops in openapi.get("paths", {}).items()
        for method, op in ops.items()
        if isinstance(op, dict)
    )
    failures = exporter.host.failures()
    plugin_problems = (
        "<h2>Plugins not loaded</h2><table><tr><th>plugin</th><th>problem</th></tr>"
        + "".join(
            f"<tr>{_cell(name)}{_cell(error)}</tr>" for name, error in sorted(failures.items())
        )
        + "</table>"
        if failures
        else ""
    )
    errors = _grouped_errors(providers)
    error_table = (
        "<table><tr><th>last seen</th><th>provider</th><th>message id(s)</th><th>outcome</th>"
        "<th>error</th><th>times</th></tr>" + "".join(errors) + "</table>"
        if errors
        else "<p>No recent poll errors.</p>"
    )
    banner = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>viber-exporter</title>
<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><style>{STYLE}</style></head>
<body>
<h1>viber-exporter <small>{escape(__version__)}</small></h1>
{banner}
<p><a href="/metrics">Metrics</a> · <a href="/api/v1/openapi.json">API description (OpenAPI)</a> ·
<a href="/api/v1/providers">Providers (JSON)</a> · <a href="/api/v1/messages">Messages (JSON)</a> ·
<a href="/-/healthy">Healthy</a> · <a href="/-/ready">Ready</a>
<small>(this page refreshes every {REFRESH_SECONDS} s)</small></p>
<h2>Providers</h2>
<table><tr><th rowspan="2">instance</th><th rowspan="2">plugin</th><th rowspan="2">health</th>
<th rowspan="2">last success</th><th rowspan="2">watched</th><th rowspan="2">poll lag (s)</th>
<th rowspan="2">schedule</th><th colspan="{len(Status)}">stored messages by current status</th></tr>
<tr>{status_heads}</tr>
{"".join(rows)}</table>
<p class="help"><b>watched</b>: messages still being polled now (not yet settled).
<b>Stored messages by current status</b>: every message in the state store, watched or
settled (settled ones are kept for <code>polling.retention</code>), by the status it has
now — a read message counts under <i>read</i> only, so these add up to the stored total.</p>
<h2>Since the exporter started</h2>
<table><tr><th rowspan="2">instance</th><th colspan="{len(Status)}">messages that reached each status</th>
<th colspan="3">delivery latency</th><th colspan="3">read latency</th><th rowspan="2">cost</th></tr>
<tr>{status_heads}<th>count</th><th>median</th><th>p90</th><th>count</th><th>median</th><th>p90</th></tr>
{"".join(activity)}</table>
<p class="help">Counted once per message and status, as the metrics count them
(<code>viber_message_status_transitions_total</code>): a message that was delivered and
then read counts under both. Latencies run from sending to delivery or reading;
the median and 90th percentile are estimated from the histogram's buckets, as
<code>histogram_quantile</code> does. Cost is what the providers reported, per currency and
channel (<code>viber_message_cost_total</code>).</p>
<h2>Recent poll errors</h2>
{error_table}
{plugin_problems}
<h2>API</h2>
<ul>{endpoints}</ul>
<p><small>Write calls need <code>Authorization: Bearer &lt;api_token&gt;</code> when
<code>api_token</code> is set, and come from loopback otherwise. See the README for
configuration, metrics and the command line.</small></p>
</body></html>
"""

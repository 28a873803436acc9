"""The landing page at ``/``: server-rendered HTML with inline SVG charts.

Everything on it comes from memory (the store's in-memory counts, the counters, the
trend rings), so it costs the same with ten messages or a million. A few lines of
script swap the live part every REFRESH_SECONDS without a full reload; without
script, the page reloads itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from ..engine import Exporter
from ..figures import Figures, Latency, Rates, rates
from ..model import Status
from ..trends import MINUTES, Trend, Trends
from ..version import __version__
from .views import providers_json

REFRESH_SECONDS = 10

STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#fff;--bg:#f6f8fa;--ok:#1a7f37;
--bad:#cf222e;--warn:#9a6700;--blue:#0969da}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);
background:var(--bg);line-height:1.4}
header,main,footer{padding:0 1.25rem;max-width:110rem;margin:0 auto}
header{padding-top:1rem}h1{font-size:1.35rem;margin:.2rem 0}h1 small{color:var(--muted);font-weight:400}
h2{font-size:1.1rem;margin:1.4rem 0 .6rem}nav{display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.95rem}
a{color:var(--blue)}.muted,small{color:var(--muted)}
.notice{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.6rem 1rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,26rem),1fr));gap:1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;min-width:0}
.card h3{margin:0;font-size:1.15rem;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem}
.badge{font-size:.8rem;border-radius:2rem;padding:.1rem .6rem;border:1px solid;white-space:nowrap}
.up{color:var(--ok)}.down{color:var(--bad)}.idle{color:var(--muted)}
.meta{margin:.35rem 0 .8rem;font-size:.9rem;color:var(--muted)}
.rates{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.5rem;margin:.4rem 0}
.rate{border:1px solid var(--line);border-radius:6px;padding:.4rem .6rem;min-width:0}
.rate b{display:block;font-size:1.6rem;font-variant-numeric:tabular-nums;white-space:nowrap}
.rate span{font-size:.8rem;color:var(--muted);display:block}
.charts{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.5rem;margin:.6rem 0}
.chart{min-width:0}.chart svg{width:100%;height:2.6rem;display:block}
.chart figcaption{font-size:.8rem;color:var(--muted)}
.delivered polyline{stroke:var(--ok)}.delivered path{fill:#1a7f3722}
.failed polyline{stroke:var(--bad)}.failed path{fill:#cf222e22}
.errors polyline{stroke:var(--warn)}.errors path{fill:#9a670022}
svg polyline{fill:none;stroke-width:1.5;vector-effect:non-scaling-stroke}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem .8rem;margin:.6rem 0 0;
font-size:.92rem}dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.table{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:.92rem}
td,th{border-bottom:1px solid var(--line);padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
time{white-space:nowrap}
@media (max-width:30rem){.rates,.charts{grid-template-columns:repeat(3,minmax(0,1fr))}.rate b{font-size:1.2rem}}
"""

#: swaps the live part of the page every REFRESH_SECONDS (a full reload without script)
SCRIPT = f"""
setInterval(function(){{fetch(location.href,{{headers:{{Accept:"text/html"}}}})
.then(function(r){{return r.ok?r.text():null}}).then(function(t){{if(!t)return;
var d=new DOMParser().parseFromString(t,"text/html"),n=d.getElementById("live"),
o=document.getElementById("live");if(n&&o)o.replaceWith(n)}}).catch(function(){{}})}},
{REFRESH_SECONDS * 1000});
"""


def _e(value: Any) -> str:
    return escape("—" if value is None else str(value))


def _cell(value: Any, numeric: bool = False) -> str:
    return f"<td{' class=n' if numeric else ''}>{_e(value)}</td>"


def seconds_text(value: float | None) -> str | None:
    """A duration short enough for one line: 0.4 s, 42 s, 3.5 min, 2.1 h."""
    if value is None:
        return None
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def ago(at: float | None, now: float) -> str:
    """``12 s ago`` with the exact time on hover (``—`` when there is no time)."""
    if at is None:
        return "—"
    exact = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    delta = max(0.0, now - at)
    text = "just now" if delta < 1 else f"{seconds_text(delta)} ago"
    return f'<time datetime="{exact}" title="{exact}">{escape(text)}</time>'


def timestamp(rfc3339: str | None) -> float | None:
    """Seconds since the epoch of a time the providers JSON gives as RFC 3339."""
    if rfc3339 is None:
        return None
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def percent(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f} %"


def sparkline(values: Sequence[int], kind: str, caption: str) -> str:
    """A small inline chart, one point a minute, scaled to its own peak."""
    peak = max(max(values, default=0), 1)
    width, height = 120, 30
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / peak) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    area = f"M0,{height} L{points.replace(' ', ' L')} L{width},{height} Z"
    total = sum(values)
    label = f"{caption}: {total} in the last hour, at most {max(values, default=0)} a minute"
    return (
        f'<figure class="chart {kind}" style="margin:0"><svg viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<path d="{area}" stroke="none"/><polyline points="{points}"/></svg>'
        f"<figcaption>{escape(caption)}: <b>{total}</b> / h</figcaption></figure>"
    )


def _rate_box(title: str, hour: float | None, start: float | None, stored: float | None) -> str:
    return (
        f'<div class="rate" title="last hour and since start: this process; stored: the '
        f'store, all replicas">{escape(title)}<b>{percent(hour)}</b>'
        f"<span>last hour</span><span>since start {percent(start)}</span>"
        f"<span>stored {percent(stored)}</span></div>"
    )


def _latency(latency: Latency) -> str:
    if latency.count <= 0:
        return "—"
    p50, p95 = latency.quantile(0.5), latency.quantile(0.95)
    return f"p50 {_e(seconds_text(p50))} · p95 {_e(seconds_text(p95))} ({latency.count:g})"


def _spend(f: Figures) -> str:
    if not f.cost:
        return "—"
    by_currency: dict[str, dict[str, float]] = {}
    for (currency, channel), amount in sorted(f.cost.items()):
        by_currency.setdefault(currency, {})[channel] = amount
    parts = []
    for currency, channels in by_currency.items():
        total = sum(channels.values())
        detail = ", ".join(f"{channel} {amount:.4g}" for channel, amount in channels.items())
        parts.append(f"{escape(currency)} {total:.4f} ({escape(detail)})")
    return "<br>".join(parts)


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


def _badge(p: dict[str, Any], here: str) -> str:
    if not p["enabled"]:
        return '<span class="badge down">disabled</span>'
    if not p["polled_here"]:
        by = p.get("polled_by")
        text = f"polled by {by}" if by else "polled by another replica (none holds it now)"
        return f'<span class="badge idle">{escape(text)}</span>'
    if p.get("paused_for_seconds"):
        return (
            f'<span class="badge down">down, paused {seconds_text(p["paused_for_seconds"])}</span>'
        )
    if not p["up"]:
        return '<span class="badge down">down</span>'
    if p.get("last_success_at") is None:
        return '<span class="badge idle">starting: no call yet</span>'
    return '<span class="badge up">up</span>'


def stored_rates(messages: Mapping[str, int]) -> Rates:
    """Rates over the store's messages by their current status (a read message was
    delivered first; expired ones failed)."""
    return rates(
        {
            "delivered": messages.get("delivered", 0) + messages.get("read", 0),
            "read": messages.get("read", 0),
            "failed": messages.get("failed", 0),
            "expired": messages.get("expired", 0),
        }
    )


def _card(p: dict[str, Any], f: Figures, trend: Trend, now: float, here: str) -> str:
    name = p["name"]
    hour = rates(
        {
            "delivered": trend.total("delivered"),
            "read": trend.total("read"),
            "failed": trend.total("failed"),
        }
    )
    start = rates(f.transitions)
    stored = stored_rates(p["messages"])
    polled = p.get("polled_here")
    meta = [f"{escape(p['plugin'])} {escape(p['version'])}"]
    if polled:
        meta.append(f"polled by {escape(here)} (this replica)")
        meta.append(f"last success {ago(timestamp(p.get('last_success_at')), now)}")
        lag = p.get("poll_lag_seconds")
        meta.append(f"poll lag {lag:.1f} s" if lag is not None else "poll lag —")
    schedule = _schedule_summary(p.get("schedule"))
    if schedule:
        meta.append(escape(schedule))
    balance = p.get("balance")
    money = f"{balance['amount']:.2f} {escape(balance['currency'] or '')}" if balance else "—"
    counts = p["messages"]
    stored_text = ", ".join(f"{s.value} {counts[s.value]:,}" for s in Status if counts[s.value])
    since = (
        "this process, since start" if polled else "this process (it does not poll this instance)"
    )
    return f"""<article class="card" id="instance-{escape(name)}">
<h3>{escape(name)} {_badge(p, here)}</h3>
<p class="meta">{" · ".join(meta)}</p>
<div class="rates">{_rate_box("delivered", hour.delivery, start.delivery, stored.delivery)}
{_rate_box("read-through", hour.read_through, start.read_through, stored.read_through)}
{_rate_box("failed", hour.failure, start.failure, stored.failure)}</div>
<div class="charts">{sparkline(trend.delivered, "delivered", "deliveries")}
{sparkline(trend.failed, "failed", "failures")}
{sparkline(trend.errors, "errors", "provider errors")}</div>
<dl><dt>delivery latency</dt><dd>{_latency(f.delivery)}</dd>
<dt>read latency</dt><dd>{_latency(f.read)}</dd>
<dt>spend</dt><dd>{_spend(f)}</dd>
<dt>balance</dt><dd>{money}</dd>
<dt>watched</dt><dd>{p["watched"]:,} messages, {p["campaigns_watched"]:,} campaigns</dd>
<dt>stored</dt><dd>{escape(stored_text or "none")} <small>(all replicas)</small></dd>
<dt>figures</dt><dd><small>rates, charts, latency, spend: {since}</small></dd></dl>
</article>"""


def _label_tables(numbers: Mapping[str, Figures], names: Sequence[str], trends: Trends) -> str:
    """Per declared message label: each value's rates over the last hour and since
    start (this process)."""
    if not names:
        return ""
    sections = []
    for label in names:
        rows = []
        for provider, f in sorted(numbers.items()):
            for (name, value), transitions in sorted(f.by_label.items()):
                if name != label:
                    continue
                hour = rates(trends.totals(provider, f"{name}={value}"))
                start = rates(transitions)
                shown = value if value else "(none)"
                delivered = f"{transitions.get('delivered', 0):g}"
                cells = "".join(
                    _cell(f"{percent(getattr(hour, rate))} · {percent(getattr(start, rate))}", True)
                    for rate in ("delivery", "read_through", "failure")
                )
                rows.append(
                    f"<tr>{_cell(provider)}{_cell(shown)}{_cell(delivered, True)}{cells}</tr>"
                )
        body = "".join(rows) or '<tr><td colspan="6">nothing counted yet</td></tr>'
        sections.append(
            f"<h2>By label <code>{escape(label)}</code> <small>this process: last hour · since "
            "start</small></h2>"
            '<div class="table"><table><tr><th>instance</th><th>value</th><th class=n>delivered</th>'
            "<th class=n>delivery</th><th class=n>read-through</th><th class=n>failure</th></tr>"
            f"{body}</table></div>"
        )
    return "".join(sections)


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


def notice_html(notice: str) -> str:
    """The banner's text, with `code` spans shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(notice))


def landing_page(
    exporter: Exporter,
    notice: str | None = None,
    callback_methods: Sequence[str] = ("GET", "POST", "PUT"),
) -> str:
    providers = providers_json(exporter)
    numbers = exporter.figures()
    trends = exporter.metrics.trends
    now = exporter.clock.time()
    here = exporter.replica
    cards = "\n".join(
        _card(p, numbers.get(p["name"], Figures()), trends.of(p["name"]), now, here)
        for p in providers
    )
    failures = exporter.host.failures()
    plugin_problems = (
        '<h2>Plugins not loaded</h2><div class="table"><table><tr><th>plugin</th><th>problem</th></tr>'
        + "".join(
            f"<tr>{_cell(name)}{_cell(error)}</tr>" for name, error in sorted(failures.items())
        )
        + "</table></div>"
        if failures
        else ""
    )
    errors = _grouped_errors(providers)
    error_table = (
        '<div class="table"><table><tr><th>last seen</th><th>provider</th><th>message id(s)</th>'
        "<th>outcome</th><th>error</th><th class=n>times</th></tr>"
        + "".join(errors)
        + "</table></div>"
        if errors
        else "<p>No recent poll errors.</p>"
    )
    banner = f'<p class="notice">{notice_html(notice)}</p>' if notice else ""
    updated = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    labels = _label_tables(numbers, exporter.metrics.label_names, trends)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>viber-exporter</title>
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>
<style>{STYLE}</style></head>
<body>
<header>
<h1>viber-exporter <small>{escape(__version__)} · replica {escape(here)}</small></h1>
<nav><a href="/metrics">Metrics</a><a href="/api/v1/docs">API reference</a>
<a href="/api/v1/providers">Providers (JSON)</a><a href="/api/v1/messages">Messages (JSON)</a>
<a href="/-/healthy">Healthy</a><a href="/-/ready">Ready</a></nav>
{banner}
</header>
<main id="live">
<p class="muted">Updated <time datetime="{updated}" title="{updated}">{updated}</time>
(every {REFRESH_SECONDS} s)</p>
<section class="cards">{cards}</section>
<p class="muted"><small>Rates: <b>delivered</b> and <b>failed</b> (failed or expired) are
shares of the messages that reached an outcome; <b>read-through</b> is read ÷ delivered.
<i>Last hour</i> and <i>since start</i> count what this process saw (charts: one point a
minute for the last {MINUTES} minutes); <i>stored</i> is every message in the store, by
its status now, whoever polled it.</small></p>
{labels}
<h2>Recent poll errors</h2>
{error_table}
{plugin_problems}
</main>
<footer><p><small>API: <a href="/api/v1/docs">reference</a> (<a href="/api/v1/openapi.json">OpenAPI
document</a>). Providers report to <code>{" ".join(callback_methods)} /api/v1/callbacks/{{provider}}</code>.
Reads need credentials once <code>api_token</code> or basic-auth users are set; writes need
<code>Authorization: Bearer &lt;api_token&gt;</code>, or come from loopback while it is unset.
</small></p></footer>
<script>{SCRIPT}</script>
</body></html>
"""

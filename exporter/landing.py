"""The landing page at ``/``: plain server-rendered HTML, no scripts, no build step."""

from __future__ import annotations

from html import escape
from typing import Any

from .engine import Exporter
from .model import Status
from .version import __version__
from .views import providers_json

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f4f4f4}.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
code{background:#f4f4f4;padding:0 .2rem}small{color:#666}
"""


def _cell(value: Any) -> str:
    return f"<td>{escape('—' if value is None else str(value))}</td>"


def landing_page(exporter: Exporter, openapi: dict[str, Any]) -> str:
    providers = providers_json(exporter)
    rows, errors = [], []
    for p in providers:
        if not p["enabled"]:
            health = '<td class="down">disabled</td>'
        else:
            health = '<td class="up">up</td>' if p["up"] else '<td class="down">down</td>'
        counts = "".join(_cell(p["messages"][s.value]) for s in Status)
        rows.append(
            f"<tr>{_cell(p['name'])}{_cell(p['plugin'])}{health}{_cell(p.get('last_success_at'))}"
            f"{_cell(p['watched'])}{_cell(p.get('poll_lag_seconds'))}{counts}</tr>"
        )
        for e in p.get("recent_errors", [])[:10]:
            errors.append(
                f"<tr>{_cell(e['at'])}{_cell(p['name'])}{_cell(e['message_id'])}{_cell(e['outcome'])}{_cell(e['message'])}</tr>"
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
    error_table = (
        "<table><tr><th>time</th><th>provider</th><th>message</th><th>outcome</th><th>error</th></tr>"
        + "".join(errors)
        + "</table>"
        if errors
        else "<p>No recent poll errors.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>viber-exporter</title><style>{STYLE}</style></head>
<body>
<h1>viber-exporter <small>{escape(__version__)}</small></h1>
<p><a href="/metrics">Metrics</a> · <a href="/api/v1/openapi.json">API description (OpenAPI)</a> ·
<a href="/api/v1/providers">Providers (JSON)</a> · <a href="/api/v1/messages">Messages (JSON)</a> ·
<a href="/-/healthy">Healthy</a> · <a href="/-/ready">Ready</a></p>
<h2>Providers</h2>
<table><tr><th>instance</th><th>plugin</th><th>health</th><th>last success</th><th>watched</th>
<th>poll lag (s)</th>{status_heads}</tr>
{"".join(rows)}</table>
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

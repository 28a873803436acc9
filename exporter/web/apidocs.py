"""``/api/v1/docs``: the OpenAPI document as a small readable page (no script, no CDN).

Rendered once from the document the API serves, so the two cannot disagree.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from ..version import __version__

CODE = re.compile(r"`([^`]+)`")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1rem 1.25rem;
max-width:60rem;color:#1f2328;line-height:1.45}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d1d9e0;
padding-bottom:.2rem;overflow-wrap:anywhere}h3{font-size:1rem;margin:1.2rem 0 .3rem}
code{background:#f6f8fa;padding:0 .2rem;border-radius:3px}
.m{display:inline-block;min-width:4rem;text-align:center;border-radius:4px;padding:0 .4rem;
margin-right:.3rem;font-size:.85rem;color:#fff;background:#0969da}.m.post{background:#1a7f37}
.m.delete{background:#cf222e}.m.put{background:#9a6700}
.t{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.92rem;margin:.3rem 0}
td,th{border-bottom:1px solid #d1d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}nav a{margin-right:1rem}
"""


def _text(value: str) -> str:
    """Markdown-ish description text: `code` spans and paragraphs, everything escaped."""
    paragraphs = [p for p in str(value).split("\n\n") if p.strip()]
    return "".join("<p>" + CODE.sub(r"<code>\1</code>", escape(p)) + "</p>" for p in paragraphs)


def _schema_name(schema: dict[str, Any]) -> str:
    """A schema in a few words, with a link when it is a named component."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    if isinstance(kind, list):
        return escape(" or ".join(str(k) for k in kind))
    return escape(str(kind or "object"))


def _parameters(parameters: list[dict[str, Any]]) -> str:
    if not parameters:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_schema_name(p.get('schema', {}))}</td>"
        f"<td>{_text(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return (
        '<div class="t"><table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th>'
        f"<th>meaning</th></tr>{rows}</table></div>"
    )


def _operation(method: str, operation: dict[str, Any], shared: list[dict[str, Any]]) -> str:
    parts = [
        f'<h3><span class="m {escape(method)}">{escape(method.upper())}</span>'
        f"{escape(operation.get('summary', ''))}</h3>",
        _text(operation.get("description", "")),
        _parameters([*shared, *operation.get("parameters", [])]),
    ]
    body = operation.get("requestBody")
    if body:
        kinds = ", ".join(
            f"<code>{escape(kind)}</code>: {_schema_name(c.get('schema', {}))}"
            for kind, c in body.get("content", {}).items()
        )
        parts.append(f"<p>Body: {kinds}</p>")
    rows = "".join(
        f"<tr><td>{escape(code)}</td><td>{escape(r.get('description', ''))}</td><td>"
        + ", ".join(_schema_name(c.get("schema", {})) for c in r.get("content", {}).values())
        + "</td></tr>"
        for code, r in operation.get("responses", {}).items()
    )
    parts.append(
        '<div class="t"><table><tr><th>answer</th><th>when</th><th>body</th></tr>'
        f"{rows}</table></div>"
    )
    return "".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    properties = schema.get("properties", {})
    head = (
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_text(schema.get("description", ""))}'
    )
    if not properties:
        return head + f"<p>{_schema_name(schema)}</p>"
    rows = "".join(
        f"<tr><td><code>{escape(key)}</code>{' *' if key in required else ''}</td>"
        f"<td>{_schema_name(value)}</td><td>{_text(value.get('description', ''))}</td></tr>"
        for key, value in properties.items()
    )
    return (
        head + '<div class="t"><table><tr><th>field</th><th>type</th><th>meaning</th></tr>'
        f"{rows}</table></div>"
    )


def api_docs_page(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    paths = []
    for path, operations in document.get("paths", {}).items():
        shared = operations.get("parameters", [])
        methods = [m for m, op in operations.items() if m != "parameters" and isinstance(op, dict)]
        listed = " ".join(m.upper() for m in methods)
        paths.append(
            f'<h2 id="{escape(path)}"><code>{escape(listed)} {escape(path)}</code></h2>'
            + "".join(_operation(m, operations[m], shared) for m in methods)
        )
    schemas = "".join(
        _schema(name, schema)
        for name, schema in document.get("components", {}).get("schemas", {}).items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(info.get("title", "API"))}</title><style>{STYLE}</style></head>
<body>
<nav><a href="/">Landing page</a><a href="/api/v1/openapi.json">OpenAPI document (JSON)</a></nav>
<h1>{escape(info.get("title", "API"))} <small>v{escape(str(info.get("version", "")))} ·
viber-exporter {escape(__version__)}</small></h1>
{_text(info.get("description", ""))}
{"".join(paths)}
<h2 id="schemas">Schemas</h2>
<p>Fields marked * are always present.</p>
{schemas}
</body></html>
"""

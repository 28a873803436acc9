"""``example-config``, ``check-config``, ``plugins`` and ``probe``: the commands that
read the configuration and the plugins without serving."""

from __future__ import annotations

import dataclasses
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from ..config.load import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
)
from ..errors import PluginError
from ..labels import SERIES_CEILING, outcome_series
from ..provider import Provider
from .common import Failure, cli, config_option, load_or_fail, load_plugins

#: the commented configuration `example-config` prints (the repository's config.toml)
EXAMPLE_CONFIG = "example-config.toml"


@cli.command("example-config", short_help="Print a complete commented configuration.")
def example_config() -> None:
    """Print the example configuration: every section, each setting explained, secrets
    read from the environment. Start from it with

        viber-exporter example-config > config.toml
    """
    text = resources.files("viber_exporter").joinpath(EXAMPLE_CONFIG).read_text(encoding="utf-8")
    click.echo(text, nl=False)


@cli.command("check-config", short_help="Validate the configuration; list every problem.")
@config_option
@click.option(
    "--online",
    is_flag=True,
    help="Also make each enabled instance's credential check (and read its balance).",
)
def check_config(config_path: Path | None, online: bool) -> None:
    """Validate the configuration and list every problem (exit 1 on any). With --online,
    contact each enabled provider instance once to check its credentials."""
    _, config = load_or_fail(config_path)
    providers = ", ".join(
        f"{name} ({p.plugin}{'' if p.enabled else ', disabled'})"
        for name, p in config.providers.items()
    )
    click.echo(f"configuration OK: {len(config.providers)} provider instance(s): {providers}")
    metrics = config.metrics
    if metrics.labels.declared:
        per_instance = outcome_series(
            metrics.labels, len(metrics.latency_buckets), "country" in metrics.extra_labels
        )
        declared = ", ".join(
            f"{label.name} ({label.limit} values{' listed' if label.values else ''})"
            for label in metrics.labels.declared
        )
        click.echo(
            f"message labels: {declared}; at most {metrics.labels.combinations():,} combinations: "
            f"worst case {per_instance:,} series of the outcome metrics per provider instance, "
            f"{per_instance * len(config.providers):,} in all (ceiling {SERIES_CEILING:,} per instance)"
        )
    if online:
        from ..probe import check_online

        failed = []
        for name, provider in config.providers.items():
            if not provider.enabled:
                continue
            line, ok = check_online(provider)
            click.echo(line)
            if not ok:
                failed.append(name)
        if failed:
            raise Failure(f"credential check failed: {', '.join(failed)}")


@cli.command(short_help="List the provider plugins (built-in and installed).")
@click.option(
    "--third-party", is_flag=True, help="Only plugins installed as packages (no built-ins)."
)
@click.option("--all", "_all", is_flag=True, hidden=True)  # the default since 1.0; kept working
@click.option(
    "--settings", "with_settings", is_flag=True, help="Add each provider's settings and defaults."
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["auto", "table", "json"]),
    default="auto",
    show_default=True,
    help="auto: a table on a terminal, JSON otherwise (and always with --settings).",
)
def plugins(third_party: bool, _all: bool, with_settings: bool, output: str) -> None:
    """List the provider plugins: the built-in ones and every installed package, with
    load errors."""
    host = load_plugins()
    try:
        infos = host.describe(include_builtin=True)
        types = host.provider_types()
    except PluginError as e:
        raise Failure(str(e)) from e
    listing = []
    for i in infos:
        if i.builtin and third_party:
            continue
        entry: dict[str, Any] = {
            "name": i.name,
            "package": i.package,
            "version": i.version,
            "builtin": i.builtin,
            "hooks": list(i.hooks),
            "providers": list(i.providers),
            **({"error": i.error} if i.error else {}),
        }
        if with_settings:
            entry["settings"] = [provider_settings(types[name].cls) for name in i.providers]
        listing.append(entry)
    table = output == "table" or (output == "auto" and sys.stdout.isatty() and not with_settings)
    if not table:
        click.echo(json.dumps(listing, indent=2, ensure_ascii=False))
        return
    rows = [("PLUGIN", "PACKAGE", "VERSION", "PROVIDERS", "STATE")] + [
        (
            e["name"],
            e["package"],
            e["version"],
            ", ".join(e["providers"]) or "-",
            f"not loaded: {e['error']}"
            if "error" in e
            else "built in"
            if e["builtin"]
            else "loaded",
        )
        for e in listing
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )


def provider_settings(cls: type[Provider]) -> dict[str, Any]:
    """What ``plugins --settings`` says about one provider class."""
    return {
        "provider": cls.plugin_name,
        "settings": [setting.describe() for setting in cls.settings_spec],
        "defaults": {
            "concurrency": cls.default_concurrency or DEFAULT_CONCURRENCY,
            "rate_limit": cls.default_rate_limit or DEFAULT_RATE_LIMIT,
        },
        "polls": cls.capabilities().lookup,
        "feed": cls.capabilities().feed,
        "capabilities": dataclasses.asdict(cls.capabilities()),
        "statuses": {raw: status.value for raw, status in cls.status_map.items()},
    }


@cli.command(short_help="Look one message up now and show every exchange.")
@click.argument("provider")
@click.argument("message_id", metavar="ID")
@config_option
def probe(provider: str, message_id: str, config_path: Path | None) -> None:
    """Look one message up now: the provider's raw answer and the normalised result."""
    from ..probe import run_probe

    _, config = load_or_fail(config_path)
    if provider not in config.providers:
        raise Failure(f"no provider instance {provider!r} in the configuration")
    report, ok = run_probe(config.providers[provider], message_id)
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    if not ok:
        raise Failure(f"lookup failed: {report['result']['outcome']}")

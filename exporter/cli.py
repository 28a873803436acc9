"""The command line (SPEC §7). ``main(argv) -> int``; only this module prints."""

from __future__ import annotations

import csv
import json
import logging
import queue
import signal
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from .client import ApiClient, ClientFailure
from .config import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT, default_config_path, load_config
from .errors import ConfigError, PluginError, StoreError, ViberExporterError
from .logs import setup_logging
from .pluginhost import PluginHost
from .provider import Provider
from .settings import Config
from .version import __version__

log = logging.getLogger(__name__)

IMPORT_BATCH = 1000
STOP_TIMEOUT = 8.0


Failure = ClientFailure  # exit 1 with a one-line reason on stderr


def load_plugins() -> PluginHost:
    host = PluginHost()
    host.load()
    return host


def load(config_path: Path | None, host: PluginHost) -> Config:
    path = config_path or default_config_path()
    try:
        return load_config(path, host.provider_types(), failed_plugins=host.failures())
    except PluginError as e:
        raise Failure(str(e)) from e


def load_or_fail(config_path: Path | None) -> tuple[PluginHost, Config]:
    """The plugins and the validated config; on problems, list them all and exit 1."""
    host = load_plugins()
    try:
        return host, load(config_path, host)
    except ConfigError as e:
        click.echo(str(e), err=True)
        raise Failure("invalid configuration") from e


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration file (default: $VIBER_EXPORTER_CONFIG or ./config.toml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="viber-exporter")
def cli() -> None:
    """Prometheus exporter for the delivery status, latency and cost of Viber messages."""


@cli.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the exporter: poll providers and serve /metrics and the API."""
    from .engine import Exporter
    from .reload import Reloader
    from .server import HttpServer

    host, config = load_or_fail(config_path)
    setup_logging(config.exporter.log_level, config.exporter.log_format)
    try:
        exporter = Exporter(config, host)
    except StoreError as e:
        raise Failure(str(e)) from e
    reloader = Reloader(exporter, host, config_path or default_config_path())
    try:
        server = HttpServer(
            exporter, config.exporter.listen_host, config.exporter.listen_port, reloader
        )
    except (OSError, ssl.SSLError) as e:
        exporter.stop()
        raise Failure(
            f"cannot listen on {config.exporter.listen}: {getattr(e, 'strerror', None) or e}"
        ) from e
    exporter.start()
    server.start()
    log.info("viber-exporter %s listening on %s", __version__, server.url)
    _wait_for_signal(reloader.reload)
    server.stop()
    exporter.stop(timeout=STOP_TIMEOUT)
    log.info("stopped")


def _wait_for_signal(on_reload: Callable[[], object] | None = None) -> None:
    """Block until SIGTERM or SIGINT; run ``on_reload`` on each SIGHUP (in this thread)."""
    signals: queue.Queue[int] = queue.Queue()

    def queue_signal(signum: int, frame: Any) -> None:
        signals.put(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, queue_signal)
    while True:
        signum = signals.get()
        if signum == signal.SIGHUP:
            if on_reload is not None:
                log.info("received SIGHUP, reloading the configuration")
                on_reload()
            continue
        log.info("received %s, stopping", signal.Signals(signum).name)
        return


@cli.command()
@click.option(
    "--listen", default="127.0.0.1:9839", show_default=True, help="The exporter's HOST:PORT."
)
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Keep the state here (default: a temporary file).",
)
def demo(listen: str, state: Path | None) -> None:
    """Mock Routee and BSG, an exporter polling them, and simulated traffic. No credentials needed."""
    from .demo import Demo

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("must be HOST:PORT", param_hint="--listen")
    setup_logging("info", "text")
    try:
        running = Demo(load_plugins(), host.strip("[]"), int(port), state)
    except OSError as e:
        raise Failure(f"cannot listen on {listen}: {e.strerror or e}") from e
    running.start(click.echo)
    _wait_for_signal()
    running.stop()
    click.echo("demo stopped")


@cli.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the configuration and list every problem (exit 1 on any)."""
    _, config = load_or_fail(config_path)
    providers = ", ".join(
        f"{name} ({p.plugin}{'' if p.enabled else ', disabled'})"
        for name, p in config.providers.items()
    )
    click.echo(f"configuration OK: {len(config.providers)} provider instance(s): {providers}")


@cli.command()
@click.option("--all", "include_builtin", is_flag=True, help="Include the built-in plugins.")
@click.option(
    "--settings", "with_settings", is_flag=True, help="Add each provider's settings and defaults."
)
def plugins(include_builtin: bool, with_settings: bool) -> None:
    """List installed provider plugins as JSON (errors included)."""
    host = load_plugins()
    try:
        infos = host.describe(include_builtin=include_builtin or with_settings)
        types = host.provider_types()
    except PluginError as e:
        raise Failure(str(e)) from e
    listing = []
    for i in infos:
        if i.builtin and not include_builtin and not with_settings:
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
    click.echo(json.dumps(listing, indent=2))


def provider_settings(cls: type[Provider]) -> dict[str, Any]:
    """What ``plugins --settings`` says about one provider class."""
    return {
        "provider": cls.plugin_name,
        "settings": [setting.describe() for setting in cls.settings_spec],
        "defaults": {
            "concurrency": cls.default_concurrency or DEFAULT_CONCURRENCY,
            "rate_limit": cls.default_rate_limit or DEFAULT_RATE_LIMIT,
        },
        "polls": cls.polls,
        "feed": cls.drain_interval is not None,
        "statuses": {raw: status.value for raw, status in cls.status_map.items()},
    }


@cli.command()
@click.argument("provider")
@click.argument("message_id", metavar="ID")
@config_option
def probe(provider: str, message_id: str, config_path: Path | None) -> None:
    """Look one message up now: the provider's raw answer and the normalised result."""
    from .probe import run_probe

    _, config = load_or_fail(config_path)
    if provider not in config.providers:
        raise Failure(f"no provider instance {provider!r} in the configuration")
    report, ok = run_probe(config.providers[provider], message_id)
    click.echo(json.dumps(report, indent=2))
    if not ok:
        raise Failure(f"lookup failed: {report['result']['outcome']}")


# -- watch: a client of a running exporter's API -----------------------------------------


url_option = click.option(
    "--url", help="The exporter's address (default: from the config's listen)."
)


@cli.group()
def watch() -> None:
    """Register and list watched messages on a running exporter (token: $VIBER_EXPORTER_API_TOKEN)."""


@watch.command("add")
@click.argument("provider")
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@click.option("--sent-at", help="RFC 3339 send time for all IDs, e.g. 2026-11-23T10:00:00Z.")
@url_option
@config_option
def watch_add(
    provider: str,
    ids: Sequence[str],
    sent_at: str | None,
    url: str | None,
    config_path: Path | None,
) -> None:
    """Register one or more message ids of one provider instance."""
    items = [
        {"provider": provider, "id": i, **({"sent_at": sent_at} if sent_at else {})} for i in ids
    ]
    result = ApiClient(url, config_path).call("POST", "/api/v1/messages", json={"messages": items})
    click.echo(f"accepted {result['accepted']}, duplicates {result['duplicates']}")


def _csv_items(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or (
                number == 1 and [c.strip().lower() for c in row[:2]] == ["provider", "id"]
            ):
                continue
            if len(row) < 2 or len(row) > 3:
                raise Failure(
                    f"{path}:{number}: expected provider,id[,sent_at], got {len(row)} columns"
                )
            item = {"provider": row[0].strip(), "id": row[1].strip()}
            if len(row) == 3 and row[2].strip():
                item["sent_at"] = row[2].strip()
            yield item


@watch.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@url_option
@config_option
def watch_import(file: Path, url: str | None, config_path: Path | None) -> None:
    """Register every row of a CSV file (columns: provider,id[,sent_at])."""
    client = ApiClient(url, config_path)
    accepted = duplicates = 0
    batch: list[dict[str, str]] = []

    def send() -> None:
        nonlocal accepted, duplicates
        result = client.call("POST", "/api/v1/messages", json={"messages": batch})
        accepted += result["accepted"]
        duplicates += result["duplicates"]
        batch.clear()

    for item in _csv_items(file):
        batch.append(item)
        if len(batch) == IMPORT_BATCH:
            send()
    if batch:
        send()
    click.echo(f"accepted {accepted}, duplicates {duplicates}")


@watch.command("list")
@click.option("--provider", help="Only this provider instance.")
@click.option(
    "--status", type=click.Choice(["pending", "delivered", "read", "failed", "expired", "unknown"])
)
@url_option
@config_option
def watch_list(
    provider: str | None, status: str | None, url: str | None, config_path: Path | None
) -> None:
    """List stored messages (tab-separated: provider, id, status, reason, polls, next poll)."""
    client = ApiClient(url, config_path)
    params: dict[str, str] = {"limit": "1000"}
    if provider:
        params["provider"] = provider
    if status:
        params["status"] = status
    while True:
        page = client.call("GET", "/api/v1/messages", params=params)
        for m in page["messages"]:
            fields = [
                m["provider"],
                m["id"],
                m["status"],
                m["reason"] or "-",
                str(m["polls"]),
                m["next_poll_at"] or "-",
            ]
            click.echo("\t".join(fields))
        if not page["next"]:
            break
        params["after"] = page["next"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 success, 1 failure, 2 usage error)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else sys.argv[1:],
            prog_name="viber-exporter",
            standalone_mode=False,
        )
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except ViberExporterError as e:
        click.echo(f"viber-exporter: {e}", err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

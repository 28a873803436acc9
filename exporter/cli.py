"""The command line (SPEC §7). ``main(argv) -> int``; only this module prints."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from .client import ApiClient, ClientFailure
from .config.load import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    LISTEN_HINT,
    LOG_LEVELS,
    default_config_path,
    load_config,
    split_listen,
)
from .config.model import Config
from .errors import ConfigError, PluginError, StoreError, ViberExporterError
from .httpserver import bind_problem
from .labels import SERIES_CEILING, outcome_series
from .logs import setup_logging
from .pluginhost import PluginHost
from .provider import Provider
from .signals import SignalWaiter, signals_blocked
from .version import __version__
from .web.app import is_loopback

#: the commented configuration `example-config` prints (the repository's config.toml)
EXAMPLE_CONFIG = "example-config.toml"

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="viber-exporter")
def cli() -> None:
    """Prometheus exporter for the delivery status, latency and cost of Viber messages."""


def listen_address(
    _: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """A ``--listen HOST:PORT`` option, read as the configuration reads ``listen``."""
    if value is None:
        return None
    address = split_listen(value)
    if address is None:
        raise click.BadParameter(f"{LISTEN_HINT}, got {value!r}", param=param)
    return address


@cli.command(short_help="Run the exporter (poll, serve /metrics and the API).")
@config_option
@click.option(
    "--listen",
    callback=listen_address,
    help="HOST:PORT to serve on, instead of the configuration's exporter.listen.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    help="Instead of the configuration's exporter.log_level (also after a reload).",
)
def run(config_path: Path | None, listen: tuple[str, int] | None, log_level: str | None) -> None:
    """Run the exporter: poll providers and serve /metrics and the API."""

    def adjust(config: Config) -> Config:
        exporter = config.exporter
        if listen is not None:
            exporter = dataclasses.replace(exporter, listen_host=listen[0], listen_port=listen[1])
        if log_level is not None:
            exporter = dataclasses.replace(exporter, log_level=log_level)
        return dataclasses.replace(config, exporter=exporter)

    # Signals first: one that arrives during start-up waits instead of killing us.
    with signals_blocked() as signals:
        _run(config_path, signals, adjust)


def _run(
    config_path: Path | None, signals: SignalWaiter, adjust: Callable[[Config], Config]
) -> None:
    from .engine import Exporter
    from .reload import Reloader
    from .server import HttpServer

    host, loaded = load_or_fail(config_path)
    config = adjust(loaded)
    setup_logging(config.exporter.log_level, config.exporter.log_format)
    try:
        exporter = Exporter(config, host)
    except StoreError as e:
        raise Failure(str(e)) from e
    reloader = Reloader(exporter, host, config_path or default_config_path(), adjust)
    try:
        server = HttpServer(
            exporter, config.exporter.listen_host, config.exporter.listen_port, reloader
        )
    except (OSError, ssl.SSLError) as e:
        exporter.stop()
        raise Failure(f"cannot listen on {config.exporter.listen}: {bind_problem(e)}") from e
    exporter.start()
    server.start()
    log.info("viber-exporter %s listening on %s", __version__, server.bound)
    warn_if_open(config)
    signals.wait(reloader.reload)
    server.stop()
    exporter.stop(timeout=STOP_TIMEOUT)
    log.info("stopped")


def warn_if_open(config: Config) -> None:
    """Say so when anyone who can reach the port may write (register, delete, reload)."""
    exporter = config.exporter
    if exporter.api_token is None and not is_loopback(exporter.listen_host):
        log.warning(
            "listening beyond loopback without exporter.api_token: the write API "
            "(registrations, deletions, reload) refuses other hosts, but takes anything a "
            "proxy on this host forwards; set api_token (e.g. "
            '"${VIBER_EXPORTER_API_TOKEN}") to require a token from every client'
        )


@cli.command(short_help="A demo with mock providers; no credentials needed.")
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

    address = split_listen(listen)
    if address is None:
        raise click.BadParameter(f"{LISTEN_HINT}, got {listen!r}", param_hint="--listen")
    with signals_blocked() as signals:
        setup_logging("info", "text")
        try:
            running = Demo(load_plugins(), address[0], address[1], state)
        except OSError as e:
            raise Failure(f"cannot listen on {listen}: {bind_problem(e)}") from e
        running.start(click.echo)
        signals.wait()
        running.stop()
    click.echo("demo stopped")


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
        from .probe import check_online

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
    from .probe import run_probe

    _, config = load_or_fail(config_path)
    if provider not in config.providers:
        raise Failure(f"no provider instance {provider!r} in the configuration")
    report, ok = run_probe(config.providers[provider], message_id)
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    if not ok:
        raise Failure(f"lookup failed: {report['result']['outcome']}")


# -- watch: a client of a running exporter's API -----------------------------------------


url_option = click.option(
    "--url", help="The exporter's address (default: from the config's listen)."
)


@cli.group(short_help="Register, list and delete watched messages.")
def watch() -> None:
    """Register, list and delete watched messages on a running exporter.

    Writing needs $VIBER_EXPORTER_API_TOKEN when the exporter sets exporter.api_token
    (without one, only loopback clients may write)."""


@watch.command("add", short_help="Register message ids (or campaigns) to watch.")
@click.argument("provider")
@click.argument("ids", metavar="ID...", nargs=-1)
@click.option(
    "--campaign",
    "campaigns",
    multiple=True,
    metavar="CAMPAIGN",
    help="A campaign id: watch every message of it (any plugin that lists campaigns; for Routee, its campaignTrackingId). Repeatable.",
)
@click.option("--sent-at", help="RFC 3339 send time for all IDs, e.g. 2026-11-23T10:00:00Z.")
@click.option(
    "--ttl",
    metavar="DURATION",
    help="The messages' validity, e.g. 24h: one poll just after it ends while pending.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NAME=VALUE",
    help="A message label declared in [metrics.labels.NAME], for all IDs. Repeatable.",
)
@url_option
@config_option
def watch_add(
    provider: str,
    ids: Sequence[str],
    campaigns: Sequence[str],
    sent_at: str | None,
    ttl: str | None,
    labels: Sequence[str],
    url: str | None,
    config_path: Path | None,
) -> None:
    """Register message ids of one provider instance, or (--campaign) whole campaigns:
    their messages are found by listing the campaign, and each is then accounted for as
    if registered alone."""
    if not ids and not campaigns:
        raise click.UsageError("give at least one ID or --campaign")
    extra: dict[str, Any] = {"sent_at": sent_at} if sent_at else {}
    if ttl:
        extra["ttl"] = ttl
    if labels:
        extra["labels"] = _label_options(labels)
    items = [{"provider": provider, "id": i, **extra} for i in ids]
    items += [{"provider": provider, "campaign": c, **extra} for c in campaigns]
    result = ApiClient(url, config_path).call("POST", "/api/v1/messages", json={"messages": items})
    click.echo(f"accepted {result['accepted']}, duplicates {result['duplicates']}")


def _label_options(options: Sequence[str]) -> dict[str, str]:
    labels = {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{option!r} is not NAME=VALUE", param_hint="--label")
        labels[name.strip()] = value
    return labels


Row = tuple[int, dict[str, Any]]  # (line number in the file, registration item)
#: the columns an import file's header may name; label.NAME columns too
IMPORT_COLUMNS = ("provider", "id", "sent_at", "ttl", "labels")


def _count_lines(path: Path) -> int:
    """Lines in a file, for the progress of an import (a quick pass over its bytes)."""
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _csv_rows(path: Path, refused: list[tuple[int, str]]) -> Iterator[Row]:
    """The rows of an import file; a row of the wrong shape goes to ``refused``.

    Without a header the columns are provider,id[,sent_at]; a header (a first line
    starting "provider,id") may name sent_at, ttl, labels (NAME=VALUE;NAME=VALUE) and
    label.NAME columns, in any order after provider and id."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if line == 1 and [c.strip().lower() for c in row[:2]] == ["provider", "id"]:
                header = [c.strip() for c in row]
                unknown = [
                    c
                    for c in header
                    if c.lower() not in IMPORT_COLUMNS and not c.startswith("label.")
                ]
                if unknown:
                    raise Failure(f"{path}:1: unknown column(s): {', '.join(unknown)}")
                continue
            if header is None:
                if len(row) < 2 or len(row) > 3:
                    refused.append(
                        (line, f"expected provider,id[,sent_at], got {len(row)} columns")
                    )
                    continue
                header_row = ["provider", "id", "sent_at"][: len(row)]
            elif len(row) != len(header):
                refused.append(
                    (line, f"expected {len(header)} columns as the header, got {len(row)}")
                )
                continue
            else:
                header_row = header
            item: dict[str, Any] = {}
            labels: dict[str, str] = {}
            for name, value in zip(header_row, row, strict=True):
                value = value.strip()
                if name.startswith("label."):
                    if value:
                        labels[name.removeprefix("label.")] = value
                elif name.lower() == "labels":
                    for pair in filter(None, value.split(";")):
                        key, _, text = pair.partition("=")
                        labels[key.strip()] = text.strip()
                elif value or name.lower() in ("provider", "id"):
                    item[name.lower()] = value
            if labels:
                item["labels"] = labels
            yield line, item


class Importer:
    """Sends rows in batches; the API refuses a whole batch when any row is invalid, so
    the invalid rows are set aside (with their line) and the rest is sent again."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.accepted = self.duplicates = 0
        self.refused: list[tuple[int, str]] = []

    def send(self, batch: list[Row]) -> None:
        while batch:
            try:
                result = self.client.call(
                    "POST", "/api/v1/messages", json={"messages": [item for _, item in batch]}
                )
            except ClientFailure as e:
                bad = {
                    d["index"]: str(d.get("error"))
                    for d in e.details
                    if isinstance(d, dict) and isinstance(d.get("index"), int)
                }
                if e.status != 400 or not bad:
                    raise ClientFailure(
                        f"{e.message}; stopped at line {batch[0][0]} with "
                        f"{self.accepted + self.duplicates} rows stored before it",
                        e.status,
                    ) from e
                self.refused.extend((batch[i][0], problem) for i, problem in bad.items())
                batch = [row for i, row in enumerate(batch) if i not in bad]
                continue
            self.accepted += result["accepted"]
            self.duplicates += result["duplicates"]
            return


@watch.command("import", short_help="Register every row of a CSV file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Say how far it got after each batch (default: when stderr is a terminal).",
)
@url_option
@config_option
def watch_import(
    file: Path, progress: bool | None, url: str | None, config_path: Path | None
) -> None:
    """Register every row of a CSV file (columns: provider,id[,sent_at]; or a header line
    "provider,id,..." naming any of sent_at, ttl, labels (NAME=VALUE;…) and label.NAME).

    Valid rows are stored even when others are not: each refused row is reported as
    FILE:LINE with the reason, the summary says exactly how many rows were stored, and
    the exit status is 1 if any row was refused. Importing the same file again is safe:
    rows already stored count as duplicates."""
    importer = Importer(ApiClient(url, config_path))
    show = sys.stderr.isatty() if progress is None else progress
    lines = _count_lines(file) if show else 0
    batch: list[Row] = []
    read = 0

    def send() -> None:
        importer.send(batch)
        if show:
            done = 100 * read // max(lines, 1)
            click.echo(
                f"\r{min(done, 100):3d} % of {lines} lines: stored "
                f"{importer.accepted + importer.duplicates}, refused {len(importer.refused)}",
                err=True,
                nl=False,
            )

    for row in _csv_rows(file, importer.refused):
        batch.append(row)
        read = row[0]
        if len(batch) == IMPORT_BATCH:
            send()
            batch = []
    read = lines
    send()
    if show:
        click.echo("", err=True)
    for line, problem in sorted(importer.refused):
        click.echo(f"{file}:{line}: {problem}", err=True)
    stored = importer.accepted + importer.duplicates
    click.echo(
        f"stored {stored} rows: accepted {importer.accepted}, duplicates "
        f"{importer.duplicates}; refused {len(importer.refused)}"
    )
    if importer.refused:
        raise Failure(f"{len(importer.refused)} row(s) refused, listed above")


LIST_COLUMNS = ("PROVIDER", "ID", "STATUS", "REASON", "POLLS", "NEXT_POLL", "LABELS")


@watch.command("list", short_help="List stored messages, tab-separated.")
@click.option("--provider", help="Only this provider instance.")
@click.option(
    "--status", type=click.Choice(["pending", "delivered", "read", "failed", "expired", "unknown"])
)
@click.option("--no-header", is_flag=True, help="Leave out the column names.")
@url_option
@config_option
def watch_list(
    provider: str | None,
    status: str | None,
    no_header: bool,
    url: str | None,
    config_path: Path | None,
) -> None:
    """List stored messages, tab-separated, after a header line: provider, message id,
    status, reason, polls so far, next poll (RFC 3339, "-" once settled), labels."""
    client = ApiClient(url, config_path)
    params: dict[str, str] = {"limit": "1000"}
    if provider:
        params["provider"] = provider
    if status:
        params["status"] = status
    if not no_header:
        click.echo("\t".join(LIST_COLUMNS))
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
                ",".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items()) or "-",
            ]
            click.echo("\t".join(fields))
        if not page["next"]:
            break
        params["after"] = page["next"]


@watch.command("delete", short_help="Stop watching messages and forget them.")
@click.argument("provider")
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@url_option
@config_option
def watch_delete(
    provider: str, ids: Sequence[str], url: str | None, config_path: Path | None
) -> None:
    """Delete stored messages of one provider instance: they are no longer polled, and
    what was already counted stays counted. Exit 1 if any id was not stored."""
    client = ApiClient(url, config_path)
    missing = []
    for message_id in ids:
        path = f"/api/v1/messages/{quote(provider, safe='')}/{quote(message_id, safe='')}"
        try:
            client.call("DELETE", path)
        except ClientFailure as e:
            if e.status != 404:
                raise
            missing.append(message_id)
    click.echo(f"deleted {len(ids) - len(missing)}; not stored {len(missing)}")
    if missing:
        raise Failure(f"not stored: {', '.join(missing[:20])}")


@cli.group(short_help="Move the watched set between stores.")
def state() -> None:
    """The watched set's stores: a SQLite file or a PostgreSQL database."""


@state.command("copy", short_help="Copy a watched set from one store to another.")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="FILE_OR_URL",
    help="The store to read: a SQLite file or a postgresql:// URL.",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="FILE_OR_URL",
    help="The store to write (created and migrated if new).",
)
@click.option("--force", is_flag=True, help="Copy into a store that already holds messages.")
def state_copy(source: str, target: str, force: bool) -> None:
    """Copy every message, with what was already counted of it, and every campaign,
    from one store to another: SQLite to PostgreSQL when moving to replicas, and back.

    Stop the exporters using either store first. A target that holds messages is
    refused unless --force, which replaces the rows with the same keys: copying twice
    gives the same target. Give a PostgreSQL password through PGPASSWORD or
    ~/.pgpass rather than in the URL, where other users can see it in the process list.
    """
    from .store.location import copy_state, open_store

    if source == target:
        raise Failure("--from and --to are the same store")
    try:
        source_store = open_store(source, must_exist=True)
    except StoreError as e:
        raise Failure(f"cannot read --from: {e}") from e
    try:
        target_store = open_store(target)
    except StoreError as e:
        source_store.close()
        raise Failure(f"cannot open --to: {e}") from e
    try:
        messages, campaigns = copy_state(
            source_store,
            target_store,
            force=force,
            progress=_progress_line(),
        )
    except StoreError as e:
        raise Failure(str(e)) from e
    finally:
        source_store.close()
        target_store.close()
        if sys.stderr.isatty():
            click.echo(err=True)  # end the progress line
    click.echo(
        f"copied {messages} messages and {campaigns} campaigns "
        f"from {source_store.description} to {target_store.description}"
    )


def _progress_line() -> Callable[[int, int], None]:
    """One progress line, rewritten in place, on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda messages, campaigns: None

    def show(messages: int, campaigns: int) -> None:
        click.echo(f"\r  {messages} messages, {campaigns} campaigns", err=True, nl=False)

    return show


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

"""``watch``: a client of a running exporter's API (add, import, list, delete)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from ..client import ApiClient, ClientFailure
from .common import Failure, cli, config_option, url_option

IMPORT_BATCH = 1000


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

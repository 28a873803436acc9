"""``state copy``: moving the watched set between stores."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from ..errors import StoreError
from .common import Failure, cli


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
    from ..store.location import copy_state, open_store

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

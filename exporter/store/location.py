"""Choosing the store backend: PostgreSQL when ``exporter.state_url`` is set, else the
SQLite file at ``exporter.state_path``; and copying a watched set between the two."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError
from .base import Store
from .sqlite import SqliteStore

COPY_PAGE = 2000


def is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a PostgreSQL state, or None (its password is then
    remembered for redaction)."""
    if not is_url(url):
        return "must be a PostgreSQL URI (postgresql://user@host:5432/database)"
    try:
        # Imported here: a SQLite user needs no psycopg.
        from . import postgres as store_postgres
    except ImportError as e:
        return f"needs psycopg ({e}): install the postgresql extra (pip install -e '.[postgresql]' in a clone)"
    return store_postgres.url_problem(url)


def open_store(location: str | Path, *, must_exist: bool = False) -> Store:
    """A store for a path (SQLite) or a ``postgresql://`` URL; with ``must_exist``, a
    missing one is a StoreError instead of a new, empty store."""
    if isinstance(location, str) and is_url(location):
        problem = url_problem(location)
        if problem:
            raise StoreError(f"the state URL {problem}")
        from .postgres import PostgresStore

        return PostgresStore(location, must_exist=must_exist)
    return SqliteStore(Path(location), must_exist=must_exist)


def copy_state(
    source: Store, target: Store, *, force: bool, progress: Callable[[int, int], None]
) -> tuple[int, int]:
    """Copy every message (counted flags included) and campaign from ``source`` to
    ``target``; return how many of each. Refuses a target that holds anything unless
    ``force``, which replaces the rows with the same keys (a second copy changes
    nothing). ``progress(messages, campaigns)`` is called after each page."""
    for store in (source, target):
        users = store.live_replicas()
        if users:
            raise StoreError(
                f"{store.description} is in use by {len(users)} running exporter(s) "
                f"({', '.join(users[:3])}); stop them first"
            )
    if not force and not target.is_empty():
        raise StoreError(
            f"the target {target.description} already holds messages; "
            "use --force to copy over them (rows with the same keys are replaced)"
        )
    target.import_label_values(source.label_values())  # the kept label values, as they are
    messages = campaigns = 0
    after: tuple[str, str] | None = None
    while page := source.page(after=after, limit=COPY_PAGE):
        target.import_rows(page, [])
        messages += len(page)
        after = (page[-1].provider, page[-1].id)
        progress(messages, campaigns)
    after = None
    while found := source.campaign_page(after, COPY_PAGE):
        target.import_rows([], found)
        campaigns += len(found)
        after = (found[-1].provider, found[-1].id)
        progress(messages, campaigns)
    target.recount()
    return messages, campaigns

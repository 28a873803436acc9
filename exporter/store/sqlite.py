"""The embedded store: a SQLite file in WAL mode at ``state_path``.

All writes go through one connection under one lock, each in one transaction
committed with ``synchronous=FULL`` before the caller hears about it. One process
owns the file, so it holds every polling lease and its in-memory counts are exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreError
from .base import SCHEMA_VERSION, Db, Store

#: Schema changes, in order: a store at version N runs every step after N, once.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE IF NOT EXISTS messages (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    registered_at REAL NOT NULL,
    sent_at REAL NOT NULL,
    sent_source INTEGER NOT NULL,
    status TEXT NOT NULL,
    provider_status TEXT,
    reason TEXT,
    delivered_at REAL,
    read_at REAL,
    price REAL,
    currency TEXT,
    sms_price REAL,
    cost_viber REAL NOT NULL DEFAULT 0,
    cost_sms REAL NOT NULL DEFAULT 0,
    counted INTEGER NOT NULL DEFAULT 0,   -- what was already counted (exactly once)
    country TEXT,
    polls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_poll_at REAL,
    next_poll REAL,                       -- NULL once settled
    last_error TEXT,
    settled_at REAL,
    PRIMARY KEY (provider, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_due ON messages (provider, next_poll) WHERE next_poll IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_settled ON messages (settled_at) WHERE settled_at IS NOT NULL;
""",
    ),
    (
        2,
        """
-- plugin-defined registration fields (JSON)
ALTER TABLE messages ADD COLUMN extra TEXT;
-- for the watches whose final look is overdue (Store.ended_before)
CREATE INDEX IF NOT EXISTS messages_age ON messages (provider, sent_at) WHERE next_poll IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_read_window ON messages (provider, delivered_at)
    WHERE next_poll IS NOT NULL AND status = 'delivered';
""",
    ),
    (
        3,
        """
-- the fallback leg (an SMS re-send): its channel and normalised status
ALTER TABLE messages ADD COLUMN fallback_channel TEXT;
ALTER TABLE messages ADD COLUMN fallback_status TEXT;
""",
    ),
    (
        4,
        """
-- campaigns: a message found in one is polled with it, never alone
ALTER TABLE messages ADD COLUMN campaign TEXT;
DROP INDEX IF EXISTS messages_due;
CREATE INDEX messages_due ON messages (provider, next_poll)
    WHERE next_poll IS NOT NULL AND campaign IS NULL;
CREATE INDEX messages_campaign ON messages (provider, campaign, next_poll)
    WHERE campaign IS NOT NULL;
CREATE TABLE campaigns (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    registered_at REAL NOT NULL,
    sent_at REAL NOT NULL,
    discover_until REAL NOT NULL,         -- late messages may still appear until then
    next_poll REAL,                       -- NULL once it needs no more sweeps
    polls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    last_poll_at REAL,
    last_error TEXT,
    settled_at REAL,
    PRIMARY KEY (provider, id)
) WITHOUT ROWID;
CREATE INDEX campaigns_due ON campaigns (provider, next_poll) WHERE next_poll IS NOT NULL;
""",
    ),
    (
        5,
        """
-- a message's validity (seconds from sent_at): one poll just after it ends
ALTER TABLE messages ADD COLUMN ttl REAL;
ALTER TABLE campaigns ADD COLUMN ttl REAL;
""",
    ),
    (
        6,
        """
-- message labels, bounded at registration (JSON), and the values each label keeps
ALTER TABLE messages ADD COLUMN labels TEXT;
ALTER TABLE campaigns ADD COLUMN labels TEXT;
CREATE TABLE label_values (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, value)
) WITHOUT ROWID;
""",
    ),
)
assert MIGRATIONS[-1][0] == SCHEMA_VERSION


class _WriterLock:
    """One process per SQLite file: an exclusive ``flock`` on ``<file>.lock``, which
    holds the owner's pid (so the refusal can name it). Not on the database file
    itself: closing any descriptor of that file would drop SQLite's own locks. The
    kernel releases it when the process ends, ``kill -9`` included."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise StoreError(
                f"the state store {str(path)!r} is in use by another process{pid}: one "
                "exporter per SQLite file (several replicas share exporter.state_url)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self._fd)  # closing the descriptor drops the flock


def _create_private(path: Path) -> None:
    """Create the state file with mode 0600 before SQLite opens it (it holds message ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


class SqliteStore(Store):
    """The watched set in one SQLite file; one process at a time."""

    db_errors = (sqlite3.Error,)
    probe_sql = f"PRAGMA user_version={SCHEMA_VERSION}"  # rewrites the header page

    def __init__(self, path: Path, *, must_exist: bool = False) -> None:
        """Open (creating unless ``must_exist``) and lock the file: a second process
        opening it gets a StoreError naming the first one's pid."""
        super().__init__(str(path))
        self.path = path
        self._lock = threading.Lock()
        if must_exist and not path.is_file():
            raise StoreError(f"there is no state store at {str(path)!r}")
        try:
            _create_private(path)
            self._writer = _WriterLock(path)
        except OSError as e:
            raise StoreError(f"cannot open the state store {str(path)!r}: {e}") from e
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._count_rows(self._db)
        except (sqlite3.Error, OSError, StoreError) as e:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            self._writer.release()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the state store {str(path)!r}: {e}") from e

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} was written by a newer viber-exporter (schema {version})"
            )
        for step, script in MIGRATIONS:
            if step > version:
                # One transaction per step: a crash leaves the store at a whole version.
                self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={step};\nCOMMIT;"
                )

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._db.close()
                self._writer.release()
                self.closed = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Db]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Db]:
        with self._lock:
            yield self._db

"""The shared store: a PostgreSQL database at ``state_url``, for several replicas.

Connections come from a psycopg pool; every write is one transaction (the rows it
rewrites locked with ``FOR UPDATE``), committed before the caller hears about it. The
schema is migrated at start-up under a transaction-scoped advisory lock, so replicas
that start together migrate once. The same database holds the polling leases
(:meth:`PostgresStore.heartbeat`): one row per provider instance naming the replica
that polls it until ``expires_at``, a time of the database's clock, so replicas'
clocks need not agree.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import StoreError
from ..secrets import Secret
from .base import _COLUMNS, SCHEMA_VERSION, Cursor, Db, Store

#: Schema changes, in order. PostgreSQL support began at version 4, so its first step
#: creates that schema whole; later steps are numbered as SQLite's are.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        4,
        """
CREATE TABLE messages (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    sent_source INTEGER NOT NULL,
    status TEXT NOT NULL,
    provider_status TEXT,
    reason TEXT,
    delivered_at DOUBLE PRECISION,
    read_at DOUBLE PRECISION,
    price DOUBLE PRECISION,
    currency TEXT,
    sms_price DOUBLE PRECISION,
    cost_viber DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_sms DOUBLE PRECISION NOT NULL DEFAULT 0,
    counted INTEGER NOT NULL DEFAULT 0,   -- what was already counted (exactly once)
    country TEXT,
    polls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_poll_at DOUBLE PRECISION,
    next_poll DOUBLE PRECISION,           -- NULL once settled
    last_error TEXT,
    settled_at DOUBLE PRECISION,
    extra TEXT,                           -- plugin-defined registration fields (JSON)
    fallback_channel TEXT,
    fallback_status TEXT,
    campaign TEXT,
    PRIMARY KEY (provider, id)
);
CREATE INDEX messages_due ON messages (provider, next_poll)
    WHERE next_poll IS NOT NULL AND campaign IS NULL;
CREATE INDEX messages_settled ON messages (settled_at) WHERE settled_at IS NOT NULL;
CREATE INDEX messages_age ON messages (provider, sent_at) WHERE next_poll IS NOT NULL;
CREATE INDEX messages_read_window ON messages (provider, delivered_at)
    WHERE next_poll IS NOT NULL AND status = 'delivered';
CREATE INDEX messages_campaign ON messages (provider, campaign, next_poll)
    WHERE campaign IS NOT NULL;
CREATE TABLE campaigns (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    discover_until DOUBLE PRECISION NOT NULL,
    next_poll DOUBLE PRECISION,
    polls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    last_poll_at DOUBLE PRECISION,
    last_error TEXT,
    settled_at DOUBLE PRECISION,
    PRIMARY KEY (provider, id)
);
CREATE INDEX campaigns_due ON campaigns (provider, next_poll) WHERE next_poll IS NOT NULL;
-- one poller per provider instance: who holds it, until when (the database's clock)
CREATE TABLE leases (
    provider TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    taken INTEGER NOT NULL DEFAULT 1      -- how many times it changed hands
);
-- the live replicas, so each takes its fair share of the leases
CREATE TABLE replicas (
    holder TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);
""",
    ),
    (
        5,
        """
ALTER TABLE messages ADD COLUMN ttl DOUBLE PRECISION;
ALTER TABLE campaigns ADD COLUMN ttl DOUBLE PRECISION;
""",
    ),
    (
        6,
        """
ALTER TABLE messages ADD COLUMN labels TEXT;
ALTER TABLE campaigns ADD COLUMN labels TEXT;
CREATE TABLE label_values (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, value)
);
""",
    ),
)
assert MIGRATIONS[-1][0] == SCHEMA_VERSION
#: the advisory lock the migrations run under (any constant shared by all replicas)
MIGRATION_LOCK = 0x76_69_62_65_72  # "viber"
#: the advisory lock of the writers that add kept label values
LABEL_LOCK = 0x6C_61_62_65_6C  # "label"
#: seconds to wait for a connection before a request answers 503
CONNECT_WAIT = 3.0
#: seconds between recounts of the messages other replicas changed, at least; a
#: recount reads every row (about 0.2 s at a million), so the pause also grows with its
#: cost: the database spends at most 1/RECOUNT_SHARE of its time recounting per replica
RECOUNT_EVERY = 2.0
RECOUNT_SHARE = 50


#: new messages are copied into a temporary table, then inserted from it in one statement
_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS new_messages "
    "(LIKE messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_NAMES = ", ".join(_COLUMNS)  # the column names are ours: nothing here comes from input
_COPY = f"COPY new_messages ({_NAMES}) FROM STDIN"
_FROM_STAGE = (
    f"INSERT INTO messages ({_NAMES}) SELECT {_NAMES} "  # noqa: S608
    "FROM new_messages ORDER BY provider, id ON CONFLICT (provider, id) DO NOTHING"
)


def describe(url: str) -> str:
    """``postgresql://user@host:port/db``: the URL without password or options."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def url_problem(url: str) -> str | None:
    """Why this is not a usable libpq URI, or None; registers its password as a secret."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "is not a valid PostgreSQL URI"
    if parts.get("password"):
        Secret(str(parts["password"]))  # remembered for redaction
    return None


class _Conn:
    """A psycopg connection behind the shared queries' ``?`` parameters."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Cursor:
        cursor = self.conn.cursor()
        cursor.executemany(sql.replace("?", "%s"), rows)
        return cursor


class PostgresStore(Store):
    """The watched set in a PostgreSQL database shared by every replica."""

    lock_rows = " FOR UPDATE"
    db_errors = (psycopg.Error, PoolTimeout)
    probe_sql = "UPDATE viber_schema SET version = version"
    shared = True

    def __init__(self, url: str, *, pool_size: int = 8, must_exist: bool = False) -> None:
        super().__init__(describe(url))
        self._recounted = 0.0
        self._recount_pause = RECOUNT_EVERY
        self._recount_lock = threading.Lock()
        try:
            # One direct connection first: an unreachable server or a refused login fails
            # here at once, with libpq's own reason (the pool would only time out).
            with psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_WAIT)) as conn:
                if must_exist and not _holds_state(conn):
                    raise StoreError(f"{self.description} holds no viber-exporter state")
                self._migrate(conn)
                self._count_rows(_Conn(conn))
        except psycopg.Error as e:
            raise StoreError(f"cannot open the state store {self.description}: {e}") from e
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_WAIT)},
            # a connection broken by a server restart is found and replaced here
            check=ConnectionPool.check_connection,
            timeout=CONNECT_WAIT,
            reconnect_timeout=math.inf,  # keep trying: the server comes back
            open=False,
            name="viber-exporter",
        )
        self._pool.open(wait=False)

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Replicas starting together wait here; the first migrates, the others then
            # find the schema current.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS viber_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM viber_schema").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.description} was written by a newer viber-exporter (schema {version})"
                )
            for step, script in MIGRATIONS:
                if step > version:
                    conn.execute(script.encode())  # several statements: no parameters
                    version = step
            if row is None:
                conn.execute("INSERT INTO viber_schema VALUES (%s)", (version,))
            else:
                conn.execute("UPDATE viber_schema SET version = %s", (version,))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool.close(timeout=2.0)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Db]:
        with self._pool.connection() as conn, conn.transaction():
            yield _Conn(conn)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Db]:
        with self._pool.connection() as conn:
            yield _Conn(conn)

    def _insert_new(self, db: Db, rows: Sequence[tuple[object, ...]]) -> int:
        """A batch's rows by COPY into a temporary table, then one INSERT … SELECT that
        skips the ids already stored: a few round trips per batch, not one per row."""
        if not rows:
            return 0
        assert isinstance(db, _Conn)
        db.conn.execute(_STAGE)
        with db.conn.cursor() as cursor:
            with cursor.copy(_COPY) as copy:
                # In key order: two replicas inserting overlapping batches then wait for
                # each other's rows in one order, never in a circle (no deadlock).
                for row in sorted(rows, key=lambda row: str(row[1])):
                    copy.write_row(row)
            inserted = cursor.execute(_FROM_STAGE).rowcount
            cursor.execute("DELETE FROM new_messages")  # a second batch in this transaction
        return inserted

    def _lock_label_values(self, db: Db) -> None:
        # Two replicas adding the last kept value of a label at once would both see room.
        db.execute("SELECT pg_advisory_xact_lock(?)", (LABEL_LOCK,))

    def _retryable(self, error: Exception) -> bool:
        return isinstance(
            error,
            pg_errors.UniqueViolation | pg_errors.SerializationFailure | pg_errors.DeadlockDetected,
        )

    def available(self) -> bool:
        if not super().available():
            return False
        try:
            with self._pool.connection(timeout=1.0) as conn:
                conn.execute("SELECT 1")
            return True
        except (psycopg.Error, PoolTimeout):
            return False

    def refresh_counts(self) -> None:
        """Recount what other replicas changed: every RECOUNT_EVERY seconds, or less
        often when a recount is slow (RECOUNT_SHARE). Between recounts the counts move
        with this replica's own commits."""
        with self._recount_lock:
            started = time.monotonic()
            if started - self._recounted < self._recount_pause:
                return
            self._recounted = started
        self.recount()
        cost = time.monotonic() - started
        self._recount_pause = max(RECOUNT_EVERY, cost * RECOUNT_SHARE)

    # -- leases --------------------------------------------------------------------------
    def heartbeat(self, holder: str, names: Sequence[str], ttl: float) -> set[str]:
        """Keep this replica's leases, take its fair share of free ones, give back extra.

        A lease is free when its ``expires_at`` has passed (its holder died or lost the
        database) or it was never taken. The fair share is the number of provider
        instances over the number of live replicas, rounded up, so polling spreads
        across replicas and moves back when one joins.
        """
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO replicas VALUES (?, now()) "
                    "ON CONFLICT (holder) DO UPDATE SET seen_at = now()",
                    (holder,),
                )
                db.execute(
                    "DELETE FROM replicas WHERE seen_at < now() - make_interval(secs => ?)",
                    (ttl * 10,),
                )
                live = db.execute(
                    "SELECT COUNT(*) FROM replicas WHERE seen_at >= now() - make_interval(secs => ?)",
                    (ttl,),
                ).fetchone()[0]
                fair = math.ceil(len(names) / max(1, live))
                rows = db.execute(
                    "SELECT provider, holder = ? FROM leases "
                    "WHERE provider = ANY(?) AND expires_at > now()",
                    (holder, list(names)),
                ).fetchall()
                held = sorted(p for p, mine in rows if mine)
                taken = {p for p, mine in rows if not mine}
                free = [n for n in sorted(names) if n not in taken and n not in held]
                keep, give_back = held[:fair], held[fair:]
                got: set[str] = set()
                for provider in sorted(keep + free[: max(0, fair - len(keep))]):
                    # Taken only if free or ours when the row is locked: of two replicas
                    # that race for a free lease, the second finds it taken and skips it.
                    row = db.execute(
                        "INSERT INTO leases VALUES (?, ?, now() + make_interval(secs => ?)) "
                        "ON CONFLICT (provider) DO UPDATE SET holder = excluded.holder, "
                        "expires_at = excluded.expires_at, taken = leases.taken + "
                        "CASE WHEN leases.holder = excluded.holder THEN 0 ELSE 1 END "
                        "WHERE leases.holder = excluded.holder OR leases.expires_at <= now() "
                        "RETURNING provider",
                        (provider, holder, ttl),
                    ).fetchone()
                    if row is not None:
                        got.add(provider)
                if give_back:
                    db.execute(
                        "UPDATE leases SET expires_at = now() WHERE holder = ? AND provider = ANY(?)",
                        (holder, give_back),
                    )
        except self.db_errors as e:
            raise StoreError(f"cannot renew the polling leases: {e}") from e
        return got

    def release(self, holder: str, names: Sequence[str]) -> None:
        with contextlib.suppress(StoreError), self._write("the lease release") as db:
            db.execute(
                "UPDATE leases SET expires_at = now() WHERE holder = ? AND provider = ANY(?)",
                (holder, list(names)),
            )
            db.execute("DELETE FROM replicas WHERE holder = ?", (holder,))

    def live_replicas(self) -> list[str]:
        """The replicas that announced themselves within the last minute."""
        rows = self._read(
            "SELECT holder FROM replicas WHERE seen_at > now() - interval '1 minute' ORDER BY 1"
        )
        return [holder for (holder,) in rows]

    def leaders(self) -> dict[str, str]:
        """Provider instance → the replica holding its lease now."""
        rows = self._read("SELECT provider, holder FROM leases WHERE expires_at > now()")
        return {p: h for p, h in rows}


def _holds_state(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('viber_schema') IS NOT NULL").fetchone()
    return bool(row and row[0])

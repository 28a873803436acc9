"""The watched set: a SQLite file in WAL mode at ``state_path``.

All writes go through one connection under one lock, each batch in one transaction
committed with ``synchronous=FULL`` before the caller hears about it. The store also
keeps, in memory, the number of messages per provider and status and the number
still watched, updated after each commit, so the gauges never query the database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from .errors import StoreError, WatchedSetFull
from .model import Status
from .state import CampaignState, Counted, Event, MessageState, SentSource

SCHEMA_VERSION = 4
_COLUMNS = tuple(f.name for f in fields(MessageState))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM messages"
_UPSERT = (
    f"INSERT OR REPLACE INTO messages ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
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
)
assert MIGRATIONS[-1][0] == SCHEMA_VERSION

#: A new message: (id, sent_at) or (id, sent_at, extra JSON).
NewMessage = tuple[str, float | None] | tuple[str, float | None, str | None]

#: An update function: given the stored state (None if absent), return the state to
#: store (None: leave the row alone) and the events the change produces.
Update = Callable[[MessageState | None], tuple[MessageState | None, list[Event]]]


def _row_to_state(row: Sequence[object]) -> MessageState:
    state = MessageState(*row)  # type: ignore[arg-type]
    state.status = Status(state.status)
    state.sent_source = SentSource(state.sent_source)
    state.counted = Counted(state.counted)
    return state


_STATUS, _SOURCE, _COUNTED = (_COLUMNS.index(c) for c in ("status", "sent_source", "counted"))
_CAMPAIGN_COLUMNS = tuple(f.name for f in fields(CampaignState))
_CAMPAIGN_SELECT = f"SELECT {', '.join(_CAMPAIGN_COLUMNS)} FROM campaigns"
_CAMPAIGN_UPSERT = (
    f"INSERT OR REPLACE INTO campaigns ({', '.join(_CAMPAIGN_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _CAMPAIGN_COLUMNS)})"
)
#: A new campaign: (campaign id, sent_at, how long to look for late messages).
NewCampaign = tuple[str, float | None, float]


def _state_to_row(state: MessageState) -> tuple[object, ...]:
    # Not dataclasses.astuple: it deep-copies, and this runs for every stored message.
    row = [getattr(state, name) for name in _COLUMNS]
    row[_STATUS] = state.status.value
    row[_SOURCE] = int(state.sent_source)
    row[_COUNTED] = int(state.counted)
    return tuple(row)


def _new_state(provider: str, item: NewMessage, now: float, first_poll_in: float) -> MessageState:
    message_id, sent_at = item[0], item[1]
    return MessageState(
        provider=provider,
        id=message_id,
        registered_at=now,
        sent_at=sent_at if sent_at is not None else now,
        sent_source=SentSource.GIVEN if sent_at is not None else SentSource.REGISTERED,
        next_poll=now + first_poll_in,
        extra=item[2] if len(item) > 2 else None,
    )


def _new_campaign(
    provider: str, item: NewCampaign, now: float, first_poll_in: float
) -> CampaignState:
    campaign_id, sent_at, discovery = item
    return CampaignState(
        provider=provider,
        id=campaign_id,
        registered_at=now,
        sent_at=sent_at if sent_at is not None else now,
        discover_until=now + discovery,
        next_poll=now + first_poll_in,
    )


def _campaign_row(state: CampaignState) -> tuple[object, ...]:
    return tuple(getattr(state, name) for name in _CAMPAIGN_COLUMNS)


def _create_private(path: Path) -> None:
    """Create the state file with mode 0600 before SQLite opens it (it holds message ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


class Store:
    """The persistent watched set. Thread-safe; one instance per state file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Counts have their own lock so a scrape never waits behind a slow commit.
        self._counts_lock = threading.Lock()
        try:
            _create_private(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self.status_counts: Counter[tuple[str, Status]] = Counter()
            self.watched: Counter[str] = Counter()
            self.campaigns_watched: Counter[str] = Counter()
            self._load_counts()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the state store {str(path)!r}: {e}") from e
        self.closed = False

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

    def _load_counts(self) -> None:
        rows = self._db.execute(
            "SELECT provider, status, next_poll IS NOT NULL, COUNT(*) FROM messages GROUP BY 1, 2, 3"
        )
        for provider, status, watched, count in rows:
            self.status_counts[(provider, Status(status))] += count
            if watched:
                self.watched[provider] += count
        campaigns = self._db.execute(
            "SELECT provider, COUNT(*) FROM campaigns WHERE next_poll IS NOT NULL GROUP BY 1"
        )
        for provider, count in campaigns:
            self.campaigns_watched[provider] += count

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._db.close()
                self.closed = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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

    # -- writes ------------------------------------------------------------------------
    def register(
        self,
        batches: Mapping[str, tuple[Sequence[NewMessage], float]],
        now: float,
        max_watched: int,
        campaigns: Mapping[str, tuple[Sequence[NewCampaign], float]] | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Store new messages (and campaigns) in one transaction, durable before this
        returns.

        ``batches`` maps a provider to its ``(id, sent_at)`` pairs and the delay before
        their first poll; ``campaigns`` likewise to its ``(campaign id, sent_at,
        discovery)``. Returns ``(accepted, duplicates)`` per provider, messages and
        campaigns together. Raises WatchedSetFull, storing nothing, when the new
        messages would not fit (a campaign's messages are checked as they are found).
        """
        insert = _UPSERT.replace("INSERT OR REPLACE", "INSERT OR IGNORE")
        insert_campaign = _CAMPAIGN_UPSERT.replace("INSERT OR REPLACE", "INSERT OR IGNORE")
        result: dict[str, tuple[int, int]] = {}
        new_campaigns: Counter[str] = Counter()
        with self._lock:
            try:
                with self._transaction() as db:
                    for provider, (items, first_poll_in) in batches.items():
                        rows = [
                            _state_to_row(_new_state(provider, item, now, first_poll_in))
                            for item in items
                        ]
                        accepted = db.executemany(insert, rows).rowcount
                        result[provider] = (accepted, len(rows) - accepted)
                    new_total = sum(accepted for accepted, _ in result.values())
                    if self.total_watched() + new_total > max_watched:
                        raise WatchedSetFull(
                            f"the watched set is full (polling.max_watched = {max_watched})"
                        )
                    for provider, (wanted, first_poll_in) in (campaigns or {}).items():
                        rows = [
                            _campaign_row(_new_campaign(provider, item, now, first_poll_in))
                            for item in wanted
                        ]
                        accepted = db.executemany(insert_campaign, rows).rowcount
                        new_campaigns[provider] += accepted
                        before = result.get(provider, (0, 0))
                        result[provider] = (
                            before[0] + accepted,
                            before[1] + len(rows) - accepted,
                        )
            except sqlite3.Error as e:
                raise StoreError(f"cannot store registrations: {e}") from e
            with self._counts_lock:
                for provider, (accepted, _) in result.items():
                    messages = accepted - new_campaigns[provider]
                    self.watched[provider] += messages
                    self.status_counts[(provider, Status.PENDING)] += messages
                self.campaigns_watched.update(new_campaigns)
        return result

    def apply(
        self,
        provider: str,
        updates: Sequence[tuple[str, Update]],
        *,
        max_watched: int | None = None,
    ) -> list[Event]:
        """Run each update against the current row inside one transaction; return the events.

        Reading the row inside the transaction (not earlier, when the poll started)
        keeps a callback and a poll for the same message from overwriting each other.
        With ``max_watched``, updates that create messages (pushed reports of messages
        not registered yet) raise WatchedSetFull, storing nothing, when the new ones
        would not fit: checked inside the transaction, as registrations are.
        """
        events: list[Event] = []
        changes: list[tuple[tuple[Status, bool] | None, MessageState]] = []
        with self._lock:
            try:
                with self._transaction() as db:
                    for message_id, update in updates:
                        row = db.execute(
                            f"{_SELECT} WHERE provider = ? AND id = ?", (provider, message_id)
                        ).fetchone()
                        old = _row_to_state(row) if row else None
                        before = (old.status, old.watched) if old else None
                        new, new_events = update(old)
                        if new is None:
                            continue
                        db.execute(_UPSERT, _state_to_row(new))
                        events.extend(new_events)
                        changes.append((before, new))
                    created = sum(1 for before, new in changes if before is None and new.watched)
                    limit = max_watched if max_watched is not None else float("inf")
                    if created and self.total_watched() + created > limit:
                        raise WatchedSetFull(
                            f"the watched set is full (polling.max_watched = {max_watched})"
                        )
            except sqlite3.Error as e:
                raise StoreError(f"cannot store message updates: {e}") from e
            with self._counts_lock:
                for before, new in changes:
                    if before is not None:
                        status, watched = before
                        self.status_counts[(provider, status)] -= 1
                        self.watched[provider] -= watched
                    self.status_counts[(provider, new.status)] += 1
                    self.watched[provider] += new.watched
        return events

    def delete(self, provider: str, message_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT status, next_poll IS NOT NULL FROM messages WHERE provider = ? AND id = ?",
                (provider, message_id),
            ).fetchone()
            if row is None:
                return False
            with self._transaction() as db:
                db.execute(
                    "DELETE FROM messages WHERE provider = ? AND id = ?", (provider, message_id)
                )
            with self._counts_lock:
                self.status_counts[(provider, Status(row[0]))] -= 1
                self.watched[provider] -= row[1]
        return True

    def purge_settled(self, settled_before: float) -> int:
        """Forget messages settled before the given time (``polling.retention``)."""
        with self._lock:
            doomed = self._db.execute(
                "SELECT provider, status, COUNT(*) FROM messages WHERE settled_at < ? "
                "AND next_poll IS NULL GROUP BY 1, 2",
                (settled_before,),
            ).fetchall()
            if not doomed:
                return 0
            with self._transaction() as db:
                db.execute(
                    "DELETE FROM messages WHERE settled_at < ? AND next_poll IS NULL",
                    (settled_before,),
                )
                db.execute(
                    "DELETE FROM campaigns WHERE settled_at < ? AND next_poll IS NULL",
                    (settled_before,),
                )
            with self._counts_lock:
                for provider, status, count in doomed:
                    self.status_counts[(provider, Status(status))] -= count
        return sum(count for _, _, count in doomed)

    # -- reads -------------------------------------------------------------------------
    def due(self, provider: str, now: float, limit: int) -> list[MessageState]:
        """Watched messages whose next poll time has come, most overdue first."""
        with self._lock:
            rows = self._db.execute(
                f"{_SELECT} WHERE provider = ? AND next_poll IS NOT NULL AND campaign IS NULL "
                "AND next_poll <= ? ORDER BY next_poll LIMIT ?",
                (provider, now, limit),
            ).fetchall()
        return [_row_to_state(row) for row in rows]

    def ended_before(
        self,
        provider: str,
        *,
        delivered_before: float,
        sent_before: float,
        registered_before: float,
        limit: int,
    ) -> list[str]:
        """Ids of watched messages delivered before ``delivered_before`` (still
        ``delivered``) or, for any other status, sent before ``sent_before``; either way
        registered before ``registered_before``. The poller uses it to find watches whose
        final look is overdue (:func:`exporter.accounting.give_up_at` re-checks each).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
                "AND status = 'delivered' AND delivered_at < ? AND registered_at < ? LIMIT ?",
                (provider, delivered_before, registered_before, limit),
            ).fetchall()
            rows += self._db.execute(
                "SELECT id FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
                "AND status != 'delivered' AND sent_at < ? AND registered_at < ? LIMIT ?",
                (provider, sent_before, registered_before, limit),
            ).fetchall()
        return [row[0] for row in rows[:limit]]

    def oldest_pending(self, provider: str) -> float | None:
        """The sent time of the oldest watched message still ``pending``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(sent_at) FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
                "AND status = 'pending'",
                (provider,),
            ).fetchone()
        return row[0] if row else None

    def oldest_next_poll(self, provider: str) -> float | None:
        """The earliest next poll of a message polled alone or of a campaign."""
        with self._lock:
            alone = self._db.execute(
                "SELECT MIN(next_poll) FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
                "AND campaign IS NULL",
                (provider,),
            ).fetchone()[0]
            campaign = self._db.execute(
                "SELECT MIN(next_poll) FROM campaigns WHERE provider = ? AND next_poll IS NOT NULL",
                (provider,),
            ).fetchone()[0]
        times = [t for t in (alone, campaign) if t is not None]
        return min(times) if times else None

    # -- campaigns -------------------------------------------------------------------
    def due_campaigns(self, provider: str, now: float, limit: int) -> list[CampaignState]:
        with self._lock:
            rows = self._db.execute(
                f"{_CAMPAIGN_SELECT} WHERE provider = ? AND next_poll IS NOT NULL "
                "AND next_poll <= ? ORDER BY next_poll LIMIT ?",
                (provider, now, limit),
            ).fetchall()
        return [CampaignState(*row) for row in rows]

    def get_campaign(self, provider: str, campaign_id: str) -> CampaignState | None:
        with self._lock:
            row = self._db.execute(
                f"{_CAMPAIGN_SELECT} WHERE provider = ? AND id = ?", (provider, campaign_id)
            ).fetchone()
        return CampaignState(*row) if row else None

    def campaign_watched(self, provider: str, campaign_id: str) -> tuple[set[str], float | None]:
        """The ids of a campaign's watched messages, and their earliest next poll."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, next_poll FROM messages WHERE provider = ? AND campaign = ? "
                "AND next_poll IS NOT NULL",
                (provider, campaign_id),
            ).fetchall()
        return {row[0] for row in rows}, min((row[1] for row in rows), default=None)

    def save_campaign(self, state: CampaignState) -> None:
        """Store a campaign's state after a sweep (durable before this returns)."""
        with self._lock:
            try:
                with self._transaction() as db:
                    before = db.execute(
                        "SELECT next_poll IS NOT NULL FROM campaigns WHERE provider = ? AND id = ?",
                        (state.provider, state.id),
                    ).fetchone()
                    db.execute(_CAMPAIGN_UPSERT, _campaign_row(state))
            except sqlite3.Error as e:
                raise StoreError(f"cannot store the campaign: {e}") from e
            with self._counts_lock:
                was = bool(before[0]) if before else False
                self.campaigns_watched[state.provider] += int(state.watched) - int(was)

    def campaign_counts(self) -> dict[str, int]:
        """Watched campaigns per provider, from memory."""
        with self._counts_lock:
            return dict(self.campaigns_watched)

    def get(self, provider: str, message_id: str) -> MessageState | None:
        with self._lock:
            row = self._db.execute(
                f"{_SELECT} WHERE provider = ? AND id = ?", (provider, message_id)
            ).fetchone()
        return _row_to_state(row) if row else None

    def page(
        self,
        *,
        provider: str | None = None,
        status: Status | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[MessageState]:
        """Messages in (provider, id) order, starting after the cursor."""
        clauses, params = [], []
        if provider is not None:
            clauses.append("provider = ?")
            params.append(provider)
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if after is not None:
            clauses.append("(provider, id) > (?, ?)")
            params.extend(after)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"{_SELECT}{where} ORDER BY provider, id LIMIT ?", (*params, limit)
            ).fetchall()
        return [_row_to_state(row) for row in rows]

    def failure_reasons(self, provider: str, limit: int) -> list[str]:
        """The most frequent reasons of failed and expired messages, most frequent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason FROM messages WHERE provider = ? AND status IN ('failed', 'expired') "
                "AND reason IS NOT NULL GROUP BY reason ORDER BY COUNT(*) DESC, reason LIMIT ?",
                (provider, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def counts(self) -> tuple[dict[tuple[str, Status], int], dict[str, int]]:
        """Messages per (provider, status) and watched per provider, from memory."""
        with self._counts_lock:
            return dict(self.status_counts), dict(self.watched)

    def total_watched(self) -> int:
        with self._counts_lock:
            return sum(self.watched.values())

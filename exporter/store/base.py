"""The watched set: one interface, two backends.

:class:`Store` holds every query, written once in the SQL that SQLite and PostgreSQL
share (``?`` parameters, ``ON CONFLICT``, row values); a backend supplies connections,
transactions, its schema migrations and its errors:

- :class:`~viber_exporter.store.sqlite.SqliteStore`, the embedded default: one file in
  WAL mode, every write under one lock, ``synchronous=FULL``.
- :class:`~viber_exporter.store.postgres.PostgresStore`: a PostgreSQL server shared by
  several replicas, which also holds the leases that choose one poller per provider.

Every write commits before the caller hears about it. A change's "counted" flags are in
the row it changes, and the rows a change reads are locked for the transaction
(``FOR UPDATE`` on PostgreSQL; SQLite has one writer), so whichever writer commits an
event counts it and no other can. The store also keeps, in memory, the number of
messages per provider and status and the number still watched, updated after each
commit (and, on a shared server, recounted from it every few seconds), so a scrape
never queries the database.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any, ClassVar, NamedTuple, Protocol

from .. import labels as labels_module
from ..errors import StoreError, WatchedSetFull
from ..events import Event
from ..labels import Bounds
from ..model import Status
from .rows import WATCH_END_CASES, WATCH_END_SQL, CampaignState, Counted, MessageState, SentSource

SCHEMA_VERSION = 6
WRITE_PROBE_EVERY = 5.0  # seconds between readiness probes after a failed write
_COLUMNS = tuple(f.name for f in fields(MessageState))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM messages"
_INSERT = (
    f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_KEYS = ("provider", "id")
_UPDATE = (
    f"UPDATE messages SET {', '.join(f'{c} = ?' for c in _COLUMNS if c not in _KEYS)} "
    "WHERE provider = ? AND id = ?"
)
_CAMPAIGN_COLUMNS = tuple(f.name for f in fields(CampaignState))
_CAMPAIGN_SELECT = f"SELECT {', '.join(_CAMPAIGN_COLUMNS)} FROM campaigns"
_CAMPAIGN_INSERT = (
    f"INSERT INTO campaigns ({', '.join(_CAMPAIGN_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _CAMPAIGN_COLUMNS)})"
)
_IGNORE = " ON CONFLICT (provider, id) DO NOTHING"
_LABEL_IGNORE = " ON CONFLICT (name, value) DO NOTHING"


def _replace(columns: Sequence[str]) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in _KEYS)
    return f" ON CONFLICT (provider, id) DO UPDATE SET {sets}"


_CAMPAIGN_UPSERT = _CAMPAIGN_INSERT + _replace(_CAMPAIGN_COLUMNS)
_MESSAGE_UPSERT = _INSERT + _replace(_COLUMNS)
#: ids per ``IN (…)`` list (SQLite allows 32766 parameters; stay far below)
_CHUNK = 500
#: attempts of a write that lost a race with another replica (PostgreSQL only)
_ATTEMPTS = 5


class NewMessage(NamedTuple):
    """A message to register. Plain ``(id, sent_at)`` tuples are taken too."""

    id: str
    sent_at: float | None = None
    extra: str | None = None  # plugin-defined registration fields (JSON)
    ttl: float | None = None
    labels: Mapping[str, str] | None = None  # as given: bounded when stored


#: An update function: given the stored state (None if absent), return the state to
#: store (None: leave the row alone) and the events the change produces. It may run
#: more than once for one change (a transaction redone after a race with another
#: replica), so it must not count or collect anything outside what it returns.
Update = Callable[[MessageState | None], tuple[MessageState | None, list[Event]]]


class NewCampaign(NamedTuple):
    id: str
    sent_at: float | None
    discovery: float  # how long to look for late messages
    ttl: float | None = None
    labels: Mapping[str, str] | None = None  # as given: bounded when stored


class CampaignWatch(NamedTuple):
    """What a sweep needs to know of a campaign's watched messages."""

    ids: set[str]
    earliest: float | None  # their earliest next poll
    final_look: float | None  # their earliest watch end
    deadlines: tuple[float, ...]  # the validity deadlines of those pending, in order


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """What a backend hands the shared queries: ``?`` parameters, cursors back."""

    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Any, /) -> Cursor: ...


def _row_to_state(row: Sequence[object]) -> MessageState:
    state = MessageState(*row)  # type: ignore[arg-type]
    state.status = Status(state.status)
    state.sent_source = SentSource(state.sent_source)
    state.counted = Counted(state.counted)
    return state


_STATUS, _SOURCE, _COUNTED = (_COLUMNS.index(c) for c in ("status", "sent_source", "counted"))


def _state_to_row(state: MessageState) -> tuple[object, ...]:
    # Not dataclasses.astuple: it deep-copies, and this runs for every stored message.
    row = [getattr(state, name) for name in _COLUMNS]
    row[_STATUS] = state.status.value
    row[_SOURCE] = int(state.sent_source)
    row[_COUNTED] = int(state.counted)
    return tuple(row)


def _update_row(state: MessageState) -> tuple[object, ...]:
    row = _state_to_row(state)
    return (*row[2:], row[0], row[1])  # SET every column but the key, WHERE the key


def _new_state(
    provider: str, item: NewMessage, now: float, first_poll_in: float, labels: str | None
) -> MessageState:
    return MessageState(
        provider=provider,
        id=item.id,
        registered_at=now,
        sent_at=item.sent_at if item.sent_at is not None else now,
        sent_source=SentSource.GIVEN if item.sent_at is not None else SentSource.REGISTERED,
        next_poll=now + first_poll_in,
        extra=item.extra,
        ttl=item.ttl,
        labels=labels,
    )


def _new_campaign(
    provider: str, item: NewCampaign, now: float, first_poll_in: float, labels: str | None
) -> CampaignState:
    return CampaignState(
        provider=provider,
        id=item.id,
        registered_at=now,
        sent_at=item.sent_at if item.sent_at is not None else now,
        discover_until=now + item.discovery,
        next_poll=now + first_poll_in,
        ttl=item.ttl,
        labels=labels,
    )


def _campaign_row(state: CampaignState) -> tuple[object, ...]:
    return tuple(getattr(state, name) for name in _CAMPAIGN_COLUMNS)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Store(abc.ABC):
    """The persistent watched set. Thread-safe; one instance per process and backend."""

    #: appended to the SELECT that reads the rows a change will rewrite
    lock_rows: ClassVar[str] = ""
    #: the backend's error classes, turned into StoreError
    db_errors: ClassVar[tuple[type[Exception], ...]] = ()
    #: True when several processes may share the store (leases decide who polls)
    shared: ClassVar[bool] = False
    #: a harmless write that proves the store takes writes again (``available``)
    probe_sql: ClassVar[str] = ""

    def __init__(self, description: str) -> None:
        #: where the state is, safe to show (a path, or a URL without its password)
        self.description = description
        # Counts have their own lock so a scrape never waits behind a slow commit.
        self._counts_lock = threading.Lock()
        self.status_counts: Counter[tuple[str, Status]] = Counter()
        self.label_counts: Counter[tuple[str, Status, str]] = Counter()
        self.watched: Counter[str] = Counter()
        self.campaigns_watched: Counter[str] = Counter()
        self.closed = False
        #: when the last write failed (monotonic), None after a write succeeds
        self._write_failed: float | None = None

    # -- what a backend supplies ---------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Db]:
        """A write transaction, committed when the block ends without an exception."""

    @abc.abstractmethod
    def _reading(self) -> contextlib.AbstractContextManager[Db]:
        """A connection for reads."""

    def _retryable(self, error: Exception) -> bool:
        """True for an error that a second try of the same transaction may not meet
        (a replica created the same row first; a serialisation failure)."""
        return False

    @abc.abstractmethod
    def close(self) -> None: ...

    def available(self) -> bool:
        """Whether the store can be reached and written now (``/-/ready``): after a
        failed write (a full disk, a read-only file), not until a probe write succeeds
        (tried at most every ``WRITE_PROBE_EVERY`` seconds)."""
        if self.closed:
            return False
        failed = self._write_failed
        if failed is None:
            return True
        if time.monotonic() - failed < WRITE_PROBE_EVERY:
            return False
        try:
            with self._write("a readiness probe") as db:
                db.execute(self.probe_sql)
        except StoreError:
            return False
        return True

    def refresh_counts(self) -> None:  # noqa: B027 - a hook: one writer needs no recount
        """Recount from the database what other writers may have changed (shared stores)."""

    def heartbeat(self, holder: str, names: Sequence[str], ttl: float) -> set[str]:
        """Take or keep the polling leases of these provider instances; return the ones
        ``holder`` holds now. A store of one process holds them all."""
        return set(names)

    def leaders(self) -> dict[str, str]:
        """Provider instance → the replica holding its lease now (shared stores)."""
        return {}

    def live_replicas(self) -> list[str]:
        """The processes that use the store now, as far as the store can tell (a SQLite
        file is locked by its one process instead)."""
        return []

    def release(self, holder: str, names: Sequence[str]) -> None:  # noqa: B027 - a hook
        """Give up leases (on a clean stop), so another replica takes over at once."""

    # -- shared machinery ----------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[Db]:
        try:
            with self._transaction() as db:
                yield db
        except self.db_errors as e:
            self._write_failed = time.monotonic()
            raise StoreError(f"cannot store {what}: {e}") from e
        self._write_failed = None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._reading() as db:
                return db.execute(sql, params).fetchall()
        except self.db_errors as e:
            raise StoreError(f"cannot read the state store: {e}") from e

    def _count_rows(self, db: Db) -> None:
        """Set the in-memory counts from the database."""
        rows = db.execute(
            "SELECT provider, status, next_poll IS NOT NULL, COUNT(*) FROM messages GROUP BY 1, 2, 3"
        ).fetchall()
        campaigns = db.execute(
            "SELECT provider, COUNT(*) FROM campaigns WHERE next_poll IS NOT NULL GROUP BY 1"
        ).fetchall()
        labelled = db.execute(
            "SELECT provider, status, labels, COUNT(*) FROM messages WHERE labels IS NOT NULL "
            "GROUP BY 1, 2, 3"
        ).fetchall()
        status_counts: Counter[tuple[str, Status]] = Counter()
        watched: Counter[str] = Counter()
        for provider, status, is_watched, count in rows:
            status_counts[(provider, Status(status))] += count
            if is_watched:
                watched[provider] += count
        label_counts: Counter[tuple[str, Status, str]] = Counter(
            {
                (provider, Status(status), labels): count
                for provider, status, labels, count in labelled
            }
        )
        with self._counts_lock:
            self.status_counts = status_counts
            self.label_counts = label_counts
            self.watched = watched
            self.campaigns_watched = Counter(dict(campaigns))

    # -- writes ------------------------------------------------------------------------
    def register(
        self,
        batches: Mapping[str, tuple[Sequence[NewMessage | tuple[str, float | None]], float]],
        now: float,
        max_watched: int,
        campaigns: Mapping[str, tuple[Sequence[NewCampaign | tuple[Any, ...]], float]]
        | None = None,
        bounds: Bounds | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Store new messages (and campaigns) in one transaction, durable before this
        returns.

        ``batches`` maps a provider to its ``(id, sent_at)`` pairs and the delay before
        their first poll; ``campaigns`` likewise to its ``(campaign id, sent_at,
        discovery)``. Returns ``(accepted, duplicates)`` per provider, messages and
        campaigns together. Raises WatchedSetFull, storing nothing, when the new
        messages would not fit (a campaign's messages are checked as they are found).
        Labels are bounded by ``bounds`` inside the transaction (the kept values are
        the store's), and stored bounded.
        """
        result: dict[str, tuple[int, int]] = {}
        new_campaigns: Counter[str] = Counter()
        labelled: Counter[tuple[str, str]] = Counter()
        kept: dict[str, set[str]] = {}
        with self._write("registrations") as db:
            label_of = self._labeller(db, bounds, kept)
            for provider, (items, first_poll_in) in batches.items():
                states = [
                    _new_state(provider, new, now, first_poll_in, label_of(new.labels))
                    for new in (NewMessage(*item) for item in items)
                ]
                accepted = self._insert_new(db, [_state_to_row(state) for state in states])
                result[provider] = (accepted, len(states) - accepted)
                if accepted == len(states):
                    labelled.update((provider, st.labels) for st in states if st.labels)
                elif any(st.labels for st in states):  # which ones were new: read them back
                    labelled.update(self._new_labels(db, provider, states, now))
            new_total = sum(accepted for accepted, _ in result.values())
            if self.total_watched() + new_total > max_watched:
                raise WatchedSetFull(
                    f"the watched set is full (polling.max_watched = {max_watched})"
                )
            for provider, (wanted, first_poll_in) in (campaigns or {}).items():
                rows = [
                    _campaign_row(
                        _new_campaign(provider, item, now, first_poll_in, label_of(item.labels))
                    )
                    for item in (NewCampaign(*given) for given in wanted)
                ]
                accepted = db.executemany(_CAMPAIGN_INSERT + _IGNORE, rows).rowcount
                new_campaigns[provider] += accepted
                before = result.get(provider, (0, 0))
                result[provider] = (before[0] + accepted, before[1] + len(rows) - accepted)
        if bounds is not None:
            bounds.commit(kept)  # only what the database now holds
        with self._counts_lock:
            for provider, (accepted, _) in result.items():
                messages = accepted - new_campaigns[provider]
                self.watched[provider] += messages
                self.status_counts[(provider, Status.PENDING)] += messages
            for (provider, labels), count in labelled.items():
                self.label_counts[(provider, Status.PENDING, labels)] += count
            self.campaigns_watched.update(new_campaigns)
        return result

    def _labeller(
        self, db: Db, bounds: Bounds | None, kept: dict[str, set[str]]
    ) -> Callable[[Mapping[str, str] | None], str | None]:
        """Labels as stored: bounded against the kept values the database holds (new
        ones are added within this transaction, and listed in ``kept``)."""
        if bounds is None:
            return lambda labels: None
        #: names found full in this transaction: no other writer can add to them before
        #: it ends (the lock is held), so their unknown values need no more queries
        full: set[str] = set()

        def keep(name: str, value: str, limit: int) -> bool:
            if (
                db.execute(
                    "SELECT 1 FROM label_values WHERE name = ? AND value = ?", (name, value)
                ).fetchone()
                is None
            ):
                if name in full:
                    return False
                self._lock_label_values(db)
                count = db.execute(
                    "SELECT COUNT(*) FROM label_values WHERE name = ?", (name,)
                ).fetchone()[0]
                if count >= limit:
                    full.add(name)
                    return False
                db.execute(
                    "INSERT INTO label_values (name, value) VALUES (?, ?)" + _LABEL_IGNORE,
                    (name, value),
                )
            kept.setdefault(name, set()).add(value)
            return True

        return lambda labels: labels_module.encode(bounds.bound(labels or {}, keep, kept))

    def _lock_label_values(self, db: Db) -> None:  # noqa: B027 - a hook
        """Serialise the writers that add kept label values (a shared store's replicas)."""

    def _new_labels(
        self, db: Db, provider: str, states: Sequence[MessageState], now: float
    ) -> Counter[tuple[str, str]]:
        """The labels of the rows this registration created (duplicates kept theirs)."""
        wanted = {st.id: st.labels for st in states if st.labels}
        found: Counter[tuple[str, str]] = Counter()
        ids = sorted(wanted)
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            for (message_id,) in db.execute(
                f"SELECT id FROM messages WHERE provider = ? AND registered_at = ? "
                f"AND id IN ({marks})",
                (provider, now, *chunk),
            ).fetchall():
                found[(provider, str(wanted[message_id]))] += 1
        return found

    def import_label_values(self, kept: Mapping[str, Sequence[str]]) -> None:
        """Add kept label values (``state copy``); those already kept stay."""
        rows = [(name, value) for name, values in kept.items() for value in values]
        if rows:
            with self._write("the label values") as db:
                db.executemany(
                    "INSERT INTO label_values (name, value) VALUES (?, ?)" + _LABEL_IGNORE, rows
                )

    def campaign_labels(self) -> set[tuple[str, str]]:
        """The (provider, stored labels) of the watched campaigns that have labels: the
        combinations their messages will have once found."""
        return {
            (provider, labels)
            for provider, labels in self._read(
                "SELECT DISTINCT provider, labels FROM campaigns "
                "WHERE labels IS NOT NULL AND next_poll IS NOT NULL"
            )
        }

    def label_values(self) -> dict[str, list[str]]:
        """The kept values of every label (and the kept combinations, under ``*``)."""
        kept: dict[str, list[str]] = {}
        for name, value in self._read("SELECT name, value FROM label_values"):
            kept.setdefault(name, []).append(value)
        return kept

    def _insert_new(self, db: Db, rows: Sequence[tuple[object, ...]]) -> int:
        """Insert message rows, skipping ids already stored; return how many were new."""
        return db.executemany(_INSERT + _IGNORE, rows).rowcount if rows else 0

    def apply(
        self,
        provider: str,
        updates: Sequence[tuple[str, Update]],
        *,
        max_watched: int | None = None,
    ) -> list[Event]:
        """Run each update against the current row inside one transaction; return the events.

        The rows are read and locked inside the transaction (not earlier, when the poll
        started), so a callback and a poll for the same message, on this replica or
        another, never overwrite each other or count one event twice. With
        ``max_watched``, updates that create messages (pushed reports of messages not
        registered yet) raise WatchedSetFull, storing nothing, when the new ones would
        not fit: checked inside the transaction, as registrations are.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._transaction() as db:
                    events, before, after = self._apply(db, provider, updates, max_watched)
                break
            except self.db_errors as e:
                if attempt < _ATTEMPTS and self._retryable(e):
                    continue  # another writer got there first: read its result and redo
                self._write_failed = time.monotonic()
                raise StoreError(f"cannot store message updates: {e}") from e
        self._write_failed = None
        with self._counts_lock:
            for message_id, new in after.items():
                old = before.get(message_id)
                if old is not None:
                    status, watched = old
                    self.status_counts[(provider, status)] -= 1
                    self.watched[provider] -= watched
                    if new.labels:  # a message's labels never change
                        self.label_counts[(provider, status, new.labels)] -= 1
                self.status_counts[(provider, new.status)] += 1
                self.watched[provider] += new.watched
                if new.labels:
                    self.label_counts[(provider, new.status, new.labels)] += 1
        return events

    def _apply(
        self,
        db: Db,
        provider: str,
        updates: Sequence[tuple[str, Update]],
        max_watched: int | None,
    ) -> tuple[list[Event], dict[str, tuple[Status, bool]], dict[str, MessageState]]:
        # Locked in id order, so two writers never wait for each other's rows in a circle.
        ids = sorted({message_id for message_id, _ in updates})
        current: dict[str, MessageState] = {}
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            for row in db.execute(
                f"{_SELECT} WHERE provider = ? AND id IN ({marks}) ORDER BY id{self.lock_rows}",
                (provider, *chunk),
            ).fetchall():
                state = _row_to_state(row)
                current[state.id] = state
        before = {i: (s.status, s.watched) for i, s in current.items()}
        events: list[Event] = []
        after: dict[str, MessageState] = {}
        for message_id, update in updates:
            new, new_events = update(current.get(message_id))
            if new is None:
                continue
            current[message_id] = after[message_id] = new
            events.extend(new_events)
        created = [s for i, s in after.items() if i not in before]
        limit = max_watched if max_watched is not None else float("inf")
        if (
            any(s.watched for s in created)
            and self.total_watched() + sum(s.watched for s in created) > limit
        ):
            raise WatchedSetFull(f"the watched set is full (polling.max_watched = {max_watched})")
        changed = [_update_row(s) for i, s in after.items() if i in before]
        if changed:
            db.executemany(_UPDATE, changed)
        if created:
            # A plain INSERT: if another replica created the row meanwhile, this fails
            # and the whole change is redone against its row.
            db.executemany(_INSERT, [_state_to_row(s) for s in created])
        return events, before, after

    def delete(self, provider: str, message_id: str) -> bool:
        with self._write("the deletion") as db:
            row = db.execute(
                "SELECT status, next_poll IS NOT NULL, labels FROM messages "
                f"WHERE provider = ? AND id = ?{self.lock_rows}",
                (provider, message_id),
            ).fetchone()
            if row is not None:
                db.execute(
                    "DELETE FROM messages WHERE provider = ? AND id = ?", (provider, message_id)
                )
        if row is None:
            return False
        with self._counts_lock:
            self.status_counts[(provider, Status(row[0]))] -= 1
            self.watched[provider] -= bool(row[1])
            if row[2]:
                self.label_counts[(provider, Status(row[0]), row[2])] -= 1
        return True

    def purge_settled(self, settled_before: float) -> int:
        """Forget messages settled before the given time (``polling.retention``)."""
        with self._write("the retention purge") as db:
            doomed = db.execute(
                "SELECT provider, status, labels, COUNT(*) FROM messages WHERE settled_at < ? "
                "AND next_poll IS NULL GROUP BY 1, 2, 3",
                (settled_before,),
            ).fetchall()
            if not doomed:
                return 0
            db.execute(
                "DELETE FROM messages WHERE settled_at < ? AND next_poll IS NULL",
                (settled_before,),
            )
            db.execute(
                "DELETE FROM campaigns WHERE settled_at < ? AND next_poll IS NULL",
                (settled_before,),
            )
        with self._counts_lock:
            for provider, status, labels, count in doomed:
                self.status_counts[(provider, Status(status))] -= count
                if labels:
                    self.label_counts[(provider, Status(status), labels)] -= count
        return sum(count for *_, count in doomed)

    def save_campaign(self, state: CampaignState) -> None:
        """Store a campaign's state after a sweep (durable before this returns)."""
        with self._write("the campaign") as db:
            before = db.execute(
                f"SELECT next_poll IS NOT NULL FROM campaigns WHERE provider = ? AND id = ?"
                f"{self.lock_rows}",
                (state.provider, state.id),
            ).fetchone()
            db.execute(_CAMPAIGN_UPSERT, _campaign_row(state))
        with self._counts_lock:
            was = bool(before[0]) if before else False
            self.campaigns_watched[state.provider] += int(state.watched) - int(was)

    # -- moving state (``viber-exporter state copy``) ---------------------------------
    def is_empty(self) -> bool:
        return not self._read("SELECT 1 FROM messages LIMIT 1") and not self._read(
            "SELECT 1 FROM campaigns LIMIT 1"
        )

    def campaign_page(self, after: tuple[str, str] | None, limit: int) -> list[CampaignState]:
        """Campaigns in (provider, id) order, starting after the cursor."""
        where, params = ("WHERE (provider, id) > (?, ?) ", after) if after else ("", ())
        rows = self._read(
            f"{_CAMPAIGN_SELECT} {where}ORDER BY provider, id LIMIT ?", (*params, limit)
        )
        return [CampaignState(*row) for row in rows]

    def import_rows(
        self, messages: Sequence[MessageState], campaigns: Sequence[CampaignState]
    ) -> None:
        """Store rows as they are, counted flags included, replacing rows with their keys."""
        with self._write("copied rows") as db:
            if messages:
                db.executemany(_MESSAGE_UPSERT, [_state_to_row(s) for s in messages])
            if campaigns:
                db.executemany(_CAMPAIGN_UPSERT, [_campaign_row(c) for c in campaigns])

    def recount(self) -> None:
        """Set the in-memory counts from the database (after an import)."""
        try:
            with self._reading() as db:
                self._count_rows(db)
        except self.db_errors as e:
            raise StoreError(f"cannot read the state store: {e}") from e

    # -- reads -------------------------------------------------------------------------
    def due(self, provider: str, now: float, limit: int) -> list[MessageState]:
        """Watched messages whose next poll time has come, most overdue first."""
        rows = self._read(
            f"{_SELECT} WHERE provider = ? AND next_poll IS NOT NULL AND campaign IS NULL "
            "AND next_poll <= ? ORDER BY next_poll LIMIT ?",
            (provider, now, limit),
        )
        return [_row_to_state(row) for row in rows]

    def ended_before(
        self,
        provider: str,
        cutoff: float,
        *,
        read_window: float,
        max_age: float,
        limit: int,
    ) -> list[str]:
        """Ids of watched messages whose watch ended before ``cutoff`` (the rule of
        :data:`~viber_exporter.store.rows.WATCH_END_CASES`, one query per case so each uses
        its index) and that were registered before it. The poller uses it to find
        watches whose final look is overdue (:func:`exporter.accounting.give_up_at`
        re-checks each)."""
        windows = {"read_window": read_window, "max_age": max_age}
        rows: list[Any] = []
        for condition, column, window in WATCH_END_CASES:
            if len(rows) >= limit:
                break
            rows += self._read(
                f"SELECT id FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
                f"AND {condition} AND {column} < ? AND registered_at < ? LIMIT ?",
                (provider, cutoff - windows[window], cutoff, limit - len(rows)),
            )
        return [row[0] for row in rows]

    def recent_outcomes(
        self, provider: str, limit: int
    ) -> list[tuple[float, float | None, float | None, str, float | None]]:
        """``(sent_at, delivered_at, read_at, status, settled_at)`` of the ``limit``
        messages sent last, what the adaptive schedule learns from (adaptive.py)."""
        rows = self._read(
            "SELECT sent_at, delivered_at, read_at, status, settled_at FROM messages "
            "WHERE provider = ? ORDER BY sent_at DESC LIMIT ?",
            (provider, limit),
        )
        return [tuple(row) for row in rows]

    def oldest_pending(self, provider: str) -> float | None:
        """The sent time of the oldest watched message still ``pending``, or None."""
        rows = self._read(
            "SELECT MIN(sent_at) FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
            "AND status = 'pending'",
            (provider,),
        )
        return rows[0][0] if rows else None

    def oldest_next_poll(self, provider: str) -> float | None:
        """The earliest next poll of a message polled alone or of a campaign."""
        alone = self._read(
            "SELECT MIN(next_poll) FROM messages WHERE provider = ? AND next_poll IS NOT NULL "
            "AND campaign IS NULL",
            (provider,),
        )[0][0]
        campaign = self._read(
            "SELECT MIN(next_poll) FROM campaigns WHERE provider = ? AND next_poll IS NOT NULL",
            (provider,),
        )[0][0]
        times = [t for t in (alone, campaign) if t is not None]
        return min(times) if times else None

    # -- campaigns -------------------------------------------------------------------
    def due_campaigns(self, provider: str, now: float, limit: int) -> list[CampaignState]:
        rows = self._read(
            f"{_CAMPAIGN_SELECT} WHERE provider = ? AND next_poll IS NOT NULL "
            "AND next_poll <= ? ORDER BY next_poll LIMIT ?",
            (provider, now, limit),
        )
        return [CampaignState(*row) for row in rows]

    def get_campaign(self, provider: str, campaign_id: str) -> CampaignState | None:
        rows = self._read(
            f"{_CAMPAIGN_SELECT} WHERE provider = ? AND id = ?", (provider, campaign_id)
        )
        return CampaignState(*rows[0]) if rows else None

    def campaign_watched(
        self,
        provider: str,
        campaign_id: str,
        read_window: float = 0.0,
        max_age: float = 0.0,
        *,
        default_ttl: float | None = None,
    ) -> CampaignWatch:
        """A campaign's watched messages: their ids, earliest next poll, earliest watch
        end (:func:`exporter.accounting.watch_end`, given the instance's ``read_window``
        and ``max_age``: when the first final look is due), and the validity deadlines
        of those still pending (``sent_at`` + their ``ttl``, else ``default_ttl``)."""
        rows = self._read(
            f"SELECT id, next_poll, {WATCH_END_SQL}, "
            "CASE WHEN status = 'pending' THEN sent_at + COALESCE(ttl, ?) END FROM messages "
            "WHERE provider = ? AND campaign = ? AND next_poll IS NOT NULL",
            (read_window, max_age, default_ttl, provider, campaign_id),
        )
        return CampaignWatch(
            {row[0] for row in rows},
            min((row[1] for row in rows), default=None),
            min((row[2] for row in rows), default=None),
            tuple(sorted({row[3] for row in rows if row[3] is not None})),
        )

    def campaign_counts(self) -> dict[str, int]:
        """Watched campaigns per provider, from memory."""
        with self._counts_lock:
            return dict(self.campaigns_watched)

    def get(self, provider: str, message_id: str) -> MessageState | None:
        rows = self._read(f"{_SELECT} WHERE provider = ? AND id = ?", (provider, message_id))
        return _row_to_state(rows[0]) if rows else None

    def page(
        self,
        *,
        provider: str | None = None,
        status: Status | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[MessageState]:
        """Messages in (provider, id) order, starting after the cursor."""
        clauses: list[str] = []
        params: list[object] = []
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
        rows = self._read(f"{_SELECT}{where} ORDER BY provider, id LIMIT ?", (*params, limit))
        return [_row_to_state(row) for row in rows]

    def failure_reasons(self, provider: str, limit: int) -> list[str]:
        """The most frequent reasons of failed and expired messages, most frequent first."""
        rows = self._read(
            "SELECT reason FROM messages WHERE provider = ? AND status IN ('failed', 'expired') "
            "AND reason IS NOT NULL GROUP BY reason ORDER BY COUNT(*) DESC, reason LIMIT ?",
            (provider, limit),
        )
        return [row[0] for row in rows]

    def counts(self) -> tuple[dict[tuple[str, Status], int], dict[str, int]]:
        """Messages per (provider, status) and watched per provider, from memory."""
        with self._counts_lock:
            return dict(self.status_counts), dict(self.watched)

    def labelled_counts(self) -> dict[tuple[str, Status, str], int]:
        """Messages with labels per (provider, status, stored labels), from memory; the
        rest of ``counts()`` has none."""
        with self._counts_lock:
            return {key: count for key, count in self.label_counts.items() if count}

    def total_watched(self) -> int:
        with self._counts_lock:
            return sum(self.watched.values())

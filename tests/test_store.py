"""The watched set, on both backends: a real SQLite file and a real PostgreSQL server.

Every test taking ``store`` or ``reopen`` runs once per backend; the ones about a
backend's own medium (a file's mode, SQLite's schema steps, PostgreSQL's concurrent
writers) say which they test.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from viber_exporter.errors import StoreError, WatchedSetFull
from viber_exporter.events import Transition
from viber_exporter.model import Status
from viber_exporter.store.base import Store
from viber_exporter.store.location import open_store
from viber_exporter.store.rows import Counted, MessageState, SentSource
from viber_exporter.store.sqlite import SqliteStore

Reopen = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path: Path) -> str:
    """Where a store lives: a file, or a fresh schema of the test PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def reopen(location: str) -> Iterator[Reopen]:
    """Open (again) the store at ``location``; every store opened is closed after."""
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(open_store(location))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(reopen: Reopen) -> Store:
    return reopen()


def test_registration_is_idempotent_and_durable(store: Store, reopen: Reopen):
    counts = store.register({"p": ([("a", None), ("b", 100.0), ("a", None)], 10.0)}, now=1000.0, max_watched=10)
    assert counts == {"p": (2, 1)}
    assert store.register({"p": ([("a", None)], 10.0)}, now=1001.0, max_watched=10) == {"p": (0, 1)}
    store.close()
    # Another connection sees every committed registration: nothing lives only in memory.
    again = reopen()
    assert [(s.id, s.sent_at, s.sent_source, s.next_poll) for s in again.page()] == [
        ("a", 1000.0, SentSource.REGISTERED, 1010.0),
        ("b", 100.0, SentSource.GIVEN, 1010.0),
    ]
    assert again.counts() == ({("p", Status.PENDING): 2}, {"p": 2})


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path):
    SqliteStore(tmp_path / "private.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "private.db").st_mode) == 0o600
    assert sqlite3.connect(tmp_path / "private.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_location_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the state store"):
        SqliteStore(blocker / "state.db")


def test_unreachable_server_is_a_clear_error_without_the_password():
    with pytest.raises(StoreError, match="cannot open the state store") as info:
        open_store("postgresql://someone:hunter2-secret@127.0.0.1:1/viber?connect_timeout=1")
    assert "hunter2-secret" not in str(info.value)
    assert "postgresql://someone@127.0.0.1:1/viber" in str(info.value)


def test_due_returns_most_overdue_first_and_respects_limit(store: Store):
    store.register({"p": ([("late", None)], 5.0)}, now=100.0, max_watched=100)
    store.register({"p": ([("early", None)], 5.0)}, now=90.0, max_watched=100)
    store.register({"p": ([("future", None)], 500.0)}, now=100.0, max_watched=100)
    store.register({"q": ([("other", None)], 0.0)}, now=0.0, max_watched=100)
    assert [s.id for s in store.due("p", 200.0, 10)] == ["early", "late"]
    assert [s.id for s in store.due("p", 200.0, 1)] == ["early"]
    assert store.oldest_next_poll("p") == 95.0


def test_max_watched_refuses_the_whole_batch(store: Store):
    store.register({"p": ([("a", None), ("b", None)], 1.0)}, now=0.0, max_watched=3)
    with pytest.raises(WatchedSetFull):
        store.register({"p": ([("c", None)], 1.0), "q": ([("d", None)], 1.0)}, now=0.0, max_watched=3)
    assert store.get("p", "c") is None and store.get("q", "d") is None, "nothing of a refused batch stays"
    assert store.register({"p": ([("a", None), ("c", None)], 1.0)}, now=0.0, max_watched=3) == {"p": (1, 1)}


def test_apply_updates_counts_and_survives_reopen(store: Store, reopen: Reopen):
    store.register({"p": ([("a", None), ("b", None)], 1.0)}, now=0.0, max_watched=10)

    def settle(state: MessageState | None):
        assert state is not None
        state.status, state.next_poll, state.settled_at = Status.READ, None, 50.0
        return state, []

    store.apply("p", [("a", settle), ("missing", lambda s: (None, []))])
    assert store.counts() == ({("p", Status.PENDING): 1, ("p", Status.READ): 1}, {"p": 1})
    store.close()
    reopened = reopen()
    assert reopened.counts() == ({("p", Status.PENDING): 1, ("p", Status.READ): 1}, {"p": 1})
    assert reopened.purge_settled(settled_before=40.0) == 0
    assert reopened.purge_settled(settled_before=60.0) == 1
    assert reopened.get("p", "a") is None and reopened.get("p", "b") is not None
    assert reopened.counts()[0].get(("p", Status.READ)) == 0
    assert reopened.delete("p", "b") is True and reopened.delete("p", "b") is False
    assert reopened.counts()[1] == {"p": 0}


def test_apply_creates_rows_and_sees_its_own_earlier_updates(store: Store):
    def create(state: MessageState | None):
        assert state is None
        return MessageState("p", "new", 1.0, 1.0, SentSource.REGISTERED, next_poll=2.0), []

    def bump(state: MessageState | None):
        assert state is not None, "the second update of a batch sees the first"
        state.polls += 1
        return state, []

    store.apply("p", [("new", create), ("new", bump), ("new", bump)])
    assert store.get("p", "new").polls == 2
    assert store.counts() == ({("p", Status.PENDING): 1}, {"p": 1})
    with pytest.raises(WatchedSetFull):
        store.apply("p", [("other", lambda s: (MessageState("p", "other", 1.0, 1.0, SentSource.REGISTERED,
                                                              next_poll=2.0), []))], max_watched=1)
    assert store.get("p", "other") is None


def test_a_failed_update_rolls_back_the_whole_batch(store: Store):
    store.register({"p": ([("a", None), ("b", None)], 1.0)}, now=0.0, max_watched=10)

    def change(state):
        state.polls = 99
        return state, []

    def explode(state):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.apply("p", [("a", change), ("b", explode)])
    assert store.get("p", "a").polls == 0


def test_list_pages_with_a_cursor_and_filters(store: Store):
    store.register({"p": ([(f"m{i}", None) for i in range(5)], 1.0), "q": ([("x", None)], 1.0)}, now=0.0, max_watched=10)
    first = store.page(limit=3)
    assert [(s.provider, s.id) for s in first] == [("p", "m0"), ("p", "m1"), ("p", "m2")]
    rest = store.page(after=("p", "m2"), limit=10)
    assert [(s.provider, s.id) for s in rest] == [("p", "m3"), ("p", "m4"), ("q", "x")]
    assert [s.id for s in store.page(provider="q")] == ["x"]
    assert store.page(status=Status.READ) == []


def test_campaigns_are_stored_swept_and_counted(store: Store, reopen: Reopen):
    counts = store.register({}, now=10.0, max_watched=10, campaigns={"p": ([("c1", None, 600.0)], 5.0)})
    assert counts == {"p": (1, 0)} and store.campaign_counts() == {"p": 1}
    [due] = store.due_campaigns("p", 20.0, 10)
    assert (due.id, due.discover_until, due.next_poll) == ("c1", 610.0, 15.0)
    due.next_poll, due.settled_at, due.messages = None, 30.0, 3
    store.save_campaign(due)
    assert store.campaign_counts() == {"p": 0}
    store.close()
    again = reopen()
    assert again.get_campaign("p", "c1").messages == 3 and again.campaign_counts().get("p", 0) == 0
    assert [c.id for c in again.campaign_page(None, 10)] == ["c1"]


def test_what_the_adaptive_schedule_and_campaign_sweeps_read(store: Store):
    rows = [
        MessageState("p", "old", 1.0, 100.0, SentSource.REGISTERED, status=Status.READ,
                     delivered_at=103.0, read_at=700.0, settled_at=700.0),
        MessageState("p", "mid", 1.0, 200.0, SentSource.PROVIDER, status=Status.DELIVERED,
                     delivered_at=210.0, next_poll=5000.0, campaign="c"),
        MessageState("p", "new", 1.0, 300.0, SentSource.REGISTERED, next_poll=400.0, campaign="c"),
        MessageState("q", "other", 1.0, 900.0, SentSource.REGISTERED, next_poll=950.0),
    ]
    for state in rows:
        store.apply("p" if state.provider == "p" else "q", [(state.id, lambda _, s=state: (s, []))])
    assert store.recent_outcomes("p", 2) == [
        (300.0, None, None, "pending", None),
        (200.0, 210.0, None, "delivered", None),
    ], "the last sent first, of this provider only"
    assert store.recent_outcomes("p", 10)[-1] == (100.0, 103.0, 700.0, "read", 700.0)
    watched, earliest, final_look, _ = store.campaign_watched("p", "c", read_window=1000.0, max_age=2000.0)
    assert (watched, earliest) == ({"mid", "new"}, 400.0)
    assert final_look == 1210.0, "the delivered one's read window ends before the other's max_age"


def test_failure_reasons_most_frequent_first(store: Store):
    store.register({"p": ([(f"m{i}", None) for i in range(4)], 1.0)}, now=0.0, max_watched=10)

    def fail(reason: str):
        def update(state):
            state.status, state.reason, state.next_poll = Status.FAILED, reason, None
            return state, []
        return update

    store.apply("p", [("m0", fail("blocked")), ("m1", fail("blocked")), ("m2", fail("no_viber"))])
    assert store.failure_reasons("p", 5) == ["blocked", "no_viber"]


def test_newer_sqlite_schema_is_refused(tmp_path: Path):
    SqliteStore(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(tmp_path / "s.db")


def test_newer_postgres_schema_is_refused(pg_url: str):
    open_store(pg_url).close()
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE viber_schema SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        open_store(pg_url)


def test_a_sqlite_store_of_every_older_schema_is_migrated_keeping_its_messages(tmp_path: Path):
    from viber_exporter.store.base import SCHEMA_VERSION
    from viber_exporter.store.sqlite import MIGRATIONS

    for version in range(1, SCHEMA_VERSION):
        path = tmp_path / f"v{version}.db"
        db = sqlite3.connect(path, isolation_level=None)
        for step, script in MIGRATIONS[:version]:
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={step};\nCOMMIT;")
        db.execute("INSERT INTO messages (provider, id, registered_at, sent_at, sent_source, status, next_poll) "
                   "VALUES ('bsg', '42', 1000.0, 1000.0, 0, 'pending', 1010.0)")
        db.close()
        store = SqliteStore(path)
        try:
            [due] = store.due("bsg", 2000.0, 10)
            assert due.id == "42" and due.campaign is None and store.counts()[1] == {"bsg": 1}
            assert store.oldest_next_poll("bsg") == 1010.0
            assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            store.close()


# -- PostgreSQL: several replicas on one database ------------------------------------------


def test_replicas_starting_together_migrate_once(pg_url: str):
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(open_store(pg_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors and len(stores) == 4
        stores[0].register({"p": ([("a", None)], 1.0)}, now=0.0, max_watched=10)
        assert all(s.get("p", "a") is not None for s in stores)
    finally:
        for s in stores:
            s.close()


def test_concurrent_writers_on_two_replicas_count_each_event_once(pg_url: str):
    """Two replicas apply the same change to the same messages at once (a poll on one,
    a pushed report on the other): each message's event is produced by exactly one."""
    first, second = open_store(pg_url), open_store(pg_url)
    try:
        ids = [f"m{i}" for i in range(200)]
        first.register({"p": ([(i, None) for i in ids], 1.0)}, now=0.0, max_watched=1000)

        def deliver(state: MessageState | None):
            if state is None or state.counted & Counted.DELIVERED:
                return None, []
            state.status, state.counted = Status.DELIVERED, state.counted | Counted.DELIVERED
            return state, [Transition("p", state.id, Status.DELIVERED, None, None)]

        events: list[list] = [[], []]
        barrier = threading.Barrier(2)

        def writer(n: int, store: Store) -> None:
            barrier.wait()
            for i in range(0, len(ids), 10):
                # each batch in the other order: the rows are still locked in one order
                batch = ids[i:i + 10] if n == 0 else list(reversed(ids[i:i + 10]))
                events[n].extend(store.apply("p", [(m, deliver) for m in batch]))

        threads = [threading.Thread(target=writer, args=(n, s)) for n, s in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counted = sorted(e.message_id for e in events[0] + events[1])
        assert counted == sorted(ids), "every delivery counted once, by one replica or the other"
    finally:
        first.close()
        second.close()


def test_two_replicas_registering_overlapping_batches_accept_each_message_once(pg_url: str):
    stores = [open_store(pg_url), open_store(pg_url)]
    try:
        ids = [f"m{i:04d}" for i in range(3000)]
        accepted = [0, 0]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def register(n: int) -> None:
            barrier.wait()
            try:
                for i in range(0, len(ids), 500):
                    # the same messages, in opposite orders: no deadlock, no double accept
                    batch = ids[i:i + 500] if n == 0 else list(reversed(ids))[i:i + 500]
                    got = stores[n].register({"p": ([(m, None) for m in batch], 1.0)}, now=0.0, max_watched=10**6)
                    accepted[n] += got["p"][0]
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=register, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert accepted[0] + accepted[1] == len(ids)
    finally:
        for s in stores:
            s.close()


def test_two_replicas_creating_the_same_message_count_it_once(pg_url: str):
    """Pushed reports of an unregistered message reach two replicas at once."""
    stores = [open_store(pg_url), open_store(pg_url)]
    try:
        def create(state: MessageState | None):
            if state is not None:
                return None, []
            new = MessageState("p", "pushed", 1.0, 1.0, SentSource.REGISTERED, status=Status.DELIVERED,
                               counted=Counted.DELIVERED, next_poll=5.0)
            return new, [Transition("p", "pushed", Status.DELIVERED, None, None)]

        results: list[list] = [[], []]
        barrier = threading.Barrier(2)

        def push(n: int) -> None:
            barrier.wait()
            results[n] = stores[n].apply("p", [("pushed", create)])

        threads = [threading.Thread(target=push, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results[0]) + len(results[1]) == 1
    finally:
        for s in stores:
            s.close()


def test_leases_spread_expire_and_pass_on(pg_url: str):
    a, b = open_store(pg_url), open_store(pg_url)
    names = ["bsg", "routee"]
    try:
        assert a.heartbeat("A", names, ttl=1.0) == {"bsg", "routee"}, "alone, A takes both"
        assert b.heartbeat("B", names, ttl=1.0) == set(), "B is live now, but both are held"
        assert a.heartbeat("A", names, ttl=1.0) == {"bsg"}, "A keeps its fair share, gives back the rest"
        assert b.heartbeat("B", names, ttl=1.0) == {"routee"}
        assert a.leaders() == {"bsg": "A", "routee": "B"}
        # A stops renewing (killed): its lease expires, and B takes it
        import time

        time.sleep(1.2)
        assert b.heartbeat("B", names, ttl=1.0) == {"bsg", "routee"}
        b.release("B", names)
        assert a.leaders() == {}
    finally:
        a.close()
        b.close()


def test_the_watch_end_rule_is_the_same_in_sql_and_python(store: Store):
    """The store finds ended watches (one indexed query per case) and a campaign's first
    final look (one CASE expression) by WATCH_END_CASES; both agree with watch_end()
    for every status, with and without a delivery time, on either side of a cutoff."""
    import random

    from viber_exporter.store.rows import watch_end

    rng = random.Random(3)
    read_window, max_age = 500.0, 2000.0
    rows = []
    for n in range(200):
        status = rng.choice([Status.PENDING, Status.DELIVERED, Status.DELIVERED, Status.UNKNOWN])
        delivered = rng.choice([None, rng.uniform(0, 3000)]) if status is not Status.PENDING else None
        rows.append(MessageState("p", f"m{n}", rng.uniform(0, 3000), rng.uniform(0, 3000), SentSource.REGISTERED,
                                 status=status, delivered_at=delivered, next_poll=9e9, campaign="c"))
    store.apply("p", [(state.id, lambda _, s=state: (s, [])) for state in rows])
    for cutoff in (1000.0, 2500.0, 4000.0):
        expected = {s.id for s in rows if watch_end(s, read_window, max_age) < cutoff and s.registered_at < cutoff}
        found = store.ended_before("p", cutoff, read_window=read_window, max_age=max_age, limit=1000)
        assert set(found) == expected and len(found) == len(expected), cutoff
    assert 0 < len(store.ended_before("p", 4000.0, read_window=read_window, max_age=max_age, limit=7)) <= 7
    first = store.campaign_watched("p", "c", read_window=read_window, max_age=max_age).final_look
    assert first == pytest.approx(min(watch_end(s, read_window, max_age) for s in rows))
    assert any(s.status is Status.DELIVERED and s.delivered_at is None for s in rows), "the case the rule once missed"

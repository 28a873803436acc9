"""The SQLite watched set, on a real file."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from viber_exporter.errors import StoreError, WatchedSetFull
from viber_exporter.model import Status
from viber_exporter.state import MessageState, SentSource
from viber_exporter.store import Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def test_registration_is_idempotent_and_durable(tmp_path: Path):
    store = Store(tmp_path / "s.db")
    counts = store.register({"p": ([("a", None), ("b", 100.0), ("a", None)], 10.0)}, now=1000.0, max_watched=10)
    assert counts == {"p": (2, 1)}
    assert store.register({"p": ([("a", None)], 10.0)}, now=1001.0, max_watched=10) == {"p": (0, 1)}
    store.close()
    # A second connection sees every committed registration: nothing lives only in memory.
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT id, sent_at, sent_source, next_poll FROM messages ORDER BY id").fetchall() == [
        ("a", 1000.0, SentSource.REGISTERED, 1010.0),
        ("b", 100.0, SentSource.GIVEN, 1010.0),
    ]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_state_file_is_private(tmp_path: Path):
    Store(tmp_path / "private.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "private.db").st_mode) == 0o600


def test_unwritable_location_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store(blocker / "state.db")


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


def test_apply_updates_counts_and_survives_reopen(tmp_path: Path):
    store = Store(tmp_path / "s.db")
    store.register({"p": ([("a", None), ("b", None)], 1.0)}, now=0.0, max_watched=10)

    def settle(state: MessageState | None):
        assert state is not None
        state.status, state.next_poll, state.settled_at = Status.READ, None, 50.0
        return state, []

    store.apply("p", [("a", settle), ("missing", lambda s: (None, []))])
    assert store.counts() == ({("p", Status.PENDING): 1, ("p", Status.READ): 1}, {"p": 1})
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert reopened.counts() == ({("p", Status.PENDING): 1, ("p", Status.READ): 1}, {"p": 1})
    assert reopened.purge_settled(settled_before=40.0) == 0
    assert reopened.purge_settled(settled_before=60.0) == 1
    assert reopened.get("p", "a") is None and reopened.get("p", "b") is not None
    assert reopened.counts()[0].get(("p", Status.READ)) == 0
    assert reopened.delete("p", "b") is True and reopened.delete("p", "b") is False
    assert reopened.counts()[1] == {"p": 0}
    reopened.close()


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


def test_newer_schema_is_refused(tmp_path: Path):
    Store(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "s.db")


def test_a_store_of_every_older_schema_is_migrated_keeping_its_messages(tmp_path: Path):
    from viber_exporter.store import MIGRATIONS, SCHEMA_VERSION

    for version in range(1, SCHEMA_VERSION):
        path = tmp_path / f"v{version}.db"
        db = sqlite3.connect(path, isolation_level=None)
        for step, script in MIGRATIONS[:version]:
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={step};\nCOMMIT;")
        db.execute("INSERT INTO messages (provider, id, registered_at, sent_at, sent_source, status, next_poll) "
                   "VALUES ('bsg', '42', 1000.0, 1000.0, 0, 'pending', 1010.0)")
        db.close()
        store = Store(path)
        try:
            [due] = store.due("bsg", 2000.0, 10)
            assert due.id == "42" and due.campaign is None and store.counts()[1] == {"bsg": 1}
            assert store.oldest_next_poll("bsg") == 1010.0
            assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            store.close()

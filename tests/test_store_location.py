"""``exporter/store/location.py``: where the store is, one process per SQLite file,
and ``state copy`` between backends."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from viber_exporter.cli import main
from viber_exporter.model import Status
from viber_exporter.store.location import open_store
from viber_exporter.store.rows import Counted
from viber_exporter.testing.mock import exporter_config

from .children import SCRIPT, Child, free_port


def test_a_second_exporter_on_the_same_sqlite_file_exits_naming_the_holder(child: Child, tmp_path: Path):
    second = tmp_path / "second.toml"
    second.write_text(child.config.read_text().replace(f"127.0.0.1:{child.port}", f"127.0.0.1:{free_port()}"))
    result = subprocess.run([str(SCRIPT), "run", "--config", str(second)], capture_output=True, text=True,
                            timeout=30, check=False, env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""})
    assert result.returncode == 1
    assert "in use by another process" in result.stderr and f"pid {child.process.pid}" in result.stderr
    assert str(tmp_path / "s.db") in result.stderr and "Traceback" not in result.stderr
    assert child.metric('viber_exporter_leader{provider="bsg"}') == 1


def test_state_copy_refuses_a_missing_source_and_a_store_in_use(child: Child, tmp_path: Path):
    def copy(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), "state", "copy", "--from", str(source), "--to", str(target)],
                              capture_output=True, text=True, timeout=30, check=False)

    typo = copy(tmp_path / "s.bd", tmp_path / "copy.db")
    assert typo.returncode == 1 and "no state store" in typo.stderr
    assert not (tmp_path / "s.bd").exists() and not (tmp_path / "copy.db").exists()
    busy = copy(tmp_path / "s.db", tmp_path / "copy.db")
    assert busy.returncode == 1 and "in use" in busy.stderr
    child.stop()
    done = copy(tmp_path / "s.db", tmp_path / "copy.db")
    assert done.returncode == 0 and "copied 0 messages" in done.stdout
    assert done.stderr == "", "no progress lines when stderr is not a terminal"


def test_state_copy_shows_one_progress_line_on_a_terminal(tmp_path: Path):
    from viber_exporter.store.location import open_store

    store = open_store(str(tmp_path / "a.db"))
    store.register({"bsg": ([(str(n), None) for n in range(4500)], 10.0)}, time.time(), 10**6)
    store.close()
    main_fd, terminal = os.openpty()
    result = subprocess.run([str(SCRIPT), "state", "copy", "--from", str(tmp_path / "a.db"), "--to",
                             str(tmp_path / "b.db")], stderr=terminal, stdout=subprocess.PIPE, text=True,
                            timeout=60, check=False)
    os.close(terminal)
    shown = os.read(main_fd, 65536).decode()
    os.close(main_fd)
    assert result.returncode == 0 and "copied 4500 messages" in result.stdout
    assert shown.count("\n") == 1 and shown.count("\r") >= 3 and "4500 messages" in shown


@pytest.mark.parametrize("state_path", ["/proc/viber-exporter-test.db", "DIRECTORY"])
def test_unwritable_state_path_is_a_clear_error_at_start(tmp_path, state_path):
    path = str(tmp_path) if state_path == "DIRECTORY" else state_path
    config = tmp_path / "config.toml"
    config.write_text(f'[exporter]\nstate_path = "{path}"\n[providers.b]\nplugin = "bsg"\napi_key = "k"\n')
    result = subprocess.run([str(SCRIPT), "run", "--config", str(config)], capture_output=True, text=True, timeout=30,
                            env={"VIBER_EXPORTER_LOAD_PLUGINS": "", "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 1
    expected = "is a directory" if state_path == "DIRECTORY" else "cannot open the state store"
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_state_copy_moves_a_watched_set_there_and_back(tmp_path, pg_url, capsys):
    source = open_store(str(tmp_path / "old.db"))
    source.register({"routee": ([(f"m{i}", None) for i in range(2500)], 5.0)}, now=100.0, max_watched=10_000,
                    campaigns={"routee": ([("c1", None, 60.0)], 5.0)})

    def deliver(state):
        state.status, state.counted = Status.DELIVERED, state.counted | Counted.PENDING | Counted.DELIVERED
        return state, []

    source.apply("routee", [(f"m{i}", deliver) for i in range(10)])
    before = source.page(limit=10_000)
    source.close()

    assert main(["state", "copy", "--from", str(tmp_path / "old.db"), "--to", pg_url]) == 0
    assert "copied 2500 messages and 1 campaigns" in capsys.readouterr().out
    copied = open_store(pg_url)
    try:
        assert copied.page(limit=10_000) == before, "every row as it was, counted flags included"
        assert copied.get_campaign("routee", "c1") is not None
        assert copied.counts()[1] == {"routee": 2500}
    finally:
        copied.close()

    assert main(["state", "copy", "--from", str(tmp_path / "old.db"), "--to", pg_url]) == 1
    assert "already holds messages" in capsys.readouterr().err
    assert main(["state", "copy", "--from", str(tmp_path / "old.db"), "--to", pg_url, "--force"]) == 0, "idempotent"
    assert main(["state", "copy", "--from", pg_url, "--to", str(tmp_path / "back.db")]) == 0
    db = sqlite3.connect(tmp_path / "back.db")
    try:
        assert db.execute("SELECT COUNT(*), SUM(counted) FROM messages").fetchone() == (2500, 10 * 3)
    finally:
        db.close()


def test_state_copy_errors_are_clear_and_hide_passwords(tmp_path, capsys):
    open_store(str(tmp_path / "a.db")).close()
    assert main(["state", "copy", "--from", str(tmp_path / "a.db"),
                 "--to", "postgresql://u:hunter2-pw@127.0.0.1:1/db?connect_timeout=1"]) == 1
    err = capsys.readouterr().err
    assert "cannot open --to" in err and "hunter2-pw" not in err


def test_state_url_is_checked_and_its_password_never_shown(builtin_host, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(exporter_config("http://127.0.0.1:1", tmp_path / "s.db", exporter={"state_url": "mysql://x"}))
    assert main(["check-config", "--config", str(bad)]) == 1
    assert "exporter.state_url" in capsys.readouterr().err
    (tmp_path / "url").write_text("postgresql://viber:s3cret-Pg-pass@db.example:5432/viber\n")
    good = tmp_path / "good.toml"
    good.write_text(exporter_config("http://127.0.0.1:1", tmp_path / "s.db",
                                    exporter={"state_url_file": str(tmp_path / "url")}))
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr()
    assert "s3cret-Pg-pass" not in out.out + out.err

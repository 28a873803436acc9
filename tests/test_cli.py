"""The command line through main(argv), plus the installed script in a subprocess."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer

from viber_exporter.cli import main

from .children import free_port, spawned, stop
from .conftest import SENTINEL, QuickHTTPServer, wait_for
from .fake_routee import APP_ID, APP_SECRET, FakeRoutee, tracking

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def only_builtin_plugins(monkeypatch):
    monkeypatch.setenv("VIBER_EXPORTER_LOAD_PLUGINS", "")
    monkeypatch.delenv("VIBER_EXPORTER_CONFIG", raising=False)


@pytest.fixture
def routee_server():
    server = QuickHTTPServer(threaded=True)
    server.start()
    fake = FakeRoutee()
    server.expect_request("/oauth/token", method="POST").respond_with_handler(fake.handle_token)
    server.expect_request(re.compile(r"/viber/tracking/.*")).respond_with_handler(fake.handle_tracking)
    yield server, fake
    server.clear()
    server.stop()


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def routee_config(tmp_path: Path, server: HTTPServer, listen: str = "127.0.0.1:9839") -> Path:
    url = server.url_for("").rstrip("/")
    return write_config(tmp_path / "config.toml", f"""
[exporter]
listen = "{listen}"
state_path = "state.db"
[polling]
tick = "100ms"
schedule = ["200ms"]
[providers.routee]
plugin = "routee"
application_id = "{APP_ID}"
application_secret = "${{ROUTEE_SECRET}}"
currency = "EUR"
base_url = "{url}"
token_url = "{url}/oauth/token"
concurrency = 4
rate_limit = 100
""")


def test_version_and_usage_errors(capsys):
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert main(["watch", "add"]) == 2
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_check_config_ok_and_every_problem(tmp_path, capsys, monkeypatch, routee_server):
    server, _ = routee_server
    path = routee_config(tmp_path, server)
    monkeypatch.setenv("ROUTEE_SECRET", SENTINEL)
    assert main(["check-config", "--config", str(path)]) == 0
    assert "configuration OK: 1 provider instance(s): routee (routee)" in capsys.readouterr().out
    path.write_text(path.read_text().replace('currency = "EUR"', 'currency = "euro"\ncolour = 1').replace('tick = "100ms"', 'tick = "soon"'))
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    for key in ("providers.routee.currency", "providers.routee.colour", "polling.tick"):
        assert key in err
    assert SENTINEL not in err
    monkeypatch.delenv("ROUTEE_SECRET")
    assert main(["check-config", "--config", str(path)]) == 1
    assert "ROUTEE_SECRET" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_config_path_from_environment(tmp_path, capsys, monkeypatch, routee_server):
    path = routee_config(tmp_path, routee_server[0])
    monkeypatch.setenv("ROUTEE_SECRET", "x")
    monkeypatch.setenv("VIBER_EXPORTER_CONFIG", str(path))
    assert main(["check-config"]) == 0


def test_plugins_lists_json(capsys):
    assert main(["plugins", "--third-party"]) == 0
    assert json.loads(capsys.readouterr().out) == [], "no packages are loaded here"
    assert main(["plugins", "--all"]) == 0, "the old flag still works"
    with_all = json.loads(capsys.readouterr().out)
    assert main(["plugins"]) == 0, "a plain install lists the built-ins"
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listing["viber_exporter.plugins.routee"]["providers"] == ["routee"]
    assert listing["viber_exporter.plugins.bsg"]["providers"] == ["bsg"]
    assert listing["viber_exporter.plugins.bsg"]["hooks"] == ["register_providers"]
    assert listing["viber_exporter.plugins.bsg"]["package"] == "viber-exporter" and listing["viber_exporter.plugins.bsg"]["builtin"] is True
    assert with_all == list(listing.values())


def test_probe_shows_raw_answer_and_result_without_secrets(tmp_path, capsys, monkeypatch, routee_server):
    server, fake = routee_server
    tracking_id = "0a047b46-a4dd-4ca8-b817-a6a134dd1234"
    fake.messages[tracking_id] = tracking(tracking_id, "UNDELIVERED", reason="Not Viber User")
    monkeypatch.setenv("ROUTEE_SECRET", APP_SECRET)
    path = routee_config(tmp_path, server)
    assert main(["probe", "routee", tracking_id, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    token_exchange, lookup = report["exchanges"]
    assert token_exchange["body"]["access_token"] == "********", "the bearer token is masked"
    assert token_exchange["body"]["token_type"] == "bearer" and token_exchange["body"]["expires_in"] > 0
    assert lookup["status"] == 200 and lookup["body"]["status"]["status"] == "UNDELIVERED"
    assert report["result"]["observation"]["status"] == "failed"
    assert report["result"]["observation"]["reason"] == "not_viber_user"
    assert APP_SECRET not in out and "tok-1" not in out
    assert main(["probe", "routee", "ffff-0000", "--config", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["result"]["outcome"] == "not_found"
    assert main(["probe", "routee", "bad id!", "--config", str(path)]) == 1
    assert main(["probe", "nobody", "x", "--config", str(path)]) == 1
    capsys.readouterr()

    # Nothing listens there: the attempted exchange is shown with what went wrong.
    closed = f"http://127.0.0.1:{free_port()}"
    path.write_text(path.read_text().replace(server.url_for("").rstrip("/"), closed))
    assert main(["probe", "routee", tracking_id, "--config", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    [attempt] = report["exchanges"]
    assert attempt["method"] == "POST" and attempt["url"] == f"{closed}/oauth/token"
    assert "connection was refused" in attempt["error"] and "127.0.0.1" in attempt["error"]
    assert report["result"]["outcome"] == "connection_error"


def test_watch_add_import_list_and_delete(make_config, serve, tmp_path, capsys, monkeypatch, clock):
    exporter, url = serve(make_config(exporter={"api_token": "tok-cli"}))
    monkeypatch.setenv("VIBER_EXPORTER_API_TOKEN", "tok-cli")
    sent = datetime.fromtimestamp(clock.time() - 60, UTC).isoformat().replace("+00:00", "Z")
    assert main(["watch", "add", "fake", "w1", "w2", "--sent-at", sent, "--ttl", "6h", "--url", url]) == 0
    assert "accepted 2, duplicates 0" in capsys.readouterr().out
    assert exporter.store.get("fake", "w1").ttl == 6 * 3600.0
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("provider,id,sent_at\nfake,w2,\n" + "".join(f"fake,i{n},{sent}\n" for n in range(1500)))
    assert main(["watch", "import", str(csv_file), "--url", url]) == 0
    assert "stored 1501 rows: accepted 1500, duplicates 1; refused 0" in capsys.readouterr().out
    assert exporter.store.total_watched() == 1502

    # Bad rows in the second batch: each is named by its line, the rest is stored.
    lines = [f"fake,j{n}" for n in range(1500)]
    lines[1200] = "fake,not valid!"  # line 1201
    lines[1300] = "fake"  # line 1301: one column
    lines[10] = "nobody,j10"  # line 11: an unknown provider, in the first batch
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["watch", "import", str(bad), "--url", url]) == 1
    captured = capsys.readouterr()
    assert "stored 1497 rows: accepted 1497, duplicates 0; refused 3" in captured.out
    assert f"{bad}:11: unknown provider 'nobody'" in captured.err
    assert f"{bad}:1201: invalid id for fake" in captured.err
    assert f"{bad}:1301: expected provider,id[,sent_at], got 1 columns" in captured.err
    assert exporter.store.total_watched() == 1502 + 1497

    assert main(["watch", "list", "--provider", "fake", "--url", url]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "PROVIDER\tID\tSTATUS\tREASON\tPOLLS\tNEXT_POLL\tLABELS"
    assert len(listed) == 1 + 1502 + 1497 and listed[1].startswith("fake\ti0\tpending")
    assert main(["watch", "list", "--no-header", "--status", "read", "--url", url]) == 0
    assert capsys.readouterr().out == ""

    assert main(["watch", "delete", "fake", "w1", "j5", "--url", url]) == 0
    assert "deleted 2; not stored 0" in capsys.readouterr().out
    assert exporter.get_message("fake", "w1") is None
    assert main(["watch", "delete", "fake", "w1", "--url", url]) == 1
    assert "not stored: w1" in capsys.readouterr().err

    monkeypatch.setenv("VIBER_EXPORTER_API_TOKEN", "wrong")
    assert main(["watch", "add", "fake", "w9", "--url", url]) == 1
    assert "HTTP 401" in (err := capsys.readouterr().err) and "$VIBER_EXPORTER_API_TOKEN is not" in err
    monkeypatch.delenv("VIBER_EXPORTER_API_TOKEN")
    assert main(["watch", "delete", "fake", "w2", "--url", url]) == 1
    assert "HTTP 401" in (err := capsys.readouterr().err) and "set $VIBER_EXPORTER_API_TOKEN" in err
    assert main(["watch", "list", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_help_summaries_are_whole_sentences():
    from click.testing import CliRunner

    from viber_exporter.cli import cli

    runner = CliRunner()
    for args in ([], ["watch"]):
        text = runner.invoke(cli, [*args, "--help"], terminal_width=80).output
        commands = text.split("Commands:")[1]
        assert "..." not in commands, text
    commands = runner.invoke(cli, ["watch", "--help"], terminal_width=80).output
    assert all(name in commands for name in ("add", "import", "list", "delete"))


def test_installed_script_stops_on_sigterm_under_load(tmp_path, routee_server):
    server, fake = routee_server
    fake.delay = 0.3  # polls are in flight when the signal arrives
    port = free_port()
    path = routee_config(tmp_path, server, listen=f"127.0.0.1:{port}")
    with spawned("run", "--config", str(path), env={"ROUTEE_SECRET": APP_SECRET}, cwd=tmp_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), timeout=15)
        ids = [f"{n:04d}-aaaa" for n in range(300)]
        for chunk in range(0, 300, 100):
            body = {"messages": [{"provider": "routee", "id": i} for i in ids[chunk:chunk + 100]]}
            assert requests.post(f"{url}/api/v1/messages", json=body, timeout=10).json()["accepted"] == 100
        for i in ids:
            fake.messages[i] = tracking(i, "QUEUED")
        wait_for(lambda: len(fake.lookups) > 20, timeout=15)
        started = time.monotonic()
        output = stop(process)
        assert process.returncode == 0, output
        assert time.monotonic() - started < 10
        assert "stopped" in output and APP_SECRET not in output
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM messages WHERE next_poll IS NOT NULL").fetchone()[0] == 300
    db.close()


def test_run_logs_what_it_really_bound_and_warns_of_an_open_write_api(tmp_path, routee_server):
    port = free_port()
    path = routee_config(tmp_path, routee_server[0], listen=f"0.0.0.0:{port}")
    with spawned("run", "--config", str(path), env={"ROUTEE_SECRET": APP_SECRET}, cwd=tmp_path) as process:
        wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), timeout=15)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        output = stop(process)
    assert "\nprocess_start_time_seconds " in metrics and "_created" not in metrics
    assert f"listening on http://0.0.0.0:{port} (all IPv4 interfaces)" in output
    assert "127.0.0.1:9839" not in output
    assert "without exporter.api_token" in output and "VIBER_EXPORTER_API_TOKEN" in output


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_run_fails_cleanly_on_bad_config_and_busy_port(tmp_path, capsys, monkeypatch, routee_server):
    path = routee_config(tmp_path, routee_server[0])
    assert main(["run", "--config", str(path)]) == 1  # ROUTEE_SECRET unset
    assert "ROUTEE_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("ROUTEE_SECRET", "x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = routee_config(tmp_path, routee_server[0], listen=f"127.0.0.1:{port}")
        assert main(["run", "--config", str(path)]) == 1
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in err, err
        assert "Errno" not in err and "('127.0.0.1'" not in err, "no Python tuple, no errno"
        assert main(["demo", "--listen", f"127.0.0.1:{port}"]) == 1
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in capsys.readouterr().err


def test_run_listen_and_log_level_override_the_config_also_after_a_reload(tmp_path, routee_server):
    port = free_port()
    path = routee_config(tmp_path, routee_server[0], listen="127.0.0.1:9")  # not where it will listen
    assert main(["run", "--config", str(path), "--listen", "nowhere"]) == 2, "a bad --listen is a usage error"
    with spawned("run", "--config", str(path), "--listen", f"127.0.0.1:{port}", "--log-level", "debug",
                 env={"ROUTEE_SECRET": APP_SECRET}, cwd=tmp_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), timeout=15)
        reloaded = requests.post(f"{url}/-/reload", timeout=10)
        assert reloaded.status_code == 200 and "restart_needed" not in reloaded.json(), reloaded.json()
        output = stop(process)
    assert process.returncode == 0, output
    assert f"listening on http://127.0.0.1:{port}" in output and " DEBUG " in output, output[-2000:]
    assert "next restart" not in output


def test_watch_says_why_it_cannot_reach_the_exporter(capsys):
    port = free_port()  # nothing listens there
    assert main(["watch", "list", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the exporter at http://127.0.0.1:{port}: the connection was refused" in err, err
    assert "ConnectionError" not in err
    assert main(["watch", "list", "--url", f"localhost:{port}"]) == 1
    err = capsys.readouterr().err
    assert "the URL is not valid" in err and "InvalidSchema" not in err, err


def test_check_config_online_makes_each_instance_s_credential_check(tmp_path, capsys, monkeypatch, routee_server):
    server, fake = routee_server
    monkeypatch.setenv("ROUTEE_SECRET", APP_SECRET)
    path = routee_config(tmp_path, server)
    assert main(["check-config", "--config", str(path), "--online"]) == 1, "no balance endpoint: the check fails"
    captured = capsys.readouterr()
    assert "routee: server_error" in captured.out and "credential check failed: routee" in captured.err
    server.expect_request("/accounts/me/balance", method="GET").respond_with_handler(fake.handle_balance)
    assert main(["check-config", "--config", str(path), "--online"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"routee: credentials accepted, balance \d+\.\d\d [A-Z]{3}", out), out
    assert APP_SECRET not in out
    monkeypatch.setenv("ROUTEE_SECRET", "wrong")
    assert main(["check-config", "--config", str(path), "--online"]) == 1
    assert "routee: auth_error" in capsys.readouterr().out


def test_plugins_as_a_table_on_a_terminal(capsys, monkeypatch):
    assert main(["plugins", "--format", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PLUGIN", "PACKAGE", "VERSION", "PROVIDERS", "STATE"]
    assert any(line.split()[:4] == ["viber_exporter.plugins.bsg", "viber-exporter", "0.1.0", "bsg"]
               and line.endswith("built in") for line in lines)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert main(["plugins"]) == 0 and capsys.readouterr().out.startswith("PLUGIN"), "auto: a table on a terminal"
    assert main(["plugins", "--format", "json"]) == 0 and json.loads(capsys.readouterr().out)


def test_watch_import_shows_its_progress_when_asked(make_config, serve, tmp_path, capsys):
    _, url = serve(make_config())
    csv_file = tmp_path / "many.csv"
    csv_file.write_text("".join(f"fake,p{n:05d}\n" for n in range(2500)) + "fake,bad id\n")
    assert main(["watch", "import", str(csv_file), "--url", url, "--progress"]) == 1
    captured = capsys.readouterr()
    steps = [s for s in captured.err.split("\r") if " % of 2501 lines" in s]
    assert len(steps) == 3, steps  # after 1,000, 2,000 and the rest
    assert steps[0].startswith(" 39 %") and "stored 1000" in steps[0]
    assert steps[-1].startswith("100 %") and "stored 2500, refused 1" in steps[-1]
    assert "stored 2500 rows: accepted 2500" in captured.out
    assert main(["watch", "import", str(csv_file), "--url", url]) == 1
    assert " % of " not in capsys.readouterr().err, "not on a pipe, unless asked"

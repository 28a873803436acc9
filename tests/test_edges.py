"""The edges an operator touches: bytes in the config, signals, odd requests, a second
process on the same store, the HTTP server's limits and the one rule of authentication.

Each point is tried through the real boundary: a real ``viber-exporter run`` child
process, real signals, real files, a real HTTP client on real sockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viber_exporter.config.load import load_config, parse_config
from viber_exporter.engine import Exporter
from viber_exporter.errors import ConfigError
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer, HttpServer
from viber_exporter.testing.mock import MockProviders, exporter_config
from viber_exporter.testing.simulation import Mix
from viber_exporter.web.app import BasicAuth, is_loopback

from .conftest import wait_for

SCRIPT = Path(sys.executable).parent / "viber-exporter"
TOKEN = "callback-t0ken/with-slash"
QUICK = Mix(pending=0.0, delivery_median=0.3, read_median=0.3, final_median=0.3, sigma=0.3, visible_after=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mock() -> Iterator[BackgroundServer]:
    server = BackgroundServer(MockProviders(QUICK, seed=3), "127.0.0.1", 0, name="mock")
    server.start()
    yield server
    server.stop()


class Child:
    """``viber-exporter run`` in a child process, on its own port."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
        self.process = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready(self) -> bool:
        assert self.process.poll() is None, f"the exporter died: {self.process.stderr.read()}"  # type: ignore[union-attr]
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def metric(self, line_start: str) -> float:
        for line in requests.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {line_start} in /metrics")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return str(err)


def child_config(tmp_path: Path, mock_url: str, port: int, **exporter: object) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(exporter_config(mock_url, tmp_path / "s.db",
                                    exporter={"listen": f"127.0.0.1:{port}", **exporter},
                                    polling={"tick": "200ms"},
                                    routee={"callback_token": TOKEN}))
    return path


@pytest.fixture
def child(tmp_path: Path, mock: BackgroundServer) -> Iterator[Child]:
    port = free_port()
    running = Child(child_config(tmp_path, mock.url, port), port)
    wait_for(running.ready, timeout=20)
    yield running
    running.stop()


# -- 1. bytes in the config ----------------------------------------------------------------


def test_a_non_utf8_config_is_a_clear_error_on_sighup_reload_and_check_config(child: Child):
    good = child.config.read_bytes()
    with child.config.open("ab") as f:
        f.write(b"\n# caf\xe9\n")
    child.process.send_signal(signal.SIGHUP)
    wait_for(lambda: child.metric("viber_exporter_config_last_reload_successful") == 0, timeout=10)
    assert child.ready(), "a bad byte on SIGHUP must not stop the exporter"
    answer = requests.post(f"{child.url}/-/reload", timeout=10)
    assert answer.status_code == 400
    assert "not UTF-8" in json.dumps(answer.json()) and "0xe9" in json.dumps(answer.json())
    result = subprocess.run([str(SCRIPT), "check-config", "--config", str(child.config)],
                            capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""})
    assert result.returncode == 1 and "byte 0xe9 on line" in result.stderr
    assert "Traceback" not in result.stderr
    child.config.write_bytes(good)
    child.process.send_signal(signal.SIGHUP)
    wait_for(lambda: child.metric("viber_exporter_config_last_reload_successful") == 1, timeout=10)
    assert "Traceback" not in child.stop()


def test_random_bytes_as_the_config_on_sighup_never_kill_the_exporter(child: Child):
    good = child.config.read_bytes()
    rng = __import__("random").Random(7)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(6)]
    samples += [b"[exporter]\nlisten = " + b"[" * 3000, good.replace(b"=", b"=\xff", 1), b"\x00" * 50]
    for data in samples:
        child.config.write_bytes(data)
        before = requests.post(f"{child.url}/-/reload", timeout=10)
        assert before.status_code == 400, data[:40]
        child.process.send_signal(signal.SIGHUP)
        checked = subprocess.run([str(SCRIPT), "check-config", "--config", str(child.config)], capture_output=True,
                                 text=True, timeout=30, check=False, env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""})
        assert checked.returncode == 1 and "configuration problem" in checked.stderr, checked.stderr
        assert "Traceback" not in checked.stderr
    child.config.write_bytes(good)
    assert requests.post(f"{child.url}/-/reload", timeout=10).status_code == 200
    assert child.ready()
    assert "Traceback" not in child.stop()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_the_config_file_give_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(data)
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    problems = config_problems(path, host)
    assert problems is None or (problems and all(isinstance(m, str) for _, m in problems))


def config_problems(path: Path, host: PluginHost) -> list[tuple[str, str]] | None:
    """None for a valid config; else the problems (anything else raised fails the test)."""
    try:
        load_config(path, host.provider_types(), environ={})
    except ConfigError as e:
        return e.problems
    return None


# -- 2-4. numbers and nesting that come in ---------------------------------------------------


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def test_sent_at_out_of_range_is_a_400_naming_it_and_nothing_is_stored(child: Child):
    now = time.time()
    for value, word in [("0001-01-01T00:00:00+23:59", "max_age"), ("1970-01-01T00:00:00Z", "max_age"),
                        (rfc3339(now - 3 * 86400), "max_age"), (rfc3339(now + 7200), "future"),
                        ("9999-12-31T23:59:59-23:59", "future"), ("2026-02-30T00:00:00Z", "not an RFC 3339")]:
        body = {"messages": [{"provider": "bsg", "id": "100"}, {"provider": "bsg", "id": "101", "sent_at": value}]}
        answer = requests.post(f"{child.url}/api/v1/messages", json=body, timeout=10)
        assert answer.status_code == 400, value
        assert answer.json()["details"][0]["index"] == 1 and word in answer.json()["details"][0]["error"], value
    assert requests.get(f"{child.url}/api/v1/messages/bsg/100", timeout=5).status_code == 404
    ok = {"messages": [{"provider": "bsg", "id": "102", "sent_at": rfc3339(now - 3600)}]}
    assert requests.post(f"{child.url}/api/v1/messages", json=ok, timeout=10).status_code == 200


def routee_report(tracking_id: str, **fields: object) -> dict[str, object]:
    return {"trackingId": tracking_id, "status": {"name": "DELIVERED", "updatedDate": rfc3339(time.time())},
            "price": 0.02, **fields}


def callback(child: Child, body: object, token: str = TOKEN) -> requests.Response:
    return requests.post(f"{child.url}/api/v1/callbacks/routee", params={"token": token}, json=body, timeout=30)


def test_provider_times_and_prices_out_of_range_are_answer_problems_and_reads_still_work(child: Child):
    ids = [f"0a047b46-a4dd-4ca8-b817-a6a1340000{n:02d}" for n in range(4)]
    year_one = routee_report(ids[0], status={"name": "DELIVERED", "updatedDate": "0001-01-01T00:00:00+23:59"})
    huge = routee_report(ids[1], price=1.7e308)
    assert callback(child, [year_one, huge, routee_report(ids[2])]).status_code == 200
    for message_id in ids[:3]:
        answer = requests.get(f"{child.url}/api/v1/messages/routee/{message_id}", timeout=5)
        assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    first = requests.get(f"{child.url}/api/v1/messages/routee/{ids[0]}", timeout=5).json()
    assert first["delivered_at"] >= first["registered_at"], "a year-1 delivery time is not believed"
    assert requests.get(f"{child.url}/api/v1/messages/routee/{ids[1]}", timeout=5).json()["price"] is None
    assert requests.get(f"{child.url}/api/v1/messages", timeout=5).status_code == 200
    assert child.metric('viber_provider_answer_problems_total{problem="time_out_of_range",provider="routee"}') == 1
    assert child.metric('viber_provider_answer_problems_total{problem="unreadable_field",provider="routee"}') == 1
    # The batch's events were counted, the sane price included, and latency is sane.
    assert child.metric('viber_message_status_transitions_total{provider="routee",status="delivered"}') == 3
    assert child.metric('viber_message_cost_total{channel="viber",currency="EUR",provider="routee"}') == 0.04
    assert child.metric('viber_message_delivery_latency_seconds_sum{provider="routee"}') < 60


def test_deeply_nested_json_is_a_400_on_every_route_that_reads_json(child: Child, caplog):
    deep = b"[" * 5000 + b"]" * 5000
    for path, params in [("/api/v1/messages", {}), ("/api/v1/callbacks/routee", {"token": TOKEN})]:
        answer = requests.post(f"{child.url}{path}", params=params, data=deep, timeout=10,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, path
        assert "error" in answer.json()
    assert "Traceback" not in child.stop()


def test_a_callback_has_the_registration_item_cap(child: Child):
    reports = [routee_report(f"0a047b46-a4dd-4ca8-b817-{n:012d}") for n in range(10_001)]
    answer = callback(child, reports)
    assert answer.status_code == 413 and "10000" in answer.json()["error"]
    assert requests.get(f"{child.url}/api/v1/messages", timeout=5).json()["messages"] == []
    assert callback(child, reports[:10_000]).status_code == 200


# -- 5. the HTTP server's limits ------------------------------------------------------------


def limited_exporter(tmp_path: Path, mock_url: str, builtin_host: PluginHost, *,
                     users: dict[str, str] | None = None, **limits: object) -> Exporter:
    text = exporter_config(mock_url, tmp_path / "s.db", exporter=dict(limits), routee={"callback_token": TOKEN})
    if users:
        text += "[exporter.basic_auth_users]\n" + "".join(f'{u} = "{h}"\n' for u, h in users.items())
    exporter = Exporter(parse_config(text, builtin_host.provider_types(), {}), builtin_host)
    exporter.start()
    return exporter


@pytest.fixture
def limited(tmp_path: Path, mock: BackgroundServer, builtin_host: PluginHost):
    made: list[tuple[Exporter, HttpServer]] = []

    def make(**limits: Any) -> HttpServer:
        exporter = limited_exporter(tmp_path, mock.url, builtin_host, **limits)
        server = HttpServer(exporter, "127.0.0.1", 0)
        server.start()
        made.append((exporter, server))
        return server

    yield make
    for exporter, server in made:
        server.stop()
        exporter.stop()


def open_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(s)
    return sockets


def test_idle_connections_hold_no_thread_and_are_closed_after_idle_timeout(limited):
    server = limited(threads=4, idle_timeout="2s")
    threads_before = threading.active_count()
    idle = open_idle(server.port, 300)
    try:
        # Every scrape is answered while 300 connections sit idle, by the same 4 workers.
        for _ in range(20):
            assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 200
        assert server.worker_threads() == 4
        assert threading.active_count() <= threads_before + 2
        # After idle_timeout the server closes them (a read sees the end of the stream).
        for s in idle[:20]:
            s.settimeout(10)
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()


def test_connections_past_max_connections_are_closed_at_once(limited):
    server = limited(max_connections=10, idle_timeout="30s")
    idle = open_idle(server.port, 10)
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b"", "an 11th connection is closed"
        extra.close()
        assert server.refused_connections >= 1
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: _answers(server.url))


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/healthy", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_request_trickling_its_headers_is_cut_off_after_body_timeout(limited):
    server = limited(body_timeout="1s", idle_timeout="30s", threads=2)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 12:
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except OSError:
            closed = True
            break
        slow.settimeout(0.5)
        try:
            if slow.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            pass
    slow.close()
    assert closed, "a slowloris client was never cut off"
    assert requests.get(f"{server.url}/-/healthy", timeout=5).status_code == 200


def test_an_unauthenticated_body_is_refused_after_its_headers_without_reading_it(limited):
    server = limited(api_token="s3cret-api-token")
    for path in ("/api/v1/messages", "/api/v1/callbacks/routee?token=wrong"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {10 * 1024 * 1024 - 10}\r\n\r\n".encode() + b"[" * 1000)
        s.settimeout(10)
        answer = s.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 401"), (path, answer[:80])
        assert "Connection: close" in answer
        s.close()


def test_an_authenticated_body_that_stalls_gets_a_408_within_the_deadline(limited):
    server = limited(body_timeout="1s", idle_timeout="30s")
    s = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    s.sendall(b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    deadline = time.monotonic() + 10
    answer = b""
    while time.monotonic() < deadline and not answer:
        try:
            s.sendall(b" ")
        except OSError:
            break
        s.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_listening_on_all_ipv6_interfaces_serves_ipv4_too(tmp_path, mock, builtin_host):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    exporter = limited_exporter(tmp_path, mock.url, builtin_host)
    server = HttpServer(exporter, "::", 0)
    server.start()
    try:
        assert "IPv6 and IPv4" in server.bound
        for host in ("127.0.0.1", "[::1]"):
            assert requests.get(f"http://{host}:{server.port}/-/healthy", timeout=5).status_code == 200
        # An IPv4 client appears as ::ffff:127.0.0.1 and is still loopback: it may write.
        answer = requests.post(f"http://127.0.0.1:{server.port}/api/v1/messages", timeout=5,
                               json={"messages": [{"provider": "bsg", "id": "7"}]})
        assert answer.status_code == 200
    finally:
        server.stop()
        exporter.stop()
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and not is_loopback("::ffff:10.0.0.1")


def test_the_demo_listens_on_an_ipv6_address(tmp_path):
    port = free_port()
    process = subprocess.Popen([str(SCRIPT), "demo", "--listen", f"[::]:{port}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}"), timeout=30)
        assert requests.get(f"http://[::1]:{port}/metrics", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0, out


# -- 6-7. one process per store; state copy ---------------------------------------------------


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


# -- 8-9. one rule for authentication -----------------------------------------------------------


def hashed(password: str, cost: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def test_with_basic_auth_users_every_route_but_health_and_callbacks_needs_them(limited):
    server = limited(users={"prom": hashed("pw", 4)})
    for path in ("/", "/metrics", "/api/v1/providers", "/api/v1/messages", "/api/v1/openapi.json", "/api/v1/docs"):
        answer = requests.get(f"{server.url}{path}", timeout=5)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic"), path
        assert requests.get(f"{server.url}{path}", auth=("prom", "pw"), timeout=5).status_code == 200, path
        assert requests.get(f"{server.url}{path}", auth=("prom", "nope"), timeout=5).status_code == 401, path
    for path in ("/-/healthy", "/-/ready"):
        assert requests.get(f"{server.url}{path}", timeout=5).status_code == 200
    assert callback_to(server, [routee_report("0a047b46-a4dd-4ca8-b817-a6a134dd1234")]).status_code == 200
    # A write from loopback needs a basic-auth user too while no api_token is set.
    body = {"messages": [{"provider": "bsg", "id": "9"}]}
    assert requests.post(f"{server.url}/api/v1/messages", json=body, timeout=5).status_code == 401
    assert requests.post(f"{server.url}/api/v1/messages", json=body, auth=("prom", "pw"), timeout=5).status_code == 200


def callback_to(server: HttpServer, body: object) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/callbacks/routee", params={"token": TOKEN}, json=body, timeout=10)


def test_unknown_users_cost_a_check_at_the_configured_cost_and_checks_run_one_at_a_time():
    from viber_exporter.secrets import Secret

    users = {"prom": Secret(hashed("pw", 6))}
    auth = BasicAuth()
    assert auth._dummy(users).startswith(b"$2b$06$")
    auth._checking.acquire()  # a check in progress
    auth.WAIT = 0.2
    request = type("R", (), {"authorization": type("A", (), {"type": "basic", "username": "nobody", "password": "x"})()})()
    from viber_exporter.web.app import AuthBusy

    with pytest.raises(AuthBusy):
        auth.check(request, users)  # type: ignore[arg-type]
    auth._checking.release()
    assert auth.check(request, users) is False  # type: ignore[arg-type]


# -- 11. secrets in the access log -----------------------------------------------------------


def test_the_access_log_never_shows_a_callback_token(limited, caplog):
    server = limited()
    with caplog.at_level(logging.DEBUG, logger="viber_exporter.access"):
        callback_to(server, [routee_report("0a047b46-a4dd-4ca8-b817-a6a134dd1234")])
        requests.post(f"{server.url}/api/v1/callbacks/routee?token=a%2Fb", json=[], timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "viber_exporter.access"]
    assert any("/api/v1/callbacks/routee" in line for line in lines)
    assert not any("t0ken" in line or "a/b" in line or "token" in line for line in lines)


# -- 14. readiness and retries while writes fail ----------------------------------------------


def test_ready_is_503_while_writes_fail_and_every_503_says_when_to_retry(limited):
    server = limited()
    store = server.app.exporter.store
    body = {"messages": [{"provider": "bsg", "id": str(n)} for n in range(2000)]}
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    answer = requests.post(f"{server.url}/api/v1/messages", json=body, timeout=10)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert requests.get(f"{server.url}/-/ready", timeout=5).status_code == 503
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert requests.post(f"{server.url}/api/v1/messages", json=body, timeout=10).status_code == 200
    assert requests.get(f"{server.url}/-/ready", timeout=5).status_code == 200


def test_tls_still_serves_and_a_client_that_never_handshakes_blocks_nobody(tmp_path, mock, builtin_host):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    exporter = limited_exporter(tmp_path, mock.url, builtin_host, tls_cert_file=str(tmp_path / "server.pem"),
                                tls_key_file=str(tmp_path / "server.pem"), threads=2, idle_timeout="30s")
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        for _ in range(5):
            answer = requests.get(f"{server.url}/-/healthy", verify=str(tmp_path / "ca.pem"), timeout=5)
            assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/-/healthy", timeout=5)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with socket.create_connection(("127.0.0.1", server.port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in silent:
            s.close()
        server.stop()
        exporter.stop()


# -- fuzzing the served API ----------------------------------------------------------------------


@pytest.mark.slow
def test_schemathesis_against_the_served_openapi_finds_no_5xx_and_no_undocumented_answer(child: Child, tmp_path):
    """Bounded in time (VIBER_EXPORTER_FUZZ_SECONDS, default 40 s): every answer is
    documented (status, content type, schema, headers) and none is a 5xx."""
    seconds = os.environ.get("VIBER_EXPORTER_FUZZ_SECONDS", "40")
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance,response_headers_conformance")
    st = Path(sys.executable).parent / "st"
    result = subprocess.run([str(st), "run", f"{child.url}/api/v1/openapi.json", "--max-time", seconds,
                             "--seed", "1", "--checks", checks, "--report-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=int(seconds) + 120, check=False,
                            cwd=tmp_path)  # its cache stays out of the repository
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary.lower().split("summary")[-1], summary
    assert child.ready()
    assert "Traceback" not in child.stop()

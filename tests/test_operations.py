"""Operations: reload (endpoint and SIGHUP), TLS and mutual TLS, basic auth, rate-limited error log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme

from viber_exporter.clock import ManualClock
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Registration
from viber_exporter.errorlog import ErrorLog
from viber_exporter.errors import ConfigError
from viber_exporter.reload import Reloader
from viber_exporter.server import HttpServer

from .conftest import config_text, sample, toml_table, wait_for, wait_ticks
from .test_cli import free_port

SCRIPT = Path(sys.executable).parent / "viber-exporter"


# -- reload through POST /-/reload ----------------------------------------------------------


@pytest.fixture
def reloadable(tmp_path, fake_server, fake_host, run_exporter):
    """An exporter whose config lives in a file, with its server and reloader."""
    server_url = fake_server[0].url_for("").rstrip("/")
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path / "state.db", server_url))
    from viber_exporter.config.load import load_config

    exporter = run_exporter(load_config(path, fake_host.provider_types(), {}))
    reloader = Reloader(exporter, fake_host, path)
    http = HttpServer(exporter, "127.0.0.1", 0, reloader)
    http.start()
    yield exporter, http.url, path, server_url
    http.stop()


def second_provider(base_url: str, name: str = "fake2") -> str:
    values = {"plugin": "fake", "base_url": base_url, "api_key": "k2-secret", "rate_limit": 1000}
    return f"\n[providers.{name}]\n{toml_table(values)}\n"


def test_reload_endpoint_adds_and_removes_providers_keeping_state_and_counters(reloadable, fake_server):
    exporter, url, path, server_url = reloadable
    _, api = fake_server
    api.messages["a1"] = {"status": "DELIVERED"}
    exporter.register([Registration("fake", "a1")])
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered") == 1)
    before = sample(exporter, "viber_exporter_config_last_reload_success_timestamp_seconds")
    # Add fake2 and remove fake.
    text = path.read_text()
    added = text.replace("[providers.fake]", "[providers.fake-old]").split("[providers.fake-old]")[0] + second_provider(server_url)
    path.write_text(added)
    time.sleep(0.01)
    answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "reloaded"}
    assert set(exporter.instances) == {"fake2"}
    assert exporter.poller.running
    assert sample(exporter, "viber_exporter_config_last_reload_successful") == 1
    assert sample(exporter, "viber_exporter_config_last_reload_success_timestamp_seconds") > before
    # The removed instance's message stays stored but is no longer polled; its counter survives.
    calls = len(api.calls_for("a1"))
    wait_ticks(exporter, "fake2")  # the poller ran: the removed instance had its chance
    assert len(api.calls_for("a1")) == calls
    assert exporter.store.get("fake", "a1").watched
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered") == 1
    # The new one polls.
    api.messages["b1"] = {"status": "SEEN"}
    assert requests.post(f"{url}/api/v1/messages", json={"messages": [{"provider": "fake2", "id": "b1"}]}, timeout=5).status_code == 200
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake2", status="read") == 1)
    names = [p["name"] for p in requests.get(f"{url}/api/v1/providers", timeout=5).json()["providers"]]
    assert names == ["fake2"]


def test_reload_endpoint_changing_a_provider_and_keeping_an_unchanged_one(reloadable):
    exporter, url, path, server_url = reloadable
    path.write_text(path.read_text() + second_provider(server_url))
    assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
    fake_instance = exporter.instances["fake"]
    path.write_text(path.read_text().replace('"rate_limit": 1000', '"rate_limit": 5').replace("rate_limit = 1000\ntimeout", "rate_limit = 1000\ntimeout"))
    path.write_text(path.read_text().replace("[providers.fake2]\nplugin", "[providers.fake2]\nconcurrency = 2\nplugin"))
    assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
    assert exporter.instances["fake"] is fake_instance, "unchanged: same instance, same health"
    assert exporter.instances["fake2"].config.concurrency == 2


def test_reload_keeps_an_unchanged_instance_s_poller_pacing_and_error_log(reloadable):
    exporter, url, path, server_url = reloadable
    poller, instance = exporter.poller.pollers["fake"], exporter.instances["fake"]
    instance.limiter.slow_down()  # as after a 429: the adapted pace must survive a reload
    pace, error_log = instance.limiter.rate, instance.error_log
    path.write_text(path.read_text() + second_provider(server_url))
    answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 200, answer.text
    assert exporter.poller.pollers["fake"] is poller and exporter.instances["fake"] is instance
    assert instance.limiter.rate == pace and instance.error_log is error_log
    assert set(exporter.poller.pollers) == {"fake", "fake2"}


def test_a_plugin_failing_to_build_its_instance_changes_nothing(reloadable, fake_server, caplog):
    """Reload builds everything first: a constructor that raises leaves polling as it was."""
    exporter, url, path, server_url = reloadable
    _, api = fake_server
    instances, config, pollers = dict(exporter.instances), exporter.config, dict(exporter.poller.pollers)
    broken = second_provider(server_url).replace("[providers.fake2]", "[providers.fake2]\nexplode_in_constructor = true")
    path.write_text(path.read_text() + broken)
    with caplog.at_level(logging.ERROR):
        answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 400, answer.text
    assert [d["key"] for d in answer.json()["details"]] == ["providers.fake2"]
    assert "explode" in answer.json()["details"][0]["error"]
    assert dict(exporter.instances) == instances and exporter.config is config
    assert dict(exporter.poller.pollers) == pollers and exporter.poller.running
    assert sample(exporter, "viber_exporter_config_last_reload_successful") == 0
    api.messages["after"] = {"status": "SEEN"}
    exporter.register([Registration("fake", "after")])
    wait_for(lambda: exporter.store.get("fake", "after").status.value == "read")


def test_a_reload_that_needs_a_restart_says_so(reloadable):
    exporter, url, path, _ = reloadable
    path.write_text(path.read_text().replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"'))
    answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "reloaded", "restart_needed": ["exporter.listen"]}
    assert exporter.config.exporter.listen == "127.0.0.1:0", "kept until the restart"


def test_invalid_reload_changes_nothing_and_reports_every_problem(reloadable, caplog):
    exporter, url, path, _ = reloadable
    instances, config = dict(exporter.instances), exporter.config
    path.write_text(path.read_text().replace('tick = "100ms"', 'tick = "soon"') + '\n[providers.ghost]\nplugin = "nobody"\n')
    with caplog.at_level(logging.ERROR, logger="viber_exporter.reload"):
        answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 400
    keys = {d["key"] for d in answer.json()["details"]}
    assert {"polling.tick", "providers.ghost.plugin"} <= keys
    assert exporter.instances == instances and exporter.config is config
    assert exporter.poller.running
    assert sample(exporter, "viber_exporter_config_last_reload_successful") == 0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "polling.tick" in logged and "providers.ghost.plugin" in logged


def test_reload_endpoint_is_write_authorised(tmp_path, fake_server, fake_host, run_exporter):
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path / "s.db", fake_server[0].url_for("").rstrip("/"), exporter={"api_token": "tok-reload"}))
    from viber_exporter.config.load import load_config

    exporter = run_exporter(load_config(path, fake_host.provider_types(), {}))
    http = HttpServer(exporter, "127.0.0.1", 0, Reloader(exporter, fake_host, path))
    http.start()
    try:
        assert requests.post(f"{http.url}/-/reload", timeout=5).status_code == 401
        assert requests.post(f"{http.url}/-/reload", headers={"Authorization": "Bearer tok-reload"}, timeout=5).status_code == 200
    finally:
        http.stop()


# -- reload through SIGHUP ------------------------------------------------------------------


def bsg_instance(name: str) -> str:
    return f'\n[providers.{name}]\nplugin = "bsg"\napi_key = "live_x"\nbase_url = "http://127.0.0.1:9"\n'


def test_sighup_reloads_valid_and_refuses_invalid(tmp_path):
    port = free_port()
    path = tmp_path / "config.toml"
    base = f'[exporter]\nlisten = "127.0.0.1:{port}"\nstate_path = "s.db"\n'
    path.write_text(base + bsg_instance("bsg-eu"))
    process = subprocess.Popen([str(SCRIPT), "run", "--config", str(path)], cwd=tmp_path, text=True,
                               env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def providers() -> list[str]:
        try:
            return [p["name"] for p in requests.get(f"{url}/api/v1/providers", timeout=2).json()["providers"]]
        except requests.RequestException:
            return []

    def reload_ok() -> float | None:
        text = requests.get(f"{url}/metrics", timeout=2).text
        line = next(line for line in text.splitlines() if line.startswith("viber_exporter_config_last_reload_successful "))
        return float(line.split()[1])

    try:
        wait_for(lambda: providers() == ["bsg-eu"], timeout=15)
        path.write_text(base + bsg_instance("bsg-asia"))  # one removed, one added
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: providers() == ["bsg-asia"], timeout=10)
        assert reload_ok() == 1
        path.write_text(base + bsg_instance("bsg-asia") + '[polling]\nmax_age = "never"\n')
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: reload_ok() == 0, timeout=10)
        assert providers() == ["bsg-asia"], "an invalid config changes nothing"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=12)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "polling.max_age" in output and "reload refused" in output


# -- TLS, mutual TLS, basic auth ---------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus@example.test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem", "key": tmp_path / "server.key",
             "client": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


def serve_with(make_config, run_exporter, **exporter_keys):
    exporter = run_exporter(make_config(exporter=exporter_keys))
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    return exporter, http


def test_tls(make_config, run_exporter, pki):
    _, http = serve_with(make_config, run_exporter, tls_cert_file=str(pki["cert"]), tls_key_file=str(pki["key"]))
    try:
        assert http.url.startswith("https://")
        assert requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{http.url}/metrics", timeout=5)  # not trusted without our CA
        with pytest.raises(requests.RequestException):
            requests.get(http.url.replace("https://", "http://") + "/metrics", timeout=5)
    finally:
        http.stop()


def test_mutual_tls(make_config, run_exporter, pki):
    _, http = serve_with(make_config, run_exporter, tls_cert_file=str(pki["cert"]), tls_key_file=str(pki["key"]),
                         tls_client_ca_file=str(pki["ca"]))
    try:
        ok = requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5)
        assert ok.status_code == 200
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), timeout=5)
    finally:
        http.stop()


def test_tls_config_problems(fake_host, tmp_path):
    text = '[exporter]\ntls_cert_file = "missing.pem"\ntls_client_ca_file = "ca.pem"\n[providers.x]\nplugin = "fake"\nbase_url = "http://a"\napi_key = "k"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {}, path=tmp_path / "config.toml")
    keys = {k for k, _ in info.value.problems}
    assert {"exporter.tls_cert_file", "exporter.tls_client_ca_file"} <= keys


def test_basic_auth_on_metrics(fake_server, fake_host, run_exporter, tmp_path):
    hashed = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=4)).decode()
    text = config_text(tmp_path / "auth.db", fake_server[0].url_for("").rstrip("/"))
    text += f'\n[exporter.basic_auth_users]\nprometheus = "{hashed}"\n'
    exporter = run_exporter(parse_config(text, fake_host.provider_types(), {}))
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    try:
        refused = requests.get(f"{http.url}/metrics", timeout=5)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(f"{http.url}/metrics", auth=("prometheus", "wrong"), timeout=5).status_code == 401
        assert requests.get(f"{http.url}/metrics", auth=("nobody", "scrape-pw"), timeout=5).status_code == 401
        for _ in range(3):  # verified once, then remembered
            accepted = requests.get(f"{http.url}/metrics", auth=("prometheus", "scrape-pw"), timeout=5)
            assert accepted.status_code == 200 and "viber_messages_watched" in accepted.text
        assert requests.get(f"{http.url}/-/healthy", timeout=5).status_code == 200, "only /metrics is protected"
    finally:
        http.stop()


def test_basic_auth_users_must_be_hashes(fake_host):
    text = '[exporter.basic_auth_users]\nprometheus = "plain-password-123"\n[providers.x]\nplugin = "fake"\nbase_url = "http://a"\napi_key = "k"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {})
    [(key, message)] = info.value.problems
    assert key == "exporter.basic_auth_users.prometheus" and "bcrypt" in message
    assert "plain-password-123" not in str(info.value)


# -- logging ---------------------------------------------------------------------------------


def test_error_log_is_rate_limited_with_a_count(caplog):
    clock = ManualClock()
    errors = ErrorLog("bsg", interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="viber_exporter.poller"):
        for second in range(30):
            clock.advance_to(float(second))
            errors.error("server_error", f"HTTP 500 #{second}")
        errors.flush()
        assert [r.getMessage() for r in caplog.records] == ["provider bsg: poll failed: server_error: HTTP 500 #0"]
        clock.advance_to(61.0)
        errors.flush()
        errors.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == "provider bsg: 29 more poll error(s) in the last 60s (last: server_error: HTTP 500 #29)"
    assert len(messages) == 2


def test_an_outage_does_not_flood_the_log(fake_server, make_config, virtual_exporter, caplog):
    """Ticked by the test: every call of a tick, and its log line, is done when tick() returns."""
    _, api = fake_server
    api.outage = (500, "{}", {})
    exporter, _, tick = virtual_exporter(make_config(provider={"concurrency": 4}))
    exporter.register([Registration("fake", f"o{i}") for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="viber_exporter.poller"):
        for _ in range(100):  # 10 virtual seconds
            tick(0.1)
    failures = sample(exporter, "viber_provider_requests_total", provider="fake", outcome="server_error")
    lines = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert failures >= 3 and len(lines) == 1, (failures, [r.getMessage() for r in lines])
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 1, "the up→down change is logged once"

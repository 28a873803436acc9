"""``exporter/reload.py``: reloading the configuration (``POST /-/reload`` and SIGHUP),
whatever bytes the file holds."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time

import pytest
import requests

from viber_exporter.engine import Registration
from viber_exporter.reload import Reloader
from viber_exporter.server import HttpServer

from .children import SCRIPT, Child, free_port, spawned, stop
from .conftest import config_text, sample, toml_table, wait_for, wait_ticks


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


def bsg_instance(name: str) -> str:
    return f'\n[providers.{name}]\nplugin = "bsg"\napi_key = "live_x"\nbase_url = "http://127.0.0.1:9"\n'


def test_sighup_reloads_valid_and_refuses_invalid(tmp_path):
    port = free_port()
    path = tmp_path / "config.toml"
    base = f'[exporter]\nlisten = "127.0.0.1:{port}"\nstate_path = "s.db"\n'
    path.write_text(base + bsg_instance("bsg-eu"))
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

    with spawned("run", "--config", str(path), cwd=tmp_path) as process:
        wait_for(lambda: providers() == ["bsg-eu"], timeout=15)
        path.write_text(base + bsg_instance("bsg-asia"))  # one removed, one added
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: providers() == ["bsg-asia"], timeout=10)
        assert reload_ok() == 1
        path.write_text(base + bsg_instance("bsg-asia") + '[polling]\nmax_age = "never"\n')
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: reload_ok() == 0, timeout=10)
        assert providers() == ["bsg-asia"], "an invalid config changes nothing"
        output = stop(process)
    assert process.returncode == 0
    assert "polling.max_age" in output and "reload refused" in output

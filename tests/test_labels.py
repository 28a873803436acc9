"""Message labels: declared in the configuration, given at registration, bounded once
and for good, and on every outcome metric (README, "Message labels")."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from viber_exporter.cli import main
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration, RegistrationError
from viber_exporter.errors import ConfigError
from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.mock import exporter_config
from viber_exporter.testing.simulation import Mix
from viber_exporter.testing.virtualtime import VirtualRun

from .children import SCRIPT
from .conftest import config_text, sample, wait_for

LABELS = """
[metrics.labels.kind]
values = ["otp", "transactional", "marketing"]
[metrics.labels.template]
max_values = 2
"""


def labelled_config(tmp_path: Path, server_url: str, fake_host: PluginHost, extra: str = LABELS, **kwargs: Any):
    text = config_text(tmp_path / "state.db", server_url, extra=extra, **kwargs)
    return parse_config(text, fake_host.provider_types(), environ={})


@pytest.fixture
def labelled(tmp_path, fake_server, fake_host):
    server, _ = fake_server
    return labelled_config(tmp_path, server.url_for("").rstrip("/"), fake_host)


# -- declarations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "key", "word"), [
    ("[metrics.labels.provider]\n", "metrics.labels.provider", "own metrics use"),
    ("[metrics.labels.2kind]\n", "metrics.labels.2kind", "letters, digits"),
    ("[metrics.labels.__x]\n", "metrics.labels.__x", "'__'"),
    ("[metrics.labels.kind]\nmax_values = 1001\n", "metrics.labels.kind.max_values", "1000"),
    ("[metrics.labels.kind]\nvalues = [\"other\"]\n", "metrics.labels.kind.values", "own values"),
    ("".join(f"[metrics.labels.l{n}]\n" for n in range(6)), "metrics.labels", "at most 5"),
    ("[metrics]\nmax_label_combinations = 100000\n" + "".join(f"[metrics.labels.l{n}]\nmax_values = 1000\n" for n in range(2)),
     "metrics.labels", "ceiling"),
])
def test_declarations_are_checked_with_their_key_paths(tmp_path, fake_host, extra, key, word):
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(tmp_path / "s.db", "http://127.0.0.1:9", extra=extra), fake_host.provider_types(), {})
    assert any(path == key and word in message for path, message in info.value.problems), info.value.problems


def test_check_config_prints_the_worst_case_series_count(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIBER_EXPORTER_LOAD_PLUGINS", "")
    path = tmp_path / "config.toml"
    path.write_text(exporter_config("http://127.0.0.1:9", tmp_path / "s.db") + LABELS)
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    # kind: 3 listed + other + "" = 5; template: 2 + 2 = 4; 20 combinations
    assert "message labels: kind (3 values listed), template (2 values)" in out
    assert "at most 20 combinations" in out and "series of the outcome metrics per provider instance" in out


# -- registration ------------------------------------------------------------------------------


def test_labels_through_the_api_are_stored_shown_and_counted_once(labelled, serve, fake_server):
    _, api = fake_server
    for message_id in ("a1", "a2", "a3"):
        api.messages[message_id] = {"status": "SEEN", "price": 0.01}
    exporter, url = serve(labelled)
    body = {"messages": [
        {"provider": "fake", "id": "a1", "labels": {"kind": "otp", "template": "login"}},
        {"provider": "fake", "id": "a2", "labels": {"kind": "newsletter"}},  # not in the allow-list
        {"provider": "fake", "id": "a3"},
    ]}
    assert requests.post(f"{url}/api/v1/messages", json=body, timeout=10).status_code == 200
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="read",
                            kind="otp", template="login") == 1)
    wait_for(lambda: exporter.store.total_watched() == 0)
    shown = requests.get(f"{url}/api/v1/messages/fake/a2", timeout=5).json()
    assert shown["labels"] == {"kind": "other", "template": ""}
    assert requests.get(f"{url}/api/v1/messages/fake/a3", timeout=5).json()["labels"] == {}
    for kind, template in (("otp", "login"), ("other", ""), ("", "")):
        labels = {"kind": kind, "template": template}
        assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered", **labels) == 1
        assert sample(exporter, "viber_message_delivery_latency_seconds_count", provider="fake", **labels) == 1
        assert sample(exporter, "viber_message_cost_total", provider="fake", currency="EUR", channel="viber", **labels) == 0.01
        assert sample(exporter, "viber_messages", provider="fake", status="read", **labels) == 1


def test_an_undeclared_label_or_a_long_value_is_a_400_naming_it_and_nothing_is_stored(labelled, serve):
    exporter, url = serve(labelled)
    for labels, word in [({"kind": "otp", "campaign": "x"}, "campaign"), ({"kind": "x" * 65}, "64"),
                         ({"kind": 3}, "string"), (["kind"], "object")]:
        body = {"messages": [{"provider": "fake", "id": "ok"}, {"provider": "fake", "id": "b1", "labels": labels}]}
        answer = requests.post(f"{url}/api/v1/messages", json=body, timeout=10)
        assert answer.status_code == 400
        [detail] = answer.json()["details"]
        assert detail["index"] == 1 and word in detail["error"], detail
    assert exporter.store.total_watched() == 0


@pytest.mark.usefixtures("fake_server")
def test_later_values_become_other_by_the_bound_the_same_after_a_restart(labelled, fake_host):
    first = Exporter(labelled, fake_host, registry=CollectorRegistry())
    first.register([Registration("fake", f"t{n}", labels={"template": name}) for n, name in enumerate(("a", "b", "c"))])
    assert [first.get_message("fake", f"t{n}").labels for n in range(2)] == [
        '{"kind":"","template":"a"}', '{"kind":"","template":"b"}']
    assert first.get_message("fake", "t2").labels == '{"kind":"","template":"other"}', "max_values = 2: the third is other"
    first.stop()
    again = Exporter(labelled, fake_host, registry=CollectorRegistry())
    try:
        again.register([Registration("fake", "t3", labels={"template": "b"}),
                        Registration("fake", "t4", labels={"template": "d"})])
        assert '"template":"b"' in again.get_message("fake", "t3").labels, "a kept value keeps its name"
        assert '"template":"other"' in again.get_message("fake", "t4").labels
    finally:
        again.stop()


def test_a_campaigns_labels_apply_to_its_messages(builtin_host, tmp_path):
    run = VirtualRun(builtin_host, tmp_path / "s.db", mix=Mix(read_median=60.0, final_median=5.0, visible_after=0.0), seed=7,
                     polling={"tick": "5s", "schedule": ["10s", "30s"], "read_window": "1m", "max_age": "10m"},
                     routee={"rate_limit": 100}, extra='[metrics.labels.kind]\nvalues = ["marketing"]\n')
    try:
        campaign, plans = run.mock.simulation.create_campaign("routee", run.clock.time(), 20, "delivered")
        run.exporter.register_items([{"provider": "routee", "campaign": campaign, "labels": {"kind": "marketing"}}])
        assert run.exporter.registry.get_sample_value(
            "viber_message_status_transitions_total", {"provider": "routee", "status": "delivered", "kind": "marketing"}
        ) == 0, "the campaign's combination exists at 0 before its messages are found"
        run.registered.update(("routee", p.id) for p in plans)
        assert run.run_until_settled(tick=5, limit=3600)
        assert run.value("viber_message_status_transitions_total", provider="routee", status="delivered", kind="marketing") == 20
        assert run.value("viber_message_status_transitions_total", provider="routee", status="delivered", kind="") == 0
    finally:
        run.close()


def test_a_pushed_report_for_an_unregistered_message_gets_no_labels(labelled, run_exporter):
    from viber_exporter.model import Observation, Report, Status

    exporter = run_exporter(labelled)
    # the path a callback takes once parsed (tests/test_plugin_api.py drives it over HTTP)
    exporter.ingest_reports("fake", [Report("pushed1", Observation(Status.DELIVERED))])
    assert exporter.get_message("fake", "pushed1").labels is None
    assert sample(exporter, "viber_message_status_transitions_total", provider="fake", status="delivered", kind="", template="") == 1


def test_watch_add_import_and_list_carry_labels(labelled, serve, tmp_path, capsys):
    exporter, url = serve(labelled)
    assert main(["watch", "add", "fake", "w1", "--label", "kind=otp", "--label", "template=reset", "--url", url]) == 0
    assert exporter.get_message("fake", "w1").labels == '{"kind":"otp","template":"reset"}'
    assert main(["watch", "add", "fake", "w2", "--label", "kind", "--url", url]) == 2
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("provider,id,label.kind,labels\nfake,i1,transactional,template=invoice\nfake,i2,,\n")
    assert main(["watch", "import", str(csv_file), "--url", url]) == 0
    assert exporter.get_message("fake", "i1").labels == '{"kind":"transactional","template":"invoice"}'
    assert exporter.get_message("fake", "i2").labels is None
    capsys.readouterr()
    assert main(["watch", "list", "--url", url]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert {r[1]: r[-1] for r in rows} == {"w1": "kind=otp,template=reset", "i1": "kind=transactional,template=invoice", "i2": "-"}


# -- across a kill -9 and across replicas ---------------------------------------------------------


def test_labelled_messages_count_once_across_a_kill_9(tmp_path):
    """Stored with their labels before the 200; after a kill -9 and a restart, the
    messages settled before it are not counted again, the rest count once, each under
    the labels it was registered with."""
    from viber_exporter.server import BackgroundServer
    from viber_exporter.testing.mock import MockProviders

    from .children import free_port

    mock = MockProviders(Mix(read=1, delivered=0, failed=0, expired=0, pending=0, delivery_median=2.0,
                             read_median=0.5, sigma=0.2, visible_after=0.0), seed=9)
    server = BackgroundServer(mock, "127.0.0.1", 0)
    server.start()
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(exporter_config(server.url, tmp_path / "s.db", exporter={"listen": f"127.0.0.1:{port}"},
                                      polling={"tick": "200ms", "schedule": ["500ms"]}) + LABELS)
    env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        wait_for(lambda: _ready(port), timeout=20)
        return process

    def counted() -> float:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("viber_message_status_transitions_total{") and 'status="delivered"' in line
                   and 'kind="otp"' in line)

    try:
        process = start()
        plans = [mock.simulation.create("bsg", __import__("time").time()) for _ in range(40)]
        body = {"messages": [{"provider": "bsg", "id": p.id, "labels": {"kind": "otp"}} for p in plans]}
        assert requests.post(f"http://127.0.0.1:{port}/api/v1/messages", json=body, timeout=10).status_code == 200
        wait_for(lambda: counted() >= 10, timeout=30)
        before = counted()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process = start()
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/api/v1/messages", params={"limit": 1000}, timeout=5)
                 .json()["messages"] and all(not m["watched"] for m in requests.get(
                     f"http://127.0.0.1:{port}/api/v1/messages", params={"limit": 1000}, timeout=5).json()["messages"]),
                 timeout=60)
        after = counted()
        assert before + after <= 40, "never twice"
        assert after >= 40 - before - 3, "at most the events in flight at the kill are lost"
        stored = requests.get(f"http://127.0.0.1:{port}/api/v1/messages", params={"limit": 1000}, timeout=5).json()["messages"]
        assert len(stored) == 40 and all(m["labels"] == {"kind": "otp", "template": ""} for m in stored)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_replicas_on_postgresql_bound_labels_the_same_way(pg_url, fake_host, fake_server, tmp_path):
    """Each replica decides against the kept values in the database: a value one replica
    kept keeps its name on the other, and once the bound is reached both say other."""
    server, _ = fake_server
    text = config_text(tmp_path / "unused.db", server.url_for("").rstrip("/"), extra=LABELS,
                       exporter={"state_url": pg_url})
    config = parse_config(text, fake_host.provider_types(), environ={})
    a = Exporter(config, fake_host, registry=CollectorRegistry())
    b = Exporter(config, fake_host, registry=CollectorRegistry())  # its kept values are read now: none
    try:
        a.register([Registration("fake", "m1", labels={"template": "x"}), Registration("fake", "m2", labels={"template": "y"})])
        b.register([Registration("fake", "m3", labels={"template": "y"}), Registration("fake", "m4", labels={"template": "z"})])
        assert '"template":"y"' in b.get_message("fake", "m3").labels, "kept by the other replica"
        assert '"template":"other"' in b.get_message("fake", "m4").labels
        a.register([Registration("fake", "m5", labels={"template": "z"})])
        assert '"template":"other"' in a.get_message("fake", "m5").labels
    finally:
        a.stop()
        b.stop()


def test_an_invalid_label_via_register_is_refused(labelled, fake_host):
    exporter = Exporter(labelled, fake_host, registry=CollectorRegistry())
    try:
        with pytest.raises(RegistrationError):
            exporter.register([Registration("fake", "x", labels={"nope": "1"})])
        assert exporter.store.total_watched() == 0
    finally:
        exporter.stop()

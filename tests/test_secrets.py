"""A sentinel secret never appears in logs, metrics, stored errors, reprs or config errors."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from viber_exporter.cli import main
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Registration
from viber_exporter.errors import ConfigError
from viber_exporter.logs import setup_logging
from viber_exporter.secrets import Secret, redact

from .conftest import SENTINEL, sample, wait_for


@pytest.fixture
def log_output():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("debug", "text", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_sentinel_secret_absent_everywhere(fake_server, make_config, run_exporter, log_output, fake_host):
    _, api = fake_server
    api.messages["leak"] = {"status": "QUEUED", "explode": True}
    config = make_config(provider={"callback_token": SENTINEL + "-cb"})
    exporter = run_exporter(config)
    exporter.register([Registration("fake", "leak")])
    wait_for(lambda: sample(exporter, "viber_provider_requests_total", provider="fake", outcome="invalid_response") >= 1)
    wait_for(lambda: exporter.store.get("fake", "leak").last_error)
    assert SENTINEL in api.keys_seen, "the secret was really used"
    logged = log_output.getvalue()
    assert "could not use key ********" in logged, "the careless plugin's message was logged, redacted"
    stored = exporter.store.get("fake", "leak").last_error
    surfaces = {
        "log": logged,
        "stored error": stored,
        "metrics": generate_latest(exporter.registry).decode(),
        "openmetrics": generate_openmetrics(exporter.registry).decode(),
        "config repr": repr(config),
    }
    for where, text in surfaces.items():
        assert SENTINEL not in text, where


def test_json_logs_are_redacted_too():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", "json", stream)
        Secret(SENTINEL)
        logging.getLogger("viber_exporter.test").info("token is %s", SENTINEL)
        try:
            raise ValueError(SENTINEL)
        except ValueError:
            logging.getLogger("viber_exporter.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert SENTINEL not in text and '"level": "info"' in text and "ValueError" in text


def test_secret_repr_and_redact():
    secret = Secret(SENTINEL)
    assert SENTINEL not in repr(secret) and SENTINEL not in str(secret) and SENTINEL not in f"{secret}"
    assert secret.reveal() == SENTINEL
    assert redact(f"x {SENTINEL} y") == "x ******** y"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


def test_config_errors_never_echo_secret_values(fake_host):
    text = f"""
[exporter]
api_token = {{ nested = "{SENTINEL}" }}
[providers.fake]
plugin = "fake"
base_url = "http://{SENTINEL}:x"
api_key = ["{SENTINEL}"]
callback_token = 12
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {})
    # base_url is not a secret, so its value may be quoted; the secret-typed keys must not be.
    message = "\n".join(m for p, m in info.value.problems if not p.endswith("base_url"))
    assert SENTINEL not in message


# Secrets written the ways real ones arrive: a trailing newline (a variable filled from a
# file), quotes and backslashes (escaped differently by repr and JSON), non-ASCII.
AWKWARD = [
    'qu"ote\'-s3cr3t-AWK1',
    "back\\slash-s3cr3t-AWK2",
    "nön-äscii-s3cr3t-✓-AWK3",
    "trailing-newline-s3cr3t-AWK4\n",
]


def written_forms(secret: str) -> set[str]:
    import json as _json

    value = secret.strip()
    return {value, repr(value)[1:-1], _json.dumps(value)[1:-1], _json.dumps(value, ensure_ascii=False)[1:-1]}


@pytest.mark.parametrize("secret", AWKWARD, ids=["quotes", "backslash", "non-ascii", "newline"])
def test_awkward_secrets_never_reach_any_output(secret, make_config, serve, fake_server, tmp_path, capsys, monkeypatch):
    import json as _json

    import requests

    from viber_exporter.cli import main
    from viber_exporter.probe import run_probe

    _, api = fake_server
    value = secret.strip()
    # The provider echoes the key in its error bodies, as careless APIs do.
    api.outage = (500, _json.dumps({"error": f"bad key {value}", "key": value}), {})
    text_log, json_log = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("debug", "text", text_log)
    json_handler = logging.StreamHandler(json_log)
    from viber_exporter.logs import JsonFormatter

    json_handler.setFormatter(JsonFormatter())
    root.addHandler(json_handler)
    try:
        config = make_config(provider={"api_key": secret, "callback_token": "cb-" + value},
                             exporter={"api_token": "plain-api-token-x1"})
        assert config.providers["fake"].settings.api_key.reveal() == value, "whitespace around a secret is removed"
        exporter, url = serve(config)
        headers = {"Authorization": "Bearer plain-api-token-x1"}
        requests.post(f"{url}/api/v1/messages", json={"messages": [{"provider": "fake", "id": "s1"}]},
                      headers=headers, timeout=5)
        wait_for(lambda: exporter.store.get("fake", "s1") is not None and exporter.store.get("fake", "s1").last_error)
        logging.getLogger("viber_exporter.test").warning("a careless line with %s in it", value)
        probe_report, _ = run_probe(config.providers["fake"], "s1")
        surfaces = {
            "metrics": requests.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5).text,
            "landing": requests.get(f"{url}/", timeout=5).text,
            "providers": requests.get(f"{url}/api/v1/providers", timeout=5).text,
            "message": requests.get(f"{url}/api/v1/messages/fake/s1", timeout=5).text,
            "probe": _json.dumps(probe_report, ensure_ascii=False) + _json.dumps(probe_report),
        }
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    surfaces["text log"] = text_log.getvalue()
    surfaces["json log"] = json_log.getvalue()
    assert "a careless line with ********" in surfaces["text log"]
    path = tmp_path / "bad.toml"
    path.write_text(f"[exporter]\napi_token = {_json.dumps(secret)}\ncolour = 1\n[providers.b]\nplugin = \"bsg\"\n"
                    f"api_key = {_json.dumps(secret)}\nlookup = \"x\"\n", encoding="utf-8")
    monkeypatch.setenv("VIBER_EXPORTER_LOAD_PLUGINS", "")
    assert main(["check-config", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    surfaces["check-config"] = captured.out + captured.err
    for where, text in surfaces.items():
        for form in written_forms(secret):
            assert form not in text, (where, form)


def test_a_secret_with_a_control_character_inside_is_a_config_problem(fake_host):
    text = '[providers.fake]\nplugin = "fake"\nbase_url = "http://a"\napi_key = "line1\\nline2-s3cr3t"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {})
    [(key, message)] = info.value.problems
    assert key == "providers.fake.api_key" and "control character" in message and "line1" not in message


def test_sentinel_secrets_never_appear_anywhere(make_config, serve, fake_server, capsys, caplog, tmp_path, monkeypatch):
    _, api = fake_server
    api.outage = (500, json.dumps({"echo": SENTINEL}), {})
    config = make_config(exporter={"api_token": SENTINEL + "-api"}, provider={"callback_token": SENTINEL + "-cb"})
    with caplog.at_level(logging.DEBUG):
        exporter, url = serve(config)
        headers = {"Authorization": f"Bearer {SENTINEL}-api"}
        requests.post(f"{url}/api/v1/messages", json={"messages": [{"provider": "fake", "id": "s1"}]}, headers=headers, timeout=5)
        wait_for(lambda: exporter.store.get("fake", "s1").last_error)
        surfaces = {
            "metrics": requests.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5).text,
            "landing": requests.get(f"{url}/", timeout=5).text,
            "providers": requests.get(f"{url}/api/v1/providers", timeout=5).text,
            "messages": requests.get(f"{url}/api/v1/messages", timeout=5).text,
            "message": requests.get(f"{url}/api/v1/messages/fake/s1", timeout=5).text,
            "401": requests.post(f"{url}/api/v1/messages", json={}, headers={"Authorization": "Bearer wrong"}, timeout=5).text,
            "callback 401": requests.post(f"{url}/api/v1/callbacks/fake?token=wrong", json={}, timeout=5).text,
            "repr": repr(config),
        }
    surfaces["logs"] = "\n".join(r.getMessage() for r in caplog.records)
    path = tmp_path / "bad.toml"
    path.write_text(f'[exporter]\napi_token = "{SENTINEL}"\ncolour = 1\n[providers.b]\nplugin = "bsg"\napi_key = "{SENTINEL}"\nlookup = "x"\n')
    monkeypatch.setenv("VIBER_EXPORTER_LOAD_PLUGINS", "")
    assert main(["check-config", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    surfaces["check-config"] = captured.out + captured.err
    for where, text in surfaces.items():
        assert SENTINEL not in text, where

"""A sentinel secret never appears in logs, metrics, stored errors, reprs or config errors."""

from __future__ import annotations

import io
import logging

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from viber_exporter.config import parse_config
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

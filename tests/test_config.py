"""Configuration: validated, immutable, every problem at once with its key path, secrets hidden."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viber_exporter.config.load import load_config, parse_config
from viber_exporter.durations import parse_duration
from viber_exporter.errors import ConfigError
from viber_exporter.pluginhost import PluginHost

from .conftest import SENTINEL
from .fuzzing import FUZZ

VALID = """
[exporter]
listen = "127.0.0.1:9839"
state_path = "state.db"
api_token = "${{TOKEN:-}}"

[polling]
tick = "5s"
schedule = ["10s", "1m"]

[providers.one]
plugin = "fake"
base_url = "http://127.0.0.1:1"
api_key = "${{FAKE_KEY}}"
{extra}
"""


def problems(text: str, host, environ=None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, host.provider_types(), environ or {})
    return info.value.problems


def test_valid_config_is_parsed_into_frozen_objects(fake_host):
    config = parse_config(VALID.format(extra=""), fake_host.provider_types(), {"FAKE_KEY": "k" * 8})
    assert (config.exporter.listen_host, config.exporter.listen_port) == ("127.0.0.1", 9839)
    assert config.exporter.api_token is None, "an empty ${VAR:-} default means unset"
    assert config.polling.schedule == (10.0, 60.0)
    assert config.polling.max_age == 48 * 3600, "defaults fill what is not given"
    provider = config.providers["one"]
    assert (provider.concurrency, provider.rate_limit, provider.timeout) == (8, 10.0, 10.0)
    assert provider.polling.tick == 5.0
    assert provider.settings.api_key.reveal() == "k" * 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.polling.tick = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.providers["two"] = provider  # type: ignore[index]


def test_provider_overrides_tick_and_schedule(fake_host):
    extra = 'tick = "1s"\nschedule = ["2s"]\nconcurrency = 3\nrate_limit = 2.5\ntimeout = "500ms"\nenabled = false'
    config = parse_config(VALID.format(extra=extra), fake_host.provider_types(), {"FAKE_KEY": "abcd"})
    provider = config.providers["one"]
    assert provider.polling.tick == 1.0 and provider.polling.schedule == (2.0,)
    assert (provider.concurrency, provider.rate_limit, provider.timeout, provider.enabled) == (3, 2.5, 0.5, False)
    assert config.polling.tick == 5.0


def test_the_adaptive_schedule_and_its_budget(fake_host):
    env = {"FAKE_KEY": "abcd"}
    config = parse_config(VALID.format(extra='schedule = "adaptive"\nadaptive_budget = 12'),
                          fake_host.provider_types(), env)
    own = config.providers["one"].polling
    assert own.adaptive and own.adaptive_budget == 12.0
    assert own.schedule == (10.0, 60.0), "until it has learned, the inherited fixed schedule"
    assert not config.polling.adaptive and config.polling.adaptive_budget == 8.0
    top = VALID.replace('schedule = ["10s", "1m"]', 'schedule = "adaptive"')
    config = parse_config(top.format(extra='schedule = ["2s"]'), fake_host.provider_types(), env)
    assert config.polling.adaptive and config.polling.schedule[:3] == (10.0, 20.0, 30.0)
    assert not config.providers["one"].polling.adaptive, "an instance's own list wins"
    bad = VALID.replace('schedule = ["10s", "1m"]', 'schedule = "fast"\nadaptive_budget = 0')
    assert [key for key, _ in problems(bad.format(extra=""), fake_host, env)] == [
        "polling.schedule", "polling.adaptive_budget"]
    assert "adaptive" in dict(problems(bad.format(extra=""), fake_host, env))["polling.schedule"]


def test_every_problem_is_reported_at_once_with_its_key_path(fake_host):
    text = """
[exporter]
listen = "nowhere"
log_level = "chatty"
colour = "blue"

[polling]
tick = "soon"
schedule = ["10s", "-"]
max_watched = 0

[metrics]
extra_labels = ["phone"]

[providers.one]
plugin = "fake"
base_url = "ftp://x"
currency = "euro"
concurrency = 0
rate_limit = -1

[providers.two]
plugin = "nobody"

[providers.three]
plugin = "fake"
base_url = "http://127.0.0.1:1"
api_key = "${MISSING_VAR}"
"""
    found = dict(problems(text, fake_host))
    expected_paths = {
        "exporter.listen", "exporter.log_level", "exporter.colour", "polling.tick",
        "polling.schedule[1]", "polling.max_watched", "metrics.extra_labels[0]",
        "providers.one.base_url", "providers.one.currency", "providers.one.api_key",
        "providers.one.concurrency", "providers.one.rate_limit", "providers.two.plugin",
        "providers.three.api_key",
    }
    assert expected_paths <= set(found), sorted(found)
    assert "MISSING_VAR" in found["providers.three.api_key"]
    assert "nobody" in found["providers.two.plugin"] and "fake" in found["providers.two.plugin"]
    assert "not a known setting" in found["exporter.colour"]


def test_config_error_message_lists_all_problems(fake_host):
    with pytest.raises(ConfigError) as info:
        parse_config("[polling]\ntick = 'x'\nmax_age = 'y'\n", fake_host.provider_types(), {})
    text = str(info.value)
    assert "polling.tick" in text and "polling.max_age" in text and "providers" in text


def test_invalid_toml_is_one_clear_problem(fake_host):
    assert "not valid TOML" in problems("[exporter\n", fake_host)[0][1]


def test_secret_from_file_and_conflicts(fake_host, tmp_path: Path):
    (tmp_path / "key.txt").write_text(SENTINEL + "\n")
    text = VALID.format(extra="").replace('api_key = "${FAKE_KEY}"', 'api_key_file = "key.txt"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(path, fake_host.provider_types(), {})
    assert config.providers["one"].settings.api_key.reveal() == SENTINEL, "relative to the config file"
    assert config.exporter.state_path == tmp_path / "state.db"

    both = text.replace('api_key_file = "key.txt"', 'api_key_file = "key.txt"\napi_key = "x"')
    assert any("not both" in m for _, m in problems(both, fake_host))
    missing = text.replace("key.txt", "/nonexistent/key")
    found = dict(problems(missing, fake_host))
    assert "cannot read" in found["providers.one.api_key_file"]


def test_secrets_never_appear_in_repr_or_errors(fake_host):
    config = parse_config(VALID.format(extra=""), fake_host.provider_types(), {"FAKE_KEY": SENTINEL, "TOKEN": SENTINEL})
    assert SENTINEL not in repr(config)
    assert SENTINEL not in str(config.providers["one"].settings)
    bad = VALID.format(extra='concurrency = "lots"\nbogus = 1\ncallback_token = 5')
    with pytest.raises(ConfigError) as info:
        parse_config(bad, fake_host.provider_types(), {"FAKE_KEY": SENTINEL, "TOKEN": SENTINEL})
    assert SENTINEL not in str(info.value)


def test_env_substitution_forms(fake_host):
    text = VALID.format(extra='currency = "${CUR:-USD}"\ncallback_token = "pre-${TOKEN}-post"')
    config = parse_config(text, fake_host.provider_types(), {"FAKE_KEY": "abcd", "TOKEN": "tok"})
    assert config.providers["one"].settings.currency == "USD"
    assert config.providers["one"].callback_token.reveal() == "pre-tok-post"
    config = parse_config(text, fake_host.provider_types(), {"FAKE_KEY": "abcd", "TOKEN": "t", "CUR": "GBP"})
    assert config.providers["one"].settings.currency == "GBP"


def test_url_with_credentials_is_refused_without_echoing_them(fake_host):
    text = VALID.format(extra="").replace("http://127.0.0.1:1", f"https://user:{SENTINEL}@example.com")
    found = dict(problems(text, fake_host, {"FAKE_KEY": "abcd"}))
    assert "credentials" in found["providers.one.base_url"]
    assert SENTINEL not in repr(found)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("5m", 300), ("48h", 172800), ("7d", 604800), ("1h30m", 5400), (30, 30), (1.5, 1.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5 minutes", "m5", -1, True, "1x"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration|negative"):
        parse_duration(text)


def test_listen_forms(fake_host):
    for listen, expected in [("[::1]:9000", ("::1", 9000)), ("0.0.0.0:1", ("0.0.0.0", 1)), (":9839", ("0.0.0.0", 9839))]:
        text = VALID.format(extra="").replace("127.0.0.1:9839", listen)
        config = parse_config(text, fake_host.provider_types(), {"FAKE_KEY": "abcd"})
        assert (config.exporter.listen_host, config.exporter.listen_port) == expected


def test_an_empty_required_setting_and_typos_get_clear_problems(builtin_host):
    text = """
[exporter]
listn = "127.0.0.1:9839"
[pollng]
tick = "5s"
[providers.routee]
plugin = "routee"
application_id = "${ROUTEE_APPLICATION_ID}"
application_secret = "${ROUTEE_APPLICATION_SECRET}"
curency = "EUR"
"""
    environ = {"ROUTEE_APPLICATION_ID": "", "ROUTEE_APPLICATION_SECRET": "s3cr3t-value"}
    found = dict(problems(text, builtin_host, environ))
    assert found["providers.routee.application_id"] == "is empty"
    assert found["providers.routee.curency"] == "is not a known setting; did you mean 'currency'?"
    assert found["exporter.listn"] == "is not a known setting; did you mean 'listen'?"
    assert found["pollng"] == "is not a known setting; did you mean 'polling'?"
    blank = dict(problems(text.replace("${ROUTEE_APPLICATION_ID}", "  "), builtin_host, environ))
    assert blank["providers.routee.application_id"] == "is empty"


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


def test_tls_config_problems(fake_host, tmp_path):
    text = '[exporter]\ntls_cert_file = "missing.pem"\ntls_client_ca_file = "ca.pem"\n[providers.x]\nplugin = "fake"\nbase_url = "http://a"\napi_key = "k"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {}, path=tmp_path / "config.toml")
    keys = {k for k, _ in info.value.problems}
    assert {"exporter.tls_cert_file", "exporter.tls_client_ca_file"} <= keys


def test_basic_auth_users_must_be_hashes(fake_host):
    text = '[exporter.basic_auth_users]\nprometheus = "plain-password-123"\n[providers.x]\nplugin = "fake"\nbase_url = "http://a"\napi_key = "k"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, fake_host.provider_types(), {})
    [(key, message)] = info.value.problems
    assert key == "exporter.basic_auth_users.prometheus" and "bcrypt" in message
    assert "plain-password-123" not in str(info.value)


HOST = PluginHost()
HOST.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})


keys = st.sampled_from(["listen", "state_path", "api_token", "tick", "schedule", "max_age", "plugin", "concurrency",
                        "rate_limit", "timeout", "api_key", "base_url", "lookup", "timezone", "currency",
                        "application_id", "application_secret", "enabled", "extra_labels", "latency_buckets"]) | st.text(min_size=1, max_size=8)
toml_scalars = st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=4)
tables = st.dictionaries(keys, toml_values, max_size=8)


def render(document: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in document.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines)


@FUZZ
@given(document=st.fixed_dictionaries({}, optional={"exporter": tables, "polling": tables, "metrics": tables,
                                                    "providers.a": tables, "providers.b": tables}))
def test_any_toml_document_is_a_config_or_a_config_error(document):
    try:
        parse_config(render(document), HOST.provider_types(), {})
    except ConfigError as e:
        problems = e.problems
    else:
        return
    assert problems
    assert all(isinstance(m, str) and m for _, m in problems)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text):
    with pytest.raises(ConfigError):
        parse_config(text, HOST.provider_types(), {})

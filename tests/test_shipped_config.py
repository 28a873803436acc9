"""The shipped config.toml is complete and valid once its environment variables are set."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from viber_exporter.config.load import parse_config
from viber_exporter.errors import ConfigError
from viber_exporter.pluginhost import PluginHost

ROOT = Path(__file__).resolve().parent.parent
ENV = {"ROUTEE_APPLICATION_ID": "id", "ROUTEE_APPLICATION_SECRET": "secret", "BSG_API_KEY": "live_key"}


@pytest.fixture
def host(builtin_host: PluginHost) -> PluginHost:
    return builtin_host


def test_shipped_config_is_valid_with_its_environment(host):
    config = parse_config((ROOT / "config.toml").read_text(), host.provider_types(), ENV)
    assert set(config.providers) == {"routee", "bsg"}
    assert config.exporter.api_token is None
    from viber_exporter.config.load import DEFAULT_PUSH_SCHEDULE, DEFAULT_SCHEDULE
    from viber_exporter.durations import parse_duration

    assert config.polling.schedule == tuple(parse_duration(d) for d in DEFAULT_SCHEDULE), "the shipped one is the default"
    assert config.polling.push_schedule == tuple(parse_duration(d) for d in DEFAULT_PUSH_SCHEDULE)


def test_shipped_config_names_its_missing_variables(host):
    with pytest.raises(ConfigError) as info:
        parse_config((ROOT / "config.toml").read_text(), host.provider_types(), {})
    text = str(info.value)
    for var in ENV:
        assert var in text


def test_shipped_config_sets_every_binding_key():
    document = tomllib.loads((ROOT / "config.toml").read_text())
    assert set(document["exporter"]) >= {"listen", "state_path", "api_token", "log_level"}
    assert set(document["polling"]) == {
        "tick", "schedule", "max_age", "read_window", "not_found_grace", "retention", "max_watched",
        "final_look_grace", "push_schedule", "adaptive_budget",
    }


def test_shipped_config_keeps_its_state_in_the_units_state_directory(host, tmp_path):
    """systemd's StateDirectory= sets $STATE_DIRECTORY: the state lands there, not in
    the read-only /etc/viber-exporter beside the config; elsewhere beside the config."""
    text = (ROOT / "config.toml").read_text()
    config = parse_config(text, host.provider_types(), {**ENV, "STATE_DIRECTORY": str(tmp_path)})
    assert config.exporter.state_path == tmp_path / "viber-exporter.db"
    beside = parse_config(text, host.provider_types(), ENV, path=tmp_path / "config.toml")
    assert beside.exporter.state_path.resolve() == (tmp_path / "viber-exporter.db").resolve()


def test_a_state_path_that_cannot_be_written_is_a_config_problem(host, tmp_path):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "viber-exporter.db").mkdir()
    text = (ROOT / "config.toml").read_text()
    for directory, word in [(tmp_path / "a-file", "not a directory"), (tmp_path, "is a directory")]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, host.provider_types(), {**ENV, "STATE_DIRECTORY": str(directory)})
        assert "exporter.state_path" in str(info.value) and word in str(info.value)


def test_example_config_prints_the_shipped_config_and_check_config_accepts_it(tmp_path):
    """A pip user without a clone starts from `viber-exporter example-config`: the same
    file as the repository's config.toml, valid once its variables are set."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).parent / "viber-exporter"
    printed = subprocess.run([str(script), "example-config"], capture_output=True, text=True, check=True).stdout
    assert printed == (ROOT / "config.toml").read_text(), "exporter/example-config.toml is a copy of config.toml"
    (tmp_path / "config.toml").write_text(printed)
    env = {**os.environ, **ENV, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    checked = subprocess.run([str(script), "check-config", "--config", str(tmp_path / "config.toml")],
                             capture_output=True, text=True, env=env, check=False)
    assert checked.returncode == 0 and "configuration OK" in checked.stdout, checked.stdout + checked.stderr
    assert ENV["BSG_API_KEY"] not in checked.stdout + checked.stderr

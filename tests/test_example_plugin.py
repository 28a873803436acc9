"""The example third-party plugin, installed with pip: listed, and polled end to end.

CI installs examples/viber-exporter-example-plugin (as the README's test command does);
without it these tests skip, unless VIBER_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer

from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost

from .children import SCRIPT
from .conftest import sample, wait_for

MESSAGE = "pm_00000000000000aa"


@pytest.fixture(autouse=True)
def example_installed() -> None:
    if importlib.util.find_spec("viber_exporter_example") is None:
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("pip install -e examples/viber-exporter-example-plugin (CI installs it)")
        pytest.skip("the example plugin is not installed")


def test_plugins_command_lists_the_installed_example():
    env = {k: v for k, v in os.environ.items() if k != "VIBER_EXPORTER_LOAD_PLUGINS"}
    result = subprocess.run([str(SCRIPT), "plugins"], capture_output=True, text=True, env=env, check=True, timeout=30)
    [parrot] = [p for p in json.loads(result.stdout) if p["name"] == "parrot"]
    assert parrot["package"] == "viber-exporter-example-plugin" and parrot["version"] == "0.1.0"
    assert parrot["providers"] == ["parrot"] and parrot["hooks"] == ["register_providers"]
    limited = subprocess.run([str(SCRIPT), "plugins"], capture_output=True, text=True, check=True, timeout=30,
                             env={**env, "VIBER_EXPORTER_LOAD_PLUGINS": ""})
    assert {p["name"] for p in json.loads(limited.stdout)} == {"viber_exporter.plugins.bsg", "viber_exporter.plugins.routee"}
    third_party = subprocess.run([str(SCRIPT), "plugins", "--third-party"], capture_output=True, text=True,
                                 env=env, check=True, timeout=30)
    assert "parrot" in {p["name"] for p in json.loads(third_party.stdout)}
    assert not any(p["builtin"] for p in json.loads(third_party.stdout))


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def test_a_config_naming_the_example_polls_end_to_end(httpserver: HTTPServer, tmp_path):
    sent = int(time.time()) - 120
    answer = {"id": MESSAGE, "state": "seen", "sent_at": iso(sent),
              "state_changed_at": iso(sent + 30), "charge": {"amount": "0.02", "currency": "USD"}}
    httpserver.expect_request(f"/v2/messages/{MESSAGE}", headers={"Authorization": "Token tok"}).respond_with_json(answer)
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "parrot"})
    config = parse_config(f"""
[exporter]
state_path = {json.dumps(str(tmp_path / "s.db"))}
[polling]
tick = "100ms"
schedule = ["100ms"]
max_age = "1h"
[providers.parrot]
plugin = "parrot"
token = "tok"
base_url = "{httpserver.url_for("").rstrip("/")}"
""", host.provider_types(), {})
    exporter = Exporter(config, host, registry=CollectorRegistry())
    exporter.start()
    try:
        exporter.register([Registration("parrot", MESSAGE)])
        wait_for(lambda: exporter.store.get("parrot", MESSAGE).status is Status.READ)
        assert sample(exporter, "viber_message_read_latency_seconds_sum", provider="parrot") == 30
        assert sample(exporter, "viber_message_cost_total", provider="parrot", currency="USD", channel="viber") == 0.02
        assert sample(exporter, "viber_provider_info", provider="parrot", plugin="parrot", version="0.1.0") == 1
    finally:
        exporter.stop()


def code_lines(path: Path) -> int:
    """Lines of code: not blank, not a comment, not part of an import or a docstring."""
    import ast

    source = path.read_text()
    skip: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                skip.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(1 for number, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and number not in skip)


@pytest.mark.parametrize("plugin", ["viber-exporter-example-plugin/viber_exporter_example.py",
                                    "viber-exporter-feed-plugin/viber_exporter_heron.py",
                                    "viber-exporter-pushonly-plugin/viber_exporter_kestrel.py"])
def test_an_example_plugin_is_at_most_50_lines_of_code(plugin):
    """The core does the repeating (plugin API 1.3): a plugin says what its API says."""
    assert code_lines(Path(__file__).resolve().parent.parent / "examples" / plugin) <= 50

"""Plugin API 1.0: one import path, declared settings, status maps, OAuth2, lifecycle,
push-only and feed providers, signed callbacks, registration fields, plugin metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.core import GaugeMetricFamily
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import viber_exporter
from viber_exporter import (
    Balance,
    CallbackReply,
    CallbackRequest,
    FetchError,
    MessageRef,
    Observation,
    Outcome,
    Provider,
    Report,
    Secret,
    Setting,
    Status,
    StatusMap,
    hookimpl,
)
from viber_exporter.config.load import parse_config
from viber_exporter.engine import Registration
from viber_exporter.errors import ConfigError
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import HttpServer

from .conftest import sample, toml_table, wait_for, wait_ticks

ROOT = Path(__file__).resolve().parent.parent


def host_with(*classes: type[Provider]) -> PluginHost:
    class Plugin:
        @hookimpl
        def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
            for cls in classes:
                register(cls)

    host = PluginHost()
    host.register(Plugin(), "test-plugins", package="tests", version="1.0", builtin=False)
    return host


def config_for(tmp_path: Path, host: PluginHost, plugin: str, name: str = "p", **table: Any) -> Any:
    text = f"""
[exporter]
listen = "127.0.0.1:0"
state_path = {json.dumps(str(tmp_path / "state.db"))}
[polling]
tick = "100ms"
schedule = ["100ms"]
max_age = "1h"
read_window = "1h"
[providers.{name}]
{toml_table({"plugin": plugin, **table})}
"""
    return parse_config(text, host.provider_types(), environ={})


# -- one import path ------------------------------------------------------------------------


def test_the_whole_plugin_api_imports_from_viber_exporter():
    assert viber_exporter.PLUGIN_API_VERSION == "1.3"
    for name in viber_exporter.__all__:
        assert getattr(viber_exporter, name) is not None, name
    with pytest.raises(AttributeError):
        viber_exporter.NoSuchThing  # noqa: B018


def test_a_disabled_plugin_shows_on_the_landing_page(tmp_path):
    from prometheus_client import CollectorRegistry

    from viber_exporter.engine import Exporter
    from viber_exporter.web.landing import landing_page

    class Future:
        @hookimpl
        def some_hook_from_api_2(self):
            pass

    host = host_with(Declared)
    host.register(Future(), "future-plugin", package="future", version="2", builtin=False)
    exporter = Exporter(config_for(tmp_path, host, "declared", token="t"), host, registry=CollectorRegistry())
    try:
        page = landing_page(exporter)
        assert "future-plugin" in page and "some_hook_from_api_2" in page
    finally:
        exporter.stop()


def test_the_api_is_documented_name_by_name():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    missing = [name for name in viber_exporter.__all__ if name != "__version__" and f"`{name}" not in docs]
    assert missing == [], f"docs/plugins.md must document {missing}"


def test_settings_and_accounting_import_neither_pluggy_nor_requests():
    code = ("import sys, viber_exporter.config.model, viber_exporter.accounting, viber_exporter.store.rows; "
            "bad = sorted(m for m in ('pluggy', 'requests', 'prometheus_client', 'werkzeug') if m in sys.modules); "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""


def test_nothing_generic_is_installed_at_the_top_level():
    result = subprocess.run([sys.executable, "-c", "import exporter"], capture_output=True, text=True,
                            timeout=60, check=False, cwd="/")
    assert result.returncode != 0 and "No module named 'exporter'" in result.stderr
    result = subprocess.run([sys.executable, "-c", "import plugins"], capture_output=True, text=True,
                            timeout=60, check=False, cwd="/")
    assert result.returncode != 0


# -- status maps and declared settings ----------------------------------------------------------


def test_status_map_is_case_insensitive_by_construction():
    statuses = StatusMap({"DELIVERED": Status.DELIVERED, "seen": Status.READ})
    for raw in ("delivered", "Delivered", " DELIVERED "):
        assert statuses.map(raw) is Status.DELIVERED and raw in statuses
    assert statuses["SEEN"] is Status.READ
    assert statuses.map("NEW_THING") is Status.UNKNOWN and statuses.map(None) is Status.UNKNOWN
    with pytest.raises(ValueError, match="case-insensitively"):
        StatusMap({"Seen": Status.READ, "SEEN": Status.DELIVERED})


class Declared(Provider):
    plugin_name = "declared"
    status_map = StatusMap({"ok": Status.DELIVERED, "no": Status.FAILED, "wait": Status.PENDING})
    settings_spec = (
        Setting("token", "secret", "API token."),
        Setting("region", "string", "Data centre.", default="eu", choices=("eu", "us")),
        Setting("base_url", "url", "API base URL.", default="https://api.example.test"),
        Setting("page_size", "integer", "Items per page.", default=50, minimum=1, maximum=500),
    )
    default_concurrency = 2
    default_rate_limit = 3.5

    def fetch(self, message_id: str) -> Observation:
        return Observation(Status.PENDING)


def test_declared_settings_are_validated_with_key_paths_and_read_back(tmp_path):
    host = host_with(Declared)
    config = config_for(tmp_path, host, "declared", token="t0k3n-declared")
    pc = config.providers["p"]
    assert (pc.settings.region, pc.settings.base_url, pc.settings.page_size) == ("eu", "https://api.example.test", 50)
    assert pc.settings.token.reveal() == "t0k3n-declared"
    with pytest.raises(AttributeError):
        pc.settings.region = "us"
    assert (pc.concurrency, pc.rate_limit) == (2, 3.5), "the plugin's own defaults"
    explicit = config_for(tmp_path, host, "declared", token="t", concurrency=4, rate_limit=1)
    assert (explicit.providers["p"].concurrency, explicit.providers["p"].rate_limit) == (4, 1.0)
    with pytest.raises(ConfigError) as info:
        config_for(tmp_path, host, "declared", region="mars", page_size=0, base_url="ftp://x", colour="red")
    problems = dict(info.value.problems)
    assert set(problems) == {"providers.p.token", "providers.p.region", "providers.p.page_size",
                             "providers.p.base_url", "providers.p.colour"}


def test_plugins_settings_lists_every_declared_key(capsys, monkeypatch):
    from viber_exporter import cli
    from viber_exporter.cli import configuration

    monkeypatch.setattr(configuration, "load_plugins", lambda: host_with(Declared))
    assert cli.main(["plugins", "--settings"]) == 0
    listing = json.loads(capsys.readouterr().out)
    [plugin] = [p for p in listing if p["name"] == "test-plugins"]
    [provider] = plugin["settings"]
    assert provider["provider"] == "declared"
    keys = {s["name"]: s for s in provider["settings"]}
    assert keys["token"] == {"name": "token", "type": "secret", "help": "API token.", "required": True, "also": "token_file"}
    assert keys["region"]["default"] == "eu" and keys["region"]["choices"] == ["eu", "us"]
    assert provider["defaults"] == {"concurrency": 2, "rate_limit": 3.5}


def test_builtin_plugins_declare_their_settings():
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    types = host.provider_types()
    assert {s.name for s in types["routee"].cls.settings_spec} >= {"application_id", "application_secret", "currency"}
    assert {s.name for s in types["bsg"].cls.settings_spec} >= {"api_key", "lookup", "timezone"}


# -- lifecycle: start, verify, balance, plugin metrics ----------------------------------------------


class Checked(Provider):
    plugin_name = "checked"
    status_map = StatusMap({"ok": Status.DELIVERED})
    settings_spec = (Setting("mode", "string", "what verify does", default="ok"),)
    verify_interval = 0.2
    started: list[str] = []

    def start(self) -> None:
        Checked.started.append(self.name)

    def verify(self) -> Balance | None:
        if self.settings.mode == "bad":
            raise FetchError(Outcome.AUTH_ERROR, "HTTP 401: bad credentials")
        return Balance(12.5, "EUR")

    def metrics(self) -> list[GaugeMetricFamily]:
        if self.settings.mode == "broken":
            raise RuntimeError("plugin metric bug")
        family = GaugeMetricFamily("viber_checked_quota", "A plugin's own gauge.", labels=["provider"])
        family.add_metric([self.name], 7.0)
        return [family]

    def fetch(self, message_id: str) -> Observation:
        return Observation(Status.PENDING)


def test_bad_credentials_show_before_the_first_message_and_the_balance_is_exported(tmp_path, run_exporter):
    from prometheus_client import CollectorRegistry, generate_latest

    from viber_exporter.engine import Exporter

    host = host_with(Checked)
    exporter = Exporter(config_for(tmp_path, host, "checked", mode="bad"), host, registry=CollectorRegistry())
    exporter.start()
    try:
        wait_for(lambda: sample(exporter, "viber_provider_up", provider="p") == 0)
        assert "p" in Checked.started
        assert sample(exporter, "viber_provider_requests_total", provider="p", outcome="auth_error") >= 1
    finally:
        exporter.stop()
    good = Exporter(config_for(tmp_path / "g", host, "checked"), host, registry=CollectorRegistry())
    good.start()
    try:
        wait_for(lambda: sample(good, "viber_provider_balance", provider="p", currency="EUR") == 12.5)
        assert sample(good, "viber_checked_quota", provider="p") == 7.0
    finally:
        good.stop()
    broken = Exporter(config_for(tmp_path / "b", host, "checked", mode="broken"), host, registry=CollectorRegistry())
    try:
        text = generate_latest(broken.registry).decode()
        assert "viber_messages_watched" in text and "viber_checked_quota" not in text, "a plugin bug costs its metrics only"
    finally:
        broken.stop()


# -- push-only, signed callbacks, custom answers -----------------------------------------------------

SIGNING_KEY = "kestrel-signing-key-1"


class PushOnly(Provider):
    """Pushes signed reports (HMAC-SHA256 of the body), as GET or POST; has no lookup."""

    plugin_name = "pushonly"
    polls = False
    status_map = StatusMap({"delivered": Status.DELIVERED, "read": Status.READ, "failed": Status.FAILED,
                            "queued": Status.PENDING})

    def authenticate_callback(self, request: CallbackRequest, token: Secret | None) -> bool:
        expected = hmac.new(SIGNING_KEY.encode(), request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(request.headers.get("X-Signature", ""), f"sha256={expected}")

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        data = request.json() if request.method == "POST" else dict(request.query)
        report = Report(data["id"], Observation(self.status_map.map(data["event"]), data["event"]))
        return CallbackReply([report], status=200, body="OK", content_type="text/plain")


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": "sha256=" + hmac.new(SIGNING_KEY.encode(), body, hashlib.sha256).hexdigest()}


def test_a_push_only_provider_is_never_polled_and_verifies_its_own_signatures(tmp_path, run_exporter):
    host = host_with(PushOnly)
    from prometheus_client import CollectorRegistry

    from viber_exporter.engine import Exporter

    exporter = Exporter(config_for(tmp_path, host, "pushonly"), host, registry=CollectorRegistry())
    exporter.start()
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    try:
        exporter.register([Registration("p", "m1")])
        wait_ticks(exporter, "p")  # the poller ran: it had its chance to poll
        assert exporter.store.get("p", "m1").polls == 0
        assert sample(exporter, "viber_provider_requests_total", provider="p", outcome="ok") == 0
        endpoint = f"{server.url}/api/v1/callbacks/p"
        body = json.dumps({"id": "m1", "event": "READ"}).encode()
        answer = requests.post(endpoint, data=body, headers=signed(body), timeout=5)
        assert (answer.status_code, answer.text) == (200, "OK")
        assert answer.headers["Content-Type"].startswith("text/plain"), "the plugin chose the answer"
        assert exporter.store.get("p", "m1").status is Status.READ, "no callback_token needed: the plugin signs"
        forged = requests.post(endpoint, data=body, headers={"X-Signature": "sha256=00"}, timeout=5)
        assert forged.status_code == 401
        assert sample(exporter, "viber_callbacks_total", provider="p", outcome="rejected") == 1
        # A GET report with query parameters (signed over the empty body).
        got = requests.get(endpoint, params={"id": "m2", "event": "delivered"}, headers=signed(b""), timeout=5)
        assert got.status_code == 200 and exporter.store.get("p", "m2").status is Status.DELIVERED
        assert sample(exporter, "viber_poll_lag_seconds", provider="p") == 0
    finally:
        server.stop()
        exporter.stop()


# -- a feed -------------------------------------------------------------------------------------------


class Feed(Provider):
    """Hands out new reports since last time at GET /reports (each report once)."""

    plugin_name = "feed"
    polls = False
    drain_interval = 0.1
    status_map = StatusMap({"DELIVERED": Status.DELIVERED, "SEEN": Status.READ, "REJECTED": Status.FAILED})
    settings_spec = (Setting("base_url", "url", "feed URL"),)

    def drain(self) -> list[Report]:
        response = self.http.request("GET", f"{self.settings.base_url}/reports")
        return [Report(item["id"], Observation(self.status_map.map(item["status"]), item["status"],
                                               reason="rejected" if item["status"] == "REJECTED" else None))
                for item in response.json()["results"]]


def test_a_feed_is_drained_and_each_report_counts_once(tmp_path, httpserver: HTTPServer):
    from prometheus_client import CollectorRegistry

    from viber_exporter.engine import Exporter

    queue: list[dict[str, str]] = []
    drains: list[int] = []
    lock = threading.Lock()

    def reports(request: Request) -> Response:
        with lock:
            batch, queue[:] = list(queue), []
            drains.append(len(batch))
        return Response(json.dumps({"results": batch}), content_type="application/json")

    httpserver.expect_request("/reports").respond_with_handler(reports)
    host = host_with(Feed)
    exporter = Exporter(config_for(tmp_path, host, "feed", base_url=httpserver.url_for("").rstrip("/")), host,
                        registry=CollectorRegistry())
    exporter.start()
    try:
        exporter.register([Registration("p", "f1")])
        with lock:
            queue.extend([{"id": "f1", "status": "DELIVERED"}, {"id": "f2", "status": "REJECTED"}])
        wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="p", status="failed") == 1)
        with lock:
            queue.append({"id": "f1", "status": "SEEN"})
        wait_for(lambda: exporter.store.get("p", "f1").status is Status.READ)
        drained = len(drains)
        wait_for(lambda: len(drains) >= drained + 3)  # more drains, handing out nothing new
        assert sample(exporter, "viber_message_status_transitions_total", provider="p", status="delivered") == 1
        assert sample(exporter, "viber_message_failures_total", provider="p", reason="rejected") == 1
        assert exporter.store.get("p", "f2") is not None, "a report about an unregistered message registers it"
        assert sample(exporter, "viber_provider_requests_total", provider="p", outcome="ok") >= 3
    finally:
        exporter.stop()


def test_a_feed_answering_garbage_backs_off_like_any_call(tmp_path, httpserver: HTTPServer):
    """A feed's drain goes through the same guarded call as a lookup: garbage counts as
    invalid_response, reaches the instance's recent errors, and once most answers are
    garbage the instance pauses and drains no more until the pause is over."""
    from prometheus_client import CollectorRegistry

    from viber_exporter.clock import ManualClock
    from viber_exporter.engine import Exporter

    served: list[int] = []
    garbage = threading.Event()

    def reports(request: Request) -> Response:
        served.append(1)
        if len(served) >= 10:
            garbage.set()
        return Response("<html>maintenance</html>", content_type="text/html")

    httpserver.expect_request("/reports").respond_with_handler(reports)
    host = host_with(Feed)
    clock = ManualClock()
    exporter = Exporter(config_for(tmp_path, host, "feed", base_url=httpserver.url_for("").rstrip("/")), host,
                        registry=CollectorRegistry(), clock=clock)
    instance = exporter.instances["p"]
    exporter.start()
    try:
        assert garbage.wait(30), "the feed is drained on its interval"
        wait_for(lambda: instance.health.paused())
        invalid = sample(exporter, "viber_provider_requests_total", provider="p", outcome="invalid_response")
        assert invalid >= 10 and sample(exporter, "viber_provider_requests_total", provider="p", outcome="ok") == 0
        assert instance.health.recent_errors[-1].message_id == "(feed)", "feed failures reach the landing page"
        exporter.poller.stop(timeout=5)  # the scheduled drains end; the next ones are called here
        before = len(served)
        poller = exporter.poller.pollers["p"]
        for _ in range(5):
            poller.drain()
        assert len(served) == before, "paused: no drain calls the feed"
        clock.advance(instance.health.pause_remaining() + 1)
        poller.drain()
        assert len(served) == before + 1, "after the pause the feed is drained again"
    finally:
        exporter.stop()


# -- registration fields --------------------------------------------------------------------------


class WithFields(Provider):
    plugin_name = "withfields"
    status_map = StatusMap({"sent": Status.PENDING, "ok": Status.DELIVERED})
    seen: list[MessageRef] = []

    def check_fields(self, fields: Any) -> str | None:
        unknown = set(fields) - {"reference"}
        if unknown:
            return f"unknown field(s) {', '.join(sorted(unknown))}; this plugin takes reference"
        return None

    def fetch_message(self, message: MessageRef) -> Observation:
        WithFields.seen.append(message)
        return Observation(Status.DELIVERED, "ok")


def test_registration_fields_are_validated_stored_and_handed_to_the_lookup(tmp_path):
    from prometheus_client import CollectorRegistry

    from viber_exporter.engine import Exporter

    host = host_with(WithFields)
    exporter = Exporter(config_for(tmp_path, host, "withfields"), host, registry=CollectorRegistry())
    exporter.start()
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    try:
        url = f"{server.url}/api/v1/messages"
        bad = requests.post(url, json={"messages": [{"provider": "p", "id": "a1", "fields": {"campaign": "x"}}]}, timeout=5)
        assert bad.status_code == 400 and "takes reference" in bad.json()["details"][0]["error"]
        ok = requests.post(url, json={"messages": [{"provider": "p", "id": "a1", "fields": {"reference": "ref-9"}}]}, timeout=5)
        assert ok.status_code == 200
        wait_for(lambda: WithFields.seen)
        assert WithFields.seen[0].id == "a1" and dict(WithFields.seen[0].fields) == {"reference": "ref-9"}
        assert exporter.store.get("p", "a1").fields == {"reference": "ref-9"}
    finally:
        server.stop()
        exporter.stop()


# -- answers are recorded as they arrive ----------------------------------------------------------


def test_one_slow_call_does_not_hold_back_the_others(fake_server, make_config, run_exporter):
    _, api = fake_server
    gate = api.gates["slow"] = threading.Event()
    for message_id in ("slow", "a", "b", "c"):
        api.messages[message_id] = {"status": "SEEN"}
    exporter = run_exporter(make_config(provider={"concurrency": 4}))
    try:
        exporter.register([Registration("fake", i) for i in ("slow", "a", "b", "c")])
        wait_for(lambda: all(exporter.store.get("fake", i).status is Status.READ for i in "abc"))
        assert exporter.store.get("fake", "slow").status is Status.PENDING, "still waiting for its answer"
    finally:
        gate.set()


# -- capabilities ---------------------------------------------------------------------------------


def test_capabilities_are_the_methods_a_class_implements():
    """(1.3) One way to declare a capability: implement its method; class variables only
    tune it. A class without a lookup is push-only; `polls = False` still works."""
    from viber_exporter import BadReport, Capabilities

    class Lookups(Provider):
        plugin_name = "lookups"

        def fetch(self, message_id: str) -> Observation:
            return Observation(Status.PENDING)

    class Batches(Lookups):
        plugin_name = "batches"
        batch_size = 50

        def fetch_many(self, message_ids: Any) -> Any:
            return {}

    class Pushed(Provider):
        plugin_name = "pushed"

        def parse_callback(self, request: Any) -> Any:
            return []

    class Fed(Provider):
        plugin_name = "fed"

        def drain(self) -> list[Report | BadReport]:
            return []

    class OldPushOnly(Lookups):  # a 1.0 plugin: a fetch it never wants called
        plugin_name = "old"
        polls = False

    assert Lookups.capabilities() == Capabilities(
        lookup=True, batch=1, campaigns=False, callbacks=False, signed_callbacks=False, feed=False, verify=False)
    assert Batches.capabilities().batch == 50
    assert Batches(name="b", settings=None, http=None).capabilities().lookup  # type: ignore[arg-type]
    assert not Pushed.capabilities().lookup and Pushed.capabilities().callbacks
    assert Fed.capabilities().feed and not Fed.capabilities().lookup
    assert not OldPushOnly.capabilities().lookup
    assert Provider.capabilities() == Capabilities(False, 1, False, False, False, False, False)

"""The plugin host: built-ins and entry points through one call, filters, clashes, hooks."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from viber_exporter import hookimpl
from viber_exporter.config.load import parse_config
from viber_exporter.errors import ConfigError, PluginError
from viber_exporter.pluginhost import PluginHost

from .fakeprovider import FakePlugin, FakeProvider


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch):
    """A real installed distribution with a `viber_exporter` entry point, found by importlib.metadata."""
    (tmp_path / "acme_viber.py").write_text(textwrap.dedent('''
        from viber_exporter import hookimpl, Provider, Observation, Status

        class AcmeProvider(Provider):
            plugin_name = "acme"

            @classmethod
            def parse_settings(cls, table):
                return {"token": table.secret("token")}

            def fetch(self, message_id):
                return Observation(Status.PENDING)

        @hookimpl
        def register_providers(register):
            register(AcmeProvider)
    '''))
    (tmp_path / "broken_viber.py").write_text("raise ImportError('missing dependency xyz')\n")
    for name, module in [("acme-viber", "acme_viber"), ("broken-viber", "broken_viber")]:
        info = tmp_path / f"{name.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[viber_exporter]\n{name.split('-')[0]} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in ("acme_viber", "broken_viber"):
        sys.modules.pop(module, None)


def test_entry_point_plugins_load_and_broken_ones_are_listed_not_fatal(installed_plugin):
    host = PluginHost()
    host.load(environ={})
    types = host.provider_types()
    assert types["acme"].package == "acme-viber" and types["acme"].version == "1.2.3"
    listing = {info.name: info for info in host.describe(include_builtin=False)}
    assert listing["acme"].providers == ("acme",) and listing["acme"].hooks == ("register_providers",)
    assert "missing dependency xyz" in (listing["broken"].error or "")


def test_a_config_needing_a_plugin_that_failed_to_load_is_a_clear_error(installed_plugin):
    host = PluginHost()
    host.load(environ={})
    text = '[providers.x]\nplugin = "broken"\n[providers.y]\nplugin = "acme"\ntoken = "t"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, host.provider_types(), {}, failed_plugins=host.failures())
    assert info.value.problems == [
        ("providers.x.plugin", "plugin 'broken' is installed but failed to load: import failed: missing dependency xyz")
    ]


def test_load_plugins_env_limits_installed_plugins(installed_plugin):
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    assert "acme" not in host.provider_types(), "empty: no installed plugin loads"
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "acme-viber"})
    assert "acme" in host.provider_types()
    assert "broken" not in {info.name for info in host.describe(include_builtin=True)}


def test_a_name_in_load_plugins_that_nothing_answers_to_is_said(installed_plugin, caplog):
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "acme-viber, acme-vibr"})
    assert "acme" in host.provider_types(), "the right name still loads"
    assert host.failures() == {"acme-vibr": "not installed (named in VIBER_EXPORTER_LOAD_PLUGINS)"}
    assert "VIBER_EXPORTER_LOAD_PLUGINS names 'acme-vibr'" in caplog.text


def test_builtin_plugins_go_through_the_same_registration(monkeypatch):
    calls = []
    original = PluginHost.register

    def spy(self, plugin, name, **kwargs):
        calls.append((name, kwargs["builtin"]))
        return original(self, plugin, name, **kwargs)

    monkeypatch.setattr(PluginHost, "register", spy)
    monkeypatch.setattr("viber_exporter.pluginhost.DEFAULT_PLUGINS", ("tests.fakeprovider_module",))
    PluginHost().load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    assert calls == [("tests.fakeprovider_module", True)]


def test_two_plugins_registering_one_name_is_a_clear_error():
    host = PluginHost()
    host.register(FakePlugin(), "first", package="a", version="1", builtin=False)

    class Again:
        @hookimpl
        def register_providers(self, register):
            register(FakeProvider)

    host.register(Again(), "second", package="b", version="1", builtin=False)
    with pytest.raises(PluginError, match="'fake' is registered twice.*first.*second|second.*first"):
        host.provider_types()


def test_a_config_naming_an_unregistered_plugin_is_a_config_error(fake_host):
    with pytest.raises(ConfigError, match=r"providers\.x\.plugin: no installed plugin provides 'ghost'"):
        parse_config('[providers.x]\nplugin = "ghost"\n', fake_host.provider_types(), {})


def test_a_plugin_with_a_hook_we_do_not_know_is_disabled_and_the_rest_starts(caplog):
    class FromTheFuture:
        @hookimpl
        def register_providers(self, register):
            register(FakeProvider)

        @hookimpl
        def message_delivered_v2(self, message):  # a hook of a newer plugin API
            pass

    class Typo:
        @hookimpl
        def register_provider(self, register):  # missing "s"
            pass

    host = PluginHost()
    host.register(FromTheFuture(), "future", package="future-plugin", version="9", builtin=False)
    host.register(Typo(), "typo", package="t", version="1", builtin=False)
    host.register(FakePlugin(), "fake-plugin", package="tests", version="0", builtin=False)
    host.pm.check_pending()  # nothing left that could take the exporter down
    assert set(host.provider_types()) == {"fake"} and host.provider_types()["fake"].plugin == "fake-plugin"
    failures = host.failures()
    assert "message_delivered_v2" in failures["future"] and "disabled" in failures["future"]
    assert "register_provider" in failures["typo"]
    listing = {info.name: info for info in host.describe(include_builtin=False)}
    assert listing["future"].error == failures["future"] and listing["future"].providers == ()
    assert any("message_delivered_v2" in r.getMessage() for r in caplog.records)


def test_hook_register_providers(fake_host):
    types = fake_host.provider_types()
    assert types["fake"].cls is FakeProvider and types["fake"].plugin == "fake-plugin"


def test_hook_message_status_changed(fake_server, make_config, run_exporter, fake_host, caplog):
    """Called through pluggy (wrappers run, in pluggy's order), off the polling thread,
    with what an extension needs; a failing or slow implementation never stalls polling."""
    import threading

    from viber_exporter.engine import Registration

    from .conftest import sample, wait_for

    seen, order, wrapped = [], [], []
    release = threading.Event()

    class Listener:
        @hookimpl
        def message_status_changed(self, provider, message_id, old_status, new_status, reason,
                                   provider_status, price, currency, latency_seconds, country, at):
            order.append("listener")
            seen.append((provider, message_id, old_status, new_status, reason, provider_status,
                         price, currency, country, latency_seconds is None, at > 0))

    class Narrow:  # takes only what it needs
        @hookimpl
        def message_status_changed(self, message_id, new_status):
            order.append("narrow")

    class Wrapper:
        @hookimpl(wrapper=True)
        def message_status_changed(self, message_id):
            wrapped.append(message_id)
            return (yield)

    class Slow:
        @hookimpl(tryfirst=True)
        def message_status_changed(self, message_id):
            release.wait(10)

    for plugin, name in ((Listener(), "listener"), (Narrow(), "narrow"), (Wrapper(), "wrapper"), (Slow(), "slow")):
        fake_host.register(plugin, name, package="t", version="1", builtin=False)
    _, api = fake_server
    api.messages["h1"] = {"status": "FAILED", "reason": "opted_out", "price": 0.02, "country": "GR"}
    api.messages["h2"] = {"status": "QUEUED"}
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "h1"), Registration("fake", "h2")])
    # The slow plugin holds the hook thread; polling goes on regardless.
    wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="fake", status="failed") == 1)
    wait_for(lambda: exporter.store.get("fake", "h2").polls >= 3)
    assert seen == []
    release.set()
    assert exporter.status_hook.flush()
    assert seen == [("fake", "h1", "pending", "failed", "opted_out", "FAILED", 0.02, "EUR", "GR", True, True)]
    assert order == ["narrow", "listener"], "pluggy's order: last registered first"
    assert wrapped == ["h1"], "hook wrappers run"


def test_hook_status_changed(fake_server, make_config, run_exporter, fake_host):
    """(1.3) One StatusChanged object per change, with the message's labels, beside the
    11-argument hook: both see every change, and one failing does not starve the other."""
    from viber_exporter import StatusChanged
    from viber_exporter.engine import Registration

    from .conftest import wait_for

    changes: list[StatusChanged] = []
    old_style: list[tuple[str, str]] = []

    class Listener:
        @hookimpl
        def status_changed(self, change: StatusChanged) -> None:
            changes.append(change)

    class Broken:
        @hookimpl
        def status_changed(self, change: StatusChanged) -> None:
            raise RuntimeError("listener bug")

    class OldStyle:
        @hookimpl
        def message_status_changed(self, message_id, new_status):
            old_style.append((message_id, new_status))

    # pluggy calls the last registered first, and a raise ends the call for the rest:
    # the broken one goes first, so it is called last
    for plugin, name in ((Broken(), "broken"), (Listener(), "listener"), (OldStyle(), "old")):
        fake_host.register(plugin, name, package="t", version="1", builtin=False)
    _, api = fake_server
    api.messages["s1"] = {"status": "FAILED", "reason": "Opted Out"}
    config = make_config(extra='[metrics.labels.kind]\nvalues = ["otp"]\n')
    exporter = run_exporter(config)
    exporter.register([Registration("fake", "s1", labels={"kind": "otp"})])
    wait_for(lambda: exporter.store.get("fake", "s1").status.value == "failed")
    assert exporter.status_hook.flush()
    wait_for(lambda: len(changes) == 1 and len(old_style) == 1)
    [change] = changes
    assert (change.provider, change.message_id, change.old_status, change.new_status) == ("fake", "s1", "pending", "failed")
    assert change.reason == "opted_out", "the provider's reason, in snake_case"
    assert change.labels == {"kind": "otp"} and change.at > 0
    assert old_style == [("s1", "failed")], "the 1.0 hook still gets every change"


def test_a_failing_status_hook_is_logged_and_polling_goes_on(fake_server, make_config, run_exporter, fake_host, caplog):
    from viber_exporter.engine import Registration

    from .conftest import wait_for

    class Broken:
        @hookimpl
        def message_status_changed(self, message_id):
            raise RuntimeError("listener bug")

    fake_host.register(Broken(), "broken", package="t", version="1", builtin=False)
    _, api = fake_server
    api.messages["b1"] = {"status": "SEEN"}
    exporter = run_exporter(make_config())
    exporter.register([Registration("fake", "b1")])
    wait_for(lambda: exporter.store.get("fake", "b1").status.value == "read")
    # The store shows "read" a moment before the change is handed to the hook queue
    # (persist, count, then tell the plugins): wait for the log, not for the queue.
    wait_for(lambda: any("message_status_changed" in r.getMessage() for r in caplog.records))
    assert exporter.poller.running


def test_a_full_status_hook_queue_drops_and_counts():
    import threading

    from viber_exporter.events import StatusChanged
    from viber_exporter.model import Status
    from viber_exporter.pluginhost import StatusHook

    release, dropped = threading.Event(), []

    class Stuck:
        @hookimpl
        def message_status_changed(self, message_id):
            release.wait(10)

    host = PluginHost()
    host.register(Stuck(), "stuck", package="t", version="1", builtin=False)
    hook = StatusHook(host.pm, lambda: dropped.append(1), size=2)
    event = StatusChanged("p", "m", Status.PENDING, Status.DELIVERED, None)
    for _ in range(10):
        hook.submit(event)
    assert 7 <= len(dropped) <= 8, "one in the worker's hands, two queued, the rest dropped"
    release.set()
    assert hook.flush()
    hook.stop()


def test_tracing_logs_hook_calls(caplog):
    import logging

    host = PluginHost()
    host.register(FakePlugin(), "fake-plugin", package="t", version="1", builtin=False)
    host.enable_tracing()
    with caplog.at_level(logging.DEBUG, logger="viber_exporter.plugins.trace"):
        host.provider_types()
    assert any("register_providers" in r.getMessage() for r in caplog.records)


def test_trace_plugins_environment_variable_enables_tracing(caplog):
    import logging

    host = PluginHost()
    with caplog.at_level(logging.DEBUG, logger="viber_exporter.plugins.trace"):
        host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "", "VIBER_EXPORTER_TRACE_PLUGINS": "1"})
        host.provider_types()
    assert any("register_providers" in r.getMessage() for r in caplog.records)
    quiet = PluginHost()
    quiet.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": "", "VIBER_EXPORTER_TRACE_PLUGINS": "0"})
    assert quiet._tracing is False

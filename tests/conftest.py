"""Shared fixtures: a real fake-provider server, configs, and running exporters."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer

from viber_exporter.clock import SYSTEM_CLOCK, Clock, ManualClock
from viber_exporter.config.load import parse_config
from viber_exporter.config.model import Config
from viber_exporter.durations import parse_duration
from viber_exporter.engine import Exporter
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer, HttpServer
from viber_exporter.testing.mock import MockProviders
from viber_exporter.testing.virtualtime import tick as virtual_tick

from .children import QUICK, Child, child_config, free_port, limited_exporter
from .fakeprovider import FakeAPI, FakePlugin

SENTINEL = "s3ntinel-SECRET-value-9f2c"

#: Moves the wall clock of every in-process exporter and mock provider (e.g. "365d"):
#: CI runs the suite a second time a year ahead, so no test can depend on today's date.
TIME_SHIFT_ENV = "VIBER_EXPORTER_TEST_TIME_SHIFT"
SYSTEM_CLOCK.offset = parse_duration(os.environ.get(TIME_SHIFT_ENV) or 0)


@pytest.fixture
def clock() -> Clock:
    """The clock every in-process exporter and mock provider runs on by default; build
    dates from ``clock.time()``, never from a literal or from ``time.time()``."""
    return SYSTEM_CLOCK


@pytest.fixture
def fake_host() -> PluginHost:
    host = PluginHost()
    host.register(FakePlugin(), "fake-plugin", package="tests", version="0.0", builtin=False)
    return host


@pytest.fixture
def builtin_host() -> PluginHost:
    """The built-in plugins only (installed third-party plugins are not loaded)."""
    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    return host


class QuickHTTPServer(HTTPServer):
    """pytest-httpserver's server, stopped in 50 ms instead of up to 500 (its loop checks
    for a shutdown once per poll interval): a second saved in every test's teardown."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.05)


@pytest.fixture
def fake_server() -> Iterator[tuple[HTTPServer, FakeAPI]]:
    server = QuickHTTPServer(threaded=True)
    server.start()
    api = FakeAPI()
    server.expect_request(re.compile(r"/messages/.*")).respond_with_handler(api.handle)
    yield server, api
    server.clear()
    if server.is_running():
        server.stop()


def toml_table(values: dict[str, Any]) -> str:
    """Render a flat table; JSON literals of strings, numbers, booleans and lists are valid TOML."""
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())


def config_text(
    state_path: Path,
    base_url: str,
    *,
    polling: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
    exporter: dict[str, Any] | None = None,
    extra: str = "",
) -> str:
    exporter_values = {"listen": "127.0.0.1:0", "state_path": str(state_path), **(exporter or {})}
    polling_values = {
        "tick": "100ms", "schedule": ["100ms"], "max_age": "1h", "read_window": "1h",
        "not_found_grace": "1h", **(polling or {}),
    }
    provider_values = {
        "plugin": "fake", "base_url": base_url, "api_key": SENTINEL, "concurrency": 4,
        "rate_limit": 1000, "timeout": "2s", **(provider or {}),
    }
    return f"""
[exporter]
{toml_table(exporter_values)}

[polling]
{toml_table(polling_values)}

[providers.fake]
{toml_table(provider_values)}

{extra}
"""


@pytest.fixture
def make_config(
    tmp_path: Path, fake_server: tuple[HTTPServer, FakeAPI], fake_host: PluginHost
) -> Callable[..., Config]:
    server, _ = fake_server

    def make(**kwargs: Any) -> Config:
        text = config_text(tmp_path / "state.db", server.url_for("").rstrip("/"), **kwargs)
        return parse_config(text, fake_host.provider_types(), environ={})

    return make


@pytest.fixture
def run_exporter(fake_host: PluginHost, clock: Clock) -> Iterator[Callable[..., Exporter]]:
    """Start exporters on a fresh registry each; all are stopped at teardown."""
    started: list[Exporter] = []
    default_clock = clock

    def start(config: Config, *, registry: CollectorRegistry | None = None, clock: Clock | None = None) -> Exporter:
        exporter = Exporter(config, fake_host, registry=registry or CollectorRegistry(), clock=clock or default_clock)
        exporter.start()
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        if not exporter.store.closed:
            exporter.stop(timeout=5)


@pytest.fixture
def virtual_exporter(fake_host: PluginHost, fake_server: tuple[HTTPServer, FakeAPI]) -> Iterator[Callable[..., tuple[Exporter, ManualClock, Callable[[float], None]]]]:
    """An exporter on a virtual clock that is ticked by the test, not by APScheduler:
    returns (exporter, clock, tick); the fake API records call times on the same clock."""
    made: list[Exporter] = []

    def make(config: Config) -> tuple[Exporter, ManualClock, Callable[[float], None]]:
        clock = ManualClock()
        fake_server[1].clock = clock.monotonic
        exporter = Exporter(config, fake_host, registry=CollectorRegistry(), clock=clock)
        made.append(exporter)
        return exporter, clock, lambda seconds: virtual_tick(exporter, clock, seconds)

    yield make
    for exporter in made:
        if not exporter.store.closed:
            exporter.stop(timeout=5)


@pytest.fixture
def serve(run_exporter: Callable[..., Exporter]) -> Iterator[Callable[[Config], tuple[Exporter, str]]]:
    """Run an exporter and its HTTP server on a free loopback port; returns (exporter, base URL)."""
    from viber_exporter.server import HttpServer

    servers: list[HttpServer] = []

    def start(config: Config) -> tuple[Exporter, str]:
        exporter = run_exporter(config)
        server = HttpServer(exporter, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return exporter, server.url

    yield start
    for server in servers:
        server.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a condition until it holds; fail the test with a clear message if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def sample(exporter: Exporter, name: str, **labels: str) -> float:
    value = exporter.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- PostgreSQL ---------------------------------------------------------------------------

#: The server the PostgreSQL tests use (trust auth on the development and CI machines).
PG_URL = os.environ.get("VIBER_EXPORTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("VIBER_EXPORTER_REQUIRE_PG") == "1"


def pg_admin():
    """A connection to the test server, or a skip (a failure under VIBER_EXPORTER_REQUIRE_PG=1)."""
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (VIBER_EXPORTER_REQUIRE_PG=1) at {PG_URL}: {e}")
        pytest.skip(f"no PostgreSQL at {PG_URL}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose tables live in a fresh schema of the test server, dropped after."""
    schema = f"test_{os.getpid()}_{time.monotonic_ns()}"
    with pg_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    # libpq's options parameter: every connection of this URL uses the schema
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with pg_admin() as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def wait_ticks(exporter: Exporter, provider: str, ticks: int = 3, timeout: float = 30.0) -> None:
    """Wait until the poller of ``provider`` has completed ``ticks`` more ticks: proof
    that it ran (and had the chance to do what a negative check says it did not)."""
    health = exporter.instances[provider].health
    target = health.ticks + ticks
    wait_for(lambda: health.ticks >= target, timeout=timeout)


@pytest.fixture
def mock() -> Iterator[BackgroundServer]:
    server = BackgroundServer(MockProviders(QUICK, seed=3), "127.0.0.1", 0, name="mock")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def child(tmp_path: Path, mock: BackgroundServer) -> Iterator[Child]:
    port = free_port()
    running = Child(child_config(tmp_path, mock.url, port), port)
    wait_for(running.ready, timeout=20)
    yield running
    running.stop()


@pytest.fixture
def limited(tmp_path: Path, mock: BackgroundServer, builtin_host: PluginHost):
    made: list[tuple[Exporter, HttpServer]] = []

    def make(**limits: Any) -> HttpServer:
        exporter = limited_exporter(tmp_path, mock.url, builtin_host, **limits)
        server = HttpServer(exporter, "127.0.0.1", 0)
        server.start()
        made.append((exporter, server))
        return server

    yield make
    for exporter, server in made:
        server.stop()
        exporter.stop()

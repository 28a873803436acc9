"""``viber-exporter demo``: mock providers, an exporter, and simulated traffic, all local.

The traffic generator "sends" messages by asking the mock providers to create them,
then registers each through the exporter's real watch API, as an application would.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from .config.load import parse_config
from .config.model import Config
from .engine import Exporter
from .httpserver import BackgroundServer
from .pluginhost import PluginHost
from .provider import ProviderType
from .server import HttpServer
from .testing.mock import MockProviders, exporter_config
from .testing.simulation import Mix

log = logging.getLogger(__name__)

DEMO_RATE = 4.0  # messages per second, alternating providers
DEMO_NOTICE = (
    "This is the demo: Routee and BSG are mock providers inside this process, and the "
    "traffic is simulated. Nothing here is a real message; `viber-exporter run` with a "
    "configuration watches real ones."
)


def demo_config(
    mock_url: str,
    state_path: Path,
    host: str,
    port: int,
    provider_types: Mapping[str, ProviderType],
) -> Config:
    text = exporter_config(
        mock_url,
        state_path,
        exporter={"listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"},
        polling={
            "tick": "1s",
            "schedule": ["1s", "2s", "3s", "5s", "10s"],
            "max_age": "10m",
            "read_window": "1m",
            "not_found_grace": "30s",
            "retention": "1h",
        },
        routee={"rate_limit": 50},
        bsg={"rate_limit": 50},
    )
    return parse_config(text, provider_types, environ={})


class TrafficGenerator:
    """Creates simulated messages at the mock and registers them with the exporter."""

    def __init__(
        self,
        mock_url: str,
        exporter_url: str,
        rate: float = DEMO_RATE,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        self.mock_url = mock_url
        self.exporter_url = exporter_url
        self.rate = rate
        self.on_round = on_round
        self.sent = 0
        self.stopping = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        providers = ("routee", "bsg")
        while not self.stopping.is_set():
            provider = providers[self.sent % 2]
            try:
                created = self._session.post(
                    f"{self.mock_url}/mock/messages", json={"provider": provider}, timeout=5
                )
                keys = ("provider", "id", "sent_at", "fields")
                items = [
                    {key: m[key] for key in keys if key in m} for m in created.json()["messages"]
                ]
                self._session.post(
                    f"{self.exporter_url}/api/v1/messages", json={"messages": items}, timeout=5
                )
                self.sent += 1
            except (requests.RequestException, ValueError, KeyError) as e:
                log.warning("traffic generator: %s", e)
            if self.on_round is not None and self.sent % 20 == 0:
                self.on_round()  # every few seconds: the mock's world survives a kill too
            self.stopping.wait(1.0 / self.rate)


class Demo:
    """Everything the demo runs; ``start()``, then ``stop()``."""

    def __init__(
        self, host: PluginHost, listen_host: str, listen_port: int, state: Path | None
    ) -> None:
        # Half of Routee's traffic goes out as Viber→SMS failover flows, so the demo
        # shows Routee fallbacks too.
        self.mock = MockProviders(Mix(failover=0.5))
        self.mock_server = BackgroundServer(self.mock, "127.0.0.1", 0, name="mock")
        self._tempdir = (
            None if state else tempfile.TemporaryDirectory(prefix="viber-exporter-demo-")
        )
        state_path = state or Path(self._tempdir.name) / "demo.db"  # type: ignore[union-attr]
        # With --state, the mock providers keep their world beside it, so a restarted demo
        # goes on with the same messages (and new ids do not collide with stored ones).
        self.world = state_path.with_name(state_path.name + ".mock.json") if state else None
        self.resumed = self.mock.simulation.load(self.world) if self.world else 0
        try:
            self.config = demo_config(
                self.mock_server.url, state_path, listen_host, listen_port, host.provider_types()
            )
            self.exporter = Exporter(self.config, host)
        except BaseException:
            self.mock_server.stop()
            raise
        try:
            self.server = HttpServer(self.exporter, listen_host, listen_port, notice=DEMO_NOTICE)
        except OSError:
            self.exporter.stop()
            self.mock_server.stop()
            raise
        self.traffic = TrafficGenerator(
            self.mock_server.url, self.server.url, on_round=self.save_world
        )

    def save_world(self) -> None:
        if self.world is not None:
            self.mock.simulation.save(self.world)

    def start(self, echo: Callable[[str], None]) -> None:
        self.mock_server.start()
        self.exporter.start()
        self.server.start()
        self.traffic.start()
        url = self.server.url
        echo(f"viber-exporter demo: mock Routee and BSG APIs at {self.mock_server.url}")
        echo(f"  exporter:  {url}/  (landing page)")
        echo(f"  metrics:   {url}/metrics")
        echo(f"  messages:  {url}/api/v1/messages   providers: {url}/api/v1/providers")
        echo(f"  state:     {self.config.exporter.state_path}")
        if self.world is not None:
            echo(f"  mock:      {self.world} ({self.resumed} simulated messages resumed)")
        echo(f"  traffic:   {DEMO_RATE:g} simulated messages per second through the watch API")
        echo("Press Ctrl-C to stop.")

    def stop(self) -> None:
        self.traffic.stop()
        self.save_world()
        self.server.stop()
        self.exporter.stop()
        self.mock_server.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

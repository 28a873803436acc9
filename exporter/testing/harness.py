"""A real exporter running a plugin, for the plugin's own tests (plugin API 1.3).

Everything a plugin's tests need, through the exporter's public edges only: the
exporter is configured from TOML, started with its scheduler and HTTP server, and
spoken to over HTTP as an application and Prometheus would (register, read a message,
read ``/metrics``, push a callback)::

    from viber_exporter.testing import run_exporter, serve

    def test_reports_are_counted(tmp_path):
        with serve(MyMock()) as mock_url, run_exporter(
            MyProvider, tmp_path, f'[providers.mine]\\nplugin = "mine"\\nbase_url = "{mock_url}"'
        ) as exporter:
            exporter.register("mine", "m-1")
            exporter.wait_for(lambda: exporter.metric(
                "viber_message_status_transitions_total", provider="mine", status="delivered") == 1)

Needs the ``testing`` extra (pytest, pytest-httpserver) only for the contract kit;
this module needs neither.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ..config.load import parse_config
from ..engine import Exporter
from ..hookspecs import hookimpl
from ..httpserver import BackgroundServer, WSGIApp
from ..pluginhost import PluginHost
from ..provider import Provider
from ..web.app import WebApp

#: how long :meth:`RunningExporter.wait_for` waits by default (generous: a slow machine)
WAIT = 30.0


class RunningExporter:
    """An exporter running in this process with its HTTP server on a free port."""

    def __init__(self, url: str) -> None:
        #: the exporter's base URL, e.g. ``http://127.0.0.1:40123``
        self.url = url
        self.http = requests.Session()

    def register(self, provider: str, *ids: str, **item: Any) -> dict[str, Any]:
        """Register messages (``POST /api/v1/messages``); extra keyword arguments go in
        every item (``sent_at=``, ``fields=``, ``labels=``, ``ttl=``). Raises on an error
        answer, with its text."""
        items = [{"provider": provider, "id": message_id, **item} for message_id in ids]
        return self._post("/api/v1/messages", {"messages": items})

    def register_campaign(self, provider: str, campaign: str, **item: Any) -> dict[str, Any]:
        return self._post(
            "/api/v1/messages", {"messages": [{"provider": provider, "campaign": campaign, **item}]}
        )

    def message(self, provider: str, message_id: str) -> dict[str, Any] | None:
        """The message as ``GET /api/v1/messages/{provider}/{id}`` shows it (None: unknown)."""
        answer = self.http.get(f"{self.url}/api/v1/messages/{provider}/{message_id}", timeout=10)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def provider(self, name: str) -> dict[str, Any]:
        """The instance as ``GET /api/v1/providers`` shows it (health, balance, errors)."""
        answer = self.http.get(f"{self.url}/api/v1/providers", timeout=10)
        answer.raise_for_status()
        return next(p for p in answer.json()["providers"] if p["name"] == name)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value in ``/metrics`` (a series the scrape does not hold: 0)."""
        text = self.http.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def callback(
        self,
        provider: str,
        body: bytes | str | Mapping[str, Any] | list[Any],
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Push a delivery report to ``/api/v1/callbacks/{provider}`` (JSON for a
        mapping or a list); the answer as it came."""
        data = json.dumps(body) if isinstance(body, Mapping | list) else body
        params = {"token": token} if token is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(
            f"{self.url}/api/v1/callbacks/{provider}",
            data=data,
            params=params,
            headers=sent,
            timeout=10,
        )

    def wait_for(self, condition: Callable[[], object], timeout: float = WAIT) -> None:
        """Wait until ``condition()`` is true (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not met within {timeout:g}s")
            time.sleep(0.02)

    def _post(self, path: str, body: Any) -> dict[str, Any]:
        answer = self.http.post(f"{self.url}{path}", json=body, timeout=10)
        if answer.status_code >= 400:
            raise AssertionError(f"{path} answered {answer.status_code}: {answer.text}")
        result: dict[str, Any] = answer.json()
        return result


@contextmanager
def run_exporter(
    plugins: type[Provider] | list[type[Provider]], directory: Path | str, config: str
) -> Iterator[RunningExporter]:
    """Run an exporter with these provider classes (and the built-ins) on ``config``
    (TOML: at least the ``[providers.NAME]`` tables; ``[exporter]`` and ``[polling]``
    default to a store in ``directory`` and a fast schedule), its scheduler and HTTP
    server started; everything is stopped on exit."""
    classes = plugins if isinstance(plugins, list) else [plugins]

    class _Plugin:
        @hookimpl
        def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
            for cls in classes:
                register(cls)

    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    host.register(_Plugin(), "plugin under test", package="tests", version="0", builtin=False)
    text = config
    if "[exporter]" not in text:
        state = json.dumps(str(Path(directory) / "viber-exporter.db"))
        text = f'[exporter]\nlisten = "127.0.0.1:0"\nstate_path = {state}\n{text}'
    if "[polling]" not in text:
        text += '\n[polling]\ntick = "100ms"\nschedule = ["100ms", "200ms", "500ms"]\n'
    exporter = Exporter(
        parse_config(text, host.provider_types(), {}), host, registry=CollectorRegistry()
    )
    server = BackgroundServer(WebApp(exporter), "127.0.0.1", 0)
    try:
        exporter.start()
        server.start()
        yield RunningExporter(server.url)
    finally:
        server.stop()
        exporter.stop()


@contextmanager
def serve(app: WSGIApp) -> Iterator[str]:
    """Serve a WSGI app (a provider mock) on a free port; its base URL."""
    server = BackgroundServer(app, "127.0.0.1", 0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()

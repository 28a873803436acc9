"""The exporter's HTTP server: its web app (``/metrics``, health, the landing page and
``/api/v1``) served by :class:`~viber_exporter.httpserver.BackgroundServer`."""

from __future__ import annotations

from .engine import Exporter
from .httpserver import BackgroundServer, tls_context
from .reload import Reloader
from .web.app import WebApp

__all__ = ["BackgroundServer", "HttpServer", "tls_context"]


class HttpServer(BackgroundServer):
    """The exporter's own server: /metrics, health, landing page and /api/v1."""

    def __init__(
        self,
        exporter: Exporter,
        host: str,
        port: int,
        reloader: Reloader | None = None,
        notice: str | None = None,
    ) -> None:
        self.app = WebApp(exporter, reloader.reload if reloader else None, notice)
        settings = exporter.config.exporter
        tls = settings.tls
        super().__init__(
            self.app,
            host,
            port,
            ssl_context=tls_context(tls) if tls else None,
            limits=settings.server,
        )

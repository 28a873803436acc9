"""Serving WSGI apps on Werkzeug's threaded server, on a background thread."""

from __future__ import annotations

import socket
import ssl
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from .engine import Exporter
from .reload import Reloader
from .settings import TlsSettings
from .web import WebApp, WSGIApp


class BackgroundServer:
    """A threaded HTTP server for one WSGI app; ``port`` 0 picks a free port."""

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        name: str = "http",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Bind ourselves: on a busy port Werkzeug would print and sys.exit(); we raise OSError.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        self.scheme = "https" if ssl_context else "http"
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, fd=self._socket.fileno(), ssl_context=ssl_context
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = str(self._socket.getsockname()[0])
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def bound(self) -> str:
        """What the socket is really bound to, for the log ("0.0.0.0" is every interface)."""
        host = str(self._socket.getsockname()[0])
        shown = f"[{host}]" if ":" in host else host
        everywhere = " (all interfaces)" if host in ("0.0.0.0", "::") else ""
        return f"{self.scheme}://{shown}:{self.port}{everywhere}"

    def _serve(self) -> None:
        # The loop notices shutdown() once per poll_interval: 0.1 s, not the default
        # 0.5, so a stop (and a test's teardown) does not wait half a second.
        self._server.serve_forever(poll_interval=0.1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        self._socket.close()


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server context from the configured files; mutual TLS when a client CA is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=tls.client_ca_file)
    return context


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
        self.app = WebApp(exporter, reloader, notice)
        tls = exporter.config.exporter.tls
        super().__init__(self.app, host, port, ssl_context=tls_context(tls) if tls else None)

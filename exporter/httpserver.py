"""Serving a WSGI app on cheroot, on background threads, within fixed limits.

Why cheroot: it is a maintained, pure-Python production server (CherryPy's) that
serves TLS itself, runs a fixed pool of worker threads, and parks idle keep-alive
connections in one selector instead of a thread each. Three things are added here:

- a new connection waits in that selector too until its first bytes arrive, so idle
  connections cost a file descriptor, never a worker thread; past
  ``max_connections`` a new one is closed at once;
- a request's line and headers must arrive within ``body_timeout`` (a watchdog
  closes a connection that trickles them: slowloris), and the app reads a body
  within the same deadline (:func:`read_body`);
- a response that says ``Connection: close`` closes the connection without first
  reading the body the client may still be sending (an unauthenticated upload is
  refused after its headers, not after 10 MiB).

TLS handshakes happen in the worker that reads the first request, not in the thread
that accepts connections, so a client that never finishes its handshake holds one
worker for ``idle_timeout`` at most and never blocks the others from connecting.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import wsgi
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection
from cheroot.ssl import Adapter

from .config.model import ServerLimits, TlsSettings

#: what the common reasons a listen fails mean, in words
BIND_PROBLEMS = {
    "address already in use": "the address is in use (another process listens there)",
    "permission denied": "permission denied (ports below 1024 need privileges)",
    "cannot assign requested address": "no interface of this host has that address",
}


def bind_problem(error: BaseException) -> str:
    """Why a listen failed, in a few words: cheroot's message carries a Python tuple
    and an errno ("No socket could be created -- (('127.0.0.1', 9839): [Errno 98]
    Address already in use)")."""
    text = str(getattr(error, "strerror", None) or error)
    lowered = text.lower()
    for known, meaning in BIND_PROBLEMS.items():
        if known in lowered:
            return meaning
    cause = text.rsplit("]", 1)[-1].strip(" )") if "[Errno" in text else text
    return cause or type(error).__name__


log = logging.getLogger("viber_exporter.server")

#: a WSGI application
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: environ keys the server sets for the app: the monotonic time by which the request's
#: body must have arrived, and a function to call once the app has read it
DEADLINE = "viber.deadline"
BODY_DONE = "viber.body_done"

#: How often the watchdog looks for requests whose headers are overdue.
WATCHDOG_INTERVAL = 0.5


#: What a connection's current request is waiting for: its line and headers, its
#: body, or the app (the deadline no longer applies).
HEADERS, BODY, APP = "headers", "body", "app"


class _Gateway(wsgi.Gateway_10):
    """Marks what the request waits for (see the watchdog), and closes the connection
    when the app answers ``Connection: close`` (an unread body is not read and thrown
    away)."""

    def respond(self) -> None:
        conn = self.req.conn
        expects_body = self.env.get("CONTENT_LENGTH", "0") not in ("", "0") or self.req.chunked_read
        conn.viber_phase = BODY if expects_body else APP
        self.env[DEADLINE] = conn.viber_started + self.req.server.body_timeout
        self.env[BODY_DONE] = lambda: setattr(conn, "viber_phase", APP)
        super().respond()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.req.close_connection = True
        return super().start_response(status, headers, exc_info)


class _Connection(HTTPConnection):
    viber_ready = False  # False until the connection has been seen readable once
    viber_phase = HEADERS
    viber_started = 0.0

    def communicate(self) -> bool:
        self.viber_started = time.monotonic()
        self.viber_phase = HEADERS
        try:
            return bool(super().communicate())  # type: ignore[no-untyped-call]
        finally:
            self.viber_phase = APP


class _DeferredHandshakeAdapter(Adapter):
    """TLS with our context, the handshake done by the worker that first reads from
    the connection (OpenSSL completes a pending handshake on the first read), not by
    the thread that accepts connections."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(None, None)
        self.context = context

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def get_environ(self) -> dict[str, Any]:
        return {}

    def makefile(self, sock: ssl.SSLSocket, mode: str = "r", bufsize: int = 8192) -> Any:
        return (StreamReader if "r" in mode else StreamWriter)(sock, mode, bufsize)


class _Server(wsgi.Server):
    ConnectionClass = _Connection

    def __init__(self, bind: tuple[str, int], app: WSGIApp, limits: ServerLimits) -> None:
        super().__init__(
            bind,
            app,
            numthreads=limits.threads,
            max=limits.threads,
            request_queue_size=128,
            shutdown_timeout=2,
            accepted_queue_size=limits.max_connections,
            accepted_queue_timeout=0,
        )
        self.gateway = _Gateway
        self.timeout = limits.idle_timeout
        self.max_connections = limits.max_connections
        self.keep_alive_conn_limit = limits.max_connections
        self.body_timeout = limits.body_timeout
        self.max_request_header_size = 64 * 1024
        self.expiration_interval = 0.1
        self.refused = 0  # connections closed at once, over max_connections

    @classmethod
    def prepare_socket(cls, bind_addr: Any, family: int, *args: Any, **kwargs: Any) -> Any:
        sock = super().prepare_socket(bind_addr, family, *args, **kwargs)
        # Also for port 0 (cheroot skips it there): a server stopped and started again
        # on the port it was given must not meet its old connections in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    def process_conn(self, conn: _Connection) -> None:
        if conn.viber_ready:
            super().process_conn(conn)
            return
        # A new connection: it waits for its first bytes in the selector, not in a worker.
        manager = self._connections  # type: ignore[attr-defined]
        if manager._num_connections >= self.max_connections:
            self.refused += 1
            with contextlib.suppress(OSError):
                conn.socket.close()
            return
        conn.viber_ready = True
        manager.put(conn)

    def overdue(self, now: float) -> list[_Connection]:
        """Connections a worker holds whose request (line, headers, body) has not all
        arrived within ``body_timeout``."""
        return [
            conn
            for worker in list(self.requests._threads)
            if (conn := worker.conn) is not None
            and conn.viber_phase != APP
            and now - conn.viber_started > self.body_timeout
        ]

    def serve(self) -> None:
        # cheroot's own serve() starts a helper thread that is not a daemon, so a
        # process that never stops a server could not exit; the loop is the same.
        threading.Thread(target=self._serve_unservicable, daemon=True).start()  # type: ignore[attr-defined]
        while self.ready:
            try:
                self._connections.run(self.expiration_interval)  # type: ignore[attr-defined]
            except Exception:
                log.exception("the HTTP server's connection loop failed; it goes on")

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        # cheroot writes to stderr by default; route it to our (redacting) logging.
        log.log(level if level >= logging.WARNING else logging.DEBUG, "%s", msg, exc_info=traceback)


class BackgroundServer:
    """An HTTP(S) server for one WSGI app on a background thread; ``port`` 0 picks a
    free port. ``"::"`` serves IPv6 and IPv4 both."""

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        name: str = "http",
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self._server = _Server((host, port), app, self.limits)
        if ssl_context is not None:
            self._server.ssl_adapter = _DeferredHandshakeAdapter(ssl_context)
        self.scheme = "https" if ssl_context else "http"
        self._server.prepare()  # binds now: a busy port raises OSError here, not later
        self._name = name
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    @property
    def _host(self) -> str:
        return str(self._server.bind_addr[0])

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def bound(self) -> str:
        """What the socket is really bound to, for the log."""
        host = self._host
        shown = f"[{host}]" if ":" in host else host
        everywhere = {"0.0.0.0": " (all IPv4 interfaces)", "::": " (all interfaces, IPv6 and IPv4)"}
        return f"{self.scheme}://{shown}:{self.port}{everywhere.get(host, '')}"

    @property
    def refused_connections(self) -> int:
        return int(self._server.refused)

    def worker_threads(self) -> int:
        return len(self._server.requests._threads)

    def _serve(self) -> None:
        self._server.serve()

    def _watch(self) -> None:
        # Shutting the read side ends a blocked read at once (it sees the end of the
        # stream) and still lets the answer out: 408 for a body, a close for headers.
        while not self._stopping.wait(WATCHDOG_INTERVAL):
            for conn in self._server.overdue(time.monotonic()):
                log.debug("cutting off a request that did not arrive within body_timeout")
                with contextlib.suppress(OSError):
                    conn.socket.shutdown(socket.SHUT_RD)

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()  # also when never started: prepare() started the workers
        if self._thread.is_alive():
            self._thread.join(5)
        if self._watchdog.is_alive():
            self._watchdog.join(2)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server context from the configured files; mutual TLS when a client CA is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=tls.client_ca_file)
    return context

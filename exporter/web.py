"""The WSGI application: /metrics, health, landing page and /api/v1 (SPEC §6).

Routing and request parsing are Werkzeug's; handlers live in :mod:`exporter.api`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

import bcrypt
from prometheus_client.exposition import choose_encoder
from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from . import api
from .api import ApiError, json_response
from .engine import Exporter
from .landing import landing_page
from .reload import Reloader
from .secrets import Secret

log = logging.getLogger(__name__)

URLS = Map(
    [
        Rule("/", endpoint="landing", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
        Rule("/-/healthy", endpoint="healthy", methods=["GET"]),
        Rule("/-/ready", endpoint="ready", methods=["GET"]),
        Rule("/-/reload", endpoint="reload", methods=["POST"]),
        Rule("/api/v1/openapi.json", endpoint="openapi", methods=["GET"]),
        Rule("/api/v1/messages", endpoint="messages", methods=["GET", "POST"]),
        Rule(
            "/api/v1/messages/<provider>/<path:message_id>",
            endpoint="message",
            methods=["GET", "DELETE"],
        ),
        Rule("/api/v1/providers", endpoint="providers", methods=["GET"]),
        Rule("/api/v1/callbacks/<provider>", endpoint="callback", methods=["POST"]),
    ],
    strict_slashes=False,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def openapi_document() -> dict[str, Any]:
    text = resources.files("exporter").joinpath("openapi.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


class BasicAuth:
    """Checks basic-auth credentials against bcrypt hashes. bcrypt is slow on purpose
    (tens of ms), so a verified (user, password, hash) is remembered by its SHA-256 and
    a scrape every few seconds does not pay for it each time."""

    def __init__(self) -> None:
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, request: Request, users: Mapping[str, Secret]) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
            return False
        stored = users.get(auth.username)
        if stored is None:
            bcrypt.checkpw(b"timing", _DUMMY_HASH)  # same work for unknown users
            return False
        key = hashlib.sha256(
            f"{auth.username}\0{auth.password}\0{stored.reveal()}".encode()
        ).digest()
        with self._lock:
            if key in self._verified:
                return True
        if not bcrypt.checkpw(auth.password.encode(), stored.reveal().encode()):
            return False
        with self._lock:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified.add(key)
        return True


_DUMMY_HASH = bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=4))


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class WebApp:
    """The WSGI callable. Write calls (POST, DELETE on /api/v1) need authorisation."""

    def __init__(self, exporter: Exporter, reloader: Reloader | None = None) -> None:
        self.exporter = exporter
        self.reloader = reloader
        self.basic_auth = BasicAuth()
        self._openapi = json.dumps(openapi_document())

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            return self.route(request, str(endpoint), args)
        except ApiError as e:
            return e.get_response()
        except (NotFound, MethodNotAllowed) as e:
            if request.path.startswith("/api/"):
                headers = dict(e.get_headers())
                headers.pop("Content-Type", None)
                message = (
                    "no such endpoint"
                    if isinstance(e, NotFound)
                    else f"method {request.method} not allowed here"
                )
                return ApiError(e.code or 404, message, headers=headers).get_response()
            return e.get_response()
        except HTTPException as e:
            return e.get_response()
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return json_response({"error": "internal error; see the exporter's log"}, 500)

    def route(self, request: Request, endpoint: str, args: Mapping[str, Any]) -> Response:
        exporter = self.exporter
        if endpoint == "metrics":
            return self.metrics(request)
        if endpoint == "reload":
            self.authorise_write(request)
            return self.reload()
        if endpoint == "healthy":
            return Response("OK\n", content_type="text/plain")
        if endpoint == "ready":
            ready = exporter.ready
            return Response(
                "OK\n" if ready else "not ready\n", 200 if ready else 503, content_type="text/plain"
            )
        if endpoint == "landing":
            return Response(
                landing_page(exporter, openapi_document()), content_type="text/html; charset=utf-8"
            )
        if endpoint == "openapi":
            return Response(self._openapi, content_type="application/json")
        if endpoint == "callback":
            return api.callback(exporter, request, args["provider"])
        if endpoint == "providers":
            return api.list_providers(exporter)
        if request.method in ("POST", "DELETE"):
            self.authorise_write(request)
        if endpoint == "messages":
            return (
                api.register(exporter, request)
                if request.method == "POST"
                else api.list_messages(exporter, request)
            )
        if request.method == "DELETE":
            return api.delete_message(exporter, args["provider"], args["message_id"])
        return api.get_message(exporter, args["provider"], args["message_id"])

    def reload(self) -> Response:
        if self.reloader is None:
            raise ApiError(404, "reloading is not available here")
        problems = self.reloader.reload()
        if problems:
            details = [{"key": key, "error": message} for key, message in problems]
            raise ApiError(400, "the new configuration is invalid; nothing changed", details)
        return json_response({"status": "reloaded"})

    def metrics(self, request: Request) -> Response:
        users = self.exporter.config.exporter.basic_auth_users
        if users and not self.basic_auth.check(request, users):
            return Response(
                "authentication required\n",
                401,
                content_type="text/plain",
                headers={"WWW-Authenticate": 'Basic realm="viber-exporter"'},
            )
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(self.exporter.registry), content_type=content_type)

    def authorise_write(self, request: Request) -> None:
        """A Bearer token when ``api_token`` is set (no client exempt); else loopback only.

        The peer address is the socket's: X-Forwarded-For is never trusted.
        """
        token = self.exporter.config.exporter.api_token
        if token is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise ApiError(
                    401,
                    "this call needs Authorization: Bearer <api_token>",
                    headers={"WWW-Authenticate": 'Bearer realm="viber-exporter"'},
                )
            if not hmac.compare_digest(given.strip().encode(), token.reveal().encode()):
                raise ApiError(
                    401,
                    "wrong API token",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            return
        if not is_loopback(request.remote_addr):
            raise ApiError(
                403, "writes are allowed from loopback only while exporter.api_token is not set"
            )

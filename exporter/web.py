"""The WSGI application: /metrics, health, landing page and /api/v1 (SPEC §6).

Routing and request parsing are Werkzeug's; handlers live in :mod:`viber_exporter.api`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
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
from .errors import StoreError
from .landing import landing_page
from .reload import Reloader
from .secrets import Secret

log = logging.getLogger(__name__)


class Auth(Enum):
    """Who may call a route. Every route names its policy in the table below, so a
    new write route cannot slip past the check by where it is written."""

    PUBLIC = "public"  # reads, health and the landing page
    METRICS = "metrics"  # basic auth when exporter.basic_auth_users is set
    WRITE = "write"  # bearer api_token, else loopback only
    PROVIDER = "provider"  # the provider plugin authenticates the request


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    auth: Auth
    handler: Callable[[WebApp, Request, Mapping[str, Any]], Response]


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def openapi_document() -> dict[str, Any]:
    text = resources.files("viber_exporter").joinpath("openapi.json").read_text(encoding="utf-8")
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


class MetricsAuthRequired(HTTPException):
    code = 401

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        return Response(
            "authentication required\n",
            401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Basic realm="viber-exporter"'},
        )


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class WebApp:
    """The WSGI callable. Write calls (POST, DELETE on /api/v1) need authorisation."""

    def __init__(
        self, exporter: Exporter, reloader: Reloader | None = None, notice: str | None = None
    ) -> None:
        self.exporter = exporter
        self.reloader = reloader
        self.notice = notice  # a banner on the landing page (the demo says it is one)
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
            route = ROUTES[int(endpoint)]
            self.authorise(route.auth, request)
            return route.handler(self, request, args)
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
        except StoreError as e:
            # The database is away (PostgreSQL restarting, the network to it lost).
            log.warning("cannot serve %s %s: %s", request.method, request.path, e)
            return ApiError(
                503, "the state store cannot be reached; please retry", headers={"Retry-After": "5"}
            ).get_response()
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return json_response({"error": "internal error; see the exporter's log"}, 500)

    def authorise(self, policy: Auth, request: Request) -> None:
        if policy is Auth.WRITE:
            self.authorise_write(request)
        elif policy is Auth.METRICS:
            users = self.exporter.config.exporter.basic_auth_users
            if users and not self.basic_auth.check(request, users):
                raise MetricsAuthRequired()

    # -- handlers of our own routes ------------------------------------------------------
    def landing(self) -> Response:
        return Response(
            landing_page(self.exporter, openapi_document(), self.notice),
            content_type="text/html; charset=utf-8",
        )

    def healthy(self) -> Response:
        return Response("OK\n", content_type="text/plain")

    def ready(self) -> Response:
        ready = self.exporter.ready
        return Response(
            "OK\n" if ready else "not ready\n", 200 if ready else 503, content_type="text/plain"
        )

    def openapi(self) -> Response:
        return Response(self._openapi, content_type="application/json")

    def reload(self) -> Response:
        if self.reloader is None:
            raise ApiError(404, "reloading is not available here")
        outcome = self.reloader.reload()
        if outcome.problems:
            details = [{"key": key, "error": message} for key, message in outcome.problems]
            raise ApiError(400, "the new configuration is invalid; nothing changed", details)
        body: dict[str, Any] = {"status": "reloaded"}
        if outcome.restart_needed:
            body["restart_needed"] = list(outcome.restart_needed)
        return json_response(body)

    def metrics(self, request: Request) -> Response:
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


ROUTES: tuple[Route, ...] = (
    Route("/", ("GET",), Auth.PUBLIC, lambda app, r, a: app.landing()),
    Route("/metrics", ("GET",), Auth.METRICS, lambda app, r, a: app.metrics(r)),
    Route("/-/healthy", ("GET",), Auth.PUBLIC, lambda app, r, a: app.healthy()),
    Route("/-/ready", ("GET",), Auth.PUBLIC, lambda app, r, a: app.ready()),
    Route("/-/reload", ("POST",), Auth.WRITE, lambda app, r, a: app.reload()),
    Route("/api/v1/openapi.json", ("GET",), Auth.PUBLIC, lambda app, r, a: app.openapi()),
    Route(
        "/api/v1/messages",
        ("GET",),
        Auth.PUBLIC,
        lambda app, r, a: api.list_messages(app.exporter, r),
    ),
    Route(
        "/api/v1/messages", ("POST",), Auth.WRITE, lambda app, r, a: api.register(app.exporter, r)
    ),
    Route(
        "/api/v1/messages/<provider>/<path:message_id>",
        ("GET",),
        Auth.PUBLIC,
        lambda app, r, a: api.get_message(app.exporter, a["provider"], a["message_id"]),
    ),
    Route(
        "/api/v1/messages/<provider>/<path:message_id>",
        ("DELETE",),
        Auth.WRITE,
        lambda app, r, a: api.delete_message(app.exporter, a["provider"], a["message_id"]),
    ),
    Route(
        "/api/v1/providers",
        ("GET",),
        Auth.PUBLIC,
        lambda app, r, a: api.list_providers(app.exporter),
    ),
    Route(
        "/api/v1/callbacks/<provider>",
        ("GET", "POST", "PUT"),
        Auth.PROVIDER,
        lambda app, r, a: api.callback(app.exporter, r, a["provider"]),
    ),
)

URLS = Map(
    [
        Rule(route.rule, endpoint=index, methods=list(route.methods))
        for index, route in enumerate(ROUTES)
    ],
    strict_slashes=False,
)

"""The WSGI application: /metrics, health, landing page and /api/v1 (SPEC §6).

Routing and request parsing are Werkzeug's; handlers live in :mod:`viber_exporter.web.api`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Any

import bcrypt
from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from ..engine import Exporter, ReloadOutcome
from ..errors import StoreError
from ..secrets import Secret
from . import api
from .api import BODY_READ, ApiError, has_body, json_response
from .apidocs import api_docs_page
from .landing import landing_page

log = logging.getLogger(__name__)
access_log = logging.getLogger("viber_exporter.access")


class Auth(Enum):
    """Who may call a route. Every route names its policy in the table below, so a
    new route cannot slip past the check by where it is written.

    When ``exporter.api_token`` or ``exporter.basic_auth_users`` is set, every route but
    health and callbacks needs credentials: the bearer token or a basic-auth user.
    """

    OPEN = "open"  # /-/healthy and /-/ready: always open (orchestrators probe them)
    READ = "read"  # pages, /metrics, API reads: credentials when any are configured
    WRITE = "write"  # the bearer api_token when set; else loopback clients only
    PROVIDER = "provider"  # the provider plugin authenticates the request


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    auth: Auth
    handler: Callable[[WebApp, Request, Mapping[str, Any]], Response]


def openapi_document() -> dict[str, Any]:
    text = resources.files("viber_exporter").joinpath("openapi.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


class AuthBusy(Exception):
    """Too many password checks at once (someone is guessing): answered 503."""


class BasicAuth:
    """Checks basic-auth credentials against bcrypt hashes.

    bcrypt is slow on purpose (tens of ms), so a verified (user, password, hash) is
    remembered by its SHA-256 and a scrape every few seconds does not pay for it each
    time. An unknown user costs the same as a known one (a dummy hash at the highest
    configured cost), so timing does not tell which users exist; and at most one
    check runs at a time, so guessing passwords cannot take more than one core nor
    hold the workers that serve remembered credentials.
    """

    #: how long a request waits for the password checker before a 503
    WAIT = 1.0

    def __init__(self) -> None:
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self._checking = threading.BoundedSemaphore(1)
        self._dummies: dict[int, bytes] = {}

    def check(self, request: Request, users: Mapping[str, Secret]) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
            return False
        stored = users.get(auth.username)
        reference = stored.reveal() if stored is not None else None
        key = hashlib.sha256(f"{auth.username}\0{auth.password}\0{reference}".encode()).digest()
        with self._lock:
            if reference is not None and key in self._verified:
                return True
        hashed = reference.encode() if reference is not None else self._dummy(users)
        if not self._checking.acquire(timeout=self.WAIT):
            raise AuthBusy()
        try:
            ok = bcrypt.checkpw(auth.password.encode(), hashed)
        finally:
            self._checking.release()
        if not ok or reference is None:
            return False
        with self._lock:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified.add(key)
        return True

    def _dummy(self, users: Mapping[str, Secret]) -> bytes:
        """A hash of nothing at the highest cost among the configured ones."""
        cost = max((_cost(u.reveal()) for u in users.values()), default=10)
        with self._lock:
            dummy = self._dummies.get(cost)
        if dummy is None:
            dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))
            with self._lock:
                self._dummies[cost] = dummy
        return dummy


def _cost(bcrypt_hash: str) -> int:
    """The cost factor of a ``$2b$10$...`` hash (the config checked its shape)."""
    return min(max(int(bcrypt_hash[4:6]), 4), 31)


class Unauthorized(HTTPException):
    """401 with the challenge of the configured scheme: JSON under /api/, text elsewhere."""

    code = 401

    def __init__(self, api: bool, basic: bool, message: str) -> None:
        super().__init__(message)
        self.api, self.basic, self.message = api, basic, message

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        challenge = (
            'Basic realm="viber-exporter"' if self.basic else 'Bearer realm="viber-exporter"'
        )
        headers = {"WWW-Authenticate": challenge}
        if self.api:
            return json_response({"error": self.message}, 401, headers=headers)
        return Response(self.message + "\n", 401, content_type="text/plain", headers=headers)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1, also as an IPv4-mapped address (``::ffff:127.0.0.1``,
    how a dual-stack socket shows an IPv4 client)."""
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class WebApp:
    """The WSGI callable. Write calls (POST, DELETE on /api/v1) need authorisation."""

    def __init__(
        self,
        exporter: Exporter,
        reload: Callable[[], ReloadOutcome] | None = None,
        notice: str | None = None,
    ) -> None:
        self.exporter = exporter
        #: re-reads the configuration file (``POST /-/reload``); None: not available
        self.reload_config = reload
        self.notice = notice  # a banner on the landing page (the demo says it is one)
        self.basic_auth = BasicAuth()
        document = openapi_document()
        self._openapi = json.dumps(document)
        self._api_docs = api_docs_page(document)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        response = self.dispatch(request)
        if has_body(request) and not environ.get(BODY_READ):
            # Answered without reading the body (refused before it): close rather than
            # read and throw away what the client may still be sending.
            response.headers["Connection"] = "close"
        if access_log.isEnabledFor(logging.DEBUG):
            # The path only: a query may hold a callback token.
            access_log.debug(
                "%s %s %s %d %.1fms",
                request.remote_addr,
                request.method,
                request.path[:200],
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
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
            # JSON on every path, as every other error (the README's promise), with Allow
            headers = dict(e.get_headers())
            headers.pop("Content-Type", None)
            message = (
                "no such endpoint"
                if isinstance(e, NotFound)
                else f"method {request.method} not allowed here"
            )
            return ApiError(e.code or 404, message, headers=headers).get_response()
        except HTTPException as e:
            return e.get_response()
        except AuthBusy:
            return ApiError(
                503, "too many password checks at once; retry", headers={"Retry-After": "1"}
            ).get_response()
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
        """Decided from the headers alone, before any handler reads a body."""
        if policy in (Auth.OPEN, Auth.PROVIDER):
            return
        settings = self.exporter.config.exporter
        users, token = settings.basic_auth_users, settings.api_token
        if policy is Auth.WRITE and token is not None:
            self.authorise_token(request, token)
            return
        if (users or token is not None) and not (
            self.token_given(request, token) or (users and self.basic_auth.check(request, users))
        ):
            schemes = [
                *(["basic auth"] if users else []),
                *(["Authorization: Bearer <api_token>"] if token else []),
            ]
            raise Unauthorized(
                request.path.startswith("/api/"),
                bool(users),
                f"authentication required ({' or '.join(schemes)})",
            )
        if policy is Auth.WRITE and not is_loopback(request.remote_addr):
            raise ApiError(
                403, "writes are allowed from loopback only while exporter.api_token is not set"
            )

    @staticmethod
    def token_given(request: Request, token: Secret | None) -> bool:
        """Whether the request carries ``Authorization: Bearer <api_token>``."""
        if token is None:
            return False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()
        )

    # -- handlers of our own routes ------------------------------------------------------
    def landing(self) -> Response:
        return Response(
            landing_page(self.exporter, self.notice, CALLBACK_METHODS),
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

    def api_docs(self) -> Response:
        return Response(self._api_docs, content_type="text/html; charset=utf-8")

    def reload(self) -> Response:
        if self.reload_config is None:
            raise ApiError(404, "reloading is not available here")
        outcome = self.reload_config()
        if outcome.problems:
            details = [{"key": key, "error": message} for key, message in outcome.problems]
            raise ApiError(400, "the new configuration is invalid; nothing changed", details)
        body: dict[str, Any] = {"status": "reloaded"}
        if outcome.restart_needed:
            body["restart_needed"] = list(outcome.restart_needed)
        return json_response(body)

    def metrics(self, request: Request) -> Response:
        body, content_type = self.exporter.scrape(request.headers.get("Accept", ""))
        return Response(body, content_type=content_type)

    def authorise_token(self, request: Request, token: Secret) -> None:
        """A write needs the bearer ``api_token`` (no client exempt: a proxy makes every
        client look local). The peer address is the socket's: X-Forwarded-For is never
        trusted."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401,
                "this call needs Authorization: Bearer <api_token>",
                headers={"WWW-Authenticate": 'Bearer realm="viber-exporter"'},
            )
        if not self.token_given(request, token):
            raise ApiError(
                401,
                "wrong API token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )


ROUTES: tuple[Route, ...] = (
    Route("/", ("GET",), Auth.READ, lambda app, r, a: app.landing()),
    Route("/metrics", ("GET",), Auth.READ, lambda app, r, a: app.metrics(r)),
    Route("/-/healthy", ("GET",), Auth.OPEN, lambda app, r, a: app.healthy()),
    Route("/-/ready", ("GET",), Auth.OPEN, lambda app, r, a: app.ready()),
    Route("/-/reload", ("POST",), Auth.WRITE, lambda app, r, a: app.reload()),
    Route("/api/v1/openapi.json", ("GET",), Auth.READ, lambda app, r, a: app.openapi()),
    Route("/api/v1/docs", ("GET",), Auth.READ, lambda app, r, a: app.api_docs()),
    Route(
        "/api/v1/messages",
        ("GET",),
        Auth.READ,
        lambda app, r, a: api.list_messages(app.exporter, r),
    ),
    Route(
        "/api/v1/messages", ("POST",), Auth.WRITE, lambda app, r, a: api.register(app.exporter, r)
    ),
    Route(
        "/api/v1/messages/<provider>/<path:message_id>",
        ("GET",),
        Auth.READ,
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
        Auth.READ,
        lambda app, r, a: api.list_providers(app.exporter),
    ),
    Route(
        "/api/v1/callbacks/<provider>",
        ("GET", "POST", "PUT"),
        Auth.PROVIDER,
        lambda app, r, a: api.callback(app.exporter, r, a["provider"]),
    ),
)

#: the methods providers may report with (listed once on the landing page)
CALLBACK_METHODS = next(r.methods for r in ROUTES if r.rule.startswith("/api/v1/callbacks/"))

URLS = Map(
    [
        Rule(route.rule, endpoint=index, methods=list(route.methods))
        for index, route in enumerate(ROUTES)
    ],
    strict_slashes=False,
)

"""The WSGI application: /metrics, health, landing page and /api/v1 (SPEC §6).

Routing and request parsing are Werkzeug's; handlers live in :mod:`exporter.api`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from prometheus_client.exposition import choose_encoder
from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from . import api
from .api import ApiError, json_response
from .engine import Exporter
from .landing import landing_page

log = logging.getLogger(__name__)

URLS = Map(
    [
        Rule("/", endpoint="landing", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
        Rule("/-/healthy", endpoint="healthy", methods=["GET"]),
        Rule("/-/ready", endpoint="ready", methods=["GET"]),
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


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class WebApp:
    """The WSGI callable. Write calls (POST, DELETE on /api/v1) need authorisation."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
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

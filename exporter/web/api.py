"""The ``/api/v1`` handlers (SPEC §6): registration, messages, providers, callbacks.

Handlers translate HTTP to the engine's methods and back; the rules (validation,
counting, limits) are the engine's.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException

from ..callbacks import CallbackRequest, Headers
from ..engine import Exporter
from ..errors import Refused, StoreError, WatchedSetFull
from ..httpserver import BODY_DONE, DEADLINE
from ..model import Status
from ..parsing import JSON_ERRORS
from ..registration import MAX_ITEMS, RegistrationError
from .views import message_json, providers_json

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class ApiError(HTTPException):
    """An HTTP error answered as JSON ``{"error": ..., "details": [...]}``."""

    def __init__(
        self,
        code: int,
        error: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.code = code
        self.status = code
        self.error = error
        self.details = details
        self.extra_headers = headers or {}

    @classmethod
    def from_refusal(cls, refused: Refused) -> ApiError:
        return cls(refused.status, refused.message, refused.details, refused.headers)

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.details is not None:
            body["details"] = self.details
        return json_response(body, self.status, headers=self.extra_headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json")


#: Set in the WSGI environ once a handler has read the request body.
BODY_READ = "viber.body_read"
_CHUNK = 64 * 1024
_CLOSE = {"Connection": "close"}


def has_body(request: Request) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")


def read_body(request: Request) -> bytes:
    """The request body, read in chunks within the server's deadline (408 when the
    client is too slow) and at most ``MAX_BODY`` bytes (413)."""
    too_big = ApiError(413, f"request body over {MAX_BODY // (1024 * 1024)} MiB", headers=_CLOSE)
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise too_big
    late = ApiError(408, "the request body did not arrive in time", headers=_CLOSE)
    chunks: list[bytes] = []
    size = 0
    try:
        # The server's watchdog ends a read that is still waiting at the deadline.
        while chunk := request.stream.read(_CHUNK):
            size += len(chunk)
            if size > MAX_BODY:
                raise too_big
            chunks.append(chunk)
    except OSError as e:  # the client stalled past exporter.idle_timeout, or went away
        raise late from e
    request.environ.get(BODY_DONE, lambda: None)()
    if length is not None and size < length:
        deadline = request.environ.get(DEADLINE)
        if deadline is not None and time.monotonic() >= deadline:
            raise late
        raise ApiError(400, f"the body ended after {size} of {length} bytes", headers=_CLOSE)
    request.environ[BODY_READ] = True
    return b"".join(chunks)


def read_json(request: Request) -> Any:
    data = read_body(request)
    try:
        return json.loads(data)
    except RecursionError as e:
        raise ApiError(400, "request body is nested too deeply") from e
    except JSON_ERRORS as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from e


def register(exporter: Exporter, request: Request) -> Response:
    body = read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ApiError(400, 'body must be an object with a "messages" list')
    items = body["messages"]
    if len(items) > MAX_ITEMS:
        raise ApiError(413, f"at most {MAX_ITEMS} messages per request, got {len(items)}")
    if not items:
        raise ApiError(400, "messages is empty")
    try:
        result = exporter.register_items(items)
    except RegistrationError as e:
        raise ApiError(
            400,
            f"{len(e.details)} of {len(items)} messages are invalid; nothing was stored",
            [{"index": i, "error": m} for i, m in e.details],
        ) from e
    except WatchedSetFull as e:
        raise ApiError(429, str(e), headers={"Retry-After": "60"}) from e
    except StoreError as e:
        log.error("registration not stored: %s", e)
        raise ApiError(
            503,
            "the state store could not save the registration; nothing was stored",
            headers={"Retry-After": "5"},
        ) from e
    return json_response({"accepted": result.accepted, "duplicates": result.duplicates})


def get_message(exporter: Exporter, provider: str, message_id: str) -> Response:
    state = exporter.get_message(provider, message_id)
    if state is None:
        raise ApiError(404, f"no message {message_id!r} of provider {provider!r} is stored")
    return json_response(message_json(state))


def delete_message(exporter: Exporter, provider: str, message_id: str) -> Response:
    if not exporter.delete_message(provider, message_id):
        raise ApiError(404, f"no message {message_id!r} of provider {provider!r} is stored")
    return Response(status=204)


def _cursor(provider: str, message_id: str) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps([provider, message_id]).encode()).decode().rstrip("=")
    )


def _decode_cursor(text: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ApiError(400, "after is not a cursor this API returned")
    return value[0], value[1]


def list_messages(exporter: Exporter, request: Request) -> Response:
    args = request.args
    status = None
    if "status" in args:
        try:
            status = Status(args["status"])
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise ApiError(400, f"status must be one of {allowed}") from None
    try:
        limit = int(args.get("limit", DEFAULT_PAGE))
    except ValueError:
        raise ApiError(400, "limit must be a whole number") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit must be between 1 and {MAX_PAGE}")
    after = _decode_cursor(args["after"]) if args.get("after") else None
    page = exporter.list_messages(
        provider=args.get("provider"), status=status, after=after, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _cursor(page[-1].provider, page[-1].id) if more else None
    return json_response({"messages": [message_json(s) for s in page], "next": next_cursor})


def list_providers(exporter: Exporter) -> Response:
    return json_response({"providers": providers_json(exporter)})


def callback(exporter: Exporter, request: Request, provider: str) -> Response:
    pushed = CallbackRequest(
        method=request.method,
        path=request.path,
        headers=Headers(list(request.headers.items())),
        query={key: request.args[key] for key in request.args},
        body=b"",
        remote_addr=request.remote_addr,
    )
    try:
        reply = exporter.receive_callback(provider, pushed, lambda: read_body(request))
    except Refused as e:
        raise ApiError.from_refusal(e) from e
    if reply.body is None:
        return json_response({"accepted": len(reply.reports)}, reply.status)
    return Response(reply.body, reply.status, content_type=reply.content_type)

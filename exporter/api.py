"""The ``/api/v1`` handlers (SPEC §6): registration, messages, providers, callbacks."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from datetime import datetime
from typing import Any

from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException

from .engine import Exporter, Registration, RegistrationError
from .errors import StoreError, WatchedSetFull
from .model import Status
from .provider import CallbackNotSupported, InvalidCallback
from .views import message_json, providers_json

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024
MAX_ITEMS = 10_000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
ITEM_KEYS = frozenset({"provider", "id", "sent_at"})
FUTURE_SLACK = 3600.0  # sent_at may be at most this far ahead of our clock


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

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.details is not None:
            body["details"] = self.details
        return json_response(body, self.status, headers=self.extra_headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json")


def read_json(request: Request) -> Any:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError(413, f"request body over {MAX_BODY // (1024 * 1024)} MiB")
    data = request.stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, f"request body over {MAX_BODY // (1024 * 1024)} MiB")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from e


def parse_sent_at(value: Any, now: float) -> float:
    if not isinstance(value, str):
        raise ValueError('sent_at must be an RFC 3339 time string, e.g. "2026-11-23T10:00:00Z"')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"sent_at is not an RFC 3339 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError('sent_at needs a zone ("Z" or an offset like "+02:00")')
    timestamp = parsed.timestamp()
    if timestamp > now + FUTURE_SLACK:
        raise ValueError("sent_at is in the future")
    return timestamp


def _registration(
    index: int, item: Any, exporter: Exporter, now: float
) -> tuple[Registration | None, str | None]:
    if not isinstance(item, dict):
        return None, "each message must be an object with provider and id"
    unknown = set(item) - ITEM_KEYS
    if unknown:
        return (
            None,
            f"unknown field(s): {', '.join(sorted(unknown))} (allowed: provider, id, sent_at)",
        )
    provider, message_id = item.get("provider"), item.get("id")
    if not isinstance(provider, str) or not provider:
        return None, "provider is required (a configured provider instance name)"
    if not isinstance(message_id, str) or not message_id:
        return None, "id is required (the provider's message id, as a string)"
    problem = exporter.check_registration(provider, message_id)
    if problem:
        return None, problem
    sent_at = None
    if item.get("sent_at") is not None:
        try:
            sent_at = parse_sent_at(item["sent_at"], now)
        except ValueError as e:
            return None, str(e)
    return Registration(provider, message_id, sent_at), None


def register(exporter: Exporter, request: Request) -> Response:
    body = read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ApiError(400, 'body must be an object with a "messages" list')
    items = body["messages"]
    if len(items) > MAX_ITEMS:
        raise ApiError(413, f"at most {MAX_ITEMS} messages per request, got {len(items)}")
    if not items:
        raise ApiError(400, "messages is empty")
    now = exporter.clock.time()
    registrations, details = [], []
    for index, item in enumerate(items):
        registration, problem = _registration(index, item, exporter, now)
        if problem:
            details.append({"index": index, "error": problem})
        elif registration is not None:
            registrations.append(registration)
    if details:
        for r in registrations:
            exporter.metrics.registrations.labels(r.provider, "rejected").inc()
        raise ApiError(
            400, f"{len(details)} of {len(items)} messages are invalid; nothing was stored", details
        )
    try:
        result = exporter.register(registrations)
    except RegistrationError as e:  # raced with a config change; same answer as above
        raise ApiError(400, str(e), [{"index": i, "error": m} for i, m in e.details]) from e
    except WatchedSetFull as e:
        raise ApiError(429, str(e), headers={"Retry-After": "60"}) from e
    except StoreError as e:
        log.error("registration not stored: %s", e)
        raise ApiError(
            503, "the state store could not save the registration; nothing was stored"
        ) from e
    return json_response({"accepted": result.accepted, "duplicates": result.duplicates})


def get_message(exporter: Exporter, provider: str, message_id: str) -> Response:
    state = exporter.store.get(provider, message_id)
    if state is None:
        raise ApiError(404, f"no message {message_id!r} of provider {provider!r} is stored")
    return json_response(message_json(state))


def delete_message(exporter: Exporter, provider: str, message_id: str) -> Response:
    if not exporter.store.delete(provider, message_id):
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
    page = exporter.store.list(
        provider=args.get("provider"), status=status, after=after, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _cursor(page[-1].provider, page[-1].id) if more else None
    return json_response({"messages": [message_json(s) for s in page], "next": next_cursor})


def list_providers(exporter: Exporter) -> Response:
    return json_response({"providers": providers_json(exporter)})


def callback(exporter: Exporter, request: Request, provider: str) -> Response:
    config = exporter.config.providers.get(provider)
    instance = exporter.instances.get(provider)
    if config is None or instance is None or config.callback_token is None:
        raise ApiError(
            404, f"callbacks are not enabled for provider {provider!r} (set its callback_token)"
        )
    given = request.args.get("token", "")
    if not hmac.compare_digest(given.encode(), config.callback_token.reveal().encode()):
        exporter.metrics.callbacks.labels(provider, "rejected").inc()
        raise ApiError(401, "missing or wrong callback token (?token=)")
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        exporter.metrics.callbacks.labels(provider, "rejected").inc()
        raise ApiError(413, "callback body too large")
    try:
        reports = instance.provider.parse_callback(body, request.content_type or "")
    except CallbackNotSupported as e:
        raise ApiError(404, str(e)) from e
    except InvalidCallback as e:
        exporter.metrics.callbacks.labels(provider, "rejected").inc()
        raise ApiError(400, f"callback not understood: {e}") from e
    except Exception as e:  # a plugin bug is the caller's 400, never our 500
        log.warning("plugin %s failed to parse a callback", provider, exc_info=True)
        exporter.metrics.callbacks.labels(provider, "rejected").inc()
        raise ApiError(400, f"callback not understood: {type(e).__name__}") from e
    try:
        exporter.ingest_reports(provider, reports)
    except WatchedSetFull as e:
        exporter.metrics.callbacks.labels(provider, "rejected").inc()
        raise ApiError(429, str(e), headers={"Retry-After": "60"}) from e
    except StoreError as e:
        raise ApiError(503, "the state store could not save the report; please retry") from e
    exporter.metrics.callbacks.labels(provider, "accepted").inc()
    return json_response({"accepted": len(reports)})

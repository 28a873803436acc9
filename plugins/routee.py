"""Routee's Viber tracking-id API (providers.md §1).

OAuth2 client credentials for a bearer token, reused until about a minute before it
expires and fetched by one thread at a time; ``GET /viber/tracking/{trackingId}``
for each message; Routee's Viber callbacks for pushed reports.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from exporter import (
    ConfigTable,
    FetchError,
    InvalidCallback,
    Observation,
    Outcome,
    Provider,
    Status,
    hookimpl,
    snake_case,
)
from exporter.http import json_body, outcome_for_status, retry_after_seconds
from exporter.parsing import country, field, invalid, iso_time, price
from exporter.secrets import Secret

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://connect.routee.net"
DEFAULT_TOKEN_URL = "https://auth.routee.net/oauth/token"  # noqa: S105 (a URL, not a password)
NOT_FOUND_CODE = "404019006"  # "viberTracking was not found"
TOKEN_MARGIN = 60.0  # refresh this long before the token expires
DEFAULT_TOKEN_LIFETIME = 3600.0  # Routee's documented default, if expires_in is missing
TRACKING_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

STATUS_MAP: Mapping[str, Status] = {
    "queued": Status.PENDING,
    "delivered": Status.DELIVERED,
    "seen": Status.READ,
    "undelivered": Status.FAILED,
    "failed": Status.FAILED,
    "unsent": Status.FAILED,
    "expired": Status.EXPIRED,
}


@dataclass(frozen=True)
class RouteeSettings:
    application_id: str
    application_secret: Secret
    currency: str
    base_url: str
    token_url: str


class TokenCache:
    """One bearer token shared by all polls; only one thread fetches a new one."""

    def __init__(
        self, fetch: Callable[[], tuple[str, float]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:  # waiters reuse the token the first thread fetched
            if self._token is None or self._clock() >= self._expires:
                token, lifetime = self._fetch()
                margin = TOKEN_MARGIN if lifetime > 2 * TOKEN_MARGIN else lifetime / 2
                self._token, self._expires = token, self._clock() + lifetime - margin
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None


def _error_detail(response: requests.Response) -> tuple[str, str]:
    """Routee's error body ``{code, developerMessage}``, as far as it can be read."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("code") or ""), str(
        body.get("developerMessage") or body.get("error_description") or ""
    )[:300]


def _raise_for_error(response: requests.Response) -> None:
    if response.status_code < 400:
        return
    code, message = _error_detail(response)
    if response.status_code == 404 and code == NOT_FOUND_CODE:
        raise FetchError(Outcome.NOT_FOUND, "tracking id not found (404019006)")
    outcome = outcome_for_status(response.status_code)
    if outcome is Outcome.NOT_FOUND:
        # A 404 without Routee's tracking code is a wrong path or base_url, not an unknown message.
        outcome = Outcome.CLIENT_ERROR
    detail = (
        f"HTTP {response.status_code}"
        + (f" code {code}" if code else "")
        + (f": {message}" if message else "")
    )
    retry_after = retry_after_seconds(response) if response.status_code in (429, 503) else None
    raise FetchError(outcome, detail, retry_after=retry_after)


def _single(data: Any, tracking_id: str) -> Mapping[str, Any]:
    """The message from a bare object, a list, or a Spring-style page."""
    if isinstance(data, Mapping) and isinstance(data.get("content"), list):
        data = data["content"]
    if isinstance(data, list):
        items = [item for item in data if isinstance(item, Mapping)]
        if not items:
            raise FetchError(Outcome.NOT_FOUND, "empty tracking answer")
        return next((i for i in items if i.get("trackingId") == tracking_id), items[0])
    if isinstance(data, Mapping):
        return data
    raise invalid("tracking answer is neither an object nor a list")


def observation(
    item: Mapping[str, Any], currency: str, *, status_key: str, date_key: str
) -> Observation:
    """Normalise a tracking item (``status.status``/``status.date``) or a callback
    (``status.name``/``status.updatedDate``)."""
    status_field = item.get("status")
    raw = field(item, "status", status_key) if isinstance(status_field, Mapping) else status_field
    if not isinstance(raw, str) or not raw.strip():
        raise invalid(f"status.{status_key} is missing")
    status = STATUS_MAP.get(raw.strip().lower(), Status.UNKNOWN)
    detailed = field(item, "status", "reason", "detailedStatus")
    reason = None
    if status.is_failure or status is Status.UNKNOWN:
        reason = snake_case(detailed if isinstance(detailed, str) and detailed.strip() else raw)
    when = iso_time(field(item, "status", date_key), f"status.{date_key}")
    return Observation(
        status=status,
        provider_status=raw.strip(),
        reason=reason,
        sent_at=iso_time(item.get("createdAt"), "createdAt"),
        delivered_at=when if status is Status.DELIVERED else None,
        read_at=when if status is Status.READ else None,
        price=price(item.get("price")),
        currency=currency,
        country=country(item.get("country")),
    )


class RouteeProvider(Provider):
    plugin_name = "routee"
    status_map = STATUS_MAP
    settings: RouteeSettings

    def __init__(self, name: str, settings: RouteeSettings, http: Any) -> None:
        super().__init__(name, settings, http)
        self.tokens = TokenCache(self._request_token)

    @classmethod
    def parse_settings(cls, table: ConfigTable) -> RouteeSettings:
        return RouteeSettings(
            application_id=table.string("application_id"),
            application_secret=table.secret("application_secret") or Secret(""),
            currency=table.string(
                "currency",
                pattern=r"[A-Z]{3}",
                hint='must be the account\'s 3-letter ISO 4217 code, e.g. "EUR"',
            ),
            base_url=table.url("base_url", DEFAULT_BASE_URL),
            token_url=table.url("token_url", DEFAULT_TOKEN_URL),
        )

    def check_id(self, message_id: str) -> str | None:
        if not TRACKING_ID.fullmatch(message_id):
            return (
                "a Routee tracking id is a UUID like 0a047b46-a4dd-4ca8-b817-a6a134dd1234 "
                "(1 to 64 letters, digits and '-')"
            )
        return None

    def _request_token(self) -> tuple[str, float]:
        s = self.settings
        response = self.http.request(
            "POST",
            s.token_url,
            auth=(s.application_id, s.application_secret.reveal()),
            data={"grant_type": "client_credentials"},
            headers={"Accept": "application/json"},
        )
        if response.status_code == 429:
            raise FetchError(
                Outcome.RATE_LIMITED, "token endpoint: HTTP 429", retry_after_seconds(response)
            )
        if response.status_code >= 400:
            # Whatever the token endpoint says, no token means we are not authorised.
            raise FetchError(
                Outcome.AUTH_ERROR, f"token request refused: HTTP {response.status_code}"
            )
        body = json_body(response)
        token = field(body, "access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise FetchError(Outcome.AUTH_ERROR, "token answer has no access_token")
        lifetime = field(body, "expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        log.debug("provider %s: new Routee token valid for %ss", self.name, lifetime)
        return token, float(lifetime)

    def _get(self, url: str) -> requests.Response:
        token = self.tokens.get()
        response = self.http.request("GET", url, headers={"Authorization": f"Bearer {token}"})
        if response.status_code in (401, 403):
            # Expired or revoked: Routee says to fetch a new token and retry, once.
            self.tokens.invalidate(token)
            token = self.tokens.get()
            response = self.http.request("GET", url, headers={"Authorization": f"Bearer {token}"})
        return response

    def fetch(self, message_id: str) -> Observation:
        response = self._get(f"{self.settings.base_url}/viber/tracking/{message_id}")
        _raise_for_error(response)
        item = _single(json_body(response), message_id)
        return observation(item, self.settings.currency, status_key="status", date_key="date")

    def parse_callback(self, body: bytes, content_type: str) -> list[tuple[str, Observation]]:
        try:
            data = json.loads(body)
        except ValueError as e:
            raise InvalidCallback("body is not JSON") from e
        items = data if isinstance(data, list) else [data]
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise InvalidCallback(f"item {index} is not an object")
            tracking_id = item.get("trackingId")
            if not isinstance(tracking_id, str) or self.check_id(tracking_id):
                raise InvalidCallback(f"item {index} has no valid trackingId")
            try:
                obs = observation(
                    item, self.settings.currency, status_key="name", date_key="updatedDate"
                )
            except FetchError as e:
                raise InvalidCallback(f"item {index}: {e.message}") from e
            reports.append((tracking_id, obs))
        return reports


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(RouteeProvider)

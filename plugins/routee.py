"""Routee's Viber tracking-id API (providers.md §1).

OAuth2 client credentials for a bearer token, reused until about a minute before it
expires and fetched by one thread at a time; ``GET /viber/tracking/{trackingId}``
for each message; Routee's Viber callbacks for pushed reports.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests

from viber_exporter import (
    CallbackRequest,
    ClientCredentials,
    FetchError,
    InvalidCallback,
    Observation,
    Outcome,
    Provider,
    ProviderHttp,
    Report,
    Setting,
    Status,
    StatusMap,
    country,
    field,
    hookimpl,
    invalid,
    iso_time,
    json_body,
    outcome_for_status,
    price,
    retry_after_seconds,
    snake_case,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://connect.routee.net"
DEFAULT_TOKEN_URL = "https://auth.routee.net/oauth/token"  # noqa: S105 (a URL, not a password)
NOT_FOUND_CODE = "404019006"  # "viberTracking was not found"
TRACKING_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

STATUS_MAP = StatusMap(
    {
        "QUEUED": Status.PENDING,
        "DELIVERED": Status.DELIVERED,
        "SEEN": Status.READ,
        "UNDELIVERED": Status.FAILED,
        "FAILED": Status.FAILED,
        "UNSENT": Status.FAILED,
        "EXPIRED": Status.EXPIRED,
    }
)

SETTINGS = (
    Setting("application_id", "string", "Routee application id (OAuth2 client id)."),
    Setting("application_secret", "secret", "Routee application secret (OAuth2 client secret)."),
    Setting(
        "currency",
        "string",
        "Your account's currency, ISO 4217 (Routee prices carry none).",
        pattern=r"[A-Z]{3}",
        hint='must be the account\'s 3-letter ISO 4217 code, e.g. "EUR"',
    ),
    Setting("base_url", "url", "Routee API base URL.", default=DEFAULT_BASE_URL),
    Setting("token_url", "url", "Routee OAuth2 token URL.", default=DEFAULT_TOKEN_URL),
)


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
    # A 404 without Routee's tracking code is a wrong path or base_url (client_error).
    outcome = outcome_for_status(response.status_code)
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
    status = STATUS_MAP.map(raw)
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
    settings_spec = SETTINGS

    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        super().__init__(name, settings, http)
        self.oauth = ClientCredentials(
            http, settings.token_url, settings.application_id, settings.application_secret
        )

    def check_id(self, message_id: str) -> str | None:
        if not TRACKING_ID.fullmatch(message_id):
            return (
                "a Routee tracking id is a UUID like 0a047b46-a4dd-4ca8-b817-a6a134dd1234 "
                "(1 to 64 letters, digits and '-')"
            )
        return None

    def verify(self) -> None:
        self.oauth.token()  # a token answer proves the credentials

    def _get(self, url: str) -> requests.Response:
        return self.oauth.request("GET", url)

    def fetch(self, message_id: str) -> Observation:
        response = self._get(f"{self.settings.base_url}/viber/tracking/{message_id}")
        _raise_for_error(response)
        item = _single(json_body(response), message_id)
        return observation(item, self.settings.currency, status_key="status", date_key="date")

    def parse_callback(self, request: CallbackRequest) -> Sequence[Report]:
        data = request.json()
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
            reports.append(Report(tracking_id, obs))
        return reports


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(RouteeProvider)

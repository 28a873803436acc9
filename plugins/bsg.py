"""BSG's REST API v1 (providers.md §2): one GET per message by id or by reference.

BSG quirks handled here: ``error`` and ``price`` may be numbers or numeric strings;
error 40 means "not found" whether the HTTP status is 200 or 404; times are
``YYYY-MM-DD HH:MM:SS`` without a zone (``timezone`` setting); ``time_dr`` is filled
for expired messages too, so it is a delivery time only for delivered/read; the
response ``id`` is the phone number in BSG's examples, so state is keyed on what was
queried.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from viber_exporter import (
    CallbackRequest,
    ConfigTable,
    Fallback,
    FetchError,
    InvalidCallback,
    Observation,
    Outcome,
    Provider,
    Report,
    Setting,
    Settings,
    Status,
    StatusMap,
    hookimpl,
    integer,
    invalid,
    local_time,
    outcome_for_status,
    price,
    read_settings,
    retry_after_seconds,
    snake_case,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.bsg.world"
ERROR_OK, ERROR_AUTH, ERROR_NOT_FOUND = 0, 1, 40
NUMERIC_ID = re.compile(r"[0-9]{1,20}")
REFERENCE = re.compile(r"[A-Za-z0-9]{1,32}")

_PENDING = ("new", "waiting", "scheduled", "moderation", "accepted", "sending", "sent")
_FAILED = (
    "undeliverable",
    "undelivered",
    "rejected",
    "failed",
    "deleted",
    "not_viber_user",
    "not_service_user",
)
STATUS_MAP = StatusMap(
    {
        **dict.fromkeys(_PENDING, Status.PENDING),
        "delivered": Status.DELIVERED,
        "read": Status.READ,
        "expired": Status.EXPIRED,
        **dict.fromkeys(_FAILED, Status.FAILED),
    }
)

SETTINGS = (
    Setting(
        "api_key", "secret", "BSG API key (X-API-KEY): live_… (test_ keys return random data)."
    ),
    Setting("base_url", "url", "BSG REST API base URL.", default=DEFAULT_BASE_URL),
    Setting(
        "lookup",
        "string",
        'What registrations give: "id" (the numeric id /rest/viber/create returned) or '
        '"reference" (your own 1-32 character reference).',
        default="id",
        choices=("id", "reference"),
    ),
    Setting(
        "timezone",
        "string",
        "IANA zone of BSG's zone-less times.",
        default="UTC",
    ),
)


def _zone(table: ConfigTable, name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        table.problem(
            "timezone", f'must be an IANA time zone name like "UTC" or "Europe/Kyiv", got {name!r}'
        )
        return ZoneInfo("UTC")


def observation(body: Mapping[str, Any], zone: tzinfo) -> Observation:
    """Normalise a successful status answer (or a callback of the same shape)."""
    raw = body.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise invalid("status is missing")
    name = raw.strip().lower()
    status = STATUS_MAP.map(raw)
    time_in = local_time(body.get("time_in"), "time_in", zone)
    time_sent = local_time(body.get("time_sent"), "time_sent", zone)
    # BSG fills time_dr for expired (and unknown) messages too: only a delivery time
    # when the message was in fact delivered or read.
    time_dr = (
        local_time(body.get("time_dr"), "time_dr", zone)
        if status in (Status.DELIVERED, Status.READ)
        else None
    )
    currency = (
        body.get("currency")
        if isinstance(body.get("currency"), str) and body.get("currency")
        else None
    )
    return Observation(
        status=status,
        provider_status=raw.strip(),
        reason=snake_case(name) if status.is_failure or status is Status.UNKNOWN else None,
        sent_at=time_sent or time_in,
        delivered_at=time_dr,
        read_at=time_dr if status is Status.READ else None,
        price=price(body.get("price")),
        currency=currency.upper() if currency else None,
        fallbacks=_fallbacks(body, currency),
    )


def _fallbacks(body: Mapping[str, Any], currency: str | None) -> tuple[Fallback, ...]:
    legs = body.get("alt_route") or body.get("alt_route_messages") or []
    if isinstance(legs, Mapping):
        legs = [legs]
    if not isinstance(legs, list):
        return ()
    result = []
    for leg in legs:
        if not isinstance(leg, Mapping):
            continue
        try:
            leg_price = price(leg.get("price"), "alt_route price")
        except FetchError:
            # BSG's own example shows "price": "string"; a leg we cannot price still counts as a fallback.
            leg_price = None
        leg_currency = leg.get("currency") if isinstance(leg.get("currency"), str) else currency
        status = leg.get("status") if isinstance(leg.get("status"), str) else None
        result.append(
            Fallback("sms", leg_price, leg_currency.upper() if leg_currency else None, status)
        )
    return tuple(result)


def _decode(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _raise_for_error(response: requests.Response, body: Any) -> Mapping[str, Any]:
    """Return the body of a successful answer; raise FetchError for anything else."""
    code = response.status_code
    if code == 429 or code >= 500:
        retry_after = retry_after_seconds(response) if code in (429, 503) else None
        raise FetchError(outcome_for_status(code), f"HTTP {code}", retry_after=retry_after)
    if not isinstance(body, Mapping):
        if code >= 400:
            raise FetchError(
                outcome_for_status(code) if code != 404 else Outcome.CLIENT_ERROR, f"HTTP {code}"
            )
        raise invalid(f"HTTP {code} with a body that is not a JSON object")
    error = body.get("error")
    if error is None:
        if code >= 400:  # e.g. the v1 spec's {code, message} bodies
            outcome = outcome_for_status(code)
            message = str(body.get("message") or "")[:200]
            raise FetchError(
                Outcome.CLIENT_ERROR if outcome is Outcome.NOT_FOUND else outcome,
                f"HTTP {code}: {message}",
            )
        raise invalid("answer has no error field")
    number = integer(error, "error")
    description = str(body.get("errorDescription") or "")[:200]
    if number == ERROR_NOT_FOUND:
        raise FetchError(Outcome.NOT_FOUND, f"message not found (error 40, HTTP {code})")
    if number == ERROR_AUTH:
        raise FetchError(Outcome.AUTH_ERROR, f"invalid API key (error 1): {description}")
    if number != ERROR_OK:
        raise FetchError(Outcome.CLIENT_ERROR, f"error {number}: {description}")
    if code >= 400:
        raise FetchError(outcome_for_status(code), f"HTTP {code} with error 0")
    return body


class BsgProvider(Provider):
    plugin_name = "bsg"
    status_map = STATUS_MAP
    settings_spec = SETTINGS

    @classmethod
    def parse_settings(cls, table: ConfigTable) -> Settings:
        declared = read_settings(cls.settings_spec, table)
        return Settings({**declared, "timezone": _zone(table, declared.timezone)})

    def check_id(self, message_id: str) -> str | None:
        if self.settings.lookup == "reference":
            if not REFERENCE.fullmatch(message_id):
                return 'a BSG reference is 1 to 32 letters and digits (lookup = "reference")'
        elif not NUMERIC_ID.fullmatch(message_id):
            return (
                'a BSG message id is digits only, as returned by /rest/viber/create (lookup = "id")'
            )
        return None

    def _url(self, message_id: str) -> str:
        if self.settings.lookup == "reference":
            return f"{self.settings.base_url}/rest/viber/reference/{message_id}"
        return f"{self.settings.base_url}/rest/viber/{message_id}"

    def fetch(self, message_id: str) -> Observation:
        response = self.http.request(
            "GET",
            self._url(message_id),
            headers={"X-API-KEY": self.settings.api_key.reveal(), "Accept": "application/json"},
        )
        body = _raise_for_error(response, _decode(response))
        return observation(body, self.settings.timezone)

    def parse_callback(self, request: CallbackRequest) -> Sequence[Report]:
        """A delivery report in the status-response shape (an assumption: providers.md §2.8)."""
        data = request.json()
        items = data if isinstance(data, list) else [data]
        key = "reference" if self.settings.lookup == "reference" else "id"
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise InvalidCallback(f"item {index} is not an object")
            message_id = str(item.get(key) or "")
            if self.check_id(message_id):
                raise InvalidCallback(f"item {index} has no valid {key}")
            try:
                reports.append(Report(message_id, observation(item, self.settings.timezone)))
            except FetchError as e:
                raise InvalidCallback(f"item {index}: {e.message}") from e
        return reports


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(BsgProvider)

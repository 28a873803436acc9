"""BSG's REST API v1 (providers.md §2): one GET per message by id or by reference.

BSG quirks handled here: ``error`` and ``price`` may be numbers or numeric strings (an
answer without ``error`` is read by its HTTP status); error 40 means "not found" whether
the HTTP status is 200 or 404; times are ``YYYY-MM-DD HH:MM:SS`` without a zone
(``timezone`` setting); ``time_dr`` is the delivery time, filled for expired messages
too, so it is a delivery time only for delivered/read, and never a read time (BSG has
none: a read counts at the poll that first saw it, an upper bound); the response ``id``
is the phone number in BSG's examples, so state is keyed on what was queried.
An SMS fallback (``alt_route``) counts once its leg was sent, and its outcome once it
settles. Credentials and the balance come from ``GET /rest/common/balance``.

Campaigns come from the One-API v2 (providers.md §2.9): ``GET /api/messages`` filtered
by ``campaign_id``, 500 a page, with a bearer token from ``POST /api/auth/login``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import tzinfo
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from viber_exporter import (
    Balance,
    CallbackRequest,
    ConfigTable,
    Fallback,
    FetchError,
    InvalidCallback,
    Lenient,
    Observation,
    Outcome,
    Page,
    Provider,
    ProviderHttp,
    Report,
    Secret,
    Setting,
    Settings,
    Status,
    StatusMap,
    TokenCache,
    field,
    hookimpl,
    integer,
    invalid,
    outcome_for_status,
    read_settings,
    redact,
    retry_after_seconds,
    snake_case,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.bsg.world"
DEFAULT_ONE_API_URL = "https://one-api.bsg.world"
ONE_API_PAGE = 500  # the largest page[limit] the One-API accepts (15-500)
ONE_API_TOKEN_LIFETIME = 24 * 3600.0  # BSG's JWT lives 30 days; ask again daily
MAX_CAMPAIGN_PAGES = 10_000
NUMERIC_ID = re.compile(r"[0-9]{1,20}")
# BSG's prose says a reference is letters and digits, but every one of its examples
# (and its Node.js SDK's tests against the live API) use "ext_id_19": accept what its
# examples use, any printable character but "/" and whitespace, and let BSG's answer
# (error 47, "invalid reference") decide the rest.
REFERENCE = re.compile(r"[!-.0-~]{1,32}")

# BSG's error codes (providers.md §2.6) and what each says about the call.
ERROR_OK, ERROR_NOT_FOUND = 0, 40
# Errors 2 and 3 are "user blocked" and "not enough parameters" on one of BSG's errors
# pages and the other way round on the other (providers.md §2.6): neither says for
# sure that the account is blocked, so each is a per-request client error, never a
# pause of the whole instance; a blocked account also fails the balance check.
ERRORS: Mapping[int, tuple[Outcome, bool, str]] = {  # code → (outcome, provider-wide, meaning)
    1: (Outcome.AUTH_ERROR, True, "invalid API key"),
    2: (
        Outcome.CLIENT_ERROR,
        False,
        "user blocked, or not enough parameters (BSG's pages disagree)",
    ),
    3: (
        Outcome.CLIENT_ERROR,
        False,
        "not enough parameters, or user blocked (BSG's pages disagree)",
    ),
    4: (Outcome.CLIENT_ERROR, True, "no such method: check the instance's base_url"),
    5: (Outcome.SERVER_ERROR, True, "unknown error at BSG"),
    11: (Outcome.RATE_LIMITED, True, "too many requests"),
    47: (Outcome.CLIENT_ERROR, False, "invalid reference"),
}

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
# A fallback leg in one of these states has not gone out (yet, or ever).
_LEG_NOT_SENT = frozenset(
    {"new", "waiting", "scheduled", "moderation", "accepted", "sending", "rejected", "deleted"}
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
    Setting("timezone", "string", "IANA zone of BSG's zone-less times.", default="UTC"),
    Setting(
        "one_api_url",
        "url",
        "BSG One-API v2 base URL, for campaigns (GET /api/messages, 500 a page).",
        default=DEFAULT_ONE_API_URL,
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
    """Normalise a successful status answer (or a callback of the same shape).

    Only the status must be readable; an optional field that is not (a time with an
    offset, a price with a decimal comma) is repaired or dropped and named in
    ``problems``.
    """
    raw = body.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise invalid("status is missing")
    status = STATUS_MAP.map(raw)
    fields = Lenient()
    time_in = fields.time(body.get("time_in"), "time_in", zone)
    time_sent = fields.time(body.get("time_sent"), "time_sent", zone)
    # time_dr is filled for expired (and unknown) messages too: a delivery time only
    # when the message was in fact delivered or read.
    delivered = status in (Status.DELIVERED, Status.READ)
    time_dr = fields.time(body.get("time_dr"), "time_dr", zone) if delivered else None
    currency = body.get("currency") if isinstance(body.get("currency"), str) else None
    currency = currency.strip().upper() or None if currency else None
    return Observation(
        status=status,
        provider_status=raw.strip(),
        reason=snake_case(raw) if status.is_failure or status is Status.UNKNOWN else None,
        sent_at=time_sent or time_in,
        delivered_at=time_dr,
        read_at=None,  # BSG has no read time: the core uses the poll (or report) that saw it
        price=fields.price(body.get("price")),
        currency=currency,
        fallbacks=_fallbacks(body, currency, fields),
        problems=tuple(fields.problems),
    )


def _fallbacks(
    body: Mapping[str, Any], currency: str | None, fields: Lenient
) -> tuple[Fallback, ...]:
    legs = body.get("alt_route") or body.get("alt_route_messages") or []
    if isinstance(legs, Mapping):
        legs = [legs]
    if not isinstance(legs, list):
        return ()
    result = []
    for leg in legs:
        if not isinstance(leg, Mapping):
            continue
        raw = leg.get("status") if isinstance(leg.get("status"), str) else None
        sent = raw is not None and raw.strip().lower() not in _LEG_NOT_SENT
        # BSG's own example shows "price": "string": a leg we cannot price still counts.
        leg_price = fields.price(leg.get("price"), "alt_route.price") if sent else None
        leg_currency = leg.get("currency") if isinstance(leg.get("currency"), str) else currency
        channel = leg.get("channel")
        result.append(
            Fallback(
                channel=snake_case(channel, 16) if isinstance(channel, str) else "sms",
                price=leg_price,
                currency=leg_currency.upper() if leg_currency else None,
                status=raw,
                outcome=STATUS_MAP.map(raw) if raw else None,
                sent=sent,
            )
        )
    return tuple(result)


def _decode(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):
        return None


#: On the balance check, which takes no parameters, errors 2 and 3 can only mean that
#: the account is blocked: a failure of the whole instance.
ACCOUNT_ERRORS: Mapping[int, tuple[Outcome, bool, str]] = {
    2: (Outcome.AUTH_ERROR, True, "the account is blocked"),
    3: (Outcome.AUTH_ERROR, True, "the account is blocked"),
}


def _raise_for_error(
    response: requests.Response, body: Any, *, account: bool = False
) -> Mapping[str, Any]:
    """Return the body of a successful answer; raise FetchError for anything else.
    ``account``: the balance check, where errors 2 and 3 mean a blocked account."""
    code = response.status_code
    if code == 429 or code >= 500:
        retry_after = retry_after_seconds(response) if code in (429, 503) else None
        raise FetchError(outcome_for_status(code), f"HTTP {code}", retry_after=retry_after)
    if not isinstance(body, Mapping):
        if code == 404 and not response.content.strip():
            # An empty 404 is BSG's "no such message" on some paths (v1 spec).
            raise FetchError(Outcome.NOT_FOUND, "message not found (HTTP 404)")
        if code >= 400:
            # Not JSON at all: a web server's page, usually a wrong base_url.
            raise FetchError(
                outcome_for_status(code),
                f"HTTP {code} with a body that is not JSON: check the instance's base_url",
                provider_wide=code == 404,
            )
        raise invalid(f"HTTP {code} with a body that is not a JSON object")
    error = body.get("error")
    if error is None:
        # Every answer BSG documents or that was captured from it carries "error" (an
        # integer in old samples, a string in current ones); one without it is read
        # by its HTTP status (the v1 spec's {code, message} error bodies have none).
        if code == 404:
            raise FetchError(Outcome.NOT_FOUND, "message not found (HTTP 404)")
        if code >= 400:  # e.g. the v1 spec's {code, message} bodies
            message = redact(str(body.get("message") or ""))[:200]
            raise FetchError(outcome_for_status(code), f"HTTP {code}: {message}")
        return body
    number = integer(error, "error")
    if number == ERROR_NOT_FOUND:
        raise FetchError(Outcome.NOT_FOUND, f"message not found (error 40, HTTP {code})")
    known = {**ERRORS, **ACCOUNT_ERRORS} if account else ERRORS
    if number in known:
        outcome, wide, meaning = known[number]
        raise FetchError(outcome, f"error {number}: {meaning}", provider_wide=wide)
    if number != ERROR_OK:
        description = redact(str(body.get("errorDescription") or ""))[:200]
        raise FetchError(Outcome.CLIENT_ERROR, f"error {number}: {description}")
    if code >= 400:
        raise FetchError(outcome_for_status(code), f"HTTP {code} with error 0")
    return body


class BsgProvider(Provider):
    plugin_name = "bsg"
    status_map = STATUS_MAP
    settings_spec = SETTINGS
    # BSG's raw statuses about the recipient; rejected, failed and deleted are BSG's or
    # the sender's side.
    recipient_reasons = frozenset(
        {"not_viber_user", "not_service_user", "undeliverable", "undelivered", "expired"}
    )

    @classmethod
    def parse_settings(cls, table: ConfigTable) -> Settings:
        declared = read_settings(cls.settings_spec, table)
        return Settings({**declared, "timezone": _zone(table, declared.timezone)})

    def start(self) -> None:
        key = self.settings.api_key.reveal()
        if key.startswith("test_"):
            log.warning(
                "provider %s uses a BSG test_ key: BSG answers it with random data, so the "
                "metrics of this instance do not describe real messages",
                self.name,
            )

    def check_id(self, message_id: str) -> str | None:
        if self.settings.lookup == "reference":
            if not REFERENCE.fullmatch(message_id):
                return (
                    "a BSG reference is 1 to 32 characters without spaces or '/', e.g. "
                    'ext_id_19 (lookup = "reference")'
                )
        elif not NUMERIC_ID.fullmatch(message_id):
            return (
                'a BSG message id is digits only, as returned by /rest/viber/create (lookup = "id")'
            )
        return None

    def _get(self, path: str) -> requests.Response:
        return self.http.request(
            "GET",
            f"{self.settings.base_url}{path}",
            headers={"X-API-KEY": self.settings.api_key.reveal(), "Accept": "application/json"},
        )

    def fetch(self, message_id: str) -> Observation:
        path = (
            f"/rest/viber/reference/{quote(message_id, safe='')}"
            if self.settings.lookup == "reference"
            else f"/rest/viber/{message_id}"
        )
        response = self._get(path)
        body = _raise_for_error(response, _decode(response))
        return observation(body, self.settings.timezone)

    # -- campaigns (One-API v2) ----------------------------------------------------------
    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        super().__init__(name, settings, http)
        self._bearer = TokenCache(self._login, http.clock)

    def _login(self) -> tuple[Secret, float]:
        """``POST /api/auth/login {"api_key"}`` → ``{"bearer": JWT}``."""
        response = self.http.request(
            "POST",
            f"{self.settings.one_api_url}/api/auth/login",
            json={"api_key": self.settings.api_key.reveal()},
            headers={"Accept": "application/json"},
        )
        body = _one_api_answer(response)
        token = body.get("bearer")
        if not isinstance(token, str) or not token:
            raise invalid("the One-API login answer has no bearer token")
        return Secret(token), ONE_API_TOKEN_LIFETIME

    def check_campaign(self, campaign_id: str) -> str | None:
        if not NUMERIC_ID.fullmatch(campaign_id):
            return "a BSG campaign id is digits only (One-API campaign_id)"
        return None

    def fetch_campaign(self, campaign_id: str) -> Iterator[Page]:
        """``GET /api/messages?filter[campaign_id]=…&page[limit]=500&page[offset]=…``:
        the campaign's Viber messages, keyed on their ``id``. Messages of other types
        in the campaign are left out of the pages, and out of their totals."""
        offset = skipped = 0
        for _ in range(MAX_CAMPAIGN_PAGES):
            params = {
                "filter[campaign_id]": campaign_id,
                "page[limit]": str(ONE_API_PAGE),
                "page[offset]": str(offset),
                "sort": "id",
            }
            response = self._one_api_get("/api/messages", params)
            body = _one_api_answer(response)
            data = body.get("data")
            if not isinstance(data, list):
                raise invalid("the One-API messages answer has no data list")
            reports = []
            for item in data:
                if not isinstance(item, Mapping) or item.get("type") != "viber":
                    skipped += 1
                    continue
                message_id = item.get("id")
                if isinstance(message_id, int) and not isinstance(message_id, bool):
                    message_id = str(message_id)
                if not isinstance(message_id, str) or not NUMERIC_ID.fullmatch(message_id):
                    continue  # cannot be keyed: the sweep counts as incomplete
                try:
                    obs = one_api_observation(item, self.settings.timezone)
                except FetchError:
                    continue
                reports.append(Report(message_id, obs))
            total = field(body, "meta", "page", "total")
            known = isinstance(total, int) and not isinstance(total, bool) and total >= 0
            yield Page(reports, total - skipped if known else None)
            offset += len(data)
            if not data or (known and offset >= total):
                return

    def _one_api_get(self, path: str, params: Mapping[str, str]) -> requests.Response:
        """A GET with the bearer token; once more with a new token after a 401."""
        token = self._bearer.get()
        response = self._one_api_request(path, params, token)
        if response.status_code == 401:
            self._bearer.invalidate(token)
            response = self._one_api_request(path, params, self._bearer.get())
        return response

    def _one_api_request(
        self, path: str, params: Mapping[str, str], token: Secret
    ) -> requests.Response:
        return self.http.request(
            "GET",
            f"{self.settings.one_api_url}{path}",
            params=dict(params),
            headers={"Authorization": f"Bearer {token.reveal()}", "Accept": "application/json"},
        )

    def verify(self) -> Balance | None:
        """``GET /rest/common/balance``: proves the key, and gives the balance."""
        response = self._get("/rest/common/balance")
        body = _raise_for_error(response, _decode(response), account=True)
        amount = _number(body.get("amount"))  # a string, and negative on credit: "-4.09"
        currency = body.get("currency")
        if amount is None or not isinstance(currency, str) or not currency:
            return None
        return Balance(amount, currency.upper())

    def parse_callback(self, request: CallbackRequest) -> Sequence[Report]:
        """A delivery report in the status-response shape (an assumption: providers.md §2.8).

        Keyed on what identifies the message: the reference with ``lookup =
        "reference"``, else the BSG message id — never the phone number, which BSG's
        examples put in ``id``. A report that cannot be matched is refused.
        """
        data = request.json()
        items = data if isinstance(data, list) else [data]
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise InvalidCallback(f"item {index} is not an object")
            message_id = self._callback_key(item, index)
            try:
                reports.append(Report(message_id, observation(item, self.settings.timezone)))
            except FetchError as e:
                raise InvalidCallback(f"item {index}: {e.message}") from e
        return reports

    def _callback_key(self, item: Mapping[str, Any], index: int) -> str:
        if self.settings.lookup == "reference":
            key = str(item.get("reference") or "")
            if self.check_id(key):
                raise InvalidCallback(f"item {index} has no valid reference")
            return key
        key = str(item.get("id") or "")
        phone = str(item.get("msisdn") or "")
        if not key or key == phone:
            raise InvalidCallback(
                f"item {index} cannot be matched to a message: its id is the phone number, "
                'not a BSG message id (register by reference and set lookup = "reference")'
            )
        if self.check_id(key):
            raise InvalidCallback(f"item {index} has no valid id")
        return key


def one_api_observation(item: Mapping[str, Any], zone: tzinfo) -> Observation:
    """A One-API v2 message: ``status``, ``amount{value, currency}``, ``created_at``,
    ``sent_at``, ``delivered_at`` (zone-less, as v1's times), ``country``."""
    raw = item.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise invalid("status is missing")
    status = STATUS_MAP.map(raw)
    fields = Lenient()
    delivered = status in (Status.DELIVERED, Status.READ)
    given = item.get("amount")
    amount: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    currency = amount.get("currency") if isinstance(amount.get("currency"), str) else None
    country = item.get("country")
    return Observation(
        status=status,
        provider_status=raw.strip(),
        reason=snake_case(raw) if status.is_failure or status is Status.UNKNOWN else None,
        sent_at=fields.time(item.get("sent_at"), "sent_at", zone)
        or fields.time(item.get("created_at"), "created_at", zone),
        delivered_at=fields.time(item.get("delivered_at"), "delivered_at", zone)
        if delivered
        else None,
        price=fields.price(amount.get("value")),
        currency=currency.strip().upper() or None if currency else None,
        country=country.strip().upper()
        if isinstance(country, str) and re.fullmatch(r"\s*[A-Za-z]{2}\s*", country)
        else None,
        problems=tuple(fields.problems),
    )


def _one_api_answer(response: requests.Response) -> Mapping[str, Any]:
    """The JSON object of a One-API answer, or FetchError: 401/403 auth, 429 (also its
    "Too many duplicate request detected"), 5xx, a body that is not an object."""
    if response.status_code >= 400:
        outcome = outcome_for_status(response.status_code)
        retry_after = retry_after_seconds(response) if response.status_code in (429, 503) else None
        detail = ""
        try:
            body = json.loads(response.content)
            if isinstance(body, Mapping):
                detail = str(body.get("message") or body.get("error") or "")
        except (ValueError, RecursionError):
            pass
        if response.status_code == 404:
            detail = detail or "check the instance's one_api_url"
        message = f"One-API HTTP {response.status_code}" + (
            f": {redact(detail)[:300]}" if detail else ""
        )
        raise FetchError(outcome, message, retry_after=retry_after)
    body = _decode(response)
    if not isinstance(body, Mapping):
        raise invalid("the One-API answer is not a JSON object")
    return body


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(str(value).strip().replace(",", "."))
    except ValueError:
        return None


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(BsgProvider)

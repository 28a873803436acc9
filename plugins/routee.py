"""Routee's Viber tracking-id API (providers.md §1).

OAuth2 client credentials for a bearer token (``ClientCredentials``: one token per
instance, refreshed before it expires, replaced once on a 401/403);
``GET /viber/tracking/{trackingId}`` for each message, or, for a message sent in a
Viber→SMS failover flow and registered with ``"fields": {"tracking": "failover"}``,
``GET /failover/tracking/{trackingId}`` with both legs; Routee's Viber callbacks for
pushed reports; ``GET /accounts/me/balance`` for the credentials check, the balance and
(when ``currency`` is not set) the account's currency.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pycountry
import requests

from viber_exporter import (
    Balance,
    CallbackRequest,
    ClientCredentials,
    Fallback,
    FetchError,
    InvalidCallback,
    Lenient,
    MessageRef,
    Observation,
    Outcome,
    Page,
    Provider,
    ProviderHttp,
    Report,
    Setting,
    Status,
    StatusMap,
    field,
    hookimpl,
    invalid,
    json_body,
    outcome_for_status,
    redact,
    retry_after_seconds,
    snake_case,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://connect.routee.net"
DEFAULT_TOKEN_URL = "https://auth.routee.net/oauth/token"  # noqa: S105 (a URL, not a password)
NOT_FOUND_CODE = "404019006"  # "viberTracking was not found"
TRACKING_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
FAILOVER = "failover"  # the registration field tracking = "failover"
CURRENCY_RETRY = 60.0  # seconds between asks for the account currency while it is unknown

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
# The SMS leg of a failover flow (Routee's SMS statuses, any case).
SMS_STATUS_MAP = StatusMap(
    {
        "Queued": Status.PENDING,
        "Sent": Status.PENDING,
        "Delivered": Status.DELIVERED,
        "Undelivered": Status.FAILED,
        "Failed": Status.FAILED,
        "Unsent": Status.FAILED,
        "Network Error": Status.FAILED,  # in Routee's SMS callbacks and failover legs
        "Expired": Status.EXPIRED,
    }
)
_SMS_NOT_SENT = frozenset({"queued", "failed", "unsent"})

SETTINGS = (
    Setting("application_id", "string", "Routee application id (OAuth2 client id)."),
    Setting("application_secret", "secret", "Routee application secret (OAuth2 client secret)."),
    Setting(
        "currency",
        "string",
        "Your account's currency, ISO 4217 (Routee prices carry none); empty: the one "
        "GET /accounts/me/balance reports.",
        default="",
        pattern=r"([A-Z]{3})?",
        hint='must be the account\'s 3-letter ISO 4217 code, e.g. "EUR"',
    ),
    Setting("base_url", "url", "Routee API base URL.", default=DEFAULT_BASE_URL),
    Setting("token_url", "url", "Routee OAuth2 token URL.", default=DEFAULT_TOKEN_URL),
    Setting(
        "campaign_page_size",
        "integer",
        "Messages asked for per page of a campaign's tracking (Routee documents no "
        "maximum; a smaller page served is followed through totalPages).",
        default=1000,
        minimum=1,
        maximum=10000,
    ),
)
MAX_CAMPAIGN_PAGES = 10_000  # a safety stop for an answer that never says "last"


def _error_detail(response: requests.Response) -> tuple[str, str]:
    """Routee's error body ``{code, developerMessage}``, as far as it can be read."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    message = body.get("developerMessage") or body.get("error_description") or ""
    return str(body.get("code") or ""), redact(str(message))[:300]


def _raise_for_error(response: requests.Response, not_found_what: str = "tracking id") -> None:
    if response.status_code < 400:
        return
    code, message = _error_detail(response)
    if response.status_code == 404 and code.startswith("404"):
        raise FetchError(Outcome.NOT_FOUND, f"{not_found_what} not found ({code})")
    # A 404 without Routee's own code is a wrong path or base_url: the instance's problem.
    outcome = outcome_for_status(response.status_code)
    detail = (
        f"HTTP {response.status_code}"
        + (f" code {code}" if code else "")
        + (f": {message}" if message else "")
    )
    if response.status_code == 404:
        detail += " (check the instance's base_url)"
    retry_after = retry_after_seconds(response) if response.status_code in (429, 503) else None
    raise FetchError(
        outcome, detail, retry_after=retry_after, provider_wide=response.status_code == 404 or None
    )


def _single(data: Any, tracking_id: str) -> Mapping[str, Any]:
    """The message from a bare object, a list, or a Spring-style page."""
    if isinstance(data, Mapping) and isinstance(data.get("content"), list):
        data = data["content"]
    if isinstance(data, list):
        items = [item for item in data if isinstance(item, Mapping)]
        if not items:
            raise FetchError(Outcome.NOT_FOUND, "empty tracking answer")
        mine = [item for item in items if item.get("trackingId") == tracking_id]
        if not mine:
            # Never another message's status and price.
            raise invalid(f"the tracking answer lists {len(items)} item(s), none for this id")
        return mine[0]
    if isinstance(data, Mapping):
        answered = data.get("trackingId")
        if isinstance(answered, str) and answered and answered != tracking_id:
            raise invalid("the tracking answer is about another trackingId")
        return data
    raise invalid("tracking answer is neither an object nor a list")


@functools.lru_cache(maxsize=512)
def country_code(value: str) -> str | None:
    """Routee documents ``country`` as the country *name*: its ISO 3166 alpha-2 code
    (codes are passed through), None when unknown. Cached: a bounded set of names."""
    text = value.strip()
    if 2 <= len(text) <= 3 and text.isalpha():
        return text.upper()
    try:
        return str(pycountry.countries.lookup(text).alpha_2)
    except LookupError:
        pass
    try:
        matches = pycountry.countries.search_fuzzy(text)
    except LookupError:
        return None
    return str(matches[0].alpha_2) if len(matches) == 1 else None


def _status_text(item: Mapping[str, Any]) -> str | None:
    """The status of a tracking item (``status.status``), a callback or failover leg
    (``status.name``), or a leg of the older failover pages (``status.status``); a bare
    string ``status`` too."""
    value = item.get("status")
    if isinstance(value, Mapping):
        value = value.get("name") if value.get("name") is not None else value.get("status")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _status_date(item: Mapping[str, Any]) -> Any:
    """``status.date`` (tracking, older failover pages) or ``status.updatedDate``."""
    value = item.get("status")
    if not isinstance(value, Mapping):
        return None
    return value.get("updatedDate") if value.get("updatedDate") is not None else value.get("date")


def observation(
    item: Mapping[str, Any], currency: str | None, *, ttl_unit: float = 1.0
) -> Observation:
    """Normalise a tracking item, a callback, or the Viber leg of a failover flow.

    ``ttl_unit`` is the unit of the item's ``ttl`` in seconds: seconds on Viber sends
    and their tracking, minutes on failover flows (providers.md §1.5).
    """
    raw = _status_text(item)
    if raw is None:
        raise invalid("status is missing (status.status or status.name)")
    status = STATUS_MAP.map(raw)
    fields = Lenient()
    detailed = field(item, "status", "reason", "detailedStatus")
    reason = None
    if status.is_failure or status is Status.UNKNOWN:
        reason = snake_case(detailed if isinstance(detailed, str) and detailed.strip() else raw)
    when = fields.time(_status_date(item), "status.date")
    settled = False
    expired_on_delivery = item.get("expiredOnDeliveryAt") or field(
        item, "status", "expiredOnDeliveryAt"
    )
    if status is Status.EXPIRED and expired_on_delivery:
        # expireOnDelivery: delivered, then the TTL passed with no SEEN. A delivered
        # message, not a failure; the provider status stays visible.
        status, reason, settled = Status.DELIVERED, None, True
    name = item.get("country")
    # The send time: createdAt where the answer has it (callbacks, failover legs), else
    # the date of a pending status (QUEUED is dated when the message was queued, which
    # for a campaign's message is when Routee sent it, not when the campaign began).
    sent_at = fields.time(item.get("createdAt"), "createdAt")
    if sent_at is None and status is Status.PENDING:
        sent_at = when
    return Observation(
        status=status,
        provider_status=raw,
        reason=reason,
        sent_at=sent_at,
        delivered_at=when if status is Status.DELIVERED and not settled else None,
        read_at=when if status is Status.READ else None,
        price=fields.price(item.get("price")),
        currency=currency,
        country=country_code(name) if isinstance(name, str) and name.strip() else None,
        settled=settled,
        problems=tuple(fields.problems),
        ttl=_ttl(item.get("ttl"), ttl_unit),
    )


def _ttl(value: Any, unit: float) -> float | None:
    """A positive ``ttl`` (a number or numeric string) in seconds; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * unit if math.isfinite(number) and number > 0 else None


def sms_leg(item: Mapping[str, Any], currency: str | None, fields: Lenient) -> Fallback:
    """The SMS message of a failover flow, as a fallback leg."""
    raw = _status_text(item)
    sent = raw is not None and raw.lower() not in _SMS_NOT_SENT
    return Fallback(
        channel="sms",
        price=fields.price(item.get("price"), "messages.price") if sent else None,
        currency=currency,
        status=raw,
        outcome=SMS_STATUS_MAP.map(raw) if raw else None,
        sent=sent,
    )


def flow_observation(flow: Mapping[str, Any], currency: str | None) -> Observation:
    """A Viber→SMS failover flow (``GET /failover/tracking/{id}``, or the failover
    callback): the Viber leg's status, time and price, the SMS legs as fallbacks, and
    the flow's ``totalPrice`` checked against the legs' prices (an inconsistency when
    they disagree: the legs are counted, being what each channel cost)."""
    messages = field(flow, "messages")
    if not isinstance(messages, list):
        raise invalid("the failover flow has no messages list")
    legs = [m for m in messages if isinstance(m, Mapping)]
    viber = next((m for m in legs if str(m.get("type") or "").lower() == "viber"), None)
    if viber is None:
        raise invalid("the failover flow has no Viber message")
    main = observation(viber, currency, ttl_unit=60.0)  # failover ttl: minutes
    fields = Lenient()
    sms = tuple(
        sms_leg(m, currency, fields) for m in legs if str(m.get("type") or "").lower() == "sms"
    )
    inconsistent: tuple[str, ...] = ()
    total = flow.get("totalPrice")
    if isinstance(total, int | float) and not isinstance(total, bool):
        paid = (main.price or 0.0) + sum(leg.price or 0.0 for leg in sms)
        if abs(paid - float(total)) > 1e-6:
            inconsistent = ("totalPrice",)
    return replace(
        main,
        fallbacks=sms,
        problems=main.problems + tuple(fields.problems),
        inconsistencies=inconsistent,
        fields={"tracking": FAILOVER},
    )


class RouteeProvider(Provider):
    plugin_name = "routee"
    status_map = STATUS_MAP
    settings_spec = SETTINGS
    # Routee's detailedStatus values about the recipient (providers.md §1.3); the others
    # (System Failure, Message Rejected, and UNSENT's insufficient balance) are Routee's
    # or the sender's side.
    recipient_reasons = frozenset(
        {"not_viber_user", "opted_out", "unsupported_equipment", "ttl_expired", "timed_out"}
    )

    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        super().__init__(name, settings, http)
        self.oauth = ClientCredentials(
            http, settings.token_url, settings.application_id, settings.application_secret
        )
        self._account_currency: str | None = None
        self._currency_asked = float("-inf")
        self._lock = threading.Lock()

    def check_id(self, message_id: str) -> str | None:
        if not TRACKING_ID.fullmatch(message_id):
            return (
                "a Routee tracking id is a UUID like 0a047b46-a4dd-4ca8-b817-a6a134dd1234 "
                "(1 to 64 letters, digits and '-')"
            )
        return None

    def check_fields(self, fields: Mapping[str, Any]) -> str | None:
        if dict(fields) in ({}, {"tracking": FAILOVER}):
            return None
        return 'the only field is "tracking": "failover" (a Viber→SMS failover flow\'s tracking id)'

    # -- the account --------------------------------------------------------------------
    def verify(self) -> Balance | None:
        """A token proves the credentials; the balance gives the account currency."""
        response = self.oauth.request("GET", f"{self.settings.base_url}/accounts/me/balance")
        _raise_for_error(response)
        body = json_body(response)
        amount = field(body, "balance")
        code = field(body, "currency", "code")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise invalid("the balance answer has no balance")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{3}", code):
            raise invalid("the balance answer has no currency code")
        with self._lock:
            self._account_currency = code.upper()
        return Balance(float(amount), code.upper())

    def currency(self) -> str | None:
        """The configured currency, else the account's (asked once)."""
        if self.settings.currency:
            return str(self.settings.currency)
        with self._lock:
            known = self._account_currency
            now = self.http.clock.monotonic()
            ask = known is None and now - self._currency_asked >= CURRENCY_RETRY
            if ask:
                self._currency_asked = now
        if ask:
            try:
                self.verify()
            except FetchError as e:
                log.warning("provider %s: account currency unknown: %s", self.name, e.message)
            with self._lock:
                known = self._account_currency
        return known

    # -- lookups --------------------------------------------------------------------------
    def fetch(self, message_id: str) -> Observation:
        return self.fetch_message(MessageRef(message_id))

    def fetch_message(self, message: MessageRef) -> Observation:
        if message.fields.get("tracking") == FAILOVER:
            return self._fetch_failover(message.id)
        response = self.oauth.request(
            "GET", f"{self.settings.base_url}/viber/tracking/{message.id}"
        )
        _raise_for_error(response)
        item = _single(json_body(response), message.id)
        return observation(item, self.currency())

    # -- campaigns ------------------------------------------------------------------------
    def check_campaign(self, campaign_id: str) -> str | None:
        if not TRACKING_ID.fullmatch(campaign_id):
            return "a Routee campaign tracking id is a UUID (1 to 64 letters, digits and '-')"
        return None

    def fetch_campaign(self, campaign_id: str) -> Iterator[Page]:
        """``GET /viber/tracking/campaign/{id}?page=&size=``, page by page (Spring pages:
        ``content``, ``totalElements``, ``totalPages``, ``last``)."""
        url = f"{self.settings.base_url}/viber/tracking/campaign/{campaign_id}"
        size = int(self.settings.campaign_page_size)
        currency = self.currency()
        for number in range(MAX_CAMPAIGN_PAGES):
            response = self.oauth.request("GET", url, params={"page": number, "size": size})
            _raise_for_error(response, not_found_what="campaign")
            body = json_body(response)
            content = body.get("content") if isinstance(body, Mapping) else None
            if not isinstance(content, list):
                raise invalid("the campaign answer is not a page (no content list)")
            reports = []
            for item in content:
                tracking_id = item.get("trackingId") if isinstance(item, Mapping) else None
                if not isinstance(tracking_id, str) or self.check_id(tracking_id):
                    continue  # not an item we can key: the sweep counts as incomplete
                try:
                    obs = observation(item, currency)
                except FetchError:
                    continue  # an unreadable item: likewise, the others still count
                reports.append(Report(tracking_id, obs))
            total = body.get("totalElements")
            yield Page(reports, total if isinstance(total, int) and total >= 0 else None)
            pages = body.get("totalPages")
            if (
                body.get("last") is True
                or not content
                or (isinstance(pages, int) and number + 1 >= pages)
            ):
                return

    def _fetch_failover(self, tracking_id: str) -> Observation:
        """``GET /failover/tracking/{id}``: the Viber message and its SMS fallback."""
        response = self.oauth.request(
            "GET", f"{self.settings.base_url}/failover/tracking/{tracking_id}"
        )
        _raise_for_error(response)
        return flow_observation(json_body(response), self.currency())

    # -- pushed reports ---------------------------------------------------------------
    def parse_callback(self, request: CallbackRequest) -> Sequence[Report]:
        data = request.json()
        items = data if isinstance(data, list) else [data]
        currency = self.currency()
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise InvalidCallback(f"item {index} is not an object")
            tracking_id = item.get("trackingId")
            if not isinstance(tracking_id, str) or self.check_id(tracking_id):
                raise InvalidCallback(f"item {index} has no valid trackingId")
            try:
                # A failover flow's report (messages[], one per leg) is keyed on the
                # flow's trackingId, the one GET /failover/tracking/{id} answers for.
                flow = isinstance(item.get("messages"), list)
                obs = flow_observation(item, currency) if flow else observation(item, currency)
            except FetchError as e:
                raise InvalidCallback(f"item {index}: {e.message}") from e
            reports.append(Report(tracking_id, obs))
        return reports


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(RouteeProvider)

"""viber-exporter plugin for Heron, a fictional feed-style CPaaS provider.

``GET {base_url}/v1/reports?limit=1000`` with ``Authorization: App <api_key>`` answers
the reports that arrived since the previous call, each once::

    {"results": [{"messageId": "…", "sentAt": "…", "doneAt": "…",
                  "status": {"groupName": "DELIVERED", "name": "DELIVERED_TO_HANDSET"},
                  "error": {"name": "NO_ERROR"}, "price": {"pricePerMessage": 0.012, "currency": "EUR"}}]}

``GET {base_url}/v1/account/balance`` answers ``{"balance": 41.5, "currency": "EUR"}``.
There is no per-message lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from viber_exporter import (
    BadReport,
    Balance,
    FetchError,
    Observation,
    Provider,
    ProviderHttp,
    Report,
    Setting,
    Status,
    StatusMap,
    field,
    hookimpl,
    invalid,
    iso_time,
    json_body,
    price,
    raise_for_status,
)

STATUS_MAP = StatusMap({
    "PENDING": Status.PENDING, "DELIVERED": Status.DELIVERED, "SEEN": Status.READ,
    "UNDELIVERABLE": Status.FAILED, "REJECTED": Status.FAILED, "EXPIRED": Status.EXPIRED,
})
PAGE = 1000


class HeronProvider(Provider):
    """No lookup (no fetch): the feed (drain) is the only source."""

    plugin_name = "heron"
    status_map = STATUS_MAP
    settings_spec = (
        Setting("api_key", "secret", "Heron API key."),
        Setting("base_url", "url", "Heron API base URL.", default="https://api.heron.example"),
        Setting("interval", "duration", "How often to ask for new reports.", default="30s"),
    )

    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        super().__init__(name, settings, http)
        self.drain_interval = settings.interval  # per instance, from the config

    def _get(self, path: str) -> Any:
        auth = {"Authorization": f"App {self.settings.api_key.reveal()}"}
        response = self.http.request("GET", f"{self.settings.base_url}{path}", headers=auth)
        raise_for_status(response)
        return json_body(response)

    def verify(self) -> Balance:
        body = self._get("/v1/account/balance")
        amount, currency = price(field(body, "balance"), "balance"), field(body, "currency")
        if amount is None or not isinstance(currency, str):
            raise invalid("balance answer has no balance or currency")
        return Balance(amount, currency)

    def drain(self) -> list[Report | BadReport]:
        results = field(self._get(f"/v1/reports?limit={PAGE}"), "results")
        if not isinstance(results, list):
            raise invalid("reports answer has no results list")
        return [report(index, item) for index, item in enumerate(results)]


def report(index: int, item: Any) -> Report | BadReport:
    """One report of the feed; one it cannot read is a BadReport, so the others still
    count (the feed hands each out once)."""
    message_id, group = field(item, "messageId"), field(item, "status", "groupName")
    if not isinstance(message_id, str) or not isinstance(group, str):
        return BadReport(f"report {index} has no messageId or status.groupName")
    try:
        return Report(message_id, Observation(
            status=STATUS_MAP.map(group),
            provider_status=str(field(item, "status", "name") or group),
            reason=field(item, "error", "name") or group,
            at=iso_time(item.get("doneAt"), "doneAt"), sent_at=iso_time(item.get("sentAt"), "sentAt"),
            price=price(field(item, "price", "pricePerMessage"), "price.pricePerMessage"),
            currency=field(item, "price", "currency"),
        ))
    except FetchError as e:
        return BadReport(f"report {index}: {e.message}", message_id)


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(HeronProvider)

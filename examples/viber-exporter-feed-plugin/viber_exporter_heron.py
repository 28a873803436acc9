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

from collections.abc import Callable, Mapping
from typing import Any

from viber_exporter import (
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
    snake_case,
)

STATUS_MAP = StatusMap(
    {
        "PENDING": Status.PENDING,
        "DELIVERED": Status.DELIVERED,
        "SEEN": Status.READ,
        "UNDELIVERABLE": Status.FAILED,
        "REJECTED": Status.FAILED,
        "EXPIRED": Status.EXPIRED,
    }
)
PAGE = 1000


class HeronProvider(Provider):
    plugin_name = "heron"
    polls = False  # no lookup: the feed is the only source
    drain_interval = 30.0
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
        response = self.http.request(
            "GET",
            f"{self.settings.base_url}{path}",
            headers={"Authorization": f"App {self.settings.api_key.reveal()}"},
        )
        raise_for_status(response)
        return json_body(response)

    def verify(self) -> Balance:
        body = self._get("/v1/account/balance")
        amount = price(field(body, "balance"), "balance")
        currency = field(body, "currency")
        if amount is None or not isinstance(currency, str):
            raise invalid("balance answer has no balance or currency")
        return Balance(amount, currency)

    def drain(self) -> list[Report]:
        body = self._get(f"/v1/reports?limit={PAGE}")
        results = field(body, "results")
        if not isinstance(results, list):
            raise invalid("reports answer has no results list")
        reports = []
        for index, item in enumerate(results):
            if not isinstance(item, Mapping) or not isinstance(item.get("messageId"), str):
                raise invalid(f"report {index} has no messageId")
            try:
                reports.append(Report(item["messageId"], observation(item)))
            except FetchError as e:
                # One unreadable report must not cost the others (the feed gives each once).
                raise invalid(f"report {index}: {e.message}") from e
        return reports


def observation(item: Mapping[str, Any]) -> Observation:
    group = field(item, "status", "groupName")
    if not isinstance(group, str):
        raise invalid("status.groupName is missing")
    status = STATUS_MAP.map(group)
    done = iso_time(item.get("doneAt"), "doneAt")
    error = field(item, "error", "name")
    failed = status.is_failure or status is Status.UNKNOWN
    return Observation(
        status=status,
        provider_status=str(field(item, "status", "name") or group),
        reason=snake_case(error if isinstance(error, str) else group) if failed else None,
        sent_at=iso_time(item.get("sentAt"), "sentAt"),
        delivered_at=done if status is Status.DELIVERED else None,
        read_at=done if status is Status.READ else None,
        price=price(field(item, "price", "pricePerMessage"), "price.pricePerMessage"),
        currency=field(item, "price", "currency"),
    )


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(HeronProvider)

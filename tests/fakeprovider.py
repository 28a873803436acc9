"""A small test-only provider plugin and the fake API it talks to.

The API is served by a real threaded HTTP server (pytest-httpserver). Its answers
come from ``FakeAPI.messages``: the ground truth a test sets up and changes. Every
call is recorded with its start and end time, so tests can measure concurrency and
call rates from the server's side.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from werkzeug import Request, Response

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
    Status,
    hookimpl,
    json_body,
    raise_for_status,
)

STATUS_MAP = {
    "queued": Status.PENDING,
    "delivered": Status.DELIVERED,
    "seen": Status.READ,
    "failed": Status.FAILED,
    "expired": Status.EXPIRED,
}


@dataclass(frozen=True)
class FakeSettings:
    base_url: str
    api_key: Any
    currency: str
    explode_in_constructor: bool = False


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def parse_message(data: Any) -> Observation:
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise FetchError(Outcome.INVALID_RESPONSE, "answer has no status")
    raw = data["status"]
    return Observation(
        status=STATUS_MAP.get(raw.lower(), Status.UNKNOWN),
        provider_status=raw,
        reason=data.get("reason"),
        sent_at=_time(data.get("sent_at")),
        delivered_at=_time(data.get("delivered_at")),
        read_at=_time(data.get("read_at")),
        price=data.get("price"),
        currency=data.get("currency"),
        fallbacks=tuple(Fallback("sms", leg.get("price")) for leg in data.get("sms", [])),
        country=data.get("country"),
    )


class FakeProvider(Provider):
    plugin_name = "fake"
    status_map = STATUS_MAP
    settings: FakeSettings

    @classmethod
    def parse_settings(cls, table: ConfigTable) -> FakeSettings:
        return FakeSettings(
            base_url=table.url("base_url"),
            api_key=table.secret("api_key"),
            currency=table.string("currency", "EUR", pattern=r"[A-Z]{3}", hint="must be a 3-letter ISO 4217 code"),
            explode_in_constructor=table.boolean("explode_in_constructor", False),
        )

    def __init__(self, name: str, settings: FakeSettings, http: Any) -> None:
        if settings.explode_in_constructor:  # plays a plugin whose constructor fails
            raise RuntimeError("cannot start: the fake was told to explode")
        super().__init__(name, settings, http)

    def check_id(self, message_id: str) -> str | None:
        if not message_id.isalnum():
            return "fake ids are letters and digits"
        return None

    def fetch(self, message_id: str) -> Observation:
        response = self.http.request(
            "GET",
            f"{self.settings.base_url}/messages/{message_id}",
            headers={"X-Key": self.settings.api_key.reveal()},
        )
        raise_for_status(response, not_found=b"no such message" in response.content)
        data = json_body(response)
        if isinstance(data, dict) and data.get("explode"):
            # Plays a careless plugin whose exception text holds its secret.
            raise RuntimeError(f"could not use key {self.settings.api_key.reveal()}")
        return self._with_currency(parse_message(data))

    def _with_currency(self, observation: Observation) -> Observation:
        if observation.currency is None:
            return replace(observation, currency=self.settings.currency)
        return observation

    def parse_callback(self, request: CallbackRequest) -> list[Report]:
        try:
            data = json.loads(request.body)
            return [Report(data["id"], self._with_currency(parse_message(data)))]
        except (ValueError, KeyError, TypeError, FetchError) as e:
            raise InvalidCallback(str(e)) from e


class FakePlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(FakeProvider)


@dataclass
class Call:
    message_id: str
    started: float
    ended: float
    status: int


class FakeAPI:
    """The ground truth and the request handler of the fake provider API."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.delay = delay
        #: queued answers served before the ground truth: (status, body, headers)
        self.faults: deque[tuple[int, str, dict[str, str]]] = deque()
        #: when set, every answer is this fault (an outage)
        self.outage: tuple[int, str, dict[str, str]] | None = None
        #: message id → an event its lookups wait for (a slow call, released by the test)
        self.gates: dict[str, threading.Event] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        #: what call times are measured on (tests in virtual time set the exporter's clock)
        self.clock: Callable[[], float] = time.monotonic
        self.keys_seen: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        started = self.clock()
        message_id = request.path.rsplit("/", 1)[-1]
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.keys_seen.add(request.headers.get("X-Key", ""))
            fault = self.outage or (self.faults.popleft() if self.faults else None)
            truth = self.messages.get(message_id)
        try:
            gate = self.gates.get(message_id)
            if gate is not None:
                gate.wait(10)
            if self.delay:
                time.sleep(self.delay)
            if fault is not None:
                status, body, headers = fault
            elif truth is None:
                status, body, headers = 404, json.dumps({"error": "no such message"}), {}
            else:
                status, body, headers = 200, json.dumps(truth), {}
            return Response(body, status=status, headers=headers, content_type="application/json")
        finally:
            with self._lock:
                self.in_flight -= 1
                self.calls.append(Call(message_id, started, self.clock(), status))

    def calls_for(self, message_id: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.message_id == message_id]

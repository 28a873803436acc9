"""A fake Routee: the OAuth token endpoint and the Viber tracking lookup, over real HTTP.

Answers are shaped as providers.md §1 documents them: a bare tracking object with
``status.status``/``status.date``, ``{code, developerMessage}`` error bodies, and
404019006 for tracking ids not (yet) visible.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import deque
from typing import Any

from werkzeug import Request, Response

from viber_exporter.clock import SYSTEM_CLOCK

APP_ID = "app-id-1"
APP_SECRET = "routee-secret-sentinel-77"


def error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"code": code, "developerMessage": message}), status, content_type="application/json")


class FakeRoutee:
    def __init__(self) -> None:
        self.messages: dict[str, Any] = {}  # tracking id → JSON body to serve
        self.expires_in = 3600
        self.valid_secret = APP_SECRET
        self.token_requests = 0
        self.tokens: dict[str, float] = {}  # token → server-side expiry (monotonic)
        self.faults: deque[Response] = deque()
        self.token_faults: deque[Response] = deque()
        self.lookups: list[tuple[str, int]] = []
        self.flows: dict[str, Any] = {}  # failover tracking id → flow body
        self.balance: dict[str, Any] = {"balance": 120.5, "currency": {"code": "EUR", "name": "Euro", "sign": "€"}}
        self.delay = 0.0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def handle_token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
            if self.token_faults:
                return self.token_faults.popleft()
        expected = base64.b64encode(f"{APP_ID}:{self.valid_secret}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}" or request.form.get("grant_type") != "client_credentials":
            return Response(json.dumps({"error": "unauthorized"}), 401, content_type="application/json")
        token = f"tok-{next(self._ids)}"
        with self._lock:
            self.tokens[token] = time.monotonic() + self.expires_in
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in, "scope": "viber", "permissions": []}
        return Response(json.dumps(body), 200, content_type="application/json")

    def expire_all_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def handle_balance(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(json.dumps({"error": "invalid_token"}), 401, content_type="application/json")
        return Response(json.dumps(self.balance), 200, content_type="application/json")

    def handle_failover(self, request: Request) -> Response:
        tracking_id = request.path.rsplit("/", 1)[-1]
        if not self._authorised(request):
            return Response(json.dumps({"error": "invalid_token"}), 401, content_type="application/json")
        flow = self.flows.get(tracking_id)
        if flow is None:
            return error(404, "404013001", "failover tracking was not found")
        return Response(json.dumps(flow), 200, content_type="application/json")

    def _authorised(self, request: Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            return self.tokens.get(token, 0) > time.monotonic()

    def handle_tracking(self, request: Request) -> Response:
        tracking_id = request.path.rsplit("/", 1)[-1]
        if self.delay:
            time.sleep(self.delay)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            valid = self.tokens.get(token, 0) > time.monotonic()
            body = self.messages.get(tracking_id)
        if fault is not None:
            response = fault
        elif not valid:
            response = Response(json.dumps({"error": "invalid_token"}), 401, content_type="application/json")
        elif body is None:
            response = error(404, "404019006", "viberTracking was not found")
        else:
            response = Response(json.dumps(body), 200, content_type="application/json")
        with self._lock:
            self.lookups.append((tracking_id, response.status_code))
        return response


def tracking(tracking_id: str, status: str, *, date: str | None = None, reason: str | None = None,
             price: float | None = 0.035, country: str = "GR") -> dict[str, Any]:
    """A tracking answer; ``date`` defaults to a second ago (real time, as the fake's users run on it)."""
    if date is None:
        date = time.strftime("%Y-%m-%dT%H:%M:%S.123Z", time.gmtime(SYSTEM_CLOCK.time() - 1))
    body: dict[str, Any] = {
        "trackingId": tracking_id, "to": "+306900000000", "from": "Sender", "country": country,
        "status": {"status": status, "date": date}, "applicationName": "default",
        "originatingService": "Viber", "direction": "Outbound", "ttl": 3600, "message": "hi",
        "sessionMessage": False, "expireOnDelivery": False,
    }
    if reason is not None:
        body["status"]["reason"] = {"detailedStatus": reason, "description": "…"}
    if price is not None:
        body["price"] = price
    return body


def flow(tracking_id: str, viber: str, sms: str | None, *, price: float = 0.035, sms_price: float = 0.05) -> dict[str, Any]:
    """A failover flow (Viber, then SMS) as GET /failover/tracking/{id} answers it (providers.md §1.1)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(SYSTEM_CLOCK.time() - 1))
    messages = [{"type": "Viber", "trackingId": f"{tracking_id}-v", "to": "+306900000000", "country": "Greece",
                 "status": {"name": viber, "reason": {"detailedStatus": "Not Viber User"}, "updatedDate": now},
                 "price": price, "createdAt": now}]
    if sms is not None:
        messages.append({"type": "SMS", "trackingId": f"{tracking_id}-s", "to": "+306900000000",
                         "status": {"name": sms, "updatedDate": now}, "price": sms_price, "createdAt": now})
    overall = "Succeeded" if sms == "Delivered" or viber in ("DELIVERED", "SEEN") else "InProgress"
    return {"trackingId": tracking_id, "status": overall, "messages": messages}

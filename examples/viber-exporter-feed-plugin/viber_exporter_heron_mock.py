"""A mock Heron API: a report queue handed out once per call, and a balance.

``POST /mock/reports`` (a JSON list of report objects) queues reports;
``GET /v1/reports`` hands out what is queued and empties the queue.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug import Request, Response

API_KEY = "heron-demo-key"  # the mock's own credential


class HeronMock:
    def __init__(self, balance: float = 41.5) -> None:
        self.balance = balance
        self.queue: list[dict[str, Any]] = []
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, reports: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self.queue.extend(reports)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        return self.answer(request)(environ, start_response)

    def answer(self, request: Request) -> Response:
        if request.path == "/mock/reports" and request.method == "POST":
            self.add(request.get_json(force=True))
            return Response("{}", content_type="application/json")
        if request.headers.get("Authorization") != f"App {API_KEY}":
            return Response('{"requestError": "UNAUTHORIZED"}', 401, content_type="application/json")
        with self._lock:
            self.calls += 1
            if request.path == "/v1/account/balance":
                body: Any = {"balance": self.balance, "currency": "EUR"}
            elif request.path == "/v1/reports":
                limit = int(request.args.get("limit", "1000"))
                body = {"results": self.queue[:limit]}
                del self.queue[:limit]
            else:
                return Response('{"requestError": "NOT_FOUND"}', 404, content_type="application/json")
        return Response(json.dumps(body), content_type="application/json")


def report(message_id: str, group: str, *, done_at: str | None = None, error: str = "NO_ERROR",
           price: float = 0.012) -> dict[str, Any]:
    """One report as Heron writes it."""
    return {"messageId": message_id, "sentAt": done_at, "doneAt": done_at,
            "status": {"groupName": group, "name": f"{group}_DETAIL"},
            "error": {"name": error}, "price": {"pricePerMessage": price, "currency": "EUR"}}

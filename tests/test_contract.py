"""The built-in plugins run the same contract suite third-party plugins use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Response

from viber_exporter.callbacks import CallbackRequest
from viber_exporter.clock import SYSTEM_CLOCK
from viber_exporter.plugins.bsg import BsgProvider
from viber_exporter.plugins.routee import RouteeProvider
from viber_exporter.testing.contract import ProviderContract

TOKEN = {"access_token": "tok", "token_type": "bearer", "expires_in": 3600}


def ago(seconds: float, *, bsg: bool = False) -> str:
    """A provider time ``seconds`` before the clock the plugins run on (never a fixed
    date: the exporter compares provider times with now, max_age and the read window).
    Routee writes ISO 8601 with milliseconds and Z; BSG ``Y-m-d H:M:S`` (UTC here)."""
    moment = datetime.fromtimestamp(SYSTEM_CLOCK.time() - seconds, UTC)
    if bsg:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TestRouteeContract(ProviderContract):
    provider_class = RouteeProvider
    valid_ids = ("0a047b46-a4dd-4ca8-b817-a6a134dd1234", "abc-123")
    invalid_ids = ("", "x" * 65, "a/b", "a b")
    invalid_settings = ({"currency": "euro", "base_url": "ftp://x", "application_id": 5}, frozenset({"currency", "base_url", "application_id"}))

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"application_id": "app", "application_secret": "secret", "currency": "EUR",
                "base_url": base_url, "token_url": f"{base_url}/oauth/token"}

    def respond_status(self, httpserver: HTTPServer, message_id: str, raw_status: str) -> None:
        httpserver.expect_request("/oauth/token", method="POST").respond_with_json(TOKEN)
        body = {"trackingId": message_id, "country": "GR", "price": 0.035,
                "status": {"status": raw_status, "date": ago(50),
                           "reason": {"detailedStatus": "Not Viber User"}}}
        httpserver.expect_request(f"/viber/tracking/{message_id}").respond_with_json(body)

    def respond_error(self, httpserver: HTTPServer, message_id: str, kind: str) -> None:
        path = f"/viber/tracking/{message_id}"
        if kind == "unauthorized":
            httpserver.expect_request("/oauth/token").respond_with_json({"error": "unauthorized"}, status=401)
            return
        httpserver.expect_request("/oauth/token", method="POST").respond_with_json(TOKEN)
        answers = {
            "not_found": Response('{"code": "404019006", "developerMessage": "viberTracking was not found"}', 404),
            "rate_limited": Response('{"code": "429000000", "developerMessage": "slow down"}', 429, {"Retry-After": "2"}),
            "server_error": Response('{"code": "500000000", "developerMessage": "boom"}', 500),
            "malformed": Response("<html>oops</html>", 200),
        }
        httpserver.expect_request(path).respond_with_response(answers[kind])

    def campaign_id(self) -> str:
        return "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"

    def respond_campaign(self, httpserver: HTTPServer, campaign_id: str, pages: list[dict[str, str]]) -> None:
        httpserver.expect_request("/oauth/token", method="POST").respond_with_json(TOKEN)
        total = sum(len(page) for page in pages)
        for number, page in enumerate(pages):
            content = [{"trackingId": i, "campaignTrackingId": campaign_id, "country": "GR", "price": 0.02,
                        "status": {"status": raw, "date": ago(50),
                                   "reason": {"detailedStatus": "Not Viber User"}}} for i, raw in page.items()]
            body = {"content": content, "totalElements": total, "totalPages": len(pages), "number": number,
                    "size": 2, "numberOfElements": len(content), "first": number == 0,
                    "last": number == len(pages) - 1}
            httpserver.expect_request(f"/viber/tracking/campaign/{campaign_id}",
                                      query_string={"page": str(number), "size": "1000"}).respond_with_json(body)

    def callback_request(self, message_id: str, raw_status: str) -> CallbackRequest:
        body = {"trackingId": message_id, "country": "GR", "price": 0.035, "createdAt": ago(60),
                "status": {"name": raw_status, "updatedDate": ago(55),
                           "reason": {"detailedStatus": "Not Viber User"}}}
        return CallbackRequest.of(json.dumps(body), query={"token": self.callback_token or ""})


class TestBsgContract(ProviderContract):
    provider_class = BsgProvider
    valid_ids = ("217", "380972920000")
    invalid_ids = ("", "ext_id_19", "12a")
    invalid_settings = ({"lookup": "phone", "timezone": "Nowhere/Else"}, frozenset({"lookup", "timezone"}))

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"api_key": "live_key", "base_url": base_url, "one_api_url": base_url}

    def respond_status(self, httpserver: HTTPServer, message_id: str, raw_status: str) -> None:
        body = {"error": "0", "errorDescription": "No errors", "id": "380972920000", "reference": "r1",
                "time_in": ago(60, bsg=True), "time_sent": ago(59, bsg=True), "time_dr": ago(30, bsg=True),
                "status": raw_status, "price": "0.02", "currency": "EUR"}
        httpserver.expect_request(f"/rest/viber/{message_id}").respond_with_json(body)

    def respond_error(self, httpserver: HTTPServer, message_id: str, kind: str) -> None:
        answers = {
            "not_found": Response('{"error": 40, "errorDescription": "Message not found"}', 200),
            "unauthorized": Response('{"error": "1", "errorDescription": "Invalid API key"}', 200),
            "rate_limited": Response('{"message": "Too many requests"}', 429, {"Retry-After": "2"}),
            "server_error": Response("<html>bad gateway</html>", 502),
            "malformed": Response("{not json", 200),
        }
        httpserver.expect_request(f"/rest/viber/{message_id}").respond_with_response(answers[kind])

    def campaign_id(self) -> str:
        return "123456789"

    def respond_campaign(self, httpserver: HTTPServer, campaign_id: str, pages: list[dict[str, str]]) -> None:
        httpserver.expect_request("/api/auth/login", method="POST", json={"api_key": "live_key"}).respond_with_json(
            {"bearer": "jwt-token-for-the-contract"})
        total = sum(len(page) for page in pages)
        offset = 0
        for page in pages:
            data = [{"id": int(i), "campaign_id": int(campaign_id), "type": "viber", "status": raw,
                     "amount": {"value": "0.0200000", "currency": "EUR"}, "created_at": ago(60, bsg=True),
                     "sent_at": ago(59, bsg=True), "delivered_at": ago(30, bsg=True), "country": "UA"}
                    for i, raw in page.items()]
            body = {"data": data, "meta": {"page": {"limit": 500, "offset": offset, "total": total}}}
            httpserver.expect_request("/api/messages", query_string={
                "filter[campaign_id]": campaign_id, "page[limit]": "500", "page[offset]": str(offset), "sort": "id",
            }, headers={"Authorization": "Bearer jwt-token-for-the-contract"}).respond_with_json(body)
            offset += len(page)

    def callback_request(self, message_id: str, raw_status: str) -> CallbackRequest:
        body = {"error": 0, "id": message_id, "reference": "r1", "time_in": ago(60, bsg=True),
                "time_sent": ago(59, bsg=True), "time_dr": ago(30, bsg=True),
                "status": raw_status, "price": "0.02", "currency": "EUR"}
        return CallbackRequest.of(json.dumps(body), query={"token": self.callback_token or ""})

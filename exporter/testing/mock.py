"""Mock Routee and BSG APIs in one HTTP app, for the demo, the tests and plugin authors.

Speaks both built-in APIs as providers.md documents them, quirks included: Routee's
OAuth token endpoint and tracking lookup (404019006 while an id is not yet visible,
ISO times with and without fractions), BSG's lookups by id and by reference (numbers
as strings, zone-less times, ``time_dr`` on expired messages, ``alt_route`` SMS legs).
Control endpoints create messages (``POST /mock/messages``), report the ground truth
(``GET /mock/truth``) and change faults at run time (``POST /mock/faults``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule

from ..clock import SYSTEM_CLOCK
from .simulation import BSG_FAILED, ROUTEE_FAILED, ROUTEE_REASONS, Mix, Plan, Simulation

ROUTEE_APP_ID = "demo-application"
ROUTEE_APP_SECRET = "demo-application-secret"  # noqa: S105 (the mock's own demo credential)
BSG_API_KEY = "test_demo-api-key"


@dataclass(frozen=True)
class Faults:
    """Optional misbehaviour; every rate is a probability per lookup."""

    latency: float = 0.0  # seconds added to every lookup
    rate_limit: float = 0.0  # lookups per second per provider before 429 (0: no limit)
    retry_after: int = 1
    error_rate: float = 0.0  # HTTP 500/503
    slow_rate: float = 0.0  # answers that take slow_seconds
    slow_seconds: float = 5.0
    malformed_rate: float = 0.0  # 200 with a body that is not JSON
    token_lifetime: int = 3600  # Routee expires_in, seconds
    outage: bool = False  # every lookup answers 503
    #: campaign pages list the most recently changed messages first, so pages shift
    #: while a client reads them (Routee does not document its default order)
    campaign_unstable: bool = False


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json")


CAMPAIGN_MAX_SIZE = 1000  # the mock's largest campaign page (Routee documents none)


def _last_change(plan: Plan, now: float) -> float:
    """When the message's status last changed, as of ``now``."""
    times = [plan.created, plan.delivered_at, plan.read_at, plan.final_at]
    return max(t for t in times if t is not None and t <= now)


def _iso(timestamp: float, style: int) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    if style == 0:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 10000:02d}Z"


def _bsg_time(timestamp: float | None) -> str:
    return "" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


class MockProviders:
    """The WSGI app. ``clock`` is injectable so tests can move time."""

    def __init__(
        self,
        mix: Mix | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = SYSTEM_CLOCK.time,
    ) -> None:
        self.simulation = Simulation(mix or Mix(), seed)
        self.faults = faults or Faults()
        self.clock = clock
        self.tokens: dict[str, float] = {}
        self.calls: deque[tuple[float, str, int]] = deque(
            maxlen=100_000
        )  # (time, provider, status)
        self.endpoint_calls: Counter[str] = Counter()  # by endpoint name (routee, bsg_id, ...)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {"routee": deque(), "bsg": deque()}
        #: cleared, every lookup waits until it is set again: a quiet moment in which no
        #: answer arrives, so nothing new is recorded (tests kill a replica in one)
        self.answering = threading.Event()
        self.answering.set()
        self.urls = Map(
            [
                Rule("/oauth/token", endpoint="token", methods=["POST"]),
                Rule("/viber/tracking/<tracking_id>", endpoint="routee", methods=["GET"]),
                Rule(
                    "/viber/tracking/campaign/<campaign>",
                    endpoint="routee_campaign",
                    methods=["GET"],
                ),
                Rule(
                    "/failover/tracking/<tracking_id>", endpoint="routee_failover", methods=["GET"]
                ),
                Rule("/accounts/me/balance", endpoint="routee_balance", methods=["GET"]),
                Rule("/rest/common/balance", endpoint="bsg_balance", methods=["GET"]),
                Rule("/api/auth/login", endpoint="bsg_login", methods=["POST"]),
                Rule("/api/messages", endpoint="bsg_messages", methods=["GET"]),
                Rule("/rest/viber/reference/<key>", endpoint="bsg_reference", methods=["GET"]),
                Rule("/rest/viber/<key>", endpoint="bsg_id", methods=["GET"]),
                Rule("/mock/messages", endpoint="create", methods=["POST"]),
                Rule("/mock/truth", endpoint="truth", methods=["GET"]),
                Rule("/mock/faults", endpoint="faults", methods=["GET", "POST"]),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            with self._lock:
                self.endpoint_calls[endpoint] += 1
            response = getattr(self, f"_{endpoint}")(request, **args)
        except NotFound:
            response = _json({"error": "no such mock endpoint"}, 404)
        except HTTPException as e:
            response = e.get_response()
        return response(environ, start_response)

    # -- control ---------------------------------------------------------------------
    def _create(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        provider, count = body.get("provider"), body.get("count", 1)
        if (
            provider not in ("routee", "bsg")
            or not isinstance(count, int)
            or not 1 <= count <= 10_000
        ):
            return _json({"error": "give provider (routee or bsg) and count (1-10000)"}, 400)
        now = self.clock()
        plans = [self.simulation.create(provider, now, body.get("fate")) for _ in range(count)]
        return _json(
            {
                "messages": [
                    {
                        "provider": p.provider,
                        "id": p.id,
                        "reference": p.reference,
                        "sent_at": _iso(p.created, 0),
                        **({"fields": {"tracking": "failover"}} if p.flow else {}),
                    }
                    for p in plans
                ]
            }
        )

    def _truth(self, request: Request) -> Response:
        return _json(self.simulation.truth(self.clock()))

    def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            changes = request.get_json(silent=True) or {}
            known = {f.name for f in fields(Faults)}
            self.faults = replace(self.faults, **{k: v for k, v in changes.items() if k in known})
        return _json(asdict(self.faults))

    # -- shared fault handling ----------------------------------------------------------
    def _fault(self, provider: str) -> Response | None:
        self.answering.wait()
        faults = self.faults
        if faults.latency:
            time.sleep(faults.latency)
        if faults.outage:
            return _json({"error": "service unavailable"}, 503)
        now = self.clock()
        with self._lock:
            window = self._windows[provider]
            while window and window[0] < now - 1.0:
                window.popleft()
            limited = bool(faults.rate_limit) and len(window) >= faults.rate_limit
            if not limited:
                window.append(now)
            draw = self._rng.random()
        if limited:
            return _json(
                {"message": "Too many requests"}, 429, {"Retry-After": str(faults.retry_after)}
            )
        if draw < faults.error_rate:
            return _json({"error": "internal"}, self._rng.choice((500, 503)))
        draw -= faults.error_rate
        if draw < faults.malformed_rate:
            return Response("<html><body>Bad gateway</body></html>", 200, content_type="text/html")
        draw -= faults.malformed_rate
        if draw < faults.slow_rate:
            time.sleep(faults.slow_seconds)
        return None

    def _record(self, provider: str, response: Response) -> Response:
        self.calls.append((self.clock(), provider, response.status_code))
        return response

    # -- Routee ----------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        expected = (
            "Basic " + base64.b64encode(f"{ROUTEE_APP_ID}:{ROUTEE_APP_SECRET}".encode()).decode()
        )
        if (
            request.headers.get("Authorization") != expected
            or request.form.get("grant_type") != "client_credentials"
        ):
            return _json({"error": "unauthorized", "error_description": "Bad credentials"}, 401)
        token = secrets.token_hex(16)
        lifetime = self.faults.token_lifetime
        with self._lock:
            self.tokens[token] = self.clock() + lifetime
        return _json(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime,
                "scope": "viber sms account",
                "permissions": ["MT_ROLE_VIBER"],
            }
        )

    def _routee(self, request: Request, tracking_id: str) -> Response:
        refusal = self._routee_refusal(request)
        if refusal is not None:
            return refusal
        plan = self.simulation.find("routee", tracking_id)
        now = self.clock()
        if plan is None or now < plan.visible_at:
            body = {"code": "404019006", "developerMessage": "viberTracking was not found"}
            return self._record("routee", _json(body, 404))
        return self._record("routee", _json(self._routee_body(plan, now)))

    def _routee_refusal(self, request: Request) -> Response | None:
        """The answer to a Routee lookup that does not get through: an expired or
        unknown token, or a fault; None when it gets through."""
        if not self._authorised(request):
            return self._record(
                "routee", _json({"error": "invalid_token", "error_description": "expired"}, 401)
            )
        fault = self._fault("routee")
        return self._record("routee", fault) if fault is not None else None

    def _routee_campaign(self, request: Request, campaign: str) -> Response:
        """``GET /viber/tracking/campaign/{id}?page=&size=``: a Spring page of the
        campaign's messages (at most CAMPAIGN_MAX_SIZE per page, whatever is asked)."""
        refusal = self._routee_refusal(request)
        if refusal is not None:
            return refusal
        plans = self.simulation.campaign(campaign)
        if plans is None:
            body = {"code": "404019007", "developerMessage": "campaign was not found"}
            return self._record("routee", _json(body, 404))
        now = self.clock()
        visible = [p for p in plans if p.visible_at <= now]
        if self.faults.campaign_unstable:
            visible.sort(key=lambda p: (-_last_change(p, now), p.id))
        else:
            visible.sort(key=lambda p: (p.created, p.id))
        try:
            number = max(0, int(request.args.get("page", "0")))
            size = min(CAMPAIGN_MAX_SIZE, max(1, int(request.args.get("size", "20"))))
        except ValueError:
            return self._record(
                "routee", _json({"code": "400000000", "developerMessage": "bad paging"}, 400)
            )
        chunk = visible[number * size : (number + 1) * size]
        pages = max(1, -(-len(visible) // size))
        content = [
            {
                **self._routee_body(p, now),
                "campaignTrackingId": campaign,
                "groups": [],
                "campaign": "demo",
            }
            for p in chunk
        ]
        return self._record(
            "routee",
            _json(
                {
                    "content": content,
                    "totalPages": pages,
                    "totalElements": len(visible),
                    "last": number + 1 >= pages,
                    "first": number == 0,
                    "number": number,
                    "size": size,
                    "numberOfElements": len(content),
                }
            ),
        )

    def _routee_body(self, plan: Plan, now: float) -> dict[str, Any]:
        phase = plan.phase(now)
        status: dict[str, Any]
        if phase == "pending":
            status = {"status": "QUEUED", "date": _iso(plan.created, 0)}
        elif phase == "delivered":
            status = {
                "status": "DELIVERED",
                "date": _iso(plan.delivered_at or now, plan.failure % 3),
                "reason": {
                    "detailedStatus": "Delivered",
                    "description": "Delivered to the handset",
                },
            }
        elif phase == "read":
            status = {"status": "SEEN", "date": _iso(plan.read_at or now, plan.failure % 3)}
        elif phase == "expired":
            status = {
                "status": "EXPIRED",
                "date": _iso(plan.final_at or now, 0),
                "reason": {"detailedStatus": "TTL Expired", "description": "Not delivered in time"},
            }
        else:
            status = {
                "status": ROUTEE_FAILED[plan.failure],
                "date": _iso(plan.final_at or now, 0),
                "reason": {"detailedStatus": ROUTEE_REASONS[plan.failure], "description": "…"},
            }
        return {
            "trackingId": plan.id,
            "to": "+30690000000",
            "from": "Demo",
            "country": plan.country,
            "status": status,
            "applicationName": "default",
            "originatingService": "Viber",
            "direction": "Outbound",
            "ttl": str(int(self._ttl())),  # seconds, as Viber sends state it
            "message": "Hello",
            "price": plan.price,
            "sessionMessage": False,
            "expireOnDelivery": False,
        }

    def routee_callback(self, plan: Plan, now: float) -> dict[str, Any]:
        """The report Routee pushes for this message's status at ``now`` (its documented
        callback: the tracking shape with ``status.name`` and ``status.updatedDate``)."""
        body = self._routee_body(plan, now)
        status = body["status"]
        body["status"] = {
            "name": status["status"],
            "updatedDate": status["date"],
            **({"reason": status["reason"]} if "reason" in status else {}),
        }
        body["createdAt"] = _iso(plan.created, 0)
        return body

    # -- BSG -------------------------------------------------------------------------
    def _bsg_id(self, request: Request, key: str) -> Response:
        return self._bsg(request, self.simulation.find("bsg", key))

    def _bsg_reference(self, request: Request, key: str) -> Response:
        return self._bsg(request, self.simulation.find("bsg-ref", key))

    def _bsg(self, request: Request, plan: Plan | None) -> Response:
        if request.headers.get("X-API-KEY") != BSG_API_KEY:
            return self._record("bsg", _json({"error": 1, "errorDescription": "Invalid API key"}))
        fault = self._fault("bsg")
        if fault is not None:
            return self._record("bsg", fault)
        now = self.clock()
        if plan is None or now < plan.visible_at:
            return self._record(
                "bsg", _json({"error": "40", "errorDescription": "Message not found"})
            )
        return self._record("bsg", _json(self._bsg_body(plan, now)))

    def _bsg_body(self, plan: Plan, now: float) -> dict[str, Any]:
        phase = plan.phase(now)
        raw, time_dr = {
            "pending": ("scheduled" if now < plan.created + 1 else "sent", None),
            "delivered": ("delivered", plan.delivered_at),
            "read": ("read", plan.read_at),
            "expired": ("expired", plan.final_at),  # BSG fills time_dr for expired messages too
            "failed": (BSG_FAILED[plan.failure], None),
        }[phase]
        numeric = int(plan.id) % 2 == 0  # half the answers use numbers, half numeric strings
        body: dict[str, Any] = {
            "error": 0 if numeric else "0",
            "errorDescription": "No errors",
            "id": "380972920000",
            "msisdn": "380972920000",
            "reference": plan.reference,
            "time_in": _bsg_time(plan.created),
            "time_sent": _bsg_time(plan.created),
            "time_dr": _bsg_time(time_dr),
            "status": raw,
            "price": plan.price if numeric else f"{plan.price:.4f}",
            "currency": "EUR",
        }
        leg = plan.leg(now)
        if leg is not None:
            body["alt_route"] = [
                {
                    "channel": "sms",
                    "id": f"sms{plan.id}",
                    "status": leg,
                    # BSG's example shows "price": "string" before the leg is priced
                    "price": f"{plan.sms_price:.4f}" if leg != "scheduled" else "string",
                }
            ]
        if not numeric and phase in ("delivered", "read"):
            # Object answers may come without the error field (BSG's general principles).
            del body["error"], body["errorDescription"]
        return body

    # -- BSG One-API v2: login and the message list (campaigns) ----------------------------
    def _bsg_login(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        if body.get("api_key") != BSG_API_KEY:
            return _json({"message": "Unauthenticated."}, 401)
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = self.clock() + 30 * 86400
        return _json({"bearer": token})

    def _bsg_messages(self, request: Request) -> Response:
        """``GET /api/messages?filter[campaign_id]=&page[limit]=&page[offset]=``."""
        if not self._authorised(request):
            return self._record("bsg", _json({"message": "Unauthenticated."}, 401))
        fault = self._fault("bsg")
        if fault is not None:
            return self._record("bsg", fault)
        try:
            limit = int(request.args.get("page[limit]", "50"))
            offset = int(request.args.get("page[offset]", "0"))
        except ValueError:
            return self._record("bsg", _json({"message": "The given data was invalid."}, 422))
        if not 15 <= limit <= 500 or offset < 0:
            return self._record("bsg", _json({"message": "The given data was invalid."}, 422))
        campaign = request.args.get("filter[campaign_id]", "")
        now = self.clock()
        plans = [p for p in self.simulation.campaign(campaign) or [] if p.visible_at <= now]
        plans.sort(key=lambda p: int(p.id))
        chunk = plans[offset : offset + limit]
        data = [self._one_api_item(p, campaign, now) for p in chunk]
        meta = {"page": {"limit": limit, "offset": offset, "total": len(plans)}}
        return self._record("bsg", _json({"data": data, "meta": meta}))

    def _one_api_item(self, plan: Plan, campaign: str, now: float) -> dict[str, Any]:
        v1 = self._bsg_body(plan, now)
        return {
            "id": int(plan.id),
            "campaign_id": int(campaign),
            "reference_id": plan.reference,
            "type": "viber",
            "source": "rest",
            "phone": "380972920000",
            "status": v1["status"],
            "amount": {"value": f"{plan.price:.7f}", "currency": "EUR"},
            "sender": "Demo",
            "created_at": v1["time_in"],
            "sent_at": v1["time_sent"],
            "delivered_at": v1["time_dr"] if v1["status"] in ("delivered", "read") else None,
            "country": plan.country,
            "parts": 1,
            "alternative_channels": [],
        }

    def _bsg_balance(self, request: Request) -> Response:
        if request.headers.get("X-API-KEY") != BSG_API_KEY:
            return _json({"error": 1, "errorDescription": "Invalid API key"})
        return _json(
            {
                "error": 0,
                "errorDescription": "No errors",
                "amount": "-4.09",
                "currency": "EUR",
                "limit": "7",
            }
        )

    # -- Routee: the account and failover flows -------------------------------------------
    def _authorised(self, request: Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            return self.tokens.get(token, 0) > self.clock()

    def _routee_balance(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json({"error": "invalid_token", "error_description": "expired"}, 401)
        return _json({"balance": 250.75, "currency": {"code": "EUR", "name": "Euro", "sign": "€"}})

    def _ttl(self) -> float:
        """The validity the simulated messages were sent with: the mix's expiry time,
        else Routee's default for Viber sends (14 days)."""
        expire_after = self.simulation.mix.expire_after
        return expire_after if expire_after is not None else 14 * 86400.0

    def _routee_failover(self, request: Request, tracking_id: str) -> Response:
        refusal = self._routee_refusal(request)
        if refusal is not None:
            return refusal
        plan = self.simulation.find("routee", tracking_id)
        now = self.clock()
        if plan is None or not plan.flow or now < plan.visible_at:
            body = {"code": "404013001", "developerMessage": "failover tracking was not found"}
            return self._record("routee", _json(body, 404))
        viber = self._routee_body(plan, now)
        status = viber.pop("status")
        message = {
            "type": "Viber",
            **viber,
            "status": {
                "name": status["status"],
                "reason": status.get("reason"),
                "updatedDate": status["date"],
            },
            "createdAt": _iso(plan.created, 0),
            "ttl": min(1440, max(1, round(self._ttl() / 60))),  # minutes on failover flows
        }
        messages = [message]
        leg = plan.leg(now)
        if leg is not None:
            sms_status = {"scheduled": "Queued", "sent": "Sent", "delivered": "Delivered"}[leg]
            messages.append(
                {
                    "type": "SMS",
                    "trackingId": str(uuid.UUID(int=int(plan.id.replace("-", ""), 16) ^ 1)),
                    "status": {"name": sms_status, "updatedDate": _iso(now, 0)},
                    "price": plan.sms_price if leg != "scheduled" else None,
                    "createdAt": _iso(plan.final_at or now, 0),
                }
            )
        overall = {"delivered": "Succeeded"}.get(leg or "", "InProgress")
        if leg is None and plan.phase(now) in ("delivered", "read"):
            overall = "Succeeded"
        total = sum(float(m.get("price") or 0) for m in messages)
        flow: dict[str, Any] = {
            "trackingId": plan.id,
            "status": overall,
            "messages": messages,
            "totalPrice": total,
        }
        return self._record("routee", _json(flow))


def exporter_config(
    mock_url: str,
    state_path: Path,
    *,
    exporter: Mapping[str, Any] | None = None,
    polling: Mapping[str, Any] | None = None,
    routee: Mapping[str, Any] | None = None,
    bsg: Mapping[str, Any] | None = None,
) -> str:
    """config.toml text for an exporter whose ``routee`` and ``bsg`` instances poll this
    mock at ``mock_url``; each mapping adds or overrides keys of its table."""
    tables: dict[str, Mapping[str, Any]] = {
        "exporter": {"state_path": str(state_path), **(exporter or {})},
        "polling": dict(polling or {}),
        "providers.routee": {
            "plugin": "routee",
            "application_id": ROUTEE_APP_ID,
            "application_secret": ROUTEE_APP_SECRET,
            "currency": "EUR",
            "base_url": mock_url,
            "token_url": f"{mock_url}/oauth/token",
            **(routee or {}),
        },
        "providers.bsg": {
            "plugin": "bsg",
            "api_key": BSG_API_KEY,
            "base_url": mock_url,
            "one_api_url": mock_url,
            **(bsg or {}),
        },
    }
    # JSON literals of strings, numbers, booleans and lists are valid TOML values.
    return (
        "\n\n".join(
            f"[{name}]\n"
            + "\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items())
            for name, table in tables.items()
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the mock providers standalone: ``python -m viber_exporter.testing.mock --port 8000``."""
    import argparse

    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="Mock Routee and BSG APIs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every lookup")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    app = MockProviders(faults=Faults(latency=args.latency), seed=args.seed)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"http://{args.host}:{server.socket.getsockname()[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

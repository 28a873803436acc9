"""JSON shapes the HTTP API returns: messages and provider instances."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..adaptive import SchedulePlan
from ..config.model import PollingSettings
from ..engine import Exporter
from ..model import Status
from ..store.rows import MessageState, SentSource


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):  # stored by a version without bounds
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_json(state: MessageState) -> dict[str, Any]:
    return {
        "provider": state.provider,
        "id": state.id,
        "status": state.status.value,
        "provider_status": state.provider_status,
        "reason": state.reason,
        "watched": state.watched,
        "sent_at": rfc3339(state.sent_at),
        "sent_at_source": {
            SentSource.GIVEN: "registration",
            SentSource.PROVIDER: "provider",
            SentSource.REGISTERED: "registration_time",
        }[state.sent_source],
        "registered_at": rfc3339(state.registered_at),
        "delivered_at": rfc3339(state.delivered_at),
        "read_at": rfc3339(state.read_at),
        "price": state.price,
        "currency": state.currency,
        "sms_price": state.sms_price,
        "country": state.country,
        "polls": state.polls,
        "errors": state.errors,
        "last_poll_at": rfc3339(state.last_poll_at),
        "next_poll_at": rfc3339(state.next_poll),
        "settled_at": rfc3339(state.settled_at),
        "last_error": state.last_error,
        "campaign": state.campaign,
        "ttl": state.ttl,
        "labels": json.loads(state.labels) if state.labels else {},
    }


def _schedule(configured: PollingSettings, plan: SchedulePlan | None) -> dict[str, Any]:
    """How the instance schedules its polls: push-first (``push_schedule``), fixed, or
    adaptive with its current plan (None until it has learned one; then the fixed steps
    are followed)."""
    if configured.push_first:
        return {"mode": "push_first"}
    if not configured.adaptive:
        return {"mode": "fixed"}
    described = plan.describe() if plan is not None else None
    return {"mode": "adaptive", "budget": configured.adaptive_budget, "plan": described}


def providers_json(exporter: Exporter) -> list[dict[str, Any]]:
    counts, watched = exporter.counts()
    campaigns = exporter.campaign_counts()
    now = exporter.clock.time()
    live = exporter.live
    result = []
    for name, config in live.config.providers.items():
        instance = live.instances.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "plugin": config.plugin,
            "version": config.type.version,
            "enabled": instance is not None,
            "callbacks": config.callback_token is not None,
            "watched": watched.get(name, 0),
            "campaigns_watched": campaigns.get(name, 0),
            "messages": {s.value: counts.get((name, s), 0) for s in Status},
        }
        if instance is not None:
            health = instance.health
            entry |= {
                "up": health.up,
                "polled_here": exporter.polled_here(name),
                "polled_by": exporter.polled_by(name),
                "schedule": _schedule(config.polling, instance.plan),
                "last_success_at": rfc3339(health.last_success),
                "poll_lag_seconds": round(health.lag(now), 3),
                "paused_for_seconds": round(health.pause_remaining(), 3),
                "balance": (
                    {"amount": instance.balance.amount, "currency": instance.balance.currency}
                    if instance.balance is not None
                    else None
                ),
                "recent_errors": [
                    {
                        "at": rfc3339(e.at),
                        "message_id": e.message_id,
                        "outcome": e.outcome,
                        "message": e.message,
                    }
                    for e in reversed(health.recent_errors)
                ],
            }
        result.append(entry)
    return result

"""``viber-exporter probe``: one live lookup, showing the raw answer and the result.

Every exchange with the provider is recorded; bodies are shown with secrets redacted
(both the configured ones and token-like fields such as ``access_token``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import requests

from .config.model import ProviderConfig
from .http import ProviderHttp
from .model import FetchError, Observation
from .secrets import MASK, redact

#: Keys whose value is a credential, matched whole (``token_type``, ``expires_in``
#: or ``tokens_left`` are not credentials and stay readable).
SENSITIVE_KEYS = frozenset(
    {"token", "secret", "password", "apikey", "authorization", "credentials", "key"}
)
SENSITIVE_SUFFIXES = ("_token", "_secret", "_password", "_key", "_apikey")


def sensitive(key: str) -> bool:
    folded = key.lower().replace("-", "_")
    return folded in SENSITIVE_KEYS or folded.endswith(SENSITIVE_SUFFIXES)


class RecordingHttp(ProviderHttp):
    """Records every exchange it attempts: an answer, or the failure that stopped it."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.exchanges: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            response = super().request(method, url, **kwargs)
        except FetchError as e:
            self.exchanges.append(
                {"method": method.upper(), "url": redact(url), "error": redact(e.message)}
            )
            raise
        self.exchanges.append(
            {
                "method": response.request.method,
                "url": redact(response.url),
                "status": response.status_code,
                "body": _body(response),
            }
        )
        return response


def _mask(value: Any) -> Any:
    """Mask credential fields, and every known secret inside any string."""
    if isinstance(value, dict):
        return {k: MASK if sensitive(str(k)) else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _body(response: requests.Response) -> Any:
    try:
        return _mask(json.loads(response.content))
    except (ValueError, RecursionError):
        return redact(response.text[:2000])


def _observation(obs: Observation) -> dict[str, Any]:
    data = asdict(obs)
    for key in ("sent_at", "delivered_at", "read_at"):
        data[key] = data[key].isoformat() if data[key] else None
    data["status"] = obs.status.value
    return data


def run_probe(config: ProviderConfig, message_id: str) -> tuple[dict[str, Any], bool]:
    http = RecordingHttp(config.timeout)
    provider = config.type.cls(config.name, config.settings, http)
    problem = provider.check_id(message_id)
    if problem:
        return {
            "provider": config.name,
            "id": message_id,
            "result": {"outcome": "rejected", "error": problem},
        }, False
    try:
        observation = provider.fetch(message_id)
        result: dict[str, Any] = {"outcome": "ok", "observation": _observation(observation)}
        ok = True
    except FetchError as e:
        result = {"outcome": e.outcome.value, "error": redact(e.message)}
        ok = False
    except Exception as e:  # a plugin bug: its type only (its text may hold a secret)
        result = {"outcome": "invalid_response", "error": f"plugin error: {type(e).__name__}"}
        ok = False
    finally:
        provider.close()
    return {
        "provider": config.name,
        "plugin": config.plugin,
        "id": message_id,
        "exchanges": http.exchanges,
        "result": result,
    }, ok


def check_online(config: ProviderConfig) -> tuple[str, bool]:
    """The credential check the poller makes at start (and every few minutes), once:
    a line saying what it found (the balance where the plugin reads one), and whether
    the instance can be used."""
    http = ProviderHttp(config.timeout)
    provider = config.type.cls(config.name, config.settings, http)
    try:
        if not provider.capabilities().verify:
            return f"{config.name}: {config.plugin} has no credential check; not contacted", True
        balance = provider.verify()
        shown = f", balance {balance.amount:.2f} {balance.currency}" if balance is not None else ""
        return f"{config.name}: credentials accepted{shown}", True
    except FetchError as e:
        return f"{config.name}: {e.outcome.value}: {redact(e.message)}", False
    except Exception as e:  # a plugin bug: its type only (its text may hold a secret)
        return f"{config.name}: plugin error: {type(e).__name__}", False
    finally:
        provider.close()

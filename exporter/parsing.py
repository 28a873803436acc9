"""Helpers for plugins turning provider JSON into observations.

Each raises :class:`~exporter.model.FetchError` with outcome ``invalid_response`` and
a message naming the field, so a plugin can let bad answers propagate as outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from .model import FetchError, Outcome


def invalid(message: str) -> FetchError:
    return FetchError(Outcome.INVALID_RESPONSE, message)


def field(data: Mapping[str, Any], *path: str) -> Any:
    """``field(d, "status", "reason", "detailedStatus")``: the nested value, or None."""
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def iso_time(value: Any, name: str) -> datetime | None:
    """ISO-8601 with or without fraction, ``Z`` or offset; zone-less means UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} is not a date string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as e:
        raise invalid(f"{name} is not an ISO-8601 time: {value[:40]!r}") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_time(
    value: Any, name: str, zone: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S"
) -> datetime | None:
    """A zone-less provider time (e.g. BSG's ``YYYY-MM-DD HH:MM:SS``) read in ``zone``."""
    if value is None or value == "" or (isinstance(value, str) and value.startswith("0000-00-00")):
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} is not a time string")
    try:
        return datetime.strptime(value.strip(), fmt).replace(tzinfo=zone)
    except ValueError as e:
        raise invalid(f"{name} is not a {fmt} time: {value[:40]!r}") from e


def price(value: Any, name: str = "price") -> float | None:
    """A price given as a JSON number or a numeric string; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid(f"{name} is a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise invalid(f"{name} is not a number: {str(value)[:40]!r}") from e
    if not math.isfinite(number) or number < 0:
        raise invalid(f"{name} must be a non-negative number, got {number}")
    return number


def integer(value: Any, name: str) -> int:
    """An integer given as a JSON number or a numeric string."""
    if isinstance(value, bool):
        raise invalid(f"{name} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise invalid(f"{name} is not an integer: {str(value)[:40]!r}")


def country(value: Any) -> str | None:
    """A short country code for the optional ``country`` label, or None."""
    if isinstance(value, str) and 2 <= len(value.strip()) <= 3 and value.strip().isalpha():
        return value.strip().upper()
    return None

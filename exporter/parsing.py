"""Helpers for plugins turning provider JSON into observations.

Each raises :class:`~exporter.model.FetchError` with outcome ``invalid_response`` and
a message naming the field, so a plugin can let bad answers propagate as outcomes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from .model import PRICE_CEILING, FetchError, Outcome

#: What ``json.loads`` raises on input it cannot read: bad syntax or encoding
#: (ValueError) and nesting deeper than the interpreter's stack (RecursionError).
JSON_ERRORS = (ValueError, RecursionError)


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


SQL_TIME = "%Y-%m-%d %H:%M:%S"


def local_time(value: Any, name: str, zone: tzinfo, fmt: str = SQL_TIME) -> datetime | None:
    """A zone-less provider time (e.g. BSG's ``YYYY-MM-DD HH:MM:SS``) read in ``zone``."""
    if value is None or value == "" or (isinstance(value, str) and value.startswith("0000-00-00")):
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} is not a time string")
    value = value.strip()
    if fmt == SQL_TIME and len(value) == 19 and value[4::3] == "-- ::":
        # YYYY-MM-DD HH:MM:SS (separators at 4, 7, 10, 13, 16) is read without strptime
        # (a tenth of its cost, same answer: fromisoformat wants digits everywhere else)
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).replace(tzinfo=zone)
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=zone)
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
    if number > PRICE_CEILING:
        raise invalid(f"{name} is over the ceiling of {PRICE_CEILING:g} per message: {number:g}")
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


class Lenient:
    """Reads a provider's *optional* fields without letting one bad field cost the
    answer: what cannot be read as documented is repaired when its meaning is clear
    (a time with an offset where none was expected, epoch milliseconds, a price with a
    decimal comma) or dropped, and its name is remembered in :attr:`problems` — pass
    them on as ``Observation(problems=...)`` and the core counts and logs them."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _note(self, name: str) -> None:
        if name not in self.problems:
            self.problems.append(name)

    def time(
        self, value: Any, name: str, zone: tzinfo | None = None, fmt: str = "%Y-%m-%d %H:%M:%S"
    ) -> datetime | None:
        """An ISO-8601 time, or with ``zone`` a zone-less ``fmt`` time read in that zone."""
        if value is None or value == "":
            return None
        try:
            return local_time(value, name, zone, fmt) if zone is not None else iso_time(value, name)
        except FetchError:
            self._note(name)
            return _any_time(value, zone or UTC)

    def price(self, value: Any, name: str = "price") -> float | None:
        try:
            return price(value, name)
        except FetchError:
            self._note(name)
        if isinstance(value, str):
            text = value.strip()
            if text.count(",") == 1 and "." not in text:
                with contextlib.suppress(ValueError):
                    number = float(text.replace(",", "."))
                    if math.isfinite(number) and 0 <= number <= PRICE_CEILING:
                        return number
        return None


def _any_time(value: Any, zone: tzinfo) -> datetime | None:
    """A time in any form whose meaning is unambiguous, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 100_000_000_000 else value  # epoch ms or s
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    return None

"""Durations as the config writes them: ``"500ms"``, ``"10s"``, ``"1h30m"``, ``"7d"`` or seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Return seconds; raise ValueError with a message that says what is accepted."""
    if isinstance(value, bool):
        raise ValueError('must be a duration like "30s", not a boolean')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _PART.sub("", text) == "":
            return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        raise ValueError(
            f'must be a duration like "500ms", "10s", "5m", "48h" or "7d", got {value!r}'
        )
    raise ValueError(
        f"must be a duration string or a number of seconds, got {type(value).__name__}"
    )


def format_duration(seconds: float) -> str:
    """The largest whole unit that states ``seconds`` exactly: 172800 → ``"2d"``,
    5400 → ``"90m"``; anything else in seconds (``"2.5s"``)."""
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"

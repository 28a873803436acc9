"""Secrets that cannot leak by accident.

A :class:`Secret` hides its value from ``repr``/``str``; the value is read only with
:meth:`Secret.reveal`. Every revealed value is also remembered so that :func:`redact`
(used by the log filter and by stored error texts) can blank it out of any text as a
second line of defence.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote

_known: set[str] = set()
_lock = threading.Lock()
MASK = "********"
MIN_LENGTH = 4  # very short values would blank out ordinary words in redacted text


class Secret:
    """A configuration value that must never appear in output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= MIN_LENGTH:
            forms = _forms(value)
            with _lock:
                _known.update(forms)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")


def _forms(value: str) -> set[str]:
    """The ways a value can show up in text: as itself, escaped as in ``repr`` or JSON
    (a newline as ``\\n``, a quote as ``\\"``, non-ASCII as ``\\u…``), and URL-encoded."""
    forms = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        value.strip(),
    }
    return {form for form in forms if len(form) >= MIN_LENGTH}


def redact(text: str) -> str:
    """Replace every known secret value (in any of its written forms) with a mask."""
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text

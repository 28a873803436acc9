"""Pushed delivery reports as a plugin sees them: the whole HTTP request, and the
answer it chooses.

The core authenticates nothing by itself: it hands the request to the provider's
``authenticate_callback`` (whose default checks ``?token=`` against the instance's
``callback_token`` in constant time), so a plugin can verify a signed webhook
(an HMAC of the body, a JWT in a header) instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from .model import Report
from .parsing import JSON_ERRORS


class InvalidCallback(ValueError):
    """A pushed delivery report the plugin could not understand; the message says why."""


class Headers(Mapping[str, str]):
    """Request headers; names compare case-insensitively."""

    def __init__(self, items: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = {name.lower(): value for name, value in pairs}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class CallbackRequest:
    """One request to ``/api/v1/callbacks/<instance>`` (GET, POST or PUT)."""

    method: str
    path: str
    headers: Headers
    query: Mapping[str, str]
    body: bytes
    remote_addr: str | None = None

    @classmethod
    def of(
        cls,
        body: bytes | str,
        *,
        content_type: str = "application/json",
        method: str = "POST",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        path: str = "/api/v1/callbacks/test",
    ) -> CallbackRequest:
        """A request built by hand, for tests of a plugin's callback parsing."""
        data = body.encode() if isinstance(body, str) else body
        return cls(
            method=method,
            path=path,
            headers=Headers({"Content-Type": content_type, **(headers or {})}),
            query=dict(query or {}),
            body=data,
        )

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case (``""`` when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON; raises :class:`InvalidCallback`."""

        try:
            return json.loads(self.body)
        except JSON_ERRORS as e:
            raise InvalidCallback("body is not JSON") from e

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body (last value of each name)."""
        try:
            return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}


@dataclass(frozen=True)
class CallbackReply:
    """What the plugin wants answered: the reports to apply, and optionally its own
    status and body (some providers expect a particular answer, e.g. plain ``OK``).
    ``body`` None answers ``{"accepted": <number of reports>}`` as JSON."""

    reports: Sequence[Report] = field(default_factory=tuple)
    status: int = 200
    body: str | bytes | None = None
    content_type: str = "application/json"

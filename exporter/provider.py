"""The base class every provider plugin subclasses.

A provider class knows one CPaaS API: it validates its own config table and its
message ids, fetches one message's status, and may fetch many at once or parse
pushed delivery reports. It returns :class:`~exporter.model.Observation` objects or
raises :class:`~exporter.model.FetchError`; the core owns scheduling, rate limits,
retries, backoff, state, accounting and metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .configtable import ConfigTable
from .http import ProviderHttp
from .model import FetchError, Observation, Status


class CallbackNotSupported(Exception):
    """Raised by :meth:`Provider.parse_callback` when the plugin cannot parse pushed reports."""


class InvalidCallback(ValueError):
    """A pushed delivery report the plugin could not understand; the message says why."""


class Provider(ABC):
    """One configured provider instance (``[providers.<name>]``).

    Subclasses set :attr:`plugin_name` (the value of ``plugin = "..."`` in the config)
    and implement :meth:`parse_settings` and :meth:`fetch`.
    """

    #: The ``plugin`` value a config table uses to pick this class.
    plugin_name: ClassVar[str]
    #: Provider statuses the plugin knows, mapped to normalised ones (documentation,
    #: contract tests and ``viber-exporter plugins`` read it; unlisted ones map to unknown).
    status_map: ClassVar[Mapping[str, Status]] = {}
    #: More than 1 makes the poller call :meth:`fetch_many` with up to this many ids.
    batch_size: ClassVar[int] = 1

    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        self.name = name
        self.settings = settings
        self.http = http

    @classmethod
    @abstractmethod
    def parse_settings(cls, table: ConfigTable) -> Any:
        """Validate the plugin's own keys of ``[providers.<name>]``.

        Read every key through ``table`` (which records each problem with its key path
        and reports keys nobody read as unknown); return an immutable settings object.
        The common keys (``plugin``, ``enabled``, ``concurrency``, ``rate_limit``,
        ``timeout``, ``tick``, ``schedule``, ``callback_token``) are handled by the core.
        """

    def check_id(self, message_id: str) -> str | None:
        """Return why ``message_id`` cannot be one of this provider's ids, or None if it can."""
        if not message_id or len(message_id) > 128:
            return "must be 1 to 128 characters"
        return None

    @abstractmethod
    def fetch(self, message_id: str) -> Observation:
        """Look up one message. Raise FetchError for anything but a usable answer."""

    def fetch_many(self, message_ids: Sequence[str]) -> Mapping[str, Observation | FetchError]:
        """Look up several messages in one call (only when :attr:`batch_size` > 1).

        Ids missing from the result are treated as ``not_found``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not fetch in batches")

    def parse_callback(self, body: bytes, content_type: str) -> list[tuple[str, Observation]]:
        """Turn a pushed delivery report into ``(message id, observation)`` pairs.

        Raise :class:`InvalidCallback` for a body that cannot be understood.
        """
        raise CallbackNotSupported(f"plugin {self.plugin_name!r} does not accept callbacks")

    def close(self) -> None:
        """Release connections; called on shutdown."""
        self.http.close()

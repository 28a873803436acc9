"""The base class every provider plugin subclasses (plugin API 1.0).

A provider class knows one CPaaS API. It declares or validates its own settings and
its message ids, and then does what its API allows: look one message up (``fetch``),
many at once (``fetch_many``), take pushed reports (``parse_callback``), hand out new
reports since last time (``drain``), check its credentials (``verify``). It returns
normalised :class:`~viber_exporter.model.Observation` objects or raises
:class:`~viber_exporter.model.FetchError`; the core owns scheduling, rate limits,
retries, backoff, state, accounting and metrics.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client.core import Metric

from .callbacks import CallbackReply, CallbackRequest
from .callbacks import InvalidCallback as InvalidCallback  # its home before 1.3
from .configtable import ConfigTable
from .declarations import Setting, read_settings
from .http import ProviderHttp
from .model import BadReport, FetchError, MessageRef, Observation, Page, Report, Status
from .secrets import Secret


class CallbackNotSupported(Exception):
    """Raised by :meth:`Provider.parse_callback` when the plugin takes no pushed reports."""


@dataclass(frozen=True)
class Balance:
    """The account balance a provider reports (``viber_provider_balance``)."""

    amount: float
    currency: str


#: how often a feed is drained when the plugin implements drain() and sets no interval
DEFAULT_DRAIN_INTERVAL = 60.0


@dataclass(frozen=True)
class Capabilities:
    """(1.3) What a provider class can do, read from the methods it implements: one
    way to declare a capability is to implement its method (class variables only tune
    one: ``batch_size``, ``drain_interval``, ``verify_interval``)."""

    #: looks messages up: implements :meth:`Provider.fetch` or :meth:`Provider.fetch_message`
    lookup: bool
    #: ids per lookup call: ``batch_size`` when it implements :meth:`Provider.fetch_many`
    batch: int
    #: lists campaigns: implements :meth:`Provider.fetch_campaign`
    campaigns: bool
    #: takes pushed reports: implements :meth:`Provider.parse_callback`
    callbacks: bool
    #: checks pushed reports itself: implements :meth:`Provider.authenticate_callback`
    signed_callbacks: bool
    #: has a report feed: implements :meth:`Provider.drain`
    feed: bool
    #: checks its credentials (and may read a balance): implements :meth:`Provider.verify`
    verify: bool


class Provider:
    """One configured provider instance (``[providers.<name>]``).

    Subclasses set :attr:`plugin_name` and either declare :attr:`settings_spec` or
    override :meth:`parse_settings`. Each capability is a method the class implements
    (:meth:`capabilities`): a provider that can look messages up implements
    :meth:`fetch` (or :meth:`fetch_message`), one with a feed :meth:`drain`, one that
    takes callbacks :meth:`parse_callback`, one that lists campaigns
    :meth:`fetch_campaign`.
    """

    #: The ``plugin`` value a config table uses to pick this class.
    plugin_name: ClassVar[str]
    #: Provider statuses the plugin knows, mapped to normalised ones (a
    #: :class:`~viber_exporter.StatusMap`; documentation, the contract kit and
    #: ``viber-exporter plugins`` read it).
    status_map: ClassVar[Mapping[str, Status]] = {}
    #: The plugin's own keys, for the default :meth:`parse_settings` and for
    #: ``viber-exporter plugins --settings``.
    settings_spec: ClassVar[Sequence[Setting]] = ()
    #: Defaults of the common ``concurrency`` and ``rate_limit`` keys for this API
    #: (None: the core's, 8 and 10).
    default_concurrency: ClassVar[int | None] = None
    default_rate_limit: ClassVar[float | None] = None
    #: More than 1 makes the poller call :meth:`fetch_many` with up to this many ids.
    batch_size: ClassVar[int] = 1
    #: (before 1.3) False for a push-only API with no lookup. Since 1.3 a class that
    #: implements neither :meth:`fetch` nor :meth:`fetch_message` is push-only anyway.
    polls: ClassVar[bool] = True
    #: Seconds between calls of :meth:`drain` (None: :data:`DEFAULT_DRAIN_INTERVAL`
    #: when the class implements it).
    drain_interval: ClassVar[float | None] = None
    #: Seconds between calls of :meth:`verify` (None: only at start).
    verify_interval: ClassVar[float | None] = 300.0
    #: Failure reasons that are about the recipient (not a Viber user, opted out, a
    #: handset out of reach) rather than the provider or the sender: counted with
    #: ``side="recipient"`` in ``viber_message_failures_by_side_total``, so an alert on
    #: provider-side failures is not paged by a bad recipient list.
    recipient_reasons: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, settings: Any, http: ProviderHttp) -> None:
        self.name = name
        self.settings = settings
        self.http = http

    @classmethod
    def capabilities(cls) -> Capabilities:
        """What this class can do: the methods it implements (see :class:`Capabilities`)."""

        def implements(name: str) -> bool:
            return getattr(cls, name) is not getattr(Provider, name)

        lookup = (implements("fetch") or implements("fetch_message")) and cls.polls
        return Capabilities(
            lookup=lookup,
            batch=max(1, cls.batch_size) if implements("fetch_many") else 1,
            campaigns=lookup and implements("fetch_campaign"),
            callbacks=implements("parse_callback"),
            signed_callbacks=implements("authenticate_callback"),
            feed=implements("drain") and (cls.drain_interval is None or cls.drain_interval > 0),
            verify=implements("verify"),
        )

    # -- configuration -----------------------------------------------------------------
    @classmethod
    def parse_settings(cls, table: ConfigTable) -> Any:
        """Validate the plugin's own keys of ``[providers.<name>]``.

        The default reads :attr:`settings_spec`. Override it for checks of your own:
        read every key through ``table`` (which records each problem with its key path
        and reports keys nobody read as unknown) and return an immutable object. The
        common keys (``plugin``, ``enabled``, ``concurrency``, ``rate_limit``,
        ``timeout``, ``tick``, ``schedule``, ``callback_token``) are the core's.
        """
        return read_settings(cls.settings_spec, table)

    def check_id(self, message_id: str) -> str | None:
        """Return why ``message_id`` cannot be one of this provider's ids, or None."""
        if not message_id or len(message_id) > 128:
            return "must be 1 to 128 characters"
        return None

    def check_fields(self, fields: Mapping[str, Any]) -> str | None:
        """Return why these registration ``fields`` are not acceptable, or None.

        Fields are plugin-defined extras of a registration (a campaign, a reference),
        stored with the message and given back in :class:`MessageRef`. The default
        accepts none.
        """
        if fields:
            return f"plugin {self.plugin_name!r} takes no fields (got {', '.join(sorted(fields))})"
        return None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Called once before the first call of any other lookup method (after a reload
        too, for a new or changed instance). The default does nothing."""

    def verify(self) -> Balance | None:
        """Check the credentials with a cheap call (a token, a balance), at start and
        every :attr:`verify_interval` seconds, so bad credentials show before the first
        message. Raise :class:`FetchError` when the check fails (``auth_error`` sets the
        provider down); return the account :class:`Balance` if the call tells it. The
        default checks nothing and returns None."""
        return None

    def metrics(self) -> Iterable[Metric]:
        """Extra metric families for ``/metrics``, built fresh on every scrape from what
        the instance already knows (never call the provider here). Names should start
        with ``viber_``; the default adds none."""
        return ()

    def close(self) -> None:
        """Release connections; called on shutdown and when a reload drops the instance."""
        self.http.close()

    # -- lookups ---------------------------------------------------------------------
    def fetch(self, message_id: str) -> Observation:
        """Look up one message. Raise FetchError for anything but a usable answer;
        ``Outcome.NOT_FOUND`` only when the API said it does not know the id."""
        raise NotImplementedError(f"{type(self).__name__} does not look messages up")

    def fetch_message(self, message: MessageRef) -> Observation:
        """Look up one message when its registration fields or sent time matter; the
        default calls :meth:`fetch` with the id."""
        return self.fetch(message.id)

    def fetch_many(self, message_ids: Sequence[str]) -> Mapping[str, Observation | FetchError]:
        """Look up several messages in one call (only when :attr:`batch_size` > 1).

        Ids missing from the result are treated as ``not_found``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not fetch in batches")

    # -- campaigns (plugin API 1.1) --------------------------------------------------------
    def check_campaign(self, campaign_id: str) -> str | None:
        """Return why ``campaign_id`` cannot be one of this provider's campaign ids, or
        None. Only asked when the class implements :meth:`fetch_campaign`."""
        if not campaign_id or len(campaign_id) > 128:
            return "must be 1 to 128 characters"
        return None

    def fetch_campaign(self, campaign_id: str) -> Iterator[Page]:
        """List every message of a campaign, one :class:`Page` per provider call.

        Write it as a generator: the core asks for one page at a time (each ``next()``
        is one call, paced by the instance's rate limit and counted as a request), and
        may stop early. Raise :class:`FetchError` from the page whose call failed
        (``not_found`` when the API says it does not know the campaign). Each report's
        message is then accounted for exactly as if it had been registered alone; a
        campaign is polled (all its pages) while any of its messages is watched. An
        API with another "many messages per call" listing (a batch, a time range) can
        implement this too, with its own kind of group id.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list campaigns")

    @classmethod
    def tracks_campaigns(cls) -> bool:
        """True when the class implements :meth:`fetch_campaign` (and looks up)."""
        return cls.capabilities().campaigns

    def drain(self) -> Sequence[Report | BadReport]:
        """The reports the provider has for us since the last call (a feed, e.g. a
        "new reports" endpoint). Called every :attr:`drain_interval` seconds; the
        reports go through the same accounting as polls and callbacks. A report you
        cannot read is a :class:`BadReport` in its place (1.3), so the others count;
        raise :class:`FetchError` only when the answer as a whole is unusable."""
        raise NotImplementedError(f"{type(self).__name__} has no report feed")

    # -- pushed reports ----------------------------------------------------------------
    def authenticate_callback(self, request: CallbackRequest, token: Secret | None) -> bool:
        """Whether this pushed request really comes from the provider.

        The default compares ``?token=`` with the instance's ``callback_token`` in
        constant time (no token configured: refuse). Override it to verify a signature
        (an HMAC of the body, a JWT); callbacks are then enabled without a token.
        """
        if token is None:
            return False
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), token.reveal().encode())

    def parse_callback(self, request: CallbackRequest) -> CallbackReply | Sequence[Report]:
        """Turn an authenticated pushed request into reports (and, if the provider
        expects a particular answer, a :class:`CallbackReply`).

        Raise :class:`InvalidCallback` for a request you cannot understand; the default
        raises :class:`CallbackNotSupported`.
        """
        raise CallbackNotSupported(f"plugin {self.plugin_name!r} does not accept callbacks")

    @classmethod
    def signs_callbacks(cls) -> bool:
        """True when the class verifies callbacks itself (overrides authenticate_callback)."""
        return cls.capabilities().signed_callbacks


@dataclass(frozen=True)
class ProviderType:
    """A registered provider class and the plugin it came from."""

    cls: type[Provider]
    plugin: str
    package: str
    version: str

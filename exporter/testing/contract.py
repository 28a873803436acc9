"""A contract test suite every provider plugin can run against its own fake server.

Subclass :class:`ProviderContract` in a test module (name it ``Test…``), set
``provider_class``, and implement three small methods that tell the kit how to talk
to your fake API::

    from viber_exporter.testing.contract import ProviderContract

    class TestAcmeContract(ProviderContract):
        provider_class = AcmeProvider
        valid_ids = ("12345",)
        invalid_ids = ("", "abc!")

        def settings(self, base_url):             # a valid config table for that URL
            return {"token": "t0ken", "base_url": base_url}

        def respond_status(self, httpserver, message_id, raw_status):
            httpserver.expect_request(f"/v1/messages/{message_id}").respond_with_json({...})

        def respond_error(self, httpserver, message_id, kind):
            ...  # kind is one of ERROR_KINDS

The suite then checks: config validation (every problem at once, unknown keys),
id validation, the status map (every raw status the plugin declares maps as declared
in any letter case, an unknown one maps to ``unknown``), outcomes for not-found / 401 /
429 / 5xx / timeout / malformed JSON, that no secret of the settings appears in any
``FetchError``, and invariants of every observation. Optional parts run when you
implement their method: ``callback_request`` (pushed reports: parsed, and refused
without credentials), ``respond_batch`` (``fetch_many``), ``respond_feed``
(``drain``: each report handed out once), ``respond_campaign`` (``fetch_campaign``:
every page read, one call each, each message once). A push-only plugin (``polls = False``) skips
the lookup tests. Needs the ``testing`` extra (pytest, pytest-httpserver).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
from pytest_httpserver import HTTPServer

from ..callbacks import CallbackReply, CallbackRequest
from ..configtable import ConfigTable, Problems
from ..http import ProviderHttp
from ..model import FetchError, Observation, Outcome, Report, Status
from ..provider import Provider
from ..secrets import Secret

#: The error answers :meth:`ProviderContract.respond_error` must be able to serve,
#: with the outcome the plugin must turn each into.
ERROR_KINDS: Mapping[str, Outcome] = {
    "not_found": Outcome.NOT_FOUND,
    "unauthorized": Outcome.AUTH_ERROR,
    "rate_limited": Outcome.RATE_LIMITED,
    "server_error": Outcome.SERVER_ERROR,
    "malformed": Outcome.INVALID_RESPONSE,
}
UNKNOWN_RAW_STATUS = "SOMETHING_NEW_2099"


def _silent_server() -> Iterator[str]:
    sock = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    sock.close()


class ProviderContract:
    """Base class of a plugin's contract tests. Override the attributes and methods below."""

    #: The Provider subclass under test.
    provider_class: ClassVar[type[Provider]]
    #: Ids the plugin must accept, and ids it must reject.
    valid_ids: ClassVar[tuple[str, ...]] = ()
    invalid_ids: ClassVar[tuple[str, ...]] = ("",)
    #: Extra keys of a table that break validation in several ways at once, with the
    #: keys expected among the problems (besides the unknown key the kit adds).
    invalid_settings: ClassVar[tuple[Mapping[str, Any], frozenset[str]]] = ({}, frozenset())
    #: Call timeout the kit gives the provider, in seconds.
    timeout: ClassVar[float] = 0.5

    @pytest.fixture
    def silent_server(self) -> Iterator[str]:
        """A TCP server that accepts connections and never answers (for timeouts)."""
        yield from _silent_server()

    # -- to implement ------------------------------------------------------------------
    def settings(self, base_url: str) -> dict[str, Any]:
        """A valid ``[providers.<name>]`` table (plugin keys only) for an API at ``base_url``."""
        raise NotImplementedError

    def respond_status(self, httpserver: HTTPServer, message_id: str, raw_status: str) -> None:
        """Make ``httpserver`` answer a lookup of ``message_id`` successfully with ``raw_status``."""
        raise NotImplementedError

    def respond_error(self, httpserver: HTTPServer, message_id: str, kind: str) -> None:
        """Make ``httpserver`` answer a lookup of ``message_id`` with the error ``kind``
        (a key of :data:`ERROR_KINDS`)."""
        raise NotImplementedError

    # -- optional: implement to have the kit check these too ----------------------------
    #: The instance's ``callback_token`` the kit passes to ``authenticate_callback``.
    callback_token: ClassVar[str | None] = "callback-token-for-the-contract"  # noqa: S105

    def callback_request(self, message_id: str, raw_status: str) -> CallbackRequest:
        """A pushed report of ``raw_status`` for ``message_id``, as the provider sends it
        (with its credentials: ``?token=`` or a signature)."""
        raise NotImplementedError

    def unauthenticated_callback(self, message_id: str, raw_status: str) -> CallbackRequest:
        """The same report without valid credentials; the default drops the query."""
        request = self.callback_request(message_id, raw_status)
        return CallbackRequest(request.method, request.path, request.headers, {}, request.body)

    def respond_batch(self, httpserver: HTTPServer, statuses: Mapping[str, str]) -> None:
        """Make ``httpserver`` answer one batch lookup (``fetch_many``) with these raw
        statuses by id; ids not in ``statuses`` are absent from the answer."""
        raise NotImplementedError

    def respond_feed(self, httpserver: HTTPServer, statuses: Mapping[str, str]) -> None:
        """Make ``httpserver`` hand out these reports (raw status by id) once, as the
        provider's feed does: the next call gets none."""
        raise NotImplementedError

    def campaign_id(self) -> str:
        """A campaign id the plugin accepts (for ``fetch_campaign``)."""
        raise NotImplementedError

    def campaign_message_ids(self, count: int) -> list[str]:
        """``count`` distinct message ids for a campaign's listing (default: the first of
        ``valid_ids`` with a digit appended; override if that is not an id of yours)."""
        return [f"{self.message_id()}{n}" for n in range(count)]

    def respond_campaign(
        self, httpserver: HTTPServer, campaign_id: str, pages: list[Mapping[str, str]]
    ) -> None:
        """Make ``httpserver`` list this campaign in these pages, in order (each a raw
        status by message id; ids from ``valid_ids``-like values of your provider)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------
    def parse(self, table: Mapping[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
        problems = Problems()
        config = ConfigTable(dict(table), "providers.test", problems)
        settings = self.provider_class.parse_settings(config)
        config.finish()
        return settings, problems.items

    def provider(self, base_url: str) -> Provider:
        settings, problems = self.parse(self.settings(base_url))
        assert not problems, f"settings() must be valid, got {problems}"
        return self.provider_class("test", settings, ProviderHttp(self.timeout))

    def message_id(self) -> str:
        assert self.valid_ids, "set valid_ids to at least one id your plugin accepts"
        return self.valid_ids[0]

    def secrets(self) -> list[str]:
        """Every secret value of the settings (to check none leaks)."""
        settings, _ = self.parse(self.settings("http://127.0.0.1:9"))
        values = settings.values() if isinstance(settings, Mapping) else vars(settings).values()
        return [v.reveal() for v in values if isinstance(v, Secret) and v.reveal()]

    def require_lookups(self) -> None:
        if not self.provider_class.capabilities().lookup:
            pytest.skip("push-only provider: no lookups")

    def _optional(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self, method)(*args)
        except NotImplementedError:
            pytest.skip(f"{method} not implemented by this contract")

    # -- the contract ------------------------------------------------------------------
    def test_contract_declares_a_plugin_name(self) -> None:
        name = getattr(self.provider_class, "plugin_name", None)
        assert isinstance(name, str) and name, "set plugin_name on the Provider subclass"

    def test_contract_valid_settings_parse(self, httpserver: HTTPServer) -> None:
        settings, problems = self.parse(self.settings(httpserver.url_for("").rstrip("/")))
        assert problems == []
        assert settings is not None

    def test_contract_reports_every_settings_problem_at_once(self, httpserver: HTTPServer) -> None:
        extra, expected = self.invalid_settings
        table = {**self.settings(httpserver.url_for("").rstrip("/")), **extra, "no_such_key_xyz": 1}
        _, problems = self.parse(table)
        paths = {path for path, _ in problems}
        assert "providers.test.no_such_key_xyz" in paths, (
            "unknown keys must be reported (read keys via the table)"
        )
        assert {f"providers.test.{key}" for key in expected} <= paths, problems
        assert all(path.startswith("providers.test") for path in paths), (
            "problems carry their key path"
        )

    def test_contract_ids(self) -> None:
        provider = self.provider("http://127.0.0.1:9")
        for good in self.valid_ids:
            assert provider.check_id(good) is None, good
        for bad in self.invalid_ids:
            problem = provider.check_id(bad)
            assert isinstance(problem, str) and problem, f"{bad!r} must be rejected with a message"

    def test_contract_status_map_is_complete(self) -> None:
        status_map = self.provider_class.status_map
        assert status_map, "declare status_map: every raw status the plugin knows"
        reached = set(status_map.values())
        assert {Status.PENDING, Status.FAILED} <= reached and reached & {
            Status.DELIVERED,
            Status.READ,
        }

    def test_contract_lookups_map_every_status_in_any_case(self, httpserver: HTTPServer) -> None:
        self.require_lookups()
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        for raw, expected in self.provider_class.status_map.items():
            for spelling in dict.fromkeys((raw, raw.upper(), raw.lower(), raw.title())):
                httpserver.clear()
                self.respond_status(httpserver, self.message_id(), spelling)
                observation = provider.fetch(self.message_id())
                assert observation.status is expected, f"{spelling!r} must map to {expected.value}"
                self.check_invariants(observation)
        httpserver.clear()
        self.respond_status(httpserver, self.message_id(), UNKNOWN_RAW_STATUS)
        assert provider.fetch(self.message_id()).status is Status.UNKNOWN

    @pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
    def test_contract_error_outcomes(self, httpserver: HTTPServer, kind: str) -> None:
        self.require_lookups()
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        self.respond_error(httpserver, self.message_id(), kind)
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome is ERROR_KINDS[kind], kind
        self.check_no_secret(info.value)

    def test_contract_timeout(self, silent_server: str) -> None:
        self.require_lookups()
        provider = self.provider(silent_server)
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome is Outcome.TIMEOUT
        self.check_no_secret(info.value)

    def test_contract_unreachable(self) -> None:
        self.require_lookups()
        provider = self.provider("http://127.0.0.1:9")
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome in (Outcome.CONNECTION_ERROR, Outcome.AUTH_ERROR)
        self.check_no_secret(info.value)

    def test_contract_callbacks(self) -> None:
        provider = self.provider("http://127.0.0.1:9")
        token = Secret(self.callback_token) if self.callback_token else None
        for raw, expected in self.provider_class.status_map.items():
            request = self._optional("callback_request", self.message_id(), raw)
            assert provider.authenticate_callback(request, token), "its own report is authentic"
            answer = provider.parse_callback(request)
            reports = answer.reports if isinstance(answer, CallbackReply) else answer
            assert [Report(*r).message_id for r in reports] == [self.message_id()], raw
            observation = Report(*reports[0]).observation
            assert observation.status is expected, raw
            self.check_invariants(observation)
        forged = self.unauthenticated_callback(
            self.message_id(), next(iter(self.provider_class.status_map))
        )
        assert not provider.authenticate_callback(forged, token), (
            "a report without credentials is refused"
        )

    def test_contract_batch_lookup(self, httpserver: HTTPServer) -> None:
        if self.provider_class.capabilities().batch <= 1:
            pytest.skip("batch_size is 1: no fetch_many")
        ids = list(self.valid_ids)
        assert len(ids) >= 2, "give at least two valid_ids to test batches"
        raws = list(self.provider_class.status_map)
        statuses = {message_id: raws[i % len(raws)] for i, message_id in enumerate(ids[:-1])}
        self._optional("respond_batch", httpserver, statuses)
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        answers = provider.fetch_many(ids)
        for message_id, raw in statuses.items():
            answer = answers[message_id]
            assert isinstance(answer, Observation), (message_id, answer)
            assert answer.status is self.provider_class.status_map[raw]
        assert ids[-1] not in answers or isinstance(answers[ids[-1]], FetchError)

    def test_contract_feed(self, httpserver: HTTPServer) -> None:
        if not self.provider_class.capabilities().feed:
            pytest.skip("no drain_interval: not a feed")
        raws = list(self.provider_class.status_map)
        statuses = {message_id: raws[i % len(raws)] for i, message_id in enumerate(self.valid_ids)}
        self._optional("respond_feed", httpserver, statuses)
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        reports = [Report(*r) for r in provider.drain()]
        assert {r.message_id: r.observation.status for r in reports} == {
            message_id: self.provider_class.status_map[raw] for message_id, raw in statuses.items()
        }
        for report in reports:
            self.check_invariants(report.observation)
        assert list(provider.drain()) == [], "each report is handed out once"

    def test_contract_campaign_listing(self, httpserver: HTTPServer) -> None:
        if not self.provider_class.tracks_campaigns():
            pytest.skip("no fetch_campaign: no campaign listings")
        campaign = self._optional("campaign_id")
        raws = list(self.provider_class.status_map)
        ids = self.campaign_message_ids(5)
        pages = [
            {ids[0]: raws[0], ids[1]: raws[1 % len(raws)]},
            {ids[2]: raws[2 % len(raws)], ids[3]: raws[3 % len(raws)]},
            {ids[4]: raws[4 % len(raws)]},
        ]
        self._optional("respond_campaign", httpserver, campaign, pages)
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        assert provider.check_campaign(campaign) is None, "campaign_id() must be valid"
        listing = provider.fetch_campaign(campaign)
        seen: dict[str, Status] = {}
        for number in range(len(pages)):
            before = len(httpserver.log)
            page = next(listing)
            assert len(httpserver.log) - before >= 1, "each page is a call of its own"
            for report in page.reports:
                self.check_invariants(report.observation)
                assert report.message_id not in seen, "each message once"
                seen[report.message_id] = report.observation.status
            assert page.total in (None, len(ids)), f"page {number}: total is the whole campaign's"
        assert list(listing) == [], "the listing ends after the last page"
        expected = {
            i: self.provider_class.status_map[raw] for page in pages for i, raw in page.items()
        }
        assert seen == expected

    def check_no_secret(self, error: FetchError) -> None:
        text = f"{error} {error.message} {error!r}"
        for secret in self.secrets():
            assert secret not in text, "a FetchError must never carry a secret"

    @staticmethod
    def check_invariants(observation: Observation) -> None:
        times = [
            t
            for t in (observation.sent_at, observation.delivered_time, observation.read_time)
            if t is not None
        ]
        assert times == sorted(times), "sent ≤ delivered ≤ read"
        for price in [observation.price, *(leg.price for leg in observation.fallbacks)]:
            assert price is None or price >= 0
        # A reason may come with any status (since 1.3 the core keeps a failure's only).
        assert observation.reason is None or isinstance(observation.reason, str)

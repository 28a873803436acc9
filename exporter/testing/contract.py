"""A contract test suite every provider plugin can run against its own fake server.

Subclass :class:`ProviderContract` in a test module (name it ``Test…``), set
``provider_class``, and implement three small methods that tell the kit how to talk
to your fake API::

    from exporter.testing.contract import ProviderContract

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
id validation, the status map (every raw status the plugin declares maps as declared,
an unknown one maps to ``unknown``), outcomes for not-found / 401 / 429 / 5xx /
timeout / malformed JSON, and invariants of every observation. Needs pytest and
pytest-httpserver (``httpserver`` fixture).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
from pytest_httpserver import HTTPServer

from ..configtable import ConfigTable, Problems
from ..http import ProviderHttp
from ..model import FetchError, Observation, Outcome, Status
from ..provider import Provider

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

    def test_contract_status_map_is_complete(self, httpserver: HTTPServer) -> None:
        status_map = self.provider_class.status_map
        assert status_map, "declare status_map: every raw status the plugin knows"
        reached = set(status_map.values())
        assert {Status.PENDING, Status.FAILED} <= reached and reached & {
            Status.DELIVERED,
            Status.READ,
        }
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        for raw, expected in status_map.items():
            httpserver.clear()
            self.respond_status(httpserver, self.message_id(), raw)
            observation = provider.fetch(self.message_id())
            assert observation.status is expected, raw
            self.check_invariants(observation)
        httpserver.clear()
        self.respond_status(httpserver, self.message_id(), UNKNOWN_RAW_STATUS)
        assert provider.fetch(self.message_id()).status is Status.UNKNOWN

    @pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
    def test_contract_error_outcomes(self, httpserver: HTTPServer, kind: str) -> None:
        provider = self.provider(httpserver.url_for("").rstrip("/"))
        self.respond_error(httpserver, self.message_id(), kind)
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome is ERROR_KINDS[kind], kind

    def test_contract_timeout(self, silent_server: str) -> None:
        provider = self.provider(silent_server)
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome is Outcome.TIMEOUT

    def test_contract_unreachable(self) -> None:
        provider = self.provider("http://127.0.0.1:9")
        with pytest.raises(FetchError) as info:
            provider.fetch(self.message_id())
        assert info.value.outcome in (Outcome.CONNECTION_ERROR, Outcome.AUTH_ERROR)

    @staticmethod
    def check_invariants(observation: Observation) -> None:
        times = [
            t
            for t in (observation.sent_at, observation.delivered_at, observation.read_at)
            if t is not None
        ]
        assert times == sorted(times), "sent ≤ delivered ≤ read"
        for price in [observation.price, *(leg.price for leg in observation.fallbacks)]:
            assert price is None or price >= 0
        if observation.reason is not None:
            assert observation.status in (Status.FAILED, Status.EXPIRED, Status.UNKNOWN), (
                "reason only on failure"
            )
        if observation.status is Status.READ and observation.delivered_at and observation.read_at:
            assert observation.delivered_at <= observation.read_at

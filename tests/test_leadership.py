"""Several replicas on one PostgreSQL: leases, gauges that add up, database faults,
moving state, and three replicas whose leader is killed again and again."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter, Registration
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import BackgroundServer, HttpServer
from viber_exporter.store.rows import Counted
from viber_exporter.testing.mock import MockProviders, exporter_config
from viber_exporter.web.landing import landing_page
from viber_exporter.web.views import providers_json

from .children import QUICK
from .conftest import REQUIRE_PG, sample, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


class Proxy:
    """A TCP forwarder in front of the database, which a test can cut (as a lost network
    would) and restore; while cut, it closes every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def through(proxy: Proxy, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()


@pytest.fixture
def mock() -> Iterator[tuple[MockProviders, BackgroundServer]]:
    providers = MockProviders(QUICK, seed=3)
    server = BackgroundServer(providers, "127.0.0.1", 0)
    server.start()
    yield providers, server
    server.stop()


def replica(host: PluginHost, mock_url: str, state_url: str, tmp_path: Path, tick: str = "100ms",
            name: str | None = None) -> Exporter:
    limits = {"rate_limit": 1000, "concurrency": 4}
    named = {"replica_name": name} if name else {}
    text = exporter_config(mock_url, tmp_path / "unused.db", exporter={"state_url": state_url, **named},
                           polling={"tick": tick, "schedule": ["200ms"], "read_window": "1s"},
                           routee=limits, bsg=limits)
    exporter = Exporter(parse_config(text, host.provider_types(), {}), host)
    exporter.start()
    return exporter


def raw(exporter: Exporter, name: str, **labels: str) -> float | None:
    """A sample's value, None when the series is absent."""
    return exporter.registry.get_sample_value(name, labels)


def leads(exporter: Exporter, provider: str) -> bool:
    return sample(exporter, "viber_exporter_leader", provider=provider) == 1


def test_a_sqlite_exporter_leads_every_instance(builtin_host, tmp_path, mock):
    _, server = mock
    text = exporter_config(server.url, tmp_path / "s.db")
    exporter = Exporter(parse_config(text, builtin_host.provider_types(), {}), builtin_host)
    exporter.start()
    try:
        assert leads(exporter, "routee") and leads(exporter, "bsg")
        assert raw(exporter, "viber_provider_up", provider="bsg") is not None
    finally:
        exporter.stop()


def test_two_replicas_split_the_instances_and_only_leaders_export_store_gauges(builtin_host, tmp_path, mock, pg_url):
    providers, server = mock
    first = replica(builtin_host, server.url, pg_url, tmp_path, name="replica-a")
    second = replica(builtin_host, server.url, pg_url, tmp_path, name="replica-b")
    try:
        # A fair share each, after the first one gives one back.
        wait_for(lambda: sum(leads(r, p) for r in (first, second) for p in ("routee", "bsg")) == 2
                 and any(leads(first, p) for p in ("routee", "bsg"))
                 and any(leads(second, p) for p in ("routee", "bsg")), timeout=30)
        for provider in ("routee", "bsg"):
            leader, other = (first, second) if leads(first, provider) else (second, first)
            assert sample(other, "viber_exporter_leader", provider=provider) == 0
            for gauge in ("viber_messages_watched", "viber_provider_up", "viber_poll_lag_seconds",
                          "viber_provider_last_success_timestamp_seconds"):
                assert raw(leader, gauge, provider=provider) is not None, gauge
                assert raw(other, gauge, provider=provider) is None, f"{gauge} from a follower"
            assert raw(other, "viber_messages", provider=provider, status="pending") is None
            assert {p["name"]: p["polled_here"] for p in providers_json(leader)}[provider] is True
            assert {p["name"]: p["polled_here"] for p in providers_json(other)}[provider] is False
        # each replica's landing page and providers JSON name the replica that polls
        # each instance (as of the last lease renewal: wait for one after the split)
        wait_for(lambda: all(p["polled_by"] in ("replica-a", "replica-b") for p in providers_json(first)))
        names = {p["name"]: p["polled_by"] for p in providers_json(first)}
        assert sorted(names.values()) == ["replica-a", "replica-b"], names
        assert names == {p["name"]: p["polled_by"] for p in providers_json(second)}
        page = landing_page(first)
        assert page.count("polled by replica-b") == 1 and "polled by replica-a (this replica)" in page
        # Registrations on either replica; each message counted once, by whichever committed.
        plans = [providers.simulation.create(p, time.time()) for p in ("routee", "bsg") for _ in range(10)]
        first.register([Registration(p.provider, p.id) for p in plans[::2]])
        second.register([Registration(p.provider, p.id) for p in plans[1::2]])
        wait_for(lambda: all(s.next_poll is None for s in first.store.page(limit=100)) and
                 len(first.store.page(limit=100)) == 20, timeout=30)
        def counted(provider: str, status: str) -> float:
            return sum(sample(r, "viber_message_status_transitions_total", provider=provider, status=status)
                       for r in (first, second))

        for provider in ("routee", "bsg"):
            # A change is stored, then counted: wait for the counters to catch up with the store.
            stored = sum(1 for s in first.store.page(provider=provider, limit=100) if s.counted & Counted.DELIVERED)
            wait_for(lambda provider=provider: counted(provider, "pending") == 10, timeout=10)
            wait_for(lambda provider=provider, stored=stored: counted(provider, "delivered") == stored, timeout=10)
            leader = first if leads(first, provider) else second
            # The leader's store-wide gauges see the other replica's writes (recounted).
            wait_for(lambda leader=leader, provider=provider: sum(
                sample(leader, "viber_messages", provider=provider, status=s.value) for s in Status) == 10,
                timeout=10)
    finally:
        first.stop()
        second.stop()


def test_a_stopped_leader_hands_over_at_once(builtin_host, tmp_path, mock, pg_url):
    _, server = mock
    first = replica(builtin_host, server.url, pg_url, tmp_path)
    assert leads(first, "routee") and leads(first, "bsg"), "alone, it takes every lease at start"
    second = replica(builtin_host, server.url, pg_url, tmp_path)
    try:
        first.stop()  # a clean stop releases the leases: no wait for them to expire
        wait_for(lambda: leads(second, "routee") and leads(second, "bsg"), timeout=10)
    finally:
        second.stop()


def test_a_replica_taking_over_polls_at_once_not_at_its_next_tick(builtin_host, tmp_path, mock, pg_url):
    providers, server = mock
    # With a one-hour tick, only the takeover itself can make the second replica poll soon.
    first = replica(builtin_host, server.url, pg_url, tmp_path, tick="1h")
    second = replica(builtin_host, server.url, pg_url, tmp_path, tick="1h")
    try:
        wait_for(lambda: leads(first, "bsg") or leads(second, "bsg"), timeout=10)
        leader, other = (first, second) if leads(first, "bsg") else (second, first)
        plan = providers.simulation.create("bsg", time.time())
        other.register([Registration("bsg", plan.id)])
        leader.stop()  # hands its leases over
        wait_for(lambda: leads(other, "bsg"), timeout=10)
        # the answer is counted as a call a moment before it is stored: wait on the store
        wait_for(lambda: other.store.get("bsg", plan.id).polls >= 1, timeout=10)
    finally:
        first.stop()
        second.stop()


def test_a_lost_database_makes_ready_and_writes_503_then_everything_resumes(builtin_host, tmp_path, mock, pg_url):
    providers, server = mock
    target = urlsplit(pg_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    exporter = replica(builtin_host, server.url, through(proxy, pg_url), tmp_path)
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    try:
        plan = providers.simulation.create("routee", time.time())
        body = {"messages": [{"provider": "routee", "id": plan.id}]}
        assert requests.post(f"{http.url}/api/v1/messages", json=body, timeout=10).status_code == 200
        assert requests.get(f"{http.url}/-/ready", timeout=10).status_code == 200
        proxy.cut()
        assert requests.get(f"{http.url}/-/ready", timeout=10).status_code == 503
        later = providers.simulation.create("routee", time.time())
        refused = requests.post(f"{http.url}/api/v1/messages", timeout=10,
                                json={"messages": [{"provider": "routee", "id": later.id}]})
        assert refused.status_code == 503 and "nothing was stored" in refused.json()["error"]
        assert requests.get(f"{http.url}/metrics", timeout=10).status_code == 200, "scrapes go on"
        lookup = requests.get(f"{http.url}/api/v1/messages/routee/{plan.id}", timeout=10)
        assert lookup.status_code == 503 and "state store" in lookup.json()["error"]
        proxy.restore()
        back = time.monotonic()
        wait_for(lambda: requests.get(f"{http.url}/-/ready", timeout=10).status_code == 200, timeout=30)
        resumed = time.monotonic() - back
        assert requests.post(f"{http.url}/api/v1/messages", timeout=10,
                             json={"messages": [{"provider": "routee", "id": later.id}]}).json()["accepted"] == 1
        wait_for(lambda: exporter.store.counts()[1].get("routee", 0) == 0, timeout=30)
        wait_for(lambda: sample(exporter, "viber_message_status_transitions_total", provider="routee",
                                status="pending") == 2, timeout=10)
        print(f"ready again {resumed:.2f}s after the database came back")
    finally:
        http.stop()
        exporter.stop()
        proxy.close()


# -- three replicas, the leader killed three times, the database restarted ---------------------


@pytest.mark.slow
def test_three_replicas_survive_leader_kills_and_a_database_restart(pg_url, tmp_path):
    from replicasoak import run_replicas

    can_restart = os.geteuid() == 0 and Path("/etc/postgresql").is_dir()
    if not can_restart and not REQUIRE_PG:
        pytest.skip("restarting PostgreSQL needs root and Debian's pg_ctlcluster")
    result = run_replicas(pg_url, replicas=3, kills=3, restart_db_after=2, seed=11, workdir=tmp_path)
    print(f"failovers {result.failovers}, first polls {result.first_polls}, "
          f"database restart: ready again after {result.db_resumed}")
    assert result.kills == 3 and result.registered > 100, "traffic ran between the kills"
    assert result.missing == 0, "every registration answered 200 was stored"
    assert result.difference() == {}, "summed over the replicas' last scrapes, the counters are the truth"
    assert len(result.failovers) == 3 and len(result.first_polls) == 3, "each orphaned instance was taken over"
    # The figures are measured in bench/failover.py; here only a generous bound for a slow machine.
    assert max(result.first_polls) < 30
    assert result.db_resumed is not None and result.db_resumed < 15


def test_a_leader_that_cannot_renew_stops_polling_before_its_lease_can_pass():
    from viber_exporter.errors import StoreError
    from viber_exporter.leadership import MARGIN, Leadership

    class Database:
        shared = True
        reachable = True

        def heartbeat(self, holder, names, ttl):
            if not self.reachable:
                raise StoreError("cannot reach the database")
            return set(names)

        def leaders(self):
            return {"bsg": "us#1.abc"}

    database = Database()
    leadership = Leadership(database, ttl=MARGIN + 0.5)  # ours for 0.5 s after a renewal
    assert leadership.beat(["bsg"]) == {"bsg"} and leadership.leads("bsg")
    database.reachable = False
    assert leadership.beat(["bsg"]) == frozenset() and leadership.leads("bsg"), "kept until its time is up"
    wait_for(lambda: not leadership.leads("bsg"), timeout=5)
    assert leadership.held() == frozenset()
    database.reachable = True
    assert leadership.beat(["bsg"]) == {"bsg"}, "taken again once renewed"

"""Replicas soak: several exporters on one PostgreSQL database, registrations spread over
all of them, the polling leader killed with SIGKILL again and again (and, optionally,
the database restarted), then the books checked against the mock's ground truth.

Used by the test suite (three replicas, three kills, one database restart) and by
``bench/failover.py`` (the failover time over many kills). What it measures:

* every registration answered 200 is stored (any replica, any moment);
* the counters summed over every replica's last scrape equal the ground truth exactly:
  each kill happens in a quiet moment (registrations paused, the mock providers
  holding their answers), so the scrape just before it is the replica's last word;
* the failover time: from the kill until a live replica leads each provider instance
  the dead one led, and until it has polled;
* after a database restart, how long until every replica is ready again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from prometheus_client.parser import text_string_to_metric_families

from viber_exporter.server import BackgroundServer
from viber_exporter.testing.mock import MockProviders, exporter_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crashsoak import FAST, _free_port, _Traffic

LIMITS = {"concurrency": 4, "rate_limit": 400}


@dataclass
class Replica:
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ReplicaSoakResult:
    kills: int = 0
    registered: int = 0
    missing: int = 0
    failovers: list[float] = field(default_factory=list)  # seconds from kill to a new leader
    first_polls: list[float] = field(default_factory=list)  # ... and to its first answer
    db_resumed: float | None = None  # seconds from the database's start to all ready
    counted: dict[str, Counter[str]] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    def difference(self) -> dict[str, dict[str, int]]:
        """Counted minus true, per provider and status, where they differ."""
        found: dict[str, dict[str, int]] = {}
        for provider, t in self.truth.items():
            counted = self.counted.get(provider, Counter())
            for status in set(t["transitions"]) | set(counted):
                diff = counted[status] - t["transitions"].get(status, 0)
                if diff:
                    found.setdefault(provider, {})[status] = diff
        return found


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]] | None:
    try:
        text = requests.get(f"{url}/metrics", timeout=3).text
    except requests.RequestException:
        return None
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def led(samples: dict[str, list[tuple[dict[str, str], float]]] | None) -> set[str]:
    """The provider instances a scrape says its replica leads."""
    if samples is None:
        return set()
    return {labels["provider"] for labels, v in samples.get("viber_exporter_leader", []) if v == 1}


def ok_calls(samples: dict[str, list[tuple[dict[str, str], float]]] | None, provider: str) -> float:
    if samples is None:
        return 0.0
    return sum(
        v
        for labels, v in samples.get("viber_provider_requests_total", [])
        if labels.get("provider") == provider and labels.get("outcome") == "ok"
    )


def transitions(samples: dict[str, list[tuple[dict[str, str], float]]] | None) -> dict[str, Counter[str]]:
    counted: dict[str, Counter[str]] = {}
    for labels, value in (samples or {}).get("viber_message_status_transitions_total", []):
        counted.setdefault(labels["provider"], Counter())[labels["status"]] += int(value)
    return counted


def restart_database() -> None:
    """Stop and start the local PostgreSQL cluster (Debian's pg_ctlcluster, as root)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    for action in ("stop", "start"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
            check=True,
            capture_output=True,
        )


def run_replicas(
    state_url: str,
    *,
    replicas: int = 3,
    kills: int = 3,
    restart_db_after: int | None = None,
    seed: int = 1,
    workdir: Path,
    settle_timeout: float = 90.0,
) -> ReplicaSoakResult:
    """Run the soak; ``restart_db_after``: restart the database after that many kills."""
    rng = random.Random(seed)
    mock = MockProviders(FAST, seed=seed)
    mock_server = BackgroundServer(mock, "127.0.0.1", 0, name="mock")
    mock_server.start()
    env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    fleet: list[Replica] = []
    for n in range(replicas):
        port = _free_port()
        config = workdir / f"replica{n}.toml"
        config.write_text(
            exporter_config(
                mock_server.url,
                workdir / "unused.db",
                exporter={
                    "listen": f"127.0.0.1:{port}",
                    "log_level": "warning",
                    "state_url": state_url,
                },
                # every read of the FAST mix comes within 5 s of delivery, so every one counts
                polling={"tick": "100ms", "schedule": ["200ms", "300ms"], "read_window": "5s"},
                routee=LIMITS,
                bsg=LIMITS,
            )
        )
        fleet.append(Replica(port, config))
    result = ReplicaSoakResult()
    totals: dict[str, Counter[str]] = {}

    def start(replica: Replica) -> None:
        command = [sys.executable, "-m", "viber_exporter.cli", "run", "--config", str(replica.config)]
        log = (workdir / f"{replica.port}.log").open("ab")
        replica.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if scrape(replica.url) is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"replica on port {replica.port} did not come up")

    def add(samples: dict[str, list[tuple[dict[str, str], float]]] | None) -> None:
        for provider, statuses in transitions(samples).items():
            totals.setdefault(provider, Counter()).update(statuses)

    def leaders() -> dict[str, Replica]:
        found: dict[str, Replica] = {}
        for replica in fleet:
            for provider in led(scrape(replica.url)):
                found[provider] = replica
        return found

    traffic = _Traffic(mock_server.url, [r.url for r in fleet])
    try:
        for replica in fleet:
            start(replica)
        traffic.start()
        for k in range(kills):
            time.sleep(rng.uniform(1.0, 2.5))
            current = leaders()
            if not current:
                time.sleep(1.0)
                current = leaders()
            victim = current.get(rng.choice(sorted(current))) if current else fleet[0]
            assert victim is not None
            # A quiet moment: no registration in flight, no provider answer arriving.
            with traffic.quiet:
                mock.answering.clear()
                time.sleep(0.5)  # answers already received are recorded by now
                last = scrape(victim.url)
                assert victim.process is not None
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()
                killed_at = time.monotonic()
                mock.answering.set()
            result.kills += 1
            add(last)
            orphaned = led(last)
            others = [r for r in fleet if r is not victim]
            calls_before = {p: sum(ok_calls(scrape(r.url), p) for r in others) for p in orphaned}
            deadline = killed_at + 60
            taken: float | None = None
            while time.monotonic() < deadline and orphaned:
                now_led = set().union(*(led(scrape(r.url)) for r in others))
                if taken is None and orphaned <= now_led:
                    taken = time.monotonic() - killed_at
                    result.failovers.append(taken)
                if taken is not None and all(
                    sum(ok_calls(scrape(r.url), p) for r in others) > calls_before[p]
                    for p in orphaned
                ):
                    result.first_polls.append(time.monotonic() - killed_at)
                    break
                time.sleep(0.1)
            start(victim)
            if restart_db_after is not None and k + 1 == restart_db_after:
                restart_database()
                back = time.monotonic()
                deadline = back + 60
                while time.monotonic() < deadline:
                    ready = [
                        requests.get(f"{r.url}/-/ready", timeout=3).status_code == 200 for r in fleet
                    ]
                    if all(ready):
                        result.db_resumed = time.monotonic() - back
                        break
                    time.sleep(0.1)
        traffic.stop.set()
        traffic.join(timeout=10)
        with psycopg.connect(state_url, autocommit=True) as db:
            deadline = time.monotonic() + settle_timeout
            while time.monotonic() < deadline:
                row = db.execute("SELECT COUNT(*) FROM messages WHERE next_poll IS NOT NULL").fetchone()
                if row is not None and row[0] == 0:
                    break
                time.sleep(0.2)
            stored = {(p, i) for p, i in db.execute("SELECT provider, id FROM messages").fetchall()}
        time.sleep(0.5)
        for replica in fleet:
            add(scrape(replica.url))
            assert replica.process is not None
            replica.process.send_signal(signal.SIGTERM)
        for replica in fleet:
            assert replica.process is not None
            replica.process.wait(timeout=20)
        result.registered = len(traffic.accepted)
        result.missing = sum(1 for item in traffic.accepted if item not in stored)
        result.counted = totals
        result.truth = mock.simulation.truth(time.time(), only=stored)
        return result
    finally:
        traffic.stop.set()
        mock.answering.set()
        for replica in fleet:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.kill()
        mock_server.stop()

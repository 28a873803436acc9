"""Crash-safety soak: kill -9 a running exporter at random moments while messages are
registered and polled against the mock providers, restart it, and check the books.

Used by the test suite (a few kills) and by ``bench/crash_soak.py`` (many).
Properties checked:

* every registration answered 200 is in the store after each restart;
* summed across runs, no counter exceeds the mock's ground truth (nothing counted
  twice), and once everything settled the sums fall short of it by at most what was
  in flight at the kills.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from viber_exporter.server import BackgroundServer
from viber_exporter.testing.mock import MockProviders, exporter_config
from viber_exporter.testing.simulation import Mix

# Every message settles within seconds (no never-settling fate), so a run can end.
FAST = Mix(
    pending=0.0,
    delivery_median=0.4,
    read_median=0.4,
    final_median=0.4,
    sigma=0.4,
    visible_after=0.2,
)
STATUSES = ("pending", "delivered", "read", "failed", "expired")


@dataclass
class SoakResult:
    kills: int
    registered: int
    missing_after_restart: int
    counted: dict[str, Counter[str]] = field(
        default_factory=dict
    )  # provider → status → sum over runs (floats)
    cost: dict[str, float] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    def excess(self) -> dict[str, dict[str, float]]:
        """Counts above the ground truth (double counting): must be empty."""
        found: dict[str, dict[str, float]] = {}
        for provider, statuses in self.counted.items():
            truth = self.truth.get(provider, {}).get("transitions", {})
            for status, value in statuses.items():
                if value > truth.get(status, 0):
                    found.setdefault(provider, {})[status] = value - truth.get(status, 0)
        return found

    def shortfall(self) -> int:
        """Transitions the counters missed (events in flight at the kills)."""
        return sum(
            max(0, truth - self.counted.get(p, Counter())[s])
            for p, t in self.truth.items()
            for s, truth in t["transitions"].items()
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(mock_url: str, state: Path, port: int) -> str:
    limits = {"concurrency": 4, "rate_limit": 400}
    return exporter_config(
        mock_url,
        state,
        exporter={"listen": f"127.0.0.1:{port}", "log_level": "warning"},
        polling={
            "tick": "100ms",
            "schedule": ["200ms", "300ms"],
            "read_window": "1s",
            "not_found_grace": "30s",
        },
        routee=limits,
        bsg=limits,
    )


def _scrape(url: str) -> tuple[dict[str, Counter[str]], dict[str, float]] | None:
    try:
        text = requests.get(f"{url}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    counted: dict[str, Counter[str]] = {}
    cost: dict[str, float] = {}
    # Counter values are whole numbers; int() keeps Counter[str] honest for mypy.
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "viber_message_status_transitions_total":
                counted.setdefault(s.labels["provider"], Counter())[s.labels["status"]] += int(
                    s.value
                )
            elif s.name == "viber_message_cost_total":
                cost[s.labels["provider"]] = cost.get(s.labels["provider"], 0.0) + s.value
    return counted, cost


class _Traffic(threading.Thread):
    """Creates messages at the mock and registers them, at each exporter URL in turn;
    remembers every 200. Holding ``quiet`` pauses it between two registrations."""

    def __init__(self, mock_url: str, url: str | list[str]) -> None:
        super().__init__(daemon=True)
        self.mock_url = mock_url
        self.urls = [url] if isinstance(url, str) else url
        self.accepted: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self.quiet = threading.Lock()

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            provider = ("routee", "bsg")[n % 2]
            url = self.urls[n % len(self.urls)]
            n += 1
            with self.quiet:
                try:
                    created = session.post(
                        f"{self.mock_url}/mock/messages",
                        json={"provider": provider, "count": 3},
                        timeout=2,
                    )
                    items = [
                        {"provider": m["provider"], "id": m["id"], "sent_at": m["sent_at"]}
                        for m in created.json()["messages"]
                    ]
                    answer = session.post(
                        f"{url}/api/v1/messages", json={"messages": items}, timeout=2
                    )
                    if answer.status_code == 200:
                        self.accepted += [(i["provider"], i["id"]) for i in items]
                except (requests.RequestException, ValueError):
                    pass  # the exporter is down: the application would retry later
            self.stop.wait(0.05)


def run_soak(
    kills: int, seed: int = 1, workdir: Path | None = None, settle_timeout: float = 60.0
) -> SoakResult:
    rng = random.Random(seed)
    mock = MockProviders(FAST, seed=seed)
    mock_server = BackgroundServer(mock, "127.0.0.1", 0, name="mock")
    mock_server.start()
    tmp = tempfile.TemporaryDirectory(prefix="crash-soak-") if workdir is None else None
    base = workdir or Path(tmp.name)  # type: ignore[union-attr]
    state, port = base / "state.db", _free_port()
    (base / "config.toml").write_text(_config(mock_server.url, state, port))
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "viber_exporter.cli", "run", "--config", str(base / "config.toml")]
    result = SoakResult(kills=0, registered=0, missing_after_restart=0)
    totals: dict[str, Counter[str]] = {}
    cost: dict[str, float] = {}

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _scrape(url) is not None:
                return process
            time.sleep(0.05)
        raise RuntimeError("the exporter did not come up")

    def add(scraped: tuple[dict[str, Counter[str]], dict[str, float]] | None) -> None:
        if scraped is None:
            return
        for provider, statuses in scraped[0].items():
            totals.setdefault(provider, Counter()).update(statuses)
        for provider, value in scraped[1].items():
            cost[provider] = cost.get(provider, 0.0) + value

    traffic = _Traffic(mock_server.url, url)
    try:
        process = start()
        traffic.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            last = _scrape(url)  # the counters as late as we can see them before the crash
            process.send_signal(signal.SIGKILL)
            process.wait()
            result.kills += 1
            add(last)
            accepted = list(traffic.accepted)
            process = start()
            db = sqlite3.connect(state)
            stored = set(db.execute("SELECT provider, id FROM messages").fetchall())
            db.close()
            result.missing_after_restart += sum(1 for item in accepted if item not in stored)
        traffic.stop.set()
        traffic.join(timeout=5)
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            db = sqlite3.connect(state)
            watched = db.execute(
                "SELECT COUNT(*) FROM messages WHERE next_poll IS NOT NULL"
            ).fetchone()[0]
            db.close()
            if watched == 0:
                break
            time.sleep(0.2)
        time.sleep(0.3)
        add(_scrape(url))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        result.registered = len(traffic.accepted)
        result.counted, result.cost = totals, cost
        # The ground truth covers exactly the messages the exporter stored: not those whose
        # registration failed while it was down, but also those stored whose 200 was lost
        # to a kill or a client timeout (the client did not see them accepted).
        db = sqlite3.connect(state)
        stored = set(db.execute("SELECT provider, id FROM messages").fetchall())
        db.close()
        result.truth = mock.simulation.truth(time.time(), only=stored)
        return result
    finally:
        traffic.stop.set()
        if "process" in locals() and process.poll() is None:
            process.kill()
        mock_server.stop()
        if tmp is not None:
            tmp.cleanup()

"""Shared helpers of the benchmark scripts: machine description, mock process, stores."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

# Imported where used, so that bench scripts that need neither (poll_throughput) also
# run against older checkouts, side by side (docs/benchmarks.md).
if TYPE_CHECKING:
    from viber_exporter.labels import Bounds, LabelSettings
    from viber_exporter.store.base import Store


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def filesystem(path: str = tempfile.gettempdir()) -> str:
    """The filesystem under the temporary directory (state files live there)."""
    best = ("?", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if path.startswith(mount) and len(mount) >= len(best[1]):
                best = (kind, mount)
    except OSError:
        pass
    return f"{best[0]} at {best[1] or '?'}"


@contextmanager
def state_location(state_url: str | None, tmp: str, name: str) -> Iterator[str]:
    """Where a benchmark's store lives: a file in ``tmp``, or — with ``--state-url`` — a
    fresh schema of that PostgreSQL database, dropped afterwards."""
    if not state_url:
        yield str(Path(tmp) / name)
        return
    import psycopg

    schema = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(state_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        # libpq's options parameter: every connection of this URL uses the schema
        yield f"{state_url}{'&' if '?' in state_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(state_url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def state_url_option(parser: Any) -> None:
    parser.add_argument("--state-url", default=None, metavar="URL",
                        help="run on PostgreSQL at this URL (a scratch schema in it) instead of a SQLite file")


def store_kind(state_url: str | None) -> str:
    return "PostgreSQL (a scratch schema)" if state_url else "SQLite (a temporary file)"


def header(title: str, method: str) -> None:
    print(f"== {title}")
    print(f"machine: {machine()}; state files on {filesystem()}")
    print(f"method:  {method}")


@contextmanager
def mock_process(latency: float = 0.0) -> Iterator[str]:
    """The mock providers in their own process, so they do not share our CPU accounting."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("mock_server.py")), "--latency", str(latency)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        for _ in range(100):
            try:
                requests.get(f"{url}/mock/faults", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


#: the labels case of the scrape and memory benchmarks: 5 declared labels of 20 values
LABELS_CASE = "".join(f"[metrics.labels.l{k}]\nmax_values = 20\n" for k in range(5))


def labels_settings() -> LabelSettings:
    from viber_exporter.labels import DeclaredLabel, LabelSettings

    return LabelSettings(tuple(DeclaredLabel(f"l{k}", max_values=20) for k in range(5)))


def labels_case(n: int) -> dict[str, str]:
    """Message ``n``'s labels in the labels case: each of the 5 labels takes one of 20
    values, spread so that every combination turns up (the combination bound decides)."""
    return {f"l{k}": f"v{(n // 20**k) % 20}" for k in range(5)}


def fill(
    store: Store,
    provider: str,
    count: int,
    next_poll_in: float,
    now: float | None = None,
    batch: int = 50_000,
    bounds: Bounds | None = None,
) -> None:
    """Put ``count`` watched messages in the store (ids 1…count), in large transactions;
    with ``bounds``, each carries ``labels_case(n)``, bounded as a registration is."""
    from viber_exporter.store.base import NewMessage

    now = time.time() if now is None else now
    for start in range(1, count + 1, batch):
        numbers = range(start, min(start + batch, count + 1))
        items = [NewMessage(str(n), None, labels=labels_case(n) if bounds else None) for n in numbers]
        store.register({provider: (items, next_poll_in)}, now, max_watched=10**9, bounds=bounds)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def verdict(ok: bool) -> str:
    return "target met" if ok else "TARGET MISSED"


@contextmanager
def served_exporter(
    host: Any, path: Path, size: int, *, labelled: bool, prepare: Any = None
) -> Iterator[Any]:
    """A running exporter with ``size`` watched BSG messages (nothing due, so the
    poller idles as between sweeps), served over HTTP on loopback; yields
    ``(exporter, server)``. ``prepare(exporter)`` runs before it starts."""
    from prometheus_client import CollectorRegistry

    from viber_exporter.config.load import parse_config
    from viber_exporter.engine import Exporter
    from viber_exporter.server import HttpServer

    config = parse_config(f"""
[exporter]
state_path = {json.dumps(str(path))}
[providers.bsg]
plugin = "bsg"
api_key = "live_bench"
base_url = "http://127.0.0.1:9"
{LABELS_CASE if labelled else ""}
""", host.provider_types(), {})
    exporter = Exporter(config, host, registry=CollectorRegistry())
    fill(exporter.store, "bsg", size, next_poll_in=86400, bounds=exporter.label_bounds)
    if prepare is not None:
        prepare(exporter)
    exporter.start()
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    try:
        yield exporter, server
    finally:
        server.stop()
        exporter.stop()


def measure_cases(
    sizes: list[int], measure: Any, describe: Any
) -> dict[tuple[int, bool], float]:
    """Run ``measure(size, tmp, host, labelled) -> (median_ms, detail)`` for every size,
    without and with the labels case, printing a line each (``describe(detail)`` says
    what the detail is); returns the medians by (size, labelled)."""
    from viber_exporter.pluginhost import PluginHost

    host = PluginHost()
    host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
    results: dict[tuple[int, bool], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for labelled in (False, True):
            for size in sizes:
                median, detail = measure(size, Path(tmp), host, labelled)
                results[size, labelled] = median
                case = "labels case" if labelled else "no labels  "
                print(f"{size:>9} messages, {case}: median {median:.2f} ms ({describe(detail)})")
    return results

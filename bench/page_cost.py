"""Landing page cost: GET / latency with small and large stores.

    python bench/page_cost.py                    # 1,000 and 1,000,000 messages
    python bench/page_cost.py --sizes 1000,20000 # CI size

The exporter has counted outcomes for 20,000 of its messages (delivered, read, failed,
with latencies and costs), so the cards, charts and, in the labels case (5 declared
labels of 20 values), the per-label tables have something to show.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests
from common import header, measure_cases, median_ms, served_exporter, verdict

from viber_exporter.engine import Exporter
from viber_exporter.events import Cost, Latency, Transition
from viber_exporter.logs import setup_logging
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost

COUNTED = 20_000


def count_outcomes(exporter: Exporter, size: int) -> None:
    """Outcome events for the first COUNTED messages, as polls would have produced."""
    events: list[object] = []
    for n in range(1, min(size, COUNTED) + 1):
        stored = exporter.store.get("bsg", str(n))
        labels = stored.labels if stored is not None else None
        status = (Status.DELIVERED, Status.READ, Status.FAILED)[n % 3]
        if status is not Status.FAILED:
            events.append(Transition("bsg", str(n), Status.DELIVERED, None, None, labels))
            events.append(Latency("bsg", str(n), "delivery", 1.0 + n % 60, labels))
            events.append(Cost("bsg", "EUR", "viber", 0.02, None, labels))
        if status is Status.READ:
            events.append(Transition("bsg", str(n), Status.READ, None, None, labels))
        if status is Status.FAILED:
            events.append(Transition("bsg", str(n), Status.FAILED, "expired", None, labels))
    exporter.metrics.record(events)  # type: ignore[arg-type]


def page_median(size: int, samples: int, tmp: Path, host: PluginHost, labelled: bool) -> tuple[float, int]:
    """The median GET / in ms, and the page's size in bytes."""
    with served_exporter(host, tmp / f"page-{size}-{labelled}.db", size, labelled=labelled,
                         prepare=lambda exporter: count_outcomes(exporter, size)) as (_, server):
        session = requests.Session()
        url = f"{server.url}/"
        for _ in range(5):
            session.get(url, timeout=10)
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            page = session.get(url, timeout=10).text
            times.append(time.perf_counter() - t0)
        assert f"{size:,} messages" in page, "the page reports the store"
    return median_ms(times), len(page.encode())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    setup_logging("warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    header("landing page cost", f"median of {args.samples} GET / over HTTP on loopback, exporter running with "
           f"N watched messages in its store, one provider instance, outcomes counted for {COUNTED:,}")
    results = measure_cases(
        sizes, lambda size, tmp, host, labelled: page_median(size, args.samples, tmp, host, labelled), lambda length: f"{length:,} bytes"
    )
    for labelled in (False, True):
        large = results[sizes[-1], labelled]
        case = "labels case" if labelled else "no labels"
        print(f"{case}, largest: {large:.2f} ms [target ≤ 50 ms: {verdict(large <= 50)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

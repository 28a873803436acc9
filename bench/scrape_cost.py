"""Scrape cost: GET /metrics latency with small and large stores.

    python bench/scrape_cost.py                    # 1,000 and 1,000,000 messages
    python bench/scrape_cost.py --sizes 1000,20000 # CI size

Each size is measured without message labels and with the labels case: 5 declared
labels of 20 values each, the messages spread over every combination, so the default
combination bound (1,000) is reached and every labelled outcome series exists.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import requests
from common import header, measure_cases, median_ms, served_exporter, verdict

from viber_exporter.logs import setup_logging
from viber_exporter.pluginhost import PluginHost


def scrape_median(size: int, samples: int, tmp: Path, host: PluginHost, labelled: bool) -> tuple[float, int]:
    """The median scrape in ms, and the number of samples a scrape holds."""
    with served_exporter(host, tmp / f"scrape-{size}-{labelled}.db", size, labelled=labelled) as (_, server):
        session = requests.Session()
        url = f"{server.url}/metrics"
        for _ in range(5):
            session.get(url, timeout=10)
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            text = session.get(url, headers={"Accept": "application/openmetrics-text"}, timeout=10).text
            times.append(time.perf_counter() - t0)
        samples_in_scrape = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        watched = re.search(r'^viber_messages_watched\{provider="bsg"\} (\S+)$', text, re.MULTILINE)
        assert watched is not None and float(watched.group(1)) == size, "the scrape reports the store"
    return median_ms(times), samples_in_scrape


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    setup_logging("warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    header("scrape cost", f"median of {args.samples} GET /metrics (OpenMetrics) over HTTP on loopback, exporter running with "
           "N watched messages in its store and one provider instance")
    results = measure_cases(
        sizes, lambda size, tmp, host, labelled: scrape_median(size, args.samples, tmp, host, labelled), lambda series: f"{series} samples per scrape"
    )
    for labelled in (False, True):
        small, large = results[sizes[0], labelled], results[sizes[-1], labelled]
        case = "labels case" if labelled else "no labels"
        print(f"{case}, largest: {large:.2f} ms [target ≤ 50 ms: {verdict(large <= 50)}]; "
              f"ratio largest/smallest {large / small:.2f} [target ≤ 2: {verdict(large / small <= 2)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

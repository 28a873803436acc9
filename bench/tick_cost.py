"""Tick cost: finding the due messages among N watched (the store query a tick runs).

    python bench/tick_cost.py                      # 1,000,000 watched
    python bench/tick_cost.py --messages 20000     # CI size
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import fill, header, median_ms, state_location, state_url_option, store_kind, verdict

from viber_exporter.store.location import open_store


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1024, help="due messages fetched per tick (the poller's batch)")
    parser.add_argument("--samples", type=int, default=200)
    state_url_option(parser)
    args = parser.parse_args()
    header("tick cost", f"{args.messages} watched messages, {args.due} of them due; a tick's store work = "
           "store.due(provider, now, batch) + store.oldest_next_poll(provider); median of "
           f"{args.samples} runs; store: {store_kind(args.state_url)}")
    with tempfile.TemporaryDirectory() as tmp, state_location(args.state_url, tmp, "tick.db") as location:
        store = open_store(location)
        now = time.time()
        fill(store, "bsg", args.messages - args.due, next_poll_in=3600, now=now)
        store.register({"bsg": ([(f"due{n}", None) for n in range(args.due)], -10.0)}, now, max_watched=10**9)
        store.register({"routee": ([(str(n), None) for n in range(50_000)], -10.0)}, now, max_watched=10**9)
        times = []
        for _ in range(args.samples):
            t0 = time.perf_counter()
            due = store.due("bsg", time.time(), args.due)
            store.oldest_next_poll("bsg")
            times.append(time.perf_counter() - t0)
        assert len(due) == args.due
        store.close()
    median = median_ms(times)
    print(f"median {median:.2f} ms per tick ({median / args.due * 1000:.1f} µs per due message) "
          f"[target ≤ 20 ms: {verdict(median <= 20)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

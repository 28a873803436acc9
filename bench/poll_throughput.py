"""Poll throughput: one full sweep of N watched messages against a mock BSG answering
with a fixed latency, with `concurrency` calls in flight; versus a naive loop.

    python bench/poll_throughput.py                       # 20,000 messages, 50 ms, concurrency 32
    python bench/poll_throughput.py --messages 500        # CI size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import requests
from common import header, mock_process, state_location, state_url_option, store_kind, verdict
from prometheus_client import CollectorRegistry

from viber_exporter.config import parse_config  # (this import path works on older versions too)
from viber_exporter.engine import Exporter, Registration
from viber_exporter.logs import setup_logging
from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.mock import BSG_API_KEY


def calls(exporter: Exporter) -> float:
    """Provider calls made so far, whatever their outcome (read from that counter alone:
    collecting the whole registry 50 times a second would be the benchmark's CPU, not
    the exporter's)."""
    return sum(
        s.value for family in exporter.metrics.requests.collect()
        for s in family.samples if s.name.endswith("_total")
    )


def count_polled(exporter: Exporter, ids: list[str]) -> int:
    stored = (exporter.store.get("bsg", i) for i in ids)
    return sum(row is not None and row.polls >= 1 for row in stored)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline", type=int, default=100, help="lookups timed for the naive loop")
    state_url_option(parser)
    args = parser.parse_args()
    setup_logging("warning")
    n, latency, concurrency = args.messages, args.latency, args.concurrency
    header("poll throughput", f"{n} watched BSG messages, mock answering in {latency * 1000:.0f} ms (separate process), "
           f"concurrency {concurrency}, rate_limit 100000; one sweep = every message polled once; "
           "CPU = this process's CPU time (the exporter's) per poll; "
           f"store: {store_kind(args.state_url)}")
    with mock_process(latency) as url, tempfile.TemporaryDirectory() as tmp, \
            state_location(args.state_url, tmp, "bench.db") as location:
        ids = []
        while len(ids) < n:
            answer = requests.post(f"{url}/mock/messages", json={"provider": "bsg", "fate": "pending", "count": min(10_000, n - len(ids))}, timeout=60)
            ids += [m["id"] for m in answer.json()["messages"]]
        host = PluginHost()
        host.load(environ={"VIBER_EXPORTER_LOAD_PLUGINS": ""})
        config = parse_config(f"""
[exporter]
{"state_url" if args.state_url else "state_path"} = {json.dumps(location)}
[polling]
tick = "200ms"
schedule = ["1ms", "1h"]
[providers.bsg]
plugin = "bsg"
api_key = "{BSG_API_KEY}"
base_url = "{url}"
concurrency = {concurrency}
rate_limit = 100000
""", host.provider_types(), {})
        exporter = Exporter(config, host, registry=CollectorRegistry())
        for start in range(0, n, 10_000):
            exporter.register([Registration("bsg", i) for i in ids[start:start + 10_000]])
        cpu0, wall0 = time.process_time(), time.monotonic()
        exporter.start()
        deadline = time.monotonic() + max(600.0, n * latency)
        while calls(exporter) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        # The requests counter moves when an answer arrives, a moment before the answer
        # is written: give the last writes that moment before counting what was stored.
        settle = time.monotonic() + 30.0
        while (polled := count_polled(exporter, ids)) < n and time.monotonic() < settle:
            time.sleep(0.05)
        exporter.stop()
        session = requests.Session()
        b0 = time.monotonic()
        for message_id in ids[: args.baseline]:
            session.get(f"{url}/rest/viber/{message_id}", headers={"X-API-KEY": BSG_API_KEY}, timeout=10)
        per_call = (time.monotonic() - b0) / args.baseline
    ideal = n * latency / concurrency
    efficiency = ideal / wall
    cpu_ms = cpu / n * 1000
    baseline = per_call * n
    print(f"messages polled:        {polled} of {n}")
    print(f"sweep:                  {wall:.2f} s (ideal N·L/C = {ideal:.2f} s) → efficiency {efficiency:.0%} "
          f"[target ≥ 80 %: {verdict(efficiency >= 0.8)}]")
    print(f"exporter CPU per poll:  {cpu_ms:.2f} ms [target ≤ 1 ms: {verdict(cpu_ms <= 1.0)}]")
    print(f"naive baseline:         one lookup after another with plain requests: {per_call * 1000:.1f} ms each "
          f"→ {baseline:.1f} s for {n}; speed-up {baseline / wall:.1f}×")
    return 0 if polled == n else 1


if __name__ == "__main__":
    raise SystemExit(main())

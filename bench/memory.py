"""Memory: peak RSS of `viber-exporter run` with N watched messages in its store.

    python bench/memory.py                         # 1,000,000 watched
    python bench/memory.py --messages 20000        # CI size
    python bench/memory.py --labels                # the labels case: 5 labels of 20 values

The store is filled first; the exporter then starts on it (counting the store into its
gauges), polls a due slice of the messages against a mock provider, and is scraped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from common import LABELS_CASE, fill, header, labels_case, labels_settings, mock_process, verdict

from viber_exporter.labels import Bounds
from viber_exporter.store.base import NewMessage
from viber_exporter.store.sqlite import SqliteStore
from viber_exporter.testing.mock import BSG_API_KEY


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--run", type=float, default=20.0, help="seconds the exporter runs")
    parser.add_argument("--labels", action="store_true",
                        help="5 declared labels of 20 values, the messages spread over every combination")
    args = parser.parse_args()
    case = " in the labels case (5 declared labels of 20 values)" if args.labels else ""
    header("memory", f"peak RSS (VmHWM) of `viber-exporter run` with {args.messages} watched messages{case}, running "
           f"{args.run:g} s: start-up count of the store, ticks polling 5,000 due messages against the mock, scrapes")
    with tempfile.TemporaryDirectory() as tmp, mock_process() as mock_url:
        state = Path(tmp) / "mem.db"
        store = SqliteStore(state)
        labels = LABELS_CASE if args.labels else ""
        bounds = Bounds(labels_settings(), {}) if args.labels else None
        fill(store, "bsg", args.messages - 5000, next_poll_in=86400, bounds=bounds)
        due = [NewMessage(f"9{n:08d}", labels=labels_case(n) if args.labels else None) for n in range(5000)]
        store.register({"bsg": (due, 0.0)}, time.time(), max_watched=10**9, bounds=bounds)
        store.close()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = Path(tmp) / "config.toml"
        config.write_text(f"""
[exporter]
listen = "127.0.0.1:{port}"
state_path = {json.dumps(str(state))}
log_level = "warning"
[polling]
tick = "1s"
[providers.bsg]
plugin = "bsg"
api_key = "{BSG_API_KEY}"
base_url = "{mock_url}"
concurrency = 16
rate_limit = 1000
{labels}""")
        process = subprocess.Popen(["viber-exporter", "run", "--config", str(config)],
                                   env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""})
        try:
            deadline = time.monotonic() + args.run
            scrapes, text = 0, ""
            while time.monotonic() < deadline:
                try:
                    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    scrapes += 1
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            peak = peak_rss_mb(process.pid)
            if args.labels:
                assert any(line.startswith("viber_messages{") and 'l0="v' in line for line in text.splitlines()), \
                    "the scrape shows the labels"
        finally:
            process.terminate()
            process.wait(timeout=15)
    print(f"peak RSS {peak:.0f} MB with {args.messages} watched{case} ({scrapes} scrapes) "
          f"[target ≤ 300 MB: {verdict(peak <= 300)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Registration: POST /api/v1/messages in batches of 1,000 to a running exporter
(its own process), each batch durable (committed with fsync) before its 200.

    python bench/registration.py                   # 200,000 messages
    python bench/registration.py --messages 5000   # CI size
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
from common import header, state_location, state_url_option, store_kind, verdict


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    state_url_option(parser)
    args = parser.parse_args()
    header("registration", f"{args.messages} messages POSTed in batches of {args.batch} from one client to "
           "`viber-exporter run` in another process; rate = messages / wall time, all accepted; "
           f"store: {store_kind(args.state_url)}")
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe, \
            state_location(args.state_url, tmp, "reg.db") as location:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        config = Path(tmp) / "config.toml"
        config.write_text(f"""
[exporter]
listen = "127.0.0.1:{port}"
{"state_url" if args.state_url else "state_path"} = {json.dumps(location)}
log_level = "warning"
[polling]
schedule = ["1h"]
max_watched = {args.messages + 1}
[providers.bsg]
plugin = "bsg"
api_key = "live_bench"
base_url = "http://127.0.0.1:9"
""")
        env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
        process = subprocess.Popen(["viber-exporter", "run", "--config", str(config)], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.05)
            session = requests.Session()
            bodies = [
                json.dumps({"messages": [{"provider": "bsg", "id": str(n)} for n in range(start, min(start + args.batch, args.messages))]})
                for start in range(0, args.messages, args.batch)
            ]
            accepted = 0
            t0 = time.perf_counter()
            for body in bodies:
                answer = session.post(f"{url}/api/v1/messages", data=body, headers={"Content-Type": "application/json"}, timeout=60)
                accepted += answer.json()["accepted"]
            elapsed = time.perf_counter() - t0
        finally:
            process.terminate()
            process.wait(timeout=15)
    rate = accepted / elapsed
    print(f"accepted {accepted} of {args.messages} in {elapsed:.2f} s: {rate:,.0f} messages/s "
          f"[target ≥ 20,000/s: {verdict(rate >= 20_000)}]")
    return 0 if accepted == args.messages else 1


if __name__ == "__main__":
    raise SystemExit(main())

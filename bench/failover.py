"""Failover: replicas on one PostgreSQL database, the polling leader killed with SIGKILL
again and again; how long until another replica leads and polls its provider instances.

    python bench/failover.py --state-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/failover.py --state-url … --kills 2      # CI size
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import header, state_location, verdict
from replicasoak import run_replicas

from viber_exporter.leadership import HEARTBEAT, LEASE_TTL


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-url", default="postgresql://postgres@127.0.0.1:5432/postgres", metavar="URL",
                        help="the PostgreSQL database (a scratch schema in it)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--restart-db", action="store_true",
                        help="also restart the local PostgreSQL (pg_ctlcluster, as root) after the first kill")
    args = parser.parse_args()
    header("failover", f"{args.replicas} replicas (`viber-exporter run`) on one PostgreSQL database, polling the "
           f"mock providers; registrations spread over all; {args.kills} times the leader of a provider "
           "instance is killed with SIGKILL (in a quiet moment: the scrape just before is its last word) and "
           "restarted; failover = from the kill until a live replica reports viber_exporter_leader 1 for "
           "each instance the dead one led, and until one of its calls succeeded; "
           f"lease {LEASE_TTL:g} s, heartbeat {HEARTBEAT:g} s, tick 100 ms")
    with tempfile.TemporaryDirectory() as tmp, state_location(args.state_url, tmp, "") as url:
        result = run_replicas(url, replicas=args.replicas, kills=args.kills, seed=args.seed, workdir=Path(tmp),
                              restart_db_after=1 if args.restart_db else None)
    leads, polls = result.failovers, result.first_polls
    print(f"kills: {result.kills}; registrations accepted: {result.registered}, not stored: {result.missing}")
    print(f"new leader after: {', '.join(f'{t:.1f}' for t in leads)} s "
          f"(median {statistics.median(leads):.1f}, max {max(leads):.1f})")
    print(f"first poll after: {', '.join(f'{t:.1f}' for t in polls)} s "
          f"(median {statistics.median(polls):.1f}, max {max(polls):.1f}) "
          f"[target ≤ 15 s: {verdict(max(polls) <= 15)}]")
    if args.restart_db:
        resumed = "never" if result.db_resumed is None else f"{result.db_resumed:.2f} s"
        print(f"database restarted: every replica ready again {resumed} after it accepted connections "
              f"[target ≤ 5 s: {verdict(result.db_resumed is not None and result.db_resumed <= 5)}]")
    wrong = result.difference()
    print(f"counters summed over replicas vs the mock's ground truth: {wrong or 'exact'}")
    return 0 if not wrong and not result.missing and len(polls) == result.kills else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Crash-safety soak: many kill -9s of a running exporter under traffic.

    python bench/crash_soak.py --kills 30
"""

from __future__ import annotations

import argparse

from common import header, verdict
from crashsoak import run_soak

from viber_exporter.logs import setup_logging


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    setup_logging("warning")
    header("crash soak", f"`viber-exporter run` killed with SIGKILL {args.kills} times at random moments (0.3-1.5 s apart) "
           "while a client registers simulated messages and the exporter polls the mock providers; restarted each time")
    result = run_soak(args.kills, seed=args.seed)
    truth = sum(sum(t["transitions"].values()) for t in result.truth.values())
    counted = sum(sum(c.values()) for c in result.counted.values())
    print(f"kills survived:            {result.kills}")
    print(f"registrations answered 200: {result.registered}; missing after a restart: {result.missing_after_restart}")
    print(f"double counts:             {sum(sum(v.values()) for v in result.excess().values())} (counters above the mock's ground truth)")
    print(f"transitions counted:       {counted} of {truth} (short by {result.shortfall()}: events in flight at the kills)")
    ok = result.missing_after_restart == 0 and not result.excess()
    print(f"[target: 0 registrations lost, 0 double counts: {verdict(ok)}]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

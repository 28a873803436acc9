"""The mock providers on waitress, a keep-alive WSGI server, for benchmarks.

Werkzeug's development server (used by the demo and the tests) closes every
connection; a real provider keeps them open, and reconnecting on every call would
charge the exporter for TCP handshakes a real deployment does not pay.
"""

from __future__ import annotations

import argparse
import socket

from waitress import serve

from viber_exporter.testing.mock import Faults, MockProviders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=96)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    serve(MockProviders(faults=Faults(latency=args.latency)), host="127.0.0.1", port=port,
          threads=args.threads, connection_limit=1000, _quiet=True)


if __name__ == "__main__":
    main()

"""The ``viber-exporter`` console script.

For ``run`` and ``demo``, SIGTERM, SIGINT and SIGHUP are blocked here, before the
command line's imports and before any thread exists, so a signal sent while the
exporter is still starting (``systemctl reload`` right after ``start``) waits for the
main loop instead of killing the process. See :mod:`viber_exporter.signals`.
"""

from __future__ import annotations

import signal
import sys

LONG_RUNNING = ("run", "demo")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in LONG_RUNNING:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

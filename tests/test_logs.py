"""The command line's log handler follows sys.stderr instead of holding on to a stale one."""

from __future__ import annotations

import io
import logging
import sys

from viber_exporter.logs import setup_logging


def test_logging_writes_to_the_current_stderr_even_after_the_old_one_closed(monkeypatch):
    first, second, complaints = io.StringIO(), io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        setup_logging("info", "text")
        logging.getLogger("viber_exporter.test").info("one")
        assert "one" in first.getvalue()
        first.close()  # what a test runner does with the stream it captured into
        monkeypatch.setattr(sys, "stderr", second)
        monkeypatch.setattr(logging, "raiseExceptions", True)
        logging.getLogger("viber_exporter.test").info("two")
        assert "two" in second.getvalue()
        assert "Logging error" not in second.getvalue() + complaints.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

"""Every benchmark script runs at a small size, so the scripts keep working.

They print figures; they assert nothing about speed (that is what docs/benchmarks.md
records). A script that crashes, or finds wrong results, fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench"

SMALL = {
    "poll_throughput.py": ["--messages", "300", "--latency", "0.01", "--concurrency", "8", "--baseline", "10"],
    "scrape_cost.py": ["--sizes", "100,2000", "--samples", "5"],
    "tick_cost.py": ["--messages", "5000", "--due", "200", "--samples", "10"],
    "registration.py": ["--messages", "2000"],
    "memory.py": ["--messages", "8000", "--run", "2"],
    "crash_soak.py": ["--kills", "2"],
    "calls_per_message.py": ["--messages", "100"],
}


@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_at_small_size(script):
    result = subprocess.run([sys.executable, str(BENCH / script), *SMALL[script]], capture_output=True, text=True,
                            timeout=300, cwd=BENCH.parent, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "machine:" in result.stdout and "method:" in result.stdout
    assert "target" in result.stdout


def test_every_script_is_exercised():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py", "mock_server.py", "crashsoak.py"}
    assert scripts == set(SMALL)

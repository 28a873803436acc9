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
    "page_cost.py": ["--sizes", "100,2000", "--samples", "5"],
    "tick_cost.py": ["--messages", "5000", "--due", "200", "--samples", "10"],
    "registration.py": ["--messages", "2000"],
    "memory.py": ["--messages", "8000", "--run", "2", "--labels"],
    "crash_soak.py": ["--kills", "2"],
    "calls_per_message.py": ["--messages", "100"],
    "failover.py": ["--kills", "1", "--replicas", "2"],
    "attack.py": ["--idle", "30", "--stalled", "4", "--guesses", "6", "--callback-items", "12000"],
}
#: the same scripts again on PostgreSQL (a scratch schema of the test server)
ON_POSTGRES = {
    "tick_cost.py": ["--messages", "5000", "--due", "200", "--samples", "10"],
    "registration.py": ["--messages", "2000"],
    "poll_throughput.py": ["--messages", "300", "--latency", "0.01", "--concurrency", "8", "--baseline", "10"],
}


@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_at_small_size(script):
    if script == "failover.py":  # replicas need the PostgreSQL server
        from .conftest import PG_URL, pg_admin

        pg_admin().close()
        SMALL[script] = [*SMALL[script], "--state-url", PG_URL]
    result = subprocess.run([sys.executable, str(BENCH / script), *SMALL[script]], capture_output=True, text=True,
                            timeout=300, cwd=BENCH.parent, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "machine:" in result.stdout and "method:" in result.stdout
    assert "target" in result.stdout


@pytest.mark.parametrize("script", sorted(ON_POSTGRES))
def test_benchmark_runs_on_postgresql(script):
    from .conftest import PG_URL, pg_admin

    pg_admin().close()  # skips (or fails under VIBER_EXPORTER_REQUIRE_PG=1) without a server
    result = subprocess.run([sys.executable, str(BENCH / script), *ON_POSTGRES[script], "--state-url", PG_URL],
                            capture_output=True, text=True, timeout=300, cwd=BENCH.parent, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store: PostgreSQL" in result.stdout and "target" in result.stdout


def test_every_script_is_exercised():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py", "mock_server.py", "crashsoak.py", "replicasoak.py"}
    assert scripts == set(SMALL)

"""kill -9 at random moments: no registration lost, nothing counted twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from crashsoak import run_soak

pytestmark = pytest.mark.slow


def test_five_kill_9s_lose_no_registration_and_double_count_nothing(tmp_path):
    result = run_soak(kills=5, seed=7, workdir=tmp_path)
    assert result.kills == 5
    assert result.registered > 100, "traffic ran between the kills"
    assert result.missing_after_restart == 0, "every 200 survived every crash"
    assert result.excess() == {}, f"counted more than happened: {result.excess()}"
    total = sum(sum(t["transitions"].values()) for t in result.truth.values())
    # In flight at a kill: what happened between the last scrape and the crash, and what
    # was stored but not yet counted. A few per kill, never more than a batch.
    assert result.shortfall() <= result.kills * 2 * 16, (result.shortfall(), total)
    for provider, truth in result.truth.items():
        assert result.cost.get(provider, 0.0) <= truth["cost"]["viber"] + truth["cost"]["sms"] + 1e-9

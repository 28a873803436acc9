"""The one backoff formula: exponential, capped, with equal jitter (half fixed, half
random), used for a provider instance's pause and for one message's retries."""

from __future__ import annotations

import random


def backoff(level: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait after the ``level``-th failure in a row (1 for the first):
    ``base × 2^(level-1)``, at most ``cap``, then between half of it and all of it."""
    delay = min(cap, base * 2.0 ** min(max(level - 1, 0), 62))
    return delay * (0.5 + rng.random() / 2)

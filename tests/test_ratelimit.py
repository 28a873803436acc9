"""``exporter/ratelimit.py``: the pacing limiter that adapts to a provider's 429s."""

from __future__ import annotations


def test_rate_limiter_halves_on_429_and_creeps_back():
    from viber_exporter.ratelimit import MIN_RATE, RateLimiter

    limiter = RateLimiter(100.0)
    limiter.slow_down()
    assert limiter.rate == 50.0
    for _ in range(20):
        limiter.slow_down()
    assert limiter.rate == MIN_RATE
    for _ in range(200):
        limiter.speed_up()
    assert 10 < limiter.rate < 30, "additive: about +1 call/s per second of calls"
    for _ in range(100_000):
        limiter.speed_up()
    assert limiter.rate == 100.0, "never above rate_limit"


def test_rate_limiter_probes_gently_around_the_pace_that_drew_a_429():
    from viber_exporter.ratelimit import RateLimiter

    limiter = RateLimiter(100.0)
    for _ in range(4):
        limiter.slow_down()  # 100 → 6.25; the last 429 came at 12.5
    assert (limiter.rate, limiter.ceiling) == (6.25, 12.5)
    while limiter.rate < 10:
        limiter.speed_up()
    fast = limiter.rate
    for _ in range(10):
        limiter.speed_up()
    assert limiter.rate - fast < 0.15, "around 12.5: a tenth of the usual step"
    for _ in range(2000):
        limiter.speed_up()
    assert limiter.rate > 30, "well past the old limit: full speed again"

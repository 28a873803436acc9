"""The adaptive schedule (``polling.schedule = "adaptive"``): what it learns, how it plans
within its budget, and, through the real poller and the mock Routee over HTTP in virtual
time, that it learns from the store (so a restart keeps it) and still takes the final
look (issue "Fewer provider calls per message")."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from viber_exporter import adaptive
from viber_exporter.adaptive import Observations, Survival
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.testing.simulation import Mix
from viber_exporter.testing.virtualtime import VirtualRun
from viber_exporter.web.app import openapi_document
from viber_exporter.web.landing import landing_page
from viber_exporter.web.views import providers_json

DAY = 86400.0


def lognormal(rng: random.Random, median: float, p95: float) -> float:
    return median * math.exp(rng.gauss(0.0, math.log(p95 / median) / 1.6448536269514722))


def workload(read_median: float = 1200.0, *, n: int = 3000, seed: int = 1) -> Observations:
    """The reference workload's outcomes, every message's watch complete: 85 % delivered
    (median 3 s), 10 % failed, 3 % expired at a day, 2 % never settle; 55 % of
    delivered read (``read_median``, p95 18 times that)."""
    rng = random.Random(seed)
    rows: list[tuple[float, float | None, float | None, str, float | None]] = []
    for _ in range(n):
        fate = rng.random()
        delay = lognormal(rng, 3.0, 60.0)
        if fate < 0.85:
            read = lognormal(rng, read_median, 18 * read_median) if rng.random() < 0.55 else None
            read = read if read is not None and read <= DAY else None
            status = "read" if read is not None else "delivered"
            rows.append((0.0, delay, None if read is None else delay + read, status, 2 * DAY))
        elif fate < 0.95:
            rows.append((0.0, None, None, "failed", delay + 10))
        elif fate < 0.98:
            rows.append((0.0, None, None, "expired", DAY + 600))
        else:
            rows.append((0.0, None, None, "pending", 2 * DAY))
    return adaptive.observations(rows, now=3 * DAY, read_window=DAY)


def make_plan(seen: Observations, budget: float = 8.0, **kw) -> adaptive.SchedulePlan:
    result = adaptive.plan(seen, budget=budget, max_age=2 * DAY, read_window=DAY, **kw)
    assert result is not None
    return result


# -- what it learns ------------------------------------------------------------------------
def test_kaplan_meier_counts_a_waiting_message_for_as_long_as_it_waited():
    # events at 10 and 30; messages still waiting at 20 and 40
    s = Survival.estimate([(10, True), (20, False), (30, True), (40, False)])
    assert s.at(5) == 1.0
    assert s.at(10) == pytest.approx(0.75)  # 1 of 4
    assert s.at(30) == pytest.approx(0.375)  # then 1 of the 2 still watched at 30
    assert s.floor == pytest.approx(0.375)
    assert (s.samples, s.events) == (4, 2)
    # Counting only what happened would say everything happens by 30 s.
    assert Survival.estimate([(10, True), (30, True)]).floor == 0.0


def test_observations_from_stored_messages():
    rows = [
        (100.0, 103.0, 703.0, "read", 800.0),  # delivered after 3 s, read 600 s later
        (100.0, 110.0, None, "delivered", None),  # still watched: unread so far
        (100.0, None, None, "failed", 130.0),  # a failure ends pending, not a delivery
        (100.0, None, None, "pending", None),  # still pending
    ]
    seen = adaptive.observations(rows, now=1100.0, read_window=500.0)
    assert seen.delivered_share == 0.5
    assert seen.pending.events == 3 and seen.delivery.events == 2
    assert seen.pending.at(30) == pytest.approx(0.25)  # only the pending one left
    assert seen.delivery.at(30) == pytest.approx(0.5)  # the failure censors a delivery
    # the unread one is censored at its age, at most the read window
    assert seen.read.times == (600.0,) and seen.read.samples == 2
    assert seen.read.at(600) == pytest.approx(0.0)  # the censored one left before 600
    assert seen.followed == 2, "both delivered ones were followed through their read window"
    assert adaptive.observations(rows, now=500.0, read_window=500.0).followed == 1


# -- how it plans ------------------------------------------------------------------------
def test_too_little_to_learn_from_leaves_the_fixed_schedule():
    assert adaptive.plan(workload(n=40), budget=8, max_age=2 * DAY, read_window=DAY) is None
    # Thousands of deliveries, but none followed through a read window yet: late reads
    # are unknown, so no plan (it would put every poll early).
    young = dataclasses.replace(workload(), followed=0)
    assert adaptive.plan(young, budget=8, max_age=2 * DAY, read_window=DAY) is None


def test_a_plan_spends_its_budget_and_sees_more_reads_for_more():
    seen = workload()
    budgets = (8.0, 10.0, 14.0, 20.0)
    plans = [make_plan(seen, budget) for budget in budgets]
    for budget, plan in zip(budgets, plans, strict=True):
        assert plan.expected_calls <= budget
        assert plan.delivery_cover >= 0.8  # 20 s polls while deliveries are likely
        assert plan.pending[-1] == 2 * DAY and plan.delivered[-1] == DAY  # the final looks
        assert list(plan.pending) == sorted(set(plan.pending))
    covers = [plan.read_cover for plan in plans]
    assert covers == sorted(covers) and covers[-1] > covers[0] + 0.3
    # A budget below what the cheapest plan costs gets the cheapest.
    cheapest = make_plan(seen, 2.0)
    assert cheapest.expected_calls > 2.0
    assert cheapest.expected_calls <= min(plan.expected_calls for plan in plans)


def test_the_polls_go_where_the_reads_are():
    """The chain of polls close enough for the read target sits over the bulk of the
    reads: reads after a median of 2 minutes and of 2 hours get different plans."""

    def tight_at(plan: adaptive.SchedulePlan, age: float) -> bool:
        ages = plan.delivered
        nxt = next(a for a in ages if a > age)
        return nxt - age <= adaptive.READ_RELATIVE * age + adaptive.READ_ABSOLUTE

    quick, slow = make_plan(workload(120.0), 14.0), make_plan(workload(2 * 3600.0), 14.0)
    assert tight_at(quick, 120.0) and not tight_at(quick, 2 * 3600.0)
    assert tight_at(slow, 2 * 3600.0) and not tight_at(slow, 120.0)


def test_a_plan_is_kept_while_a_new_one_would_be_no_better():
    current = make_plan(workload(seed=1))
    again = make_plan(workload(seed=2), current=current)
    assert (again.pending, again.delivered) == (current.pending, current.delivered)
    assert again.read_cover != current.read_cover, "its figures are renewed"
    moved = make_plan(workload(4 * 3600.0, seed=2), current=current)
    assert moved.delivered != current.delivered, "reads moved: so does the plan"


def test_a_plan_tells_the_wait_by_age():
    plan = make_plan(workload())
    assert plan.wait(0.0, delivered=False) == plan.pending[0]
    first, second = plan.delivered[:2]
    assert plan.wait(first, delivered=True) == pytest.approx(second - first)
    assert plan.wait(DAY + 5, delivered=True) > 0  # past the end: a retry, never 0


# -- in the exporter -----------------------------------------------------------------------
POLLING = {"tick": "5s", "schedule": "adaptive", "adaptive_budget": 6, "read_window": "1h",
           "max_age": "2h", "not_found_grace": "10m"}


@pytest.fixture
def run(builtin_host: PluginHost, tmp_path: Path) -> Iterator[VirtualRun]:
    mix = Mix.reference(delivery_median=3, delivery_p95=30, read_median=120, read_p95=1200,
                        ttl=3600)
    virtual = VirtualRun(builtin_host, tmp_path / "state.db", mix=mix, seed=5, polling=POLLING,
                         routee={"rate_limit": 10_000, "concurrency": 4})
    yield virtual
    virtual.close()


def current_plan(run: VirtualRun) -> adaptive.SchedulePlan | None:
    return run.exporter.instances["routee"].plan


def schedule_view(run: VirtualRun) -> dict:
    """The instance's ``schedule`` in ``GET /api/v1/providers``."""
    [entry] = [p for p in providers_json(run.exporter) if p["name"] == "routee"]
    return entry["schedule"]


def test_an_instance_learns_from_its_store_keeps_it_across_a_restart_and_takes_the_final_look(
    run,
):
    run.run(10, tick=5)
    assert current_plan(run) is None, "nothing to learn from yet: the fixed schedule"
    assert schedule_view(run) == {"mode": "adaptive", "budget": 6.0, "plan": None}
    assert "adaptive: still learning" in landing_page(run.exporter)
    plans = run.send("routee", 300)
    assert run.run_until_settled(tick=5, limit=4 * 3600)
    learned = current_plan(run)
    assert learned is not None and learned.learned_from == 300
    shown = schedule_view(run)["plan"]
    documented = openapi_document()["components"]["schemas"]["Provider"]["properties"]
    assert set(shown) == set(documented["schedule"]["properties"]["plan"]["properties"])
    assert shown["delivered"][-1] == 3600 and shown["expected_calls_per_message"] <= 6
    page = landing_page(run.exporter)
    assert f"adaptive: {shown['expected_calls_per_message']:g} calls/message expected" in page
    assert "learned from 300" in page

    # Every outcome counted once (the final look at the window end included).
    truth = run.truth()["routee"]["transitions"]
    for status in ("delivered", "failed", "expired"):
        counted = run.value("viber_message_status_transitions_total", provider="routee",
                            status=status)
        assert counted == truth.get(status, 0), status
    unread = [p for p in plans if p.delivered_at is not None and p.read_at is None]
    assert unread
    for p in unread:
        state = run.exporter.store.get("routee", p.id)
        assert state.status is Status.DELIVERED and not state.watched
        assert state.last_poll_at >= state.delivered_at + 3600, "the final look"

    # A restart learns again from the store, at its first tick: no cold start.
    run.restart()
    run.tick(5)
    relearned = current_plan(run)
    assert relearned is not None and relearned.learned_from == 300
    store, now = run.exporter.store, run.clock.time()
    fresh = adaptive.plan(
        adaptive.observations(store.recent_outcomes("routee", adaptive.SAMPLE), now, 3600.0),
        budget=6, max_age=7200.0, read_window=3600.0,
    )
    assert fresh is not None
    assert (relearned.pending, relearned.delivered) == (fresh.pending, fresh.delivered)

    # New messages follow it: the first poll, and a delivered message's next poll.
    [plan] = run.send("routee", fate="delivered")
    state = store.get("routee", plan.id)
    assert state.next_poll - state.registered_at == pytest.approx(relearned.pending[0])
    while store.get("routee", plan.id).status is not Status.DELIVERED:
        run.tick(5)
    state = store.get("routee", plan.id)
    assert state.delivered_at is not None and state.next_poll is not None
    assert any(state.next_poll - state.delivered_at == pytest.approx(age)
               for age in relearned.delivered)
    assert run.run_until_settled(tick=5, limit=2 * 3600)


def test_a_zero_read_window_plans_no_delivered_polls():
    """read_window = 0: a delivered message settles at once, so nothing to plan there;
    a retry after a failed call still gets a positive wait."""
    seen = workload()
    plan = adaptive.plan(seen, budget=8, max_age=2 * DAY, read_window=0.0)
    assert plan is not None and plan.delivered == ()
    assert plan.wait(10.0, delivered=True) > 0


def test_a_failing_plan_never_stops_polling(run, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a planning bug")

    monkeypatch.setattr(adaptive, "plan", broken)
    plans = run.send("routee", 5, fate="failed")
    run.clock.advance(30)
    run.tick(5)  # the first tick plans (and fails to), then polls what is due
    assert all(run.exporter.store.get("routee", p.id).polls == 1 for p in plans)
    assert run.run_until_settled(tick=5, limit=3600)
    assert run.value("viber_message_status_transitions_total", provider="routee",
                     status="failed") == len(plans)
    assert "could not plan the adaptive schedule" in caplog.text


def test_a_push_first_instance_is_not_planned(builtin_host, tmp_path):
    """push_first polls on push_schedule: an adaptive schedule there would be a plan that
    nothing follows, so none is made (its messages are never read for one), and the
    providers view says push_first."""
    virtual = VirtualRun(builtin_host, tmp_path / "state.db", mix=Mix(visible_after=0.0), seed=5,
                         polling=POLLING, routee={"push_first": True, "callback_token": "t0ken-for-tests"})
    store = virtual.exporter.store
    looked_at: list[str] = []
    read = store.recent_outcomes
    store.recent_outcomes = lambda provider, limit: looked_at.append(provider) or read(provider, limit)
    try:
        virtual.send("routee", 3)
        virtual.run(120, tick=5)
        assert "bsg" in looked_at and "routee" not in looked_at
        assert schedule_view(virtual) == {"mode": "push_first"}
    finally:
        virtual.close()

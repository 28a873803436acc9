"""Routee campaign tracking: a campaign is registered once, read page by page from the
mock Routee over HTTP in virtual time, and every message on it is accounted for as if
registered alone — exactly once, across restarts, with pages that shift while read,
items that appear late, and the final look."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from viber_exporter.engine import RegistrationError
from viber_exporter.model import Status
from viber_exporter.pluginhost import PluginHost
from viber_exporter.registration import CampaignRegistration
from viber_exporter.testing.mock import Faults
from viber_exporter.testing.simulation import Mix
from viber_exporter.testing.virtualtime import VirtualRun

POLLING = {"tick": "5s", "schedule": ["10s", "30s", "1m", "5m"], "read_window": "10m", "max_age": "30m",
           "not_found_grace": "3m", "final_look_grace": "1h"}
QUICK = Mix(read_median=60.0, final_median=5.0, visible_after=0.0)


def virtual(host: PluginHost, path: Path, mix: Mix = QUICK, page_size: int = 100, polling: dict | None = None,
            **routee: object) -> VirtualRun:
    return VirtualRun(host, path, mix=mix, seed=7, polling={**POLLING, **(polling or {})},
                      routee={"campaign_page_size": page_size, "rate_limit": 50, **routee})


@pytest.fixture
def run(builtin_host: PluginHost, tmp_path: Path) -> Iterator[VirtualRun]:
    vr = virtual(builtin_host, tmp_path / "state.db")
    yield vr
    vr.close()


def counted(run: VirtualRun, provider: str = "routee") -> dict[str, float]:
    return {s.value: run.value("viber_message_status_transitions_total", provider=provider, status=s.value)
            for s in Status}


def expected(run: VirtualRun, provider: str = "routee") -> dict[str, float]:
    """The ground truth, with reads after the read window left out (they are not watched for).
    BSG reports no read time: a read counts when seen, so the window is on that."""
    truth = run.truth()[provider]["transitions"]
    window = run.config.polling.read_window
    plans = [run.mock.simulation.find(p, i) for p, i in run.registered if p == provider]
    reads = sum(1 for p in plans if p.read_at is not None and p.read_at - p.delivered_at <= window)
    return {s.value: float(reads if s is Status.READ else truth.get(s.value, 0)) for s in Status}


LISTINGS = {  # provider → (messages, the mock's endpoint, pages per sweep)
    "routee": (250, "routee_campaign", 3),  # campaign_page_size 100
    "bsg": (1200, "bsg_messages", 3),  # the One-API's 500 a page
}


@pytest.mark.parametrize("provider", sorted(LISTINGS))
def test_a_campaign_is_read_page_by_page_and_counted_once_per_message(run, provider):
    size, endpoint, pages = LISTINGS[provider]
    campaign, plans = run.send_campaign(provider, size)
    assert run.run_until_settled(tick=5, limit=4 * 3600)
    assert counted(run, provider) == expected(run, provider)
    assert not run.mock.endpoint_calls["routee"] + run.mock.endpoint_calls["bsg_id"], "none polled alone"
    state = run.exporter.store.get_campaign(provider, campaign)
    assert state.next_poll is None and state.messages == size and state.polls >= 2
    assert run.mock.endpoint_calls[endpoint] == pages * state.polls, "every page of every sweep"
    stored = run.exporter.store.get(provider, plans[0].id)
    assert stored.campaign == campaign and 1 <= stored.polls <= state.polls
    cost = run.value("viber_message_cost_total", provider=provider, currency="EUR", channel="viber")
    assert cost == pytest.approx(sum(p.price for p in plans))
    delivered = run.value("viber_message_delivery_latency_seconds_count", provider=provider)
    assert delivered == expected(run, provider)["delivered"]


def test_messages_that_appear_late_are_found(builtin_host, tmp_path):
    run = virtual(builtin_host, tmp_path / "s.db", mix=Mix(read_median=60.0, final_median=5.0, visible_after=90.0))
    try:
        campaign, _ = run.send_campaign("routee", 40)
        run.tick(5)
        run.run(20, tick=5)  # the first sweeps see only some of them
        early = run.exporter.store.get_campaign("routee", campaign).messages
        assert early < 40
        assert run.run_until_settled(tick=5, limit=4 * 3600)
        assert run.exporter.store.get_campaign("routee", campaign).messages == 40
        assert counted(run) == expected(run)
        assert counted(run)["unknown"] == 0
    finally:
        run.close()


def test_pages_that_shift_while_they_are_read_lose_and_double_nothing(builtin_host, tmp_path):
    # 10 pages of 10, one call every 2 s (rate_limit 0.5/s): statuses change during a sweep,
    # and the mock lists the most recently changed first, so items move between pages.
    # With not_found_grace 0, a pending message taken for missing would be settled as
    # unknown at once.
    run = virtual(builtin_host, tmp_path / "s.db", mix=Mix(delivery_median=8.0, read_median=20.0,
                                                          final_median=8.0, visible_after=0.0),
                  page_size=10, rate_limit=0.5, polling={"not_found_grace": "0s"})
    run.set_faults(Faults(campaign_unstable=True))
    try:
        run.send_campaign("routee", 100)
        assert run.run_until_settled(tick=5, limit=6 * 3600)
        assert counted(run) == expected(run)
        assert counted(run)["unknown"] == 0, "a message missed by a shifting page is not 'not found'"
    finally:
        run.close()


def test_fan_out_is_exactly_once_across_a_restart(run):
    campaign, _ = run.send_campaign("routee", 120)
    run.run(90, tick=5)
    assert run.exporter.store.get_campaign("routee", campaign).polls > 0
    run.restart()
    assert run.run_until_settled(tick=5, limit=4 * 3600)
    assert counted(run) == expected(run)


def test_the_final_look_of_a_campaign_message_comes_from_a_sweep_after_an_outage(run):
    campaign, [plan, unread] = run.send_campaign("routee", 2, fate="read")
    unread.read_at = None
    unread.fate = "delivered"
    start = plan.created
    plan.delivered_at = unread.delivered_at = start + 2
    plan.read_at = start + 590  # inside the 10 min read window
    run.run(60, tick=5)
    assert run.exporter.store.get("routee", plan.id).status is Status.DELIVERED
    run.set_faults(Faults(outage=True))
    run.run(900, tick=5)  # the window closes during the outage
    assert run.exporter.store.get("routee", plan.id).watched, "no answer, so the watch goes on"
    run.set_faults(Faults())
    assert run.run_until_settled(tick=5, limit=4 * 3600)
    assert run.exporter.store.get("routee", plan.id).status is Status.READ
    done = run.exporter.store.get("routee", unread.id)
    assert done.status is Status.DELIVERED and done.settled_at >= start + 2 + 600
    assert run.exporter.store.get_campaign("routee", campaign).next_poll is None


def test_a_campaign_the_provider_never_knows_ends_after_not_found_grace(run):
    run.exporter.register([CampaignRegistration("routee", "0f8fad5b-d9cb-469f-a165-70867728950e")])
    assert run.run_until_settled(tick=5, limit=3600)
    state = run.exporter.store.get_campaign("routee", "0f8fad5b-d9cb-469f-a165-70867728950e")
    assert state.messages == 0 and "no message of this campaign appeared" in state.last_error
    assert run.clock.monotonic() < 3 * 60 + 120, "looked for during not_found_grace, then no more"


def test_campaign_registrations_are_checked(run):
    with pytest.raises(RegistrationError) as info:
        run.exporter.register_items([
            {"provider": "bsg", "campaign": "c1"},
            {"provider": "routee", "campaign": "not a uuid!"},
            {"provider": "routee", "campaign": "0f8fad5b-d9cb-469f-a165-70867728950e", "id": "x"},
            {"provider": "routee", "campaign": 5},
        ])
    problems = dict(info.value.details)
    assert "digits only" in problems[0]
    assert "invalid campaign id" in problems[1]
    assert "not both" in problems[2]
    assert "as a string" in problems[3]
    result = run.exporter.register_items([{"provider": "routee", "campaign": "0f8fad5b-d9cb-469f-a165-70867728950e"}] * 2)
    assert (result.accepted, result.duplicates) == (1, 1)
    assert run.exporter.store.campaign_counts() == {"routee": 1}


def test_a_page_that_changes_between_calls_costs_no_message(builtin_host, tmp_path, httpserver):
    """Served by hand: in the second sweep, message c moves to page 0 after page 0 was
    read, so page 1 repeats b and lacks c. With not_found_grace 0, c would be settled as
    unknown at once if the sweep were trusted; it is answered by the next sweep."""
    import json as _json

    from prometheus_client import CollectorRegistry
    from werkzeug import Request, Response

    from viber_exporter.clock import ManualClock
    from viber_exporter.config.load import parse_config
    from viber_exporter.engine import Exporter
    from viber_exporter.testing.mock import exporter_config
    from viber_exporter.testing.virtualtime import tick

    ids = [f"0a047b46-a4dd-4ca8-b817-a6a134dd000{n}" for n in range(4)]
    a, b, c, d = ids
    campaign = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    sweeps = [  # per sweep: page 0, page 1
        [[a, b], [c, d]],
        [[a, b], [b, d]],  # c moved to page 0 after it was read: missed, b seen twice
        [[c, a], [b, d]],
    ]
    state = {"sweep": -1}
    clock = ManualClock()

    def page(request: Request) -> Response:
        number = int(request.args["page"])
        if number == 0:
            state["sweep"] += 1
        items = sweeps[min(state["sweep"], len(sweeps) - 1)][number]
        # the provider's time is the exporter's clock of the moment (never a fixed date:
        # it is compared with max_age and the read window)
        date = datetime.fromtimestamp(clock.time() - 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        content = [{"trackingId": i, "status": {"status": "QUEUED", "date": date}, "price": 0.02}
                   for i in items]
        body = {"content": content, "totalElements": 4, "totalPages": 2, "last": number == 1, "number": number}
        return Response(_json.dumps(body), content_type="application/json")

    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "t", "token_type": "bearer", "expires_in": 86400})
    httpserver.expect_request(f"/viber/tracking/campaign/{campaign}").respond_with_handler(page)
    url = httpserver.url_for("").rstrip("/")
    text = exporter_config(url, tmp_path / "s.db", polling={**POLLING, "not_found_grace": "0s"},
                           routee={"campaign_page_size": 2, "token_url": f"{url}/oauth/token"},
                           bsg={"enabled": False})
    exporter = Exporter(parse_config(text, builtin_host.provider_types(), environ={}), builtin_host,
                        registry=CollectorRegistry(), clock=clock)
    try:
        exporter.register([CampaignRegistration("routee", campaign)])
        while state["sweep"] < 2:
            tick(exporter, clock, 5)
        statuses = {i: exporter.store.get("routee", i).status for i in ids}
        assert statuses == dict.fromkeys(ids, Status.PENDING), "nobody taken for missing"
        assert exporter.store.get("routee", c).polls == 2, "answered by sweeps 1 and 3"
        assert not exporter.registry.get_sample_value(
            "viber_message_status_transitions_total", {"provider": "routee", "status": "unknown"})
    finally:
        exporter.stop(timeout=5)


def test_campaigns_through_the_api_and_the_command_line(run, capsys):
    from viber_exporter.cli import main
    from viber_exporter.server import HttpServer

    server = HttpServer(run.exporter, "127.0.0.1", 0)
    server.start()
    try:
        import requests

        campaign = "0f8fad5b-d9cb-469f-a165-70867728950e"
        answer = requests.post(f"{server.url}/api/v1/messages", timeout=5,
                               json={"messages": [{"provider": "routee", "campaign": campaign}]})
        assert answer.json() == {"accepted": 1, "duplicates": 0}
        refused = requests.post(f"{server.url}/api/v1/messages", timeout=5,
                                json={"messages": [{"provider": "bsg", "campaign": "c1"}]})
        assert refused.status_code == 400 and "digits only" in refused.text
        other, _ = run.mock.simulation.create_campaign("routee", run.clock.time(), 3)
        assert main(["watch", "add", "routee", "--campaign", other, "--url", server.url]) == 0
        assert "accepted 1, duplicates 0" in capsys.readouterr().out
        assert main(["watch", "add", "routee", "--url", server.url]) == 2, "an id or a campaign is needed"
        run.run(30, tick=5)
        [provider] = [p for p in requests.get(f"{server.url}/api/v1/providers", timeout=5).json()["providers"]
                      if p["name"] == "routee"]
        assert provider["campaigns_watched"] == 2 and provider["watched"] == 3
        listed = requests.get(f"{server.url}/api/v1/messages", params={"provider": "routee"}, timeout=5).json()
        assert {m["campaign"] for m in listed["messages"]} == {other}
        metrics = requests.get(f"{server.url}/metrics", timeout=5).text
        assert 'viber_campaigns_watched{provider="routee"} 2.0' in metrics
    finally:
        server.stop()


def test_a_provider_without_campaign_listings_refuses_campaigns(fake_server, make_config, run_exporter):
    exporter = run_exporter(make_config())
    with pytest.raises(RegistrationError) as info:
        exporter.register_items([{"provider": "fake", "campaign": "c1"}])
    assert "does not track campaigns" in dict(info.value.details)[0]


def test_a_campaign_sweeps_its_tail_rarely_but_never_misses_a_final_look():
    """Past the schedule a campaign's steps double (up to a quarter of max_age): a sweep
    costs every page, and the tail is mostly final looks. A message that wants an
    earlier poll waits for the campaign's step; a final look does not wait more than
    half of final_look_grace."""
    from viber_exporter import campaigns
    from viber_exporter.config.model import PollingSettings
    from viber_exporter.store.rows import CampaignState

    policy = PollingSettings(tick=5, schedule=(10.0, 3600.0), max_age=48 * 3600.0, read_window=86400.0,
                             not_found_grace=600, retention=0, max_watched=10, final_look_grace=3600.0)
    steps = [campaigns.campaign_step(policy, sweeps) for sweeps in range(6)]
    assert steps == [10.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0], "doubling, at most max_age / 4"

    def swept(earliest: float, final_look: float | None) -> float:
        campaign = CampaignState("bsg", "7", registered_at=0.0, sent_at=0.0, discover_until=0.0,
                                 polls=3)  # the next step: 28,800 s
        now = 100_000.0
        campaigns.campaign_swept(campaign, now, policy, found=500, earliest=earliest,
                                  final_look=final_look, complete=True)
        assert campaign.next_poll is not None
        return campaign.next_poll - now

    assert swept(earliest=100_060.0, final_look=200_000.0) == 28_800.0, "an ordinary poll waits"
    assert swept(earliest=100_060.0, final_look=110_000.0) == 10_000.0 + 1800.0, "a final look does not"
    assert swept(earliest=100_060.0, final_look=90_000.0) == 1800.0, "an overdue one: within grace / 2"
    assert swept(earliest=200_000.0, final_look=250_000.0) == 100_000.0, "nothing due sooner"


@pytest.mark.parametrize("provider", ["routee", "bsg"])
def test_a_campaign_message_takes_its_send_time_from_the_provider(run, provider):
    """A campaign the provider sends over minutes: each message's send time is when the
    provider queued or sent it (Routee's pending status date, BSG's sent_at), not the
    campaign's registration, so delivery latency is not inflated by its place in the queue
    (a Routee message first seen delivered has no pending date: it keeps the registration's)."""
    _, plans = run.send_campaign(provider, 30, fate="delivered")
    start = run.clock.time()
    for index, plan in enumerate(plans):  # sent 3 s apart, each delivered 10 min after
        plan.created = start + 3.0 * index
        plan.visible_at = plan.created
        plan.delivered_at = plan.created + 600.0
    assert run.run_until_settled(tick=5, limit=4 * 3600)
    for plan in plans:
        stored = run.exporter.store.get(provider, plan.id)
        assert stored.sent_source.name == "PROVIDER", plan.id
        assert stored.sent_at == pytest.approx(plan.created, abs=1.0)
    latency_sum = run.value("viber_message_delivery_latency_seconds_sum", provider=provider)
    assert latency_sum == pytest.approx(600.0 * len(plans), abs=len(plans) * 1.0)

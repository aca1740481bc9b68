"""Windsurf analytics connector against the scripted server (tests/servers/windsurf_server.py)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from loopmeter.errors import ConfigError
from tests.servers.windsurf_server import WindsurfServer
from tests.vendors._tool_sync import (
    NOW,
    cursor_state,
    everything_stored,
    extra_total,
    run_sync,
    stored,
    total,
)

KEY = "svc_windsurf_test"
ENV = {"WINDSURF_SERVICE_KEY": KEY}


@pytest.fixture
def server():
    with WindsurfServer(users=4, days=5, runs_per_day=3) as srv:
        yield srv


def _runs(store) -> list[dict]:
    return [r for r in stored(store, "windsurf") if r["key"].startswith("windsurf/CascadeAnalytics/runs/")]


def test_credits_stay_credits_and_equal_the_servers(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "windsurf", server.url, ENV)
    assert [(r.report, r.error, r.malformed) for r in results] == [("CascadeAnalytics", None, 0)]
    want = server.totals()
    runs = _runs(store)
    # strings, hundredths of a credit, zero fields omitted (free-model runs have no promptsUsed)
    assert total(runs, "credits") == pytest.approx(want["credits"], abs=1e-9)
    assert total(runs, "requests") == want["messages"]
    assert extra_total(runs, "runs") == want["runs"] == 60
    assert all(r["cost_usd"] is None for r in runs)  # no credit price configured: no dollars
    assert all(r["input_tokens"] is None and r["output_tokens"] is None for r in runs)  # Windsurf has none
    free = [r for r in runs if r["model"] == "SWE-1.5"]
    assert free and all(r["credits"] == 0 for r in free)  # omitted means zero, not unknown
    assert {r["tier"] for r in runs} == {"vendor"}
    assert len({r["vendor_user"] for r in runs}) == want["users"] == 4
    lines = [r for r in stored(store, "windsurf") if "/lines/" in r["key"]]
    assert extra_total(lines, "lines_accepted") == want["lines_accepted"]
    # the billing cycle's credits (UserPageAnalytics) are a check in the cursor, not a row
    assert cursor_state(store, "windsurf", "CascadeAnalytics")["cycle_credits"] == pytest.approx(want["credits"])
    # one CascadeAnalytics call per person: the rows carry no user
    calls = [r for r in server.requests if r["path"] == "/api/v1/CascadeAnalytics"]
    assert sorted(c["body"]["emails"][0] for c in calls) == [f"dev{u:03d}@example.com" for u in range(4)]
    assert KEY not in everything_stored(store)


def test_a_credit_price_turns_credits_into_dollars(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "windsurf", server.url, ENV, vendors={"windsurf": {"credit_usd": 0.04}},
             people={"dev001@example.com": "bob"})
    runs = _runs(store)
    assert total(runs, "cost_usd") == pytest.approx(server.totals()["credits"] * 0.04, abs=1e-6)
    assert {r["user"] for r in runs if r["vendor_user"] == "dev001@example.com"} == {"bob"}
    assert {r["user"] for r in runs if r["vendor_user"] == "dev002@example.com"} == {"dev002@example.com"}


def test_a_bad_credit_price_is_one_clear_error(store, loopmeter_home, server):
    with pytest.raises(ConfigError, match="credit_usd"):
        run_sync(store, loopmeter_home, "windsurf", server.url, ENV, vendors={"windsurf": {"credit_usd": "4 cents"}})
    assert stored(store, "windsurf") == []


def test_a_429_is_waited_out(store, loopmeter_home, server):
    server.fail_next(429, retry_after="0.3")
    server.fail_next(503)  # and a 5xx is retried
    started = time.monotonic()
    results = run_sync(store, loopmeter_home, "windsurf", server.url, ENV)
    assert time.monotonic() - started >= 0.3
    assert server.faults.answered == [429, 503]
    assert results[0].error is None
    assert total(_runs(store), "credits") == pytest.approx(server.totals()["credits"])


def test_a_401_names_the_key_and_how_to_set_it(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "windsurf", server.url, {"WINDSURF_SERVICE_KEY": "svc_wrong_one"})
    error, hint = results[0].error, results[0].hint
    assert "\n" not in error and "windsurf" in error and "401" in error
    assert "WINDSURF_SERVICE_KEY" in hint and "loopmeter auth set windsurf" in hint
    assert "svc_wrong_one" not in error + hint + everything_stored(store)
    assert stored(store, "windsurf") == []


def test_incremental_resync_adds_nothing_twice(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "windsurf", server.url, ENV)
    first = stored(store, "windsurf")
    results = run_sync(store, loopmeter_home, "windsurf", server.url, ENV, now=NOW + timedelta(days=1))
    assert results[0].start == "2026-11-02"
    calls = [r for r in server.requests if r["path"] == "/api/v1/CascadeAnalytics"]
    assert calls[-1]["body"]["start_timestamp"] == "2026-11-02T00:00:00Z"
    again = stored(store, "windsurf")
    assert len(again) == len(first)
    assert total(_runs(store), "credits") == pytest.approx(server.totals()["credits"])


def test_malformed_runs_are_counted_and_skipped(store, loopmeter_home, server):
    server.team.runs[0]["promptsUsed"] = "a lot"
    server.team.runs[1]["messagesSent"] = -3
    results = run_sync(store, loopmeter_home, "windsurf", server.url, ENV)
    assert results[0].error is None and results[0].malformed == 2
    assert extra_total(_runs(store), "runs") == len(server.team.runs) - 2


def test_an_empty_team_list_keeps_what_is_stored(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "windsurf", server.url, ENV)
    before = stored(store, "windsurf")
    server.team.users = 0  # UserPageAnalytics answers 200 with nobody in it
    results = run_sync(store, loopmeter_home, "windsurf", server.url, ENV, now=NOW + timedelta(hours=2))
    assert "listed nobody" in results[0].error
    assert stored(store, "windsurf") == before

"""Cursor Admin API connector against the scripted server (tests/servers/cursor_admin_server.py)."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import date, timedelta

import pytest

from tests.conftest import loopmeter_cmd
from tests.servers.cursor_admin_server import CursorAdminServer, day_ms
from tests.vendors._tool_sync import (
    NOW,
    cursor_state,
    everything_stored,
    extra_total,
    run_sync,
    stored,
    total,
)

KEY = "key_cursor_test"
ENV = {"CURSOR_ADMIN_API_KEY": KEY}


@pytest.fixture
def server():
    # 6 users x 5 days x 4 events = 120 events; at most 25 items a page: events, members and days page
    with CursorAdminServer(users=6, days=5, events_per_day=4, page_cap=25) as srv:
        yield srv


def _paths(srv: CursorAdminServer, path: str) -> list[dict]:
    return [r for r in srv.requests if r["path"] == path]


def test_stored_totals_equal_the_servers(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    assert [(r.report, r.error) for r in results] == [
        ("filtered-usage-events", None), ("daily-usage-data", None), ("spend", None)]
    assert all(r.malformed == 0 for r in results)
    want = server.totals()
    events = stored(store, "cursor", "filtered-usage-events")
    # chargedCents arrive as numbers and as strings, fractional: summed in dollars
    assert total(events, "cost_usd") == pytest.approx(want["charged_cents"] / 100, abs=1e-6)
    assert total(events, "requests") == want["events"] == 120
    for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                         ("cache_read_tokens", "cache_read_tokens"), ("cache_write_tokens", "cache_write_tokens")):
        assert total(events, ours) == want[theirs]
    assert {r["tier"] for r in events} == {"billed"}
    # epoch-ms strings land on their UTC day, one row per day, user and model
    assert {r["date"] for r in events} == {f"2026-11-0{d}" for d in range(1, 6)}
    assert len({(r["date"], r["vendor_user"], r["model"]) for r in events}) == len(events)

    daily = stored(store, "cursor", "daily-usage-data")
    assert len(daily) == want["daily_rows"] == 30
    assert total(daily, "requests") == want["requests"]
    assert extra_total(daily, "lines_added") == want["lines_accepted"]
    assert {r["tier"] for r in daily} == {"vendor"} and all(r["cost_usd"] is None for r in daily)

    # the cycle total is a check beside the days, not a row: it equals the events' charges
    assert stored(store, "cursor", "spend") == []
    spend = cursor_state(store, "cursor", "spend")
    assert spend["cycle_spend_usd"] == pytest.approx(want["charged_cents"] / 100, abs=1e-4)
    assert spend["cycle_members"] == 6 and spend["cycle_start"] == "2026-11-01"

    # every endpoint was paged, and the daily range never exceeded 30 days
    assert len(_paths(server, "/teams/filtered-usage-events")) == 5
    assert len(_paths(server, "/teams/daily-usage-data")) == 2  # 31 days in two calls; 6 users fit a page
    for r in _paths(server, "/teams/daily-usage-data"):
        assert r["body"]["endDate"] - r["body"]["startDate"] < 30 * 86_400_000
    assert KEY not in everything_stored(store)


def test_daily_usage_pages_over_users_and_30_day_chunks(store, loopmeter_home):
    with CursorAdminServer(users=30, days=3, events_per_day=1, page_cap=10) as srv:
        results = run_sync(store, loopmeter_home, "cursor", srv.url, ENV)
        assert all(r.error is None for r in results)
        daily = stored(store, "cursor", "daily-usage-data")
        assert len(daily) == 90 and total(daily, "requests") == srv.totals()["requests"]
        calls = _paths(srv, "/teams/daily-usage-data")
        # 31 days in two chunks; the first (with the data) paged over 30 users, 10 a page
        assert [c["body"]["page"] for c in calls] == [1, 2, 3, 1]
        assert len(_paths(srv, "/teams/spend")) == 3


def test_a_429_is_waited_out(store, loopmeter_home, server):
    server.fail_next(429, retry_after="0.3")
    started = time.monotonic()
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    assert time.monotonic() - started >= 0.3
    assert server.faults.answered == [429]
    assert all(r.error is None for r in results)
    assert total(stored(store, "cursor", "filtered-usage-events"), "requests") == 120


def test_a_401_names_the_key_and_how_to_set_it(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "cursor", server.url, {"CURSOR_ADMIN_API_KEY": "key_wrong_value"})
    assert len(results) == 1  # a refused key stops the vendor's other reports
    error, hint = results[0].error, results[0].hint
    assert "\n" not in error and "cursor-admin" in error and "401" in error
    assert "CURSOR_ADMIN_API_KEY" in hint and "loopmeter auth set cursor-admin" in hint
    assert "key_wrong_value" not in error + hint
    assert stored(store, "cursor") == []
    assert "key_wrong_value" not in everything_stored(store)


def test_incremental_resync_adds_nothing_twice(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    first = stored(store, "cursor")
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV, now=NOW + timedelta(days=1))
    # the second sync starts a few days before the last one read, not 30 days back
    assert results[0].start == "2026-11-02"
    again = stored(store, "cursor")
    assert len(again) == len(first)
    want = server.totals()
    assert total(again, "cost_usd") == pytest.approx(want["charged_cents"] / 100, abs=1e-6)
    assert total(stored(store, "cursor", "daily-usage-data"), "requests") == want["requests"]


def test_a_late_correction_replaces_the_day(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    event = next(e for e in server.team.events if int(e["timestamp"]) >= day_ms(date(2026, 11, 3)))
    event["chargedCents"] = str(float(event["chargedCents"]) + 100)  # Cursor corrects a charge: +$1
    run_sync(store, loopmeter_home, "cursor", server.url, ENV, now=NOW + timedelta(hours=1))
    events = stored(store, "cursor", "filtered-usage-events")
    assert total(events, "cost_usd") == pytest.approx(server.totals()["charged_cents"] / 100, abs=1e-6)


def test_malformed_events_are_counted_and_skipped(store, loopmeter_home, server):
    bad = [dict(server.team.events[0], chargedCents="twelve"), dict(server.team.events[1], timestamp="soon"),
           dict(server.team.events[2], tokenUsage="lots")]
    server.team.events[:3] = bad
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    assert results[0].error is None and results[0].malformed == 3
    good = server.team.events[3:]
    assert total(stored(store, "cursor", "filtered-usage-events"), "requests") == len(good)


def test_the_cli_says_a_refused_key_in_one_line(loopmeter_home, server):
    env = {**os.environ, "LOOPMETER_HOME": str(loopmeter_home), "CURSOR_ADMIN_API_KEY": "key_wrong_value"}
    out = subprocess.run(loopmeter_cmd("vendors", "sync", "cursor", "--api-url", server.url), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "CURSOR_ADMIN_API_KEY" in lines[0] and "loopmeter auth set cursor-admin" in lines[0]
    assert "key_wrong_value" not in out.stdout + out.stderr


def test_unreadable_paging_is_one_error_and_keeps_what_is_stored(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    before = stored(store, "cursor", "filtered-usage-events")
    server.unreadable_paging = True
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV, now=NOW + timedelta(hours=1))
    assert "currentPage" in results[0].error and "\n" not in results[0].error
    assert stored(store, "cursor", "filtered-usage-events") == before  # the other reports still sync


def test_members_who_did_nothing_that_day_are_no_rows(store, loopmeter_home, server):
    idle = dict(server.team.daily[0], userId="user_99999", email="idle@example.com", isActive=False,
                acceptedLinesAdded=0, acceptedLinesDeleted=0, totalTabsShown=0, totalTabsAccepted=0,
                composerRequests=0, chatRequests=0, agentRequests=0, usageBasedReqs=0)
    server.team.daily.append(idle)
    results = run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    assert results[1].error is None and results[1].malformed == 0
    daily = stored(store, "cursor", "daily-usage-data")
    assert len(daily) == 30 and "idle@example.com" not in {r["vendor_user"] for r in daily}


def test_an_event_without_charged_cents_is_unknown_not_free(store, loopmeter_home):
    with CursorAdminServer(users=1, days=1, events_per_day=1, start=date(2026, 11, 4)) as srv:
        del srv.team.events[0]["chargedCents"]
        run_sync(store, loopmeter_home, "cursor", srv.url, ENV)
        (row,) = stored(store, "cursor", "filtered-usage-events")
        assert row["cost_usd"] is None and row["requests"] == 1


def test_status_shows_the_billing_cycle_check_beside_the_stored_total(store, loopmeter_home, server):
    import json

    run_sync(store, loopmeter_home, "cursor", server.url, ENV)
    want = server.totals()["charged_cents"] / 100
    env = {**os.environ, "LOOPMETER_HOME": str(loopmeter_home), **ENV}
    out = subprocess.run(loopmeter_cmd("vendors", "status", "--json"), env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    checks = json.loads(out.stdout)["checks"]
    assert [(c["vendor"], c["since"], c["unit"]) for c in checks] == [("cursor", "2026-11-01", "usd")]
    assert checks[0]["vendor_says"] == pytest.approx(want, abs=1e-4) and checks[0]["stored"] == pytest.approx(want)
    text = subprocess.run(loopmeter_cmd("vendors", "status"), env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if x.startswith("cursor billing cycle spend"))
    assert "since 2026-11-01: $" in line and "; stored for those days: $" in line

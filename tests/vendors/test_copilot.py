"""GitHub Copilot metrics and billing connector against the scripted server (tests/servers/copilot_server.py)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from loopmeter.errors import ConfigError
from tests.servers.copilot_server import CopilotServer
from tests.vendors._tool_sync import (
    NOW,
    cursor_state,
    everything_stored,
    extra_total,
    run_sync,
    stored,
    total,
)

TOKEN = "ghp_test_token"
ENV = {"GITHUB_TOKEN": TOKEN}
ORG = {"copilot": {"org": "acme"}}


@pytest.fixture
def server():
    # 5 users, 2 a file: each day's report is 2-3 NDJSON files
    with CopilotServer(org="acme", users=5, days=5, users_per_file=2) as srv:
        yield srv


def test_stored_totals_equal_the_servers(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG)
    assert [(r.report, r.error, r.malformed) for r in results] == [
        ("metrics/users-1-day", None, 0), ("billing/premium_request", None, 0)]
    want = server.totals()
    metrics = stored(store, "copilot", "metrics/users-1-day")
    assert len(metrics) == want["user_days"]
    assert total(metrics, "requests") == want["generations"]
    assert extra_total(metrics, "acceptances") == want["acceptances"]
    assert extra_total(metrics, "used_agent") == want["agent_user_days"]
    assert total(metrics, "input_tokens") == want["prompt_tokens"]
    assert total(metrics, "output_tokens") == want["output_tokens"]
    assert {r["tier"] for r in metrics} == {"vendor"} and all(r["cost_usd"] is None for r in metrics)

    billing = stored(store, "copilot", "billing/premium_request")
    assert total(billing, "cost_usd") == pytest.approx(want["net_usd"], abs=1e-9)  # net amounts, dollars
    assert total(billing, "requests") == want["net_requests"]
    assert {r["tier"] for r in billing} == {"billed"}
    assert any(r["cost_usd"] == 0 for r in billing)  # a day inside the included requests: billed $0, kept

    # several files a day, fetched without the token; days past the data have no report yet (404)
    downloads = [r for r in server.requests if r["path"].startswith("/downloads/")]
    assert len(downloads) == sum(-(-len(day) // 2) for day in server.data.records.values()) > 5
    assert server.download_auth == []
    assert TOKEN not in everything_stored(store)
    missing = cursor_state(store, "copilot", "metrics/users-1-day")["days_without_report"]
    assert missing[0] == "2026-10-06" and missing[-1] == "2026-10-31"  # the 30-day look-back before the data


def test_a_429_is_waited_out(store, loopmeter_home, server):
    server.fail_next(429, retry_after="0.3")
    started = time.monotonic()
    results = run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG)
    assert time.monotonic() - started >= 0.3
    assert server.faults.answered == [429]
    assert all(r.error is None for r in results)
    assert len(stored(store, "copilot", "metrics/users-1-day")) == server.totals()["user_days"]


def test_a_401_names_the_key_and_how_to_set_it(store, loopmeter_home, server):
    results = run_sync(store, loopmeter_home, "copilot", server.url, {"GITHUB_TOKEN": "ghp_wrong"}, vendors=ORG)
    assert len(results) == 1
    error, hint = results[0].error, results[0].hint
    assert "\n" not in error and "github" in error and "401" in error
    assert "GITHUB_TOKEN" in hint and "loopmeter auth set github" in hint
    assert "ghp_wrong" not in error + hint + everything_stored(store)
    assert stored(store, "copilot") == []


def test_without_an_org_one_clear_error(store, loopmeter_home, server):
    with pytest.raises(ConfigError, match=r"\[vendors.copilot\] org"):
        run_sync(store, loopmeter_home, "copilot", server.url, ENV)


def test_incremental_resync_adds_nothing_twice(store, loopmeter_home, server):
    run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG)
    first = stored(store, "copilot")
    before = len(server.requests)
    results = run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG, now=NOW + timedelta(days=1))
    assert results[0].start == "2026-11-01"  # four days before the last one read
    asked = {r["query"] for r in server.requests[before:] if "users-1-day" in r["path"]}
    assert len(asked) == 6  # 2026-11-01 .. 2026-11-06, not 30 days again
    again = stored(store, "copilot")
    assert len(again) == len(first)
    want = server.totals()
    assert total(stored(store, "copilot", "billing/premium_request"), "cost_usd") == pytest.approx(want["net_usd"])
    assert total(stored(store, "copilot", "metrics/users-1-day"), "requests") == want["generations"]


def test_malformed_lines_are_counted_and_skipped(store, loopmeter_home, server):
    day = "2026-11-02"
    server.data.records[day][0]["code_generation_activity_count"] = "many"
    server.data.records[day][1]["totals_by_cli"] = {"token_usage": [1, 2]}
    results = run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG)
    assert results[0].error is None and results[0].malformed == 2
    assert len(stored(store, "copilot", "metrics/users-1-day")) == sum(map(len, server.data.records.values())) - 2


def test_a_link_that_is_not_https_refuses_the_report(store, loopmeter_home, server):
    server.link_base = "http://storage.example.invalid"  # a signed link in clear, off this machine
    results = run_sync(store, loopmeter_home, "copilot", server.url, ENV, vendors=ORG)
    assert "not https" in results[0].error
    assert stored(store, "copilot", "metrics/users-1-day") == []
    assert results[1].error is None  # billing still syncs

"""The Anthropic Admin and OpenAI connectors against scripted servers on 127.0.0.1 that follow the
documented shapes and units: stored totals equal the server's, through paging, a 429, a 5xx and a
401; re-syncs replace; the key never reaches the store, the output or an error line."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from loopmeter.config import Settings
from tests.conftest import loopmeter_cmd
from tests.servers.anthropic_admin_server import AnthropicAdminServer, AnthropicOrg, claude_code_record
from tests.servers.openai_admin_server import OpenAIAdminServer

NOW = datetime(2026, 12, 10, 12, tzinfo=UTC)
SINCE = date(2026, 11, 1)


def _sync(store: Any, home: Path, vendor: str, url: str, env: dict[str, str], **kw: Any) -> list[Any]:
    from loopmeter.vendors.base import sync

    settings = Settings(home=home, people=kw.pop("people", {}))
    return sync(store, settings, [vendor], api_url_override=url, env=env, now=kw.pop("now", NOW),
                since=kw.pop("since", SINCE), http_options={"backoff_s": 0.01, **kw.pop("http", {})}, **kw)


def _rows(store: Any, vendor: str, report: str) -> list[dict[str, Any]]:
    from loopmeter.store import vendors as vstore

    return [r for r in vstore.rows(store, vendors=[vendor]) if r["report"] == report]


def _sum(rows: list[dict[str, Any]], field: str) -> float:
    return sum(r[field] or 0 for r in rows)


def _stored_text(store: Any, db: Path) -> bytes:
    store.dispose()
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_anthropic_totals_equal_the_servers_through_paging_429_and_5xx(store, loopmeter_home):
    with AnthropicAdminServer(users=5, days=40, start=SINCE, claude_code_page=2) as srv:
        srv.fail_next(429, retry_after="1")
        srv.fail_next(503)
        started = time.monotonic()
        results = _sync(store, loopmeter_home, "anthropic", srv.url, {"ANTHROPIC_ADMIN_API_KEY": srv.key})
        took = time.monotonic() - started
        expected = srv.totals()
        requests = list(srv.requests)
    assert [r.error for r in results] == [None, None, None]
    assert srv.faults.answered == [429, 503]
    assert took >= 1.0  # Retry-After was waited
    msgs = _rows(store, "anthropic", "usage_report/messages")
    assert _sum(msgs, "input_tokens") == expected["uncached_input_tokens"]
    assert _sum(msgs, "cache_read_tokens") == expected["cache_read_tokens"]
    assert _sum(msgs, "cache_write_tokens") == expected["cache_write_tokens"]
    assert _sum(msgs, "output_tokens") == expected["output_tokens"]
    assert {r["tier"] for r in msgs} == {"vendor"} and all(r["cost_usd"] is None for r in msgs)
    costs = _rows(store, "anthropic", "cost_report")
    assert {r["tier"] for r in costs} == {"billed"}
    assert _sum(costs, "cost_usd") == pytest.approx(expected["billed_usd"], abs=1e-6)  # string cents -> dollars
    cc = _rows(store, "anthropic", "usage_report/claude_code")
    assert _sum(cc, "cost_usd") == pytest.approx(expected["claude_code_usd"], abs=1e-6)  # number cents -> dollars
    assert sum(json.loads(r["extra"]).get("sessions") or 0 for r in cc) == expected["sessions"]
    # 40 days of daily buckets at 31 a page: two pages, the second asked with the first's next_page
    msg_pages = [r for r in requests if r["path"].endswith("/messages") and r["method"] == "GET"]
    assert sum("page=" in r["query"] for r in msg_pages) >= 1
    # the Claude Code report is asked one UTC day at a time, and paged (2 records a page here)
    cc_queries = [r["query"] for r in requests if r["path"].endswith("/claude_code")]
    assert any("page=" in q for q in cc_queries)
    assert all(r["headers"].get("anthropic-version") == "2023-06-01" for r in requests)


def test_a_resync_replaces_and_picks_up_the_vendors_corrections(store, loopmeter_home):
    org = AnthropicOrg(users=3, days=10, start=SINCE)
    with AnthropicAdminServer(org) as srv:
        env = {"ANTHROPIC_ADMIN_API_KEY": srv.key}
        _sync(store, loopmeter_home, "anthropic", srv.url, env)
        first = _sum(_rows(store, "anthropic", "cost_report"), "cost_usd")
        _sync(store, loopmeter_home, "anthropic", srv.url, env)
        assert _sum(_rows(store, "anthropic", "cost_report"), "cost_usd") == pytest.approx(first)
        # the vendor corrects a day: one line doubled, another dropped
        day = "2026-11-03"
        org.costs[day][0]["amount"] = f"{float(org.costs[day][0]['amount']) * 2:.4f}"
        del org.costs[day][1]
        _sync(store, loopmeter_home, "anthropic", srv.url, env)
        assert _sum(_rows(store, "anthropic", "cost_report"), "cost_usd") == \
            pytest.approx(srv.totals()["billed_usd"], abs=1e-6)
        # incremental: the last sync read through NOW's day, the next one starts 3 days before it
        srv.requests.clear()
        _sync(store, loopmeter_home, "anthropic", srv.url, env, since=None)
        starts = {r["query"].split("starting_at=")[1][:10] for r in srv.requests if "starting_at=" in r["query"]
                  and not r["path"].endswith("/claude_code")}
        assert starts == {"2026-12-07"}
        days = {r["query"].split("starting_at=")[1][:10] for r in srv.requests if r["path"].endswith("/claude_code")}
        assert days == {"2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10"}  # one UTC day a request
        assert _sum(_rows(store, "anthropic", "cost_report"), "cost_usd") == \
            pytest.approx(srv.totals()["billed_usd"], abs=1e-6)


def test_malformed_results_are_counted_and_skipped(store, loopmeter_home):
    org = AnthropicOrg(users=2, days=2, start=SINCE)
    bad = dict(org.messages["2026-11-01"][0], uncached_input_tokens="lots")
    org.messages["2026-11-01"].append(dict(bad, api_key_id="apikey_bad"))
    org.costs["2026-11-02"].append({"amount": "NaN", "currency": "USD", "description": "x", "model": None})
    with AnthropicAdminServer(org) as srv:
        results = _sync(store, loopmeter_home, "anthropic", srv.url, {"ANTHROPIC_ADMIN_API_KEY": srv.key})
    by = {r.report: r for r in results}
    assert by["usage_report/messages"].malformed == 1 and by["cost_report"].malformed == 1
    good = [r for r in org.messages["2026-11-01"] + org.messages["2026-11-02"] if r["api_key_id"] != "apikey_bad"]
    assert _sum(_rows(store, "anthropic", "usage_report/messages"), "input_tokens") == \
        sum(r["uncached_input_tokens"] for r in good)


def test_openai_input_tokens_include_cached_ones_and_costs_are_dollars(store, loopmeter_home):
    with OpenAIAdminServer(users=4, days=35, start=SINCE) as srv:
        srv.fail_next(429, retry_after="0")
        results = _sync(store, loopmeter_home, "openai", srv.url, {"OPENAI_ADMIN_KEY": srv.key})
        expected = srv.totals()
        raw_input = sum(r["input_tokens"] for rs in srv.org.completions.values() for r in rs)
    assert [r.error for r in results] == [None, None]
    usage = _rows(store, "openai", "usage/completions")
    assert _sum(usage, "input_tokens") == expected["uncached_input_tokens"] < raw_input
    assert _sum(usage, "cache_read_tokens") == expected["cache_read_tokens"]
    assert _sum(usage, "output_tokens") == expected["output_tokens"]
    assert _sum(usage, "requests") == expected["requests"]
    costs = _rows(store, "openai", "costs")
    assert _sum(costs, "cost_usd") == pytest.approx(expected["billed_usd"], abs=1e-6)
    assert {r["tier"] for r in costs} == {"billed"} and {r["tier"] for r in usage} == {"vendor"}
    assert all(r["model"] for r in costs)  # "gpt-5-2025-08-07, input" names its model


def test_people_mapping_names_vendor_users(store, loopmeter_home):
    from loopmeter.analytics.vendors import spend_rows

    with AnthropicAdminServer(users=3, days=2, start=SINCE) as srv:
        _sync(store, loopmeter_home, "anthropic", srv.url, {"ANTHROPIC_ADMIN_API_KEY": srv.key},
              people={"DEV001@example.com": "alice", "apikey_0002": "ci"})
    users = {r["user"] for r in spend_rows(store, {"dev001@example.com": "alice", "apikey_0002": "ci"})}
    assert {"alice", "ci"} <= users
    assert "dev002@example.com" in users  # unmapped: the vendor's identity
    stored = {r["user"] for r in _rows(store, "anthropic", "usage_report/claude_code")}
    assert "alice" in stored and "dev002@example.com" in stored


def test_a_refused_key_is_one_line_naming_how_to_set_it_and_no_key_leaks(store, loopmeter_home, sqlite_url):
    from loopmeter.store import vendors as vstore
    from loopmeter.vendors.base import VendorError, VendorHttp, get_connector

    with OpenAIAdminServer(users=1, days=1, start=SINCE) as srv:
        wrong = "sk-admin-WRONG-1234567890"
        results = _sync(store, loopmeter_home, "openai", srv.url, {"OPENAI_ADMIN_KEY": wrong})
    assert len(results) == 1  # a refused key is refused by every report: the vendor stops at the first
    r = results[0]
    assert "refused the openai-admin key (401" in r.error
    assert "loopmeter auth set openai-admin" in r.hint and "OPENAI_ADMIN_KEY" in r.hint
    cursor = vstore.get_cursor(store, "openai", "usage/completions")
    assert cursor is not None and "401" in cursor.last_error and cursor.synced_at is None
    # a gateway that echoes the key in an error body: the message masks it
    with AnthropicAdminServer(users=1, days=1, start=SINCE) as srv:
        with VendorHttp(get_connector("anthropic"), srv.url, srv.key) as http:
            with pytest.raises(VendorError) as err:
                http.get("/v1/organizations/nowhere")
        assert "404" in err.value.message and srv.key not in err.value.message and "***" in err.value.message
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    assert wrong.encode() not in _stored_text(store, db)


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, "LOOPMETER_HOME": str(home), **(env or {})}
    return subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, env=full, timeout=120)


def test_cli_sync_status_spend_and_the_key_stays_out_of_store_and_output(loopmeter_home):
    key = "sk-ant-admin01-SECRET-abcdef123456"
    with AnthropicAdminServer(users=3, days=5, start=date(2026, 11, 20), key=key) as srv:
        (loopmeter_home / "loopmeter.toml").write_text(
            f'[vendors.anthropic]\napi_url = "{srv.url}"\n\n[people]\n"dev001@example.com" = "alice"\n')
        out = _cli(loopmeter_home, "--debug", "vendors", "sync", "anthropic", "--since", "2026-11-20",
                   env={"ANTHROPIC_ADMIN_API_KEY": key})
        assert out.returncode == 0, out.stderr
        assert "cost_report:" in out.stdout and "rows" in out.stdout
        expected = srv.totals()
        bad = _cli(loopmeter_home, "vendors", "sync", "anthropic", env={"ANTHROPIC_ADMIN_API_KEY": "sk-ant-nope-999999"})
    assert bad.returncode == 1
    assert "loopmeter auth set anthropic-admin" in bad.stderr and "ANTHROPIC_ADMIN_API_KEY" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # one line, then the vendor stops
    shown = _cli(loopmeter_home, "vendors", "status", "--json", env={"ANTHROPIC_ADMIN_API_KEY": ""})
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)["rows"]
    anth = {r["report"]: r for r in status if r["vendor"] == "anthropic"}
    assert anth["cost_report"]["rows"] > 0 and anth["cost_report"]["newest_day"] == "2026-11-24"
    assert "401" in anth["cost_report"]["last_error"]  # the failed sync after the good one
    assert {r["vendor"] for r in status} >= {"anthropic", "openai"}
    spend = json.loads(_cli(loopmeter_home, "vendors", "spend", "--json").stdout)["rows"]
    assert set(spend[0]) == {"date", "vendor", "user", "model", "tier", "cost_usd", "credits", "input_tokens",
                             "output_tokens", "cache_read_tokens", "cache_write_tokens"}
    billed = sum(r["cost_usd"] for r in spend if r["tier"] == "billed")
    assert billed == pytest.approx(expected["billed_usd"], abs=1e-4)
    assert any(r["user"] == "alice" for r in spend)
    assert all(r["credits"] is None for r in spend)  # Anthropic gives no credits: null, never 0
    table = _cli(loopmeter_home, "vendors", "spend").stdout
    assert "billed" in table and "alice" in table
    for text in (out.stdout, out.stderr, bad.stdout, bad.stderr, table):
        assert key not in text
    stored = b"".join(p.read_bytes() for p in loopmeter_home.glob("loopmeter.db*"))
    assert key.encode() not in stored and b"sk-ant-nope" not in stored


def test_a_repository_cannot_point_a_vendor_key_elsewhere(tmp_path, loopmeter_home):
    from loopmeter.config import load_settings

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".git").mkdir()
    (repo / "pyproject.toml").write_text('[tool.loopmeter.vendors.anthropic]\napi_url = "https://evil.example"\n')
    settings = load_settings(cwd=repo, env={"LOOPMETER_HOME": str(loopmeter_home)})
    assert settings.vendors == {}
    assert any(i.key == "vendors" for i in settings.ignored)


def test_an_api_url_in_clear_text_off_this_machine_is_refused(store, loopmeter_home):
    from loopmeter.errors import ConfigError

    with pytest.raises(ConfigError, match="must be https"):
        _sync(store, loopmeter_home, "anthropic", "http://example.com", {"ANTHROPIC_ADMIN_API_KEY": "k" * 20})


def test_admin_keys_never_enter_a_sandbox(tmp_path, monkeypatch):
    from loopmeter.policies import load_policy
    from loopmeter.sandbox.runner import Runner

    monkeypatch.setenv("ANTHROPIC_ADMIN_API_KEY", "sk-ant-admin01-zzzz")
    policy = load_policy("default")
    policy.model.env.allow.append("ANTHROPIC_ADMIN_API_KEY")
    plain, handed, refused = Runner.build_env(policy, "agent", "claude-code", {"OPENAI_ADMIN_KEY": "x" * 10},
                                              {"CURSOR_ADMIN_API_KEY": "y" * 10}, tmp_path, "/usr/bin")
    assert "ANTHROPIC_ADMIN_API_KEY" not in plain and "OPENAI_ADMIN_KEY" not in plain
    assert "CURSOR_ADMIN_API_KEY" not in handed
    assert {"ANTHROPIC_ADMIN_API_KEY", "OPENAI_ADMIN_KEY", "CURSOR_ADMIN_API_KEY"} <= set(refused)


def test_claude_code_record_helper_sums():  # keeps the scripted server's own arithmetic honest
    import random

    rec = claude_code_record("2026-11-01", "a@example.com", None, random.Random(1), ["m1", "m2"], [150.5, 49.5])
    assert sum(m["estimated_cost"]["amount"] for m in rec["model_breakdown"]) == 200.0


def test_postgresql_store_holds_the_same_totals_and_replaces_on_resync(pg_store, loopmeter_home):
    with AnthropicAdminServer(users=4, days=35, start=SINCE) as srv:
        env = {"ANTHROPIC_ADMIN_API_KEY": srv.key}
        _sync(pg_store, loopmeter_home, "anthropic", srv.url, env)
        _sync(pg_store, loopmeter_home, "anthropic", srv.url, env)
        expected = srv.totals()
    assert _sum(_rows(pg_store, "anthropic", "cost_report"), "cost_usd") == pytest.approx(expected["billed_usd"], abs=1e-6)
    assert _sum(_rows(pg_store, "anthropic", "usage_report/messages"), "input_tokens") == \
        expected["uncached_input_tokens"]
    assert _sum(_rows(pg_store, "anthropic", "usage_report/claude_code"), "cost_usd") == \
        pytest.approx(expected["claude_code_usd"], abs=1e-6)


def test_retry_after_is_capped_and_5xx_retries_are_bounded():
    from loopmeter.vendors.base import MAX_RETRY_AFTER_S, VendorError, VendorHttp, get_connector

    waits: list[float] = []
    with AnthropicAdminServer(users=1, days=1, start=SINCE) as srv:
        with VendorHttp(get_connector("anthropic"), srv.url, srv.key, sleep=waits.append) as http:
            srv.fail_next(429, retry_after="3600")
            srv.fail_next(429)  # no Retry-After: a short pause of its own
            page = http.get("/v1/organizations/usage_report/claude_code", {"starting_at": "2026-11-01"})
            assert isinstance(page["data"], list)
            assert waits == [MAX_RETRY_AFTER_S, 1.0]  # capped; then backoff 0.5 x 2 for the second wait
            waits.clear()
            srv.fail_next(503, times=10)
            with pytest.raises(VendorError, match="503 after 4 tries"):
                http.get("/v1/organizations/usage_report/claude_code", {"starting_at": "2026-11-01"})
            assert waits == [0.5, 1.0, 2.0]
            srv.faults = type(srv.faults)()  # the remaining scripted 503s are not needed
            assert http.get("/v1/organizations/usage_report/claude_code", {"starting_at": "2026-11-01"})["data"]


def test_auth_set_knows_the_vendor_key_names(loopmeter_home):
    import os

    env = {**os.environ, "LOOPMETER_HOME": str(loopmeter_home), "CURSOR_ADMIN_API_KEY": "x" * 12}
    out = subprocess.run(loopmeter_cmd("auth", "list", "--json"), capture_output=True, text=True, env=env, timeout=60)
    keys = {k["provider"]: k for k in json.loads(out.stdout)["keys"]}
    assert {"anthropic-admin", "openai-admin", "cursor-admin", "windsurf", "github"} <= set(keys)
    assert keys["cursor-admin"]["present"] and keys["cursor-admin"]["env_var"] == "CURSOR_ADMIN_API_KEY"
    assert "x" * 12 not in out.stdout


def test_a_vendor_missing_a_setting_it_needs_is_skipped_unless_named(store, loopmeter_home):
    from loopmeter.vendors.base import sync

    env = {"GITHUB_TOKEN": "ghp_" + "x" * 20}  # exported for other tools; no [vendors.copilot] org
    assert sync(store, Settings(home=loopmeter_home), None, env=env, now=NOW) == []
    from loopmeter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[vendors.copilot\] org"):  # named: bad input, one line
        sync(store, Settings(home=loopmeter_home), ["copilot"], api_url_override="http://127.0.0.1:9", env=env, now=NOW)

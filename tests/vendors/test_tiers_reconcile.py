"""The tier rule (billed > vendor > reported + calculated) and reconcile: the same calls seen in
local logs and in the Anthropic Admin API are counted once; a constructed drift is found."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import loopmeter_cmd
from tests.servers.anthropic_admin_server import AnthropicAdminServer, AnthropicOrg, cost_line
from tests.servers.openai_admin_server import OpenAIAdminServer, OpenAIOrg, cost

MODEL = "claude-sonnet-4-5-20250929"
DAY = "2026-11-02"


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    full = {**os.environ, "LOOPMETER_HOME": str(home), **(env or {})}
    out = subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, env=full, timeout=120)
    assert out.returncode == 0, f"loopmeter {' '.join(args)}: {out.stderr}"
    return out


def _claude_log(folder: Path, day: str, calls: int, session: str = "s1") -> Path:
    """A Claude Code session file: `calls` assistant messages of 1,000 input and 2,000 output tokens."""
    project = folder / "projects" / "-home-dev-x"
    project.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"parentUuid": None, "sessionId": session, "cwd": "/home/dev/x", "type": "assistant",
                         "timestamp": f"{day}T10:{i:02d}:00.000Z", "requestId": f"req_{session}_{i}",
                         "uuid": f"u_{session}_{i}",
                         "message": {"id": f"msg_{session}_{i}", "type": "message", "role": "assistant",
                                     "model": MODEL, "content": [{"type": "text", "text": "x"}],
                                     "usage": {"input_tokens": 1000, "cache_creation_input_tokens": 0,
                                               "cache_read_input_tokens": 0, "output_tokens": 2000}}})
             for i in range(calls)]
    (project / f"{session}.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "projects"


def test_decide_takes_the_best_tier_per_day_and_vendor_and_says_which():
    from loopmeter.analytics.tiers import Figure, decide

    figures = [Figure(day, vendor, tier, None, None, cost) for day, vendor, tier, cost in [
        ("d1", "anthropic", "billed", 10.0), ("d1", "anthropic", "vendor", 9.0), ("d1", "anthropic", "calculated", 8.0),
        ("d2", "anthropic", "vendor", 5.0), ("d2", "anthropic", "reported", 1.0), ("d2", "anthropic", "calculated", 3.0),
        ("d2", "openai", "reported", 2.0), ("d2", "openai", "calculated", 0.5),
        ("d3", "google", "reported", 4.0),
    ]]
    got = {(r["date"], r["vendor"]): (r["tier"], r["cost_usd"]) for r in decide(figures)}
    assert got == {("d1", "anthropic"): ("billed", 10.0), ("d2", "anthropic"): ("vendor", 5.0),
                   # reported and calculated are different calls measured here: added, named by the weaker
                   ("d2", "openai"): ("calculated", 2.5), ("d3", "google"): ("reported", 4.0)}


def test_a_vendor_figure_for_one_agent_replaces_only_that_agents_measured_calls():
    from loopmeter.analytics.tiers import Figure, decide, report_scopes

    assert report_scopes()[("anthropic", "usage_report/claude_code")] == "claude-code"
    figures = [Figure(day, vendor, tier, None, None, cost, scope) for day, vendor, tier, cost, scope in [
        # Claude Code analytics' estimate covers the Claude Code calls; aider's calls to Anthropic are not in it
        ("d1", "anthropic", "vendor", 5.0, "claude-code"), ("d1", "anthropic", "calculated", 4.5, "claude-code"),
        ("d1", "anthropic", "calculated", 2.0, "aider"),
        # the bill covers every call
        ("d2", "anthropic", "billed", 9.0, None), ("d2", "anthropic", "vendor", 5.0, "claude-code"),
        ("d2", "anthropic", "calculated", 2.0, "aider"),
    ]]
    got = {r["date"]: (r["tier"], r["cost_usd"], r["measured_usd"]) for r in decide(figures)}
    assert got == {"d1": ("vendor", 7.0, 6.5), "d2": ("billed", 9.0, 2.0)}


def test_the_same_calls_in_local_logs_and_the_admin_api_are_counted_once(loopmeter_home, tmp_path):
    logs = _claude_log(tmp_path / "claude", DAY, calls=4)
    usage = json.loads(_cli(loopmeter_home, "usage", "--path", str(logs), "--json", "--timezone", "UTC",
                            "--since", "2026-11-01").stdout)
    measured = usage["totals"]["cost_usd"]
    assert measured and measured > 0

    # Claude Code analytics says the same session cost 3% more (its own estimate, tier vendor)
    estimate_cents = round(measured * 103, 4)
    org = AnthropicOrg(messages={DAY: []}, costs={DAY: []}, claude_code={DAY: [{
        "date": DAY, "actor": {"type": "user_actor", "email_address": "dev@example.com"},
        "core_metrics": {"num_sessions": 1, "lines_of_code": {"added": 10, "removed": 1},
                         "commits_by_claude_code": 1, "pull_requests_by_claude_code": 0},
        "model_breakdown": [{"model": MODEL, "tokens": {"input": 4000, "output": 8000, "cache_read": 0,
                                                        "cache_creation": 0},
                             "estimated_cost": {"amount": estimate_cents, "currency": "USD"}}]}]})
    report_args = ("report", "--format", "json", "--no-scan", "--no-verify", "--timezone", "UTC",
                   "--since", "2026-11-01", "--until", "2026-11-05")
    with AnthropicAdminServer(org) as srv:
        env = {"ANTHROPIC_ADMIN_API_KEY": srv.key}
        _cli(loopmeter_home, "vendors", "sync", "anthropic", "--api-url", srv.url, "--since", "2026-11-01", env=env)
        spend = json.loads(_cli(loopmeter_home, *report_args).stdout)["spend"]
        assert spend["cost_usd"] == pytest.approx(estimate_cents / 100)  # not measured + estimate
        assert spend["measured_usd"] == pytest.approx(measured)
        assert spend["tiers"]["by_tier"] == {"vendor": pytest.approx(estimate_cents / 100)}

        # then the bill for that day arrives: it wins over both
        org.costs[DAY] = [cost_line(None, MODEL, f"{MODEL} usage - input", "tokens", "uncached_input_tokens", "4.0000"),
                          cost_line(None, MODEL, f"{MODEL} usage - output", "tokens", "output_tokens", "12.0000")]
        _cli(loopmeter_home, "vendors", "sync", "anthropic", "--api-url", srv.url, "--since", "2026-11-01", env=env)
    report = json.loads(_cli(loopmeter_home, *report_args).stdout)
    assert report["spend"]["cost_usd"] == pytest.approx(0.16)
    assert report["spend"]["tiers"]["by_tier"] == {"billed": pytest.approx(0.16)}
    assert report["spend"]["tiers"]["by_vendor"] == {"anthropic": pytest.approx(0.16)}
    assert any("billed" in a for a in report["roi"]["assumptions"]) or not report["roi"]["shown"]
    md = _cli(loopmeter_home, *report_args[:2], "md", *report_args[3:]).stdout
    assert "cost by tier" in md and "billed $0.16" in md and "measured cost" in md

    # the dashboard's Overview reads the same function
    from loopmeter.analytics import kpis
    from loopmeter.analytics.filters import Filters
    from loopmeter.config import ValueModel
    from loopmeter.store import open_store

    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    try:
        filters = Filters(since=datetime(2026, 11, 1, tzinfo=UTC), until=datetime(2026, 11, 5, tzinfo=UTC))
        head = kpis.headline(kpis.load(store, filters, loopmeter_home), ValueModel(value_per_merged_outcome=100))
    finally:
        store.dispose()
    assert head["spend"]["cost_usd"] == pytest.approx(0.16)
    assert head["spend"]["tiers"]["tier"] == "billed"


def test_reconcile_finds_a_constructed_drift(loopmeter_home, tmp_path):
    # measured: four calls on 11-02 and four on 11-03 (the same each day); billed: the 11-02 bill
    # matches what was measured, the 11-03 bill is 25% higher; OpenAI billed with nothing measured
    logs = tmp_path / "claude"
    _claude_log(logs, "2026-11-02", calls=4, session="a")
    _claude_log(logs, "2026-11-03", calls=4, session="b")
    usage = json.loads(_cli(loopmeter_home, "usage", "--path", str(logs / "projects"), "--json", "--timezone", "UTC",
                            "--since", "2026-11-01").stdout)
    per_day = {r["date"]: r["cost_usd"] for r in usage["daily"]}
    m = per_day["2026-11-02"]
    assert per_day["2026-11-03"] == pytest.approx(m)
    org = AnthropicOrg(messages={}, claude_code={}, costs={
        "2026-11-02": [cost_line(None, MODEL, "d", "tokens", "output_tokens", f"{m * 100:.4f}")],
        "2026-11-03": [cost_line(None, MODEL, "d", "tokens", "output_tokens", f"{m * 125:.4f}")]})
    openai_org = OpenAIOrg(completions={"2026-11-02": []}, costs={"2026-11-02": [cost("proj_a", "gpt-5, input", 1.5)]})
    with AnthropicAdminServer(org) as a, OpenAIAdminServer(openai_org) as o:
        _cli(loopmeter_home, "vendors", "sync", "anthropic", "--api-url", a.url, "--since", "2026-11-01",
             env={"ANTHROPIC_ADMIN_API_KEY": a.key})
        _cli(loopmeter_home, "vendors", "sync", "openai", "--api-url", o.url, "--since", "2026-11-01",
             env={"OPENAI_ADMIN_KEY": o.key})
    result = json.loads(_cli(loopmeter_home, "reconcile", "--since", "2026-11-01", "--until", "2026-11-04",
                             "--json").stdout)
    rows = {(r["date"], r["vendor"]): r for r in result["rows"]}
    assert set(rows) == {("2026-11-02", "anthropic"), ("2026-11-03", "anthropic"), ("2026-11-02", "openai")}
    same, drift, unmeasured = rows[("2026-11-02", "anthropic")], rows[("2026-11-03", "anthropic")], \
        rows[("2026-11-02", "openai")]
    assert same["drift_usd"] == pytest.approx(0, abs=1e-6) and not same["over_threshold"]
    assert drift["billed_usd"] == pytest.approx(m * 1.25, abs=1e-6)
    assert drift["measured_usd"] == pytest.approx(m, abs=1e-6)
    assert drift["drift_usd"] == pytest.approx(m * 0.25, abs=1e-6)
    assert drift["drift_pct"] == pytest.approx(20.0, abs=0.01)  # of the bill
    assert drift["over_threshold"]
    assert unmeasured["measured_usd"] is None and unmeasured["drift_usd"] is None and unmeasured["over_threshold"]
    assert set(result["rows"][0]) >= {"date", "vendor", "billed_usd", "measured_usd", "drift_usd", "drift_pct"}
    models = {(r["date"], r["model"]): r for r in result["models"]}
    assert set(models) == {("2026-11-02", MODEL), ("2026-11-03", MODEL)}  # where both sides name the model
    table = _cli(loopmeter_home, "reconcile", "--since", "2026-11-01", "--until", "2026-11-04").stdout
    assert "+20.0%" in table and "!" in table and "per model" not in table
    by_model = _cli(loopmeter_home, "reconcile", "--since", "2026-11-01", "--until", "2026-11-04", "--models").stdout
    assert "per model" in by_model and MODEL[:20] in by_model
    loose = json.loads(_cli(loopmeter_home, "reconcile", "--since", "2026-11-01", "--until", "2026-11-04",
                            "--threshold", "30", "--json").stdout)
    assert not {(r["date"], r["vendor"]): r for r in loose["rows"]}[("2026-11-03", "anthropic")]["over_threshold"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_the_dashboards_spend_box_names_the_tiers_and_the_measured_cost(seeded, loopmeter_home):
    from loopmeter.config import Settings, ValueModel
    from loopmeter.tui.app import LoopmeterApp
    from loopmeter.vendors.base import sync
    from tests.analytics.seed import FIXED_NOW

    days = ["2026-02-27", "2026-02-28"]
    org = AnthropicOrg(messages={d: [] for d in days}, claude_code={d: [] for d in days},
                       costs={d: [cost_line(None, MODEL, "d", "tokens", "output_tokens", "12345.0000")] for d in days})
    with AnthropicAdminServer(org) as srv:
        results = sync(seeded, Settings(home=loopmeter_home), ["anthropic"], api_url_override=srv.url,
                       env={"ANTHROPIC_ADMIN_API_KEY": srv.key}, since=datetime(2026, 2, 27).date(), now=FIXED_NOW)
    assert not [r.error for r in results if r.error]
    app = LoopmeterApp(seeded, home=loopmeter_home, value=ValueModel(value_per_merged_outcome=40.0), now=FIXED_NOW,
                       live_every=0, prefetch_tabs=False)
    async with app.run_test(size=(120, 40)) as pilot:
        box = app.query_one("#kpi-spend")
        for _ in range(2000):
            text = str(box.render())
            if "measured" in text:
                break
            await pilot.pause(0.005)
    assert "billed" in text and "measured $" in text


def test_a_call_with_no_agent_or_provider_is_paid_to_an_unknown_vendor():
    # the frame carries unknown dimensions as NaN, which is truthy: it must not be read as a name
    from loopmeter.analytics.tiers import vendor_of

    assert vendor_of(float("nan"), float("nan")) == "(unknown)"
    assert vendor_of(None, "Anthropic") == "anthropic"
    assert vendor_of("cursor", float("nan")) == "cursor"

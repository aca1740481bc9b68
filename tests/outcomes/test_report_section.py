"""`loopmeter report` shows pull requests in every format: the key figures (cost per merged
PR over attributed PRs, unattributed spend beside it) and the per-agent table."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import loopmeter_cmd
from tests.outcomes.seed import seed_prs

RANGE = ["--since", "2026-10-01", "--until", "2026-12-01", "--timezone", "UTC", "--no-scan"]


def _report(fmt: str) -> str:
    out = subprocess.run(loopmeter_cmd("report", *RANGE, "--format", fmt), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_format_has_the_pull_request_section(store):
    seed_prs(store)
    data = json.loads(_report("json"))["pull_requests"]
    assert (data["prs"], data["attributed_prs"], data["attributed_merged"]) == (7, 3, 2)
    assert data["cost_per_merged_pr_usd"] == 2.25 and data["unattributed_cost_usd"] == 12.25
    assert [r["agent"] for r in data["by_agent"]][-1] == "none"
    md = _report("md")
    assert "## Pull requests by agent" in md and "| no agent (baseline) | 2 | 1 | 50% |" in md
    assert "| pull requests | cost per merged PR (attributed) | $2.25 |" in md
    assert "$12.25 in 3 sessions" in md
    html = _report("html")
    assert "Pull requests by agent" in html and "no agent (baseline)" in html
    csv = _report("csv")
    assert "pull_requests_by_agent,claude-code,merge_rate,1.0" in csv
    assert "kpi,pull requests,unattributed spend (no PR),12.25" in csv


def test_before_any_sync_the_report_says_so(store):
    assert json.loads(_report("json"))["pull_requests"] is None
    assert "not synced (loopmeter outcomes sync)" in _report("md")

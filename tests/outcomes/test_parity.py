"""One cost of a PR on every face: `outcomes prs --json`, `outcomes --json`, the report and the
Overview's figure (kpis.headline, also the dashboard's) agree, and the PR figures follow the
range's end and the agent and user filters like the other figures."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest

from loopmeter.analytics.filters import Filters
from loopmeter.outcomes import kpis
from loopmeter.outcomes.attribution import attribute
from tests.conftest import loopmeter_cmd
from tests.outcomes.seed import T0, seed_prs


def _json(*args: str) -> dict:
    out = subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_face_reads_the_same_cost_per_pr(store):
    seed_prs(store)
    prs = {p["number"]: p for p in _json("outcomes", "prs", "--json")["prs"]}
    att = {p.number: p.as_json() for p in attribute(store).prs}
    assert {n: (p["cost_usd"], p["unpriced_calls"]) for n, p in prs.items()} == \
        {n: (p["cost_usd"], p["unpriced_calls"]) for n, p in att.items()}
    merged = [p for p in prs.values() if p["state"] == "merged" and p["attribution"] in ("session", "loop")]
    costed = [p for p in prs.values() if p["attribution"] in ("session", "loop")]
    per_merged = sum(p["cost_usd"] or 0.0 for p in costed) / len(merged)
    summary = _json("outcomes", "--json")
    report = _json("report", "--since", "2026-10-01", "--until", "2026-12-01", "--timezone", "UTC", "--no-scan",
                   "--format", "json")["pull_requests"]
    overview = kpis.headline(store, Filters(since=datetime(2026, 10, 1, tzinfo=UTC),
                                            until=datetime(2026, 12, 2, tzinfo=UTC)))
    assert overview is not None
    assert report["cost_per_merged_pr_usd"] == pytest.approx(per_merged) == overview["cost_per_merged_pr_usd"]
    assert summary["unattributed_cost_usd"] == pytest.approx(report["unattributed_cost_usd"]) \
        == pytest.approx(overview["unattributed_cost_usd"]) == pytest.approx(12.25)


def test_pr_figures_follow_the_range_end_and_the_agent_and_user_filters(store):
    seed_prs(store)
    before = kpis.headline(store, Filters(until=T0.replace(hour=0)))  # the PRs were opened later that day
    assert before is not None and before["prs"] == 0 and before["unattributed_cost_usd"] == 0
    codex = kpis.headline(store, Filters(agent="codex"))
    assert codex is not None
    assert codex["prs"] == 1 and codex["attributed_prs"] == 1 and codex["attributed_merged"] == 0
    assert codex["attributed_cost_usd"] == pytest.approx(2.0)  # c1 on PR 2's branch
    assert codex["unattributed_cost_usd"] == pytest.approx(4.0)  # c2: no PR on its branch
    nobody = kpis.headline(store, Filters(user="nobody"))
    assert nobody is not None and nobody["prs"] == 0 and nobody["unattributed_cost_usd"] == 0
    report = _json("report", "--until", "2026-11-01", "--timezone", "UTC", "--no-scan", "--format", "json")
    assert report["pull_requests"]["prs"] == 0
    report = _json("report", "--since", "2026-10-01", "--agent", "codex", "--timezone", "UTC", "--no-scan", "--format", "json")
    assert report["pull_requests"]["unattributed_cost_usd"] == pytest.approx(4.0)

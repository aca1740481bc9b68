"""Attribution and KPIs on a real SQLite store: sessions on a PR's head branch give its cost,
a Loopmeter-Run trailer gives the run's, trailers and bot authors name an agent without a cost,
and spend no PR claims stays unattributed. Plus the two-sample statistics the A/B uses."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from loopmeter.evals import stats
from loopmeter.outcomes import kpis
from loopmeter.outcomes.attribution import attribute
from tests.outcomes.seed import pr, seed_prs


@pytest.fixture
def seeded(store):
    return seed_prs(store)


def test_every_pr_gets_a_label_and_session_cost_is_the_sum_of_its_sessions(seeded):
    att = attribute(seeded)
    by = {p.number: p for p in att.prs}
    assert {n: p.attribution for n, p in by.items()} == {
        1: "session", 2: "session", 3: "loop", 4: "trailer", 5: "author", 6: "none", 7: "none"}
    one = by[1].as_json()
    assert one["cost_usd"] == pytest.approx(2.0) and one["unpriced_calls"] == 1
    assert sorted(s["session_id"] for s in one["sessions"]) == ["s1", "s2"]
    assert one["agents"] == ["claude-code"] and one["reverted"] is True and one["review_rounds"] == 1
    assert by[2].as_json()["cost_usd"] == pytest.approx(2.0) and by[2].agents == ["codex"]
    assert by[3].as_json()["cost_usd"] == pytest.approx(0.5) and by[3].agents == ["builtin"]
    assert by[4].as_json()["cost_usd"] is None and by[4].agents == ["cursor"]  # agent known, cost not
    assert by[5].agents == ["copilot"] and by[6].agents == []
    # unattributed: c2 (no PR on its branch), s9 (another repository), the loop run no PR names
    assert att.unattributed.cost == pytest.approx(4.0 + 8.0 + 0.25) and att.unattributed_sessions == 3
    assert att.total.cost == pytest.approx(att.unattributed.cost + 2.0 + 2.0 + 0.5)


def test_kpis_per_agent_with_the_no_agent_baseline_last(seeded):
    out = kpis.summary(attribute(seeded))
    rows = {r["agent"]: r for r in out["by_agent"]}
    assert [r["agent"] for r in out["by_agent"]][-1] == "none"
    assert (rows["none"]["prs"], rows["none"]["merged"], rows["none"]["merge_rate"]) == (2, 1, 0.5)
    cc = rows["claude-code"]
    assert (cc["prs"], cc["merged"], cc["merge_rate"], cc["revert_rate"]) == (1, 1, 1.0, 1.0)  # reverted in 2 days
    assert cc["cost_per_merged_pr_usd"] == pytest.approx(2.0) and cc["unpriced_calls"] == 1
    assert rows["codex"]["merge_rate"] == 0.0 and rows["codex"]["cost_per_merged_pr_usd"] is None
    assert rows["cursor"]["cost_per_merged_pr_usd"] is None  # trailer only: no cost, never $0
    assert cc["p50_time_to_merge_s"] == 5 * 3600 and cc["p50_time_to_first_review_s"] == 3600
    lo, hi = cc["merge_rate_ci"]
    assert (lo, hi) == pytest.approx(stats.wilson(1, 1))
    assert out["unattributed_cost_usd"] == pytest.approx(12.25)
    assert out["attribution"] == {"session": 2, "loop": 1, "trailer": 1, "author": 1, "none": 2}


def test_revert_rate_counts_reverts_within_30_days(store):
    store.save(pr(1, "a", "merged", agents=["codex"], reverted=True), pr(2, "b", "merged", agents=["codex"]))
    rows = {r["agent"]: r for r in kpis.summary(attribute(store))["by_agent"]}
    assert rows["codex"]["revert_rate"] == 0.5
    late = pr(3, "c", "merged", agents=["aider"])
    late.reverted_at = late.merged_at + timedelta(days=31)
    store.save(late)
    rows = {r["agent"]: r for r in kpis.summary(attribute(store))["by_agent"]}
    assert rows["aider"]["revert_rate"] == 0.0


def test_compare_says_no_detectable_difference_when_an_interval_contains_zero(store):
    prs = [pr(i, f"a{i}", "merged" if i % 2 else "closed", agents=["claude-code"]) for i in range(1, 11)]
    prs += [pr(100 + i, f"b{i}", "merged" if i % 2 else "closed", agents=["codex"], hours=6) for i in range(1, 11)]
    store.save(*prs)
    out = kpis.compare(attribute(store), "claude-code", "codex", n_boot=500)
    merge, revert, ttm = out["comparisons"]
    assert merge["diff"] == 0 and merge["verdict"] == stats.NO_DIFFERENCE and merge["ci"][0] < 0 < merge["ci"][1]
    assert merge["mde"] > 0.5  # ten PRs an arm cannot see less than a 50-point difference
    assert ttm["diff"] == 3600 and ttm["verdict"] == "claude-code faster"  # no spread at all: the interval is a point
    assert revert["verdict"] == stats.NO_DIFFERENCE


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10: 56/70 vs 48/80
    d, ci, se = stats.proportion_difference(48, 80, 56, 70)
    assert d == pytest.approx(0.8 - 0.6)
    assert ci == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert se == pytest.approx(math.sqrt((104 / 150) * (46 / 150) * (1 / 80 + 1 / 70)))
    assert stats.proportion_difference(0, 0, 1, 2)[1] is None


def test_median_difference_bootstrap_interval_covers_the_difference():
    a = [10.0, 12, 14, 16, 18, 20, 22]
    b = [x + 5 for x in a]
    d, ci, se = stats.median_difference(a, b, n_boot=2000)
    assert d == 5 and ci is not None and ci[0] <= 5 <= ci[1] and se > 0
    assert stats.median_difference([], b) == (None, None, 0.0)
